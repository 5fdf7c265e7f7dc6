/**
 * What the transparent outbound asks of the rest of the mesh, as small interfaces the proxy is
 * given (only cli/ wires real ones): the original destination of a redirected connection, and
 * a {@link Resolver} that streams the endpoints behind an address (Linkerd's Destination `Get`).
 */
import type { Socket } from 'node:net';
import type { Address } from '../core/index.js';

/** Where a redirected connection was going before iptables sent it to the proxy. */
export interface OriginalDestination {
  readonly address: string;
  readonly port: number;
  readonly family: 4 | 6;
}

/**
 * Reads a redirected connection's original destination (SO_ORIGINAL_DST, or its IPv6
 * counterpart).
 *
 * @throws Error when the socket was not redirected or the address cannot be read.
 * @example
 * ```ts
 * const orig = originalDestination(socket); // { address: '10.96.0.12', port: 80, family: 4 }
 * ```
 */
export type OriginalDestinationReader = (socket: Socket) => OriginalDestination;

/** One endpoint behind a destination, as the destination service describes it. */
export interface ResolvedEndpoint {
  /** The endpoint's own address: pod IP and the target port. */
  readonly address: Address;
  /** Whether a meshed proxy runs beside it; only then is `identity` set. */
  readonly meshed: boolean;
  /** The identity its proxy proves (`TlsIdentity.DnsLikeIdentity.name`). */
  readonly identity?: string;
  /** The proxy's inbound port for Linkerd's opaque transport (4143). */
  readonly inboundPort?: number;
  /** What the endpoint is known to speak: `h2` between proxies, or `opaque` (never detect). */
  readonly protocolHint?: 'h2' | 'opaque';
}

/** One answer of a {@link Resolver} stream. */
export type EndpointUpdate =
  /** The full current set of endpoints (not a delta); may be empty. */
  | { readonly kind: 'endpoints'; readonly endpoints: readonly ResolvedEndpoint[] }
  /** The destination service does not know the address: pass it through. */
  | { readonly kind: 'unknown' }
  /** The destination service cannot be reached now; `message` says why. */
  | { readonly kind: 'unavailable'; readonly message: string };

/**
 * Streams the endpoints behind an address (a ClusterIP:port or a pod IP:port) as they change.
 *
 * @example
 * ```ts
 * const stop = resolver.resolve({ host: '10.96.0.12', port: 80 }, (u) => console.log(u.kind));
 * stop();
 * ```
 */
export interface Resolver {
  /** Starts a watch; `onUpdate` hears every answer until the returned function is called. */
  resolve(target: Address, onUpdate: (update: EndpointUpdate) => void): () => void;
}
