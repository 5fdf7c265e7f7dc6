/**
 * `meshid destination`: the destination service. Composes its mesh identity (obtained as a proxy
 * obtains its own: its projected ServiceAccount token and a CSR to the CA, the key in memory,
 * renewed), the trust anchors (watched), the Kubernetes watches feeding the endpoint index, the
 * Destination gRPC server on mTLS and the admin server.
 */
import type { Address, DestinationConfig, Logger } from '../core/index.js';
import {
  createRegistry,
  formatAddress,
  isMeshidError,
  loadConfig,
  MeshidError,
  meshTlsSettings,
  openKubeconfig,
  startAdminServer,
  systemClock,
  systemRandom,
  Gauge,
} from '../core/index.js';
import type { DestinationKube } from '../destination/index.js';
import { DestinationServer, EndpointIndex, followCluster } from '../destination/index.js';
import { AnchorSource, IdentityClient, systemTimers } from '../proxy/index.js';
import type { WorkloadCertificate } from '../proxy/index.js';
import { certifyThroughCa } from './proxy.js';
import {
  announceListening,
  listenOrExplain,
  processLogger,
  startCrypto,
  untilStopSignal,
} from './runtime.js';

/** A running destination service. */
interface RunningDestination {
  readonly address: Address;
  readonly admin: Address;
  readonly index: EndpointIndex;
  close(): Promise<void>;
}

/** Resolves with the first certificate the identity client gets. */
function firstCertificate(identity: IdentityClient): Promise<WorkloadCertificate> {
  const now = identity.current();
  if (now !== undefined) return Promise.resolve(now);
  return new Promise((resolve) => identity.once('certificate', resolve));
}

/**
 * Starts the destination service. `kube` is the Kubernetes client (default: opened from
 * `config.kubeconfig`).
 */
export async function startDestination(
  config: DestinationConfig,
  logger: Logger,
  kube?: DestinationKube,
): Promise<RunningDestination> {
  const clock = systemClock;
  const naming = {
    trustDomain: config.trustDomain,
    controlPlaneNamespace: config.controlPlaneNamespace,
  };
  let anchors: AnchorSource;
  try {
    anchors = await AnchorSource.open(config.trustAnchors, {
      clock,
      logger: logger.child({ component: 'anchors' }),
      fips: config.fips,
    });
  } catch (err) {
    const cause = (err as Error).cause;
    throw new MeshidError(
      isMeshidError(cause) ? cause.code : 'ERR_ANCHORS_INVALID',
      (err as Error).message,
      { cause: err },
    );
  }
  const ca = certifyThroughCa(config, anchors, () => identity.current());
  const identity = new IdentityClient({
    localIdentity: config.localIdentity,
    tokenFile: config.tokenFile,
    certify: ca.certify,
    anchorsPem: () => anchors.current().pem,
    clock,
    random: systemRandom,
    timers: systemTimers,
    logger: logger.child({ component: 'identity' }),
  });
  identity.start();
  const clockCheck = setInterval(() => identity.checkClock(), 1000);
  clockCheck.unref();

  const registry = createRegistry();
  const index = new EndpointIndex({
    naming,
    clusterDomain: config.clusterDomain,
    onBadObject: (why) => logger.warn({ why }, 'object read in part'),
  });
  new Gauge({
    name: 'destination_index_objects',
    help: 'Objects the endpoint index holds, by kind',
    labelNames: ['kind'],
    registers: [registry],
    collect() {
      const s = index.stats;
      this.set({ kind: 'Pod' }, s.pods);
      this.set({ kind: 'Service' }, s.services);
      this.set({ kind: 'EndpointSlice' }, s.slices);
    },
  });
  const watchFailures = new Gauge({
    name: 'destination_watch_failures',
    help: 'Failed lists or watches of the Kubernetes API since the destination service started, by kind',
    labelNames: ['kind'],
    registers: [registry],
  });
  const stopWatching = new AbortController();
  let client = kube;
  if (client === undefined) {
    client = await openKubeconfig(config.kubeconfig, process.env);
  }
  const following = followCluster(client, index, {
    signal: stopWatching.signal,
    logger: logger.child({ component: 'watch' }),
    onRetry: (kind) => watchFailures.inc({ kind }),
  });

  const admin = await listenOrExplain('admin server', '--admin', config.admin, () =>
    startAdminServer(config.admin, {
      logger: logger.child({ component: 'admin' }),
      metrics: async () => ({ contentType: registry.contentType, body: await registry.metrics() }),
      readiness: () =>
        identity.current() === undefined
          ? { ready: false, reason: 'no certificate yet' }
          : !index.synced
            ? {
                ready: false,
                reason: 'the first lists of Services, EndpointSlices and Pods are not in yet',
              }
            : { ready: true, reason: 'ready' },
    }),
  );

  // Serving needs a certificate: the listener opens once the CA has issued the first one.
  const cert = await firstCertificate(identity);
  const credentials = (c: WorkloadCertificate) => ({
    keyPem: c.keyPem,
    certChainPem: c.certChainPem,
    anchorsPem: anchors.current().pem,
  });
  const server = new DestinationServer({
    index,
    clusterDomain: config.clusterDomain,
    logger: logger.child({ component: 'server' }),
    credentials: credentials(cert),
    tls: meshTlsSettings(config.fips, config.tlsGroups),
    registry,
  });
  identity.on('certificate', (c) => server.setCredentials(credentials(c)));
  anchors.on('updated', () => {
    const c = identity.current();
    if (c !== undefined) server.setCredentials(credentials(c));
  });
  const address = await listenOrExplain(
    "destination service's gRPC server",
    '--listen',
    config.listen,
    () => server.listen(config.listen),
  );
  return {
    address,
    admin: admin.address,
    index,
    async close() {
      await server.close();
      stopWatching.abort();
      await following;
      clearInterval(clockCheck);
      identity.close();
      anchors.close();
      ca.close();
      await admin.close();
    },
  };
}

/** `meshid destination` */
export async function runDestination(argv: string[]): Promise<number> {
  const { config } = loadConfig('destination', { argv, env: process.env });
  const logger = processLogger(config, { service: 'destination' });
  startCrypto(config, logger);
  const stopped = untilStopSignal();
  const running = await startDestination(config, logger);
  announceListening(logger, {
    address: formatAddress(running.address),
    admin: formatAddress(running.admin),
  });
  const signal = await stopped;
  logger.info({ signal }, 'shutting down');
  await running.close();
  return 0;
}
