/**
 * One Certify process: issuer and anchors (watched, last good kept), token validator, the
 * Certify server and its serving certificate, wired together. A multi-core CA runs one of these
 * per worker process (cluster.ts); a single-core CA runs one in-process. Which issuer source and
 * token validator it uses is cli's choice (cli/ca.ts), passed in.
 */
import type {
  Address,
  CaConfig,
  Clock,
  IdentityNaming,
  Logger,
  Random,
  Readiness,
  Registry,
} from '../core/index.js';
import {
  DEFAULTS,
  FIPS_HOW_TO,
  formatAddress,
  MeshidError,
  meshTlsSettings,
  systemTimers,
} from '../core/index.js';
import { probeX509Crypto } from './issuer/fips-probe.js';
import { IssuerStore } from './issuer/store.js';
import type { KubeApi, WatchedKind } from './kube/api.js';
import { CaEvents, EventRecorder } from './kube/events.js';
import { Admission } from './server/admission.js';
import { createCertifyHandler, SignerCache } from './server/certify.js';
import type { IssuedLeaf } from './server/certify.js';
import { replicaIdentity, SignerReplicas } from './podcert/replicas.js';
import { PodCertificateSigner } from './podcert/signer.js';
import { CertifyServer } from './server/grpc-server.js';
import { registerCaMetrics } from './server/metrics.js';
import type { CaMetrics } from './server/metrics.js';
import { ServingCertRenewal } from './server/serving-cert.js';
import type { ServingCertificate, ServingCertOptions } from './server/serving-cert.js';
import type { TokenValidator } from './token/validator.js';

/**
 * Connections one worker lets wait for a handshake slot; beyond it a new one is closed at once.
 * A waiting connection is an unread socket (a file descriptor and a few hundred bytes), and
 * at about 1 ms per handshake more than this could not be served within the wait bound anyway.
 */
const MAX_WAITING_CONNECTIONS = 8192;
/**
 * Handshake slots one peer address may hold at once: a pod makes one connection, so this only
 * stops one client (or a few) from holding every slot with handshakes it never finishes.
 */
const MAX_HANDSHAKES_PER_SOURCE = 4;
/**
 * A handshake that has had its ClientHello and still runs after this while other connections
 * wait is reset (handshake-gate.ts): an honest client finishes in one round trip.
 */
const HANDSHAKE_STALLED_MS = 1000;

/** Where the issuer and anchors come from (the API objects, or mounted files): cli chooses. */
interface IssuerSource {
  /** Loads them into the store; rejects when they are missing or invalid. */
  start(): Promise<unknown>;
  /** Loads them again now (SIGHUP). */
  reload(): Promise<unknown>;
  close(): Promise<void>;
}

/** Everything one Certify process needs, built by the CLI. */
export interface CertifyProcessDeps {
  readonly config: CaConfig;
  readonly logger: Logger;
  readonly clock: Clock;
  readonly random: Random;
  readonly registry: Registry;
  /**
   * Makes the issuer source on this process's store; `onDeleted` is for a source whose objects
   * can be deleted (the CA records an Event).
   */
  readonly issuerSource: (
    store: IssuerStore,
    onDeleted: (kind: WatchedKind, name: string) => void,
  ) => IssuerSource;
  /** Makes the token validator, once the issuer is loaded; the process closes it. */
  readonly tokens: () => Promise<TokenValidator>;
  /** The Kubernetes API for Events, when the configuration uses it (`kubeconfig`). */
  readonly kube?: {
    readonly api: Pick<
      KubeApi,
      'recordEvent' | 'watchList' | 'get' | 'replaceStatus' | 'create' | 'replace' | 'delete'
    >;
    /** This instance's name for Events (the pod name). */
    readonly instance: string;
  };
  readonly onIssued?: (issued: IssuedLeaf) => void;
  /**
   * Whether this process records the issuer Events (updated, refused, not valid, deleted).
   * Default true; in a multi-worker CA only one worker does, so a change is recorded once.
   */
  readonly recordIssuerEvents?: boolean;
  /**
   * Whether this process runs the PodCertificateRequest signer when the configuration turns it
   * on (`podCertificates`). Default true; in a multi-worker CA only one worker does.
   */
  readonly signPodCertificates?: boolean;
}

/** The state a worker reports to the primary (no secrets). */
export interface CertifyStatus {
  readonly issuerFingerprint?: string;
  readonly issuerSubject?: string;
  readonly issuerNotAfter?: number;
  readonly chainNotBefore?: number;
  readonly chainNotAfter?: number;
  readonly servingNotAfter?: number;
}

/** A running Certify process. */
export interface CertifyProcess {
  readonly address: Address;
  status(): CertifyStatus;
  readiness(): Readiness;
  /** Reloads the issuer and anchors from their files now (also done on every file change). */
  reload(): Promise<void>;
  /** Called whenever status() changes. */
  onStatus(listener: (s: CertifyStatus) => void): void;
  close(): Promise<void>;
}

/**
 * Readiness from a status: an issuer is loaded and its whole chain is valid now.
 */
export function readinessOf(s: CertifyStatus, now: number): Readiness {
  if (s.chainNotAfter === undefined || s.chainNotBefore === undefined) {
    return { ready: false, reason: 'no issuer loaded' };
  }
  if (now < s.chainNotBefore)
    return { ready: false, reason: `issuer chain not valid until ${iso(s.chainNotBefore)}` };
  if (now >= s.chainNotAfter)
    return { ready: false, reason: `issuer chain expired at ${iso(s.chainNotAfter)}` };
  return {
    ready: true,
    reason: `issuer ${s.issuerSubject ?? ''} valid until ${iso(s.chainNotAfter)}`,
  };
}

/**
 * Starts one Certify process. Rejects (the CA refuses to start) when the initial issuer or
 * anchors are invalid, naming the problem.
 *
 * @example
 * ```ts
 * const ca = await startCertifyProcess({ config, logger, clock, random, registry,
 *   issuerSource: (store) => new FileIssuerSource({ issuerDir, trustAnchorsFile, store, logger }),
 *   tokens: () => JwksTokenValidator.create(options) });
 * logger.info({ address: formatAddress(ca.address) }, 'listening');
 * ```
 */
export async function startCertifyProcess(deps: CertifyProcessDeps): Promise<CertifyProcess> {
  const { config, clock } = deps;
  if (config.fips) await assertX509OnFips(clock.now(), deps.logger);
  const store = new IssuerStore({
    clock,
    logger: deps.logger.child({ component: 'issuer' }),
    fips: config.fips,
  });
  // The server's, once it exists; the gauges read it only when scraped.
  let handshakeLoad = (): { handshaking: number; waiting: number } => ({
    handshaking: 0,
    waiting: 0,
  });
  const admission = createAdmission(config, clock, () => metrics);
  const metrics = registerCaMetrics(deps.registry, {
    clock,
    currentIssuer: () => store.current(),
    ...(admission === undefined ? {} : { admissionLoad: () => admission.load }),
    ...(config.certifyMaxHandshakes === 0 ? {} : { handshakeLoad: () => handshakeLoad() }),
  });
  const events = caEvents(deps, metrics);
  const source = deps.issuerSource(store, (kind, name) =>
    events.issuerDeleted(kind, config.namespace, name),
  );
  await source.start();
  let tokens: TokenValidator;
  try {
    tokens = await deps.tokens();
  } catch (err) {
    await source.close();
    throw err;
  }
  const signers = new SignerCache();
  // Client certificates (renewals, for admission priority) are checked against the anchors in
  // force; the anchors can change without the issuer, so every accepted pair sets them again.
  const credentials = (): ServingCertificate => {
    const anchors = store.current()?.anchors.pem;
    const s = serving.certificate;
    return admission === undefined || anchors === undefined ? s : { ...s, clientCaPem: anchors };
  };
  const serving = new ServingCertRenewal({
    current: () => store.current(),
    options: servingOptions(deps, signers),
    logger: deps.logger,
    onRenewed: (cert) => {
      server.setCredentials(credentials());
      metrics.servingCertificate(cert.notAfter);
      status.publish();
    },
  });
  metrics.servingCertificate(serving.certificate.notAfter);
  const handler = certifyHandler(deps, { store, tokens, signers, events, metrics });
  const podSigner = podCertificateSigner(deps, { store, signers, events, metrics });
  const server = createServer(deps, handler, credentials(), admission, metrics);
  handshakeLoad = () => server.handshakeLoad;
  const status = new StatusBoard(store, () => serving.certificate);
  serving.start();
  watchStore(store, { metrics, events, status, serving, admission, server, credentials });
  if (podSigner !== undefined) store.on('updated', () => podSigner.signer.kick());
  return listen(deps, server, { source, tokens, serving, events, status, podSigner });
}

/** Admission control (backpressure), when configured. */
function createAdmission(
  config: CaConfig,
  clock: Clock,
  metrics: () => CaMetrics,
): Admission | undefined {
  if (!config.backpressure) return undefined;
  return new Admission(
    {
      maxInFlight: config.certifyMaxInFlight,
      maxQueue: config.certifyMaxQueue,
      sourceBurst: config.certifySourceBurst,
      sourcePerSecond: config.certifySourceRate,
      identityBurst: config.certifyIdentityBurst,
      identityPerSecond: config.certifyIdentityRate,
    },
    clock,
    (why) => metrics().admissionRefused(why),
    (why, stage) => metrics().callDropped(why, stage),
  );
}

/** The Events this process records (none without the API or with `events: false`). */
function caEvents(deps: CertifyProcessDeps, metrics: CaMetrics): CaEvents {
  const { config, kube } = deps;
  const recorder =
    kube !== undefined && config.events
      ? new EventRecorder({
          api: kube.api,
          component: 'meshid-identity',
          instance: kube.instance,
          clock: deps.clock,
          logger: deps.logger,
          onDropped: (why) => metrics.eventDropped(why),
        })
      : undefined;
  const issuerTarget =
    config.issuerSecret === undefined
      ? undefined
      : {
          kind: 'Secret',
          apiVersion: 'v1',
          namespace: config.namespace,
          name: config.issuerSecret,
        };
  return new CaEvents(recorder, issuerTarget, deps.recordIssuerEvents !== false);
}

function servingOptions(deps: CertifyProcessDeps, signers: SignerCache): ServingCertOptions {
  const { config } = deps;
  return {
    identityName: config.identityName,
    naming: naming(config),
    lifetimeMs: config.certLifetime,
    clockSkewMs: config.clockSkew,
    clock: deps.clock,
    random: deps.random,
    signers,
  };
}

function naming(config: CaConfig): IdentityNaming {
  return { trustDomain: config.trustDomain, controlPlaneNamespace: config.controlPlaneNamespace };
}

/** The Certify decision, with its audit hooks. */
function certifyHandler(
  deps: CertifyProcessDeps,
  p: {
    store: IssuerStore;
    tokens: TokenValidator;
    signers: SignerCache;
    events: CaEvents;
    metrics: CaMetrics;
  },
): ReturnType<typeof createCertifyHandler> {
  const { config } = deps;
  const { events } = p;
  return createCertifyHandler(
    {
      currentIssuer: () => p.store.current(),
      tokens: p.tokens,
      naming: naming(config),
      certLifetimeMs: config.certLifetime,
      clockSkewMs: config.clockSkew,
      clock: deps.clock,
      random: deps.random,
      logger: deps.logger.child({ component: 'certify' }),
      // Only when someone listens: the audit record (a SHA-256 of the leaf) is skipped
      // otherwise on this hot path.
      ...(deps.onIssued === undefined && events.recorder === undefined
        ? {}
        : {
            onIssued: (issued: IssuedLeaf) => {
              deps.onIssued?.(issued);
              events.issued(issued);
            },
          }),
      onIssuerNotValid: (message) => events.issuerNotValid(message),
      onDropped: (why, stage) => p.metrics.callDropped(why, stage),
      fips: config.fips,
    },
    p.signers,
  );
}

/** The signer and the replica set it shares the work with. */
interface PodSigning {
  readonly signer: PodCertificateSigner;
  readonly replicas: SignerReplicas;
}

/**
 * The PodCertificateRequest signer, when configured and this process is the one to run it, with
 * this replica's Lease among the signer's replicas (podcert/replicas.ts).
 */
function podCertificateSigner(
  deps: CertifyProcessDeps,
  p: { store: IssuerStore; signers: SignerCache; events: CaEvents; metrics: CaMetrics },
): PodSigning | undefined {
  const { config, kube } = deps;
  if (!config.podCertificates || kube === undefined || deps.signPodCertificates === false)
    return undefined;
  const replicas = new SignerReplicas({
    api: kube.api,
    namespace: config.namespace,
    signerName: config.podCertificateSigner,
    identity: replicaIdentity(kube.instance, deps.random),
    leaseDurationMs: config.podCertificateLeaseDuration,
    clock: deps.clock,
    timers: systemTimers,
    logger: deps.logger,
  });
  const signer = new PodCertificateSigner({
    api: kube.api,
    signerName: config.podCertificateSigner,
    apiVersion: `certificates.k8s.io/${config.podCertificateApiVersion}`,
    currentIssuer: () => p.store.current(),
    signers: p.signers,
    naming: naming(config),
    certLifetimeMs: config.certLifetime,
    clockSkewMs: config.clockSkew,
    clock: deps.clock,
    random: deps.random,
    logger: deps.logger,
    share: replicas,
    takeoverAfterMs: config.podCertificateTakeover,
    ...(p.events.recorder === undefined ? {} : { events: p.events.recorder }),
    ...(deps.onIssued === undefined ? {} : { onIssued: deps.onIssued }),
    onOutcome: (outcome, reason) => p.metrics.podCertificate(outcome, reason),
  });
  return { signer, replicas };
}

/** The gRPC server, bounded against misbehaving peers. */
function createServer(
  deps: CertifyProcessDeps,
  handler: ReturnType<typeof createCertifyHandler>,
  credentials: ServingCertificate,
  admission: Admission | undefined,
  metrics: CaMetrics,
): CertifyServer {
  const { config } = deps;
  return new CertifyServer({
    handler,
    logger: deps.logger.child({ component: 'grpc' }),
    maxRequestBytes: DEFAULTS.maxRequestBytes,
    credentials,
    ...(admission === undefined ? {} : { admission }),
    observe: ({ status, durationSeconds }) => metrics.observeCall(status, durationSeconds),
    tls: meshTlsSettings(config.fips, config.tlsGroups),
    handshakes: {
      maxHandshakes: config.certifyMaxHandshakes,
      maxWaitMs: config.certifyHandshakeWait,
      maxWaiting: MAX_WAITING_CONNECTIONS,
      maxPerSource: MAX_HANDSHAKES_PER_SOURCE,
      stalledAfterMs: HANDSHAKE_STALLED_MS,
    },
    maxConnectionsPerPeer: config.certifyMaxConnectionsPerPeer,
    observeConnections: {
      refused: (why) => metrics.connectionRefused(why),
      waited: (seconds) => metrics.handshakeWaited(seconds),
      handshake: (algorithms) => metrics.handshake(algorithms),
    },
  });
}

/** The status a worker reports, and who listens to it. */
class StatusBoard {
  readonly listeners: ((s: CertifyStatus) => void)[] = [];
  constructor(
    readonly store: IssuerStore,
    readonly serving: () => ServingCertificate,
  ) {}

  current(): CertifyStatus {
    const i = this.store.current();
    return i === undefined
      ? {}
      : {
          issuerFingerprint: i.fingerprint,
          issuerSubject: i.subject,
          issuerNotAfter: i.notAfter,
          chainNotBefore: i.chainNotBefore,
          chainNotAfter: i.chainNotAfter,
          servingNotAfter: this.serving().notAfter,
        };
  }

  publish(): void {
    const s = this.current();
    for (const l of this.listeners) l(s);
  }
}

/** An accepted issuer renews the serving certificate and is recorded; a refused one too. */
function watchStore(
  store: IssuerStore,
  p: {
    metrics: CaMetrics;
    events: CaEvents;
    status: StatusBoard;
    serving: ServingCertRenewal;
    admission: Admission | undefined;
    server: CertifyServer;
    credentials: () => ServingCertificate;
  },
): void {
  store.on('updated', (current, previous) => {
    p.metrics.issuerUpdate('accepted');
    if (p.admission !== undefined && current.anchors !== previous?.anchors)
      p.server.setCredentials(p.credentials());
    p.serving.check();
    p.status.publish();
    if (previous !== undefined) p.events.issuerUpdated(current);
  });
  store.on('rejected', (error) => {
    p.metrics.issuerUpdate('rejected');
    p.events.issuerRefused(error);
  });
}

/** Binds the server; the process from then on, or everything closed again on failure. */
async function listen(
  deps: CertifyProcessDeps,
  server: CertifyServer,
  p: {
    source: IssuerSource;
    tokens: TokenValidator;
    serving: ServingCertRenewal;
    events: CaEvents;
    status: StatusBoard;
    podSigner: PodSigning | undefined;
  },
): Promise<CertifyProcess> {
  let address: Address;
  try {
    address = await server.listen(deps.config.listen);
  } catch (err) {
    p.serving.stop();
    await Promise.all([p.source.close(), p.tokens.close()]);
    throw err;
  }
  deps.logger.debug({ address: formatAddress(address) }, 'Certify server bound');
  p.podSigner?.replicas.start();
  p.podSigner?.signer.start();
  return {
    address,
    status: () => p.status.current(),
    readiness: () => readinessOf(p.status.current(), deps.clock.now()),
    reload: async () => {
      await p.source.reload();
    },
    onStatus: (l) => p.status.listeners.push(l),
    async close() {
      p.serving.stop();
      // Answers in flight end first; then the Lease goes and the others take this share.
      await p.podSigner?.signer.close();
      await p.podSigner?.replicas.close();
      await server.close();
      await Promise.all([p.source.close(), p.tokens.close()]);
      await p.events.flush();
    },
  };
}

/**
 * FIPS mode: proves, in this process, that @peculiar/x509 runs on the FIPS provider (an
 * approved operation works, one only a non-FIPS provider offers fails); refuses to start if not.
 */
async function assertX509OnFips(now: number, log: Logger): Promise<void> {
  const probe = await probeX509Crypto(now);
  const fields = {
    x509EcdsaP256: probe.approvedWorks ? 'works' : `failed: ${probe.approvedError ?? ''}`,
    x509RsaExponent3: probe.nonApprovedRefused
      ? `refused: ${probe.nonApprovedError ?? ''}`
      : 'allowed',
  };
  if (!probe.approvedWorks || !probe.nonApprovedRefused) {
    throw new MeshidError(
      'ERR_FIPS_UNAVAILABLE',
      `FIPS mode: the crypto under @peculiar/x509 does not run on a FIPS provider (ECDSA P-256 certificate ${fields.x509EcdsaP256}; an RSA key with public exponent 3, which only a non-FIPS provider offers, ${fields.x509RsaExponent3}). ${FIPS_HOW_TO}`,
    );
  }
  log.info(fields, 'FIPS mode: @peculiar/x509 runs on the FIPS provider (RSA-1024 refused)');
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
