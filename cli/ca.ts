/**
 * `meshid ca`: the identity CA. With no inputs given it runs against the local state folder
 * (`--dir`, default .meshid) that `meshid init` writes, after checking that only its owner can
 * change it (cli/state-dir.ts). The composition root of the CA: it chooses the issuer source and
 * the token validator the configuration names, and runs one Certify process in-process or one
 * per worker.
 */
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { CaConfig, Clock, Logger, Random } from '../core/index.js';
import {
  KUBERNETES_JWKS,
  MeshidError,
  createRegistry,
  formatAddress,
  loadConfig,
  startAdminServer,
  systemClock,
  systemRandom,
} from '../core/index.js';
import {
  FileIssuerSource,
  JwksTokenValidator,
  KubeIssuerSource,
  TokenReviewValidator,
  kubernetesJwksValidator,
  startCaPrimary,
  startCertifyProcess,
} from '../identity-ca/index.js';
import type {
  CertifyProcessDeps,
  KubeApi,
  RunningCa,
  TokenValidator,
} from '../identity-ca/index.js';
import { caKube, checkCaPermissions } from './kube.js';
import { checkStateDir } from './state-dir.js';
import {
  announceListening,
  listenersOrExplain,
  processLogger,
  startCrypto,
  untilStopSignal,
  workerCount,
} from './runtime.js';
import type { ListenerSetting } from './runtime.js';

/** The worker process entry (compiled beside this file). */
const CA_WORKER_ENTRY = fileURLToPath(new URL('./ca-worker.js', import.meta.url));

/** The CA's Kubernetes API and this instance's name, when the configuration uses the API. */
type CaKube = { readonly api: KubeApi; readonly instance: string };

/**
 * What a Certify process is made of, as the configuration names it: the issuer source (the API
 * objects, or mounted files) and the token validator (TokenReview, the cluster JWKS, or a JWKS
 * file or URL).
 */
export function certifyChoices(
  config: CaConfig,
  kube: CaKube | undefined,
  logger: Logger,
  clock: Clock,
): Pick<CertifyProcessDeps, 'issuerSource' | 'tokens' | 'kube'> {
  return {
    issuerSource: (store, onDeleted) => {
      const o = { store, logger: logger.child({ component: 'issuer-source' }) };
      if (config.issuerSecret !== undefined && config.trustAnchorsConfigMap !== undefined) {
        return new KubeIssuerSource({
          ...o,
          api: needKube(kube, 'issuerSecret'),
          namespace: config.namespace,
          secretName: config.issuerSecret,
          configMapName: config.trustAnchorsConfigMap,
          anchorsKey: config.trustAnchorsKey,
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
        ...o,
        clock,
        issuerDir: config.issuerDir,
        trustAnchorsFile: config.trustAnchors,
      });
    },
    tokens: () => tokenValidator(config, kube, logger, clock),
    ...(kube === undefined ? {} : { kube }),
  };
}

function needKube(kube: CaKube | undefined, what: string): KubeApi {
  if (kube === undefined)
    throw new MeshidError('ERR_CONFIG_INVALID', `${what} needs the Kubernetes API (kubeconfig)`);
  return kube.api;
}

/** The token validator the configuration names. */
async function tokenValidator(
  config: CaConfig,
  kube: CaKube | undefined,
  logger: Logger,
  clock: Clock,
): Promise<TokenValidator> {
  const common = { audience: config.audience, clock, logger };
  if (config.tokenValidator === 'tokenreview') {
    return new TokenReviewValidator({
      ...common,
      api: needKube(kube, 'TokenReview'),
      cacheTtlMs: config.tokenReviewCacheTtl,
      cacheSize: config.tokenReviewCacheSize,
      unsafeNoAudienceFallback: config.tokenReviewUnsafeNoAudienceFallback,
    });
  }
  const { jwks, tokenIssuer } = config;
  if (jwks === KUBERNETES_JWKS) {
    return kubernetesJwksValidator({
      ...common,
      api: needKube(kube, 'the cluster JWKS'),
      issuer: tokenIssuer,
      clockSkewMs: config.clockSkew,
    });
  }
  if (jwks === undefined || tokenIssuer === undefined) {
    throw new MeshidError('ERR_CONFIG_INVALID', 'tokenValidator jwks needs jwks and tokenIssuer');
  }
  const caPem = config.jwksCa === undefined ? {} : { caPem: await readFile(config.jwksCa, 'utf8') };
  return JwksTokenValidator.create({
    ...common,
    jwks: /^https?:/i.test(jwks) ? { url: jwks, ...caPem } : { file: jwks },
    issuer: tokenIssuer,
    clockSkewMs: config.clockSkew,
  });
}

/**
 * Starts the CA: in this process when `workers` is 1 (with its admin server), otherwise a
 * primary with `workers` Certify processes.
 */
async function startIdentityCa(deps: {
  config: CaConfig;
  kube: CaKube | undefined;
  workers: number;
  logger: Logger;
  clock: Clock;
  random: Random;
}): Promise<RunningCa> {
  const { config, logger, clock } = deps;
  if (deps.workers > 1) return startCaPrimary({ ...deps, workerEntry: CA_WORKER_ENTRY });
  const registry = createRegistry();
  const ca = await startCertifyProcess({
    ...certifyChoices(config, deps.kube, logger, clock),
    config,
    logger,
    clock,
    random: deps.random,
    registry,
  });
  let admin;
  try {
    admin = await startAdminServer(config.admin, {
      logger,
      readiness: () => ca.readiness(),
      metrics: async () => ({ contentType: registry.contentType, body: await registry.metrics() }),
    });
  } catch (err) {
    await ca.close();
    throw err;
  }
  return {
    address: ca.address,
    adminAddress: admin.address,
    readiness: () => ca.readiness(),
    reload: () => ca.reload(),
    async close() {
      await admin.close();
      await ca.close();
    },
  };
}

/** The CA's listeners and the flags that choose their addresses. */
export function caListeners(config: CaConfig): ListenerSetting[] {
  return [
    { what: "identity CA's gRPC server (Certify)", flag: '--listen', address: config.listen },
    { what: "identity CA's admin server", flag: '--admin', address: config.admin },
  ];
}

/**
 * Starts the CA and logs the one "listening" line with the bound addresses.
 */
export async function startCa(config: CaConfig, logger: Logger): Promise<RunningCa> {
  // A state folder others could change is refused before anything is read from it.
  if (config.dir !== undefined) await checkStateDir(config.dir);
  const workers = workerCount(config.workers);
  const kube = await caKube(config);
  if (kube !== undefined) {
    try {
      await checkCaPermissions(kube.api, config, logger);
    } finally {
      // Workers make their own clients; this one was for the check.
      if (workers > 1) kube.api.close();
    }
  }
  const ca = await listenersOrExplain(caListeners(config), () =>
    startIdentityCa({
      config,
      kube: workers > 1 ? undefined : kube,
      workers,
      logger,
      clock: systemClock,
      random: systemRandom,
    }),
  );
  announceListening(logger, {
    address: formatAddress(ca.address),
    admin: formatAddress(ca.adminAddress),
    identity: config.identityName,
    workers,
  });
  return ca;
}

/** `meshid ca` */
export async function runCa(argv: string[]): Promise<number> {
  const { config } = loadConfig('ca', { argv, env: process.env });
  const logger = processLogger(config, { service: 'identity-ca' });
  startCrypto(config, logger);
  // Handlers first: a stop signal during start-up must still stop the CA cleanly.
  const stopped = untilStopSignal();
  const ca = await startCa(config, logger);
  process.on('SIGHUP', () => void ca.reload());
  const signal = await stopped;
  logger.info({ signal }, 'shutting down');
  await ca.close();
  return 0;
}
