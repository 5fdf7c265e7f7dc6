import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { webcrypto } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import * as http from 'node:http';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import {
  SignJWT,
  base64url,
  createLocalJWKSet,
  exportJWK,
  exportPKCS8,
  exportSPKI,
  generateKeyPair,
  importPKCS8,
  jwtVerify,
  type CryptoKey,
  type JWK,
  type JWTPayload,
} from 'jose';
import { pino } from 'pino';
import { isMeshidError, type ErrorCode, type Logger } from '../../../core/index.js';
import { ManualClock } from '../../../core/clock.js';
import { silentLogger } from '../../../core/logger.js';
import { JwksTokenValidator, type JwksSource } from '../../../identity-ca/token/jwks.js';

const ISSUER = 'https://kubernetes.default.svc.cluster.local';
const AUDIENCE = 'identity.l5d.io';
const SKEW_MS = 20_000;
const T0 = Date.UTC(2026, 7, 1, 12, 0, 0);
const T0_S = T0 / 1000;

interface KeyPair {
  readonly publicKey: CryptoKey;
  readonly privateKey: CryptoKey;
}

let rsa: KeyPair; // kid rsa-1, in the JWKS
let ec: KeyPair; // kid ec-1, in the JWKS
let rsaImpostor: KeyPair; // not in the JWKS; signs with kid rsa-1
let rsaNext: KeyPair; // kid rsa-2, added to the JWKS by rotation tests
let rsaJwk: JWK;
let ecJwk: JWK;
let rsaNextJwk: JWK;
let dir: string;
let jwksFile: string;
let clock: ManualClock;
let validator: JwksTokenValidator;

// ---- token builders ---------------------------------------------------------------------------

/** The claims kube-apiserver puts in a projected token for pod web-0 of emojivoto/web. */
function projectedClaims(): JWTPayload {
  return {
    iss: ISSUER,
    sub: 'system:serviceaccount:emojivoto:web',
    aud: [AUDIENCE],
    iat: T0_S,
    nbf: T0_S,
    exp: T0_S + 3600,
    jti: '7f0e4a38-1c1d-4d3a-8a43-3b8f5c1a2b9e',
    'kubernetes.io': {
      namespace: 'emojivoto',
      serviceaccount: { name: 'web', uid: '0f6f5ad4-9a64-4c1f-9b39-f1c8d3e0a001' },
      pod: { name: 'web-0', uid: '5b8e1c0e-7a2a-4c8e-b4b0-64f1b2b0c002' },
    },
  };
}

type Modifier = (claims: JWTPayload) => void;

async function signed(
  opts: { alg?: string; key?: CryptoKey; kid?: string | null } = {},
  ...mods: Modifier[]
): Promise<string> {
  const claims = projectedClaims();
  for (const mod of mods) mod(claims);
  const alg = opts.alg ?? 'RS256';
  const kid = opts.kid === undefined ? (alg === 'ES256' ? 'ec-1' : 'rsa-1') : opts.kid;
  const key = opts.key ?? (alg === 'ES256' ? ec.privateKey : rsa.privateKey);
  return new SignJWT(claims).setProtectedHeader(kid === null ? { alg } : { alg, kid }).sign(key);
}

/** A token put together by hand, for headers and signatures no honest library would produce. */
function crafted(header: object, claims: JWTPayload, signature: Uint8Array): string {
  const part = (o: object): string => base64url.encode(JSON.stringify(o));
  return `${part(header)}.${part(claims)}.${base64url.encode(signature)}`;
}

async function hmac(secret: Uint8Array<ArrayBuffer>, signingInput: string): Promise<Uint8Array> {
  const key = await webcrypto.subtle.importKey(
    'raw',
    secret,
    { name: 'HMAC', hash: 'SHA-256' },
    false,
    ['sign'],
  );
  return new Uint8Array(
    await webcrypto.subtle.sign('HMAC', key, new TextEncoder().encode(signingInput)),
  );
}

/** HS256 over the token, keyed with `secret`: the classic RS256→HS256 key-confusion attack. */
async function hs256With(secret: string): Promise<string> {
  const header = base64url.encode(JSON.stringify({ alg: 'HS256', kid: 'rsa-1' }));
  const payload = base64url.encode(JSON.stringify(projectedClaims()));
  const mac = await hmac(new TextEncoder().encode(secret), `${header}.${payload}`);
  return `${header}.${payload}.${base64url.encode(mac)}`;
}

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

// ---- assertions and waiting -------------------------------------------------------------------

async function refused(
  validator: JwksTokenValidator,
  token: string | Uint8Array,
  code: ErrorCode,
  ...words: string[]
): Promise<string> {
  const input = typeof token === 'string' ? bytes(token) : token;
  let error: unknown;
  try {
    const who = await validator.validate(input);
    assert.fail(`token was accepted as ${JSON.stringify(who)}`);
  } catch (err) {
    error = err;
  }
  assert.ok(isMeshidError(error), `not a MeshidError: ${String(error)}`);
  assert.equal(error.code, code, error.message);
  for (const w of words) assert.ok(error.message.includes(w), `"${error.message}" lacks "${w}"`);
  if (typeof token === 'string') {
    // Nothing of the token itself: not its header, payload or signature.
    for (const part of token.split('.')) {
      if (part.length >= 12) assert.ok(!error.message.includes(part.slice(0, 12)), error.message);
    }
  }
  return error.message;
}

/** Polls `check` until it stops throwing, for at most `ms`; no fixed sleeps. */
async function eventually<T>(check: () => Promise<T>, ms = 5000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await check();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}

/** A logger whose JSON records the test can read. */
function capturingLogger(): { logger: Logger; records: () => Record<string, unknown>[] } {
  const lines: string[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => void lines.push(line) });
  return { logger, records: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

// ---- fixtures ---------------------------------------------------------------------------------

async function fileValidator(logger: Logger = silentLogger()): Promise<JwksTokenValidator> {
  return JwksTokenValidator.create({
    jwks: { file: jwksFile },
    issuer: ISSUER,
    audience: AUDIENCE,
    clockSkewMs: SKEW_MS,
    clock,
    logger,
  });
}

// ---- tests ------------------------------------------------------------------------------------

describe('JwksTokenValidator', () => {
  before(async () => {
    const opts = { extractable: true };
    [rsa, ec, rsaImpostor, rsaNext] = await Promise.all([
      generateKeyPair('RS256', opts),
      generateKeyPair('ES256', opts),
      generateKeyPair('RS256', opts),
      generateKeyPair('RS256', opts),
    ]);
    rsaJwk = { ...(await exportJWK(rsa.publicKey)), kid: 'rsa-1', alg: 'RS256', use: 'sig' };
    ecJwk = { ...(await exportJWK(ec.publicKey)), kid: 'ec-1', alg: 'ES256', use: 'sig' };
    rsaNextJwk = { ...(await exportJWK(rsaNext.publicKey)), kid: 'rsa-2', use: 'sig' };
  });

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshid-jwks-'));
    jwksFile = join(dir, 'jwks.json');
    await writeFile(jwksFile, JSON.stringify({ keys: [rsaJwk, ecJwk] }));
    clock = new ManualClock(T0);
    validator = await fileValidator();
  });

  afterEach(async () => {
    await validator.close();
    await rm(dir, { recursive: true, force: true });
  });

  describe('accepting tokens', () => {
    it('accepts an RS256 projected token and returns its service account', async () => {
      const who = await validator.validate(bytes(await signed({ alg: 'RS256' })));
      assert.deepEqual(who, { namespace: 'emojivoto', serviceAccount: 'web' });
    });

    it('accepts an ES256 projected token and returns its service account', async () => {
      const token = await signed({ alg: 'ES256' }, (c) => {
        c.sub = 'system:serviceaccount:linkerd:linkerd-proxy';
        c['kubernetes.io'] = { namespace: 'linkerd', serviceaccount: { name: 'linkerd-proxy' } };
      });
      assert.deepEqual(await validator.validate(bytes(token)), {
        namespace: 'linkerd',
        serviceAccount: 'linkerd-proxy',
      });
    });

    it('accepts an audience list that includes ours among others, as Kubernetes sends', async () => {
      const token = await signed({}, (c) => (c.aud = ['https://kubernetes.default.svc', AUDIENCE]));
      assert.equal((await validator.validate(bytes(token))).serviceAccount, 'web');
    });

    it('accepts a token without the kubernetes.io claim on its subject alone', async () => {
      const token = await signed({}, (c) => delete c['kubernetes.io']);
      assert.equal((await validator.validate(bytes(token))).namespace, 'emojivoto');
    });

    it('accepts a token that expired less than the clock skew allowance ago', async () => {
      clock.set(T0 + 3600_000 + SKEW_MS - 1000);
      assert.equal((await validator.validate(bytes(await signed()))).serviceAccount, 'web');
    });

    it('accepts a token whose nbf is ahead of the clock by less than the allowance', async () => {
      clock.set(T0 - SKEW_MS + 1000);
      assert.equal((await validator.validate(bytes(await signed()))).serviceAccount, 'web');
    });

    it('accepts a token file that ends in a newline', async () => {
      const who = await validator.validate(bytes(`${await signed()}\n`));
      assert.equal(who.serviceAccount, 'web');
    });

    it('tries each fitting key when the token has no kid and the JWKS holds several', async () => {
      await validator.close();
      await writeFile(jwksFile, JSON.stringify({ keys: [rsaJwk, rsaNextJwk, ecJwk] }));
      validator = await fileValidator();
      const token = await signed({ key: rsaNext.privateKey, kid: null });
      assert.equal((await validator.validate(bytes(token))).serviceAccount, 'web');
      await refused(
        validator,
        await signed({ key: rsaImpostor.privateKey, kid: null }),
        'ERR_TOKEN_UNAUTHENTICATED',
        'signature',
      );
    });
  });

  describe('refusing attacks', () => {
    it('refuses alg none', async () => {
      const token = crafted({ alg: 'none', kid: 'rsa-1' }, projectedClaims(), new Uint8Array());
      // An unsecured JWS has an empty signature part; refuse it with and without one.
      await refused(validator, token.slice(0, -1), 'ERR_TOKEN_MALFORMED');
      const withSig = crafted({ alg: 'none' }, projectedClaims(), new Uint8Array([1, 2, 3]));
      await refused(validator, withSig, 'ERR_TOKEN_UNAUTHENTICATED', '"none"', 'not allowed');
    });

    it('refuses HS256 keyed with the RSA public key PEM (key confusion)', async () => {
      const pem = await exportSPKI(rsa.publicKey);
      await refused(validator, await hs256With(pem), 'ERR_TOKEN_UNAUTHENTICATED', '"HS256"');
    });

    it('refuses HS256 keyed with the RSA public JWK (key confusion)', async () => {
      const token = await hs256With(JSON.stringify(rsaJwk));
      await refused(validator, token, 'ERR_TOKEN_UNAUTHENTICATED', '"HS256"', 'not allowed');
    });

    it('refuses PS256 even when signed by the JWKS key', async () => {
      // The very key of the JWKS, imported for RSA-PSS: only the algorithm is wrong.
      const pss = await importPKCS8(await exportPKCS8(rsa.privateKey), 'PS256');
      const token = await signed({ alg: 'PS256', key: pss, kid: 'rsa-1' });
      await refused(validator, token, 'ERR_TOKEN_UNAUTHENTICATED', '"PS256"');
    });

    it('refuses EdDSA', async () => {
      const token = crafted({ alg: 'EdDSA', kid: 'rsa-1' }, projectedClaims(), new Uint8Array(64));
      await refused(validator, token, 'ERR_TOKEN_UNAUTHENTICATED', '"EdDSA"');
    });

    it('refuses a token signed by another key that claims the JWKS key id', async () => {
      const token = await signed({ key: rsaImpostor.privateKey, kid: 'rsa-1' });
      await refused(
        validator,
        token,
        'ERR_TOKEN_UNAUTHENTICATED',
        'signature does not verify with any key of the JWKS',
      );
    });

    it('refuses a kid that is not in the JWKS', async () => {
      const token = await signed({ key: rsaImpostor.privateKey, kid: 'unknown-kid' });
      await refused(validator, token, 'ERR_TOKEN_UNAUTHENTICATED', 'kid', '"unknown-kid"');
    });

    it('refuses an ES256 token that names the RSA key id', async () => {
      const token = await signed({ alg: 'ES256', kid: 'rsa-1' });
      await refused(validator, token, 'ERR_TOKEN_UNAUTHENTICATED', '"rsa-1"', 'ES256');
    });

    it('refuses a token expired by more than the clock skew allowance', async () => {
      clock.set(T0 + 3600_000 + SKEW_MS + 1000);
      const msg = await refused(validator, await signed(), 'ERR_TOKEN_UNAUTHENTICATED', 'expired');
      assert.ok(msg.includes(new Date(T0 + 3600_000).toISOString()), msg);
    });

    it('refuses a token whose nbf is ahead of the clock by more than the allowance', async () => {
      clock.set(T0 - SKEW_MS - 1000);
      await refused(validator, await signed(), 'ERR_TOKEN_UNAUTHENTICATED', 'not valid before');
    });

    it('refuses a token issued in the future beyond the allowance', async () => {
      const token = await signed({}, (c) => {
        delete c.nbf;
        c.iat = T0_S + 60;
      });
      await refused(validator, token, 'ERR_TOKEN_UNAUTHENTICATED', 'issued at', 'future');
    });

    it('refuses a token for another audience', async () => {
      const token = await signed({}, (c) => (c.aud = 'https://kubernetes.default.svc'));
      await refused(
        validator,
        token,
        'ERR_TOKEN_UNAUTHENTICATED',
        'audience ["https://kubernetes.default.svc"] does not include "identity.l5d.io"',
      );
    });

    it('refuses an audience list without ours', async () => {
      const token = await signed({}, (c) => (c.aud = ['api', 'vault']));
      await refused(validator, token, 'ERR_TOKEN_UNAUTHENTICATED', '["api", "vault"]', AUDIENCE);
    });

    it('refuses a token from another issuer', async () => {
      const token = await signed({}, (c) => (c.iss = 'https://evil.example'));
      await refused(
        validator,
        token,
        'ERR_TOKEN_UNAUTHENTICATED',
        `issuer "https://evil.example" is not "${ISSUER}"`,
      );
    });

    it('refuses a token without exp, as a legacy Secret token has', async () => {
      const token = await signed({}, (c) => delete c.exp);
      await refused(validator, token, 'ERR_TOKEN_UNAUTHENTICATED', 'exp', 'non-expiring');
    });

    for (const [sub, words] of [
      ['system:node:x', ['system:serviceaccount:<namespace>:<name>']],
      ['system:serviceaccount:ns', ['system:serviceaccount:<namespace>:<name>']],
      ['system:serviceaccount:Emojivoto:web', ['namespace', 'DNS-1123']],
      ['system:serviceaccount:emojivoto:Web', ['service account', 'DNS-1123']],
    ] as const) {
      it(`refuses the subject "${sub}" as not a service account`, async () => {
        const token = await signed({}, (c) => {
          c.sub = sub;
          delete c['kubernetes.io'];
        });
        await refused(validator, token, 'ERR_TOKEN_MALFORMED', ...words);
      });
    }

    it('refuses a token without a subject', async () => {
      await refused(validator, await signed({}, (c) => delete c.sub), 'ERR_TOKEN_MALFORMED', 'sub');
    });

    it('refuses a kubernetes.io namespace that differs from the subject', async () => {
      const token = await signed({}, (c) => {
        c['kubernetes.io'] = { namespace: 'kube-system', serviceaccount: { name: 'web' } };
      });
      await refused(
        validator,
        token,
        'ERR_TOKEN_UNAUTHENTICATED',
        'kubernetes.io.namespace "kube-system"',
      );
    });

    it('refuses a kubernetes.io service account name that differs from the subject', async () => {
      const token = await signed({}, (c) => {
        c['kubernetes.io'] = { namespace: 'emojivoto', serviceaccount: { name: 'admin' } };
      });
      await refused(
        validator,
        token,
        'ERR_TOKEN_UNAUTHENTICATED',
        'kubernetes.io.serviceaccount.name "admin"',
      );
    });

    it('refuses a token over the size limit before parsing it', async () => {
      const big = await signed({}, (c) => (c['padding'] = 'x'.repeat(20_000)));
      await refused(validator, big, 'ERR_TOKEN_MALFORMED', 'bytes', '16384');
    });

    it('refuses non-JWT garbage', async () => {
      await refused(validator, 'hello, certify', 'ERR_TOKEN_MALFORMED', 'compact');
      await refused(validator, 'a.b.c.d', 'ERR_TOKEN_MALFORMED', 'compact');
      await refused(validator, new Uint8Array(), 'ERR_TOKEN_MALFORMED', 'empty');
      await refused(validator, 'eyJub3QiOiJqc29uIn0x.e30.AAAA', 'ERR_TOKEN_MALFORMED', 'JWT');
    });

    it('refuses a header or payload nested past the JSON bound before parsing it', async () => {
      const deep = base64url.encode(`{"a":${'['.repeat(65)}${']'.repeat(65)}}`);
      const [header, payload, signature] = (await signed()).split('.');
      await refused(
        validator,
        `${deep}.${payload}.${signature}`,
        'ERR_TOKEN_MALFORMED',
        'its header nests deeper than 64 levels',
      );
      await refused(
        validator,
        `${header}.${deep}.${signature}`,
        'ERR_TOKEN_MALFORMED',
        'its payload nests deeper than 64 levels',
      );
    });

    it('refuses bytes that are not UTF-8', async () => {
      await refused(
        validator,
        new Uint8Array([0x65, 0xff, 0xfe, 0x2e]),
        'ERR_TOKEN_MALFORMED',
        'UTF-8',
      );
    });

    it('refuses a payload tampered with after signing', async () => {
      const [header, , signature] = (await signed()).split('.');
      const claims = projectedClaims();
      claims.sub = 'system:serviceaccount:kube-system:admin';
      claims['kubernetes.io'] = { namespace: 'kube-system', serviceaccount: { name: 'admin' } };
      const forged = `${header}.${base64url.encode(JSON.stringify(claims))}.${signature}`;
      await refused(validator, forged, 'ERR_TOKEN_UNAUTHENTICATED', 'signature');
    });

    it('refuses every token once closed', async () => {
      await validator.close();
      await refused(validator, await signed(), 'ERR_TOKEN_VALIDATOR_UNAVAILABLE', 'closed');
    });
  });

  describe("the same verdicts as jose's jwtVerify (the signature is checked with node:crypto)", () => {
    it('accepts exactly the tokens jwtVerify accepts, over accepted and attack tokens alike', async () => {
      const pss = await importPKCS8(await exportPKCS8(rsa.privateKey), 'PS256');
      const cases: [string, string][] = [
        ['RS256', await signed()],
        ['ES256', await signed({ alg: 'ES256' })],
        ['no kid', await signed({ kid: null })],
        ['expired within skew', await signed({}, (c) => (c.exp = T0_S - 10))],
        ['expired beyond skew', await signed({}, (c) => (c.exp = T0_S - 60))],
        ['nbf ahead beyond skew', await signed({}, (c) => (c.nbf = T0_S + 60))],
        ['wrong audience', await signed({}, (c) => (c.aud = ['https://kubernetes.default.svc']))],
        ['wrong issuer', await signed({}, (c) => (c.iss = 'https://evil.example'))],
        ['no exp', await signed({}, (c) => delete c.exp)],
        ['impostor key, same kid', await signed({ key: rsaImpostor.privateKey })],
        ['ES256 header naming the RSA kid', await signed({ alg: 'ES256', kid: 'rsa-1' })],
        ['PS256 by the JWKS key', await signed({ alg: 'PS256', key: pss, kid: 'rsa-1' })],
        ['alg none', crafted({ alg: 'none', kid: 'rsa-1' }, projectedClaims(), new Uint8Array())],
        ['HS256 keyed with the public key', await hs256With(JSON.stringify(rsaJwk))],
      ];
      const tampered = (await signed()).split('.');
      tampered[1] = base64url.encode(
        JSON.stringify({ ...projectedClaims(), sub: 'system:serviceaccount:kube-system:admin' }),
      );
      cases.push(['payload tampered', tampered.join('.')]);
      const keySet = createLocalJWKSet({ keys: [rsaJwk, ecJwk] });
      const accepted: string[] = [];
      for (const [name, token] of cases) {
        const joseAccepts = await jwtVerify(token, keySet, {
          algorithms: ['RS256', 'ES256'],
          issuer: ISSUER,
          audience: AUDIENCE,
          requiredClaims: ['exp', 'sub'],
          clockTolerance: SKEW_MS / 1000,
          currentDate: new Date(T0),
        }).then(
          () => true,
          () => false,
        );
        const oursAccepts = await validator.validate(bytes(token)).then(
          () => true,
          () => false,
        );
        assert.equal(
          oursAccepts,
          joseAccepts,
          `${name}: meshid ${oursAccepts}, jose ${joseAccepts}`,
        );
        if (oursAccepts) accepted.push(name);
      }
      // Both verdicts occur, so the comparison above does not pass vacuously.
      assert.deepEqual(accepted, ['RS256', 'ES256', 'no kid', 'expired within skew']);
    });
  });

  describe('JWKS file', () => {
    it('uses a key added to the JWKS file without a restart', async () => {
      const token = await signed({ key: rsaNext.privateKey, kid: 'rsa-2' });
      await refused(validator, token, 'ERR_TOKEN_UNAUTHENTICATED', 'rsa-2');
      await writeFile(jwksFile, JSON.stringify({ keys: [rsaNextJwk] }));
      const who = await eventually(() => validator.validate(bytes(token)));
      assert.equal(who.serviceAccount, 'web');
      // The old key left the file, so it left the validator too.
      await refused(validator, await signed(), 'ERR_TOKEN_UNAUTHENTICATED', 'rsa-1');
    });

    it('keeps the last good keys when the JWKS file turns bad, and logs the refusal', async () => {
      await validator.close();
      const log = capturingLogger();
      validator = await fileValidator(log.logger);
      const refusedFor = (reason: RegExp): boolean =>
        log
          .records()
          .some((r) => r['event'] === 'JwksReloadRefused' && reason.test(String(r['reason'])));

      await writeFile(jwksFile, '{"keys": [');
      await eventually(async () => assert.ok(refusedFor(/not valid JSON/)));
      assert.equal((await validator.validate(bytes(await signed()))).serviceAccount, 'web');

      const privateJwk = await exportJWK(rsaNext.privateKey);
      await writeFile(jwksFile, JSON.stringify({ keys: [{ ...privateJwk, kid: 'rsa-2' }] }));
      await eventually(async () => assert.ok(refusedFor(/private key material/)));
      assert.equal((await validator.validate(bytes(await signed()))).serviceAccount, 'web');
      const token = await signed({ key: rsaNext.privateKey, kid: 'rsa-2' });
      await refused(validator, token, 'ERR_TOKEN_UNAUTHENTICATED', 'rsa-2');
    });

    it('refuses at create a JWKS file that contains a private key', async () => {
      await writeFile(
        jwksFile,
        JSON.stringify({ keys: [rsaJwk, { ...(await exportJWK(ec.privateKey)), kid: 'ec-1' }] }),
      );
      await assert.rejects(fileValidator(), (err: unknown) => {
        assert.ok(isMeshidError(err, 'ERR_CONFIG_INVALID'), String(err));
        assert.match(err.message, /private key material \("d"\)/);
        assert.match(err.message, /ec-1/);
        return true;
      });
    });

    it('refuses at create a JWKS file with no RSA or P-256 key', async () => {
      const p384 = await generateKeyPair('ES384', { extractable: true });
      await writeFile(jwksFile, JSON.stringify({ keys: [await exportJWK(p384.publicKey)] }));
      await assert.rejects(fileValidator(), (err: unknown) => {
        assert.ok(isMeshidError(err, 'ERR_CONFIG_INVALID'), String(err));
        assert.match(err.message, /no usable public key/);
        return true;
      });
    });

    it('refuses at create a missing or unparseable JWKS file', async () => {
      await rm(jwksFile);
      await assert.rejects(fileValidator(), (err: unknown) =>
        isMeshidError(err, 'ERR_CONFIG_INVALID'),
      );
      await writeFile(jwksFile, 'not json');
      await assert.rejects(fileValidator(), (err: unknown) => {
        assert.ok(isMeshidError(err, 'ERR_CONFIG_INVALID'));
        assert.match(err.message, /not valid JSON/);
        return true;
      });
    });
  });

  describe('JWKS URL', () => {
    let server: JwksServer;

    beforeEach(async () => {
      server = await startJwksServer({ keys: [rsaJwk, ecJwk] });
    });
    afterEach(async () => {
      await server.close();
    });

    async function urlValidator(
      extra: Partial<Extract<JwksSource, { url: string }>> = {},
    ): Promise<JwksTokenValidator> {
      return JwksTokenValidator.create({
        jwks: { url: server.url, ...extra },
        issuer: ISSUER,
        audience: AUDIENCE,
        clockSkewMs: SKEW_MS,
        clock,
        logger: silentLogger(),
      });
    }

    it('validates against the served keys', async () => {
      const remote = await urlValidator();
      try {
        assert.equal((await remote.validate(bytes(await signed()))).serviceAccount, 'web');
        assert.equal(
          (await remote.validate(bytes(await signed({ alg: 'ES256' })))).namespace,
          'emojivoto',
        );
        assert.equal(server.fetches, 1, 'keys are fetched once and reused');
      } finally {
        await remote.close();
      }
    });

    it('picks up a rotated key when a token names an unknown kid', async () => {
      const remote = await urlValidator({ cooldownMs: 0 });
      try {
        assert.equal((await remote.validate(bytes(await signed()))).serviceAccount, 'web');
        server.jwks = { keys: [rsaNextJwk] };
        const token = await signed({ key: rsaNext.privateKey, kid: 'rsa-2' });
        assert.equal((await remote.validate(bytes(token))).serviceAccount, 'web');
        assert.equal(server.fetches, 2);
      } finally {
        await remote.close();
      }
    });

    it('does not refetch for an unknown kid within the cooldown', async () => {
      const remote = await urlValidator();
      try {
        const token = await signed({ key: rsaImpostor.privateKey, kid: 'nope' });
        await refused(remote, token, 'ERR_TOKEN_UNAUTHENTICATED', '"nope"');
        await refused(remote, token, 'ERR_TOKEN_UNAUTHENTICATED', '"nope"');
        assert.equal(server.fetches, 1);
      } finally {
        await remote.close();
      }
    });

    it('answers unavailable, never authenticated, once the JWKS server is stopped', async () => {
      const refetching = await urlValidator({ cooldownMs: 0 });
      const uncached = await urlValidator({ cacheMaxAgeMs: 0 });
      try {
        await server.close();
        const unknownKid = await signed({ key: rsaNext.privateKey, kid: 'rsa-2' });
        await refused(refetching, unknownKid, 'ERR_TOKEN_VALIDATOR_UNAVAILABLE', server.url);
        // Even a good token: keys that cannot be re-checked are not trusted.
        await refused(uncached, await signed(), 'ERR_TOKEN_VALIDATOR_UNAVAILABLE', 'fetched');
      } finally {
        await refetching.close();
        await uncached.close();
      }
    });

    it('answers unavailable when the JWKS server fails with a 5xx', async () => {
      server.status = 503;
      const remote = await urlValidator();
      try {
        await refused(remote, await signed(), 'ERR_TOKEN_VALIDATOR_UNAVAILABLE', '200');
      } finally {
        await remote.close();
      }
    });

    it('answers unavailable when the JWKS server does not answer in time', async () => {
      server.hang = true;
      const remote = await urlValidator({ timeoutMs: 100 });
      try {
        await refused(remote, await signed(), 'ERR_TOKEN_VALIDATOR_UNAVAILABLE', 'timed out');
      } finally {
        await remote.close();
      }
    });

    it('answers unavailable when the served JWKS holds a private key', async () => {
      server.jwks = { keys: [{ ...(await exportJWK(rsa.privateKey)), kid: 'rsa-1' }] };
      const remote = await urlValidator();
      try {
        await refused(remote, await signed(), 'ERR_TOKEN_VALIDATOR_UNAVAILABLE', 'private');
      } finally {
        await remote.close();
      }
    });

    it('trusts the given CA for an https JWKS URL, and only it', async () => {
      const tls = await selfSignedServerCert();
      const secure = await startJwksServer({ keys: [rsaJwk] }, tls);
      const base = {
        issuer: ISSUER,
        audience: AUDIENCE,
        clockSkewMs: SKEW_MS,
        clock,
        logger: silentLogger(),
      };
      const trusting = await JwksTokenValidator.create({
        ...base,
        jwks: { url: secure.url, caPem: tls.caPem },
      });
      const untrusting = await JwksTokenValidator.create({ ...base, jwks: { url: secure.url } });
      try {
        assert.equal((await trusting.validate(bytes(await signed()))).serviceAccount, 'web');
        await refused(untrusting, await signed(), 'ERR_TOKEN_VALIDATOR_UNAVAILABLE');
      } finally {
        await trusting.close();
        await untrusting.close();
        await secure.close();
      }
    });

    it('refuses at create a URL that is not http(s), or a CA for a plain http URL', async () => {
      const base = {
        issuer: ISSUER,
        audience: AUDIENCE,
        clockSkewMs: SKEW_MS,
        clock,
        logger: silentLogger(),
      };
      for (const jwks of [
        { url: 'file:///etc/jwks.json' },
        { url: 'not a url' },
        { url: server.url, caPem: '-----BEGIN CERTIFICATE-----' },
      ]) {
        await assert.rejects(JwksTokenValidator.create({ ...base, jwks }), (err: unknown) =>
          isMeshidError(err, 'ERR_CONFIG_INVALID'),
        );
      }
    });
  });
});

// ---- a JWKS server on 127.0.0.1 ---------------------------------------------------------------

interface JwksServer {
  readonly url: string;
  jwks: { keys: JWK[] };
  status: number;
  hang: boolean;
  readonly fetches: number;
  close(): Promise<void>;
}

async function startJwksServer(
  jwks: { keys: JWK[] },
  tls?: { certPem: string; keyPem: string },
): Promise<JwksServer> {
  let fetches = 0;
  const state = { jwks, status: 200, hang: false };
  const handler: http.RequestListener = (_req, res) => {
    fetches++;
    if (state.hang) return;
    res.writeHead(state.status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(state.jwks));
  };
  const server = tls
    ? https.createServer({ cert: tls.certPem, key: tls.keyPem }, handler)
    : http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  let closed: Promise<void> | undefined;
  return Object.defineProperties(state as unknown as JwksServer, {
    url: { value: `${tls ? 'https' : 'http'}://127.0.0.1:${port}/openid/v1/jwks` },
    fetches: { get: () => fetches },
    close: {
      value: () =>
        (closed ??= new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        })),
    },
  });
}

/** A private CA and a server certificate for 127.0.0.1 signed by it, made at test time. */
async function selfSignedServerCert(): Promise<{ certPem: string; keyPem: string; caPem: string }> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const caKeys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
  const leafKeys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
  const notBefore = new Date(Date.now() - 60_000);
  const notAfter = new Date(Date.now() + 3600_000);
  const ca = await x509.X509CertificateGenerator.createSelfSigned(
    {
      name: 'CN=jwks test CA',
      keys: caKeys,
      notBefore,
      notAfter,
      signingAlgorithm: alg,
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true),
      ],
    },
    webcrypto,
  );
  const leaf = await x509.X509CertificateGenerator.create(
    {
      subject: 'CN=127.0.0.1',
      issuer: ca.subject,
      publicKey: leafKeys.publicKey,
      signingKey: caKeys.privateKey,
      notBefore,
      notAfter,
      signingAlgorithm: alg,
      extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'ip', value: '127.0.0.1' }])],
    },
    webcrypto,
  );
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', leafKeys.privateKey);
  const keyPem = x509.PemConverter.encode(pkcs8, 'PRIVATE KEY');
  return { certPem: leaf.toString('pem'), keyPem, caPem: ca.toString('pem') };
}
