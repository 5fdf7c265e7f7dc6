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
 * const kube = await openKubeClient(found.kc);
 * ```
 */
export async function openKubeClient(kc: KubeConfig): Promise<KubeClient> {
  return (await import('./client-node.js')).clientNodeKubeClient(kc);
}

/**
 * The Kubernetes client of a `--kubeconfig` setting: a file, or `in-cluster` (where `env`'s
 * `KUBERNETES_SERVICE_HOST` and `_PORT` locate the API server).
 *
 * @example
 * ```ts
 * const kube = await openKubeconfig(config.kubeconfig, process.env);
 * ```
 */
export async function openKubeconfig(
  spec: string,
  env: Readonly<Record<string, string | undefined>>,
): Promise<KubeClient> {
  return openKubeClient((await import('./config.js')).loadKubeConfig(spec, env));
}
