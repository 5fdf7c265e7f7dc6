/**
 * Validates projected ServiceAccount tokens offline, against the cluster's (or the local state
 * folder's) JSON Web Key Set.
 *
 * `jose` owns the key sets: parsing and checking the JWKS, fetching a remote one (cache, cooldown,
 * refetch on an unknown `kid`), importing keys and choosing the key a token's header names. The
 * signature itself is checked with `node:crypto`, synchronously, with the chosen key converted to
 * a KeyObject once: jose 6 verifies through WebCrypto, whose every call is a job on the libuv
 * thread pool, and on the CA's per-request path that costs about three times the RSA
 * verification itself (measured: ~75 µs of CPU against ~30 µs for RS256). The claim checks are
 * the same as jwtVerify's (issuer, audience, exp required, nbf, iat, with the skew allowance) and
 * the unit tests hold the two to the same verdicts on every token they make.
 *
 * The happy path is kept short: a size and shape check, one header and one payload parse, one
 * signature verification, and a few string compares.
 * Every refusal is a MeshidError whose message names what failed and never quotes the token, not
 * even its first characters: messages reach logs and clients, and a bearer token must not.
 */
import { KeyObject, verify as verifySignature } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import * as http from 'node:http';
import * as https from 'node:https';
import { dirname } from 'node:path';
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  customFetch,
  errors,
  importJWK,
  type CryptoKey,
  type FetchImplementation,
  type JSONWebKeySet,
  type JWK,
  type JWTPayload,
  type JWTVerifyGetKey,
  type JWSHeaderParameters,
  type LocalJWKSet,
  type RemoteJWKSet,
} from 'jose';
import {
  JsonTooDeep,
  LogKey,
  MeshidError,
  formatDuration,
  isMeshidError,
  parseJson,
  parseServiceAccountUsername,
  printable,
  type Clock,
  type Logger,
  type WorkloadIdentity,
} from '../../core/index.js';
import type { TokenValidator } from './validator.js';

/** Tokens larger than this are refused before any parsing; a projected token is 1–2 KiB. */
export const DEFAULT_MAX_TOKEN_BYTES = 16 * 1024;

/**
 * The only signature algorithms accepted. RS256 is what kube-apiserver signs with by default;
 * ES256 is what it signs with when its service-account key is EC P-256. Everything else (`none`,
 * HMAC, which would let a public key serve as a shared secret, PSS, EdDSA) is refused.
 */
export const ALLOWED_TOKEN_ALGORITHMS: readonly ['RS256', 'ES256'] = Object.freeze([
  'RS256',
  'ES256',
] as const);

/**
 * Where the JWKS comes from: a watched file, or an HTTP(S) URL such as the API server's
 * `/openid/v1/jwks`. For a URL, jose's remote set decides when to fetch (cache age, and a refetch
 * on an unknown `kid` once the cooldown has passed); those ages run on the system clock, as jose
 * keeps them, not on the injected one, which governs token times only.
 */
export type JwksSource =
  | { readonly file: string }
  | {
      readonly url: string;
      /** PEM CA certificate(s) to trust for an https URL (in place of the system roots). */
      readonly caPem?: string;
      /** A client certificate for the https connection (a kubeconfig's client credentials). */
      readonly clientCert?: { readonly cert: string | Buffer; readonly key: string | Buffer };
      /** Extra request headers, computed per fetch (a kubeconfig's bearer token, which rotates). */
      readonly headers?: () => Promise<Record<string, string>>;
      /** Fetch timeout; jose's default 5 s. */
      readonly timeoutMs?: number;
      /** How long after a fetch an unknown `kid` may trigger another one; jose's default 30 s. */
      readonly cooldownMs?: number;
      /** How long fetched keys are used before they are fetched again; jose's default 10 min. */
      readonly cacheMaxAgeMs?: number;
    };

/** Options of {@link JwksTokenValidator.create}. */
export interface JwksTokenValidatorOptions {
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

/** Values of the `event` log key this validator writes. */
export const JwksLogEvent = {
  loaded: 'JwksLoaded',
  reloaded: 'JwksReloaded',
  reloadRefused: 'JwksReloadRefused',
  keyIgnored: 'JwksKeyIgnored',
  watchFailed: 'JwksWatchFailed',
  unavailable: 'JwksUnavailable',
  recovered: 'JwksRecovered',
  tokenRefused: 'TokenRefused',
} as const;

/** Log keys of this module beside core's LogKey. */
const JwksLogKey = { file: 'file', kids: 'kids' } as const;

/** A JWKS file or response larger than this is refused; real ones hold a handful of keys. */
const MAX_JWKS_BYTES = 1024 * 1024;
/** Quiet time after a change to the JWKS file's folder before it is re-read. */
const RELOAD_DEBOUNCE_MS = 50;
const MIN_RSA_BITS = 2048;

// Three non-empty base64url segments. No overlap between the class and '.', so matching is
// linear even on a hostile 16 KiB input.
// The signature part may be empty so that an unsecured (`alg: none`) token is refused for its
// algorithm, with a message that says so, rather than as a malformed string.
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;
// fatal: a token that is not UTF-8 is refused rather than silently repaired with U+FFFD.
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Members of a JWKS that carry secret material; a public key set must have none of them. */
const SECRET_MEMBERS = ['d', 'k', 'priv'] as const;

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
  readonly #issuer: string;
  readonly #audience: string;
  readonly #skewMs: number;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #maxTokenBytes: number;
  readonly #source: KeySource;
  #closed = false;

  private constructor(opts: JwksTokenValidatorOptions, source: KeySource, log: Logger) {
    this.#issuer = opts.issuer;
    this.#audience = opts.audience;
    this.#skewMs = opts.clockSkewMs;
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
        ? await FileKeySource.open(opts.jwks.file, log)
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
    const jwt = this.#decode(token);
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
    this.#checkRegisteredClaims(payload, now);
    return this.#checkClaims(payload, now);
  }

  /**
   * iss, aud, exp (required), nbf, as jwtVerify checks them, with the skew allowance. A legacy
   * Secret-based token has no exp, never expires, and must not get certificates.
   */
  #checkRegisteredClaims(payload: JWTPayload, now: number): void {
    for (const claim of ['exp', 'nbf', 'iat'] as const) {
      const v = payload[claim];
      if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v))) {
        throw new MeshidError('ERR_TOKEN_MALFORMED', `token claim "${claim}" is not a number`);
      }
    }
    if (payload.iss !== this.#issuer) {
      throw new MeshidError(
        'ERR_TOKEN_UNAUTHENTICATED',
        `token issuer ${quote(payload.iss)} is not "${printable(this.#issuer)}"`,
      );
    }
    const aud = payload.aud;
    if (!(aud === this.#audience || (Array.isArray(aud) && aud.includes(this.#audience)))) {
      throw new MeshidError(
        'ERR_TOKEN_UNAUTHENTICATED',
        `token audience ${audienceList(aud)} does not include "${printable(this.#audience)}"`,
      );
    }
    if (payload.exp === undefined) {
      throw new MeshidError(
        'ERR_TOKEN_UNAUTHENTICATED',
        'token has no expiry (exp); non-expiring (legacy Secret) tokens are refused',
      );
    }
    if (payload.exp * 1000 <= now - this.#skewMs) {
      throw new MeshidError(
        'ERR_TOKEN_UNAUTHENTICATED',
        `token expired at ${isoSeconds(payload.exp)} (now ${isoMs(now)}, clock skew allowance ${formatDuration(this.#skewMs)})`,
      );
    }
    if (payload.nbf !== undefined && payload.nbf * 1000 > now + this.#skewMs) {
      throw new MeshidError(
        'ERR_TOKEN_UNAUTHENTICATED',
        `token is not valid before ${isoSeconds(payload.nbf)} (now ${isoMs(now)}, clock skew allowance ${formatDuration(this.#skewMs)})`,
      );
    }
    if (payload.sub === undefined) {
      throw new MeshidError('ERR_TOKEN_MALFORMED', 'token has no subject (sub)');
    }
  }

  /** The cheap checks, before any base64 or JSON work. */
  #decode(token: Uint8Array): string {
    if (!(token instanceof Uint8Array)) {
      throw new MeshidError('ERR_TOKEN_MALFORMED', 'token must be bytes');
    }
    if (token.byteLength === 0) {
      throw new MeshidError('ERR_TOKEN_MALFORMED', 'token is empty');
    }
    if (token.byteLength > this.#maxTokenBytes) {
      throw new MeshidError(
        'ERR_TOKEN_MALFORMED',
        `token is ${token.byteLength} bytes, over the ${this.#maxTokenBytes}-byte limit`,
      );
    }
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

  /** Checks jose leaves to us: finite times, iat, the subject and the kubernetes.io binding. */
  #checkClaims(payload: JWTPayload, now: number): WorkloadIdentity {
    for (const claim of ['exp', 'nbf', 'iat'] as const) {
      const v = payload[claim];
      if (v !== undefined && !Number.isFinite(v)) {
        throw new MeshidError(
          'ERR_TOKEN_MALFORMED',
          `token claim "${claim}" is not a finite number`,
        );
      }
    }
    // jose checks iat only with maxTokenAge; a token issued in the future is as suspect as one
    // not yet valid (Kubernetes sets nbf = iat, but a third-party issuer may omit nbf).
    if (payload.iat !== undefined && payload.iat * 1000 > now + this.#skewMs) {
      throw new MeshidError(
        'ERR_TOKEN_UNAUTHENTICATED',
        `token issued at ${isoSeconds(payload.iat)} is in the future (now ${isoMs(now)}, clock skew allowance ${formatDuration(this.#skewMs)})`,
      );
    }
    const sub = payload.sub;
    if (typeof sub !== 'string') {
      throw new MeshidError('ERR_TOKEN_MALFORMED', 'token subject (sub) is not a string');
    }
    const identity = parseServiceAccountUsername(sub);
    checkKubernetesClaim(payload['kubernetes.io'], identity);
    return identity;
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
    return [toKeyObject(await keySet(header, token))];
  } catch (err) {
    if (!(err instanceof errors.JWKSMultipleMatchingKeys)) throw err;
    const keys: KeyObject[] = [];
    for await (const key of err) keys.push(toKeyObject(key));
    return keys;
  }
}

/** Each CryptoKey jose hands out is converted once; jose keeps handing out the same object. */
const keyObjects = new WeakMap<object, KeyObject>();

function toKeyObject(key: unknown): KeyObject {
  if (key instanceof KeyObject) return key;
  const notPublic = (): MeshidError =>
    new MeshidError(
      'ERR_TOKEN_UNAUTHENTICATED',
      'the JWKS produced a key that is not a public key',
    );
  if (typeof key !== 'object' || key === null) throw notPublic();
  let ko = keyObjects.get(key);
  if (ko === undefined) {
    try {
      ko = KeyObject.from(key as Parameters<typeof KeyObject.from>[0]);
    } catch {
      throw notPublic();
    }
    if (ko.type !== 'public') {
      throw notPublic();
    }
    keyObjects.set(key, ko);
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

/** A base64url JSON object of the token, or ERR_TOKEN_MALFORMED naming the part. */
function parseSegment(b64: string, part: 'header' | 'payload'): Record<string, unknown> {
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

// ---------------------------------------------------------------------------------------------
// Key sources

/** Where a validate gets its keys from; `keySet` is read once per validate. */
interface KeySource {
  readonly keySet: JWTVerifyGetKey;
  close(): void;
}

/**
 * A JWKS file, watched and hot-reloaded. A new file is used only once it passes the same checks
 * as at start; until then, and when it fails them, the last good key set stays in use.
 *
 * It watches the file's folder rather than the file: the kubelet updates a mounted ConfigMap by
 * swapping a `..data` symlink and editors replace files by rename, and either would leave a watch
 * on the old inode deaf. Any event in the folder triggers a re-read; unchanged content is ignored.
 */
class FileKeySource implements KeySource {
  readonly #file: string;
  readonly #log: Logger;
  #current: LocalJWKSet;
  /** The last content read, good or bad, so that a refused file is not re-parsed and re-logged. */
  #lastSeen: string | undefined;
  #watcher: FSWatcher | undefined;
  #timer: NodeJS.Timeout | undefined;
  #running = false;
  #again = false;
  #closed = false;

  private constructor(file: string, log: Logger, keys: JSONWebKeySet, text: string) {
    this.#file = file;
    this.#log = log;
    this.#current = createLocalJWKSet(keys);
    this.#lastSeen = text;
  }

  /** Reads and checks the file (ERR_CONFIG_INVALID when unusable), then starts watching it. */
  static async open(file: string, log: Logger): Promise<FileKeySource> {
    let text: string;
    let keys: JSONWebKeySet;
    try {
      text = await readJwksFile(file);
      keys = await usableKeySet(parseKeySetJson(text), log);
    } catch (err) {
      throw new MeshidError('ERR_CONFIG_INVALID', `JWKS file ${file}: ${describe(err)}`, {
        cause: err,
      });
    }
    log.info(
      {
        [LogKey.event]: JwksLogEvent.loaded,
        [JwksLogKey.file]: file,
        [JwksLogKey.kids]: kids(keys),
      },
      'JWKS loaded',
    );
    const source = new FileKeySource(file, log, keys, text);
    source.#watch();
    return source;
  }

  get keySet(): JWTVerifyGetKey {
    return this.#current;
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#watcher?.close();
  }

  #watch(): void {
    try {
      // persistent: false, so the watcher alone never keeps the process alive.
      this.#watcher = watch(dirname(this.#file), { persistent: false }, () => this.#changed());
    } catch (err) {
      this.#log.warn(
        {
          [LogKey.event]: JwksLogEvent.watchFailed,
          [JwksLogKey.file]: this.#file,
          [LogKey.reason]: describe(err),
        },
        'JWKS file cannot be watched; it will not be hot-reloaded',
      );
      return;
    }
    this.#watcher.on('error', (err) => {
      this.#log.warn(
        {
          [LogKey.event]: JwksLogEvent.watchFailed,
          [JwksLogKey.file]: this.#file,
          [LogKey.reason]: describe(err),
        },
        'JWKS file watch failed; it will not be hot-reloaded',
      );
    });
  }

  /** Editors and the kubelet write in several steps; one reload after the burst is enough. */
  #changed(): void {
    if (this.#closed) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => void this.#reload(), RELOAD_DEBOUNCE_MS);
    this.#timer.unref();
  }

  /** Reloads never overlap: a change during a reload queues exactly one more. */
  async #reload(): Promise<void> {
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = true;
    try {
      do {
        this.#again = false;
        await this.#reloadOnce();
      } while (this.#again && !this.#closed);
    } finally {
      this.#running = false;
    }
  }

  async #reloadOnce(): Promise<void> {
    let text: string;
    try {
      text = await readJwksFile(this.#file);
    } catch (err) {
      this.#lastSeen = undefined;
      this.#refused(err, 'JWKS file could not be read; keeping the last good key set');
      return;
    }
    if (text === this.#lastSeen || this.#closed) return;
    this.#lastSeen = text;
    let keys: JSONWebKeySet;
    try {
      keys = await usableKeySet(parseKeySetJson(text), this.#log);
    } catch (err) {
      this.#refused(err, 'new JWKS refused; keeping the last good key set');
      return;
    }
    if (this.#closed) return;
    this.#current = createLocalJWKSet(keys);
    this.#log.info(
      {
        [LogKey.event]: JwksLogEvent.reloaded,
        [JwksLogKey.file]: this.#file,
        [JwksLogKey.kids]: kids(keys),
      },
      'JWKS reloaded',
    );
  }

  #refused(err: unknown, msg: string): void {
    this.#log.warn(
      {
        [LogKey.event]: JwksLogEvent.reloadRefused,
        [JwksLogKey.file]: this.#file,
        [LogKey.reason]: describe(err),
      },
      msg,
    );
  }
}

async function readJwksFile(file: string): Promise<string> {
  const bytes = await readFile(file);
  if (bytes.byteLength > MAX_JWKS_BYTES) {
    throw new Error(`is ${bytes.byteLength} bytes, over ${MAX_JWKS_BYTES}`);
  }
  try {
    return UTF8.decode(bytes);
  } catch {
    throw new Error('is not UTF-8 text');
  }
}

/**
 * A JWKS at an HTTP(S) URL, through jose's remote set (its cache, cooldown and refetch on an
 * unknown `kid`). Fetched once now if reachable; not being reachable is not fatal, because the
 * API server may come up after the CA, and tokens are refused as unavailable meanwhile.
 */
async function openUrlKeySource(
  source: Extract<JwksSource, { url: string }>,
  log: Logger,
): Promise<KeySource> {
  let url: URL;
  try {
    url = new URL(source.url);
  } catch {
    throw new MeshidError('ERR_CONFIG_INVALID', `JWKS URL "${printable(source.url)}" is not a URL`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new MeshidError('ERR_CONFIG_INVALID', `JWKS URL ${url.href} must be https or http`);
  }
  if (source.caPem !== undefined) {
    if (url.protocol !== 'https:') {
      throw new MeshidError(
        'ERR_CONFIG_INVALID',
        `JWKS URL ${url.href}: a CA is given but the URL is not https`,
      );
    }
    if (!source.caPem.includes('-----BEGIN CERTIFICATE-----')) {
      throw new MeshidError(
        'ERR_CONFIG_INVALID',
        `JWKS URL ${url.href}: the CA is not a PEM certificate`,
      );
    }
  }
  if (url.protocol === 'http:') {
    log.warn(
      { [LogKey.address]: url.href },
      'JWKS is fetched over plain http; anyone on the path can substitute keys',
    );
  }

  // Our own agent: keep-alive off (fetches are minutes apart) and destroyed on close, so no
  // socket outlives the validator.
  const agent =
    url.protocol === 'https:'
      ? new https.Agent({
          keepAlive: false,
          ...(source.caPem !== undefined ? { ca: source.caPem } : {}),
          ...(source.clientCert ?? {}),
        })
      : new http.Agent({ keepAlive: false });
  const remote = createRemoteJWKSet(url, {
    [customFetch]: jwksFetch(agent, log, source.headers),
    ...(source.timeoutMs !== undefined ? { timeoutDuration: source.timeoutMs } : {}),
    ...(source.cooldownMs !== undefined ? { cooldownDuration: source.cooldownMs } : {}),
    ...(source.cacheMaxAgeMs !== undefined ? { cacheMaxAge: source.cacheMaxAgeMs } : {}),
  });

  let reachable = true;
  try {
    await remote.reload();
    log.info(
      {
        [LogKey.event]: JwksLogEvent.loaded,
        [LogKey.address]: url.href,
        [JwksLogKey.kids]: kids(remote.jwks()),
      },
      'JWKS fetched',
    );
  } catch (err) {
    reachable = false;
    log.warn(
      {
        [LogKey.event]: JwksLogEvent.unavailable,
        [LogKey.address]: url.href,
        [LogKey.reason]: describe(err),
      },
      'JWKS could not be fetched yet; tokens are refused as unavailable until it is',
    );
  }
  return { keySet: remoteKeySet(remote, url, log, !reachable), close: () => agent.destroy() };
}

/**
 * Wraps jose's remote set so that a failure to get the keys surfaces as "unavailable" (retryable,
 * never authenticated), distinct from "no such key" (the token is refused). Logs the transitions
 * down and up once each, not on every Certify.
 */
function remoteKeySet(
  remote: RemoteJWKSet,
  url: URL,
  log: Logger,
  initiallyDown: boolean,
): JWTVerifyGetKey {
  let down = initiallyDown;
  return async (header, token) => {
    let key: CryptoKey;
    try {
      key = await remote(header, token);
    } catch (err) {
      if (
        err instanceof errors.JWKSNoMatchingKey ||
        err instanceof errors.JWKSMultipleMatchingKeys ||
        err instanceof errors.JOSENotSupported
      ) {
        throw err;
      }
      if (!down) {
        down = true;
        log.warn(
          {
            [LogKey.event]: JwksLogEvent.unavailable,
            [LogKey.address]: url.href,
            [LogKey.reason]: describe(err),
          },
          'JWKS could not be fetched',
        );
      }
      throw new MeshidError(
        'ERR_TOKEN_VALIDATOR_UNAVAILABLE',
        `JWKS at ${url.href} could not be fetched: ${describe(err)}`,
        { cause: err },
      );
    }
    if (down) {
      down = false;
      log.info(
        { [LogKey.event]: JwksLogEvent.recovered, [LogKey.address]: url.href },
        'JWKS fetched again',
      );
    }
    return key;
  };
}

/**
 * jose's fetch hook, on node:http(s) so that a private CA can be trusted (global fetch cannot take
 * one without undici's Agent). It applies the file source's key-set policy and hands jose only the
 * usable public keys; a bad set fails the fetch, so secret material is never put to use.
 */
function jwksFetch(
  agent: http.Agent,
  log: Logger,
  extraHeaders: (() => Promise<Record<string, string>>) | undefined,
): FetchImplementation {
  return async (href, init) => {
    const headers = new Headers(init.headers);
    for (const [k, v] of Object.entries((await extraHeaders?.()) ?? {})) headers.set(k, v);
    const { status, body } = await httpGet(href, agent, headers, init.signal);
    if (status !== 200) {
      // jose refuses anything but 200; redirects are not followed (init.redirect is 'manual').
      return new Response(null, { status: status >= 200 && status <= 599 ? status : 502 });
    }
    let text: string;
    try {
      text = UTF8.decode(body);
    } catch {
      throw new Error('JWKS response is not UTF-8 text');
    }
    const keys = await usableKeySet(parseKeySetJson(text), log);
    return new Response(JSON.stringify(keys), {
      status: 200,
      headers: { 'content-type': 'application/json' },
    });
  };
}

function httpGet(
  href: string,
  agent: http.Agent,
  headers: Headers,
  signal: AbortSignal,
): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const url = new URL(href);
    const request = url.protocol === 'https:' ? https.request : http.request;
    const options = { method: 'GET', agent, headers: Object.fromEntries(headers), signal };
    const req = request(url, options, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.byteLength;
        if (size > MAX_JWKS_BYTES) {
          req.destroy(new Error(`JWKS response is over ${MAX_JWKS_BYTES} bytes`));
          return;
        }
        chunks.push(chunk);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
      res.on('error', reject);
      // A connection cut mid-body may close without 'end' or 'error'; never leave jose waiting.
      res.on('close', () => {
        if (!res.complete) reject(new Error('JWKS response ended early'));
      });
    });
    // On timeout node reports an AbortError; hand jose the signal's reason (a TimeoutError) so
    // that it reports a timeout.
    req.on('error', (err) => reject(signal.aborted ? (signal.reason as unknown) : err));
    req.end();
  });
}

// ---------------------------------------------------------------------------------------------
// Key-set policy, shared by both sources

/**
 * Returns the members of a JWKS this validator can use: RSA (≥ 2048 bits) for RS256 and EC P-256
 * for ES256, for signatures. Throws when any member holds secret material (a private key where
 * the public set belongs is a leak to stop, not to use) or when no member is usable; logs the
 * members it ignores.
 */
async function usableKeySet(json: unknown, log: Logger): Promise<JSONWebKeySet> {
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

// ---------------------------------------------------------------------------------------------
// Small helpers

/** A key set's JSON (a file or the API server's answer), with core's bounded nesting. */
function parseKeySetJson(text: string): unknown {
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

/** A field of the (unauthenticated) header, for messages only; '' when absent or unreadable. */
function headerField(token: Uint8Array, field: 'alg' | 'kid'): string {
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

function kids(set: JSONWebKeySet | undefined): string[] {
  return (set?.keys ?? []).map((k) => (typeof k.kid === 'string' ? printable(k.kid) : '(no kid)'));
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function quote(v: unknown): string {
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

/**
 * An error's message (and its cause's) for a log line or a refusal: one line, bounded. Untrusted
 * text is passed through printable() where it enters a message; this only keeps the result tidy.
 */
function describe(err: unknown): string {
  const text =
    err instanceof Error
      ? `${err.message}${err.cause instanceof Error ? `: ${err.cause.message}` : ''}`
      : String(err);
  // eslint-disable-next-line no-control-regex
  const line = text.replace(/[\u0000-\u001f\u007f-\u009f]/g, ' ');
  return line.length > 300 ? `${line.slice(0, 300)}…` : line;
}
