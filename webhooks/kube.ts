/**
 * What the webhooks read through the Kubernetes API, over `@kubernetes/client-node`: a
 * namespace's annotations (the AdmissionReview of a Pod does not carry them) and the issuer
 * Secret's certificates (to know which anchor must stay). Both are single GETs with a short
 * cache, so a burst of pod creations in one namespace costs one request.
 */
import { ApiException, CoreV1Api } from '@kubernetes/client-node';
import type { KubeConfig } from '@kubernetes/client-node';
import type { Clock } from '../core/index.js';

/** The webhooks' narrow view of the API. */
export interface WebhookKube {
  /** A namespace's annotations; undefined when the namespace does not exist. */
  namespaceAnnotations(name: string): Promise<Record<string, string> | undefined>;
  /** `tls.crt` then `ca.crt` of a Secret, as PEM; undefined when the Secret does not exist. */
  secretCertificates(namespace: string, name: string): Promise<string | undefined>;
}

/** How long a namespace's annotations are reused. */
const NAMESPACE_CACHE_MS = 5_000;

function describe(err: unknown, what: string): Error {
  if (err instanceof ApiException) {
    let message = '';
    try {
      message = (JSON.parse(String(err.body)) as { message?: string }).message ?? '';
    } catch {
      // not a Status body
    }
    return new Error(
      `cannot read ${what}: HTTP ${err.code}${message === '' ? '' : `: ${message}`}`,
      {
        cause: err,
      },
    );
  }
  return new Error(`cannot read ${what}: ${(err as Error).message}`, { cause: err });
}

/**
 * The webhooks' API access on a loaded KubeConfig.
 *
 * @example
 * ```ts
 * const kube = clientNodeWebhookKube(loadKubeConfig('in-cluster', process.env), systemClock);
 * await kube.namespaceAnnotations('emojivoto'); // { 'meshid.io/inject': 'enabled' }
 * ```
 */
export function clientNodeWebhookKube(kc: KubeConfig, clock: Clock): WebhookKube {
  const core = kc.makeApiClient(CoreV1Api);
  const cache = new Map<string, { at: number; value: Record<string, string> | undefined }>();
  return {
    async namespaceAnnotations(name) {
      const hit = cache.get(name);
      if (hit !== undefined && clock.now() - hit.at < NAMESPACE_CACHE_MS) return hit.value;
      let value: Record<string, string> | undefined;
      try {
        value = (await core.readNamespace({ name })).metadata?.annotations ?? {};
      } catch (err) {
        if (!(err instanceof ApiException && err.code === 404))
          throw describe(err, `namespace ${name}`);
        value = undefined;
      }
      if (cache.size > 1000) cache.clear();
      cache.set(name, { at: clock.now(), value });
      return value;
    },
    async secretCertificates(namespace, name) {
      let data: Record<string, string>;
      try {
        data = (await core.readNamespacedSecret({ namespace, name })).data ?? {};
      } catch (err) {
        if (err instanceof ApiException && err.code === 404) return undefined;
        throw describe(err, `Secret ${namespace}/${name}`);
      }
      // Only the certificates are decoded; tls.key is left as it came and goes with the object.
      const text = (k: string): string =>
        data[k] === undefined ? '' : Buffer.from(data[k], 'base64').toString('utf8');
      return `${text('tls.crt')}\n${text('ca.crt')}`;
    },
  };
}
