/**
 * identity-ca: the Linkerd-compatible Certify service. This file is its public surface.
 * cli/ca.ts composes it: it chooses the issuer source and the token validator and passes them in.
 */

export { startCertifyProcess, readinessOf } from './ca.js';
export type { CertifyProcess, CertifyProcessDeps, CertifyStatus, IssuerSource } from './ca.js';
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
