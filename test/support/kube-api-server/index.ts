/**
 * # Kubernetes API test server — a TEST DOUBLE, not a Kubernetes API server
 *
 * An in-memory, single-process stand-in for kube-apiserver, served over HTTPS on 127.0.0.1, so
 * meshid's Kubernetes code can be tested through `@kubernetes/client-node` exactly as it talks to a
 * cluster. It is faithful where meshid's correctness depends on it and says so where it is not.
 * See docs/kube-api-test-server.md for the full list.
 *
 * Covered:
 * - HTTPS with its own CA; kubeconfig with certificate-authority-data and a bearer token.
 * - Authentication: static bearer tokens (admin, test users) and service-account JWTs (RS256, kid)
 *   checked for signature, issuer, exp/nbf against an injectable clock, audience (the API
 *   audiences, default the issuer) and bound objects (ServiceAccount and Pod must still exist with
 *   the same uid). Missing or bad credentials: 401 Status. Anonymous access only to /healthz,
 *   /livez, /readyz, /version and the OIDC discovery endpoints.
 * - Authorization on every request: system:masters, static allow-lists of test users, and RBAC
 *   evaluated from stored Role/ClusterRole/RoleBinding/ClusterRoleBinding objects (verbs, groups,
 *   resources with subresources, resourceNames, nonResourceURLs; User, Group, ServiceAccount
 *   subjects), plus the bootstrap discovery/public-info/basic-user policy. 403 with the real wording.
 *   SelfSubjectAccessReview, SubjectAccessReview, LocalSubjectAccessReview, SelfSubjectReview.
 * - Storage verbs: create, get, list, update (PUT), patch (JSON patch, merge patch, strategic merge
 *   applied as merge, apply as create-or-merge), delete, deletecollection; namespaced and cluster
 *   scope; one global resourceVersion; uid, creationTimestamp, generation; generateName; stale
 *   resourceVersion → 409 Conflict; duplicate → 409 AlreadyExists; missing → 404; names validated
 *   (DNS-1123 subdomain/label, DNS-1035, path segment) → 422; namespace must exist → 404;
 *   body kind/apiVersion/namespace mismatch → 400; status subresource split; finalizers;
 *   Secret stringData → data; MicroTime fields parsed as strictly as the real API; dryRun=All;
 *   label and field selectors; limit/continue; field validation (`fieldValidation` Strict, Warn,
 *   Ignore: unknown and repeated fields refused, warned about or dropped; field-validation.ts).
 * - Watches: JSON lines, resume from resourceVersion out of a bounded per-type history, 410 Expired
 *   as an ERROR event, selector transitions, bookmarks, timeoutSeconds, sendInitialEvents.
 * - Discovery (/api, /apis, group versions), /version, health endpoints, OIDC discovery and JWKS.
 * - TokenRequest (audiences, expirationSeconds with a configurable minimum, boundObjectRef Pod) and
 *   TokenReview (audience intersection, no-audience reviews use the API audiences).
 * - Lifecycle: stop, pause/resume on the same port with the same state and keys; fault injection;
 *   a request log.
 *
 * Not covered: admission (no webhooks are called, no quota, no defaults beyond those listed),
 * controllers (no Deployment rollouts, pods never run, namespace deletion is immediate, no garbage
 * collection by ownerReferences), real server-side apply (no managedFields or conflicts),
 * strategic-merge list semantics, OpenAPI schema validation of bodies (beyond unknown fields),
 * protobuf/CBOR, Table output,
 * aggregated discovery, CRD objects (the custom types come from a table), pagination snapshots,
 * core and events.k8s.io Events sharing storage, exec/logs/port-forward, impersonation.
 *
 * @example
 * ```ts
 * const api = await startKubeApiServer({ namespaces: ['linkerd'] });
 * const kc = api.kubeConfig();
 * const core = kc.makeApiClient(CoreV1Api);
 * await core.createNamespacedConfigMap({ namespace: 'linkerd', body: { metadata: { name: 'x' } } });
 * const { token } = await api.mintToken({ namespace: 'linkerd', serviceAccount: 'web', audiences: ['identity.l5d.io'] });
 * await api.stop();
 * ```
 */
import { Admission } from './admission.js';
import type { WebhookConnection, WebhookServiceResolver } from './admission.js';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { createServer } from 'node:https';
import type { Server } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import { Authenticator, Authorizer } from './auth.js';
import type { ServerContext } from './context.js';
import { Faults } from './faults.js';
import type { Fault } from './faults.js';
import { createHandler } from './http.js';
import { rolledOutStatus } from './deployments.js';
import { kubeconfigYaml } from './kubeconfig.js';
import { Objects } from './objects.js';
import { podCertificateResources } from './pod-certificates.js';
import type { PodCertificatesMode } from './pod-certificates.js';
import { BUILTIN_RESOURCES, ResourceRegistry } from './resources.js';
import type { ResourceType } from './resources.js';
import { Store } from './store.js';
import { generateServerTls } from './tls.js';
import { TokenAuthority } from './tokens.js';
import type { ServiceAccountClaims } from './tokens.js';
import type { KubeObject, RequestLogEntry, UserRule } from './types.js';

export type { WebhookConnection, WebhookServiceResolver } from './admission.js';
export type { Fault } from './faults.js';
export type { BuiltinAdmission, ResourceType, NameRule } from './resources.js';
export { BUILTIN_RESOURCES } from './resources.js';
export type { PodCertificatesMode } from './pod-certificates.js';
export { verifyProofOfPossession } from './pod-certificate-keys.js';
export { CLUSTER_TRUST_BUNDLE_RESOURCE } from './cluster-trust-bundles.js';
export { ApiError } from './status.js';
export type { StatusBody } from './status.js';
export type { ServiceAccountClaims, KubernetesClaim } from './tokens.js';
export type { KubeObject, ObjectMeta, RequestLogEntry, UserRule, UserInfo } from './types.js';

/** Options of {@link startKubeApiServer}. */
export interface KubeApiServerOptions {
  /** Clock for token times and timestamps, in ms since the epoch; default `Date.now`. */
  readonly now?: () => number;
  /** Service-account token issuer (`iss`); default `https://kubernetes.default.svc.cluster.local`. */
  readonly issuer?: string;
  /** The API server's own audiences (`--api-audiences`); default `[issuer]`. */
  readonly apiAudiences?: readonly string[];
  /** Namespaces created at start besides default, kube-system, kube-public and kube-node-lease. */
  readonly namespaces?: readonly string[];
  /** Events kept per resource type for watch resumption; default 1000. Smaller forces 410 sooner. */
  readonly watchHistory?: number;
  /** Minimum TokenRequest expirationSeconds; default 600 as the real API. */
  readonly minTokenExpirationSeconds?: number;
  /** Interval of BOOKMARK events for watches that allow them; default 60 s. */
  readonly bookmarkIntervalMs?: number;
  /** Port to listen on; default 0 (any free port). */
  readonly port?: number;
  /** Extra resource types (custom resources) served besides the built-in table. */
  readonly resources?: readonly ResourceType[];
  /**
   * Where admission webhooks given as `clientConfig.service` are reached (there is no cluster
   * network); also settable later with `setWebhookServiceResolver`.
   */
  readonly resolveWebhookService?: WebhookServiceResolver;
  /**
   * Which Kubernetes version's PodCertificateRequest API is served (KEP-4317, pod-certificates.ts):
   * `off` (default: the feature gate and runtime-config are off, as by default on 1.35 and 1.36),
   * `1.35` (v1beta1, public key + proof of possession), `1.36` (v1beta1, also the stub CSR) or
   * `1.37` (v1 and v1beta1).
   */
  readonly podCertificates?: PodCertificatesMode;
  /**
   * `false` plays an API server that skips PodCertificateRequest's key, proof-of-possession,
   * stub-CSR and lifetime-floor checks (a compromised or broken one), so tests can show a signer
   * refusing on its own. Default true.
   */
  readonly podCertificateChecks?: boolean;
}

/** Identifies one object for the programmatic helpers. */
export interface ObjectRef {
  readonly apiVersion: string;
  readonly kind: string;
  readonly name: string;
  readonly namespace?: string;
}

/** A test user added with {@link KubeApiServer.addUser}. */
export interface TestUser {
  /** Bearer token; generated when absent. */
  readonly token?: string;
  readonly username: string;
  readonly uid?: string;
  readonly groups?: readonly string[];
  /** Allow-list; RBAC bindings naming the user (or its groups) also apply. */
  readonly rules?: readonly UserRule[];
}

/** Options of {@link KubeApiServer.mintToken}. */
export interface MintTokenOptions {
  readonly namespace: string;
  /** ServiceAccount name; created (with its namespace) when missing. */
  readonly serviceAccount: string;
  /** Pod the token is bound to; created (running as the service account) when missing. */
  readonly pod?: string;
  /** Default: the API audiences. */
  readonly audiences?: readonly string[];
  /** Default 3600. Not subject to minTokenExpirationSeconds (tests may mint 1 s tokens). */
  readonly expirationSeconds?: number;
}

/** Options for kubeconfigs written for clients. */
export interface KubeconfigOptions {
  /** Bearer token; default the admin token. */
  readonly token?: string;
  /** Name of the kubeconfig user entry; default `meshid-test-user`. */
  readonly user?: string;
  /** Context namespace. */
  readonly namespace?: string;
}

/** A running test server. */
export interface KubeApiServer {
  /** `https://127.0.0.1:<port>`. */
  readonly url: string;
  readonly port: number;
  /** PEM of the CA that signed the serving certificate. */
  readonly caPem: string;
  /** Service-account token issuer. */
  readonly issuer: string;
  readonly apiAudiences: readonly string[];
  /** Token of `kubernetes-admin` (group system:masters). */
  readonly adminToken: string;
  /** Current global resourceVersion. */
  readonly resourceVersion: string;
  /** Every request served so far (method, path, user, verb, resource, status). */
  readonly requests: readonly RequestLogEntry[];
  clearRequests(): void;
  /** Calls `cb` after every request; returns the unsubscribe function. */
  onRequest(cb: (e: RequestLogEntry) => void): () => void;

  kubeconfigYaml(opts?: KubeconfigOptions): string;
  writeKubeconfig(path: string, opts?: KubeconfigOptions): Promise<void>;
  /** A client-node KubeConfig for this server. */
  kubeConfig(opts?: KubeconfigOptions): KubeConfig;

  /** Adds a static-token user; returns its token. */
  addUser(user: TestUser): string;

  /** Creates an object with the API's semantics (validation, namespace checks), bypassing HTTP and authorization. */
  create<T extends KubeObject = KubeObject>(obj: T): T;
  /** Creates, or replaces unconditionally when it exists. */
  apply<T extends KubeObject = KubeObject>(obj: T): T;
  get<T extends KubeObject = KubeObject>(ref: ObjectRef): T | undefined;
  list<T extends KubeObject = KubeObject>(
    apiVersion: string,
    kind: string,
    namespace?: string,
  ): T[];
  /** PUT semantics (a stale metadata.resourceVersion throws a 409 ApiError). */
  update<T extends KubeObject = KubeObject>(obj: T): T;
  /** PUT of the status subresource. */
  updateStatus<T extends KubeObject = KubeObject>(obj: T): T;
  /**
   * Writes the status of a rolled-out Deployment (its current generation, every replica ready and
   * available), as the deployment controller does once the pods are ready; the double runs no
   * controllers, so a Deployment has no status until a test says this (deployments.ts).
   */
  rollOut(namespace: string, name: string): KubeObject;
  delete(ref: ObjectRef): void;
  createNamespace(name: string, labels?: Record<string, string>): KubeObject;
  createServiceAccount(namespace: string, name: string): KubeObject;
  createPod(
    namespace: string,
    name: string,
    opts?: { serviceAccount?: string; labels?: Record<string, string> },
  ): KubeObject;
  /** Mints a service-account token as TokenRequest would, creating what is missing. */
  mintToken(opts: MintTokenOptions): Promise<{ token: string; claims: ServiceAccountClaims }>;

  /** Signing keys for rotation drills: add a key (resolves to its kid), choose the signer, drop a key. */
  readonly signingKeys: {
    add(): Promise<string>;
    use(kid: string): void;
    remove(kid: string): void;
    readonly active: string;
    readonly kids: readonly string[];
  };

  /** Injects a fault for the next matching request(s). */
  failNext(fault: Fault): void;
  clearFaults(): void;
  /** Drops all watch history: a watch from any earlier resourceVersion then gets 410 Expired. */
  compactWatchHistory(): void;
  /** Ends every open watch stream cleanly, as a server-side watch timeout does; clients re-watch. */
  closeWatches(): void;
  /** How many watch streams are open. */
  readonly openWatches: number;
  /** Serves one more resource type (a custom resource). */
  registerResource(type: ResourceType): void;
  /** Every TLS connection this server opened to an admission webhook, with what it negotiated. */
  readonly webhookConnections: readonly WebhookConnection[];
  /** Where admission webhooks' Services are reached from here (see the option). */
  setWebhookServiceResolver(resolve: WebhookServiceResolver | undefined): void;

  /** Closes the listener and every connection and watch; state and keys stay. */
  pause(): Promise<void>;
  /** Listens again on the same port. */
  resume(): Promise<void>;
  /** Closes everything for good. */
  stop(): Promise<void>;
}

function splitApiVersion(apiVersion: string): { group: string; version: string } {
  const i = apiVersion.indexOf('/');
  return i < 0
    ? { group: '', version: apiVersion }
    : { group: apiVersion.slice(0, i), version: apiVersion.slice(i + 1) };
}

/**
 * Starts the test server on 127.0.0.1 (HTTPS, its own CA) with `default`, `kube-system`,
 * `kube-public`, `kube-node-lease` and `options.namespaces` created, each with its `default`
 * ServiceAccount and `kube-root-ca.crt` ConfigMap.
 *
 * @example
 * ```ts
 * let now = Date.now();
 * const api = await startKubeApiServer({ now: () => now, namespaces: ['linkerd'] });
 * await api.writeKubeconfig(join(dir, 'kubeconfig'));
 * const kc = new KubeConfig();
 * kc.loadFromFile(join(dir, 'kubeconfig'));
 * const reviews = kc.makeApiClient(AuthenticationV1Api);
 * const { token } = await api.mintToken({ namespace: 'emojivoto', serviceAccount: 'web', pod: 'web-0', audiences: ['identity.l5d.io'] });
 * const r = await reviews.createTokenReview({ body: { spec: { token, audiences: ['identity.l5d.io'] } } });
 * now += 2 * 3_600_000; // the token has expired for the next review
 * await api.stop();
 * ```
 */
export async function startKubeApiServer(
  options: KubeApiServerOptions = {},
): Promise<KubeApiServer> {
  const now = options.now ?? Date.now;
  const issuer = options.issuer ?? 'https://kubernetes.default.svc.cluster.local';
  const apiAudiences = [...(options.apiAudiences ?? [issuer])];
  const [tls, tokens] = await Promise.all([
    generateServerTls(),
    TokenAuthority.create(issuer, now),
  ]);
  const registry = new ResourceRegistry([
    ...BUILTIN_RESOURCES,
    ...podCertificateResources(
      options.podCertificates ?? 'off',
      options.podCertificateChecks ?? true,
    ),
    ...(options.resources ?? []),
  ]);
  const store = new Store(options.watchHistory ?? 1000);
  const authn = new Authenticator(tokens, store, registry, apiAudiences);
  const authz = new Authorizer(store, registry);
  const faults = new Faults();
  const requests: RequestLogEntry[] = [];
  const listeners = new Set<(e: RequestLogEntry) => void>();
  const watches = new Set<() => void>();
  let port = options.port ?? 0;
  const url = (): string => `https://127.0.0.1:${port}`;

  const typeOf = (apiVersion: string, kind: string): ResourceType => {
    const { group, version } = splitApiVersion(apiVersion);
    const t = registry.byKindVersion(group, version, kind);
    if (t === undefined) throw new Error(`the test server does not serve ${apiVersion} ${kind}`);
    return t;
  };

  // eslint-disable-next-line prefer-const
  let objects: Objects;
  const seedNamespace = (ns: string): void => {
    objects.create(typeOf('v1', 'ServiceAccount'), ns, { metadata: { name: 'default' } });
    objects.create(typeOf('v1', 'ConfigMap'), ns, {
      metadata: { name: 'kube-root-ca.crt' },
      data: { 'ca.crt': tls.caPem },
    });
  };
  objects = new Objects(store, registry, { now, onNamespaceCreated: seedNamespace });

  let resolveWebhookService = options.resolveWebhookService;
  const admission = new Admission(
    store,
    registry,
    () => resolveWebhookService,
    (user, a) => authz.authorize(user, a).allowed,
  );
  const ctx: ServerContext = {
    registry,
    store,
    objects,
    admission,
    authn,
    authz,
    tokens,
    faults,
    now,
    minTokenExpirationSeconds: options.minTokenExpirationSeconds ?? 600,
    bookmarkIntervalMs: options.bookmarkIntervalMs ?? 60_000,
    url,
    log: (e) => {
      requests.push(e);
      for (const l of [...listeners]) l(e);
    },
    watches,
  };

  const adminToken = randomBytes(24).toString('base64url');
  authn.addStaticUser(adminToken, {
    username: 'kubernetes-admin',
    groups: ['system:masters'],
    rules: [{ verbs: ['*'], apiGroups: ['*'], resources: ['*'], nonResourceURLs: ['*'] }],
  });

  const nsType = typeOf('v1', 'Namespace');
  for (const ns of [
    'default',
    'kube-system',
    'kube-public',
    'kube-node-lease',
    ...(options.namespaces ?? []),
  ])
    if (store.get(nsType, '', ns) === undefined)
      objects.create(nsType, '', { metadata: { name: ns } });

  const sockets = new Set<Socket>();
  const server: Server = createServer({ key: tls.keyPem, cert: tls.certPem }, createHandler(ctx));
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  let stopped = false;
  let listening = false;

  const listen = (): Promise<void> =>
    new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        port = (server.address() as AddressInfo).port;
        listening = true;
        resolve();
      });
    });
  const close = async (): Promise<void> => {
    if (!listening) return;
    listening = false;
    for (const end of [...watches]) end();
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const s of sockets) s.destroy();
    await closed;
  };
  await listen();

  const self: KubeApiServer = {
    get url() {
      return url();
    },
    get port() {
      return port;
    },
    caPem: tls.caPem,
    issuer,
    apiAudiences,
    adminToken,
    get resourceVersion() {
      return String(store.resourceVersion);
    },
    get requests() {
      return requests;
    },
    clearRequests: () => {
      requests.length = 0;
    },
    onRequest: (cb) => {
      listeners.add(cb);
      return () => listeners.delete(cb);
    },
    kubeconfigYaml: (o = {}) =>
      kubeconfigYaml({
        url: url(),
        caPem: tls.caPem,
        token: o.token ?? adminToken,
        user: o.user ?? 'meshid-test-user',
        namespace: o.namespace,
      }),
    writeKubeconfig: async (path, o = {}) => {
      await writeFile(path, self.kubeconfigYaml(o), { mode: 0o600 });
    },
    kubeConfig: (o = {}) => {
      const kc = new KubeConfig();
      kc.loadFromString(self.kubeconfigYaml(o));
      return kc;
    },
    addUser: (u) => {
      const token = u.token ?? randomBytes(24).toString('base64url');
      authn.addStaticUser(token, {
        username: u.username,
        groups: [...(u.groups ?? [])],
        ...(u.uid !== undefined ? { uid: u.uid } : {}),
        rules: [...(u.rules ?? [])],
      });
      return token;
    },
    create: <T extends KubeObject>(obj: T): T => {
      const t = typeOf(obj.apiVersion ?? 'v1', obj.kind ?? '');
      return objects.create(t, obj.metadata.namespace ?? '', obj) as T;
    },
    apply: <T extends KubeObject>(obj: T): T => {
      const t = typeOf(obj.apiVersion ?? 'v1', obj.kind ?? '');
      const ns = obj.metadata.namespace ?? '';
      const existing = store.get(t, t.namespaced ? ns : '', obj.metadata.name ?? '');
      if (existing === undefined) return objects.create(t, ns, obj) as T;
      const next = structuredClone(obj);
      delete next.metadata.resourceVersion;
      const updated = objects.update(t, ns, obj.metadata.name!, next) as T;
      if (t.subresources?.includes('status') === true && obj['status'] !== undefined)
        return objects.update(
          t,
          ns,
          obj.metadata.name!,
          { ...updated, status: obj['status'] },
          'status',
        ) as T;
      return updated;
    },
    get: <T extends KubeObject>(ref: ObjectRef): T | undefined => {
      const t = typeOf(ref.apiVersion, ref.kind);
      return store.get(t, t.namespaced ? (ref.namespace ?? '') : '', ref.name) as T | undefined;
    },
    list: <T extends KubeObject>(apiVersion: string, kind: string, namespace = ''): T[] =>
      objects.list(typeOf(apiVersion, kind), namespace).items as T[],
    update: <T extends KubeObject>(obj: T): T =>
      objects.update(
        typeOf(obj.apiVersion ?? 'v1', obj.kind ?? ''),
        obj.metadata.namespace ?? '',
        obj.metadata.name ?? '',
        obj,
      ) as T,
    updateStatus: <T extends KubeObject>(obj: T): T =>
      objects.update(
        typeOf(obj.apiVersion ?? 'v1', obj.kind ?? ''),
        obj.metadata.namespace ?? '',
        obj.metadata.name ?? '',
        obj,
        'status',
      ) as T,
    rollOut: (namespace, name) => {
      const t = typeOf('apps/v1', 'Deployment');
      const d = objects.get(t, namespace, name);
      return objects.update(
        t,
        namespace,
        name,
        { ...d, status: rolledOutStatus(d, now()) },
        'status',
      );
    },
    delete: (ref) => {
      objects.delete(typeOf(ref.apiVersion, ref.kind), ref.namespace ?? '', ref.name);
    },
    createNamespace: (name, labels) =>
      objects.create(nsType, '', {
        metadata: { name, ...(labels !== undefined ? { labels } : {}) },
      }),
    createServiceAccount: (namespace, name) =>
      objects.create(typeOf('v1', 'ServiceAccount'), namespace, { metadata: { name } }),
    createPod: (namespace, name, o = {}) =>
      objects.create(typeOf('v1', 'Pod'), namespace, {
        metadata: { name, ...(o.labels !== undefined ? { labels: o.labels } : {}) },
        spec: {
          serviceAccountName: o.serviceAccount ?? 'default',
          containers: [{ name: 'app', image: 'app:test' }],
        },
      }),
    mintToken: async (o) => {
      if (store.get(nsType, '', o.namespace) === undefined) self.createNamespace(o.namespace);
      const saType = typeOf('v1', 'ServiceAccount');
      const sa =
        store.get(saType, o.namespace, o.serviceAccount) ??
        self.createServiceAccount(o.namespace, o.serviceAccount);
      let pod: { name: string; uid: string } | undefined;
      if (o.pod !== undefined) {
        const p =
          store.get(typeOf('v1', 'Pod'), o.namespace, o.pod) ??
          self.createPod(o.namespace, o.pod, { serviceAccount: o.serviceAccount });
        pod = { name: o.pod, uid: p.metadata.uid! };
      }
      return tokens.mint({
        namespace: o.namespace,
        serviceAccount: { name: o.serviceAccount, uid: sa.metadata.uid! },
        pod,
        audiences: o.audiences ?? apiAudiences,
        expirationSeconds: o.expirationSeconds ?? 3600,
      });
    },
    signingKeys: {
      add: () => tokens.addKey(),
      use: (kid) => tokens.useKey(kid),
      remove: (kid) => tokens.removeKey(kid),
      get active() {
        return tokens.activeKid;
      },
      get kids() {
        return tokens.kids;
      },
    },
    failNext: (f) => faults.add(f),
    clearFaults: () => faults.clear(),
    compactWatchHistory: () => store.compact(),
    closeWatches: () => {
      for (const end of [...watches]) end();
    },
    get openWatches() {
      return watches.size;
    },
    registerResource: (t) => registry.add(t),
    get webhookConnections() {
      return admission.connections;
    },
    setWebhookServiceResolver: (resolve) => (resolveWebhookService = resolve),
    pause: close,
    resume: async () => {
      if (stopped) throw new Error('the test server was stopped');
      if (!listening) await listen();
    },
    stop: async () => {
      stopped = true;
      await close();
    },
  };
  return self;
}
