/**
 * `meshid webhooks`: the admission webhooks over HTTPS. Composes the injector and the trust
 * guard with their API access (when a kubeconfig is configured) and the serving certificate
 * folder, reloaded when it changes.
 */
import { readFile } from 'node:fs/promises';
import type { Address, Logger, WebhooksConfig } from '../core/index.js';
import {
  FIPS_TLS,
  caIdentityName,
  formatAddress,
  loadConfig,
  openKubeconfig,
  parseAddress,
  peerChain,
  systemClock,
  tlsGroupList,
} from '../core/index.js';
import {
  AdmissionServer,
  createInjector,
  createTrustGuard,
  webhookKube,
} from '../webhooks/index.js';
import type { WebhookKube } from '../webhooks/index.js';
import { imageTag } from './install/manifest.js';
import {
  announceListening,
  listenOrExplain,
  processLogger,
  startCrypto,
  untilStopSignal,
} from './runtime.js';

/** How long the trust guard waits for the CA's handshake (the API server waits 10 s in all). */
const GUARD_CA_TIMEOUT_MS = 3_000;

/** A running webhooks server. */
interface RunningWebhooks {
  readonly address: Address;
  close(): Promise<void>;
}

/**
 * Starts the webhooks' server.
 */
async function startWebhooks(config: WebhooksConfig, logger: Logger): Promise<RunningWebhooks> {
  let kube: WebhookKube | undefined;
  if (config.kubeconfig !== undefined) {
    kube = webhookKube(await openKubeconfig(config.kubeconfig, process.env), systemClock);
  } else {
    logger.warn('no kubeconfig: namespace annotations are not read (only pods opt in)');
  }
  const naming = {
    trustDomain: config.trustDomain,
    controlPlaneNamespace: config.controlPlaneNamespace,
  };
  const anchorsFile = config.trustAnchors;
  const injector = createInjector(
    {
      naming,
      proxyImage: config.proxyImage,
      proxyVersion: imageTag(config.proxyImage) ?? 'unknown',
      identityAddr: config.identityAddr,
      identityName: caIdentityName(naming),
      trustAnchorsConfigMap: config.trustAnchorsConfigMap,
      trustAnchorsKey: config.trustAnchorsKey,
      tokenExpirationSeconds: config.tokenExpiration / 1000,
      podCertificateSigner: config.podCertificateSigner,
      nativeSidecar: config.nativeSidecar,
      excludeNamespaces: config.excludeNamespace,
      resources: {
        cpuRequest: config.proxyCpuRequest,
        memoryRequest: config.proxyMemoryRequest,
        memoryLimit: config.proxyMemoryLimit,
      },
    },
    {
      ...(kube === undefined
        ? {}
        : { namespaceAnnotations: (name: string) => kube.namespaceAnnotations(name) }),
      // The mounted ConfigMap is re-read per injection: the kubelet updates it in place.
      ...(anchorsFile === undefined
        ? {}
        : { trustAnchorsPem: () => readFile(anchorsFile, 'utf8').catch(() => undefined) }),
      logger: logger.child({ component: 'injector' }),
    },
  );
  // The live issuer, from the chain the CA serves (the webhooks may not read the issuer Secret).
  const caAddress = config.caAddress ?? config.identityAddr;
  const guard = createTrustGuard(
    {
      controlPlaneNamespace: config.controlPlaneNamespace,
      trustAnchorsConfigMap: config.trustAnchorsConfigMap,
      trustAnchorsKey: config.trustAnchorsKey,
      issuerSecret: config.issuerSecret,
      caIdentityName: caIdentityName(naming),
      caAddress,
    },
    {
      caChainPem: () =>
        peerChain(parseAddress(caAddress)!, caIdentityName(naming), GUARD_CA_TIMEOUT_MS, {
          alpn: ['h2'],
          minVersion: 'TLSv1.3',
        }),
      clock: systemClock,
      logger: logger.child({ component: 'trust-guard' }),
    },
  );
  const server = await listenOrExplain('admission webhooks server', '--listen', config.listen, () =>
    AdmissionServer.start({
      listen: config.listen,
      tlsDir: config.tlsDir,
      handlers: { '/inject': injector, '/validate': guard },
      reloadIntervalMs: config.tlsReloadInterval,
      // The API server may speak TLS 1.2 (webhooks.ts's default); the key exchange is meshid's.
      ...(config.fips
        ? { tls: FIPS_TLS, fips: true }
        : { tls: { ecdhCurve: tlsGroupList(config.tlsGroups, false) } }),
      logger: logger.child({ component: 'admission-server' }),
    }),
  );
  return { address: server.address, close: () => server.close() };
}

/** `meshid webhooks` */
export async function runWebhooks(argv: string[]): Promise<number> {
  const { config } = loadConfig('webhooks', { argv, env: process.env });
  const logger = processLogger(config, { service: 'webhooks' });
  startCrypto(config, logger);
  const stopped = untilStopSignal();
  const running = await startWebhooks(config, logger);
  announceListening(logger, { address: formatAddress(running.address) });
  const signal = await stopped;
  logger.info({ signal }, 'shutting down');
  await running.close();
  return 0;
}
