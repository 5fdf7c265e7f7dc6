/**
 * A hand-framed HTTP/2 request, for sending what node's own client refuses to send: header
 * names in upper case, unknown pseudo-headers, CR/LF or NUL in values, spaces in `:path`. The
 * HPACK block uses only "literal without indexing, new name" fields with no Huffman coding
 * (RFC 7541 §6.2.2), so any byte can be put on the wire. The answer is read only as far as
 * telling a response (HEADERS) from a reset (RST_STREAM with its code) on stream 1.
 */
import type { Duplex } from 'node:stream';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const DATA = 0x0;
const HEADERS = 0x1;
const RST_STREAM = 0x3;
const GOAWAY = 0x7;
const END_STREAM = 0x1;
const END_HEADERS = 0x4;

/** An HPACK integer with an `prefix`-bit prefix (RFC 7541 §5.1). */
function hpackInt(n: number, prefix: number): number[] {
  const max = (1 << prefix) - 1;
  if (n < max) return [n];
  const out = [max];
  let v = n - max;
  while (v >= 128) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return out;
}

function hpackString(s: string): Buffer {
  const b = Buffer.from(s, 'latin1');
  return Buffer.concat([Buffer.from(hpackInt(b.length, 7)), b]);
}

function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream, 5);
  return Buffer.concat([head, payload]);
}

function headerBlock(fields: readonly (readonly [string, string])[]): Buffer {
  return Buffer.concat(
    fields.map(([n, v]) => Buffer.concat([Buffer.from([0]), hpackString(n), hpackString(v)])),
  );
}

/** How the server answered stream 1. */
export type RawH2Outcome =
  | { readonly kind: 'response' }
  | { readonly kind: 'reset'; readonly code: number }
  | { readonly kind: 'goaway'; readonly code: number }
  | { readonly kind: 'closed' };

/**
 * Sends the connection preface, an empty SETTINGS frame and one request on stream 1 over
 * `socket` (already connected, TLS with ALPN h2 or h2c): `fields` in order, then `body` as one
 * DATA frame and `trailers` as a second HEADERS frame when given. Resolves with the first
 * answer about stream 1, or the connection's end.
 */
export function rawH2Request(
  socket: Duplex,
  fields: readonly (readonly [string, string])[],
  o: { body?: string; trailers?: readonly (readonly [string, string])[] } = {},
): Promise<RawH2Outcome> {
  const last = o.body === undefined && o.trailers === undefined;
  const parts = [
    PREFACE,
    frame(0x4, 0, 0, Buffer.alloc(0)),
    frame(HEADERS, END_HEADERS | (last ? END_STREAM : 0), 1, headerBlock(fields)),
  ];
  if (o.body !== undefined) {
    const end = o.trailers === undefined ? END_STREAM : 0;
    parts.push(frame(DATA, end, 1, Buffer.from(o.body, 'latin1')));
  }
  if (o.trailers !== undefined) {
    parts.push(frame(HEADERS, END_HEADERS | END_STREAM, 1, headerBlock(o.trailers)));
  }
  return new Promise((resolve) => {
    let got = Buffer.alloc(0);
    const done = (outcome: RawH2Outcome): void => {
      socket.off('data', onData);
      socket.off('close', onClose);
      resolve(outcome);
    };
    const onData = (chunk: Buffer): void => {
      got = Buffer.concat([got, chunk]);
      while (got.length >= 9) {
        const length = got.readUIntBE(0, 3);
        if (got.length < 9 + length) return;
        const type = got[3]!;
        const stream = got.readUInt32BE(5) & 0x7fffffff;
        const payload = got.subarray(9, 9 + length);
        got = got.subarray(9 + length);
        if (type === HEADERS && stream === 1) return done({ kind: 'response' });
        if (type === RST_STREAM && stream === 1) {
          return done({ kind: 'reset', code: payload.readUInt32BE(0) });
        }
        if (type === GOAWAY) return done({ kind: 'goaway', code: payload.readUInt32BE(4) });
      }
    };
    const onClose = (): void => done({ kind: 'closed' });
    socket.on('data', onData);
    socket.once('close', onClose);
    socket.write(Buffer.concat(parts));
  });
}

/** What a {@link rawH2Flood} has seen from the server so far. */
export interface FloodView {
  /** RST_STREAM frames received, by error code (7 = REFUSED_STREAM). */
  readonly resets: Map<number, number>;
  /** The SETTINGS_MAX_CONCURRENT_STREAMS the server advertised, if it did. */
  maxConcurrentStreams: number | undefined;
  /** The GOAWAY error code, if the server sent one. */
  goaway: number | undefined;
  /** Resolves when the server has answered the PING sent after the flood: it read every frame. */
  readonly allRead: Promise<void>;
}

/**
 * A hostile HTTP/2 client: opens `streams` request streams on `socket` (TLS with ALPN h2, or
 * h2c) as fast as it can write, ignoring the server's SETTINGS_MAX_CONCURRENT_STREAMS, each with
 * `fields`, and a first DATA frame of `body` without END_STREAM (an unfinished upload), then
 * a PING. Never reads a response body and never sends WINDOW_UPDATE.
 */
export function rawH2Flood(
  socket: Duplex,
  fields: readonly (readonly [string, string])[],
  o: { streams: number; body: string },
): FloodView {
  const block = headerBlock(fields);
  const data = Buffer.from(o.body, 'latin1');
  let pinged: () => void = () => undefined;
  const view: FloodView = {
    resets: new Map(),
    maxConcurrentStreams: undefined,
    goaway: undefined,
    allRead: new Promise<void>((resolve) => (pinged = resolve)),
  };
  let got = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    got = Buffer.concat([got, chunk]);
    while (got.length >= 9) {
      const length = got.readUIntBE(0, 3);
      if (got.length < 9 + length) return;
      const type = got[3]!;
      const flags = got[4]!;
      const payload = got.subarray(9, 9 + length);
      got = got.subarray(9 + length);
      if (type === RST_STREAM) {
        const code = payload.readUInt32BE(0);
        view.resets.set(code, (view.resets.get(code) ?? 0) + 1);
      } else if (type === GOAWAY) {
        view.goaway = payload.readUInt32BE(4);
      } else if (type === 0x4 && (flags & 0x1) === 0) {
        for (let i = 0; i + 6 <= payload.length; i += 6) {
          if (payload.readUInt16BE(i) === 0x3)
            view.maxConcurrentStreams = payload.readUInt32BE(i + 2);
        }
        socket.write(frame(0x4, 0x1, 0, Buffer.alloc(0))); // SETTINGS ACK
      } else if (type === 0x6 && (flags & 0x1) === 1) {
        pinged();
      }
    }
  });
  socket.once('close', () => pinged());
  const batch: Buffer[] = [PREFACE, frame(0x4, 0, 0, Buffer.alloc(0))];
  for (let i = 0; i < o.streams; i++) {
    const id = 2 * i + 1;
    batch.push(frame(HEADERS, END_HEADERS, id, block), frame(DATA, 0, id, data));
    if (batch.length >= 512) socket.write(Buffer.concat(batch.splice(0)));
  }
  batch.push(frame(0x6, 0, 0, Buffer.alloc(8)));
  socket.write(Buffer.concat(batch));
  return view;
}
