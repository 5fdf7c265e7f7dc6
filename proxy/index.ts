/**
 * proxy: the TypeScript sidecar (identity client, inbound and outbound mTLS listeners, policy,
 * admin server). This file is its public surface: what cli needs to compose it. Tests reach
 * internals by path.
 */
export { IdentityClient, systemTimers } from './identity/client.js';
export type { WorkloadCertificate } from './identity/client.js';
export { CredentialFileIdentity } from './identity/credential-file.js';
export type { IdentitySource } from './identity/credential-file.js';
export { Http2CertifyClient } from './identity/certify-h2.js';
export type { PresentedCertificate } from './identity/certify-h2.js';
export { AnchorSource } from './anchors.js';
export { registerIdentityMetrics, startProxyAdmin } from './admin.js';
export { InboundProxy } from './inbound.js';
export type { InboundOptions } from './inbound.js';
export { InboundPolicy } from './policy.js';
export { parseAppProtocols } from './app-protocol.js';
export { registerTrafficMetrics } from './metrics.js';
export { OutboundProxy } from './outbound.js';
export { StaticDestinationResolver, parseDestination, parseRoute } from './routes.js';
export type { TransparentOutboundOptions } from './transparent/outbound.js';
/** The node options the sidecar is meant to run with (defined in core, which the injector shares). */
export { SIDECAR_NODE_OPTIONS } from '../core/index.js';
export { DestinationClient } from './destination-client.js';
export type { ClientCertificate } from './destination-client.js';
export { loadOriginalDestination } from './transparent/original-dst.js';
export { TransparentInbound } from './transparent/inbound.js';
export type { TransparentInboundEvent } from './transparent/inbound.js';
export { resolverOverDestinationClient } from './transparent/destination-adapter.js';
