/**
 * proxy: the TypeScript sidecar. This first part is the identity client; the inbound
 * and outbound mTLS listeners, policy and admin server build on it.
 */
export { IdentityClient, systemTimers } from './identity/client.js';
export type { IdentityClientOptions, Timers, WorkloadCertificate } from './identity/client.js';
export { certificatesOf, verifyCertifyResponse } from './identity/verify.js';
export { CertifyCallFailed, Http2CertifyClient } from './identity/certify-h2.js';
export type { Http2CertifyClientOptions } from './identity/certify-h2.js';
export type { VerifiedLeaf } from './identity/verify.js';
export {
  ContextCache,
  MESH_H2_ALPN,
  PROXY_TLS,
  identityOfCertificate,
  verifiedPeerIdentity,
} from './tls.js';
export { AnchorSource, parseAnchorBundle } from './anchors.js';
export type { AnchorBundle } from './anchors.js';
export {
  identityReport,
  proxyReadiness,
  registerIdentityMetrics,
  startProxyAdmin,
} from './admin.js';
export type { IdentityReport, ProxyAdminDeps } from './admin.js';
export * from './inbound.js';
export * from './metrics.js';
export * from './outbound.js';

/**
 * The node options the sidecar is meant to run with: `node --max-semi-space-size=2 meshid.js
 * proxy …`. A young generation bounded at 2 MB per semi-space keeps the proxy's RSS under load
 * near its idle size (about 71 MB instead of 83 MB at saturation in `npm run bench`) and cost no
 * throughput there. V8 reads the bound only at start, so it belongs on the command line (the
 * proxy injector puts it there); started without it, the proxy logs that it is missing.
 *
 * @example
 * ```ts
 * spawn(process.execPath, [...SIDECAR_NODE_OPTIONS, 'bin/meshid.js', 'proxy', ...args]);
 * ```
 */
export const SIDECAR_NODE_OPTIONS: readonly string[] = Object.freeze(['--max-semi-space-size=2']);
