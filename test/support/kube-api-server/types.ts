/** Shapes shared by the test server's internals. Objects are plain JSON, as on the wire. */

/** A JSON object as decoded from a request body. */
export type JsonObject = Record<string, unknown>;

/** True for a JSON object (not null, not an array). */
export function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The subset of ObjectMeta the server reads and writes. Everything else is kept as sent. */
export interface ObjectMeta {
  name?: string;
  generateName?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  finalizers?: string[];
  [key: string]: unknown;
}

/** A stored Kubernetes object. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
  [key: string]: unknown;
}

/** An authorization rule of a static test user; `*` is a wildcard in every list. */
export interface UserRule {
  /** `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection` or `*`. */
  readonly verbs: readonly string[];
  /** API groups (`''` is the core group); default `['*']`. */
  readonly apiGroups?: readonly string[];
  /** Resources, optionally with a subresource (`serviceaccounts/token`, or `*\/status` for any); default `['*']`. */
  readonly resources?: readonly string[];
  /** Object names the rule is limited to; absent means any name. */
  readonly resourceNames?: readonly string[];
  /** Namespaces the rule is limited to; absent means any namespace and cluster scope. */
  readonly namespaces?: readonly string[];
  /** Non-resource paths (`/metrics`, `/debug/*`); only used for non-resource requests. */
  readonly nonResourceURLs?: readonly string[];
}

/** Who a request was made by, after authentication. */
export interface UserInfo {
  readonly username: string;
  readonly uid?: string;
  readonly groups: readonly string[];
  readonly extra?: Readonly<Record<string, readonly string[]>>;
  /** Static allow-list of a test user; service accounts have none and rely on RBAC alone. */
  readonly rules?: readonly UserRule[];
}

/** What a request asks to do, as the authorizer sees it. */
export interface RequestAttributes {
  readonly verb: string;
  readonly resourceRequest: boolean;
  readonly apiGroup: string;
  readonly resource: string;
  readonly subresource: string;
  readonly namespace: string;
  readonly name: string;
  /** The URL path of a non-resource request. */
  readonly path: string;
}

/** One entry of the request log. */
export interface RequestLogEntry {
  readonly method: string;
  /** The URL path without the query string. */
  readonly path: string;
  /** The query string parameters. */
  readonly query: Readonly<Record<string, string>>;
  /** The authenticated user name, `system:anonymous`, or undefined when authentication failed. */
  readonly user: string | undefined;
  /** The authorization verb (`get`, `list`, `watch`, `create`...) or the HTTP method in lower case. */
  readonly verb: string;
  /** The resource (`configmaps`, `tokenreviews`...) or `''` for non-resource paths. */
  readonly resource: string;
  /** The HTTP status sent (200 for a watch that started). */
  readonly status: number;
  /** Milliseconds since the epoch (wall clock) when the request arrived. */
  readonly at: number;
}
