/**
 * A structure-aware fuzzer for Certify requests: seeded randomness, a lenient TLV tree of DER
 * (its own, so that the parser under test does not shape its own inputs), and mutations at three
 * levels: the CSR's DER (bytes, lengths, tags, huge INTEGERs, wrong OIDs, duplicated, dropped and
 * swapped elements, deep nesting), the protobuf message (fields dropped, repeated, of the wrong
 * wire type, unknown, overlong varints, lengths past the end) and the gRPC frame (compressed
 * flag, wrong length prefix, several messages, truncation).
 */
import { varint } from '../../proxy/l5d-transport.js';

/** A seeded PRNG (mulberry32): the same seed gives the same cases, so a failure can be replayed. */
export class Rng {
  #s: number;
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    let t = (this.#s = (this.#s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
}

/** A DER element: constructed ones have children, primitive ones a value. */
export interface Tlv {
  tag: number;
  children?: Tlv[] | undefined;
  value?: Buffer | undefined;
  /** A length to write instead of the true one (a corrupted length). */
  lengthBytes?: Buffer | undefined;
}

/** Parses DER leniently into a tree; undefined when it is not even TLV-shaped. */
export function parseTlv(buf: Buffer): Tlv | undefined {
  const r = readTlv(buf, 0, 0);
  return r !== undefined && r.end === buf.length ? r.node : undefined;
}

function readTlv(buf: Buffer, at: number, depth: number): { node: Tlv; end: number } | undefined {
  if (depth > 64 || at + 2 > buf.length) return undefined;
  const tag = buf[at]!;
  let len = buf[at + 1]!;
  let p = at + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || p + n > buf.length) return undefined;
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[p + i]!;
    p += n;
  }
  const end = p + len;
  if (end > buf.length) return undefined;
  if (tag & 0x20) {
    const children: Tlv[] = [];
    let q = p;
    while (q < end) {
      const c = readTlv(buf.subarray(0, end), q, depth + 1);
      if (c === undefined) return undefined;
      children.push(c.node);
      q = c.end;
    }
    return { node: { tag, children }, end };
  }
  return { node: { tag, value: Buffer.from(buf.subarray(p, end)) }, end };
}

function lengthOf(n: number): Buffer {
  if (n < 0x80) return Buffer.of(n);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** Encodes a tree back to bytes (with any corrupted lengths it carries). */
export function encodeTlv(node: Tlv): Buffer {
  const body =
    node.children !== undefined ? Buffer.concat(node.children.map(encodeTlv)) : node.value!;
  return Buffer.concat([Buffer.of(node.tag), node.lengthBytes ?? lengthOf(body.length), body]);
}

function allNodes(root: Tlv): Tlv[] {
  const out: Tlv[] = [root];
  for (let i = 0; i < out.length; i++) out.push(...(out[i]!.children ?? []));
  return out;
}

function clone(node: Tlv): Tlv {
  return structuredClone(node);
}

/** OIDs a hostile CSR might carry instead of the right ones (contents only). */
const WRONG_OIDS: readonly Buffer[] = [
  Buffer.from('2b81040022', 'hex'), // secp384r1
  Buffer.from('2a864886f70d010101', 'hex'), // rsaEncryption
  Buffer.from('2b6570', 'hex'), // Ed25519
  Buffer.from('2a8648ce3d040301', 'hex'), // ecdsa-with-SHA224
  Buffer.from('2a864886f70d010105', 'hex'), // sha1WithRSA
  Buffer.from('551d11', 'hex'), // subjectAltName, where it does not belong
  Buffer.from('551d13', 'hex'), // basicConstraints
  Buffer.alloc(0), // empty
  Buffer.from('80', 'hex'), // truncated arc
  Buffer.alloc(300, 0x81), // endless arc
];

const LENGTH_LIES: readonly ((n: number) => Buffer)[] = [
  (n) => lengthOf(n + 1),
  (n) => lengthOf(Math.max(0, n - 1)),
  (n) => Buffer.from([0x82, n >> 8, n & 0xff]), // non-minimal long form
  () => Buffer.of(0x80), // indefinite (BER only)
  () => Buffer.from('84ffffffff', 'hex'),
  () => Buffer.from('89ffffffffffffffffff', 'hex'),
  () => Buffer.of(0xff),
];

/** Names a hostile CSR might ask for instead of its own (for DNS SAN and CN values). */
function hostileName(rng: Rng, identity: string): Buffer {
  return rng.pick([
    () => Buffer.from(identity.replace(/^[^.]+/, 'admin')),
    () => Buffer.from(`${identity}.evil.example`),
    () => Buffer.from(identity.toUpperCase()),
    () => Buffer.from(`${identity}\u0000`),
    () => Buffer.from(`*.${identity}`),
    () => Buffer.from('é'.repeat(10) + identity),
    () => Buffer.alloc(70_000, 0x61),
    () => Buffer.alloc(0),
    () => rng.bytes(1 + rng.int(64)),
  ])();
}

/** One structure-aware mutation of a DER tree (in place where possible); returns the new root. */
function mutateTree(root: Tlv, rng: Rng, identity: string): Tlv {
  const nodes = allNodes(root);
  const node = rng.pick(nodes);
  switch (rng.int(11)) {
    case 0: // a lying length
      node.lengthBytes = rng.pick(LENGTH_LIES)(
        encodeTlv({ ...node, lengthBytes: undefined }).length,
      );
      return root;
    case 1: {
      // a huge INTEGER (serials, versions, EC coordinates in signatures)
      const ints = nodes.filter((n) => n.tag === 0x02);
      const target = ints.length > 0 ? rng.pick(ints) : node;
      target.children = undefined;
      target.tag = 0x02;
      target.value = rng.pick([
        () => Buffer.concat([Buffer.of(0x00), rng.bytes(1 + rng.int(5000))]),
        () => Buffer.alloc(1 + rng.int(2000), 0xff),
        () => Buffer.alloc(0),
        () => Buffer.from('0000', 'hex'), // non-minimal
      ])();
      return root;
    }
    case 2: {
      // a wrong OID
      const oids = nodes.filter((n) => n.tag === 0x06);
      const target = oids.length > 0 ? rng.pick(oids) : node;
      target.children = undefined;
      target.tag = 0x06;
      target.value = Buffer.from(rng.pick(WRONG_OIDS));
      return root;
    }
    case 3: {
      // a duplicated element (duplicate extensions, attributes, names)
      const parents = nodes.filter((n) => (n.children?.length ?? 0) > 0);
      if (parents.length === 0) return root;
      const p = rng.pick(parents);
      const i = rng.int(p.children!.length);
      p.children!.splice(i, 0, clone(p.children![i]!));
      return root;
    }
    case 4: {
      // a dropped element
      const parents = nodes.filter((n) => (n.children?.length ?? 0) > 0);
      if (parents.length === 0) return root;
      const p = rng.pick(parents);
      p.children!.splice(rng.int(p.children!.length), 1);
      return root;
    }
    case 5: {
      // two elements swapped
      const parents = nodes.filter((n) => (n.children?.length ?? 0) > 1);
      if (parents.length === 0) return root;
      const c = rng.pick(parents).children!;
      const i = rng.int(c.length);
      const j = rng.int(c.length);
      [c[i], c[j]] = [c[j]!, c[i]!];
      return root;
    }
    case 6: // another tag (keeping the contents)
      node.tag = rng.pick([
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0c, 0x16, 0x30, 0x31, 0xa0, 0x82, 0x1f, 0x00,
      ]);
      if (node.tag & 0x20 && node.children === undefined) {
        node.children = [];
        node.value = undefined;
      } else if (!(node.tag & 0x20) && node.children !== undefined) {
        node.value = encodeTlv({ tag: 0x30, children: node.children }).subarray(2);
        node.children = undefined;
      }
      return root;
    case 7: {
      // deep nesting
      let wrapped = clone(node);
      for (let i = 0, n = 1 + rng.int(200); i < n; i++)
        wrapped = { tag: 0x30, children: [wrapped] };
      Object.assign(node, wrapped, { value: undefined, lengthBytes: undefined });
      return root;
    }
    case 8: {
      // a string value replaced (the SAN's DNS name is context tag 0x82, the CN a UTF8String)
      const strings = nodes.filter((n) => [0x82, 0x0c, 0x13, 0x16].includes(n.tag));
      const target = strings.length > 0 ? rng.pick(strings) : node;
      target.children = undefined;
      target.value = hostileName(rng, identity);
      return root;
    }
    case 9: {
      // an element inserted from elsewhere in the tree
      const parents = nodes.filter((n) => n.children !== undefined);
      if (parents.length === 0) return root;
      const p = rng.pick(parents);
      p.children!.splice(rng.int(p.children!.length + 1), 0, clone(rng.pick(nodes)));
      return root;
    }
    default: {
      // bit flips inside a primitive value
      const prims = nodes.filter((n) => n.value !== undefined && n.value.length > 0);
      if (prims.length === 0) return root;
      const v = rng.pick(prims).value!;
      for (let i = 0, n = 1 + rng.int(3); i < n; i++) v[rng.int(v.length)]! ^= 1 << rng.int(8);
      return root;
    }
  }
}

/** Byte-level damage: flips, truncation, appended garbage, a random window overwritten. */
function mutateBytes(buf: Buffer, rng: Rng): Buffer {
  const b = Buffer.from(buf);
  switch (rng.int(4)) {
    case 0:
      for (let i = 0, n = 1 + rng.int(8); i < n && b.length > 0; i++)
        b[rng.int(b.length)] = rng.int(256);
      return b;
    case 1:
      return b.subarray(0, rng.int(b.length));
    case 2:
      return Buffer.concat([b, rng.bytes(1 + rng.int(32))]);
    default: {
      const at = rng.int(Math.max(1, b.length));
      rng.bytes(Math.min(b.length - at, 1 + rng.int(16))).copy(b, at);
      return b;
    }
  }
}

/** A mutated CSR: one to three structure-aware mutations, sometimes byte-level damage too. */
export function mutateCsr(csr: Buffer, rng: Rng, identity: string): Buffer {
  const tree = parseTlv(csr);
  if (tree === undefined || rng.next() < 0.15) return mutateBytes(csr, rng);
  let root = tree;
  for (let i = 0, n = 1 + rng.int(3); i < n; i++) root = mutateTree(root, rng, identity);
  const out = encodeTlv(root);
  return rng.next() < 0.1 ? mutateBytes(out, rng) : out;
}

/** Protobuf field helpers (Certify's request: 1 identity, 2 token, 3 CSR; all length-delimited). */
function field(num: number, bytes: Buffer): Buffer {
  return Buffer.concat([varint(num * 8 + 2), varint(bytes.length), bytes]);
}

/** The three fields of a CertifyRequest. */
export interface RequestParts {
  identity: Buffer;
  token: Buffer;
  csr: Buffer;
}

/** The canonical encoding of a request (what a well-behaved client sends). */
export function encodeRequest(p: RequestParts): Buffer {
  return Buffer.concat([field(1, p.identity), field(2, p.token), field(3, p.csr)]);
}

/** A mutated protobuf message of the request. */
export function mutateMessage(p: RequestParts, rng: Rng): Buffer {
  const fields = [field(1, p.identity), field(2, p.token), field(3, p.csr)];
  switch (rng.int(9)) {
    case 0: // a field dropped
      fields.splice(rng.int(3), 1);
      break;
    case 1: // a field repeated with another value (which one wins?)
      fields.push(field(1 + rng.int(3), rng.pick([p.identity, p.token, p.csr, rng.bytes(8)])));
      break;
    case 2: // fields in another order (valid protobuf)
      fields.reverse();
      break;
    case 3: // unknown fields of every wire type (valid protobuf: skipped)
      fields.splice(
        rng.int(4),
        0,
        rng.pick([
          Buffer.concat([varint(4 * 8 + 0), varint(rng.int(1e9))]),
          Buffer.concat([varint(5 * 8 + 1), rng.bytes(8)]),
          field(6 + rng.int(1000), rng.bytes(rng.int(20))),
          Buffer.concat([varint(7 * 8 + 5), rng.bytes(4)]),
        ]),
      );
      break;
    case 4: // a known field with the wrong wire type
      fields[rng.int(3)] = Buffer.concat([
        varint((1 + rng.int(3)) * 8 + rng.pick([0, 1, 3, 4, 5, 6, 7])),
        rng.bytes(9),
      ]);
      break;
    case 5: // an overlong varint (tag or length)
      fields[rng.int(3)] = Buffer.concat([Buffer.alloc(11, 0xff), Buffer.of(0x01)]);
      break;
    case 6: {
      // a length past the end, or shorter than the bytes
      const i = rng.int(3);
      const body = [p.identity, p.token, p.csr][i]!;
      fields[i] = Buffer.concat([
        varint((i + 1) * 8 + 2),
        varint(Math.max(0, body.length + rng.pick([1, 100, 1e6, -1]))),
        body,
      ]);
      break;
    }
    case 7: // field number 0 and huge field numbers
      fields.push(Buffer.concat([Buffer.of(0x02), varint(1), Buffer.of(0)]));
      fields.push(Buffer.concat([varint(536870911 * 8 + 2), varint(1), Buffer.of(0)]));
      break;
    default: // bytes damage on the whole message
      return mutateBytes(Buffer.concat(fields), rng);
  }
  return Buffer.concat(fields);
}

/** The gRPC frame of a message: flag 0, 4-byte big-endian length, the message. */
export function frame(message: Buffer, flag = 0, length = message.length): Buffer {
  const prefix = Buffer.alloc(5);
  prefix[0] = flag;
  prefix.writeUInt32BE(length >>> 0, 1);
  return Buffer.concat([prefix, message]);
}

/** A damaged gRPC frame around `message`. */
export function mutateFrame(message: Buffer, rng: Rng): Buffer {
  switch (rng.int(7)) {
    case 0:
      return frame(message, 1); // "compressed" with identity encoding
    case 1:
      return frame(message, rng.pick([2, 0x80, 0xff]));
    case 2:
      return frame(message, 0, message.length + 1 + rng.int(100));
    case 3:
      return frame(message, 0, Math.max(0, message.length - 1 - rng.int(message.length)));
    case 4:
      return Buffer.concat([frame(message), frame(message)]); // two messages on a unary call
    case 5:
      return frame(message).subarray(0, rng.int(5)); // a partial prefix
    default:
      return Buffer.alloc(0);
  }
}
