/**
 * meshid's errors: one base class with a stable `code`, and one table that maps every code to
 * its gRPC status, HTTP status and whether a caller may retry. Errors are mapped to wire statuses
 * only at the edges (the gRPC handler, the admin server, the CLI); the table is mirrored in
 * docs/errors.md and a test keeps the two in step.
 */

/** gRPC status codes (numbers as on the wire; see grpc/doc/statuscodes.md). */
export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;
type GrpcStatusName = keyof typeof GrpcStatus;

/** What each error code means on the wire. */
interface ErrorCodeInfo {
  readonly grpc: GrpcStatusName;
  readonly http: number;
  readonly retryable: boolean;
  readonly description: string;
}

/** An entry's wire statuses, for a code a caller may retry and for one it may not. */
const retry = (grpc: GrpcStatusName, http: number) => ({ grpc, http, retryable: true });
const final = (grpc: GrpcStatusName, http: number) => ({ grpc, http, retryable: false });

/**
 * The code table. Status beside code; see docs/errors.md for why each Certify refusal has the
 * status it has (Linkerd's mapping, with the documented deviations).
 */
export const ERROR_CODES = {
  ERR_REQUEST_INVALID: {
    ...final('INVALID_ARGUMENT', 400),
    description: 'a Certify field is empty, too large, or not well-formed',
  },
  ERR_IDENTITY_INVALID: {
    ...final('INVALID_ARGUMENT', 400),
    description: 'the requested identity is not a workload identity name of this trust domain',
  },
  ERR_CSR_MALFORMED: {
    ...final('INVALID_ARGUMENT', 400),
    description: 'the CSR is not a DER-encoded PKCS#10 certification request',
  },
  ERR_CSR_POLICY: {
    ...final('FAILED_PRECONDITION', 400),
    description: 'the CSR breaks a rule: key type, SANs, subject or proof of possession',
  },
  ERR_TOKEN_MALFORMED: {
    ...final('INVALID_ARGUMENT', 400),
    description: 'the token is not a well-formed JWT, or its subject is not a service account',
  },
  ERR_TOKEN_UNAUTHENTICATED: {
    ...final('FAILED_PRECONDITION', 401),
    description: 'the token did not authenticate: signature, issuer, audience, expiry or binding',
  },
  ERR_TOKEN_VALIDATOR_UNAVAILABLE: {
    ...retry('UNAVAILABLE', 503),
    description: 'the token could not be checked now (keys or API server unreachable)',
  },
  ERR_IDENTITY_MISMATCH: {
    ...final('FAILED_PRECONDITION', 403),
    description: "the requested identity is not the token's identity",
  },
  ERR_ISSUER_NOT_LOADED: { ...retry('UNAVAILABLE', 503), description: 'no issuer is loaded' },
  ERR_ISSUER_NOT_VALID_NOW: {
    ...retry('FAILED_PRECONDITION', 503),
    description: 'the loaded issuer or its chain is not valid at this time',
  },
  ERR_SIGNING_FAILED: { ...retry('INTERNAL', 500), description: 'the leaf could not be signed' },
  ERR_CERTIFY_RATE_LIMITED: {
    ...retry('RESOURCE_EXHAUSTED', 429),
    description:
      'too many Certify calls from this source or for this identity; retry after the hint',
  },
  ERR_CERTIFY_OVERLOADED: {
    ...retry('RESOURCE_EXHAUSTED', 429),
    description: 'the CA has as many Certify calls waiting as it admits; retry after the hint',
  },
  ERR_CERTIFY_DEADLINE_EXCEEDED: {
    ...retry('DEADLINE_EXCEEDED', 504),
    description:
      "the caller's deadline (grpc-timeout) passed before the CA got to the call; nothing was issued",
  },
  ERR_CERTIFY_CALLER_GONE: {
    ...retry('CANCELLED', 499),
    description:
      'the caller cancelled or its connection closed before the call was decided; nothing was issued',
  },
  ERR_ISSUER_INVALID: {
    ...final('FAILED_PRECONDITION', 500),
    description: 'issuer material was refused: not a CA, key mismatch, not chaining, or expired',
  },
  ERR_ANCHORS_INVALID: {
    ...final('FAILED_PRECONDITION', 500),
    description:
      'a trust-anchor bundle was refused: unparseable, empty, a certificate that is not a root CA with a supported key, or no anchor valid now (docs/rotation.md)',
  },
  ERR_POD_CERTIFICATE_INVALID: {
    ...final('FAILED_PRECONDITION', 500),
    description:
      "a proxy's pod certificate credential bundle was refused: not one key then a chain, not this workload's identity, not for the key, not valid now, or not chaining to the anchors (docs/pod-certificates.md)",
  },
  ERR_ROTATION_STATE: {
    ...final('FAILED_PRECONDITION', 500),
    description: 'the persisted trust-anchor rotation state is unreadable or invalid',
  },
  ERR_ROTATION_REFUSED: {
    ...final('FAILED_PRECONDITION', 409),
    description:
      'a rotation step or bundle update was refused: it would leave the issuer unanchored, or the phase does not allow it',
  },
  ERR_ROTATION_CONFLICT: {
    ...retry('ABORTED', 409),
    description:
      'another controller changed the anchors or rotation state first (resourceVersion conflict)',
  },
  ERR_TRUST_API: {
    ...retry('UNAVAILABLE', 503),
    description: 'a Kubernetes API call of the trust-bundle controllers failed',
  },
  ERR_CONFIG_INVALID: {
    ...final('INVALID_ARGUMENT', 400),
    description: 'the configuration is invalid (every bad field is named)',
  },
  ERR_LOCAL_STATE: {
    ...final('FAILED_PRECONDITION', 500),
    description:
      'the local state folder is missing material, would be overwritten, or others could change it (writable by group or others, a link inside, a key readable by others)',
  },
  ERR_WEBHOOK_REVIEW_INVALID: {
    ...final('INVALID_ARGUMENT', 400),
    description: 'a webhook request is not an admission.k8s.io/v1 AdmissionReview with a request',
  },
  ERR_JSON_TOO_DEEP: {
    ...final('INVALID_ARGUMENT', 400),
    description:
      'a JSON document from a peer nests deeper than the bound (64 levels); refused before parsing',
  },
  ERR_WEBHOOK_REVIEW_TOO_LARGE: {
    ...final('RESOURCE_EXHAUSTED', 413),
    description: 'a webhook request body is larger than the bound',
  },
  ERR_WEBHOOK_TLS_INVALID: {
    ...retry('FAILED_PRECONDITION', 500),
    description:
      "the webhooks' serving certificate or key is missing, unparseable or not a pair (the last good pair stays in use)",
  },
  ERR_LISTEN_FAILED: {
    ...final('UNAVAILABLE', 500),
    description:
      'a listener could not bind its address (taken, not local, or not allowed); the message names the address and the flag',
  },
  ERR_INSPECT_TARGET: {
    ...final('NOT_FOUND', 404),
    description:
      'meshid identity: the certificate to inspect cannot be read (file, Secret or proxy) or is not one',
  },
  ERR_FIPS_UNAVAILABLE: {
    ...final('FAILED_PRECONDITION', 500),
    description: 'FIPS mode was requested but Node.js cannot run its crypto on a FIPS provider',
  },
  ERR_TLS_GROUPS_UNAVAILABLE: {
    ...final('FAILED_PRECONDITION', 500),
    description:
      'tlsGroups is hybrid-required but X25519MLKEM768 cannot be negotiated here (FIPS mode, or an OpenSSL without ML-KEM)',
  },
  ERR_FIPS_CSR_REFUSED: {
    ...final('FAILED_PRECONDITION', 400),
    description: 'FIPS mode refused the CSR: its key or signature is outside the FIPS policy',
  },
  ERR_FIPS_MATERIAL_REFUSED: {
    ...final('FAILED_PRECONDITION', 500),
    description:
      'FIPS mode refused a trust anchor, issuer or webhooks serving certificate outside the FIPS policy',
  },
  ERR_FIPS_PEER_REFUSED: {
    ...final('PERMISSION_DENIED', 403),
    description:
      "FIPS mode refused a TLS peer: its certificate's key or signature is outside the FIPS policy",
  },
  ERR_TRANSPARENT_UNAVAILABLE: {
    ...final('FAILED_PRECONDITION', 500),
    description:
      "the proxy's transparent mode cannot run here: the original-dst addon is not built or does not load, or this is not Linux",
  },
  ERR_ORIGINAL_DST: {
    ...final('INTERNAL', 500),
    description: 'the original destination of a redirected connection could not be read',
  },
  ERR_PROXY_INIT: {
    ...final('FAILED_PRECONDITION', 500),
    description:
      'meshid proxy-init could not write the nat rules: a capability (NET_ADMIN, NET_RAW) or the iptables binary is missing, or iptables failed',
  },
  ERR_INTERNAL: {
    ...final('INTERNAL', 500),
    description: 'an unexpected failure; details are in the log, not in the response',
  },
} as const satisfies Record<string, ErrorCodeInfo>;

export type ErrorCode = keyof typeof ERROR_CODES;

/**
 * The base of every error meshid raises on purpose.
 *
 * @example
 * ```ts
 * throw new MeshidError('ERR_CSR_POLICY', 'CSR key must be ECDSA P-256, got RSA');
 * ```
 */
export class MeshidError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = 'MeshidError';
  }

  /** The table entry of this error's code. */
  get info(): ErrorCodeInfo {
    return ERROR_CODES[this.code];
  }
}

/**
 * A refusal that tells the caller when to come back: the CA is overloaded or the caller is over
 * its rate. `retryAfterMs` goes on the wire as the `retry-after-ms` trailer (and gRFC A6's
 * `grpc-retry-pushback-ms`), and the message ends with "retry after N ms".
 *
 * @example
 * ```ts
 * throw new RetryLaterError('ERR_CERTIFY_OVERLOADED', 'admission queue is full', 1200);
 * ```
 */
export class RetryLaterError extends MeshidError {
  readonly retryAfterMs: number;

  constructor(code: ErrorCode, reason: string, retryAfterMs: number) {
    const ms = Math.max(1, Math.ceil(retryAfterMs));
    super(code, `${reason}; retry after ${ms} ms`);
    this.retryAfterMs = ms;
    this.name = 'RetryLaterError';
  }
}

/** True when `err` is a MeshidError, optionally of the given code. */
export function isMeshidError(err: unknown, code?: ErrorCode): err is MeshidError {
  return err instanceof MeshidError && (code === undefined || err.code === code);
}
