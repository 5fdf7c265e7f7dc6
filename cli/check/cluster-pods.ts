/**
 * The workloads' checks of `meshid check --kubeconfig`, from every pod: injected pods carry the
 * current bundle's fingerprint, their namespaces hold the anchors ConfigMap, transparent pods have
 * the destination service, and a sample of their proxies is asked for its certificate.
 */
import type { CheckConfig, ParsedCertificate } from '../../core/index.js';
import { bundleFingerprint } from '../../core/index.js';
import { CLUSTER_NAMES } from './cluster-api.js';
import type { Cluster, DataObject, Deployment, Pod, Read } from './cluster-api.js';
import type { Progress } from './local.js';
import type { CheckId, CheckResult } from './model.js';
import { result } from './model.js';
import { checkKeyExchange } from './key-exchange.js';
import { checkProxies, mapLimit } from './probes.js';
import { checkDestinationReady, checkTransparentPods, transparentPods } from './transparent.js';

/** What the workload checks compare the pods with. */
interface WorkloadInputs {
  /** The control plane's anchors, parsed; the fingerprint of their text ('' when unreadable). */
  readonly anchors: readonly ParsedCertificate[];
  readonly fingerprint: string;
  readonly anchorsReadable: boolean;
  readonly destination: Read<Deployment>;
}

/** Every workload check, from one list of every pod. */
export async function checkWorkloads(
  api: Cluster,
  config: CheckConfig,
  w: WorkloadInputs,
  now: number,
  progress: Progress,
): Promise<CheckResult[]> {
  const listed = await api.call('list pods', (signal) =>
    api.kube.list('v1', 'Pod', undefined, undefined, undefined, signal),
  );
  if (listed instanceof Error) {
    const r = (id: CheckId): CheckResult =>
      result(
        id,
        'error',
        `cannot list pods: ${listed.message}`,
        'give the checking user "list pods" in every namespace',
      );
    return [
      r('proxies-trust-root'),
      r('anchors-namespaces'),
      r('proxies-transparent'),
      r('destination-ready'),
      r('proxies-certificates'),
      r('proxies-key-exchange'),
    ];
  }
  const pods = listed as Pod[];
  const injected = pods.filter((p) => {
    const ann = p.metadata?.annotations ?? {};
    return CLUSTER_NAMES.proxyVersionAnnotation in ann || CLUSTER_NAMES.trustRootAnnotation in ann;
  });
  const results = [
    checkTrustRootAnnotations(injected, w.fingerprint),
    await checkNamespaceAnchors(
      api,
      config,
      injected,
      w.anchorsReadable ? w.fingerprint : undefined,
    ),
  ];
  const sorted = transparentPods(pods, config.namespace);
  results.push(
    checkTransparentPods(sorted),
    checkDestinationReady(w.destination, sorted.transparent.length, config.namespace),
  );
  const running = injected.filter(
    (p) => p.status?.phase === 'Running' && typeof p.status.podIP === 'string',
  );
  const sample = spread(running, config.proxySample);
  progress(`asking ${sample.length} of ${injected.length} injected pods' proxies`);
  const targets = sample.map((p) => ({
    name: `${p.metadata?.namespace}/${p.metadata?.name}`,
    admin: { host: p.status!.podIP!, port: config.proxyAdminPort },
  }));
  results.push(
    ...(await Promise.all([
      checkProxies({
        targets,
        total: injected.length,
        anchors: w.anchors,
        anchorsSource: `ConfigMap ${config.namespace}/${config.trustAnchorsConfigMap} key ${config.trustAnchorsKey}`,
        bundleFingerprint: w.fingerprint,
        now,
        timeoutMs: config.timeout,
        concurrency: config.concurrency,
      }),
      checkKeyExchange({
        targets,
        total: injected.length,
        required: config.tlsGroups === 'hybrid-required',
        timeoutMs: config.timeout,
        concurrency: config.concurrency,
      }),
    ])),
  );
  return results;
}

function checkTrustRootAnnotations(injected: readonly Pod[], fingerprint: string): CheckResult {
  if (injected.length === 0) return result('proxies-trust-root', 'ok', 'no injected pods');
  const stale = injected.filter(
    (p) => p.metadata?.annotations?.[CLUSTER_NAMES.trustRootAnnotation] !== fingerprint,
  );
  if (stale.length === 0) {
    return result(
      'proxies-trust-root',
      'ok',
      `all ${injected.length} injected pods were injected with the current bundle`,
    );
  }
  const names = stale
    .slice(0, 5)
    .map((p) => `${p.metadata?.namespace}/${p.metadata?.name}`)
    .join(', ');
  return result(
    'proxies-trust-root',
    'warn',
    `${stale.length} of ${injected.length} injected pods were injected with another trust bundle: ${names}${stale.length > 5 ? ` and ${stale.length - 5} more` : ''}`,
    'restart those workloads ("kubectl rollout restart") once the rotation allows it, so they are injected with the current bundle',
  );
}

/**
 * Injected pods mount the anchors ConfigMap of their own namespace (a pod cannot mount another
 * namespace's), so every namespace with injected pods needs a copy; without one its pods stay in
 * ContainerCreating. A copy with other anchors than the control plane's is a warning (in a
 * rotation the copies lag the original for a moment).
 */
async function checkNamespaceAnchors(
  api: Cluster,
  config: CheckConfig,
  injected: readonly Pod[],
  /** The fingerprint of the control plane's anchors text; undefined when it cannot be read. */
  current: string | undefined,
): Promise<CheckResult> {
  const name = config.trustAnchorsConfigMap;
  const namespaces = [
    ...new Set(
      injected.map((p) => p.metadata?.namespace ?? 'default').filter((n) => n !== config.namespace),
    ),
  ].sort();
  if (namespaces.length === 0)
    return result('anchors-namespaces', 'ok', 'no injected pods outside the control plane');
  const copies = await mapLimit(namespaces, config.concurrency, async (namespace) => ({
    namespace,
    cm: await api.read<DataObject>('v1', 'ConfigMap', namespace, name),
  }));
  const unreadable = copies.find((c) => c.cm instanceof Error);
  const missing = copies.filter((c) => c.cm === undefined).map((c) => c.namespace);
  const list = (ns: readonly string[]): string =>
    `${ns.slice(0, 5).join(', ')}${ns.length > 5 ? ` and ${ns.length - 5} more` : ''}`;
  const copyFix = `meshid trust sync copies it into namespaces annotated meshid.io/inject=enabled or holding pods labelled linkerd.io/control-plane-ns=${config.namespace}: check that it runs, or annotate those namespaces; or copy it by hand ("kubectl -n ${config.namespace} get configmap ${name} -o jsonpath='{.data.${config.trustAnchorsKey.replace(/\./g, '\\.')}}'", then "kubectl -n NS create configmap ${name} --from-file=${config.trustAnchorsKey}=FILE"); with trust-manager, make its Bundle target those namespaces (docs/install.md)`;
  if (missing.length > 0) {
    return result(
      'anchors-namespaces',
      'error',
      `${missing.length} of ${namespaces.length} namespaces with injected pods have no ConfigMap ${name}, so their pods cannot start: ${list(missing)}`,
      copyFix,
    );
  }
  if (unreadable !== undefined) {
    return result(
      'anchors-namespaces',
      'warn',
      `cannot read the anchors ConfigMap of namespace ${unreadable.namespace}: ${(unreadable.cm as Error).message}`,
      `give the checking user "get configmaps" in the namespaces of injected pods`,
    );
  }
  const stale = copies
    .filter((c) => {
      const text = (c.cm as DataObject).data?.[config.trustAnchorsKey];
      return text === undefined || (current !== undefined && bundleFingerprint(text) !== current);
    })
    .map((c) => c.namespace);
  if (stale.length > 0) {
    return result(
      'anchors-namespaces',
      'warn',
      `${stale.length} of ${namespaces.length} namespaces hold other anchors in ConfigMap ${name} than ${config.namespace}/${name}: ${list(stale)}`,
      `update those copies from ${config.namespace}/${name} (a trust-manager Bundle keeps them in step)`,
    );
  }
  return result(
    'anchors-namespaces',
    'ok',
    `all ${namespaces.length} namespaces with injected pods hold ConfigMap ${name} with the current anchors`,
  );
}

/** At most `n` items spread evenly over the list (all when n is 0 or the list is short). */
function spread<T>(items: readonly T[], n: number): T[] {
  if (n === 0 || items.length <= n) return [...items];
  const step = items.length / n;
  return Array.from({ length: n }, (_, k) => items[Math.floor(k * step)]!);
}
