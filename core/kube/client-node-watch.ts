/**
 * The client adapter's side of the list + watch loop (core/kube/watch-list.ts): one list of a
 * collection and one watch stream of it, in `@kubernetes/client-node`'s shapes, their events and
 * failures in core's.
 */
import { Watch } from '@kubernetes/client-node';
import type { CoreV1Api, DiscoveryV1Api, KubeConfig } from '@kubernetes/client-node';
import type { KubeResource, KubeWatchListOptions, WatchKind } from './api.js';
import { KubeApiError } from './api.js';
import { call, plain, toKubeError, withSignal } from './client-node-call.js';
import type { WatchStreamEvent } from './watch-list.js';

const PLURAL: Readonly<Record<WatchKind, string>> = {
  Namespace: 'namespaces',
  ConfigMap: 'configmaps',
  Secret: 'secrets',
  Pod: 'pods',
  Service: 'services',
  EndpointSlice: 'endpointslices',
};

/** The apiVersion of each kind (core/v1 unless listed). */
const API_VERSION: Readonly<Partial<Record<WatchKind, string>>> = {
  EndpointSlice: 'discovery.k8s.io/v1',
};
const apiVersionOf = (kind: WatchKind): string => API_VERSION[kind] ?? 'v1';
/** The URL prefix of a kind's API group version. */
const apiPrefix = (kind: WatchKind): string => {
  const v = apiVersionOf(kind);
  return v === 'v1' ? '/api/v1' : `/apis/${v}`;
};

/** Opens one watch of a collection from `resourceVersion`; resolves with its stop. */
export type OpenWatch = (
  o: KubeWatchListOptions,
  resourceVersion: string,
  onEvent: (e: WatchStreamEvent<KubeResource>) => void,
  onEnd: (err: Error | undefined) => void,
) => Promise<() => void>;

/** Watches through the library's `Watch`; `aborts` holds the open watches' stops, for close(). */
export function watchOpener(kc: KubeConfig, aborts: Set<() => void>): OpenWatch {
  const watcher = new Watch(kc);
  return async (
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
            ? `${apiPrefix(o.kind)}/${plural}`
            : `${apiPrefix(o.kind)}/namespaces/${encodeURIComponent(o.namespace)}/${plural}`,
          {
            allowWatchBookmarks: true,
            resourceVersion,
            ...(o.fieldSelector === undefined ? {} : { fieldSelector: o.fieldSelector }),
            ...(o.labelSelector === undefined ? {} : { labelSelector: o.labelSelector }),
          },
          (type: string, obj: unknown) => {
            if (ended) return;
            const event = toWatchEvent(o.kind, type, obj, what);
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
}

/** One list of a core/v1 collection, bounded by `signal`, as plain JSON. */
export async function listCollection(
  core: CoreV1Api,
  discovery: DiscoveryV1Api,
  o: KubeWatchListOptions,
  signal: AbortSignal,
): Promise<{ items: KubeResource[]; resourceVersion: string }> {
  const q = {
    ...(o.fieldSelector === undefined ? {} : { fieldSelector: o.fieldSelector }),
    ...(o.labelSelector === undefined ? {} : { labelSelector: o.labelSelector }),
  };
  const opts = withSignal(signal);
  const ns = o.namespace;
  const what = `list ${PLURAL[o.kind]}${ns === undefined ? '' : ` in ${ns}`}`;
  const listed = await call(async (): Promise<{ items: unknown[]; metadata?: unknown }> => {
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
    }
  }, what);
  return {
    items: listed.items.map((i) => ({
      ...plain(i),
      apiVersion: apiVersionOf(o.kind),
      kind: o.kind,
    })),
    resourceVersion:
      (listed.metadata as { resourceVersion?: string } | undefined)?.resourceVersion ?? '',
  };
}

function toWatchEvent(
  kind: WatchKind,
  type: string,
  obj: unknown,
  what: string,
): WatchStreamEvent<KubeResource> | KubeApiError | undefined {
  switch (type) {
    case 'ADDED':
    case 'MODIFIED':
    case 'DELETED': {
      const object = { ...plain(obj), apiVersion: apiVersionOf(kind), kind };
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
