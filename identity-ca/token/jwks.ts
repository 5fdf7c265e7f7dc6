/**
 * Validates projected ServiceAccount tokens offline, against the cluster's (or the local state
 * folder's) JSON Web Key Set.
 *
 * `jose` owns the key sets: parsing and checking the JWKS, fetching a remote one (cache, cooldown,
 * refetch on an unknown `kid`), importing keys and choosing the key a token's header names. The
 * signature itself is checked with `node:crypto`, synchronously, with the chosen key converted to
 * a KeyObject once: jose 6 verifies through WebCrypto, whose every call is a job on the libuv
 * thread pool, and on the CA's per-request path that costs about three times the RSA
 * verification itself (measured: ~75 µs of CPU against ~30 µs for RS256). jose verifies nothing
 * here: the claims are checked by `claims.ts`, as jwtVerify would check them, and the unit tests
 * hold the two to the same verdicts on every token they make. The keys come from a watched file
 * (`jwks-file.ts`) or a URL (`jwks-url.ts`), both under one key-set policy (`jwks-keys.ts`).
 *
 * The happy path is kept short: a size and shape check, one header and one payload parse, one
 * signature verification, and a few string compares.
 * Every refusal is a MeshidError whose message names what failed and never quotes the token, not
 * even its first characters: messages reach logs and clients, and a bearer token must not.
 */
import { KeyObject, verify as verifySignature } from 'node:crypto';
import { errors, type JWSHeaderParameters, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import {
  LogKey,
  MeshidError,
  importSpki,
  isMeshidError,
  printable,
  type Clock,
  type Logger,
  type WorkloadIdentity,
} from '../../core/index.js';
import { checkClaims, compactToken, headerField, parseSegment, quote } from './claims.js';
import type { ClaimPolicy } from './claims.js';
import { openFileKeySource } from './jwks-file.js';
import { JwksLogEvent, describe, type KeySource } from './jwks-keys.js';
import { openUrlKeySource, type JwksUrl } from './jwks-url.js';
import { DEFAULT_MAX_TOKEN_BYTES } from './validator.js';
import type { TokenValidator } from './validator.js';

export { JwksLogEvent } from './jwks-keys.js';

/**
 * The only signature algorithms accepted. RS256 is what kube-apiserver signs with by default;
 * ES256 is what it signs with when its service-account key is EC P-256. Everything else (`none`,
 * HMAC, which would let a public key serve as a shared secret, PSS, EdDSA) is refused.
 */
const ALLOWED_TOKEN_ALGORITHMS: readonly ['RS256', 'ES256'] = Object.freeze([
  'RS256',
  'ES256',
] as const);

/**
 * Where the JWKS comes from: a watched file, or an HTTP(S) URL such as the API server's
 * `/openid/v1/jwks`. For a URL, jose's remote set decides when to fetch (cache age, and a refetch
 * on an unknown `kid` once the cooldown has passed); those ages run on the system clock, as jose
 * keeps them, not on the injected one, which governs token times only.
 */
export type JwksSource = { readonly file: string } | JwksUrl;

/** Options of {@link JwksTokenValidator.create}. */
interface JwksTokenValidatorOptions {
  readonly jwks: JwksSource;
  /** The token issuer (`iss`) to require, e.g. `https://kubernetes.default.svc.cluster.local`. */
  readonly issuer: string;
  /** The audience that must be among the token's `aud` (the config's default is `identity.l5d.io`). */
  readonly audience: string;
  /** Tolerance for exp, nbf and iat, in milliseconds. */
  readonly clockSkewMs: number;
  readonly clock: Clock;
  readonly logger: Logger;
  /** Tokens over this many bytes are refused as malformed; default {@link DEFAULT_MAX_TOKEN_BYTES}. */
  readonly maxTokenBytes?: number;
}

/**
 * A TokenValidator that checks token signatures against a JWKS, offline.
 *
 * @example
 * ```ts
 * const validator = await JwksTokenValidator.create({
 *   jwks: { file: '.meshid/token-signing.jwks.json' },
 *   issuer: 'https://kubernetes.default.svc.cluster.local',
 *   audience: 'identity.l5d.io',
 *   clockSkewMs: 20_000,
 *   clock: systemClock,
 *   logger,
 * });
 * const who = await validator.validate(tokenBytes); // { namespace, serviceAccount }
 * ```
 */
export class JwksTokenValidator implements TokenValidator {
  readonly #policy: ClaimPolicy;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #maxTokenBytes: number;
  readonly #source: KeySource;
  #closed = false;

  private constructor(opts: JwksTokenValidatorOptions, source: KeySource, log: Logger) {
    this.#policy = { issuer: opts.issuer, audience: opts.audience, skewMs: opts.clockSkewMs };
    this.#clock = opts.clock;
    this.#log = log;
    this.#maxTokenBytes = opts.maxTokenBytes ?? DEFAULT_MAX_TOKEN_BYTES;
    this.#source = source;
  }

  /**
   * Loads the JWKS (a file, which is then watched and hot-reloaded) or sets up the remote key set
   * (fetched now if reachable, and again as jose's cache and cooldown rules say).
   * Throws ERR_CONFIG_INVALID when the options or the JWKS file are unusable.
   *
   * @example
   * ```ts
   * const v = await JwksTokenValidator.create({ jwks: { url: 'https://10.0.0.1/openid/v1/jwks', caPem },
   *   issuer, audience: 'identity.l5d.io', clockSkewMs: 20_000, clock, logger });
   * ```
   */
  static async create(opts: JwksTokenValidatorOptions): Promise<JwksTokenValidator> {
    checkOptions(opts);
    const log = opts.logger.child({ [LogKey.component]: 'jwks-token-validator' });
    const source =
      'file' in opts.jwks
        ? await openFileKeySource(opts.jwks.file, log, opts.clock)
        : await openUrlKeySource(opts.jwks, log);
    return new JwksTokenValidator(opts, source, log);
  }

  /** See {@link TokenValidator.validate}. */
  async validate(token: Uint8Array): Promise<WorkloadIdentity> {
    // One reading of the clock per call, so that a refusal reports the time it was judged at.
    const now = this.#clock.now();
    try {
      return await this.#validate(token, now);
    } catch (err) {
      const refusal = this.#translate(err, token);
      this.#log.debug(
        {
          [LogKey.event]: JwksLogEvent.tokenRefused,
          [LogKey.code]: refusal.code,
          [LogKey.reason]: refusal.message,
        },
        'token refused',
      );
      throw refusal;
    }
  }

  /** See {@link TokenValidator.close}. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#source.close();
  }

  async #validate(token: Uint8Array, now: number): Promise<WorkloadIdentity> {
    if (this.#closed) {
      throw new MeshidError(
        'ERR_TOKEN_VALIDATOR_UNAVAILABLE',
        'the JWKS token validator is closed',
      );
    }
    const jwt = compactToken(token, this.#maxTokenBytes);
    const dot1 = jwt.indexOf('.');
    const dot2 = jwt.indexOf('.', dot1 + 1);
    const header = parseSegment(jwt.slice(0, dot1), 'header') as JWSHeaderParameters;
    const alg: unknown = header.alg;
    if (alg !== 'RS256' && alg !== 'ES256') {
      throw new MeshidError(
        'ERR_TOKEN_UNAUTHENTICATED',
        `token algorithm ${quote(alg)} is not allowed (only ${ALLOWED_TOKEN_ALGORITHMS.join(', ')})`,
      );
    }
    if (header.crit !== undefined || header.b64 !== undefined) {
      // RFC 7515 §4.1.11: an extension this validator does not understand must not be ignored.
      throw new MeshidError(
        'ERR_TOKEN_UNAUTHENTICATED',
        'token uses an unsupported feature: the "crit" or "b64" header parameter',
      );
    }
    if (header.kid !== undefined && typeof header.kid !== 'string') {
      throw new MeshidError(
        'ERR_TOKEN_MALFORMED',
        'token is not a well-formed JWT: kid is not a string',
      );
    }
    const payload = parseSegment(jwt.slice(dot1 + 1, dot2), 'payload') as JWTPayload;
    const signingInput = Buffer.from(jwt.slice(0, dot2), 'latin1');
    const signature = Buffer.from(jwt.slice(dot2 + 1), 'base64url');
    // Read once: a reload swaps the set, and this call keeps the one it started with.
    const keys = await candidateKeys(this.#source.keySet, { ...header, alg });
    if (!keys.some((key) => verifiesWith(alg, key, signingInput, signature))) {
      throw new MeshidError(
        'ERR_TOKEN_UNAUTHENTICATED',
        'token signature does not verify with any key of the JWKS',
      );
    }
    return checkClaims(payload, this.#policy, now);
  }

  /** Maps any failure to one of the three codes, with a message that names what failed. */
  #translate(err: unknown, token: Uint8Array): MeshidError {
    if (isMeshidError(err)) return err;
    if (err instanceof errors.JWKSNoMatchingKey) {
      const kid = headerField(token, 'kid');
      const alg = headerField(token, 'alg');
      return new MeshidError(
        'ERR_TOKEN_UNAUTHENTICATED',
        kid === ''
          ? `token has no kid and no ${alg} key of the JWKS fits it`
          : `token key id (kid) "${kid}" matches no ${alg} key of the JWKS`,
      );
    }
    if (err instanceof errors.JOSENotSupported) {
      return new MeshidError(
        'ERR_TOKEN_UNAUTHENTICATED',
        `token uses an unsupported feature: ${printable(err.message, 120)}`,
      );
    }
    // Not expected: never authenticate on it, and keep the detail in the log, not the reply.
    this.#log.warn(
      { [LogKey.event]: JwksLogEvent.tokenRefused, [LogKey.reason]: describe(err) },
      'token verification failed unexpectedly',
    );
    return new MeshidError('ERR_TOKEN_UNAUTHENTICATED', 'token could not be verified');
  }
}

/**
 * The keys a token may be verified with, chosen by jose's key set from the token's header (kid,
 * alg, key type and use). Several can fit a token without `kid` (two keys during a rotation);
 * each is tried. jose's failures to find a key, or to reach a remote set, propagate as they are.
 */
async function candidateKeys(
  keySet: JWTVerifyGetKey,
  header: JWSHeaderParameters & { alg: string },
): Promise<KeyObject[]> {
  // jose's key sets select by the header alone; the token argument is only for custom resolvers.
  const token = { payload: '', signature: '' };
  try {
    return [await toKeyObject(await keySet(header, token))];
  } catch (err) {
    if (!(err instanceof errors.JWKSMultipleMatchingKeys)) throw err;
    const keys: KeyObject[] = [];
    for await (const key of err) keys.push(await toKeyObject(key));
    return keys;
  }
}

/** Each CryptoKey jose hands out is converted once; jose keeps handing out the same object. */
const keyObjects = new WeakMap<CryptoKey, KeyObject>();

/** jose's key as a KeyObject, through its SPKI and core's one key import (no `KeyObject.from`). */
async function toKeyObject(key: unknown): Promise<KeyObject> {
  if (key instanceof KeyObject) return key;
  let ko = key instanceof CryptoKey ? keyObjects.get(key) : undefined;
  if (ko === undefined) {
    try {
      if (!(key instanceof CryptoKey) || key.type !== 'public') throw new TypeError(typeof key);
      ko = importSpki(new Uint8Array(await crypto.subtle.exportKey('spki', key)));
      keyObjects.set(key, ko);
    } catch {
      throw new MeshidError(
        'ERR_TOKEN_UNAUTHENTICATED',
        'the JWKS produced a key that is not a public key',
      );
    }
  }
  return ko;
}

/** RS256: RSASSA-PKCS1-v1_5 with SHA-256; ES256: ECDSA P-256 with SHA-256, r‖s encoded (RFC 7518). */
function verifiesWith(
  alg: 'RS256' | 'ES256',
  key: KeyObject,
  data: Buffer,
  signature: Buffer,
): boolean {
  if (alg === 'RS256') {
    return key.asymmetricKeyType === 'rsa' && verifySignature('sha256', data, key, signature);
  }
  return (
    key.asymmetricKeyType === 'ec' &&
    key.asymmetricKeyDetails?.namedCurve === 'prime256v1' &&
    signature.length === 64 &&
    verifySignature('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, signature)
  );
}

function checkOptions(opts: JwksTokenValidatorOptions): void {
  const problems: string[] = [];
  if (typeof opts.issuer !== 'string' || opts.issuer.length === 0)
    problems.push('issuer must be a non-empty string');
  if (typeof opts.audience !== 'string' || opts.audience.length === 0)
    problems.push('audience must be a non-empty string');
  if (!Number.isFinite(opts.clockSkewMs) || opts.clockSkewMs < 0)
    problems.push('clockSkewMs must be a non-negative number');
  if (
    opts.maxTokenBytes !== undefined &&
    (!Number.isInteger(opts.maxTokenBytes) || opts.maxTokenBytes <= 0)
  ) {
    problems.push('maxTokenBytes must be a positive integer');
  }
  if ('url' in opts.jwks) {
    for (const key of ['timeoutMs', 'cooldownMs', 'cacheMaxAgeMs'] as const) {
      const v = opts.jwks[key];
      if (v !== undefined && (!Number.isInteger(v) || v < 0))
        problems.push(`jwks.${key} must be a non-negative integer`);
    }
  }
  if ('file' in opts.jwks && (typeof opts.jwks.file !== 'string' || opts.jwks.file === '')) {
    problems.push('jwks.file must be a non-empty path');
  }
  if (problems.length > 0) {
    throw new MeshidError('ERR_CONFIG_INVALID', `JWKS token validator: ${problems.join('; ')}`);
  }
}
