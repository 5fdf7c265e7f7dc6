/**
 * destination: the destination service. It watches Services, EndpointSlices and Pods and
 * answers proxies, over Linkerd's `io.linkerd.proxy.destination.Destination` API on mTLS, with
 * the endpoints of an address or Service port: meshed or not, identity, inbound port, protocol
 * hint. docs/destination.md.
 */
export { EndpointIndex, ENDPOINT_WEIGHT } from './endpoint-index.js';
export type {
  EndpointIndexOptions,
  EventType,
  IndexSubscription,
  Resolution,
  ResolutionListener,
  WatchedKind,
} from './endpoint-index.js';
export { UpdateStream, profileOf } from './updates.js';
export { formatTarget, parseTarget } from './target.js';
export type { Target } from './target.js';
export { INBOUND_PORT_NAMES, OPAQUE_PORTS_ANNOTATION, parseOpaquePorts } from './model.js';
export { DestinationServer, MAX_BUFFERED_BYTES, MAX_STREAMS_PER_CONNECTION } from './server.js';
export type { DestinationCredentials, DestinationServerOptions } from './server.js';
export { WATCHED_KINDS, followCluster } from './kube.js';
export type { DestinationKube } from './kube.js';
