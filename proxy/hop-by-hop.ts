/**
 * Hop-by-hop header fields: the one list per protocol that every relay of the proxy drops
 * (HTTP/1.1 by node's http, the raw HTTP/1.1 relay, HTTP/2, and translation between them).
 *
 * The two lists differ in one field, and why:
 * - RFC 9110 §7.6.1: Connection, Proxy-Connection, Keep-Alive, TE, Transfer-Encoding and Upgrade
 *   describe one HTTP/1.1 connection, as does every field the Connection header names, so an
 *   intermediary removes them; HTTP2-Settings belongs to the h2c upgrade of one connection
 *   (RFC 9113 §3.1 / RFC 7540 §3.2.1).
 * - RFC 9113 §8.2.2: in HTTP/2 those connection-specific fields make a message malformed, with
 *   one exception: `TE: trailers`, which gRPC requires end to end. So in HTTP/2 TE is kept when
 *   its value is exactly `trailers`, and dropped otherwise.
 * - Both: the mesh's own per-hop fields (Linkerd's `l5d-orig-proto` marks an HTTP/1.1 request
 *   carried as HTTP/2 between proxies; `l5d-require-id` is an order to the client's own outbound
 *   proxy) and the proxy credentials (Proxy-Authorization, Proxy-Authenticate), which are meant
 *   for a proxy and must not leak to an app or a peer.
 */

const CONNECTION_FIELDS = [
  'connection',
  'proxy-connection',
  'keep-alive',
  'te',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
];
const MESH_HOP_FIELDS = [
  'l5d-orig-proto',
  'l5d-require-id',
  'proxy-authorization',
  'proxy-authenticate',
];

/**
 * Fields an HTTP/1.1 hop never forwards (lower case), besides those its Connection header names.
 */
export const HOP_BY_HOP_HTTP1: ReadonlySet<string> = new Set([
  ...CONNECTION_FIELDS,
  ...MESH_HOP_FIELDS,
]);

/**
 * Fields an HTTP/2 hop never forwards: the HTTP/1.1 list but TE, which {@link isHopByHop} judges
 * by its value.
 */
export const HOP_BY_HOP_HTTP2: ReadonlySet<string> = new Set(
  [...HOP_BY_HOP_HTTP1].filter((n) => n !== 'te'),
);

/**
 * Whether a field (lower-case name) stops at this hop.
 */
export function isHopByHop(
  protocol: 'http/1.1' | 'h2',
  name: string,
  value?: string | readonly string[],
): boolean {
  if (protocol === 'h2' && name === 'te') return value !== 'trailers';
  return (protocol === 'h2' ? HOP_BY_HOP_HTTP2 : HOP_BY_HOP_HTTP1).has(name);
}

/**
 * The field names a Connection header lists (lower case): options of this hop, dropped with it.
 */
export function connectionOptions(value: string | readonly string[] | undefined): Set<string> {
  const names = new Set<string>();
  for (const v of value === undefined ? [] : typeof value === 'string' ? [value] : value) {
    for (const t of v.split(',')) {
      const n = t.trim().toLowerCase();
      if (n.length > 0) names.add(n);
    }
  }
  return names;
}
