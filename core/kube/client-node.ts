/**
 * The {@link KubeClient} over `@kubernetes/client-node`: the one place that knows the client
 * library's shapes (with `config.ts`, which loads a KubeConfig). Every failure becomes a
 * {@link KubeApiError}, translated here once from the library's `ApiException`, a watch's HTTP
 * error or a failed connection. Loaded on first use (see {@link openKubeClient} in core's index)
 * so that commands which never talk to the API do not load the library.
 */
import { createHash } from 'node:crypto';
import type * as https from 'node:https';
import { CustomObjectsApi, KubernetesObjectApi } from '@kubernetes/client-node';
import type { KubeConfig, KubernetesObject } from '@kubernetes/client-node';
import type { KubeClient, KubeResource } from './api.js';
import { call, isNotFound, plain, timeout, toKubeError } from './client-node-call.js';
import { reviewsAndEvents } from './client-node-reviews.js';
import { apiVersionOf, watchOpener } from './client-node-watch.js';
import { watchList } from './watch-list.js';

/**
 * Wraps a loaded KubeConfig as a {@link KubeClient}.
 */
export function clientNodeKubeClient(kc: KubeConfig): KubeClient {
  reuseConnections(kc);
  const server = kc.getCurrentCluster()?.server ?? '(no cluster)';
  const objects = KubernetesObjectApi.makeApiClient(kc);
  const aborts = new Set<() => void>();
  const openWatch = watchOpener(kc, aborts);
  return {
    server,
    ...objectCalls(kc, objects),

    watchList(o) {
      return watchList<KubeResource>({
        signal: o.signal,
        ...(o.backoffMs === undefined ? {} : { backoff: o.backoffMs }),
        onEvent: o.onEvent,
        ...(o.onRetry === undefined
          ? {}
          : { onRetry: (err, ms) => o.onRetry?.(toKubeError(err, `watch ${o.kind}`), ms) }),
        list: (signal) =>
          listAll(
            objects,
            { ...o, apiVersion: apiVersionOf(o.kind, o.apiVersion) },
            AbortSignal.any([signal, timeout(o.listTimeoutMs ?? 30_000)]),
          ),
        watch: (version, onEvent, onEnd) => openWatch(o, version, onEvent, onEnd),
      });
    },

    ...reviewsAndEvents(kc),

    connection: () => connection(kc, server),

    close() {
      for (const abort of [...aborts]) abort();
    },
  };
}

/**
 * One connection pool per set of TLS settings instead of one per call. The library (2.x) builds a
 * new undici Agent for every request (`applySecurityAuthentication` calls `createDispatcher`
 * each time), so no connection is ever reused: every API call pays a TCP connect, a TLS
 * handshake and a new SecureContext on both ends. The Agent is kept per hash of its options (the
 * CA, client certificate and key, server name), so a rotated client certificate gets a new one.
 * The key material stays where it was: only its SHA-256 is a map key.
 */
function reuseConnections(kc: KubeConfig): void {
  const target = kc as unknown as {
    createDispatcher?: (cluster: unknown, agentOptions: unknown) => unknown;
  };
  const make = target.createDispatcher?.bind(kc);
  if (make === undefined) return;
  const pools = new Map<string, unknown>();
  target.createDispatcher = (cluster, agentOptions) => {
    const options = kc.createDispatcherOptions(
      cluster as Parameters<KubeConfig['createDispatcherOptions']>[0],
      agentOptions as Parameters<KubeConfig['createDispatcherOptions']>[1],
    );
    if (options.type === 'none') return make(cluster, agentOptions);
    const key = createHash('sha256').update(JSON.stringify(options)).digest('hex');
    let pool = pools.get(key);
    if (pool === undefined) {
      pool = make(cluster, agentOptions);
      pools.set(key, pool);
    }
    return pool;
  };
}

/** Reads and writes of any kind, through the library's generic object API. */
function objectCalls(
  kc: KubeConfig,
  objects: KubernetesObjectApi,
): Pick<KubeClient, 'get' | 'list' | 'create' | 'replace' | 'delete' | 'replaceStatus'> {
  const custom = kc.makeApiClient(CustomObjectsApi);
  const ref = (apiVersion: string, kind: string, namespace: string, name: string) => ({
    apiVersion,
    kind,
    metadata: { name, ...(namespace === '' ? {} : { namespace }) },
  });
  return {
    async get(apiVersion, kind, namespace, name) {
      try {
        return plain(await objects.read(ref(apiVersion, kind, namespace, name)));
      } catch (err) {
        if (isNotFound(err)) return undefined;
        throw toKubeError(err, `get ${kind} ${namespace === '' ? '' : `${namespace}/`}${name}`);
      }
    },

    list: async (apiVersion, kind, namespace, labelSelector, fieldSelector, signal) =>
      (
        await listAll(
          objects,
          { apiVersion, kind, namespace, labelSelector, fieldSelector },
          signal,
        )
      ).items,

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
        if (isNotFound(err)) return;
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
  };
}

/** Items per page of a list, as kubectl asks for them. */
const PAGE = 500;

/**
 * A whole collection, page by page, as plain JSON, with the resourceVersion to watch it from (the
 * first page's: the list's snapshot, or older, from which a watch replays what followed).
 */
async function listAll(
  objects: KubernetesObjectApi,
  q: {
    readonly apiVersion: string;
    readonly kind: string;
    readonly namespace?: string | undefined;
    readonly labelSelector?: string | undefined;
    readonly fieldSelector?: string | undefined;
  },
  signal: AbortSignal | undefined,
): Promise<{ items: KubeResource[]; resourceVersion: string }> {
  const items: KubeResource[] = [];
  let resourceVersion: string | undefined;
  let cont: string | undefined;
  do {
    const page = await call(
      () =>
        objects.list(
          q.apiVersion,
          q.kind,
          q.namespace,
          undefined,
          undefined,
          undefined,
          q.fieldSelector,
          q.labelSelector,
          PAGE,
          cont,
        ),
      `list ${q.kind}${q.namespace === undefined ? '' : ` in ${q.namespace}`}`,
      signal,
    );
    for (const i of page.items) items.push({ ...plain(i), apiVersion: q.apiVersion, kind: q.kind });
    resourceVersion ??= page.metadata?.resourceVersion ?? '';
    cont = page.metadata?._continue || undefined;
  } while (cont !== undefined);
  return { items, resourceVersion: resourceVersion ?? '' };
}

/** Where and how to reach the API server, for callers that speak HTTP themselves (jose). */
async function connection(kc: KubeConfig, server: string): ReturnType<KubeClient['connection']> {
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
}
