/**
 * The Kubernetes client factory: a KubeConfig from a kubeconfig file, or from the pod's service
 * account inside a cluster. Part of the client adapter (with `client-node.ts`); not exported from
 * core's index, so that commands which never talk to the API (the proxy) do not load the client
 * library: cli loads it on demand.
 */
import { KubeConfig } from '@kubernetes/client-node';
import { MeshidError } from '../errors.js';

/** The `kubeconfig` value that means "the pod's own service account". */
export const IN_CLUSTER_KUBECONFIG = 'in-cluster';

/**
 * Loads a KubeConfig. `env` is passed in (library code never reads process.env): in a cluster,
 * `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT` locate the API server.
 *
 * @example
 * ```ts
 * const kc = loadKubeConfig('/tmp/kubeconfig.yaml', process.env);
 * const kcInPod = loadKubeConfig('in-cluster', process.env);
 * ```
 */
export function loadKubeConfig(
  spec: string,
  env: Readonly<Record<string, string | undefined>>,
): KubeConfig {
  const kc = new KubeConfig();
  if (spec === IN_CLUSTER_KUBECONFIG) {
    if (
      env['KUBERNETES_SERVICE_HOST'] === undefined ||
      env['KUBERNETES_SERVICE_PORT'] === undefined
    ) {
      throw new MeshidError(
        'ERR_CONFIG_INVALID',
        'kubeconfig "in-cluster": not running in a Kubernetes pod (KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are unset); give --kubeconfig FILE',
      );
    }
    kc.loadFromCluster();
    return kc;
  }
  try {
    kc.loadFromFile(spec);
  } catch (err) {
    throw new MeshidError(
      'ERR_CONFIG_INVALID',
      `kubeconfig ${spec} cannot be loaded: ${err instanceof Error ? err.message : String(err)}`,
      { cause: err },
    );
  }
  if (kc.getCurrentCluster() === null) {
    throw new MeshidError(
      'ERR_CONFIG_INVALID',
      `kubeconfig ${spec} has no current cluster (check current-context)`,
    );
  }
  return kc;
}
