/**
 * identity-ca: the Linkerd-compatible Certify service. This file is its public surface: what
 * cli needs to compose it. cli/ca.ts chooses the issuer source and the token validator and
 * passes them in. Tests reach internals (the Certify decision, the signer, the store) by path.
 */
export { startCertifyProcess } from './ca.js';
export type { CertifyProcessDeps } from './ca.js';
export { runCertifyWorker, startCaPrimary } from './cluster.js';
export type { RunningCa } from './cluster.js';
export { FileIssuerSource } from './issuer/file-source.js';
export { parseIssuerKey } from './issuer/material.js';
export { KubeIssuerSource } from './issuer/kube-source.js';
export type { KubeApi } from './kube/api.js';
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
