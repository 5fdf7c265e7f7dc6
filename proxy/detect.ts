/**
 * Protocol detection on the first bytes a client sends: HTTP/2 by its connection preface,
 * HTTP/1.x by its request line, anything else opaque.
 *
 * The answer for bytes that are still a prefix of an HTTP request (a request line not yet
 * complete) is HTTP, not opaque: passing such a connection through unparsed would let the rest of
 * the request reach the application with whatever `l5d-client-id` the client wrote. So a client
 * that stalls mid-request-line, or sends an over-long one, still goes through an HTTP parser,
 * which enforces its own limits.
 */
import type { Socket } from 'node:net';

/** What a connection speaks, as far as the proxy cares. */
export type DetectedProtocol = 'http1' | 'http2' | 'opaque';

/** The result of looking at a connection's first bytes. */
export interface Detection {
  /** The protocol to use if no more bytes come. */
  readonly protocol: DetectedProtocol;
  /** False when more bytes could still change the answer. */
  readonly decided: boolean;
}

/** The HTTP/2 client connection preface (RFC 9113 §3.4). */
export const HTTP2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

const HTTP1_VERSION = Buffer.from(' HTTP/1.', 'latin1');

/** RFC 9110 tchar: the characters of a method token. */
function isTchar(b: number): boolean {
  return (
    (b >= 0x30 && b <= 0x39) ||
    (b >= 0x41 && b <= 0x5a) ||
    (b >= 0x61 && b <= 0x7a) ||
    // ! # $ % & ' * + - . ^ _ ` | ~
    "!#$%&'*+-.^_`|~".includes(String.fromCharCode(b))
  );
}

/** A request-target byte: visible ASCII (no spaces or controls). */
function isTargetByte(b: number): boolean {
  return b > 0x20 && b < 0x7f;
}

/** How far `bytes` match the start of `pattern`: 'full', 'prefix' (ran out) or 'no'. */
function matchAt(bytes: Uint8Array, at: number, pattern: Uint8Array): 'full' | 'prefix' | 'no' {
  for (let i = 0; i < pattern.length; i++) {
    if (at + i >= bytes.length) return 'prefix';
    if (bytes[at + i] !== pattern[i]) return 'no';
  }
  return 'full';
}

/**
 * Looks for `method SP request-target SP "HTTP/1."`, after any empty lines (which HTTP/1 servers
 * skip, so they must not make a request look opaque).
 */
function detectHttp1(bytes: Uint8Array): 'full' | 'prefix' | 'no' {
  let i = 0;
  while (i < bytes.length && (bytes[i] === 0x0d || bytes[i] === 0x0a)) i++;
  const methodStart = i;
  while (i < bytes.length && isTchar(bytes[i]!)) i++;
  if (i === bytes.length) return 'prefix';
  if (i === methodStart || bytes[i] !== 0x20) return 'no';
  // Runs of spaces are accepted: leaning to HTTP costs a weird opaque protocol a 400 from the
  // parser, leaning to opaque could let a lenient app parser read headers the proxy never saw.
  while (i < bytes.length && bytes[i] === 0x20) i++;
  const targetStart = i;
  while (i < bytes.length && isTargetByte(bytes[i]!)) i++;
  if (i === bytes.length) return 'prefix';
  if (i === targetStart) return 'no';
  while (i + 1 < bytes.length && bytes[i + 1] === 0x20) i++;
  return matchAt(bytes, i, HTTP1_VERSION);
}

/**
 * Classifies a connection by its first bytes.
 */
export function detectProtocol(bytes: Uint8Array): Detection {
  if (bytes.length === 0) return { protocol: 'opaque', decided: false };
  const h2 = matchAt(bytes, 0, HTTP2_PREFACE);
  if (h2 === 'full') return { protocol: 'http2', decided: true };
  const h1 = detectHttp1(bytes);
  if (h1 === 'full') return { protocol: 'http1', decided: true };
  // "PRI * HTTP/" is a prefix of both; the preface is the more specific reading.
  if (h2 === 'prefix') return { protocol: 'http2', decided: false };
  if (h1 === 'prefix') return { protocol: 'http1', decided: false };
  return { protocol: 'opaque', decided: true };
}

/** What {@link readFirstBytes} saw. */
export interface FirstBytes {
  readonly bytes: Buffer;
  readonly detection: Detection;
  /** The client ended its side (or the socket closed) before a decision. */
  readonly ended: boolean;
  /** The timeout passed before a decision. */
  readonly timedOut: boolean;
}

/**
 * Reads from `socket` until {@link detectProtocol} decides, `maxBytes` are in, the client ends,
 * or `timeoutMs` passes; then pauses the socket and hands back what was read (not put back: the
 * caller unshifts it or writes it on, as its protocol needs). The first chunk usually decides,
 * so a client that speaks first waits for no extra round trip.
 */
export async function readFirstBytes(
  socket: Socket,
  opts: { readonly timeoutMs: number; readonly maxBytes: number },
): Promise<FirstBytes> {
  const read = await readUntil(
    socket,
    opts.timeoutMs,
    (seen) => detectProtocol(seen).decided || seen.length >= opts.maxBytes,
  );
  return { ...read, detection: detectProtocol(read.bytes) };
}

/**
 * Reads from `socket` until `enough` says what has arrived decides, the client ends, or
 * `timeoutMs` passes; then pauses the socket and hands back what was read. The one reader of a
 * connection's first bytes (protocol detection, the ClientHello peek, the outbound sniff).
 */
export function readUntil(
  socket: Socket,
  timeoutMs: number,
  enough: (seen: Buffer) => boolean,
): Promise<{ bytes: Buffer; ended: boolean; timedOut: boolean }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let length = 0;
    const finish = (ended: boolean, timedOut: boolean): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
      // Paused synchronously, in the same tick as the deciding chunk, so that an EOF right
      // behind it cannot emit 'end' before the caller has put the bytes back.
      socket.pause();
      resolve({ bytes: Buffer.concat(chunks, length), ended, timedOut });
    };
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      length += chunk.length;
      if (enough(Buffer.concat(chunks, length))) finish(false, false);
    };
    const onEnd = (): void => finish(true, false);
    const timer = setTimeout(() => finish(false, true), timeoutMs);
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.once('close', onEnd);
    // A socket paused by an earlier look (transparent mode's ClientHello peek, pauseOnConnect)
    // does not flow again for a new 'data' listener alone.
    socket.resume();
  });
}
