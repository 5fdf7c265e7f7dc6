/**
 * The one interface every ServiceAccount-token validator of the CA implements (the JWKS validator
 * checks signatures offline, the TokenReview validator asks the API server), so the Certify
 * handler does not care how a token is checked; and the one size check both make.
 */
import { DEFAULTS, MeshidError } from '../../core/index.js';
import type { WorkloadIdentity } from '../../core/index.js';

/** Tokens larger than this are refused before any parsing; a projected token is 1–2 KiB. */
export const DEFAULT_MAX_TOKEN_BYTES = DEFAULTS.maxTokenBytes;

/**
 * Refuses an empty token, or one over `maxBytes`, as ERR_TOKEN_MALFORMED, before any parsing.
 */
export function checkTokenSize(token: Uint8Array, maxBytes: number): void {
  if (token.byteLength === 0) throw new MeshidError('ERR_TOKEN_MALFORMED', 'token is empty');
  if (token.byteLength > maxBytes) {
    throw new MeshidError(
      'ERR_TOKEN_MALFORMED',
      `token is ${token.byteLength} bytes, over the ${maxBytes}-byte limit`,
    );
  }
}

/**
 * Authenticates the projected ServiceAccount token a proxy sends in `CertifyRequest.token`.
 *
 * Implementations never treat a failure to check as success: when the keys or the API server
 * cannot be reached they throw ERR_TOKEN_VALIDATOR_UNAVAILABLE, never a WorkloadIdentity.
 *
 * @example
 * ```ts
 * const who = await validator.validate(request.token);
 * // { namespace: 'emojivoto', serviceAccount: 'web' }
 * ```
 */
export interface TokenValidator {
  /**
   * Authenticates a projected ServiceAccount token (raw bytes as read from the file) and returns
   * its ServiceAccount. Throws MeshidError ERR_TOKEN_MALFORMED | ERR_TOKEN_UNAUTHENTICATED |
   * ERR_TOKEN_VALIDATOR_UNAVAILABLE.
   */
  validate(token: Uint8Array): Promise<WorkloadIdentity>;
  /** Releases watchers, timers and sockets; `validate` fails with ERR_TOKEN_VALIDATOR_UNAVAILABLE afterwards. */
  close(): Promise<void>;
}
