/**
 * Feeds the endpoint index from the Kubernetes API: Services, discovery.k8s.io/v1 EndpointSlices
 * and Pods in every namespace, each through core's one list + watch + resume loop
 * (`KubeClient.watchList`). A list (the first, and every one after a 410) replaces the kind in the
 * index; each watch event is applied as it comes. These three list/watch permissions are all the
 * destination service needs (docs/destination.md, RBAC).
 */
import type { KubeClient, Logger } from '../core/index.js';
import type { EndpointIndex, WatchedKind } from './endpoint-index.js';

/** The slice of the Kubernetes client the destination service uses. */
export type DestinationKube = Pick<KubeClient, 'watchList'>;

/** The kinds followed, in the order their first lists are asked for. */
const WATCHED_KINDS: readonly WatchedKind[] = Object.freeze(['Service', 'EndpointSlice', 'Pod']);

/**
 * Follows the three kinds into `index` until `signal` aborts. Failures are retried by the loop
 * (jittered backoff) and reported to `onRetry`; meanwhile the index keeps what it knew.
 *
 * @example
 * ```ts
 * const stop = new AbortController();
 * void followCluster(kube, index, { signal: stop.signal, logger });
 * ```
 */
export function followCluster(
  kube: DestinationKube,
  index: EndpointIndex,
  o: {
    readonly signal: AbortSignal;
    readonly logger: Logger;
    readonly onRetry?: (kind: WatchedKind, reason: string) => void;
  },
): Promise<void> {
  return Promise.all(
    WATCHED_KINDS.map((kind) =>
      kube.watchList({
        kind,
        signal: o.signal,
        onEvent: (e) => {
          if (e.type === 'SYNC') {
            index.replaceAll(kind, e.items);
            o.logger.debug({ kind, count: e.items.length }, 'listed');
          } else index.apply(kind, e.type, e.object);
        },
        onRetry: (err, delayMs) => {
          o.onRetry?.(kind, err.message);
          o.logger.warn(
            { kind, err: err.message, status: err.status, retryInMs: delayMs },
            'watch failed; the last known endpoints stay in use',
          );
        },
      }),
    ),
  ).then(() => undefined);
}
