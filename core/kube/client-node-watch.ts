/**
 * The client adapter's side of the list + watch loop (core/kube/watch-list.ts): one list of a
 * collection and one watch stream of it, in `@kubernetes/client-node`'s shapes, their events and
 * failures in core's.
 */
import { Watch } from '@kubernetes/client-node';
import type { KubeConfig } from '@kubernetes/client-node';
import type { KubeResource, KubeWatchListOptions, WatchKind } from './api.js';
import { KubeApiError } from './api.js';
import { call, plain, toKubeError } from './client-node-call.js';
import type { WatchStreamEvent } from './watch-list.js';

const PLURAL: Readonly<Record<WatchKind, string>> = {
  Namespace: 'namespaces',
  ConfigMap: 'configmaps',
  Secret: 'secrets',
  Pod: 'pods',
  Service: 'services',
  EndpointSlice: 'endpointslices',
  PodCertificateRequest: 'podcertificaterequests',
  Lease: 'leases',
};

/** The apiVersion of each kind (core/v1 unless listed). */
const API_VERSION: Readonly<Partial<Record<WatchKind, string>>> = {
  EndpointSlice: 'discovery.k8s.io/v1',
  PodCertificateRequest: 'certificates.k8s.io/v1beta1',
  Lease: 'coordination.k8s.io/v1',
};
/** The apiVersion followed: the option's, for a kind served in several versions. */
export const apiVersionOf = (kind: WatchKind, version?: string): string =>
  version ?? API_VERSION[kind] ?? 'v1';
/** The URL prefix of a kind's API group version. */
const apiPrefix = (kind: WatchKind, version?: string): string => {
  const v = apiVersionOf(kind, version);
  return v === 'v1' ? '/api/v1' : `/apis/${v}`;
};

/** Opens one watch of a collection from `resourceVersion`; resolves with its stop. */
type OpenWatch = (
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
