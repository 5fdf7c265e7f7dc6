/**
 * The TokenReview validator against a fake reviewer and a manual clock: what it accepts, every
 * way around the audience it refuses, the cache's bounds, and unavailability.
 */
import { strict as assert } from 'node:assert';
import { isMeshidError } from '../../../core/index.js';
import { ManualClock } from '../../../core/clock.js';
import { silentLogger } from '../../../core/logger.js';
import type { ErrorCode } from '../../../core/index.js';
import { KubeApiError } from '../../../identity-ca/kube/api.js';
import type { TokenReviewResult } from '../../../identity-ca/kube/api.js';
import { TokenReviewValidator } from '../../../identity-ca/token/token-review.js';
import type { TokenReviewValidatorOptions } from '../../../identity-ca/token/token-review.js';

const NOW = Date.parse('2026-11-22T10:00:00Z');
const AUDIENCE = 'identity.l5d.io';

/** A JWT-shaped token whose payload carries `exp` (the fake reviewer does not check signatures). */
function token(sub: string, expMs: number, salt = ''): Uint8Array {
  const enc = (o: object): string => Buffer.from(JSON.stringify(o)).toString('base64url');
  return Buffer.from(
    `${enc({ alg: 'RS256', kid: 'k' })}.${enc({ sub, exp: Math.floor(expMs / 1000), salt })}.c2lnbmF0dXJl`,
  );
}

/** Answers reviews from a function of (token, audiences); records each call. */
class FakeReviewer {
  calls: { token: string; audiences: readonly string[] }[] = [];
  answer: (token: string, audiences: readonly string[]) => TokenReviewResult | Error = (
    _t,
    aud,
  ) => ({
    authenticated: true,
    username: 'system:serviceaccount:emojivoto:web',
    audiences: aud.length === 0 ? ['https://kubernetes.default.svc'] : [...aud],
  });
  gate: Promise<void> | undefined;
  readonly server = 'https://127.0.0.1:6443';
  async createTokenReview(
    t: string,
    audiences: readonly string[],
    signal: AbortSignal,
  ): Promise<TokenReviewResult> {
    this.calls.push({ token: t, audiences });
    if (this.gate !== undefined) await this.gate;
    signal.throwIfAborted();
    const a = this.answer(t, audiences);
    if (a instanceof Error) throw a;
    return a;
  }
}

function validator(
  reviewer: FakeReviewer,
  clock: ManualClock,
  more: Partial<TokenReviewValidatorOptions> = {},
): TokenReviewValidator {
  return new TokenReviewValidator({
    api: reviewer,
    audience: AUDIENCE,
    clock,
    logger: silentLogger(),
    cacheTtlMs: 10_000,
    cacheSize: 100,
    ...more,
  });
}

async function refusal(p: Promise<unknown>, code: ErrorCode, words: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(isMeshidError(err), `a MeshidError, got ${String(err)}`);
    assert.equal(err.code, code);
    assert.match(err.message, words);
    return true;
  });
}

describe('identity-ca/token/token-review', () => {
  it('asks with the identity audience and returns the service account of the username', async () => {
    const r = new FakeReviewer();
    const v = validator(r, new ManualClock(NOW));
    const who = await v.validate(token('x', NOW + 3_600_000));
    assert.deepEqual(who, { namespace: 'emojivoto', serviceAccount: 'web' });
    assert.deepEqual(r.calls[0]!.audiences, [AUDIENCE]);
  });

  it('refuses what the API server does not authenticate, quoting its error, and never retries without audience', async () => {
    const r = new FakeReviewer();
    r.answer = (_t, aud) =>
      aud.length === 0
        ? {
            authenticated: true,
            username: 'system:serviceaccount:default:default',
            audiences: ['api'],
          }
        : {
            authenticated: false,
            error:
              '[invalid bearer token, token audiences ["https://kubernetes.default.svc"] is invalid for the target audiences ["identity.l5d.io"]]',
          };
    const v = validator(r, new ManualClock(NOW));
    await refusal(
      v.validate(token('x', NOW + 3_600_000)),
      'ERR_TOKEN_UNAUTHENTICATED',
      /did not authenticate the token: .*token audiences/,
    );
    assert.equal(r.calls.length, 1, 'no second review without audience');
  });

  it('refuses a review that authenticates the token for other audiences only (an API server ignoring audiences)', async () => {
    const r = new FakeReviewer();
    r.answer = () => ({
      authenticated: true,
      username: 'system:serviceaccount:emojivoto:web',
      audiences: ['https://kubernetes.default.svc'],
    });
    await refusal(
      validator(r, new ManualClock(NOW)).validate(token('x', NOW + 3_600_000)),
      'ERR_TOKEN_UNAUTHENTICATED',
      /not for audience "identity.l5d.io" \(got "https:\/\/kubernetes.default.svc"\)/,
    );
    r.answer = () => ({ authenticated: true, username: 'system:serviceaccount:emojivoto:web' });
    await refusal(
      validator(r, new ManualClock(NOW)).validate(token('y', NOW + 3_600_000)),
      'ERR_TOKEN_UNAUTHENTICATED',
      /not for audience .* \(got none\)/,
    );
  });

  it('with the unsafe fallback on, accepts an API-audience token as Linkerd does (and only then)', async () => {
    const r = new FakeReviewer();
    r.answer = (_t, aud) =>
      aud.length === 0
        ? {
            authenticated: true,
            username: 'system:serviceaccount:default:default',
            audiences: ['api'],
          }
        : { authenticated: false, error: 'token audiences is invalid' };
    const v = validator(r, new ManualClock(NOW), { unsafeNoAudienceFallback: true });
    const who = await v.validate(token('x', NOW + 3_600_000));
    assert.deepEqual(who, { namespace: 'default', serviceAccount: 'default' });
    assert.deepEqual(
      r.calls.map((c) => c.audiences),
      [[AUDIENCE], []],
    );
  });

  for (const [username, words] of [
    ['system:serviceaccount:emojivoto', /not of the form system:serviceaccount:<namespace>:<name>/],
    ['system:serviceaccount:emojivoto:web:extra', /not of the form/],
    ['system:node:worker-1', /not of the form/],
    ['alice', /not of the form/],
    ['system:serviceaccount:Emoji:web', /namespace "Emoji" is not a DNS-1123 label/],
    [
      'system:serviceaccount:emojivoto:web.evil',
      /service account "web.evil" is not a DNS-1123 label/,
    ],
  ] as const) {
    it(`refuses the username "${username}" as malformed`, async () => {
      const r = new FakeReviewer();
      r.answer = (_t, aud) => ({ authenticated: true, username, audiences: [...aud] });
      await refusal(
        validator(r, new ManualClock(NOW)).validate(token('x', NOW + 3_600_000)),
        'ERR_TOKEN_MALFORMED',
        words,
      );
    });
  }

  it('maps a failed review (network, 5xx, 403 on tokenreviews, timeout) to unavailable, never to an identity', async () => {
    for (const err of [
      new KubeApiError(0, 'Unavailable', 'TokenReview: ECONNREFUSED'),
      new KubeApiError(503, 'ServiceUnavailable', 'TokenReview: the server is shutting down'),
      new KubeApiError(403, 'Forbidden', 'TokenReview: tokenreviews is forbidden'),
    ]) {
      const r = new FakeReviewer();
      r.answer = () => err;
      await refusal(
        validator(r, new ManualClock(NOW)).validate(token('x', NOW + 3_600_000)),
        'ERR_TOKEN_VALIDATOR_UNAVAILABLE',
        new RegExp(`TokenReview at https://127.0.0.1:6443 failed: ${err.message}`),
      );
    }
    const slow = new FakeReviewer();
    slow.gate = new Promise((resolve) => setTimeout(resolve, 200));
    await refusal(
      validator(slow, new ManualClock(NOW), { timeoutMs: 20 }).validate(
        token('x', NOW + 3_600_000),
      ),
      'ERR_TOKEN_VALIDATOR_UNAVAILABLE',
      /failed/,
    );
  });

  it('refuses empty, oversized and non-ASCII tokens without asking the API server', async () => {
    const r = new FakeReviewer();
    const v = validator(r, new ManualClock(NOW), { maxTokenBytes: 64 });
    await refusal(v.validate(new Uint8Array()), 'ERR_TOKEN_MALFORMED', /empty/);
    await refusal(
      v.validate(new Uint8Array(65).fill(97)),
      'ERR_TOKEN_MALFORMED',
      /65 bytes, over the 64-byte limit/,
    );
    await refusal(
      v.validate(Buffer.from('abc\u00e9def')),
      'ERR_TOKEN_MALFORMED',
      /printable ASCII/,
    );
    await refusal(v.validate(Buffer.from('abc def')), 'ERR_TOKEN_MALFORMED', /printable ASCII/);
    assert.equal(r.calls.length, 0);
  });

  describe('the cache of positive reviews', () => {
    it('reuses a positive review for the TTL, then asks again', async () => {
      const r = new FakeReviewer();
      const clock = new ManualClock(NOW);
      const v = validator(r, clock);
      const t = token('x', NOW + 3_600_000);
      await v.validate(t);
      await v.validate(t);
      clock.advance(9_999);
      await v.validate(t);
      assert.equal(r.calls.length, 1);
      clock.advance(1);
      await v.validate(t);
      assert.equal(r.calls.length, 2);
    });

    it("never keeps an entry past the token's own expiry", async () => {
      const r = new FakeReviewer();
      const clock = new ManualClock(NOW);
      const v = validator(r, clock, { cacheTtlMs: 60_000 });
      const t = token('x', NOW + 3_000);
      await v.validate(t);
      clock.advance(2_999);
      await v.validate(t);
      assert.equal(r.calls.length, 1);
      clock.advance(1);
      r.answer = () => ({ authenticated: false, error: 'token has expired' });
      await refusal(v.validate(t), 'ERR_TOKEN_UNAUTHENTICATED', /token has expired/);
      assert.equal(r.calls.length, 2);
    });

    it('never caches a refusal, a token without expiry, or anything when the TTL is 0', async () => {
      const r = new FakeReviewer();
      const clock = new ManualClock(NOW);
      r.answer = () => ({ authenticated: false, error: 'nope' });
      const v = validator(r, clock);
      const t = token('x', NOW + 3_600_000);
      await refusal(v.validate(t), 'ERR_TOKEN_UNAUTHENTICATED', /nope/);
      r.answer = (_t, aud) => ({
        authenticated: true,
        username: 'system:serviceaccount:a:b',
        audiences: [...aud],
      });
      await v.validate(t);
      assert.equal(r.calls.length, 2, 'the refusal was not cached');

      const opaque = Buffer.from('not-a-jwt-but-printable');
      await v.validate(opaque);
      await v.validate(opaque);
      assert.equal(r.calls.length, 4, 'no expiry, no caching');

      const off = validator(r, clock, { cacheTtlMs: 0 });
      await off.validate(t);
      await off.validate(t);
      assert.equal(r.calls.length, 6);
    });

    it('is bounded: the oldest entries go first', async () => {
      const r = new FakeReviewer();
      const v = validator(r, new ManualClock(NOW), { cacheSize: 3 });
      const tokens = [0, 1, 2, 3].map((i) => token('x', NOW + 3_600_000, String(i)));
      for (const t of tokens) await v.validate(t);
      assert.equal(v.cacheSize, 3);
      await v.validate(tokens[3]!);
      assert.equal(r.calls.length, 4, 'the newest is cached');
      await v.validate(tokens[0]!);
      assert.equal(r.calls.length, 5, 'the oldest was evicted');
    });

    it('keys by the whole token: a token differing in one byte is reviewed on its own', async () => {
      const r = new FakeReviewer();
      const v = validator(r, new ManualClock(NOW));
      const t = Buffer.from(token('x', NOW + 3_600_000));
      await v.validate(t);
      const forged = Buffer.from(t);
      forged[forged.length - 1] = forged[forged.length - 1] === 0x41 ? 0x42 : 0x41;
      r.answer = () => ({ authenticated: false, error: 'invalid signature' });
      await refusal(v.validate(forged), 'ERR_TOKEN_UNAUTHENTICATED', /invalid signature/);
    });

    it('shares one review among concurrent calls with the same token', async () => {
      const r = new FakeReviewer();
      let open!: () => void;
      r.gate = new Promise((resolve) => (open = resolve));
      const v = validator(r, new ManualClock(NOW), { cacheTtlMs: 0 });
      const t = token('x', NOW + 3_600_000);
      const all = Promise.all(Array.from({ length: 20 }, () => v.validate(t)));
      open();
      const results = await all;
      assert.equal(results.length, 20);
      assert.equal(r.calls.length, 1);
    });
  });
});
