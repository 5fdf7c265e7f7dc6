/**
 * Protobuf encoding of the Destination messages meshid uses (`destination/proto/destination.proto`,
 * the subset of Linkerd's `io.linkerd.proxy.destination` API with the same field numbers). In
 * core because both ends use it: the destination service encodes updates, the proxy decodes them.
 * Tested against protobufjs loading the .proto.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { MeshidError } from './errors.js';
import { formatIpv6 } from './ip.js';
import { ProtoReader, ProtoWriter, WIRE_I32, WIRE_I64, WIRE_LEN, WIRE_VARINT } from './protobuf.js';

/** The method paths on the wire. */
export const DESTINATION_GET_PATH = '/io.linkerd.proxy.destination.Destination/Get';
export const DESTINATION_GET_PROFILE_PATH = '/io.linkerd.proxy.destination.Destination/GetProfile';

/** `GetDestination`: what a proxy asks about. */
export interface GetDestination {
  readonly scheme: string;
  /** `<ip>:<port>` (IPv6 in brackets) or `<svc>.<ns>.svc.<cluster-domain>:<port>`. */
  readonly path: string;
  readonly contextToken: string;
}

/** `net.TcpAddress`, with the IP as text (IPv6 in its RFC 5952 form, no brackets). */
export interface TcpAddress {
  readonly ip: string;
  readonly port: number;
}

/** `ProtocolHint`. */
export interface ProtocolHint {
  /** `h2`: the endpoint's proxy takes HTTP on its multiplexed HTTP/2; `opaque`: bytes as they are. */
  readonly protocol?: 'h2' | 'opaque';
  /** Set when the endpoint's proxy takes this port wrapped in `transport.l5d.io/v1` on its inbound port. */
  readonly opaqueTransport?: { readonly inboundPort: number };
}

/** `WeightedAddr`: one endpoint. */
export interface WeightedAddr {
  readonly addr: TcpAddress;
  readonly weight: number;
  readonly metricLabels: Readonly<Record<string, string>>;
  /** The identity the endpoint's certificate must name (`tls_identity.dns_like_identity.name`); absent when unmeshed. */
  readonly tlsIdentity?: string;
  readonly protocolHint?: ProtocolHint;
}

/** `Update`: exactly one of its three. */
export type DestinationUpdate =
  | {
      readonly add: {
        readonly addrs: readonly WeightedAddr[];
        readonly metricLabels: Readonly<Record<string, string>>;
      };
    }
  | { readonly remove: { readonly addrs: readonly TcpAddress[] } }
  | { readonly noEndpoints: { readonly exists: boolean } };

/** `DestinationProfile`, the fields meshid sets. */
export interface DestinationProfile {
  readonly fullyQualifiedName: string;
  readonly opaqueProtocol: boolean;
  readonly endpoint?: WeightedAddr;
}

// ---- addresses ----------------------------------------------------------------------------------

/** The 16 bytes of an IPv6 address in text (with `::` and an embedded IPv4 tail allowed). */
function ipv6Bytes(text: string): Buffer {
  const out = Buffer.alloc(16);
  let s = text;
  const tail: number[] = [];
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (v4 !== null) {
    tail.push(...v4[1]!.split('.').map(Number));
    s = `${s.slice(0, v4.index)}0:0`;
  }
  const [head, rest] = s.includes('::') ? (s.split('::') as [string, string]) : [s, undefined];
  const h = head === '' ? [] : head.split(':');
  const r = rest === undefined || rest === '' ? [] : rest.split(':');
  const groups =
    rest === undefined ? h : [...h, ...Array<string>(8 - h.length - r.length).fill('0'), ...r];
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  if (tail.length === 4) out.set(tail, 12);
  return out;
}

/**
 * The canonical text of an IP address (IPv6 as RFC 5952, IPv4 as is), or undefined when `text`
 * is not one. Both ends key endpoints by this text.
 *
 * @example
 * ```ts
 * canonicalIp('FD00:0:0::1'); // 'fd00::1'
 * ```
 */
export function canonicalIp(text: string): string | undefined {
  if (isIPv4(text)) return text;
  if (isIPv6(text) && !text.includes('%')) return formatIpv6(ipv6Bytes(text));
  return undefined;
}

function encodeTcpAddress(a: TcpAddress): ProtoWriter {
  const ip = new ProtoWriter();
  if (isIPv4(a.ip)) {
    const [x, y, z, w] = a.ip.split('.').map(Number) as [number, number, number, number];
    ip.fixed32(1, ((x << 24) | (y << 16) | (z << 8) | w) >>> 0);
  } else if (isIPv6(a.ip)) {
    const b = ipv6Bytes(a.ip);
    ip.message(
      2,
      new ProtoWriter().fixed64(1, b.readBigUInt64BE(0)).fixed64(2, b.readBigUInt64BE(8)),
    );
  } else {
    throw new MeshidError('ERR_REQUEST_INVALID', `"${a.ip}" is not an IP address`);
  }
  return new ProtoWriter().message(1, ip).uint(2, a.port);
}

function decodeTcpAddress(buf: Uint8Array): TcpAddress {
  const r = new ProtoReader(buf, 'TcpAddress');
  let ip = '';
  let port = 0;
  while (!r.done) {
    const { field, wireType } = r.tag();
    if (field === 1 && wireType === WIRE_LEN) ip = decodeIp(r.bytes());
    else if (field === 2 && wireType === WIRE_VARINT) port = r.varint();
    else r.skip(wireType);
  }
  if (ip === '') throw r.malformed('address has no IP');
  if (port > 65535) throw r.malformed(`port ${port} is over 65535`);
  return { ip, port };
}

function decodeIp(buf: Uint8Array): string {
  const r = new ProtoReader(buf, 'IPAddress');
  let ip = '';
  while (!r.done) {
    const { field, wireType } = r.tag();
    if (field === 1 && wireType === WIRE_I32) {
      const n = r.fixed32();
      ip = [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
    } else if (field === 2 && wireType === WIRE_LEN) {
      const v6 = new ProtoReader(r.bytes(), 'IPv6');
      const b = Buffer.alloc(16);
      while (!v6.done) {
        const t = v6.tag();
        if ((t.field === 1 || t.field === 2) && t.wireType === WIRE_I64)
          b.writeBigUInt64BE(v6.fixed64(), t.field === 1 ? 0 : 8);
        else v6.skip(t.wireType);
      }
      ip = formatIpv6(b);
    } else r.skip(wireType);
  }
  return ip;
}

// ---- requests -----------------------------------------------------------------------------------

/**
 * Encodes a GetDestination (the proxy's side).
 *
 * @example
 * ```ts
 * encodeGetDestination({ scheme: 'k8s', path: '10.96.0.10:80', contextToken: '' });
 * ```
 */
export function encodeGetDestination(req: GetDestination): Buffer {
  return new ProtoWriter()
    .string(1, req.scheme)
    .string(2, req.path)
    .string(3, req.contextToken)
    .finish();
}

/**
 * Decodes a GetDestination; ERR_REQUEST_INVALID when it is not one.
 *
 * @example
 * ```ts
 * const { path } = decodeGetDestination(bytes);
 * ```
 */
export function decodeGetDestination(buf: Uint8Array): GetDestination {
  const r = new ProtoReader(buf, 'GetDestination');
  const out = { scheme: '', path: '', contextToken: '' };
  const names = ['scheme', 'path', 'contextToken'] as const;
  while (!r.done) {
    const { field, wireType } = r.tag();
    if (field >= 1 && field <= 3) {
      r.expect(field, wireType, WIRE_LEN);
      const name = names[field - 1]!;
      out[name] = r.string(name);
    } else r.skip(wireType);
  }
  return out;
}

// ---- updates ------------------------------------------------------------------------------------

function encodeWeightedAddr(a: WeightedAddr): ProtoWriter {
  const w = new ProtoWriter().message(1, encodeTcpAddress(a.addr)).uint(3, a.weight);
  w.stringMap(4, a.metricLabels);
  if (a.tlsIdentity !== undefined) {
    w.message(5, new ProtoWriter().message(1, new ProtoWriter().string(1, a.tlsIdentity)));
  }
  const hint = a.protocolHint;
  if (hint !== undefined) {
    const h = new ProtoWriter();
    if (hint.protocol === 'h2') h.message(1, new ProtoWriter());
    if (hint.opaqueTransport !== undefined)
      h.message(2, new ProtoWriter().uint(1, hint.opaqueTransport.inboundPort));
    if (hint.protocol === 'opaque') h.message(3, new ProtoWriter());
    w.message(6, h);
  }
  return w;
}

function decodeStringMapEntry(buf: Uint8Array, into: Record<string, string>): void {
  const r = new ProtoReader(buf, 'map entry');
  let key = '';
  let value = '';
  while (!r.done) {
    const { field, wireType } = r.tag();
    if (field === 1 && wireType === WIRE_LEN) key = r.string('map key');
    else if (field === 2 && wireType === WIRE_LEN) value = r.string('map value');
    else r.skip(wireType);
  }
  into[key] = value;
}

function decodeWeightedAddr(buf: Uint8Array): WeightedAddr {
  const r = new ProtoReader(buf, 'WeightedAddr');
  let addr: TcpAddress | undefined;
  let weight = 0;
  const metricLabels: Record<string, string> = {};
  let tlsIdentity: string | undefined;
  let protocolHint: ProtocolHint | undefined;
  while (!r.done) {
    const { field, wireType } = r.tag();
    if (field === 1 && wireType === WIRE_LEN) addr = decodeTcpAddress(r.bytes());
    else if (field === 3 && wireType === WIRE_VARINT) weight = r.varint();
    else if (field === 4 && wireType === WIRE_LEN) decodeStringMapEntry(r.bytes(), metricLabels);
    else if (field === 5 && wireType === WIRE_LEN) tlsIdentity = decodeTlsIdentity(r.bytes());
    else if (field === 6 && wireType === WIRE_LEN) protocolHint = decodeProtocolHint(r.bytes());
    else r.skip(wireType);
  }
  if (addr === undefined) throw r.malformed('endpoint has no address');
  return {
    addr,
    weight,
    metricLabels,
    ...(tlsIdentity === undefined ? {} : { tlsIdentity }),
    ...(protocolHint === undefined ? {} : { protocolHint }),
  };
}

/** The DNS-like name of a TlsIdentity; undefined for another strategy (a URI identity). */
function decodeTlsIdentity(buf: Uint8Array): string | undefined {
  const r = new ProtoReader(buf, 'TlsIdentity');
  let name: string | undefined;
  while (!r.done) {
    const { field, wireType } = r.tag();
    if (field === 1 && wireType === WIRE_LEN) {
      const inner = new ProtoReader(r.bytes(), 'DnsLikeIdentity');
      while (!inner.done) {
        const t = inner.tag();
        if (t.field === 1 && t.wireType === WIRE_LEN) name = inner.string('identity name');
        else inner.skip(t.wireType);
      }
    } else r.skip(wireType);
  }
  return name === '' ? undefined : name;
}

function decodeProtocolHint(buf: Uint8Array): ProtocolHint {
  const r = new ProtoReader(buf, 'ProtocolHint');
  let protocol: 'h2' | 'opaque' | undefined;
  let inboundPort: number | undefined;
  while (!r.done) {
    const { field, wireType } = r.tag();
    if (field === 1 && wireType === WIRE_LEN) {
      r.bytes();
      protocol = 'h2';
    } else if (field === 3 && wireType === WIRE_LEN) {
      r.bytes();
      protocol = 'opaque';
    } else if (field === 2 && wireType === WIRE_LEN) {
      const inner = new ProtoReader(r.bytes(), 'OpaqueTransport');
      inboundPort = 0;
      while (!inner.done) {
        const t = inner.tag();
        if (t.field === 1 && t.wireType === WIRE_VARINT) inboundPort = inner.varint();
        else inner.skip(t.wireType);
      }
    } else r.skip(wireType);
  }
  return {
    ...(protocol === undefined ? {} : { protocol }),
    ...(inboundPort === undefined ? {} : { opaqueTransport: { inboundPort } }),
  };
}

/**
 * Encodes an Update (the destination service's side).
 *
 * @example
 * ```ts
 * encodeDestinationUpdate({ noEndpoints: { exists: false } });
 * ```
 */
export function encodeDestinationUpdate(u: DestinationUpdate): Buffer {
  const w = new ProtoWriter();
  if ('add' in u) {
    const set = new ProtoWriter();
    for (const a of u.add.addrs) set.message(1, encodeWeightedAddr(a));
    set.stringMap(2, u.add.metricLabels);
    w.message(1, set);
  } else if ('remove' in u) {
    const set = new ProtoWriter();
    for (const a of u.remove.addrs) set.message(1, encodeTcpAddress(a));
    w.message(2, set);
  } else {
    w.message(3, new ProtoWriter().bool(1, u.noEndpoints.exists));
  }
  return w.finish();
}

/**
 * Decodes an Update; ERR_REQUEST_INVALID when it is not one (none of its three set).
 *
 * @example
 * ```ts
 * const u = decodeDestinationUpdate(bytes);
 * if ('add' in u) for (const a of u.add.addrs) console.log(a.addr, a.tlsIdentity);
 * ```
 */
export function decodeDestinationUpdate(buf: Uint8Array): DestinationUpdate {
  const r = new ProtoReader(buf, 'Update');
  let update: DestinationUpdate | undefined;
  while (!r.done) {
    const { field, wireType } = r.tag();
    if (field === 1 && wireType === WIRE_LEN) {
      const set = new ProtoReader(r.bytes(), 'WeightedAddrSet');
      const addrs: WeightedAddr[] = [];
      const metricLabels: Record<string, string> = {};
      while (!set.done) {
        const t = set.tag();
        if (t.field === 1 && t.wireType === WIRE_LEN) addrs.push(decodeWeightedAddr(set.bytes()));
        else if (t.field === 2 && t.wireType === WIRE_LEN)
          decodeStringMapEntry(set.bytes(), metricLabels);
        else set.skip(t.wireType);
      }
      update = { add: { addrs, metricLabels } };
    } else if (field === 2 && wireType === WIRE_LEN) {
      const set = new ProtoReader(r.bytes(), 'AddrSet');
      const addrs: TcpAddress[] = [];
      while (!set.done) {
        const t = set.tag();
        if (t.field === 1 && t.wireType === WIRE_LEN) addrs.push(decodeTcpAddress(set.bytes()));
        else set.skip(t.wireType);
      }
      update = { remove: { addrs } };
    } else if (field === 3 && wireType === WIRE_LEN) {
      const ne = new ProtoReader(r.bytes(), 'NoEndpoints');
      let exists = false;
      while (!ne.done) {
        const t = ne.tag();
        if (t.field === 1 && t.wireType === WIRE_VARINT) exists = ne.varint() !== 0;
        else ne.skip(t.wireType);
      }
      update = { noEndpoints: { exists } };
    } else r.skip(wireType);
  }
  if (update === undefined) throw r.malformed('none of add, remove and no_endpoints is set');
  return update;
}

/**
 * Encodes a DestinationProfile.
 *
 * @example
 * ```ts
 * encodeDestinationProfile({ fullyQualifiedName: 'web.emojivoto.svc.cluster.local', opaqueProtocol: false });
 * ```
 */
export function encodeDestinationProfile(p: DestinationProfile): Buffer {
  const w = new ProtoWriter().bool(4, p.opaqueProtocol).string(5, p.fullyQualifiedName);
  if (p.endpoint !== undefined) w.message(6, encodeWeightedAddr(p.endpoint));
  return w.finish();
}

/**
 * Decodes a DestinationProfile (the fields meshid sets; routes and the rest are skipped).
 *
 * @example
 * ```ts
 * const { fullyQualifiedName, opaqueProtocol } = decodeDestinationProfile(bytes);
 * ```
 */
export function decodeDestinationProfile(buf: Uint8Array): DestinationProfile {
  const r = new ProtoReader(buf, 'DestinationProfile');
  let fullyQualifiedName = '';
  let opaqueProtocol = false;
  let endpoint: WeightedAddr | undefined;
  while (!r.done) {
    const { field, wireType } = r.tag();
    if (field === 5 && wireType === WIRE_LEN) fullyQualifiedName = r.string('fully_qualified_name');
    else if (field === 4 && wireType === WIRE_VARINT) opaqueProtocol = r.varint() !== 0;
    else if (field === 6 && wireType === WIRE_LEN) endpoint = decodeWeightedAddr(r.bytes());
    else r.skip(wireType);
  }
  return { fullyQualifiedName, opaqueProtocol, ...(endpoint === undefined ? {} : { endpoint }) };
}
