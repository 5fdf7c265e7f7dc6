/**
 * Linkerd's opaque-transport header (`transport.l5d.io/v1`): a linkerd2-proxy outbound that
 * negotiated this ALPN protocol sends, before the application's bytes, the preface
 * `transport.l5d.io/v1\r\n\r\n`, a u32 big-endian length and a protobuf `Header`:
 *
 * ```proto
 * message Header { int32 port = 1; string name = 2; SessionProtocol session_protocol = 3; }
 * message SessionProtocol { message Http1 {} message Http2 {} oneof kind { Http1 http1 = 1; Http2 http2 = 2; } }
 * ```
 *
 * The port names the target port on the pod; the inbound routes there only if the port is one of
 * the app's configured ports. The codec is written here (a few varints) rather than pulling a
 * protobuf runtime into every sidecar.
 */
import type { Socket } from 'node:net';

/** The ALPN protocol name, and the preface's text. */
export const TRANSPORT_HEADER_ALPN = 'transport.l5d.io/v1';

const PREFACE = Buffer.from(`${TRANSPORT_HEADER_ALPN}\r\n\r\n`, 'latin1');
/** Linkerd's own bound on the message (its read buffer). */
const MAX_MESSAGE_BYTES = 64 * 1024;

/** A decoded header. */
export interface TransportHeader {
  readonly port: number;
  /** The logical name (gateway forwarding); empty when not given. */
  readonly name: string;
  /** The session protocol, or undefined for an opaque connection. */
  readonly protocol: 'http1' | 'http2' | undefined;
}

/** A header that cannot be read; the connection is closed. */
export class TransportHeaderError extends Error {
  override readonly name = 'TransportHeaderError';
}

/**
 * Encodes a header with its preface (what a Linkerd outbound writes).
 */
export function encodeTransportHeader(h: TransportHeader): Buffer {
  const parts: Buffer[] = [];
  if (h.port !== 0) parts.push(Buffer.from([0x08]), varint(h.port));
  if (h.name.length > 0) {
    const name = Buffer.from(h.name, 'utf8');
    parts.push(Buffer.from([0x12]), varint(name.length), name);
  }
  if (h.protocol !== undefined) {
    // SessionProtocol { http1 (1) | http2 (2): an empty message }
    const inner = Buffer.from([h.protocol === 'http1' ? 0x0a : 0x12, 0x00]);
    parts.push(Buffer.from([0x1a]), varint(inner.length), inner);
  }
  const message = Buffer.concat(parts);
  const length = Buffer.alloc(4);
  length.writeUInt32BE(message.length);
  return Buffer.concat([PREFACE, length, message]);
}

/** A protobuf base-128 varint (also the fuzzers' field encoder, test/support/fuzz.ts). */
export function varint(n: number): Buffer {
  const out: number[] = [];
  let v = n;
  while (v > 0x7f) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Buffer.from(out);
}

/** A protobuf reader over one message: just what the header needs. */
class Reader {
  pos = 0;
  constructor(readonly buf: Buffer) {}
  get done(): boolean {
    return this.pos >= this.buf.length;
  }
  varint(): number {
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.buf.length) throw new TransportHeaderError('truncated varint');
      const b = this.buf[this.pos++]!;
      // Beyond 2^53 the value is garbage for our purposes; it only has to be consumed.
      if (i < 8) result += (b & 0x7f) * scale;
      scale *= 128;
      if ((b & 0x80) === 0) return result;
    }
    throw new TransportHeaderError('varint longer than 10 bytes');
  }
  bytes(): Buffer {
    const n = this.varint();
    if (n > this.buf.length - this.pos) throw new TransportHeaderError('truncated field');
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  skip(wireType: number): void {
    switch (wireType) {
      case 0:
        this.varint();
        return;
      case 1:
        this.pos += 8;
        break;
      case 2:
        this.bytes();
        return;
      case 5:
        this.pos += 4;
        break;
      default:
        throw new TransportHeaderError(`unsupported protobuf wire type ${wireType}`);
    }
    if (this.pos > this.buf.length) throw new TransportHeaderError('truncated field');
  }
}

/**
 * Decodes the protobuf `Header` message (without preface and length).
 * @throws TransportHeaderError when it is malformed or the port is not 1-65535.
 */
export function decodeTransportHeaderMessage(message: Buffer): TransportHeader {
  const r = new Reader(message);
  let port = 0;
  let name = '';
  let protocol: TransportHeader['protocol'];
  while (!r.done) {
    const key = r.varint();
    const field = Math.floor(key / 8);
    const wire = key % 8;
    if (field === 1 && wire === 0) {
      port = r.varint();
    } else if (field === 2 && wire === 2) {
      name = r.bytes().toString('utf8');
    } else if (field === 3 && wire === 2) {
      const inner = new Reader(r.bytes());
      while (!inner.done) {
        const k = inner.varint();
        if (k === 0x0a) {
          inner.bytes();
          protocol = 'http1';
        } else if (k === 0x12) {
          inner.bytes();
          protocol = 'http2';
        } else {
          inner.skip(k % 8);
        }
      }
    } else {
      r.skip(wire);
    }
  }
  // int32 on the wire: a negative port arrives as a huge varint and fails here, as in Linkerd.
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new TransportHeaderError(`invalid port ${port} in the transport header`);
  }
  return { port, name, protocol };
}

/**
 * Reads the prefaced header from `socket` (a TLS socket whose ALPN was
 * {@link TRANSPORT_HEADER_ALPN}): resolves with it and the bytes read past it, which the caller
 * treats as the connection's first bytes. The socket is paused when it resolves.
 *
 * @throws TransportHeaderError when the preface is wrong, the message is too long or malformed,
 *   the peer closed first, or nothing complete came within `timeoutMs`.
 */
export function readTransportHeader(
  socket: Socket,
  timeoutMs: number,
): Promise<{ header: TransportHeader; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    let got: Buffer = Buffer.alloc(0);
    const finish = (err: Error | undefined, value?: { header: TransportHeader; rest: Buffer }) => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
      socket.pause();
      if (err !== undefined) reject(err);
      else resolve(value!);
    };
    const onData = (chunk: Buffer): void => {
      got = Buffer.concat([got, chunk]);
      const n = Math.min(got.length, PREFACE.length);
      if (!got.subarray(0, n).equals(PREFACE.subarray(0, n))) {
        finish(new TransportHeaderError('the connection does not start with the transport header'));
        return;
      }
      if (got.length < PREFACE.length + 4) return;
      const length = got.readUInt32BE(PREFACE.length);
      if (length > MAX_MESSAGE_BYTES) {
        finish(new TransportHeaderError(`transport header of ${length} bytes is too long`));
        return;
      }
      const end = PREFACE.length + 4 + length;
      if (got.length < end) return;
      try {
        const header = decodeTransportHeaderMessage(got.subarray(PREFACE.length + 4, end));
        finish(undefined, { header, rest: got.subarray(end) });
      } catch (err) {
        finish(err as Error);
      }
    };
    const onEnd = (): void =>
      finish(new TransportHeaderError('the peer closed before the transport header was complete'));
    const timer = setTimeout(
      () => finish(new TransportHeaderError(`no complete transport header within ${timeoutMs} ms`)),
      timeoutMs,
    );
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.once('close', onEnd);
    socket.resume();
  });
}
