/**
 * What the JWKS validator's two key sources share: the key-set policy (which members of a JWKS
 * are used, and which make the whole set unusable), the log events, and small helpers.
 */
import { importJWK, type JSONWebKeySet, type JWK, type JWTVerifyGetKey } from 'jose';
import { JsonTooDeep, LogKey, parseJson, printable, type Logger } from '../../core/index.js';
import { isPlainObject, quote } from './claims.js';

/** Where a validate gets its keys from; `keySet` is read once per validate. */
export interface KeySource {
  readonly keySet: JWTVerifyGetKey;
  close(): void;
}

/** Values of the `event` log key this validator writes. */
export const JwksLogEvent = {
  loaded: 'JwksLoaded',
  reloaded: 'JwksReloaded',
  reloadRefused: 'JwksReloadRefused',
  keyIgnored: 'JwksKeyIgnored',
  unavailable: 'JwksUnavailable',
  recovered: 'JwksRecovered',
  tokenRefused: 'TokenRefused',
} as const;

/** Log keys of this module beside core's LogKey. */
export const JwksLogKey = { file: 'file', kids: 'kids' } as const;

/** A JWKS file or response larger than this is refused; real ones hold a handful of keys. */
export const MAX_JWKS_BYTES = 1024 * 1024;
const MIN_RSA_BITS = 2048;

/** Members of a JWKS that carry secret material; a public key set must have none of them. */
const SECRET_MEMBERS = ['d', 'k', 'priv'] as const;

/**
 * Returns the members of a JWKS this validator can use: RSA (≥ 2048 bits) for RS256 and EC P-256
 * for ES256, for signatures. Throws when any member holds secret material (a private key where
 * the public set belongs is a leak to stop, not to use) or when no member is usable; logs the
 * members it ignores.
 */
export async function usableKeySet(json: unknown, log: Logger): Promise<JSONWebKeySet> {
  if (!isPlainObject(json) || !Array.isArray(json['keys'])) {
    throw new Error('is not a JWKS (a JSON object with a "keys" array)');
  }
  const members: unknown[] = json['keys'];
  const usable: JWK[] = [];
  for (const [i, member] of members.entries()) {
    if (!isPlainObject(member)) throw new Error(`member ${i} is not a JSON object`);
    const label = `member ${i}${typeof member['kid'] === 'string' ? ` (kid "${printable(member['kid'])}")` : ''}`;
    const secret = SECRET_MEMBERS.find((m) => m in member);
    if (secret !== undefined) {
      throw new Error(
        `${label} holds private key material ("${secret}"); a JWKS must carry public keys only`,
      );
    }
    const problem = await unusableBecause(member);
    if (problem === undefined) {
      usable.push(member as JWK);
    } else {
      log.info(
        { [LogKey.event]: JwksLogEvent.keyIgnored, [LogKey.reason]: `${label}: ${problem}` },
        'JWKS member ignored',
      );
    }
  }
  if (usable.length === 0) {
    throw new Error(`has no usable public key (RSA of at least ${MIN_RSA_BITS} bits, or EC P-256)`);
  }
  return { keys: usable };
}

async function unusableBecause(jwk: Record<string, unknown>): Promise<string | undefined> {
  if (jwk['use'] !== undefined && jwk['use'] !== 'sig')
    return `"use" is ${quote(jwk['use'])}, not "sig"`;
  const ops = jwk['key_ops'];
  if (ops !== undefined && !(Array.isArray(ops) && ops.includes('verify')))
    return '"key_ops" lacks "verify"';
  let alg: 'RS256' | 'ES256';
  if (jwk['kty'] === 'RSA') {
    alg = 'RS256';
    if (typeof jwk['n'] !== 'string' || typeof jwk['e'] !== 'string')
      return 'RSA key lacks "n" or "e"';
    const bits = base64urlBits(jwk['n']);
    if (bits < MIN_RSA_BITS) return `RSA key is ${bits} bits, under ${MIN_RSA_BITS}`;
  } else if (jwk['kty'] === 'EC') {
    alg = 'ES256';
    if (jwk['crv'] !== 'P-256') return `EC curve ${quote(jwk['crv'])} is not P-256`;
  } else {
    return `key type ${quote(jwk['kty'])} is not RSA or EC`;
  }
  if (jwk['alg'] !== undefined && jwk['alg'] !== alg)
    return `"alg" ${quote(jwk['alg'])} is not ${alg}`;
  try {
    await importJWK({ ...(jwk as JWK), ext: true }, alg);
  } catch (err) {
    return `not a valid ${alg} public key: ${describe(err)}`;
  }
  return undefined;
}

/** A key set's JSON (a file or the API server's answer), with core's bounded nesting. */
export function parseKeySetJson(text: string): unknown {
  try {
    return parseJson(text, 'the key set');
  } catch (err) {
    if (err instanceof JsonTooDeep)
      throw new Error(`is not a key set: ${err.message}`, { cause: err });
    throw new Error('is not valid JSON', { cause: err });
  }
}

/** Significant bits of a base64url big-endian unsigned integer (an RSA modulus). */
function base64urlBits(b64: string): number {
  const bytes = Buffer.from(b64, 'base64url');
  let i = 0;
  while (i < bytes.length && bytes[i] === 0) i++;
  if (i === bytes.length) return 0;
  return (bytes.length - i - 1) * 8 + (32 - Math.clz32(bytes[i]!));
}

export function kids(set: JSONWebKeySet | undefined): string[] {
  return (set?.keys ?? []).map((k) => (typeof k.kid === 'string' ? printable(k.kid) : '(no kid)'));
}

/**
 * An error's message (and its cause's) for a log line or a refusal: one line, bounded. Untrusted
 * text is passed through printable() where it enters a message; this only keeps the result tidy.
 */
export function describe(err: unknown): string {
  const text =
    err instanceof Error
      ? `${err.message}${err.cause instanceof Error ? `: ${err.cause.message}` : ''}`
      : String(err);
  // eslint-disable-next-line no-control-regex
  const line = text.replace(/[\u0000-\u001f\u007f-\u009f]/g, ' ');
  return line.length > 300 ? `${line.slice(0, 300)}…` : line;
}
