/**
 * The claim checks of a projected ServiceAccount token, and the token's parsing, for the JWKS
 * validator. They are the checks jose's jwtVerify makes (issuer, audience, exp required, nbf,
 * with the skew allowance), plus iat in the future and the `kubernetes.io` binding; the unit tests
 * hold them to jwtVerify's verdicts on every token they make. Every refusal is a MeshidError whose
 * message names what failed and never quotes the token.
 */
import {
  JsonTooDeep,
  MeshidError,
  formatDuration,
  parseJson,
  parseServiceAccountUsername,
  printable,
  type WorkloadIdentity,
} from '../../core/index.js';
import type { JWTPayload } from 'jose';
import { checkTokenSize } from './validator.js';

// Three non-empty base64url segments. No overlap between the class and '.', so matching is
// linear even on a hostile 16 KiB input.
// The signature part may be empty so that an unsecured (`alg: none`) token is refused for its
// algorithm, with a message that says so, rather than as a malformed string.
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;
// fatal: a token that is not UTF-8 is refused rather than silently repaired with U+FFFD.
export const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** What a token must say: its issuer and audience, and the clock skew allowed. */
export interface ClaimPolicy {
  readonly issuer: string;
  readonly audience: string;
  readonly skewMs: number;
}

/**
 * The cheap checks, before any base64 or JSON work: bytes, size, UTF-8, compact serialization.
 * Returns the JWS text.
 */
export function compactToken(token: Uint8Array, maxBytes: number): string {
  if (!(token instanceof Uint8Array)) {
    throw new MeshidError('ERR_TOKEN_MALFORMED', 'token must be bytes');
  }
  checkTokenSize(token, maxBytes);
  let text: string;
  try {
    text = UTF8.decode(token);
  } catch {
    throw new MeshidError('ERR_TOKEN_MALFORMED', 'token is not UTF-8 text');
  }
  // A token file written by hand (`echo $TOKEN > file`) ends in a newline; it is not part of
  // the JWS, so tolerate trailing whitespace and nothing else.
  const jwt = text.trimEnd();
  if (!COMPACT_JWS.test(jwt)) {
    throw new MeshidError(
      'ERR_TOKEN_MALFORMED',
      'token is not a JWT in compact serialization (three base64url parts separated by dots)',
    );
  }
  return jwt;
}

/**
 * Checks a verified token's claims and returns its ServiceAccount: exp, nbf and iat are finite
 * numbers; iss and aud are the policy's; exp is present (a legacy Secret-based token has none,
 * never expires, and must not get certificates) and not past, nbf and iat not in the future (with
 * the skew allowance); the subject is a ServiceAccount, and the `kubernetes.io` claim, when
 * present, names the same one.
 */
export function checkClaims(
  payload: JWTPayload,
  policy: ClaimPolicy,
  now: number,
): WorkloadIdentity {
  for (const claim of ['exp', 'nbf', 'iat'] as const) {
    const v = payload[claim];
    if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v))) {
      throw new MeshidError('ERR_TOKEN_MALFORMED', `token claim "${claim}" is not a number`);
    }
  }
  if (payload.iss !== policy.issuer) {
    throw new MeshidError(
      'ERR_TOKEN_UNAUTHENTICATED',
      `token issuer ${quote(payload.iss)} is not "${printable(policy.issuer)}"`,
    );
  }
  const aud = payload.aud;
  if (!(aud === policy.audience || (Array.isArray(aud) && aud.includes(policy.audience)))) {
    throw new MeshidError(
      'ERR_TOKEN_UNAUTHENTICATED',
      `token audience ${audienceList(aud)} does not include "${printable(policy.audience)}"`,
    );
  }
  checkTimes(payload, policy.skewMs, now);
  const sub = payload.sub;
  if (sub === undefined) {
    throw new MeshidError('ERR_TOKEN_MALFORMED', 'token has no subject (sub)');
  }
  // jwtVerify checks iat only with maxTokenAge; a token issued in the future is as suspect as
  // one not yet valid (Kubernetes sets nbf = iat, but a third-party issuer may omit nbf).
  if (payload.iat !== undefined && payload.iat * 1000 > now + policy.skewMs) {
    throw new MeshidError(
      'ERR_TOKEN_UNAUTHENTICATED',
      `token issued at ${isoSeconds(payload.iat)} is in the future (now ${isoMs(now)}, clock skew allowance ${formatDuration(policy.skewMs)})`,
    );
  }
  if (typeof sub !== 'string') {
    throw new MeshidError('ERR_TOKEN_MALFORMED', 'token subject (sub) is not a string');
  }
  const identity = parseServiceAccountUsername(sub);
  checkKubernetesClaim(payload['kubernetes.io'], identity);
  return identity;
}

/** exp (required) and nbf against `now`, with the skew allowance. */
function checkTimes(payload: JWTPayload, skewMs: number, now: number): void {
  const allowance = `(now ${isoMs(now)}, clock skew allowance ${formatDuration(skewMs)})`;
  if (payload.exp === undefined) {
    throw new MeshidError(
      'ERR_TOKEN_UNAUTHENTICATED',
      'token has no expiry (exp); non-expiring (legacy Secret) tokens are refused',
    );
  }
  if (payload.exp * 1000 <= now - skewMs) {
    throw new MeshidError(
      'ERR_TOKEN_UNAUTHENTICATED',
      `token expired at ${isoSeconds(payload.exp)} ${allowance}`,
    );
  }
  if (payload.nbf !== undefined && payload.nbf * 1000 > now + skewMs) {
    throw new MeshidError(
      'ERR_TOKEN_UNAUTHENTICATED',
      `token is not valid before ${isoSeconds(payload.nbf)} ${allowance}`,
    );
  }
}

/** A base64url JSON object of the token, or ERR_TOKEN_MALFORMED naming the part. */
export function parseSegment(b64: string, part: 'header' | 'payload'): Record<string, unknown> {
  let value: unknown;
  try {
    value = parseJson(UTF8.decode(Buffer.from(b64, 'base64url')), `its ${part}`);
  } catch (err) {
    if (err instanceof JsonTooDeep)
      throw new MeshidError(
        'ERR_TOKEN_MALFORMED',
        `token is not a well-formed JWT: ${err.message}`,
      );
    throw new MeshidError(
      'ERR_TOKEN_MALFORMED',
      `token is not a well-formed JWT: its ${part} is not base64url JSON`,
    );
  }
  if (!isPlainObject(value)) {
    throw new MeshidError(
      'ERR_TOKEN_MALFORMED',
      `token is not a well-formed JWT: its ${part} is not a JSON object`,
    );
  }
  return value;
}

/** When the token carries the kubernetes.io claim, its ServiceAccount must be the subject's. */
function checkKubernetesClaim(claim: unknown, identity: WorkloadIdentity): void {
  if (claim === undefined) return;
  if (!isPlainObject(claim)) {
    throw new MeshidError('ERR_TOKEN_MALFORMED', 'token claim "kubernetes.io" is not an object');
  }
  if (claim['namespace'] !== identity.namespace) {
    throw new MeshidError(
      'ERR_TOKEN_UNAUTHENTICATED',
      `token claim kubernetes.io.namespace ${quote(claim['namespace'])} does not match the subject's namespace "${identity.namespace}"`,
    );
  }
  const sa = claim['serviceaccount'];
  const name = isPlainObject(sa) ? sa['name'] : undefined;
  if (name !== identity.serviceAccount) {
    throw new MeshidError(
      'ERR_TOKEN_UNAUTHENTICATED',
      `token claim kubernetes.io.serviceaccount.name ${quote(name)} does not match the subject's service account "${identity.serviceAccount}"`,
    );
  }
}

/** A field of the (unauthenticated) header, for messages only; '' when absent or unreadable. */
export function headerField(token: Uint8Array, field: 'alg' | 'kid'): string {
  try {
    const text = UTF8.decode(token);
    const header: unknown = parseJson(
      Buffer.from(text.slice(0, text.indexOf('.')), 'base64url').toString('utf8'),
      'its header',
    );
    const value = isPlainObject(header) ? header[field] : undefined;
    return value === undefined ? '' : printable(String(value), 40);
  } catch {
    return '';
  }
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function quote(v: unknown): string {
  return typeof v === 'string'
    ? `"${printable(v)}"`
    : v === undefined
      ? '(absent)'
      : printable(JSON.stringify(v) ?? String(v));
}

function audienceList(aud: unknown): string {
  const list = Array.isArray(aud) ? aud : aud === undefined ? [] : [aud];
  return `[${list.slice(0, 8).map(quote).join(', ')}${list.length > 8 ? ', …' : ''}]`;
}

function isoSeconds(sec: unknown): string {
  return typeof sec === 'number' ? isoMs(sec * 1000) : quote(sec);
}

function isoMs(ms: number): string {
  return Number.isFinite(ms) && Math.abs(ms) <= 8.64e15 ? new Date(ms).toISOString() : String(ms);
}
