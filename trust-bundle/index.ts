/**
 * trust-bundle: the rotation state, cert-manager resources, and the
 * controllers that keep the anchors ConfigMap right (sync) and rotate the root (rotation).
 * Depends on core only; `cli/` wires it to the file system and the Kubernetes API.
 */
export {
  ROTATION_ANNOTATION,
  ROTATION_FILE,
  parseRotationState,
  readRotationStateFile,
  rotationInProgress,
  rotationStateFromAnnotations,
  serializeRotationState,
} from './rotation-state.js';
export type { RootRef, RotationPhase, RotationState, RotationWait } from './rotation-state.js';
export {
  SELF_SIGNED_ISSUER,
  caIssuer,
  identityIssuerCertificate,
  rootCertificate,
  rotatedRootName,
  selfSignedIssuer,
  trustManagerBundle,
} from './cert-manager.js';
export type { CertManagerSettings } from './cert-manager.js';
export { RotationController, waitInterval } from './rotation.js';
export type {
  BundleCopies,
  RotationBackend,
  RotationControllerOptions,
  RotationSnapshot,
} from './rotation.js';
export { anchorOfChain, assertAnchorsIssuer } from './lineage.js';
export { adminUrlObserver, observeAdmin, observeCa, tlsCaObserver } from './rotation-observe.js';
export type {
  CaObservation,
  CaObserver,
  ProxyObservation,
  ProxyObserver,
} from './rotation-observe.js';
export { LocalRotationBackend, STALE_LOCK_MS } from './local-backend.js';
export type { GeneratedPem } from './local-backend.js';
export { formatRotationStatus, progressLine } from './status.js';
export {
  KubeRotationBackend,
  SyncController,
  trustKubeApi,
  caPodObserver,
  combinedCaObserver,
  combinedObserver,
  issuerChain,
  podObserver,
} from './kube.js';
export type { KubeTrustSettings, TrustKubeApi, TrustKubeObject } from './kube.js';
export { ANCHORS_COPY_LABEL, AnchorsCopyController, bundleCopiesOf } from './copies.js';
export type { CopyPassResult } from './copies.js';
export {
  CTB_API_VERSION,
  ClusterTrustBundleController,
  TRUST_BUNDLE_ROLE_LABEL,
  clusterTrustBundleCopiesOf,
  clusterTrustBundleName,
  combinedCopies,
} from './cluster-trust-bundles.js';
export type {} from './cluster-trust-bundles.js';
