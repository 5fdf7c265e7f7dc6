/**
 * destination: the destination service. It watches Services, EndpointSlices and Pods and
 * answers proxies, over Linkerd's `io.linkerd.proxy.destination.Destination` API on mTLS, with
 * the endpoints of an address or Service port: meshed or not, identity, inbound port, protocol
 * hint. docs/destination.md.
 */
export { EndpointIndex } from './endpoint-index.js';
export { DestinationServer } from './server.js';
export { followCluster } from './kube.js';
export type { DestinationKube } from './kube.js';
