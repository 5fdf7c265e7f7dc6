/**
 * `meshid trust` against the Kubernetes API (`--kubeconfig`): the rotation controller over the
 * anchors ConfigMap and cert-manager, and the sync controller. Loaded only when a kubeconfig is
 * given, so the local commands never load the Kubernetes client.
 */
import { caIdentityName, parseAddress } from '../core/index.js';
import type { TrustConfig } from '../core/index.js';
import {
  KubeRotationBackend,
  RotationController,
  SELF_SIGNED_ISSUER,
  SyncController,
  adminUrlObserver,
  caPodObserver,
  combinedCaObserver,
  combinedObserver,
  openTrustKubeApi,
  podObserver,
  tlsCaObserver,
  waitInterval,
} from '../trust-bundle/index.js';
import type {
  CaObserver,
  KubeTrustSettings,
  ProxyObserver,
  RotationControllerOptions,
  TrustKubeApi,
} from '../trust-bundle/index.js';

/** A rotation controller over the configured backend, and what to release afterwards. */
export interface OpenedRotation {
  readonly controller: RotationController;
  readonly where: string;
  close(): void;
}

/** The controller options the caller decides (clock, timings, holder). */
export type RotationOptions = Omit<RotationControllerOptions, 'backend' | 'observer'>;

/** The labels `meshid install` puts on the CA's pods, and its gRPC port in the pod. */
const CA_POD_SELECTOR = 'app.kubernetes.io/name=meshid,app.kubernetes.io/component=identity';
const CA_GRPC_PORT = 8080;

/**
 * The CA replicas named by `--ca-address`.
 *
 * @example
 * ```ts
 * caAddressObserver(config).description; // '1 CA address(es)'
 * ```
 */
export function caAddressObserver(config: TrustConfig): CaObserver {
  return tlsCaObserver(
    config.caAddress.map((a) => parseAddress(a)!),
    caIdentityName(config),
  );
}

/**
 * The trust objects' names from `meshid trust` settings.
 *
 * @example
 * ```ts
 * kubeTrustSettings(config).trustAnchorsConfigMap; // 'linkerd-identity-trust-roots'
 * ```
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
  const { loadKubeConfig } = await import('../core/kube.js');
  return openTrustKubeApi(loadKubeConfig(config.kubeconfig!, process.env));
}

function observerOf(config: TrustConfig, api: TrustKubeApi): ProxyObserver {
  const observers = [adminUrlObserver(config.proxyAdmin)];
  if (config.podSelector !== undefined) observers.push(podObserver(api, config.podSelector));
  return combinedObserver(observers);
}

/**
 * The rotation controller on the cluster of `--kubeconfig`.
 *
 * @example
 * ```ts
 * const { controller } = await openKubeRotation(config, options);
 * ```
 */
export async function openKubeRotation(
  config: TrustConfig,
  options: RotationOptions,
): Promise<OpenedRotation> {
  const api = await openApi(config);
  const settings = kubeTrustSettings(config);
  const controller = new RotationController({
    ...options,
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
    close: () => undefined,
  };
}

/**
 * `meshid trust sync`: keeps the anchors ConfigMap right and drives rotations, every `interval`
 * until stopped (or once with `--once`).
 *
 * @example
 * ```ts
 * await runSync(config, options, signal);
 * ```
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
  let last = '';
  for (;;) {
    try {
      last = await sync.reconcile(signal);
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
