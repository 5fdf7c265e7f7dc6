/**
 * A TokenValidator that asks the API server: `authentication.k8s.io/v1` TokenReview with the
 * identity audience. The API server checks the signature, the expiry, the audience and that the
 * pod and service account the token is bound to still exist.
 *
 * Differences from Linkerd, on purpose:
 * - The audience is strict. Linkerd retries a review that failed on the audience without any
 *   audience, which authenticates an ordinary API token (audience = the API server) as well; here
 *   that retry exists only behind `unsafeNoAudienceFallback`, off by default.
 * - The review must say the token is valid *for* the identity audience (`status.audiences`).
 * - Positive reviews are cached briefly, keyed by the token's SHA-256, so that a burst of Certify
 *   calls with one token (a crash-looping proxy, retries across CA replicas) costs one review.
 *   An entry never outlives the token's own expiry. Negative results are never cached.
 * - A review that cannot be made (timeout, network, 5xx, 403 on tokenreviews) is "unavailable",
 *   which the Certify handler reports as UNAVAILABLE; it never becomes a certificate.
 */
import { createHash } from 'node:crypto';
import {
  LogKey,
  MeshidError,
  parseJson,
  parseServiceAccountUsername,
  printable,
} from '../../core/index.js';
import type { Clock, Logger, WorkloadIdentity } from '../../core/index.js';
import type { KubeApi, TokenReviewResult } from '../kube/api.js';
import { KubeApiError } from '../kube/api.js';
import { DEFAULT_MAX_TOKEN_BYTES, checkTokenSize } from './validator.js';
import type { TokenValidator } from './validator.js';

/** Options of {@link TokenReviewValidator}. */
export interface TokenReviewValidatorOptions {
  readonly api: Pick<KubeApi, 'createTokenReview' | 'server'>;
  /** The audience the token must be valid for (`identity.l5d.io`). */
  readonly audience: string;
  readonly clock: Clock;
  readonly logger: Logger;
  /** How long a positive review is reused; 0 turns the cache off. */
  readonly cacheTtlMs: number;
  /** Most entries kept; the oldest go first. */
  readonly cacheSize: number;
  /** UNSAFE (Linkerd's behaviour): when the audience review fails, review again without audience. */
  readonly unsafeNoAudienceFallback?: boolean;
  /** Time allowed for one review; default 5 s. */
  readonly timeoutMs?: number;
  readonly maxTokenBytes?: number;
}

interface CacheEntry {
  readonly identity: WorkloadIdentity;
  readonly until: number;
}

/** Values of the `event` log key this validator writes. */
const TokenReviewLogEvent = {
  refused: 'TokenRefused',
  unavailable: 'TokenReviewUnavailable',
  recovered: 'TokenReviewRecovered',
  fallback: 'TokenReviewNoAudienceFallback',
} as const;

const TOKEN_TEXT = /^[\x21-\x7e]+$/;

/**
 * Validates tokens with TokenReview.
 *
 * @example
 * ```ts
 * const tokens = new TokenReviewValidator({ api, audience: 'identity.l5d.io', clock, logger,
 *   cacheTtlMs: 10_000, cacheSize: 10_000 });
 * const who = await tokens.validate(tokenBytes); // { namespace: 'emojivoto', serviceAccount: 'web' }
 * ```
 */
export class TokenReviewValidator implements TokenValidator {
  readonly #o: TokenReviewValidatorOptions;
  readonly #log: Logger;
  readonly #cache = new Map<string, CacheEntry>();
  /** Reviews in flight by token hash: concurrent calls with one token share one review. */
  readonly #inflight = new Map<string, Promise<WorkloadIdentity>>();
  #down = false;
  #closed = false;

  constructor(options: TokenReviewValidatorOptions) {
    if (!Number.isInteger(options.cacheTtlMs) || options.cacheTtlMs < 0)
      throw new MeshidError('ERR_CONFIG_INVALID', 'TokenReview cache TTL must be 0 or more');
    if (!Number.isInteger(options.cacheSize) || options.cacheSize < 0)
      throw new MeshidError('ERR_CONFIG_INVALID', 'TokenReview cache size must be 0 or more');
    this.#o = options;
    this.#log = options.logger.child({ [LogKey.component]: 'token-review' });
    if (options.unsafeNoAudienceFallback === true) {
      this.#log.warn(
        { [LogKey.event]: TokenReviewLogEvent.fallback },
        'UNSAFE: tokens refused for the identity audience are reviewed again without audience; any API token of a service account will get certificates',
      );
    }
  }

  /** See {@link TokenValidator.validate}. */
  async validate(token: Uint8Array): Promise<WorkloadIdentity> {
    if (this.#closed) {
      throw new MeshidError(
        'ERR_TOKEN_VALIDATOR_UNAVAILABLE',
        'the TokenReview validator is closed',
      );
    }
    const text = this.#decode(token);
    const key = createHash('sha256').update(text).digest('base64url');
    const now = this.#o.clock.now();
    const hit = this.#cache.get(key);
    if (hit !== undefined) {
      if (now < hit.until) return hit.identity;
      this.#cache.delete(key);
    }
    let pending = this.#inflight.get(key);
    if (pending === undefined) {
      pending = this.#review(text, key).finally(() => this.#inflight.delete(key));
      this.#inflight.set(key, pending);
    }
    return pending;
  }

  /** See {@link TokenValidator.close}. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#cache.clear();
  }

  async #review(token: string, key: string): Promise<WorkloadIdentity> {
    const audience = this.#o.audience;
    let result = await this.#call(token, [audience]);
    let audiences = result.audiences ?? [];
    if (!result.authenticated && this.#o.unsafeNoAudienceFallback === true) {
      this.#log.warn(
        { [LogKey.event]: TokenReviewLogEvent.fallback, [LogKey.reason]: result.error },
        'token refused for the identity audience; reviewing it again without audience (unsafe fallback)',
      );
      result = await this.#call(token, []);
      audiences = [audience];
    }
    if (!result.authenticated) {
      throw this.#refused(
        `the API server did not authenticate the token${result.error === undefined || result.error === '' ? '' : `: ${printable(result.error, 200)}`}`,
      );
    }
    if (!audiences.includes(audience)) {
      throw this.#refused(
        `the API server authenticated the token but not for audience "${audience}" (got ${audiences.length === 0 ? 'none' : audiences.map((a) => `"${printable(a)}"`).join(', ')})`,
      );
    }
    if (result.username === undefined) {
      throw this.#refused('the TokenReview returned no username');
    }
    const identity = parseServiceAccountUsername(result.username);
    this.#remember(key, identity, token);
    return identity;
  }

  async #call(token: string, audiences: string[]): Promise<TokenReviewResult> {
    const signal = AbortSignal.timeout(this.#o.timeoutMs ?? 5000);
    try {
      const result = await this.#o.api.createTokenReview(token, audiences, signal);
      if (this.#down) {
        this.#down = false;
        this.#log.info(
          { [LogKey.event]: TokenReviewLogEvent.recovered },
          'TokenReview works again',
        );
      }
      return result;
    } catch (err) {
      const detail = err instanceof KubeApiError ? err.message : String(err);
      if (!this.#down) {
        this.#down = true;
        this.#log.warn(
          { [LogKey.event]: TokenReviewLogEvent.unavailable, [LogKey.reason]: detail },
          'TokenReview failed; Certify answers UNAVAILABLE until it works',
        );
      }
      throw new MeshidError(
        'ERR_TOKEN_VALIDATOR_UNAVAILABLE',
        `TokenReview at ${this.#o.api.server} failed: ${detail}`,
        { cause: err },
      );
    }
  }

  /**
   * Caches a positive review until the earlier of the TTL and the token's expiry. The expiry is
   * read from the token's payload: the API server has just authenticated this exact token, so its
   * claims are the signed ones. A token without a readable expiry is not cached.
   */
  #remember(key: string, identity: WorkloadIdentity, token: string): void {
    const { cacheTtlMs, cacheSize } = this.#o;
    if (cacheTtlMs === 0 || cacheSize === 0) return;
    const exp = tokenExpiryMs(token);
    if (exp === undefined) return;
    const now = this.#o.clock.now();
    const until = Math.min(now + cacheTtlMs, exp);
    if (until <= now) return;
    this.#cache.delete(key);
    this.#cache.set(key, { identity, until });
    while (this.#cache.size > cacheSize) {
      const oldest = this.#cache.keys().next().value;
      if (oldest === undefined) break;
      this.#cache.delete(oldest);
    }
  }

  /** Entries in the cache (for tests). */
  get cacheSize(): number {
    return this.#cache.size;
  }

  #decode(token: Uint8Array): string {
    checkTokenSize(token, this.#o.maxTokenBytes ?? DEFAULT_MAX_TOKEN_BYTES);
    // A token file written by hand ends in a newline; nothing else but printable ASCII is a token.
    const text = Buffer.from(token.buffer, token.byteOffset, token.byteLength)
      .toString('latin1')
      .trimEnd();
    if (!TOKEN_TEXT.test(text)) {
      throw new MeshidError('ERR_TOKEN_MALFORMED', 'token is not printable ASCII text');
    }
    return text;
  }

  #refused(message: string): MeshidError {
    this.#log.debug(
      { [LogKey.event]: TokenReviewLogEvent.refused, [LogKey.reason]: message },
      'token refused',
    );
    return new MeshidError('ERR_TOKEN_UNAUTHENTICATED', message);
  }
}

/** The `exp` of a JWT's payload in ms, or undefined when it is not a JWT with a numeric exp. */
function tokenExpiryMs(token: string): number | undefined {
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  try {
    const payload = parseJson(
      Buffer.from(parts[1]!, 'base64url').toString('utf8'),
      "the token's payload",
    ) as { exp?: unknown } | null;
    if (payload === null || typeof payload !== 'object') return undefined;
    return typeof payload.exp === 'number' && Number.isFinite(payload.exp)
      ? payload.exp * 1000
      : undefined;
  } catch {
    return undefined;
  }
}
