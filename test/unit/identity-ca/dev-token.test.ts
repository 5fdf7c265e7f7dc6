import { strict as assert } from 'node:assert';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  calculateJwkThumbprint,
  createLocalJWKSet,
  decodeProtectedHeader,
  importPKCS8,
  jwtVerify,
  type JSONWebKeySet,
} from 'jose';
import { isMeshidError } from '../../../core/index.js';
import { ManualClock } from '../../../core/clock.js';
import { silentLogger } from '../../../core/logger.js';
import {
  generateTokenSigningKey,
  mintDevelopmentToken,
} from '../../../identity-ca/token/dev-token.js';
import { JwksTokenValidator } from '../../../identity-ca/token/jwks.js';

const ISSUER = 'meshid-local';
const AUDIENCE = 'identity.l5d.io';
const T0 = Date.UTC(2026, 7, 1, 12, 0, 0);
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('development tokens', () => {
  let signingKey: Awaited<ReturnType<typeof generateTokenSigningKey>>;
  let clock: ManualClock;

  before(async () => {
    signingKey = await generateTokenSigningKey();
  });
  beforeEach(() => {
    clock = new ManualClock(T0);
  });

  /** The generated JWKS as jose types it (the API gives node:crypto's JsonWebKey). */
  const jwks = (): JSONWebKeySet => JSON.parse(JSON.stringify(signingKey.jwks)) as JSONWebKeySet;

  const mint = (extra: { podName?: string; ttlMs?: number } = {}): Promise<string> =>
    mintDevelopmentToken({
      privateKeyPem: signingKey.privateKeyPem,
      kid: signingKey.kid,
      issuer: ISSUER,
      audience: AUDIENCE,
      namespace: 'demo',
      serviceAccount: 'web',
      ttlMs: 86_400_000,
      clock,
      ...extra,
    });

  it('generates an RSA 2048 public JWKS whose kid is the RFC 7638 thumbprint', async () => {
    const [jwk, ...rest] = signingKey.jwks.keys;
    assert.ok(jwk);
    assert.equal(rest.length, 0);
    assert.equal(jwk.kty, 'RSA');
    assert.equal(jwk['alg'], 'RS256');
    assert.equal(jwk['use'], 'sig');
    assert.equal(Buffer.from(jwk.n ?? '', 'base64url').length * 8, 2048);
    for (const secret of ['d', 'p', 'q', 'dp', 'dq', 'qi']) assert.ok(!(secret in jwk), secret);
    assert.equal(jwk['kid'], signingKey.kid);
    const expected = await calculateJwkThumbprint(
      { kty: 'RSA', n: jwk.n ?? '', e: jwk.e ?? '' },
      'sha256',
    );
    assert.equal(signingKey.kid, expected);
  });

  it('returns the matching private key as PKCS#8 PEM', async () => {
    assert.match(signingKey.privateKeyPem, /^-----BEGIN PRIVATE KEY-----\n/);
    const key = await importPKCS8(signingKey.privateKeyPem, 'RS256');
    assert.equal(key.type, 'private');
  });

  it('generates a new key each time', async () => {
    const other = await generateTokenSigningKey();
    assert.notEqual(other.kid, signingKey.kid);
  });

  it('mints a token that verifies with jose against the generated JWKS and carries the projected-token claims', async () => {
    const token = await mint();
    const { payload, protectedHeader } = await jwtVerify(token, createLocalJWKSet(jwks()), {
      algorithms: ['RS256'],
      issuer: ISSUER,
      audience: AUDIENCE,
      currentDate: new Date(T0),
    });
    assert.deepEqual(protectedHeader, { alg: 'RS256', kid: signingKey.kid });
    assert.equal(payload.sub, 'system:serviceaccount:demo:web');
    assert.deepEqual(payload.aud, [AUDIENCE]);
    assert.equal(payload.iat, T0 / 1000);
    assert.equal(payload.nbf, T0 / 1000);
    assert.equal(payload.exp, T0 / 1000 + 86_400);
    assert.match(String(payload.jti), UUID);
    const k8s = payload['kubernetes.io'] as {
      namespace: string;
      serviceaccount: { name: string; uid: string };
      pod?: unknown;
    };
    assert.equal(k8s.namespace, 'demo');
    assert.equal(k8s.serviceaccount.name, 'web');
    assert.match(k8s.serviceaccount.uid, UUID);
    assert.equal(k8s.pod, undefined);
    assert.deepEqual(Object.keys(payload).sort(), [
      'aud',
      'exp',
      'iat',
      'iss',
      'jti',
      'kubernetes.io',
      'nbf',
      'sub',
    ]);
  });

  it('binds the token to a pod when a pod name is given', async () => {
    const { payload } = await jwtVerify(
      await mint({ podName: 'web-0' }),
      createLocalJWKSet(jwks()),
      {
        currentDate: new Date(T0),
      },
    );
    const pod = (payload['kubernetes.io'] as { pod?: { name: string; uid: string } }).pod;
    assert.equal(pod?.name, 'web-0');
    assert.match(pod?.uid ?? '', UUID);
  });

  it('gives each token a fresh jti and service-account uid', async () => {
    const claims = async (): Promise<Record<string, unknown>> =>
      (await jwtVerify(await mint(), createLocalJWKSet(jwks()), { currentDate: new Date(T0) }))
        .payload;
    const [a, b] = await Promise.all([claims(), claims()]);
    assert.ok(a && b);
    assert.notEqual(a['jti'], b['jti']);
    assert.notDeepEqual(a['kubernetes.io'], b['kubernetes.io']);
  });

  it('takes its times from the clock, in whole seconds', async () => {
    clock.set(T0 + 999);
    const token = await mint({ ttlMs: 60_500 });
    assert.equal(decodeProtectedHeader(token).alg, 'RS256');
    const { payload } = await jwtVerify(token, createLocalJWKSet(jwks()), {
      currentDate: new Date(T0),
    });
    assert.equal(payload.iat, T0 / 1000);
    assert.equal(payload.exp, T0 / 1000 + 60);
  });

  it('mints tokens the JWKS token validator accepts, until they expire', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'meshid-dev-token-'));
    const file = join(dir, 'jwks.json');
    await writeFile(file, JSON.stringify(signingKey.jwks));
    const validator = await JwksTokenValidator.create({
      jwks: { file },
      issuer: ISSUER,
      audience: AUDIENCE,
      clockSkewMs: 20_000,
      clock,
      logger: silentLogger(),
    });
    try {
      const token = new TextEncoder().encode(await mint({ podName: 'web-0', ttlMs: 600_000 }));
      assert.deepEqual(await validator.validate(token), {
        namespace: 'demo',
        serviceAccount: 'web',
      });
      clock.advance(600_000 + 21_000);
      await assert.rejects(validator.validate(token), (err: unknown) =>
        isMeshidError(err, 'ERR_TOKEN_UNAUTHENTICATED'),
      );
    } finally {
      await validator.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses a ttl under a second and a private key that is not PKCS#8 RSA', async () => {
    await assert.rejects(mint({ ttlMs: 0 }), (err: unknown) =>
      isMeshidError(err, 'ERR_CONFIG_INVALID'),
    );
    await assert.rejects(
      mintDevelopmentToken({
        privateKeyPem: 'not a key',
        kid: 'k',
        issuer: ISSUER,
        audience: AUDIENCE,
        namespace: 'demo',
        serviceAccount: 'web',
        ttlMs: 60_000,
        clock,
      }),
      (err: unknown) => isMeshidError(err, 'ERR_CONFIG_INVALID'),
    );
  });
});
