/**
 * The one interface every ServiceAccount-token validator of the CA implements (JWKS now,
 * TokenReview later), so the Certify handler does not care how a token is checked.
 */
import type { WorkloadIdentity } from '../../core/index.js';

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
