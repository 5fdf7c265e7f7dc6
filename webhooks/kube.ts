/**
 * What the webhooks read through the Kubernetes API (core's client): a namespace's annotations
 * (the AdmissionReview of a Pod does not carry them) and the issuer Secret's certificates (to
 * know which anchor must stay). Both are single GETs with a short cache, so a burst of pod
 * creations in one namespace costs one request. Failures are core's KubeApiError, naming the
 * object ("get Namespace /emojivoto: ...").
 */
import type { Clock, KubeClient } from '../core/index.js';

/** The webhooks' narrow view of the API. */
export interface WebhookKube {
  /** A namespace's annotations; undefined when the namespace does not exist. */
  namespaceAnnotations(name: string): Promise<Record<string, string> | undefined>;
  /** `tls.crt` then `ca.crt` of a Secret, as PEM; undefined when the Secret does not exist. */
  secretCertificates(namespace: string, name: string): Promise<string | undefined>;
}

/** How long a namespace's annotations are reused. */
const NAMESPACE_CACHE_MS = 5_000;

/**
 * The webhooks' API access over core's Kubernetes client.
 *
 * @example
 * ```ts
 * const kube = webhookKube(await openKubeClient(loadKubeConfig('in-cluster', process.env)), systemClock);
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
    async secretCertificates(namespace, name) {
      const secret = await kube.get('v1', 'Secret', namespace, name);
      if (secret === undefined) return undefined;
      const data = (secret['data'] ?? {}) as Record<string, string>;
      // Only the certificates are decoded; tls.key is left as it came and goes with the object.
      const text = (k: string): string =>
        data[k] === undefined ? '' : Buffer.from(data[k], 'base64').toString('utf8');
      return `${text('tls.crt')}\n${text('ca.crt')}`;
    },
  };
}
