/**
 * trust-bundle: the trust-anchor bundle model, the rotation state, cert-manager resources, and the
 * controllers that keep the anchors ConfigMap right (sync) and rotate the root (rotation).
 * Depends on core only; `cli/` wires it to the file system and the Kubernetes API.
 */
export {
  DEFAULT_EXPIRY_WARNING_MS,
  anchorFromPem,
  anchorOfChain,
  bundleFingerprint,
  bundleFromAnchors,
  parseBundle,
  renderBundle,
} from './bundle.js';
export type { Anchor, AnchorKeyType, ParseBundleOptions, TrustBundle } from './bundle.js';
export {
  ROTATION_ANNOTATION,
  ROTATION_FILE,
  ROTATION_PHASES,
  parseRotationState,
  readRotationStateFile,
  rotationInProgress,
  rotationStateFromAnnotations,
  serializeRotationState,
} from './rotation-state.js';
export type { RootRef, RotationPhase, RotationState, RotationWait } from './rotation-state.js';
