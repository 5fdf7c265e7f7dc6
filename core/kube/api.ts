/**
 * The Kubernetes API as meshid's components see it: one client ({@link KubeClient}), implemented
 * once over `@kubernetes/client-node` (`client-node.ts`), and one error type. Components declare
 * the narrow slice they use (`Pick<KubeClient, ...>`) and tests can fake it. This file has no
 * import of the client library, so core's index can publish it without loading the library.
 */
import type { WatchListEvent } from './watch-list.js';

/** An API object as JSON (Secret `data` stays base64, as the API serves it). */
export interface KubeResource {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    resourceVersion?: string;
    uid?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  [field: string]: unknown;
}

/**
 * The kinds meshid lists and watches: core/v1's, plus discovery.k8s.io/v1 EndpointSlices (the
 * destination service), certificates.k8s.io PodCertificateRequests (the CA's pod certificate
 * signer; v1beta1 unless `apiVersion` says v1) and coordination.k8s.io/v1 Leases (the signer's
 * replicas).
 */
export type WatchKind =
  | 'Namespace'
  | 'ConfigMap'
  | 'Secret'
  | 'Pod'
  | 'Service'
  | 'EndpointSlice'
  | 'PodCertificateRequest'
  | 'Lease';

/** What a TokenReview said (the `status` of `authentication.k8s.io/v1` TokenReview). */
export interface TokenReviewResult {
  readonly authenticated: boolean;
  readonly username?: string | undefined;
  readonly uid?: string | undefined;
  /** The audiences the token was found valid for (the intersection with the requested ones). */
  readonly audiences?: readonly string[] | undefined;
  readonly error?: string | undefined;
}

/** One resource permission, as a SelfSubjectAccessReview asks it. */
export interface AccessQuery {
  readonly verb: string;
  /** API group; '' is the core group. */
  readonly group: string;
  readonly resource: string;
  readonly namespace?: string;
  readonly name?: string;
}

/** A core/v1 Event to record. */
export interface EventRecord {
  readonly namespace: string;
  readonly involvedObject: {
    readonly kind: string;
    readonly name: string;
    readonly namespace: string;
    readonly apiVersion?: string;
    readonly uid?: string;
  };
  readonly type: 'Normal' | 'Warning';
  readonly reason: string;
  readonly message: string;
  /** Who reports it (`reportingController` / `source.component`). */
  readonly component: string;
  /** Which instance reports it (`reportingInstance` / `source.host`). */
  readonly instance: string;
  readonly count: number;
  readonly firstTimestamp: Date;
  readonly lastTimestamp: Date;
}

/** The API server's address and the credentials a kubeconfig gives for it. */
export interface ApiConnection {
  readonly server: string;
  readonly caPem?: string;
  readonly clientCert?: { readonly cert: string | Buffer; readonly key: string | Buffer };
  readonly headers: Readonly<Record<string, string>>;
}

/** What {@link KubeClient.watchList} follows, and how. */
export interface KubeWatchListOptions {
  readonly kind: WatchKind;
  /** The version to follow, for a kind served in several (`certificates.k8s.io/v1`). */
  readonly apiVersion?: string;
  /** All namespaces when undefined. */
  readonly namespace?: string;
  readonly fieldSelector?: string;
  readonly labelSelector?: string;
  /** Stops the loop. */
  readonly signal: AbortSignal;
  /** A `SYNC` with the whole list at the start and after every relist, then each change. */
  readonly onEvent: (event: WatchListEvent<KubeResource>) => void;
  /** Told of each failure before the loop waits `delayMs` and tries again. */
  readonly onRetry?: (err: KubeApiError, delayMs: number) => void;
  /** First and longest wait after a failure; default 500 ms and 30 s. */
  readonly backoffMs?: { readonly min: number; readonly max: number };
  /** Time allowed for one list; default 30 s. */
  readonly listTimeoutMs?: number;
}

/**
 * Every API call meshid makes. Every method rejects with a {@link KubeApiError}, never with the
 * client library's own exception.
 *
 * @example
 * ```ts
 * const cm = await kube.get('v1', 'ConfigMap', 'linkerd', 'linkerd-identity-trust-roots');
 * ```
 */
export interface KubeClient {
  /** The API server's address, for messages. */
  readonly server: string;
  /** Reads one object; undefined when it does not exist. */
  get(
    apiVersion: string,
    kind: string,
    namespace: string,
    name: string,
  ): Promise<KubeResource | undefined>;
  /** Lists a collection (all namespaces when `namespace` is undefined). */
  list(
    apiVersion: string,
    kind: string,
    namespace: string | undefined,
    labelSelector?: string,
    fieldSelector?: string,
    signal?: AbortSignal,
  ): Promise<KubeResource[]>;
  /** Creates; a KubeApiError of status 409 when it exists. */
  create(obj: KubeResource): Promise<KubeResource>;
  /** Replaces (conditional on metadata.resourceVersion when set); status 409 on a stale one. */
  replace(obj: KubeResource): Promise<KubeResource>;
  /**
   * Deletes; a missing object is not an error. With `preconditions`, only the object of that uid
   * and resourceVersion (status 409 when it changed).
   */
  delete(
    apiVersion: string,
    kind: string,
    namespace: string,
    name: string,
    preconditions?: { uid?: string; resourceVersion?: string },
  ): Promise<void>;
  /** Replaces the status subresource of a namespaced custom resource. */
  replaceStatus(obj: KubeResource, plural: string): Promise<void>;
  /**
   * Lists a collection of a {@link WatchKind} and follows it until `signal` aborts: resumes from the last
   * resourceVersion when a watch ends, lists again on 410 Gone, and retries failures with
   * jittered, capped backoff (see {@link watchList}). Resolves when `signal` aborts.
   */
  watchList(options: KubeWatchListOptions): Promise<void>;
  createTokenReview(
    token: string,
    audiences: readonly string[],
    signal: AbortSignal,
  ): Promise<TokenReviewResult>;
  /** SelfSubjectAccessReview: may our own credentials do this? */
  canI(query: AccessQuery, signal: AbortSignal): Promise<{ allowed: boolean; reason?: string }>;
  /** Creates a core/v1 Event, or adds to the count of the one named `name` when it exists. */
  recordEvent(name: string, event: EventRecord, signal: AbortSignal): Promise<void>;
  /** How to reach the API server directly (for the JWKS fetch): its CA, client cert, auth header. */
  connection(): Promise<ApiConnection>;
  /** The service-account token issuer named by the API server's OIDC discovery document. */
  oidcIssuer(signal: AbortSignal): Promise<string>;
  /** Stops every watch. */
  close(): void;
}

const KUBE_API_ERROR = Symbol.for('meshid.KubeApiError');

/**
 * A failed API call: the HTTP status (0 when no response came) and the Status reason/message.
 * The status is a field of its own, never `code`, so it cannot reach the gRPC wire as a status.
 *
 * @example
 * ```ts
 * if (err instanceof KubeApiError && err.status === 403) { ... }
 * ```
 */
export class KubeApiError extends Error {
  override readonly name = 'KubeApiError';
  readonly [KUBE_API_ERROR] = true;
  /**
   * By brand, not prototype: the adapter is loaded with a dynamic import, and a loader (tsx in
   * tests) may give it its own copy of this module.
   */
  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === 'object' && value !== null && KUBE_API_ERROR in value;
  }
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * Whether a failed list says the API server does not serve the kind (its group or version is
 * off): a list of a served kind never answers 404. Looks through wrapping errors' causes.
 *
 * @example
 * ```ts
 * if (kindNotServed(err)) return undefined; // ClusterTrustBundles are not in this cluster
 * ```
 */
export function kindNotServed(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++)
    if (e instanceof KubeApiError && e.status === 404) return true;
  return false;
}
