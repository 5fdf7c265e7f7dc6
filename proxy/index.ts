/**
 * proxy: the TypeScript sidecar. This first part is the identity client; the inbound
 * and outbound mTLS listeners, policy and admin server build on it.
 */
export { IdentityClient, freshRequestKey, systemTimers } from './identity/client.js';
export type {
  IdentityClientOptions,
  RequestKey,
  Timers,
  WorkloadCertificate,
} from './identity/client.js';
export { certificatesOf, verifyCertifyResponse } from './identity/verify.js';
export { CredentialFileIdentity, parseCredentialBundle } from './identity/credential-file.js';
export type { CredentialFileOptions, IdentitySource } from './identity/credential-file.js';
export { CertifyCallFailed, Http2CertifyClient } from './identity/certify-h2.js';
export type { Http2CertifyClientOptions, PresentedCertificate } from './identity/certify-h2.js';
export type { VerifiedLeaf } from './identity/verify.js';
export {
  ContextCache,
  MESH_H2_ALPN,
  PROXY_TLS,
  identityOfCertificate,
  verifiedPeerIdentity,
} from './tls.js';
export { AnchorSource } from './anchors.js';
export type { LoadedAnchors } from './anchors.js';
export {
  identityReport,
  proxyReadiness,
  registerIdentityMetrics,
  startProxyAdmin,
} from './admin.js';
export type { ProxyAdminDeps } from './admin.js';
export * from './inbound.js';
export * from './metrics.js';
export * from './outbound.js';

/** The node options the sidecar is meant to run with (defined in core, which the injector shares). */
export { SIDECAR_NODE_OPTIONS } from '../core/index.js';
export { DestinationClient } from './destination-client.js';
export type {
  ClientCertificate,
  DestinationClientOptions,
  EndpointSet,
  EndpointWatch,
  PassThroughReason,
  ResolveTarget,
  ResolvedEndpoint,
  Resolver,
} from './destination-client.js';
export { loadOriginalDestination } from './transparent/original-dst.js';
export { TransparentInbound } from './transparent/inbound.js';
export type { TransparentInboundEvent, TransparentInboundOptions } from './transparent/inbound.js';
export { peekClientHello } from './transparent/client-hello.js';
export type { ClientHelloPeek } from './transparent/client-hello.js';
export { resolverOverDestinationClient } from './transparent/destination-adapter.js';
export type { OriginalDestination, OriginalDestinationReader } from './transparent/original-dst.js';
