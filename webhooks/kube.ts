/**
 * What the webhooks read through the Kubernetes API, over `@kubernetes/client-node`: a
 * namespace's annotations (the AdmissionReview of a Pod does not carry them), by a single GET
 * with a short cache, so a burst of pod creations in one namespace costs one request. No Secret:
 * the trust guard learns the live issuer from the chain the CA serves.
 */
import { ApiException, CoreV1Api } from '@kubernetes/client-node';
import type { KubeConfig } from '@kubernetes/client-node';
import type { Clock } from '../core/index.js';

/** The webhooks' narrow view of the API. */
export interface WebhookKube {
  /** A namespace's annotations; undefined when the namespace does not exist. */
  namespaceAnnotations(name: string): Promise<Record<string, string> | undefined>;
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
  };
}
