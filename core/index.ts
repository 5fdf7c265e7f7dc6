/**
 * core: primitives shared by every meshid component. npm imports only. Every public name is
 * listed here (no `export *`): a name joins core's face when a component or cli needs it; tests
 * that need an internal (the DER reader's parts, say) import its module by path.
 */
export { ERROR_CODES, GrpcStatus, isMeshidError, MeshidError, RetryLaterError } from './errors.js';
export type { ErrorCode } from './errors.js';
export { systemClock, systemRandom, systemTimers } from './clock.js';
export type { Clock, Random, Timers } from './clock.js';
export { formatDuration } from './duration.js';
export { readFiles, watchFile, watchFiles, WatchedFile } from './watch-file.js';
export type { WatchedPath } from './watch-file.js';
export {
  ADMISSION_WEBHOOKS_LABEL,
  CONTROL_PLANE_NS_LABEL,
  identityName,
  INJECT_ANNOTATION,
  isDns1123Label,
  isDns1123Subdomain,
  parseIdentityName,
  parseServiceAccountUsername,
  printable,
  spiffeId,
} from './identity.js';
export type { IdentityNaming, WorkloadIdentity } from './identity.js';
export { createLogger, LogKey } from './logger.js';
export type { LogFormat, Logger, LogLevel } from './logger.js';
export { DEFAULTS, SIDECAR_NODE_OPTIONS, TRANSPARENT_DEFAULTS } from './defaults.js';
export {
  caIdentityName,
  COMMAND_SETTINGS,
  configReference,
  describeSettings,
  destinationIdentityName,
  DESTINATION_SERVICE_NAME,
  destinationServiceAddress,
  envName,
  flagName,
  formatAddress,
  IN_CLUSTER,
  KUBERNETES_JWKS,
  loadConfig,
  localStateInputs,
  parseAddress,
} from './config.js';
export type {
  Address,
  CaConfig,
  CheckConfig,
  CommandName,
  ConfigSources,
  DestinationConfig,
  IdentityConfig,
  InstallConfig,
  ProxyConfig,
  ProxyInitConfig,
  SettingReference,
  TrustConfig,
  VersionConfig,
  WebhooksConfig,
} from './config.js';
export { Counter, createRegistry, Gauge, Histogram, Registry } from './metrics.js';
export { startAdminServer } from './admin-server.js';
export type { Readiness } from './admin-server.js';
export { parsePem, PemError, toPem } from './pem.js';
export { JsonDepthMeter, JsonTooDeep, parseJson } from './json.js';
export {
  contextTag,
  decodeDer,
  DerError,
  DerReader,
  DerTag,
  isOneSequence,
  plainView,
  readOctetString,
  readOid,
} from './der.js';
export { concatBytes, derOid, derTime, derUnsignedInteger, tlv } from './der-write.js';
export { createCsr, importSpki, parseCsr, parseSpki, verifyCsrSignature, X509Oid } from './csr.js';
export type { ParsedCsr } from './csr.js';
export {
  CERTIFY_PATH,
  decodeCertifyRequest,
  decodeCertifyResponse,
  decodeGrpcMessage,
  encodeCertifyRequest,
  encodeCertifyResponse,
  encodeGrpcMessage,
  frameGrpcMessage,
  RETRY_AFTER_METADATA,
  retryAfterMsOf,
  unframeGrpcMessage,
} from './certify-wire.js';
export type { CertifyRequest, CertifyResponse } from './certify-wire.js';
export {
  canonicalIp,
  decodeDestinationUpdate,
  decodeGetDestination,
  DESTINATION_GET_PATH,
  DESTINATION_GET_PROFILE_PATH,
  encodeDestinationProfile,
  encodeDestinationUpdate,
  encodeGetDestination,
} from './destination-wire.js';
export type { DestinationProfile, DestinationUpdate, WeightedAddr } from './destination-wire.js';
export { CertifyClient } from './certify-client.js';
export {
  anchorFingerprints,
  bundleFingerprint,
  bundleOfAnchors,
  chainFingerprints,
  parseAnchors,
  parseCertificates,
  reachAnchor,
  readIdentityReport,
  shortName,
} from './anchors.js';
export type {
  Anchor,
  AnchorBundle,
  ParsedCertificate,
  ProxyIdentityReport,
  ProxyIdentityReportAsRead,
  ProxyTlsReport,
} from './anchors.js';
export { peerChain } from './peer-chain.js';
export { resetSocket } from './sockets.js';
export { ALL_ADDRESSES, listenOn } from './listen.js';
export {
  applyHttpTimeouts,
  limitConnections,
  LISTENER_LIMITS,
  NO_RESUMPTION,
  PeerBudget,
  RefusalReports,
} from './listener-limits.js';
export type {
  ConnectionLimitHit,
  HttpListenerLimits,
  HttpTimeouts,
  PeerBudgetLimits,
} from './listener-limits.js';
export {
  hybridGroupAvailable,
  isPostQuantumGroup,
  negotiatedAlgorithms,
  tlsGroupList,
} from './tls-groups.js';
export type { TlsAlgorithms, TlsGroupsMode } from './tls-groups.js';
export { versionInfo } from './version.js';
export { didYouMean } from './suggest.js';
export type { VersionInfo } from './version.js';
export {
  cryptoStatus,
  enforceFips,
  FIPS_HOW_TO,
  FIPS_TLS,
  fipsCertificateProblem,
  fipsKeyProblem,
  MESH_TLS,
  meshTlsSettings,
} from './fips.js';
export type { CryptoStatus, MeshTlsSettings } from './fips.js';
export { KubeApiError, kindNotServed } from './kube/api.js';
export type {
  AccessQuery,
  ApiConnection,
  EventRecord,
  KubeClient,
  KubeResource,
  TokenReviewResult,
} from './kube/api.js';
export { backoffDelay } from './kube/watch-list.js';
export type { WatchListEvent } from './kube/watch-list.js';
export { openKubeClient, openKubeconfig } from './kube/open.js';
export {
  INBOUND_POLICIES,
  parseCidrList,
  parsePortList,
  parsePortPolicies,
  TRANSPARENT_ANNOTATIONS,
} from './transparent.js';
export type { Cidr, InboundPolicyName, PortRange } from './transparent.js';
