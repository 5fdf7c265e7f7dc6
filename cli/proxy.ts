/**
 * `meshid proxy`: the sidecar. Composes the trust anchors (watched), the identity client (key in
 * memory, renewal), the inbound and outbound listeners, and the admin server.
 */
import { setFlagsFromString } from 'node:v8';
import type {
  Address,
  CertifyRequest,
  CertifyResponse,
  Logger,
  ProxyConfig,
  TlsAlgorithms,
} from '../core/index.js';
import {
  createRegistry,
  formatAddress,
  loadConfig,
  meshTlsSettings,
  parseAddress,
  systemClock,
  systemRandom,
} from '../core/index.js';
import {
  AnchorSource,
  CredentialFileIdentity,
  Http2CertifyClient,
  IdentityClient,
  InboundPolicy,
  InboundProxy,
  OutboundProxy,
  SIDECAR_NODE_OPTIONS,
  StaticDestinationResolver,
  parseAppProtocols,
  parseDestination,
  parseRoute,
  registerIdentityMetrics,
  registerTrafficMetrics,
  startProxyAdmin,
  systemTimers,
} from '../proxy/index.js';
import type { IdentitySource, PresentedCertificate } from '../proxy/index.js';
import {
  announceListening,
  exitAfter,
  listenOrExplain,
  processLogger,
  startCrypto,
  untilStopSignal,
} from './runtime.js';
import {
  inboundPolicyLists,
  startTransparentInbound,
  transparentOutbound,
} from './proxy-transparent.js';

/** How long connections may finish after SIGTERM before they are cut. */
const SHUTDOWN_GRACE_MS = 5000;
/** What closing may take beyond the grace period before the process exits anyway. */
const SHUTDOWN_SLACK_MS = 1500;

/** A running proxy. */
interface RunningProxy {
  readonly admin: Address;
  readonly inbound?: Address;
  readonly outbound: readonly Address[];
  readonly identity: IdentitySource;
  close(): Promise<void>;
}

/**
 * A Certify function that follows the anchors: the CA's TLS certificate is verified against the
 * bundle in force, so a new bundle means a new client. Also how `meshid destination` gets its
 * own certificate.
 */
export function certifyThroughCa(
  config: Pick<ProxyConfig, 'fips' | 'tlsGroups'> & {
    readonly identityAddr: string;
    readonly identityName: string;
    /** The anchors file, named when the CA's chain does not verify against it. */
    readonly trustAnchors?: string | undefined;
  },
  anchors: AnchorSource,
  held: () => PresentedCertificate | undefined,
  onHandshake: (algorithms: TlsAlgorithms) => void = () => undefined,
): {
  certify: (req: CertifyRequest) => Promise<CertifyResponse>;
  close: () => void;
} {
  const address = parseAddress(config.identityAddr)!;
  let fingerprint = '';
  let client: Http2CertifyClient | undefined;
  return {
    certify: (req) => {
      const bundle = anchors.current();
      if (client === undefined || bundle.fingerprint !== fingerprint) {
        client?.close();
        client = new Http2CertifyClient({
          address,
          serverName: config.identityName,
          anchorsPem: bundle.pem,
          ...(config.trustAnchors === undefined ? {} : { anchorsSource: config.trustAnchors }),
          tls: meshTlsSettings(config.fips, config.tlsGroups),
          clientCertificate: held,
          onHandshake,
        });
        fingerprint = bundle.fingerprint;
      }
      return client.certify(req);
    },
    close: () => client?.close(),
  };
}

/**
 * The proxy's identity: a token and the CA (Certify), or the kubelet's pod certificate file.
 */
async function openIdentity(
  config: ProxyConfig,
  anchors: AnchorSource,
  logger: Logger,
  onCaHandshake: (algorithms: TlsAlgorithms) => void,
): Promise<{ identity: IdentitySource; ca?: { close(): void } }> {
  if (config.identitySource === 'pod-certificate')
    return {
      identity: await CredentialFileIdentity.open({
        file: config.credentialBundle!,
        localIdentity: config.localIdentity,
        anchorsPem: () => anchors.current().pem,
        clock: systemClock,
        logger: logger.child({ component: 'identity' }),
      }),
    };
  // The certificate held is shown to the CA: under load it serves pods without one first.
  const ca = certifyThroughCa(
    { ...config, identityAddr: config.identityAddr!, identityName: config.identityName! },
    anchors,
    () => identity.current(),
    onCaHandshake,
  );
  const identity = new IdentityClient({
    localIdentity: config.localIdentity,
    tokenFile: config.tokenFile!,
    certify: ca.certify,
    anchorsPem: () => anchors.current().pem,
    clock: systemClock,
    random: systemRandom,
    timers: systemTimers,
    maxRetryMs: config.identityRetryMax,
    logger: logger.child({ component: 'identity' }),
  });
  return { identity, ca };
}

/**
 * Starts the proxy's parts.
 */
export async function startProxy(config: ProxyConfig, logger: Logger): Promise<RunningProxy> {
  const clock = systemClock;
  const anchors = await AnchorSource.open(config.trustAnchors, {
    clock,
    logger: logger.child({ component: 'anchors' }),
    fips: config.fips,
  });
  const tls = meshTlsSettings(config.fips, config.tlsGroups);
  let caTls: TlsAlgorithms | undefined;
  const { identity, ca } = await openIdentity(config, anchors, logger, (a) => (caTls = a));
  identity.start();
  // Renewal timers run on the monotonic clock; this notices a wall-clock jump within a second.
  const clockCheck = setInterval(() => identity.checkClock(), 1000);
  clockCheck.unref();
  const registry = createRegistry();
  const traffic = registerTrafficMetrics(registry);
  const deps = {
    localIdentity: config.localIdentity,
    identity,
    anchors,
    clock,
    registry,
    logger,
    tls: () => ({
      mode: config.fips ? 'fips' : config.tlsGroups,
      groups: tls.ecdhCurve,
      ...(caTls === undefined ? {} : { ca: caTls }),
      ...traffic.groups(),
    }),
  };
  registerIdentityMetrics(deps);
  // What every listener needs to speak mTLS as this workload.
  const mesh = {
    certificate: () => identity.current(),
    anchorsPem: () => anchors.current().pem,
    tls,
  };

  let inbound: { close(graceMs: number): Promise<void> } | undefined;
  let inboundAddress: Address | undefined;
  let outbound: OutboundProxy | undefined;
  let outboundAddresses: Address[] = [];
  let destinationClient: { close(): void } | undefined;
  let admin: Awaited<ReturnType<typeof startProxyAdmin>>;
  const stopParts = async (graceMs: number): Promise<void> => {
    await Promise.all([inbound?.close(graceMs), outbound?.close(graceMs)]);
    destinationClient?.close();
    clearInterval(clockCheck);
    identity.close();
    anchors.close();
    ca?.close();
  };
  try {
    if (config.transparent && config.inbound !== undefined) {
      const transparentListen = config.inbound;
      const started = await listenOrExplain(
        'transparent inbound listener',
        '--inbound',
        transparentListen,
        () =>
          startTransparentInbound(config, transparentListen, {
            ...mesh,
            observe: (e) => traffic.inbound(e),
            observeTransparent: (e) => traffic.transparentInbound(e),
            logger,
          }),
      );
      inbound = started;
      inboundAddress = started.address;
    } else if (config.inbound !== undefined && config.app !== undefined) {
      const listener = new InboundProxy({
        listen: config.inbound,
        app: config.app,
        appPorts: parseAppProtocols(config.app.port, config.appProtocol),
        appTimeoutMs: config.appTimeout,
        limits: {
          maxStreams: config.inboundMaxStreams,
          maxAppConnections: config.inboundMaxAppConnections,
          maxAppConnectionsPerPeer: config.inboundMaxAppConnectionsPerPeer,
          maxConnectionsPerPeer: config.inboundMaxConnectionsPerPeer,
        },
        ...mesh,
        policy: new InboundPolicy({
          ...inboundPolicyLists(config),
          allowUnauthenticated: config.allowUnauthenticated,
        }),
        logger: logger.child({ component: 'inbound' }),
        observe: (e) => traffic.inbound(e),
      });
      inbound = listener;
      inboundAddress = await listenOrExplain('inbound listener', '--inbound', config.inbound, () =>
        listener.listen(),
      );
    }
    const transparentListen = config.transparent ? config.transparentOutbound : undefined;
    const transparent =
      transparentListen === undefined
        ? undefined
        : transparentOutbound(config, transparentListen, {
            ...mesh,
            registry,
            logger,
          });
    destinationClient = transparent;
    if (config.route.length > 0 || config.outbound !== undefined || transparent !== undefined) {
      outbound = new OutboundProxy({
        routes: config.route.map(parseRoute),
        ...(config.outbound === undefined
          ? {}
          : {
              http: {
                listen: config.outbound,
                resolver: new StaticDestinationResolver(config.destination.map(parseDestination)),
              },
            }),
        ...(transparent === undefined ? {} : { transparent: transparent.options }),
        ...mesh,
        logger: logger.child({ component: 'outbound' }),
        observe: (e) => traffic.outbound(e),
      });
      const listener = outbound;
      outboundAddresses = await listenOrExplain(
        'outbound listeners',
        outboundFlags(config),
        config.outbound ?? transparentListen,
        () => listener.listen(),
      );
    }
    admin = await listenOrExplain('admin server', '--admin', config.admin, () =>
      startProxyAdmin(config.admin, deps),
    );
  } catch (err) {
    // A listener that cannot bind ends the proxy: serving without the others (no admin means
    // no readiness, no inbound means no traffic) would only hide the failure.
    await stopParts(0);
    throw err;
  }
  return {
    admin: admin.address,
    ...(inboundAddress === undefined ? {} : { inbound: inboundAddress }),
    outbound: outboundAddresses,
    identity,
    async close() {
      await stopParts(SHUTDOWN_GRACE_MS);
      await admin.close();
    },
  };
}

/** The flags that configure the outbound listeners, for an error binding them. */
function outboundFlags(config: ProxyConfig): string {
  const flags = [
    ...(config.outbound === undefined ? [] : ['--outbound']),
    ...(config.route.length === 0 ? [] : ['--route']),
    ...(config.transparent ? ['--transparent-outbound'] : []),
  ];
  return flags.join(' or ');
}

/**
 * Keeps V8's young generation small. Its maximum can only be set when the process starts
 * (`SIDECAR_NODE_OPTIONS`, `--max-semi-space-size`); when it was not, the growth factor (read at
 * each growth) at least keeps the semi-spaces from doubling under load. An operator who sets
 * either in NODE_OPTIONS or on the command line keeps their choice. Returns whether the maximum
 * was set at start.
 */
function boundYoungGeneration(): boolean {
  const given = `${process.execArgv.join(' ')} ${process.env['NODE_OPTIONS'] ?? ''}`;
  if (/max[-_]semi[-_]space[-_]size/.test(given)) return true;
  if (!/semi[-_]space/.test(given)) setFlagsFromString('--semi-space-growth-factor=1');
  return false;
}

/** `meshid proxy` */
export async function runProxy(argv: string[]): Promise<number> {
  const bounded = boundYoungGeneration();
  const { config } = loadConfig('proxy', { argv, env: process.env });
  const logger = processLogger(config, {
    service: 'proxy',
    identity: config.localIdentity,
  });
  startCrypto(config, logger);
  if (!bounded) {
    // Advice for whoever tunes the sidecar's start (the injector sets these options), not for
    // every reader of its log: debug only.
    logger.debug(
      { nodeOptions: SIDECAR_NODE_OPTIONS.join(' ') },
      'the V8 young generation is not bounded; start the sidecar with these node options to keep its memory near its idle size under load',
    );
  }
  const stopped = untilStopSignal();
  let proxy: RunningProxy;
  try {
    proxy = await startProxy(config, logger);
  } catch (err) {
    // Everything started has been closed; anything left behind must not keep the process up.
    exitAfter(SHUTDOWN_SLACK_MS, 1, logger, 'start-up failed; exiting');
    throw err;
  }
  announceListening(logger, {
    admin: formatAddress(proxy.admin),
    ...(proxy.inbound === undefined ? {} : { inbound: formatAddress(proxy.inbound) }),
    outbound: proxy.outbound.map(formatAddress),
  });
  const signal = await stopped;
  logger.info({ signal, graceMs: SHUTDOWN_GRACE_MS }, 'shutting down');
  exitAfter(
    SHUTDOWN_GRACE_MS + SHUTDOWN_SLACK_MS,
    0,
    logger,
    'connections still open after the shutdown grace period; exiting',
  );
  await proxy.close();
  return 0;
}
