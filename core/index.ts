/**
 * core: primitives shared by every meshid component. npm imports only.
 */
export * from './errors.js';
export * from './clock.js';
export * from './duration.js';
export * from './identity.js';
export * from './logger.js';
export * from './defaults.js';
export * from './config.js';
export * from './metrics.js';
export * from './admin-server.js';
export * from './pem.js';
export * from './json.js';
export * from './der.js';
export * from './csr.js';
export * from './certify-wire.js';
export * from './destination-wire.js';
export * from './certify-client.js';
export * from './anchors.js';
export * from './peer-chain.js';
export * from './version.js';
export * from './fips.js';
export * from './tls-groups.js';
export { KubeApiError } from './kube/api.js';
export type {
  AccessQuery,
  ApiConnection,
  EventRecord,
  KubeClient,
  KubeResource,
  KubeWatchListOptions,
  TokenReviewResult,
  WatchKind,
} from './kube/api.js';
export { backoffDelay, watchList } from './kube/watch-list.js';
export type { WatchListEvent, WatchListLoop, WatchStreamEvent } from './kube/watch-list.js';
export { openKubeClient } from './kube/open.js';
export * from './transparent.js';
