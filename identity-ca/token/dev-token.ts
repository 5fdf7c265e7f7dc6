/**
 * Development-only token signing: a key pair that plays the part of a cluster's service-account
 * issuer, and tokens shaped like the projected ServiceAccount tokens the kubelet mounts. Local
 * mode (`meshid init`, `npm start`) and tests use it; the CLI labels it as not for production,
 * since whoever holds this private key can mint any workload's identity.
 */
import { randomUUID } from 'node:crypto';
import {
  SignJWT,
  calculateJwkThumbprint,
  exportJWK,
  exportPKCS8,
  generateKeyPair,
  importPKCS8,
  type CryptoKey,
  type JWK,
} from 'jose';
import { MeshidError, type Clock } from '../../core/index.js';

/** The algorithm a cluster's service-account issuer uses by default. */
const DEV_TOKEN_ALG = 'RS256';

/**
 * Generates a token-signing key: RSA 2048 for RS256, as kube-apiserver's service-account key is
 * by default. The JWKS holds only the public key, with `kid` = its RFC 7638 thumbprint.
 *
 * @example
 * ```ts
 * const { privateKeyPem, jwks, kid } = await generateTokenSigningKey();
 * await writeFile('jwks.json', JSON.stringify(jwks)); // what the CA validates against
 * ```
 */
export async function generateTokenSigningKey(): Promise<{
  privateKeyPem: string /* PKCS#8 */;
  jwks: { keys: JWK[] };
  kid: string /* RFC 7638 thumbprint */;
}> {
  const { publicKey, privateKey } = await generateKeyPair(DEV_TOKEN_ALG, {
    modulusLength: 2048,
    extractable: true,
  });
  const { kty, n, e } = await exportJWK(publicKey);
  if (kty !== 'RSA' || n === undefined || e === undefined) {
    throw new Error('generated key did not export as an RSA JWK');
  }
  // The thumbprint covers only the required members (kty, n, e), so it is stable however the
  // JWK is later decorated.
  const kid = await calculateJwkThumbprint({ kty, n, e }, 'sha256');
  const jwk: JWK = { kty, n, e, kid, alg: DEV_TOKEN_ALG, use: 'sig' };
  return { privateKeyPem: await exportPKCS8(privateKey), jwks: { keys: [jwk] }, kid };
}

/**
 * Mints a token as the kubelet would mount it for a pod: header `{alg: RS256, kid}`, claims iss,
 * sub (`system:serviceaccount:<ns>:<sa>`), aud (a list), exp, iat, nbf, jti and
 * `kubernetes.io: {namespace, serviceaccount: {name, uid}, pod?: {name, uid}}` with random UUIDs.
 * Times come from `clock` and are whole seconds, as JWT NumericDates are.
 *
 * Names are not checked, so that a developer can also mint the tokens the CA must refuse.
 *
 * @example
 * ```ts
 * const token = await mintDevelopmentToken({ privateKeyPem, kid, issuer: 'meshid-local',
 *   audience: 'identity.l5d.io', namespace: 'demo', serviceAccount: 'web', ttlMs: 86_400_000,
 *   clock: systemClock });
 * ```
 */
export async function mintDevelopmentToken(opts: {
  privateKeyPem: string;
  kid: string;
  issuer: string;
  audience: string;
  namespace: string;
  serviceAccount: string;
  ttlMs: number;
  clock: Clock;
  podName?: string;
}): Promise<string> {
  if (!Number.isFinite(opts.ttlMs) || opts.ttlMs < 1000) {
    throw new MeshidError('ERR_CONFIG_INVALID', 'ttlMs must be at least 1000 (one second)');
  }
  let key: CryptoKey;
  try {
    key = await importPKCS8(opts.privateKeyPem, DEV_TOKEN_ALG);
  } catch (err) {
    throw new MeshidError('ERR_CONFIG_INVALID', 'privateKeyPem is not a PKCS#8 RSA private key', {
      cause: err,
    });
  }
  const iat = Math.floor(opts.clock.now() / 1000);
  const kubernetes: Record<string, unknown> = {
    namespace: opts.namespace,
    serviceaccount: { name: opts.serviceAccount, uid: randomUUID() },
  };
  if (opts.podName !== undefined) kubernetes['pod'] = { name: opts.podName, uid: randomUUID() };
  return new SignJWT({ 'kubernetes.io': kubernetes })
    .setProtectedHeader({ alg: DEV_TOKEN_ALG, kid: opts.kid })
    .setIssuer(opts.issuer)
    .setSubject(`system:serviceaccount:${opts.namespace}:${opts.serviceAccount}`)
    .setAudience([opts.audience])
    .setIssuedAt(iat)
    .setNotBefore(iat)
    .setExpirationTime(iat + Math.floor(opts.ttlMs / 1000))
    .setJti(randomUUID())
    .sign(key);
}
