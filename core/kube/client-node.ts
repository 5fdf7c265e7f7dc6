/**
 * The {@link KubeClient} over `@kubernetes/client-node`: the one place that knows the client
 * library's shapes (with `config.ts`, which loads a KubeConfig). Every failure becomes a
 * {@link KubeApiError}, translated here once from the library's `ApiException`, a watch's HTTP
 * error or a failed connection. Loaded on first use (see {@link openKubeClient} in core's index)
 * so that commands which never talk to the API do not load the library.
 */
import type * as https from 'node:https';
import {
  ApiException,
  AuthenticationV1Api,
  AuthorizationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  DiscoveryV1Api,
  KubernetesObjectApi,
  Observable,
  PatchStrategy,
  Watch,
  WellKnownApi,
  setHeaderOptions,
} from '@kubernetes/client-node';
import type {
  ConfigurationOptions,
  CoreV1Event,
  KubeConfig,
  KubernetesObject,
} from '@kubernetes/client-node';
import type { KubeClient, KubeResource, KubeWatchListOptions, WatchKind } from './api.js';
import { KubeApiError } from './api.js';
import { watchList } from './watch-list.js';
import type { WatchStreamEvent } from './watch-list.js';

const PLURAL: Readonly<Record<WatchKind, string>> = {
  Namespace: 'namespaces',
  ConfigMap: 'configmaps',
  Secret: 'secrets',
  Pod: 'pods',
  Service: 'services',
  EndpointSlice: 'endpointslices',
  PodCertificateRequest: 'podcertificaterequests',
};

/** The apiVersion of each kind (core/v1 unless listed). */
const API_VERSION: Readonly<Partial<Record<WatchKind, string>>> = {
  EndpointSlice: 'discovery.k8s.io/v1',
  PodCertificateRequest: 'certificates.k8s.io/v1beta1',
};
const apiVersionOf = (kind: WatchKind, version?: string): string =>
  version ?? API_VERSION[kind] ?? 'v1';
/** The URL prefix of a kind's API group version. */
const apiPrefix = (kind: WatchKind, version?: string): string => {
  const v = apiVersionOf(kind, version);
  return v === 'v1' ? '/api/v1' : `/apis/${v}`;
};

/**
 * Wraps a loaded KubeConfig as a {@link KubeClient}.
 *
 * @example
 * ```ts
 * const kube = clientNodeKubeClient(loadKubeConfig('in-cluster', process.env));
 * ```
 */
export function clientNodeKubeClient(kc: KubeConfig): KubeClient {
  const server = kc.getCurrentCluster()?.server ?? '(no cluster)';
  const objects = KubernetesObjectApi.makeApiClient(kc);
  const core = kc.makeApiClient(CoreV1Api);
  const discovery = kc.makeApiClient(DiscoveryV1Api);
  const custom = kc.makeApiClient(CustomObjectsApi);
  const watcher = new Watch(kc);
  const aborts = new Set<() => void>();
  const ref = (apiVersion: string, kind: string, namespace: string, name: string) => ({
    apiVersion,
    kind,
    metadata: { name, ...(namespace === '' ? {} : { namespace }) },
  });

  const openWatch = async (
    o: KubeWatchListOptions,
    resourceVersion: string,
    onEvent: (e: WatchStreamEvent<KubeResource>) => void,
    onEnd: (err: Error | undefined) => void,
  ): Promise<() => void> => {
    const plural = PLURAL[o.kind];
    const what = `watch ${plural}`;
    let ended = false;
    const end = (err: Error | undefined): void => {
      if (ended) return;
      ended = true;
      aborts.delete(stop);
      onEnd(err);
    };
    const controller = await call(
      () =>
        watcher.watch(
          o.namespace === undefined
            ? `${apiPrefix(o.kind, o.apiVersion)}/${plural}`
            : `${apiPrefix(o.kind, o.apiVersion)}/namespaces/${encodeURIComponent(o.namespace)}/${plural}`,
          {
            allowWatchBookmarks: true,
            resourceVersion,
            ...(o.fieldSelector === undefined ? {} : { fieldSelector: o.fieldSelector }),
            ...(o.labelSelector === undefined ? {} : { labelSelector: o.labelSelector }),
          },
          (type: string, obj: unknown) => {
            if (ended) return;
            const event = toWatchEvent(o.kind, type, obj, what, o.apiVersion);
            if (event instanceof KubeApiError) end(event);
            else if (event !== undefined) onEvent(event);
          },
          (err: unknown) =>
            end(err === null || err === undefined ? undefined : toKubeError(err, what)),
        ),
      what,
    );
    function stop(): void {
      aborts.delete(stop);
      ended = true;
      controller.abort();
    }
    if (ended) controller.abort();
    else aborts.add(stop);
    return stop;
  };

  return {
    server,

    async get(apiVersion, kind, namespace, name) {
      try {
        return plain(await objects.read(ref(apiVersion, kind, namespace, name)));
      } catch (err) {
        if (err instanceof ApiException && err.code === 404) return undefined;
        throw toKubeError(err, `get ${kind} ${namespace === '' ? '' : `${namespace}/`}${name}`);
      }
    },

    async list(apiVersion, kind, namespace, labelSelector, fieldSelector, signal) {
      const what = `list ${kind}`;
      const listed = await call(
        () =>
          objects.list(
            apiVersion,
            kind,
            namespace,
            undefined,
            undefined,
            undefined,
            fieldSelector,
            labelSelector,
          ),
        what,
        signal,
      );
      return listed.items.map((i) => ({ ...plain(i), apiVersion, kind }));
    },

    async create(obj) {
      const made = await call(
        () => objects.create(obj as KubernetesObject),
        `create ${obj.kind} ${obj.metadata.name}`,
      );
      return plain(made);
    },

    async replace(obj) {
      const replaced = await call(
        () => objects.replace(obj as KubernetesObject),
        `update ${obj.kind} ${obj.metadata.name}`,
      );
      return plain(replaced);
    },

    async delete(apiVersion, kind, namespace, name, preconditions) {
      try {
        await objects.delete(
          ref(apiVersion, kind, namespace, name),
          undefined,
          undefined,
          undefined,
          undefined,
          undefined,
          preconditions === undefined ? undefined : { preconditions },
        );
      } catch (err) {
        if (err instanceof ApiException && err.code === 404) return;
        throw toKubeError(err, `delete ${kind} ${namespace}/${name}`);
      }
    },

    async replaceStatus(obj, plural) {
      const [group, version] = obj.apiVersion.split('/') as [string, string];
      await call(
        () =>
          custom.replaceNamespacedCustomObjectStatus({
            group,
            version,
            namespace: obj.metadata.namespace ?? '',
            plural,
            name: obj.metadata.name,
            body: obj,
          }),
        `update ${obj.kind} ${obj.metadata.name} status`,
      );
    },

    watchList(o) {
      return watchList<KubeResource>({
        signal: o.signal,
        ...(o.backoffMs === undefined ? {} : { backoff: o.backoffMs }),
        onEvent: o.onEvent,
        ...(o.onRetry === undefined
          ? {}
          : { onRetry: (err, ms) => o.onRetry?.(toKubeError(err, `watch ${o.kind}`), ms) }),
        list: (signal) =>
          listCollection(
            { core, discovery, objects },
            o,
            AbortSignal.any([signal, timeout(o.listTimeoutMs ?? 30_000)]),
          ),
        watch: (version, onEvent, onEnd) => openWatch(o, version, onEvent, onEnd),
      });
    },

    ...reviewsAndEvents(kc, core),

    async connection() {
      const o: https.RequestOptions = {};
      await kc.applyToHTTPSOptions(o);
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(o.headers ?? {})) {
        if (typeof v === 'string') headers[k] = v;
      }
      const caPem = o.ca === undefined ? undefined : [o.ca].flat().map(String).join('\n');
      const { cert, key } = o;
      return {
        server,
        ...(caPem === undefined ? {} : { caPem }),
        ...(cert !== undefined && key !== undefined
          ? { clientCert: { cert: cert as string | Buffer, key: key as string | Buffer } }
          : {}),
        headers,
      };
    },

    close() {
      for (const abort of [...aborts]) abort();
    },
  };
}

/** TokenReview, SelfSubjectAccessReview, Events and OIDC discovery: the CA's typed calls. */
function reviewsAndEvents(
  kc: KubeConfig,
  core: CoreV1Api,
): Pick<KubeClient, 'createTokenReview' | 'canI' | 'recordEvent' | 'oidcIssuer'> {
  const authn = kc.makeApiClient(AuthenticationV1Api);
  const authz = kc.makeApiClient(AuthorizationV1Api);
  const wellKnown = kc.makeApiClient(WellKnownApi);
  return {
    async createTokenReview(token, audiences, signal) {
      const body = {
        apiVersion: 'authentication.k8s.io/v1',
        kind: 'TokenReview',
        spec: { token, audiences: [...audiences] },
      };
      const review = await call(
        () => authn.createTokenReview({ body }, withSignal(signal)),
        'TokenReview',
      );
      const s = review.status ?? {};
      return {
        authenticated: s.authenticated === true,
        username: s.user?.username,
        uid: s.user?.uid,
        audiences: s.audiences,
        error: s.error,
      };
    },

    async canI(q, signal) {
      const resourceAttributes = {
        verb: q.verb,
        group: q.group,
        resource: q.resource,
        ...(q.namespace === undefined ? {} : { namespace: q.namespace }),
        ...(q.name === undefined ? {} : { name: q.name }),
      };
      const body = {
        apiVersion: 'authorization.k8s.io/v1',
        kind: 'SelfSubjectAccessReview',
        spec: { resourceAttributes },
      };
      const review = await call(
        () => authz.createSelfSubjectAccessReview({ body }, withSignal(signal)),
        'SelfSubjectAccessReview',
      );
      const reason = review.status?.reason;
      return {
        allowed: review.status?.allowed === true && review.status.denied !== true,
        ...(reason === undefined || reason === '' ? {} : { reason }),
      };
    },

    async recordEvent(name, e, signal) {
      const namespace = e.namespace;
      const body: CoreV1Event = {
        apiVersion: 'v1',
        kind: 'Event',
        metadata: { name, namespace },
        involvedObject: e.involvedObject,
        type: e.type,
        reason: e.reason,
        message: e.message,
        source: { component: e.component, host: e.instance },
        reportingComponent: e.component,
        reportingInstance: e.instance,
        count: e.count,
        firstTimestamp: e.firstTimestamp,
        lastTimestamp: e.lastTimestamp,
      };
      const create = (): Promise<unknown> =>
        call(
          () => core.createNamespacedEvent({ namespace, body }, withSignal(signal)),
          `create event ${namespace}/${name}`,
        );
      if (e.count <= 1) {
        await create();
        return;
      }
      // A repeat of a recorded event: one object with a growing count, as kubectl shows it. A
      // merge patch of the changing fields, so the CA needs create and patch on Events only.
      const patch = {
        count: e.count,
        message: e.message,
        lastTimestamp: e.lastTimestamp.toISOString(),
      };
      try {
        await call(
          () =>
            core.patchNamespacedEvent(
              { name, namespace, body: patch },
              setHeaderOptions('Content-Type', PatchStrategy.MergePatch, withSignal(signal)),
            ),
          `patch event ${namespace}/${name}`,
        );
      } catch (err) {
        // The first write of this series was dropped (rate limit, outage): create it now.
        if (!(err instanceof KubeApiError) || err.status !== 404) throw err;
        await create();
      }
    },

    async oidcIssuer(signal) {
      const text = await call(
        () => wellKnown.getServiceAccountIssuerOpenIDConfiguration({}, withSignal(signal)),
        'GET /.well-known/openid-configuration',
      );
      let doc: unknown = text;
      if (typeof text === 'string') {
        try {
          doc = JSON.parse(text);
        } catch {
          throw new KubeApiError(200, 'BadResponse', 'OIDC discovery document is not JSON');
        }
      }
      const issuer = (doc as { issuer?: unknown } | null)?.issuer;
      if (typeof issuer !== 'string' || issuer === '') {
        throw new KubeApiError(200, 'BadResponse', 'OIDC discovery document names no issuer');
      }
      return issuer;
    },
  };
}

/** One list of a core/v1 collection, bounded by `signal`, as plain JSON. */
async function listCollection(
  clients: { core: CoreV1Api; discovery: DiscoveryV1Api; objects: KubernetesObjectApi },
  o: KubeWatchListOptions,
  signal: AbortSignal,
): Promise<{ items: KubeResource[]; resourceVersion: string }> {
  const q = {
    ...(o.fieldSelector === undefined ? {} : { fieldSelector: o.fieldSelector }),
    ...(o.labelSelector === undefined ? {} : { labelSelector: o.labelSelector }),
  };
  const { core, discovery, objects } = clients;
  const opts = withSignal(signal);
  const ns = o.namespace;
  const what = `list ${PLURAL[o.kind]}${ns === undefined ? '' : ` in ${ns}`}`;
  const listed = await call(
    async (): Promise<{ items: unknown[]; metadata?: unknown }> => {
      switch (o.kind) {
        case 'Namespace':
          return core.listNamespace(q, opts);
        case 'ConfigMap':
          return ns === undefined
            ? core.listConfigMapForAllNamespaces(q, opts)
            : core.listNamespacedConfigMap({ ...q, namespace: ns }, opts);
        case 'Secret':
          return ns === undefined
            ? core.listSecretForAllNamespaces(q, opts)
            : core.listNamespacedSecret({ ...q, namespace: ns }, opts);
        case 'Pod':
          return ns === undefined
            ? core.listPodForAllNamespaces(q, opts)
            : core.listNamespacedPod({ ...q, namespace: ns }, opts);
        case 'Service':
          return ns === undefined
            ? core.listServiceForAllNamespaces(q, opts)
            : core.listNamespacedService({ ...q, namespace: ns }, opts);
        case 'EndpointSlice':
          return ns === undefined
            ? discovery.listEndpointSliceForAllNamespaces(q, opts)
            : discovery.listNamespacedEndpointSlice({ ...q, namespace: ns }, opts);
        case 'PodCertificateRequest':
          // No typed client yet: the generic one (its path comes from discovery).
          return objects.list(
            apiVersionOf(o.kind, o.apiVersion),
            o.kind,
            ns,
            undefined,
            undefined,
            undefined,
            o.fieldSelector,
            o.labelSelector,
          );
      }
      // The generic client takes no per-call signal: the race below gives up on it instead.
    },
    what,
    signal,
  );
  return {
    items: listed.items.map((i) => ({
      ...plain(i),
      apiVersion: apiVersionOf(o.kind, o.apiVersion),
      kind: o.kind,
    })),
    resourceVersion:
      (listed.metadata as { resourceVersion?: string } | undefined)?.resourceVersion ?? '',
  };
}

/** Per-call options carrying an abort signal (client-node puts it on the fetch). */
function withSignal(signal: AbortSignal): ConfigurationOptions {
  return {
    middleware: [
      {
        pre: (ctx) => {
          ctx.setSignal(signal);
          return new Observable(Promise.resolve(ctx));
        },
        post: (ctx) => new Observable(Promise.resolve(ctx)),
      },
    ],
    middlewareMergeStrategy: 'append',
  };
}

function timeout(ms: number): AbortSignal {
  return AbortSignal.timeout(ms);
}

/**
 * Runs one call, its failure as a KubeApiError. With `signal`, a call the library cannot abort
 * is given up (with status 0) when the signal aborts.
 */
async function call<T>(fn: () => Promise<T>, what: string, signal?: AbortSignal): Promise<T> {
  try {
    if (signal === undefined) return await fn();
    signal.throwIfAborted();
    return await Promise.race([
      fn(),
      new Promise<never>((_, reject) =>
        signal.addEventListener('abort', () => reject(signal.reason as Error), { once: true }),
      ),
    ]);
  } catch (err) {
    throw toKubeError(err, what);
  }
}

/**
 * Any failure as a KubeApiError: an API Status (status code, reason, message), or status 0 for
 * a failure with no response (refused, reset, timed out, aborted). The one translation of the
 * library's exceptions.
 */
function toKubeError(err: unknown, what: string): KubeApiError {
  if (err instanceof KubeApiError) return err;
  if (err instanceof ApiException) return statusError(err.code, err.body as unknown, what, err);
  const statusCode = (err as { statusCode?: unknown }).statusCode;
  if (typeof statusCode === 'number') {
    return new KubeApiError(statusCode, 'Watch', `${what}: HTTP ${statusCode}`, { cause: err });
  }
  const e = err as { name?: string; code?: string; message?: string };
  const detail =
    e.name === 'AbortError' || e.name === 'TimeoutError'
      ? 'timed out or aborted'
      : (e.code ?? e.message ?? String(err));
  return new KubeApiError(0, 'Unavailable', `${what}: ${detail}`, { cause: err });
}

function statusError(code: number, body: unknown, what: string, cause?: unknown): KubeApiError {
  let parsed: unknown = body;
  if (typeof body === 'string') {
    try {
      parsed = JSON.parse(body);
    } catch {
      parsed = undefined;
    }
  }
  const status = (parsed ?? {}) as { reason?: unknown; message?: unknown };
  const reason = typeof status.reason === 'string' ? status.reason : `HTTP${code}`;
  const message = typeof status.message === 'string' ? status.message : `HTTP ${code}`;
  return new KubeApiError(code, reason, `${what}: ${message}`, { cause });
}

function toWatchEvent(
  kind: WatchKind,
  type: string,
  obj: unknown,
  what: string,
  version?: string,
): WatchStreamEvent<KubeResource> | KubeApiError | undefined {
  switch (type) {
    case 'ADDED':
    case 'MODIFIED':
    case 'DELETED': {
      const object = { ...plain(obj), apiVersion: apiVersionOf(kind, version), kind };
      return { type, object, resourceVersion: object.metadata.resourceVersion ?? '' };
    }
    case 'BOOKMARK':
      return {
        type,
        resourceVersion:
          (obj as { metadata?: { resourceVersion?: string } }).metadata?.resourceVersion ?? '',
      };
    case 'ERROR': {
      const s = obj as { code?: number; reason?: string; message?: string };
      if (s.code === 410) return { type: 'GONE' };
      return new KubeApiError(
        s.code ?? 500,
        s.reason ?? 'WatchError',
        `${what}: ${s.message ?? 'error event'}`,
      );
    }
    default:
      return undefined;
  }
}

/** A library object as plain JSON (its typed models carry Dates and class instances). */
function plain(o: unknown): KubeResource {
  return JSON.parse(JSON.stringify(o)) as KubeResource;
}
