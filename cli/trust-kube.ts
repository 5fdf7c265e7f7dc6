/**
 * `meshid trust` against the Kubernetes API (`--kubeconfig`): the rotation controller over the
 * anchors ConfigMap and cert-manager, and the sync controller. Loaded only when a kubeconfig is
 * given, so the local commands never load the Kubernetes client.
 */
import { caIdentityName, kindNotServed, openKubeconfig, parseAddress } from '../core/index.js';
import type { TrustConfig } from '../core/index.js';
import {
  AnchorsCopyController,
  CTB_API_VERSION,
  ClusterTrustBundleController,
  TRUST_BUNDLE_ROLE_LABEL,
  clusterTrustBundleCopiesOf,
  combinedCopies,
  KubeRotationBackend,
  RotationController,
  SELF_SIGNED_ISSUER,
  SyncController,
  adminUrlObserver,
  bundleCopiesOf,
  caPodObserver,
  combinedCaObserver,
  combinedObserver,
  trustKubeApi,
  podObserver,
  tlsCaObserver,
  waitInterval,
} from '../trust-bundle/index.js';
import type {
  BundleCopies,
  CaObserver,
  CopyPassResult,
  KubeTrustSettings,
  ProxyObserver,
  RotationControllerOptions,
  TrustKubeApi,
} from '../trust-bundle/index.js';

/** A rotation controller over the configured backend, and what to release afterwards. */
export interface OpenedRotation {
  readonly controller: RotationController;
  readonly where: string;
  /** The anchors' copies in meshed namespaces the rotation waits for (none with trust-manager). */
  readonly copies?: AnchorsCopyController;
  /** The anchors' ClusterTrustBundles (none when off, or not served in auto mode). */
  readonly clusterTrustBundles?: ClusterTrustBundleController;
  close(): void;
}

/** The controller options the caller decides (clock, timings, holder). */
export type RotationOptions = Omit<RotationControllerOptions, 'backend' | 'observer'>;

/** The labels `meshid install` puts on the CA's pods, and its gRPC port in the pod. */
const CA_POD_SELECTOR = 'app.kubernetes.io/name=meshid,app.kubernetes.io/component=identity';
const CA_GRPC_PORT = 8080;

/**
 * The CA replicas named by `--ca-address`.
 */
export function caAddressObserver(config: TrustConfig): CaObserver {
  return tlsCaObserver(
    config.caAddress.map((a) => parseAddress(a)!),
    caIdentityName(config),
  );
}

/**
 * The trust objects' names from `meshid trust` settings.
 */
export function kubeTrustSettings(config: TrustConfig): KubeTrustSettings {
  return {
    namespace: config.namespace,
    trustDomain: config.trustDomain,
    controlPlaneNamespace: config.controlPlaneNamespace,
    selfSignedIssuer: SELF_SIGNED_ISSUER,
    rootCertificate: config.rootCertificate,
    caIssuer: config.certManagerIssuer,
    issuerSecret: config.issuerSecret,
    issuerCertificate: config.issuerCertificate,
    trustAnchorsConfigMap: config.trustAnchorsConfigMap,
    trustAnchorsKey: config.trustAnchorsKey,
    certLifetime: config.certLifetime,
    labels: { 'app.kubernetes.io/part-of': 'meshid' },
  };
}

async function openApi(config: TrustConfig): Promise<TrustKubeApi> {
  return trustKubeApi(await openKubeconfig(config.kubeconfig!, process.env));
}

function observerOf(config: TrustConfig, api: TrustKubeApi): ProxyObserver {
  const observers = [adminUrlObserver(config.proxyAdmin)];
  if (config.podSelector !== undefined) observers.push(podObserver(api, config.podSelector));
  return combinedObserver(observers);
}

/**
 * The controller of the anchors' copies in meshed namespaces; none with `--trust-manager`, whose
 * Bundle targets are the copies then.
 */
function anchorsCopies(
  config: TrustConfig,
  api: TrustKubeApi,
  options: Pick<RotationOptions, 'logger'>,
): AnchorsCopyController | undefined {
  if (config.trustManager) return undefined;
  return new AnchorsCopyController({
    api,
    settings: {
      namespace: config.namespace,
      trustAnchorsConfigMap: config.trustAnchorsConfigMap,
      trustAnchorsKey: config.trustAnchorsKey,
    },
    logger: options.logger.child({ component: 'anchors-copies' }),
  });
}

/**
 * The controller of the anchors' ClusterTrustBundles; none with `clusterTrustBundles: off`, or in
 * `auto` mode when the API server does not serve certificates.k8s.io/v1beta1 ClusterTrustBundles
 * (beta, off by default before Kubernetes 1.37).
 */
export async function clusterTrustBundles(
  config: TrustConfig,
  api: TrustKubeApi,
  options: Pick<RotationOptions, 'logger' | 'clock'>,
): Promise<ClusterTrustBundleController | undefined> {
  if (config.clusterTrustBundles === 'off') return undefined;
  const logger = options.logger.child({ component: 'cluster-trust-bundles' });
  if (config.clusterTrustBundles === 'auto') {
    const why = await clusterTrustBundlesUnserved(api);
    if (why !== undefined) {
      logger.info(
        { apiVersion: CTB_API_VERSION, reason: why },
        'ClusterTrustBundles are not served by this cluster: not published (set clusterTrustBundles: on to require them)',
      );
      return undefined;
    }
  }
  return new ClusterTrustBundleController({
    api,
    settings: {
      signerName: config.podCertificateSigner,
      namespace: config.namespace,
      trustAnchorsConfigMap: config.trustAnchorsConfigMap,
      trustAnchorsKey: config.trustAnchorsKey,
    },
    logger,
    now: () => options.clock.now(),
  });
}

/** Why the API does not serve ClusterTrustBundles, or undefined when it does. */
async function clusterTrustBundlesUnserved(api: TrustKubeApi): Promise<string | undefined> {
  try {
    await api.list(CTB_API_VERSION, 'ClusterTrustBundle', undefined, TRUST_BUNDLE_ROLE_LABEL);
    return undefined;
  } catch (err) {
    if (!kindNotServed(err) || !(err instanceof Error)) throw err;
    return err.message;
  }
}

/**
 * The rotation controller on the cluster of `--kubeconfig`.
 */
export async function openKubeRotation(
  config: TrustConfig,
  options: RotationOptions,
): Promise<OpenedRotation> {
  const api = await openApi(config);
  const settings = kubeTrustSettings(config);
  const copies = anchorsCopies(config, api, options);
  const ctbs = await clusterTrustBundles(config, api, options);
  const waitedFor: BundleCopies[] = [
    ...(copies === undefined ? [] : [bundleCopiesOf(copies)]),
    ...(ctbs === undefined ? [] : [clusterTrustBundleCopiesOf(ctbs)]),
  ];
  const controller = new RotationController({
    ...options,
    ...(waitedFor.length === 0 ? {} : { copies: combinedCopies(waitedFor) }),
    backend: new KubeRotationBackend(api, settings, options.clock),
    observer: observerOf(config, api),
    // The CA's own pods (as `meshid install` labels them), and any address given.
    caObserver: combinedCaObserver([
      caAddressObserver(config),
      caPodObserver(api, config.namespace, CA_POD_SELECTOR, CA_GRPC_PORT, caIdentityName(config)),
    ]),
  });
  return {
    controller,
    where: `${config.namespace}/${config.trustAnchorsConfigMap}`,
    ...(copies === undefined ? {} : { copies }),
    ...(ctbs === undefined ? {} : { clusterTrustBundles: ctbs }),
    close: () => undefined,
  };
}

/**
 * `meshid trust sync`: keeps the anchors ConfigMap right and drives rotations, every `interval`
 * until stopped (or once with `--once`).
 */
export async function runSync(
  config: TrustConfig,
  options: RotationOptions,
  signal: AbortSignal,
): Promise<string> {
  const opened = await openKubeRotation(config, options);
  const api = await openApi(config);
  const sync = new SyncController({
    api,
    settings: kubeTrustSettings(config),
    clock: options.clock,
    logger: options.logger,
    rotation: opened.controller,
  });
  options.logger.info(
    { configMap: opened.where, interval: config.interval },
    'trust sync controller running',
  );
  // The copies follow the anchors on every change the watches report; with --once, one pass
  // after the anchors pass.
  const copies = opened.copies;
  const stopCopies = new AbortController();
  const copying =
    copies === undefined || config.once
      ? Promise.resolve()
      : copies.run(AbortSignal.any([signal, stopCopies.signal]));
  try {
    return await syncLoop(config, sync, copies, opened.clusterTrustBundles, options, signal);
  } finally {
    stopCopies.abort();
    await copying;
  }
}

async function syncLoop(
  config: TrustConfig,
  sync: SyncController,
  copies: AnchorsCopyController | undefined,
  ctbs: ClusterTrustBundleController | undefined,
  options: RotationOptions,
  signal: AbortSignal,
): Promise<string> {
  let last = '';
  for (;;) {
    try {
      last = await sync.reconcile(signal);
      // The bundles follow the anchors ConfigMap on every pass (three reads when nothing changed).
      if (ctbs !== undefined) {
        const c = await ctbs.converge();
        const what = [
          ...(c.created.length > 0 ? [`created ${c.created.join(', ')}`] : []),
          ...(c.updated.length > 0 ? [`updated ${c.updated.join(', ')}`] : []),
          ...(c.foreign.length > 0 ? [`not ours, left alone: ${c.foreign.join(', ')}`] : []),
        ];
        if (what.length > 0) last += `; ClusterTrustBundles ${what.join('; ')}`;
      }
      if (config.once && copies !== undefined) {
        const c = await copies.converge();
        const what = describeCopies(c);
        if (what !== '') last += `; anchors copies ${what}`;
      }
    } catch (err) {
      // Held, logged, retried on the next pass: a refusal or an API failure changes nothing.
      options.logger.warn(
        { err: err instanceof Error ? err.message : String(err) },
        'trust sync pass failed; nothing was written',
      );
      if (config.once) throw err;
    }
    if (config.once || signal.aborted) return `sync: ${last}\n`;
    await waitInterval(config.interval, signal);
    if (signal.aborted) return `sync: stopped\n`;
  }
}

function describeCopies(c: CopyPassResult): string {
  const parts = [
    ...(c.created.length > 0 ? [`created in ${c.created.join(', ')}`] : []),
    ...(c.updated.length > 0 ? [`updated in ${c.updated.join(', ')}`] : []),
    ...(c.deleted.length > 0 ? [`deleted in ${c.deleted.join(', ')}`] : []),
    ...(c.foreign.length > 0 ? [`not ours, left alone in ${c.foreign.join(', ')}`] : []),
    ...(c.failed.length > 0
      ? [`failed in ${c.failed.map((f) => `${f.namespace} (${f.error})`).join(', ')}`]
      : []),
  ];
  return parts.join('; ');
}
