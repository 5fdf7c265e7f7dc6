/**
 * What the webhooks read through the Kubernetes API (core's client): a namespace's annotations
 * (the AdmissionReview of a Pod does not carry them), by a single GET with a short cache, so a
 * burst of pod creations in one namespace costs one request. Failures are core's KubeApiError,
 * naming the object ("get Namespace /emojivoto: ..."). No Secret: the trust guard learns the live
 * issuer from the chain the CA serves.
 */
import type { Clock, KubeClient } from '../core/index.js';

/** The webhooks' narrow view of the API. */
export interface WebhookKube {
  /** A namespace's annotations; undefined when the namespace does not exist. */
  namespaceAnnotations(name: string): Promise<Record<string, string> | undefined>;
}

/** How long a namespace's annotations are reused. */
const NAMESPACE_CACHE_MS = 5_000;

/**
 * The webhooks' API access over core's Kubernetes client.
 *
 * @example
 * ```ts
 * const kube = webhookKube(await openKubeconfig('in-cluster', process.env), systemClock);
 * await kube.namespaceAnnotations('emojivoto'); // { 'meshid.io/inject': 'enabled' }
 * ```
 */
export function webhookKube(kube: Pick<KubeClient, 'get'>, clock: Clock): WebhookKube {
  const cache = new Map<string, { at: number; value: Record<string, string> | undefined }>();
  return {
    async namespaceAnnotations(name) {
      const hit = cache.get(name);
      if (hit !== undefined && clock.now() - hit.at < NAMESPACE_CACHE_MS) return hit.value;
      const ns = await kube.get('v1', 'Namespace', '', name);
      const value = ns === undefined ? undefined : (ns.metadata.annotations ?? {});
      if (cache.size > 1000) cache.clear();
      cache.set(name, { at: clock.now(), value });
      return value;
    },
  };
}
