/**
 * One Certify process: issuer and anchors (watched, last good kept), token validator, the
 * Certify server and its serving certificate. A multi-core CA runs one of these per worker
 * process (cluster.ts); a single-core CA runs one in-process.
 */
import { readFile } from 'node:fs/promises';
import type {
  Address,
  CaConfig,
  Clock,
  Logger,
  Random,
  Readiness,
  Registry,
} from '../core/index.js';
import {
  DEFAULTS,
  FIPS_HOW_TO,
  formatAddress,
  KUBERNETES_JWKS,
  MeshidError,
  meshTlsSettings,
} from '../core/index.js';
import { probeX509Crypto } from './issuer/fips-probe.js';
import { FileIssuerSource } from './issuer/file-source.js';
import { KubeIssuerSource } from './issuer/kube-source.js';
import type { KubeApi } from './kube/api.js';
import { EventReason, EventRecorder } from './kube/events.js';
import type { EventTarget } from './kube/events.js';
import { kubernetesJwksValidator } from './token/kube-jwks.js';
import { TokenReviewValidator } from './token/token-review.js';
import type { IssuerCredentials } from './issuer/material.js';
import { IssuerStore } from './issuer/store.js';
import { createCertifyHandler, SignerCache } from './server/certify.js';
import type { IssuedLeaf } from './server/certify.js';
import { Admission } from './server/admission.js';
import { CertifyServer } from './server/grpc-server.js';
import { registerCaMetrics } from './server/metrics.js';
import { issueServingCertificate, servingCertNeedsRenewal } from './server/serving-cert.js';
import type { ServingCertificate } from './server/serving-cert.js';
import { JwksTokenValidator } from './token/jwks.js';
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

/** Everything one Certify process needs, built by the CLI. */
export interface CertifyProcessDeps {
  readonly config: CaConfig;
  readonly logger: Logger;
  readonly clock: Clock;
  readonly random: Random;
  readonly registry: Registry;
  /** Overrides the configured token validator (tests). */
  readonly tokens?: TokenValidator;
  /** The Kubernetes API, when the configuration uses it (`kubeconfig`). */
  readonly kube?: {
    readonly api: KubeApi;
    /** This instance's name for Events (the pod name). */
    readonly instance: string;
  };
  readonly onIssued?: (issued: IssuedLeaf) => void;
  /**
   * Whether this process records the issuer Events (updated, refused, not valid, deleted).
   * Default true; in a multi-worker CA only one worker does, so a change is recorded once.
   */
  readonly recordIssuerEvents?: boolean;
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
 *
 * @example
 * ```ts
 * readinessOf(process.status(), Date.now()); // { ready: true, reason: 'issuer CN=… valid until …' }
 * ```
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
 * const ca = await startCertifyProcess({ config, logger, clock, random, registry });
 * logger.info({ address: formatAddress(ca.address) }, 'listening');
 * ```
 */
export async function startCertifyProcess(deps: CertifyProcessDeps): Promise<CertifyProcess> {
  const { config, clock, random } = deps;
  const log = deps.logger;
  const naming = {
    trustDomain: config.trustDomain,
    controlPlaneNamespace: config.controlPlaneNamespace,
  };
  if (config.fips) await assertX509OnFips(clock.now(), log);
  const store = new IssuerStore({
    clock,
    logger: log.child({ component: 'issuer' }),
    fips: config.fips,
  });
  const current = (): IssuerCredentials | undefined => store.current();
  const admission = config.backpressure
    ? new Admission(
        {
          maxInFlight: config.certifyMaxInFlight,
          maxQueue: config.certifyMaxQueue,
          sourceBurst: config.certifySourceBurst,
          sourcePerSecond: config.certifySourceRate,
          identityBurst: config.certifyIdentityBurst,
          identityPerSecond: config.certifyIdentityRate,
        },
        clock,
        (why) => metrics.admissionRefused(why),
        (why, stage) => metrics.callDropped(why, stage),
      )
    : undefined;
  // The server's, once it exists; the gauges read it only when scraped.
  let handshakeLoad = (): { handshaking: number; waiting: number } => ({
    handshaking: 0,
    waiting: 0,
  });
  const metrics = registerCaMetrics(deps.registry, {
    clock,
    currentIssuer: current,
    ...(admission === undefined ? {} : { admissionLoad: () => admission.load }),
    ...(config.certifyMaxHandshakes === 0 ? {} : { handshakeLoad: () => handshakeLoad() }),
  });
  const kube = deps.kube;
  const events =
    kube !== undefined && config.events
      ? new EventRecorder({
          api: kube.api,
          component: 'meshid-identity',
          instance: kube.instance,
          clock,
          logger: log,
          onDropped: (why) => metrics.eventDropped(why),
        })
      : undefined;
  // Issuer Events go on the issuer Secret, where `kubectl describe` shows them beside it.
  const issuerTarget: EventTarget | undefined =
    config.issuerSecret === undefined
      ? undefined
      : {
          kind: 'Secret',
          apiVersion: 'v1',
          namespace: config.namespace,
          name: config.issuerSecret,
        };
  const source = createIssuerSource(deps, store, (kind, name) =>
    issuerEvent(
      'Warning',
      EventReason.issuerUpdateSkipped,
      `${kind === 'secrets' ? 'issuer Secret' : 'trust-anchor ConfigMap'} ${config.namespace}/${name} was deleted; keeping the last good issuer`,
    ),
  );
  function issuerEvent(type: 'Normal' | 'Warning', reason: string, message: string): void {
    if (events !== undefined && issuerTarget !== undefined && deps.recordIssuerEvents !== false)
      events.record(issuerTarget, type, reason, message);
  }
  await source.start();

  let tokens: TokenValidator;
  try {
    tokens = deps.tokens ?? (await createTokenValidator(deps));
  } catch (err) {
    await source.close();
    throw err;
  }

  const signers = new SignerCache();
  const servingOpts = {
    identityName: config.identityName,
    naming,
    lifetimeMs: config.certLifetime,
    clockSkewMs: config.clockSkew,
    clock,
    random,
    signers,
  };
  let serving: ServingCertificate = issueServingCertificate(store.current()!, servingOpts);
  metrics.servingCertificate(serving.notAfter);

  const server = new CertifyServer({
    handler: createCertifyHandler(
      {
        currentIssuer: current,
        tokens,
        naming,
        certLifetimeMs: config.certLifetime,
        clockSkewMs: config.clockSkew,
        clock,
        random,
        logger: log.child({ component: 'certify' }),
        // Only when someone listens: the audit record (a SHA-256 of the leaf) is skipped
        // otherwise on this hot path.
        ...(deps.onIssued === undefined && events === undefined
          ? {}
          : {
              onIssued: (issued: IssuedLeaf) => {
                deps.onIssued?.(issued);
                events?.record(
                  {
                    kind: 'ServiceAccount',
                    apiVersion: 'v1',
                    namespace: issued.namespace,
                    name: issued.serviceAccount,
                  },
                  'Normal',
                  EventReason.issuedLeafCertificate,
                  `Issued certificate for ${issued.identity} until ${iso(issued.notAfter)}: ${issued.sha256}`,
                );
              },
            }),
        onIssuerNotValid: (message) =>
          issuerEvent('Warning', EventReason.issuerValidationFailed, message),
        onDropped: (why, stage) => metrics.callDropped(why, stage),
        fips: config.fips,
      },
      signers,
    ),
    logger: log.child({ component: 'grpc' }),
    maxRequestBytes: DEFAULTS.maxRequestBytes,
    credentials: withClientCas(serving),
    ...(admission === undefined ? {} : { admission }),
    observe: ({ status, durationSeconds }) => metrics.observeCall(status, durationSeconds),
    tls: meshTlsSettings(config.fips, config.tlsGroups),
    handshakes: {
      maxHandshakes: config.certifyMaxHandshakes,
      maxWaitMs: config.certifyHandshakeWait,
      maxWaiting: MAX_WAITING_CONNECTIONS,
      maxPerSource: MAX_HANDSHAKES_PER_SOURCE,
    },
    observeConnections: {
      refused: (why) => metrics.connectionRefused(why),
      waited: (seconds) => metrics.handshakeWaited(seconds),
      handshake: (algorithms) => metrics.handshake(algorithms),
    },
  });

  handshakeLoad = () => server.handshakeLoad;

  // Client certificates (renewals, for admission priority) are checked against the anchors in
  // force; the anchors can change without the issuer, so every accepted pair sets them again.
  function withClientCas(s: ServingCertificate): ServingCertificate {
    const anchors = store.current()?.anchors.pem;
    return admission === undefined || anchors === undefined ? s : { ...s, clientCaPem: anchors };
  }
  const listeners: ((s: CertifyStatus) => void)[] = [];
  const status = (): CertifyStatus => {
    const i = store.current();
    return i === undefined
      ? {}
      : {
          issuerFingerprint: i.fingerprint,
          issuerSubject: i.subject,
          issuerNotAfter: i.notAfter,
          chainNotBefore: i.chainNotBefore,
          chainNotAfter: i.chainNotAfter,
          servingNotAfter: serving.notAfter,
        };
  };
  const publish = (): void => {
    const s = status();
    for (const l of listeners) l(s);
  };

  // Renew the serving certificate when the issuer changes or at 70% of its life. The timer
  // only wakes the check; the decision reads the injected clock. It wakes every second (the
  // check is a comparison), so a wall-clock step forward past the certificate's expiry is
  // noticed at once: the timer runs on the monotonic clock, which the step does not move.
  const renewIfDue = (): void => {
    const issuer = store.current();
    if (issuer === undefined || !servingCertNeedsRenewal(serving, issuer, clock.now())) return;
    try {
      serving = issueServingCertificate(issuer, servingOpts);
      server.setCredentials(withClientCas(serving));
      metrics.servingCertificate(serving.notAfter);
      log.info(
        { serial: serving.serialHex, notAfter: iso(serving.notAfter) },
        'serving certificate renewed',
      );
      publish();
    } catch (err) {
      log.error({ err }, 'serving certificate renewal failed; keeping the current one');
    }
  };
  const timer = setInterval(renewIfDue, 1000);
  timer.unref();

  store.on('updated', (current, previous) => {
    metrics.issuerUpdate('accepted');
    if (admission !== undefined && current.anchors !== previous?.anchors)
      server.setCredentials(withClientCas(serving));
    renewIfDue();
    publish();
    if (previous !== undefined)
      issuerEvent(
        'Normal',
        EventReason.issuerUpdated,
        `Updated identity issuer ${current.subject} (serial ${current.serial}, valid until ${iso(current.notAfter)})`,
      );
  });
  store.on('rejected', (error) => {
    metrics.issuerUpdate('rejected');
    issuerEvent(
      'Warning',
      EventReason.issuerUpdateSkipped,
      `Refused new issuer material, keeping the last good issuer: ${error.message}`,
    );
  });

  let address: Address;
  try {
    address = await server.listen(config.listen);
  } catch (err) {
    clearInterval(timer);
    await Promise.all([source.close(), tokens.close()]);
    throw err;
  }
  log.debug({ address: formatAddress(address) }, 'Certify server bound');

  return {
    address,
    status,
    readiness: () => readinessOf(status(), clock.now()),
    reload: async () => {
      await source.reload();
    },
    onStatus: (l) => listeners.push(l),
    async close() {
      clearInterval(timer);
      await server.close();
      await Promise.all([source.close(), tokens.close()]);
      await events?.flush();
    },
  };
}

/** The issuer source the configuration names: the API objects, or mounted files. */
function createIssuerSource(
  deps: CertifyProcessDeps,
  store: IssuerStore,
  onDeleted: (kind: 'secrets' | 'configmaps', name: string) => void,
): { start(): Promise<unknown>; reload(): Promise<unknown>; close(): Promise<void> } {
  const { config } = deps;
  const logger = deps.logger.child({ component: 'issuer-source' });
  if (config.issuerSecret !== undefined && config.trustAnchorsConfigMap !== undefined) {
    if (deps.kube === undefined) {
      throw new MeshidError(
        'ERR_CONFIG_INVALID',
        'issuerSecret needs the Kubernetes API (kubeconfig)',
      );
    }
    return new KubeIssuerSource({
      api: deps.kube.api,
      namespace: config.namespace,
      secretName: config.issuerSecret,
      configMapName: config.trustAnchorsConfigMap,
      anchorsKey: config.trustAnchorsKey,
      store,
      logger,
      onDeleted,
    });
  }
  if (config.issuerDir === undefined || config.trustAnchors === undefined) {
    throw new MeshidError(
      'ERR_CONFIG_INVALID',
      'no issuer source: give issuerDir and trustAnchors, or issuerSecret and trustAnchorsConfigMap',
    );
  }
  return new FileIssuerSource({
    issuerDir: config.issuerDir,
    trustAnchorsFile: config.trustAnchors,
    store,
    logger,
  });
}

/** The token validator the configuration names. */
async function createTokenValidator(deps: CertifyProcessDeps): Promise<TokenValidator> {
  const { config, clock } = deps;
  const log = deps.logger;
  const needKube = (what: string): KubeApi => {
    if (deps.kube === undefined)
      throw new MeshidError('ERR_CONFIG_INVALID', `${what} needs the Kubernetes API (kubeconfig)`);
    return deps.kube.api;
  };
  if (config.tokenValidator === 'tokenreview') {
    return new TokenReviewValidator({
      api: needKube('TokenReview'),
      audience: config.audience,
      clock,
      logger: log,
      cacheTtlMs: config.tokenReviewCacheTtl,
      cacheSize: config.tokenReviewCacheSize,
      unsafeNoAudienceFallback: config.tokenReviewUnsafeNoAudienceFallback,
    });
  }
  const { jwks, tokenIssuer } = config;
  if (jwks === KUBERNETES_JWKS) {
    return kubernetesJwksValidator({
      api: needKube('the cluster JWKS'),
      audience: config.audience,
      issuer: tokenIssuer,
      clockSkewMs: config.clockSkew,
      clock,
      logger: log,
    });
  }
  if (jwks === undefined || tokenIssuer === undefined) {
    throw new MeshidError('ERR_CONFIG_INVALID', 'tokenValidator jwks needs jwks and tokenIssuer');
  }
  return JwksTokenValidator.create({
    jwks: /^https?:/i.test(jwks)
      ? {
          url: jwks,
          ...(config.jwksCa === undefined ? {} : { caPem: await readFile(config.jwksCa, 'utf8') }),
        }
      : { file: jwks },
    issuer: tokenIssuer,
    audience: config.audience,
    clockSkewMs: config.clockSkew,
    clock,
    logger: log,
  });
}

/**
 * FIPS mode: proves, in this process, that @peculiar/x509 runs on the FIPS provider (an
 * approved operation works, one only a non-FIPS provider offers fails); refuses to start if not.
 */
async function assertX509OnFips(now: number, log: Logger): Promise<void> {
  const probe = await probeX509Crypto(now);
  const fields = {
    x509EcdsaP256: probe.approvedWorks ? 'works' : `failed: ${probe.approvedError ?? ''}`,
    x509Rsa1024: probe.nonApprovedRefused ? `refused: ${probe.nonApprovedError ?? ''}` : 'allowed',
  };
  if (!probe.approvedWorks || !probe.nonApprovedRefused) {
    throw new MeshidError(
      'ERR_FIPS_UNAVAILABLE',
      `FIPS mode: the crypto under @peculiar/x509 does not run on a FIPS provider (ECDSA P-256 certificate ${fields.x509EcdsaP256}; RSA-1024, which only a non-FIPS provider offers, ${fields.x509Rsa1024}). ${FIPS_HOW_TO}`,
    );
  }
  log.info(fields, 'FIPS mode: @peculiar/x509 runs on the FIPS provider (RSA-1024 refused)');
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
