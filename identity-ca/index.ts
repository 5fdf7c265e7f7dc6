/**
 * identity-ca: the Linkerd-compatible Certify service. This file is its public surface.
 */
import type { CaConfig, Clock, Logger, Random } from '../core/index.js';
import type { CertifyProcessDeps } from './ca.js';
import { createRegistry, startAdminServer } from '../core/index.js';
import { startCertifyProcess } from './ca.js';
import type { RunningCa } from './cluster.js';
import { startCaPrimary } from './cluster.js';

export { startCertifyProcess, readinessOf } from './ca.js';
export type { CertifyProcess, CertifyProcessDeps, CertifyStatus } from './ca.js';
export { runCertifyWorker, startCaPrimary } from './cluster.js';
export type { RunningCa, WorkerRole } from './cluster.js';
export { createCertifyHandler, SignerCache } from './server/certify.js';
export type { CertifyDeps, IssuedLeaf } from './server/certify.js';
export { CertifyServer, CA_TLS_SETTINGS } from './server/grpc-server.js';
export { checkCsrPolicy, checkFipsCsr } from './issuer/csr-policy.js';
export { LeafSigner, randomSerial } from './issuer/leaf.js';
export type { LeafFields } from './issuer/leaf.js';
export { checkFipsIssuer, validateIssuer } from './issuer/material.js';
export { probeX509Crypto } from './issuer/fips-probe.js';
export type { X509CryptoProbe } from './issuer/fips-probe.js';

export type { IssuerCredentials, IssuerMaterial } from './issuer/material.js';
export { IssuerStore } from './issuer/store.js';
export { FileIssuerSource } from './issuer/file-source.js';
export { KubeIssuerSource, issuerMaterialFromSecret } from './issuer/kube-source.js';
export type { KubeApi, KubeObject, TokenReviewResult } from './kube/api.js';
export { EventRecorder, EventReason } from './kube/events.js';
export {
  caRequirements,
  checkPermissions,
  describe as describeAccess,
} from './kube/permissions.js';
export { TokenReviewValidator } from './token/token-review.js';
export { kubernetesJwksValidator } from './token/kube-jwks.js';
export type { TokenValidator } from './token/validator.js';
export { JwksTokenValidator } from './token/jwks.js';
export { generateTokenSigningKey, mintDevelopmentToken } from './token/dev-token.js';

/**
 * Starts the CA: in this process when `workers` is 1, otherwise a primary with `workers`
 * Certify processes (one per core by default).
 *
 * @example
 * ```ts
 * const ca = await startIdentityCa({ config, workers: 2, logger, clock, random, workerEntry });
 * ```
 */
export async function startIdentityCa(deps: {
  config: CaConfig;
  kube?: NonNullable<CertifyProcessDeps['kube']>;
  workers: number;
  logger: Logger;
  clock: Clock;
  random: Random;
  workerEntry: string;
}): Promise<RunningCa> {
  if (deps.workers > 1) return startCaPrimary(deps);
  const registry = createRegistry();
  const ca = await startCertifyProcess({ ...deps, registry });
  let admin;
  try {
    admin = await startAdminServer(deps.config.admin, {
      logger: deps.logger,
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
