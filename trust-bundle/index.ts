/**
 * trust-bundle: the rotation state, cert-manager resources, and the
 * controllers that keep the anchors ConfigMap right (sync) and rotate the root (rotation).
 * Depends on core only; `cli/` wires it to the file system and the Kubernetes API.
 */
export {
  ROTATION_ANNOTATION,
  ROTATION_FILE,
  readRotationStateFile,
  rotationInProgress,
  rotationStateFromAnnotations,
} from './rotation-state.js';
export type { RotationState } from './rotation-state.js';
export {
  SELF_SIGNED_ISSUER,
  caIssuer,
  identityIssuerCertificate,
  rootCertificate,
  selfSignedIssuer,
  trustManagerBundle,
} from './cert-manager.js';
export type { CertManagerSettings } from './cert-manager.js';
export { RotationController, waitInterval } from './rotation.js';
export type { BundleCopies, RotationControllerOptions } from './rotation.js';
export { adminUrlObserver, tlsCaObserver } from './rotation-observe.js';
export type { CaObserver, ProxyObserver } from './rotation-observe.js';
export { LocalRotationBackend } from './local-backend.js';
export { formatRotationStatus, progressLine } from './status.js';
export {
  KubeRotationBackend,
  SyncController,
  trustKubeApi,
  caPodObserver,
  combinedCaObserver,
  combinedObserver,
  podObserver,
} from './kube.js';
export type { KubeTrustSettings, TrustKubeApi } from './kube.js';
export { AnchorsCopyController, bundleCopiesOf } from './copies.js';
export type { CopyPassResult } from './copies.js';
export {
  CTB_API_VERSION,
  ClusterTrustBundleController,
  TRUST_BUNDLE_ROLE_LABEL,
  clusterTrustBundleCopiesOf,
  clusterTrustBundleName,
  combinedCopies,
} from './cluster-trust-bundles.js';
