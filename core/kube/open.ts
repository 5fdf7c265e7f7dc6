/**
 * Opens the {@link KubeClient}, loading `@kubernetes/client-node` on first use: core's index
 * publishes this without loading the library, so commands that never talk to the API (the proxy,
 * `meshid install`) do not pay for it.
 */
import type { KubeConfig } from '@kubernetes/client-node';
import type { KubeClient } from './api.js';

/**
 * The Kubernetes client over a loaded KubeConfig (see `core/kube/config.ts`).
 *
 * @example
 * ```ts
 * const { loadKubeConfig } = await import('../core/kube/config.js');
 * const kube = await openKubeClient(loadKubeConfig(config.kubeconfig, process.env));
 * ```
 */
export async function openKubeClient(kc: KubeConfig): Promise<KubeClient> {
  return (await import('./client-node.js')).clientNodeKubeClient(kc);
}
