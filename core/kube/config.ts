/**
 * The Kubernetes client factory: a KubeConfig from a kubeconfig file, or from the pod's service
 * account inside a cluster. Part of the client adapter (with `client-node.ts`); not exported from
 * core's index, so that commands which never talk to the API (the proxy) do not load the client
 * library: cli loads it on demand.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { MeshidError } from '../errors.js';

/** The `kubeconfig` value that means "the pod's own service account". */
const IN_CLUSTER_KUBECONFIG = 'in-cluster';

/**
 * Loads a KubeConfig. `env` is passed in (library code never reads process.env): in a cluster,
 * `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT` locate the API server.
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

/** The kubeconfig a command uses and how it was found, for saying which cluster it talks to. */
interface FoundKubeconfig {
  readonly kc: KubeConfig;
  /** `--kubeconfig FILE`, `KUBECONFIG=A:B`, `~/.kube/config (FILE)` or `in-cluster`. */
  readonly source: string;
  /** The context in use (`in-cluster` for the pod's service account). */
  readonly context: string;
  /** The API server's URL. */
  readonly server: string;
}

/**
 * Finds the kubeconfig as kubectl does: `--kubeconfig` (a file, or `in-cluster`) when given; else
 * the files of `KUBECONFIG` (a colon-separated list; missing files are skipped; the first file
 * to name a cluster, user or context wins, and the first `current-context` set wins); else
 * `$HOME/.kube/config` when it exists; else none (`undefined`). `context` picks a context by name,
 * as `kubectl --context`, instead of the current-context.
 *
 * @throws MeshidError ERR_CONFIG_INVALID naming the file (or `KUBECONFIG`) and what is wrong: not
 *   loadable, no such context (with the ones there are), no current context.
 */
export function findKubeconfig(opts: {
  readonly kubeconfig?: string | undefined;
  readonly context?: string | undefined;
  readonly env: Readonly<Record<string, string | undefined>>;
}): FoundKubeconfig | undefined {
  const { env } = opts;
  let kc: KubeConfig;
  let source: string;
  if (opts.kubeconfig === IN_CLUSTER_KUBECONFIG) {
    if (opts.context !== undefined)
      throw new MeshidError(
        'ERR_CONFIG_INVALID',
        `--context ${opts.context}: a context needs a kubeconfig file, not --kubeconfig in-cluster`,
      );
    kc = loadKubeConfig(IN_CLUSTER_KUBECONFIG, env);
    return {
      kc,
      source: IN_CLUSTER_KUBECONFIG,
      context: IN_CLUSTER_KUBECONFIG,
      server: kc.getCurrentCluster()?.server ?? '',
    };
  }
  if (opts.kubeconfig !== undefined) {
    kc = readKubeconfigFile(opts.kubeconfig, `--kubeconfig ${opts.kubeconfig}`);
    source = `--kubeconfig ${opts.kubeconfig}`;
  } else if ((env['KUBECONFIG'] ?? '') !== '') {
    const files = env['KUBECONFIG']!.split(':').filter((f) => f !== '');
    const present = files.filter((f) => existsSync(f));
    if (present.length === 0)
      throw new MeshidError(
        'ERR_CONFIG_INVALID',
        `KUBECONFIG=${env['KUBECONFIG']}: none of its files exists; fix KUBECONFIG, or unset it to use ~/.kube/config`,
      );
    kc = mergeKubeconfigs(present.map((f) => readKubeconfigFile(f, `KUBECONFIG file ${f}`)));
    source = `KUBECONFIG=${env['KUBECONFIG']}`;
  } else {
    const home = env['HOME'];
    const file = home === undefined || home === '' ? undefined : join(home, '.kube', 'config');
    if (file === undefined || !existsSync(file)) return undefined;
    kc = readKubeconfigFile(file, file);
    source = `~/.kube/config (${file})`;
  }
  if (opts.context !== undefined) {
    const names = kc.getContexts().map((c) => c.name);
    if (!names.includes(opts.context))
      throw new MeshidError(
        'ERR_CONFIG_INVALID',
        `--context ${opts.context}: no such context in ${source} (its contexts: ${names.join(', ') || 'none'})`,
      );
    kc.setCurrentContext(opts.context);
  }
  const cluster = kc.getCurrentCluster();
  if (cluster === null)
    throw new MeshidError(
      'ERR_CONFIG_INVALID',
      `${source}: no current context with a cluster (current-context "${kc.getCurrentContext()}"); pass --context NAME or run kubectl config use-context NAME`,
    );
  return { kc, source, context: kc.getCurrentContext(), server: cluster.server };
}

function readKubeconfigFile(file: string, what: string): KubeConfig {
  const kc = new KubeConfig();
  try {
    kc.loadFromFile(file);
  } catch (err) {
    throw new MeshidError(
      'ERR_CONFIG_INVALID',
      `${what} cannot be loaded: ${err instanceof Error ? err.message : String(err)}`,
      { cause: err },
    );
  }
  return kc;
}

/** kubectl's merge of a KUBECONFIG list: the first file to set a name or current-context wins. */
function mergeKubeconfigs(configs: readonly KubeConfig[]): KubeConfig {
  const first = <T extends { name: string }>(lists: readonly (readonly T[])[]): T[] => {
    const seen = new Map<string, T>();
    for (const list of lists)
      for (const item of list) if (!seen.has(item.name)) seen.set(item.name, item);
    return [...seen.values()];
  };
  const merged = new KubeConfig();
  merged.loadFromOptions({
    clusters: first(configs.map((c) => c.getClusters())),
    users: first(configs.map((c) => c.getUsers())),
    contexts: first(configs.map((c) => c.getContexts())),
    currentContext: configs.map((c) => c.getCurrentContext()).find((c) => (c ?? '') !== '') ?? '',
  });
  return merged;
}
