/**
 * The Certify decision with a fake clock and a fake token validator: the order of the checks,
 * the validity window of what is issued (back-dating, clamping to the chain), and that a reload
 * during a call does not change what that call signs with.
 */
import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import {
  createCsr,
  MeshidError,
  isMeshidError,
  systemRandom,
  parseAnchors,
} from '../../../core/index.js';
import { ManualClock } from '../../../core/clock.js';
import { silentLogger } from '../../../core/logger.js';
import type { ErrorCode, WorkloadIdentity } from '../../../core/index.js';
import { createCertifyHandler } from '../../../identity-ca/server/certify.js';
import type { CertifyDeps } from '../../../identity-ca/server/certify.js';
import {
  issueServingCertificate,
  servingCertNeedsRenewal,
} from '../../../identity-ca/server/serving-cert.js';
import { SignerCache } from '../../../identity-ca/server/certify.js';
import { validateIssuer } from '../../../identity-ca/issuer/material.js';
import type { IssuerCredentials } from '../../../identity-ca/issuer/material.js';
import type { TokenValidator } from '../../../identity-ca/token/validator.js';
import { DAY, HOUR, NOW, bundle, ca, material, root } from './fixtures/pki.js';

const NAMING = { trustDomain: 'cluster.local', controlPlaneNamespace: 'linkerd' };
const WEB = 'web.emojivoto.serviceaccount.identity.linkerd.cluster.local';
const WEB_SA: WorkloadIdentity = { namespace: 'emojivoto', serviceAccount: 'web' };

/** A validator that answers what the test says, and counts its calls. */
class FakeTokens implements TokenValidator {
  calls = 0;
  constructor(
    public answer: WorkloadIdentity | Error = WEB_SA,
    public gate?: Promise<void>,
  ) {}
  async validate(): Promise<WorkloadIdentity> {
    this.calls++;
    await this.gate;
    if (this.answer instanceof Error) throw this.answer;
    return this.answer;
  }
  async close(): Promise<void> {}
}

async function issuerValidFor(
  notAfterFromNow: number,
  anchorNotAfterFromNow = 365 * DAY,
): Promise<IssuerCredentials> {
  const r = await root('root.linkerd.cluster.local', { notAfter: NOW + anchorNotAfterFromNow });
  const i = await ca(r, 'identity.linkerd.cluster.local', { notAfter: NOW + notAfterFromNow });
  return validateIssuer(material(i), parseAnchors(bundle(r), { now: NOW }), NOW);
}

function request(
  identity = WEB,
  csrIdentity = WEB,
): { identity: string; token: Uint8Array; certificateSigningRequest: Uint8Array } {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return {
    identity,
    token: Buffer.from('a.b.c'),
    certificateSigningRequest: createCsr({
      privateKey,
      commonName: csrIdentity,
      dnsNames: [csrIdentity],
    }),
  };
}

async function refusedWith(p: Promise<unknown>, code: ErrorCode, words: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(isMeshidError(err), String(err));
    assert.equal(err.code, code, err.message);
    assert.match(err.message, words);
    return true;
  });
}

describe('identity-ca/server/certify', () => {
  let issuer: IssuerCredentials;
  let clock: ManualClock;
  let tokens: FakeTokens;
  let current: IssuerCredentials | undefined;
  const deps = (o: Partial<CertifyDeps> = {}): CertifyDeps => ({
    currentIssuer: () => current,
    tokens,
    naming: NAMING,
    certLifetimeMs: 24 * HOUR,
    clockSkewMs: 20_000,
    clock,
    random: systemRandom,
    logger: silentLogger(),
    ...o,
  });

  before(async () => {
    issuer = await issuerValidFor(30 * DAY);
  });
  beforeEach(() => {
    clock = new ManualClock(NOW + 1234);
    tokens = new FakeTokens();
    current = issuer;
  });

  it('issues for 24h from now, back-dated by the skew, in whole seconds, with valid_until = NotAfter', async () => {
    const res = await createCertifyHandler(deps())(request());
    const leaf = new X509Certificate(res.leafCertificate);
    const issuedAt = NOW + 1000; // the clock reads NOW + 1.234 s; X.509 has whole seconds
    assert.equal(new Date(leaf.validFrom).getTime(), issuedAt - 20_000);
    assert.equal(new Date(leaf.validTo).getTime(), issuedAt + 24 * HOUR);
    assert.equal(res.validUntil, issuedAt + 24 * HOUR);
    assert.deepEqual(res.intermediateCertificates, issuer.intermediatesDer);
  });

  describe('a caller that has gone (deadline on an injected clock)', () => {
    /** The server's call state, with the caller's deadline on the test's clock. */
    const callUntil = (deadlineAt: number, gone = () => false) => ({
      abandoned: () =>
        clock.now() >= deadlineAt ? ('deadline' as const) : gone() ? ('gone' as const) : undefined,
    });
    /** A handler that records what it dropped and what it issued. */
    const recording = () => {
      const dropped: string[] = [];
      const issued: string[] = [];
      const certify = createCertifyHandler(
        deps({
          onDropped: (w, s) => dropped.push(`${w}/${s}`),
          onIssued: (l) => issued.push(l.serialHex),
        }),
      );
      return { certify, dropped, issued };
    };

    it('drops a call whose deadline has passed before anything is checked: the token is never validated', async () => {
      const { certify, dropped, issued } = recording();
      await refusedWith(
        certify(request(), callUntil(clock.now())),
        'ERR_CERTIFY_DEADLINE_EXCEEDED',
        /deadline passed before the start step/,
      );
      assert.equal(tokens.calls, 0);
      assert.deepEqual(dropped, ['deadline/start']);
      assert.deepEqual(issued, []);
    });

    it('signs nothing when the deadline passes while the token is validated', async () => {
      let release!: () => void;
      tokens = new FakeTokens(WEB_SA, new Promise<void>((r) => (release = r)));
      const { certify, dropped, issued } = recording();
      const pending = certify(request(), callUntil(clock.now() + 5000));
      await new Promise((r) => setImmediate(r));
      assert.equal(tokens.calls, 1, 'the token check started in time');
      clock.advance(5000); // the validator (a slow API server) took the rest of the deadline
      release();
      await refusedWith(pending, 'ERR_CERTIFY_DEADLINE_EXCEEDED', /before the sign step/);
      assert.deepEqual(dropped, ['deadline/sign']);
      assert.deepEqual(issued, [], 'nothing signed, nothing recorded');
    });

    it('drops a call whose stream closed before its token check with CANCELLED-class ERR_CERTIFY_CALLER_GONE', async () => {
      let closed = false;
      const dropped: string[] = [];
      const certify = createCertifyHandler(
        deps({ onDropped: (w, s) => dropped.push(`${w}/${s}`) }),
      );
      const call = callUntil(Number.POSITIVE_INFINITY, () => closed);
      const pending = certify(request(), call);
      closed = true; // the caller reset its stream while the CSR was being verified
      await refusedWith(pending, 'ERR_CERTIFY_CALLER_GONE', /caller left before the token step/);
      assert.equal(tokens.calls, 0);
      assert.deepEqual(dropped, ['gone/token']);
    });

    it('issues as usual while the caller still waits', async () => {
      const res = await createCertifyHandler(deps())(request(), callUntil(clock.now() + 1));
      assert.ok(res.leafCertificate.length > 0);
    });
  });

  it("clamps NotAfter to the issuer's expiry when the issuer expires first", async () => {
    current = await issuerValidFor(2 * HOUR);
    const res = await createCertifyHandler(deps())(request());
    assert.equal(res.validUntil, Math.floor(current.chainNotAfter / 1000) * 1000);
    assert.ok(res.validUntil < NOW + 24 * HOUR);
  });

  it("clamps NotAfter to the anchor's expiry when the anchor expires before the issuer", async () => {
    current = await issuerValidFor(30 * DAY, 3 * HOUR);
    const res = await createCertifyHandler(deps())(request());
    assert.equal(res.validUntil, Math.floor(current.anchors.earliestNotAfter / 1000) * 1000);
  });

  it('refuses with ERR_ISSUER_NOT_LOADED before anything else when no issuer is loaded', async () => {
    current = undefined;
    await refusedWith(
      createCertifyHandler(deps())({
        identity: '',
        token: new Uint8Array(),
        certificateSigningRequest: new Uint8Array(),
      }),
      'ERR_ISSUER_NOT_LOADED',
      /no issuer/,
    );
  });

  it('refuses with ERR_ISSUER_NOT_VALID_NOW once the chain has expired, and never asks about the token', async () => {
    clock.set(issuer.chainNotAfter);
    await refusedWith(
      createCertifyHandler(deps())(request()),
      'ERR_ISSUER_NOT_VALID_NOW',
      /issuer chain is not valid now/,
    );
    assert.equal(tokens.calls, 0);
  });

  it('checks the CSR before the token: a bad CSR costs no token validation', async () => {
    await refusedWith(
      createCertifyHandler(deps())(
        request(WEB, 'voting.emojivoto.serviceaccount.identity.linkerd.cluster.local'),
      ),
      'ERR_CSR_POLICY',
      /does not match/,
    );
    assert.equal(tokens.calls, 0);
  });

  it('refuses a token for another service account with ERR_IDENTITY_MISMATCH naming it', async () => {
    tokens.answer = { namespace: 'emojivoto', serviceAccount: 'voting' };
    await refusedWith(
      createCertifyHandler(deps())(request()),
      'ERR_IDENTITY_MISMATCH',
      /emojivoto\/voting/,
    );
  });

  it('passes a token refusal through unchanged', async () => {
    tokens.answer = new MeshidError('ERR_TOKEN_UNAUTHENTICATED', 'token expired at x');
    await refusedWith(
      createCertifyHandler(deps())(request()),
      'ERR_TOKEN_UNAUTHENTICATED',
      /expired/,
    );
  });

  it('signs with the issuer it started with when the issuer is replaced mid-call', async () => {
    let release!: () => void;
    tokens.gate = new Promise((r) => (release = r));
    const pending = createCertifyHandler(deps())(request());
    await new Promise((r) => setImmediate(r));
    assert.equal(tokens.calls, 1, 'the call is waiting on the token');
    const replacement = await issuerValidFor(10 * DAY);
    current = replacement;
    release();
    const res = await pending;
    const leaf = new X509Certificate(res.leafCertificate);
    assert.ok(
      leaf.verify(new X509Certificate(issuer.certificateDer).publicKey),
      'signed by the original issuer',
    );
    assert.deepEqual(res.intermediateCertificates, issuer.intermediatesDer);
  });

  it('reports each issuance (serial, SHA-256, NotAfter) and never the key or token', async () => {
    const seen: unknown[] = [];
    await createCertifyHandler(deps({ onIssued: (i) => seen.push(i) }))(request());
    assert.equal(seen.length, 1);
    const issued = seen[0] as Record<string, unknown>;
    assert.deepEqual(Object.keys(issued).sort(), [
      'identity',
      'namespace',
      'notAfter',
      'serialHex',
      'serviceAccount',
      'sha256',
    ]);
    assert.match(String(issued['sha256']), /^[0-9a-f]{64}$/);
  });
});

describe('identity-ca/server/serving-cert', () => {
  it("issues the CA's own certificate for its identity, clamped to the chain, and renews at 70% or on a new issuer", async () => {
    const issuer = await issuerValidFor(30 * DAY);
    const clock = new ManualClock(NOW);
    const opts = {
      identityName: 'linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local',
      naming: NAMING,
      lifetimeMs: 24 * HOUR,
      clockSkewMs: 20_000,
      clock,
      random: systemRandom,
      signers: new SignerCache(),
    };
    const cert = issueServingCertificate(issuer, opts);
    const leaf = new X509Certificate(cert.certChainPem);
    assert.equal(
      leaf.subjectAltName,
      `DNS:${opts.identityName}, URI:spiffe://cluster.local/ns/linkerd/sa/linkerd-identity`,
    );
    assert.equal(cert.notAfter, NOW + 24 * HOUR);
    assert.equal(cert.renewAt, NOW + Math.floor(24 * HOUR * 0.7));
    assert.equal(servingCertNeedsRenewal(cert, issuer, cert.renewAt - 1), false);
    assert.equal(servingCertNeedsRenewal(cert, issuer, cert.renewAt), true);
    assert.equal(servingCertNeedsRenewal(cert, issuer, cert.notBefore), false);
    assert.equal(
      servingCertNeedsRenewal(cert, issuer, cert.notBefore - 1),
      true,
      'a clock stepped back before NotBefore means a new serving certificate',
    );
    const other = await issuerValidFor(30 * DAY);
    assert.equal(
      servingCertNeedsRenewal(cert, other, NOW),
      true,
      'a new issuer means a new serving certificate',
    );
    const shortIssuer = await issuerValidFor(HOUR);
    assert.equal(
      issueServingCertificate(shortIssuer, opts).notAfter,
      Math.floor(shortIssuer.chainNotAfter / 1000) * 1000,
    );
  });
});
