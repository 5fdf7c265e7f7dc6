/**
 * The narrow view of the Kubernetes API the CA needs. The CA's logic (token reviews and their
 * cache, the issuer watch, Events) is written against these interfaces; `client-node.ts` is the
 * one adapter to the real client, and tests can fake any of them.
 *
 * Errors: every method rejects with a {@link KubeApiError}, never with the client library's own
 * exception, so an HTTP status can never leak onto the gRPC wire as a status code.
 */

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

/** A Secret or ConfigMap as the issuer source needs it: decoded data and its version. */
export interface KubeObject {
  readonly name: string;
  readonly namespace: string;
  readonly uid: string;
  readonly resourceVersion: string;
  /** Secret type (`kubernetes.io/tls`, `linkerd.io/tls`, …); undefined for a ConfigMap. */
  readonly type?: string | undefined;
  /** Keys to text (Secret data is base64-decoded). */
  readonly data: Readonly<Record<string, string>>;
}

/** The kinds of object the CA reads. */
export type WatchedKind = 'secrets' | 'configmaps';

/** One event of a watch stream. */
export type WatchEvent =
  | { readonly type: 'ADDED' | 'MODIFIED'; readonly object: KubeObject }
  | { readonly type: 'DELETED'; readonly object: KubeObject }
  | { readonly type: 'BOOKMARK'; readonly resourceVersion: string }
  /** The server said the requested resourceVersion is too old (HTTP 410 Gone): list again. */
  | { readonly type: 'GONE' };

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

/**
 * The API calls the CA makes.
 *
 * @example
 * ```ts
 * const result = await api.createTokenReview(token, ['identity.l5d.io'], AbortSignal.timeout(5000));
 * ```
 */
export interface KubeApi {
  /** The API server's address, for messages. */
  readonly server: string;
  createTokenReview(
    token: string,
    audiences: readonly string[],
    signal: AbortSignal,
  ): Promise<TokenReviewResult>;
  /** SelfSubjectAccessReview: may the CA's own credentials do this? */
  canI(query: AccessQuery, signal: AbortSignal): Promise<{ allowed: boolean; reason?: string }>;
  /** Lists the one object of this name (a list with a name field selector, so RBAC `resourceNames` apply). */
  listOne(
    kind: WatchedKind,
    namespace: string,
    name: string,
    signal: AbortSignal,
  ): Promise<{ object: KubeObject | undefined; resourceVersion: string }>;
  /**
   * Watches the one object of this name from `resourceVersion`. `onEvent` gets each event;
   * `onEnd` is called once when the stream ends for any reason (undefined: the server closed it).
   * Resolves with a function that stops the watch.
   */
  watchOne(
    kind: WatchedKind,
    namespace: string,
    name: string,
    resourceVersion: string,
    onEvent: (event: WatchEvent) => void,
    onEnd: (err: KubeApiError | undefined) => void,
  ): Promise<() => void>;
  /** Creates a core/v1 Event, or adds to the count of the one named `name` when it exists. */
  recordEvent(name: string, event: EventRecord, signal: AbortSignal): Promise<void>;
  /** How to reach the API server directly (for the JWKS fetch): its CA, client cert, auth header. */
  connection(): Promise<ApiConnection>;
  /** The service-account token issuer named by the API server's OIDC discovery document. */
  oidcIssuer(signal: AbortSignal): Promise<string>;
  /** Releases sockets. */
  close(): void;
}

/**
 * A failed API call: the HTTP status (0 when no response came) and the Status reason/message.
 *
 * @example
 * ```ts
 * if (err instanceof KubeApiError && err.status === 403) { ... }
 * ```
 */
export class KubeApiError extends Error {
  override readonly name = 'KubeApiError';
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
