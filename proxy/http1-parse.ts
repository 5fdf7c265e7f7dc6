/**
 * A strict HTTP/1.1 message parser for the inbound relay (http1-relay.ts): request and response
 * heads, and the body framing that follows them (RFC 9112). It reads bytes in place and hands
 * back offsets, so the relay forwards most bytes without copying them.
 *
 * Strict, because the proxy and the application must agree on where every request ends: if they
 * could disagree (request smuggling), a client could hide a second request, with its own
 * `l5d-client-id`, inside the body of the first. So anything that two parsers might read two
 * ways is refused rather than repaired: Content-Length together with Transfer-Encoding, more than
 * one Content-Length, a Transfer-Encoding other than exactly `chunked`, folded header lines,
 * whitespace before a colon, a CR or LF that is not part of a CRLF, control characters, an
 * invalid chunk size, and heads over {@link MAX_HEAD_BYTES}.
 */
import { HOP_BY_HOP_HTTP1 } from './hop-by-hop.js';

/** The largest request or response head (and trailer section) accepted, in bytes. */
export const MAX_HEAD_BYTES = 64 * 1024;
/** The longest chunk-size line (size and extensions) accepted, in bytes. */
export const MAX_CHUNK_LINE_BYTES = 1024;

const CR = 0x0d;
const LF = 0x0a;
const SP = 0x20;
const HT = 0x09;
const COLON = 0x3a;

/** RFC 9110 tchar, as a lookup table. */
const TCHAR = new Uint8Array(256);
for (let b = 0x30; b <= 0x39; b++) TCHAR[b] = 1;
for (let b = 0x41; b <= 0x5a; b++) TCHAR[b] = 1;
for (let b = 0x61; b <= 0x7a; b++) TCHAR[b] = 1;
for (const c of "!#$%&'*+-.^_`|~") TCHAR[c.charCodeAt(0)] = 1;

/** Bytes allowed in a field value: HTAB, SP, VCHAR, obs-text. */
const VALUE = new Uint8Array(256);
VALUE[HT] = 1;
for (let b = 0x20; b <= 0x7e; b++) VALUE[b] = 1;
for (let b = 0x80; b <= 0xff; b++) VALUE[b] = 1;

const HEX = new Int8Array(256).fill(-1);
for (let b = 0; b < 10; b++) HEX[0x30 + b] = b;
for (let b = 0; b < 6; b++) {
  HEX[0x41 + b] = 10 + b;
  HEX[0x61 + b] = 10 + b;
}

/**
 * A message the proxy refuses; `status` is what the client is told (400, 405 or 431), `message`
 * goes in the `l5d-proxy-error` header and `detail` (the message when absent) in the body.
 */
export class Http1ParseError extends Error {
  constructor(
    readonly status: 400 | 405 | 431,
    message: string,
    readonly detail?: string,
  ) {
    super(message);
    this.name = 'Http1ParseError';
  }
}

/**
 * The answer to CONNECT on every inbound path (HTTP/1.1 and HTTP/2, whatever the app speaks):
 * the inbound forwards requests to the app, it does not open tunnels.
 */
export const CONNECT_REFUSAL = {
  status: 405,
  reason: 'CONNECT is not supported',
  body: 'method not allowed: the inbound does not tunnel CONNECT; a port that carries another protocol is declared with --app-protocol PORT=opaque\n',
} as const;

const fail = (message: string, status: 400 | 431 = 400): never => {
  throw new Http1ParseError(status, message);
};

/** How a message body is delimited. */
export type Framing =
  | { readonly kind: 'none' }
  | { readonly kind: 'length'; readonly length: number }
  | { readonly kind: 'chunked' }
  /** Only for responses: the body runs until the connection closes. */
  | { readonly kind: 'close' };

const NO_BODY: Framing = Object.freeze({ kind: 'none' });
const CHUNKED: Framing = Object.freeze({ kind: 'chunked' });
const UNTIL_CLOSE: Framing = Object.freeze({ kind: 'close' });

/** One header line of a head: offsets into the head buffer. */
export interface HeaderLine {
  /** Start of the line (its name). */
  readonly start: number;
  /** The colon. */
  readonly colon: number;
  /** The value without surrounding whitespace: [valueStart, valueEnd). */
  readonly valueStart: number;
  readonly valueEnd: number;
  /** Just after the line's CRLF. */
  readonly end: number;
}

/** Lower-case ASCII comparison of `buf[start, end)` with `lower` (already lower case). */
export function equalsLower(buf: Uint8Array, start: number, end: number, lower: string): boolean {
  if (end - start !== lower.length) return false;
  for (let i = 0; i < lower.length; i++) {
    if ((buf[start + i]! | 0x20) !== lower.charCodeAt(i)) return false;
  }
  return true;
}

/**
 * Splits and checks the header lines of a head, from `from` (just after the start line's CRLF)
 * to `end` (just after the empty line's CRLF). Every line must end in CRLF, start with a token
 * name followed directly by a colon, and carry only value bytes.
 */
export function parseHeaderLines(head: Uint8Array, from: number, end: number): HeaderLine[] {
  const lines: HeaderLine[] = [];
  let i = from;
  const last = end - 2; // the empty line's CR
  while (i < last) {
    const start = i;
    const first = head[i]!;
    if (first === SP || first === HT) fail('obsolete line folding');
    while (TCHAR[head[i]!] === 1) i++;
    if (i === start) fail('invalid header name');
    if (head[i] !== COLON) {
      fail(head[i] === SP || head[i] === HT ? 'whitespace before a colon' : 'invalid header name');
    }
    const colon = i++;
    while (head[i] === SP || head[i] === HT) i++;
    const valueStart = i;
    while (VALUE[head[i]!] === 1) i++;
    let valueEnd = i;
    if (head[i] !== CR || head[i + 1] !== LF) fail('invalid character in a header value');
    while (valueEnd > valueStart && (head[valueEnd - 1] === SP || head[valueEnd - 1] === HT))
      valueEnd--;
    i += 2;
    lines.push({ start, colon, valueStart, valueEnd, end: i });
  }
  if (i !== last || head[last] !== CR || head[last + 1] !== LF) fail('malformed head');
  return lines;
}

/** The comma-separated tokens of a value, lower case, empty ones skipped. */
export function valueTokens(head: Uint8Array, line: HeaderLine): string[] {
  return Buffer.from(
    head.buffer,
    head.byteOffset + line.valueStart,
    line.valueEnd - line.valueStart,
  )
    .toString('latin1')
    .toLowerCase()
    .split(',')
    .map((t) => t.trim())
    .filter((t) => t !== '');
}

function parseContentLength(head: Uint8Array, line: HeaderLine): number {
  const { valueStart: s, valueEnd: e } = line;
  if (e === s || e - s > 15) fail('invalid Content-Length');
  let n = 0;
  for (let i = s; i < e; i++) {
    const d = head[i]! - 0x30;
    if (d < 0 || d > 9) fail('invalid Content-Length');
    n = n * 10 + d;
  }
  return n;
}

/** What the relay needs to know about a request head. */
export interface RequestHead {
  readonly method: string;
  /** HTTP/1.1 (true) or HTTP/1.0. */
  readonly http11: boolean;
  readonly framing: Framing;
  /** The client asked for the connection to close after this exchange. */
  readonly close: boolean;
  /** Where the header lines start (just after the request line's CRLF). */
  readonly headersStart: number;
  readonly headers: readonly HeaderLine[];
  /** Header lines not to forward: `l5d-client-id` copies and hop-by-hop fields. */
  readonly drop: ReadonlySet<HeaderLine>;
  /**
   * The Connection header's value to send instead of the client's (only `close` and
   * `keep-alive` are kept, and `upgrade` with a forwarded Upgrade), or undefined to send the
   * client's lines unchanged.
   */
  readonly connection: string | undefined;
  /**
   * The protocol switch the request asks for and the proxy forwards (WebSocket and any other
   * except h2c, which is ignored as RFC 9113 §3.1 allows): a bodiless request whose Connection
   * lists `upgrade`. Undefined when there is none (then Upgrade is dropped).
   */
  readonly upgrade: string | undefined;
}

const KNOWN_METHODS = ['GET', 'POST', 'PUT', 'HEAD', 'DELETE', 'PATCH', 'OPTIONS'];

function methodString(head: Uint8Array, start: number, end: number): string {
  // The common methods without allocating a string for each request.
  for (const m of KNOWN_METHODS) {
    if (m.length !== end - start) continue;
    let same = true;
    for (let i = 0; i < m.length && same; i++) same = head[start + i] === m.charCodeAt(i);
    if (same) return m;
  }
  return Buffer.from(head.buffer, head.byteOffset + start, end - start).toString('latin1');
}

/** Names a Connection header may list without making the proxy drop them. */
const NEVER_DROPPED_BY_CONNECTION = new Set(['host', 'content-length', 'transfer-encoding']);

/**
 * Parses a complete request head: `head[0, end)`, ending with the empty line's CRLF (empty lines
 * before the request line allowed, as RFC 9112 §2.2 suggests).
 */
export function parseRequestHead(
  head: Uint8Array,
  end: number,
  clientIdHeader: string,
): RequestHead {
  let i = 0;
  while (head[i] === CR && head[i + 1] === LF) i += 2;
  const methodStart = i;
  while (TCHAR[head[i]!] === 1) i++;
  if (i === methodStart || head[i] !== SP) fail('malformed request line');
  const methodEnd = i++;
  const targetStart = i;
  while (head[i]! > SP && head[i]! < 0x7f) i++;
  if (i === targetStart || head[i] !== SP) fail('malformed request line');
  i++;
  // "HTTP/1.1" or "HTTP/1.0", then CRLF.
  if (
    head[i] !== 0x48 ||
    head[i + 1] !== 0x54 ||
    head[i + 2] !== 0x54 ||
    head[i + 3] !== 0x50 ||
    head[i + 4] !== 0x2f ||
    head[i + 5] !== 0x31 ||
    head[i + 6] !== 0x2e ||
    (head[i + 7] !== 0x31 && head[i + 7] !== 0x30) ||
    head[i + 8] !== CR ||
    head[i + 9] !== LF
  ) {
    fail('malformed request line');
  }
  const http11 = head[i + 7] === 0x31;
  const headersStart = i + 10;
  const method = methodString(head, methodStart, methodEnd);
  if (method === 'CONNECT') {
    throw new Http1ParseError(
      CONNECT_REFUSAL.status,
      CONNECT_REFUSAL.reason,
      CONNECT_REFUSAL.body.trimEnd(),
    );
  }

  const headers = parseHeaderLines(head, headersStart, end);
  const drop = new Set<HeaderLine>();
  let contentLength: HeaderLine | undefined;
  let transferEncoding: HeaderLine | undefined;
  let hosts = 0;
  const connectionLines: HeaderLine[] = [];
  let upgradeLine: HeaderLine | undefined;
  let upgrades = 0;
  for (const h of headers) {
    const ns = h.start;
    const ne = h.colon;
    if (equalsLower(head, ns, ne, clientIdHeader)) {
      drop.add(h);
    } else if (equalsLower(head, ns, ne, 'content-length')) {
      if (contentLength !== undefined) fail('more than one Content-Length');
      contentLength = h;
    } else if (equalsLower(head, ns, ne, 'transfer-encoding')) {
      if (transferEncoding !== undefined) fail('more than one Transfer-Encoding');
      transferEncoding = h;
    } else if (equalsLower(head, ns, ne, 'host')) {
      hosts++;
    } else if (equalsLower(head, ns, ne, 'connection')) {
      connectionLines.push(h);
    } else if (equalsLower(head, ns, ne, 'upgrade')) {
      upgradeLine = h;
      upgrades++;
      drop.add(h);
    } else {
      // Connection, Transfer-Encoding and Upgrade are judged above, with the framing.
      for (const name of HOP_BY_HOP_HTTP1) {
        if (equalsLower(head, ns, ne, name)) {
          drop.add(h);
          break;
        }
      }
    }
  }
  if (hosts > 1 || (http11 && hosts === 0)) fail('a request needs exactly one Host');

  let framing = NO_BODY;
  if (transferEncoding !== undefined) {
    if (contentLength !== undefined) fail('both Content-Length and Transfer-Encoding');
    if (!http11) fail('Transfer-Encoding in an HTTP/1.0 request');
    const codings = valueTokens(head, transferEncoding);
    if (codings.length !== 1 || codings[0] !== 'chunked')
      fail('Transfer-Encoding other than chunked');
    framing = CHUNKED;
  } else if (contentLength !== undefined) {
    const length = parseContentLength(head, contentLength);
    framing = length === 0 ? NO_BODY : { kind: 'length', length };
  }

  // An Upgrade goes on only when it is unambiguous and asks for something other than h2c.
  let upgrade: string | undefined;
  if (upgradeLine !== undefined && upgrades === 1 && http11 && framing === NO_BODY) {
    const protocols = valueTokens(head, upgradeLine);
    const listed = connectionLines.some((h) => valueTokens(head, h).includes('upgrade'));
    if (listed && protocols.length > 0 && !protocols.some((p) => p.startsWith('h2c'))) {
      upgrade = protocols.join(', ');
      drop.delete(upgradeLine);
    }
  }

  // Connection: only close and keep-alive go on (and upgrade with a forwarded Upgrade); other
  // listed names are this hop's, dropped.
  let close = !http11;
  let connection: string | undefined;
  const only = connectionLines.length === 1 ? connectionLines[0]! : undefined;
  if (only !== undefined && equalsLower(head, only.valueStart, only.valueEnd, 'keep-alive')) {
    close = false; // the usual value: nothing to rewrite
  } else if (only !== undefined && equalsLower(head, only.valueStart, only.valueEnd, 'close')) {
    close = true;
  } else if (connectionLines.length > 0) {
    const tokens = connectionLines.flatMap((h) => valueTokens(head, h));
    if (tokens.includes('close')) close = true;
    else if (tokens.includes('keep-alive')) close = false;
    const kept = tokens.filter(
      (t) => t === 'close' || t === 'keep-alive' || (t === 'upgrade' && upgrade !== undefined),
    );
    if (kept.length !== tokens.length || connectionLines.length > 1) {
      connection = kept.join(', ');
      for (const h of connectionLines) drop.add(h);
      const listed = new Set(tokens.filter((t) => !NEVER_DROPPED_BY_CONNECTION.has(t)));
      for (const h of headers) {
        if (drop.has(h) || h === upgradeLine) continue;
        const name = Buffer.from(head.buffer, head.byteOffset + h.start, h.colon - h.start)
          .toString('latin1')
          .toLowerCase();
        if (listed.has(name)) drop.add(h);
      }
    }
  }
  return { method, http11, framing, close, headersStart, headers, drop, connection, upgrade };
}

/** What the relay needs to know about a response head. */
interface ResponseHead {
  readonly status: number;
  readonly framing: Framing;
  /** The connection closes after this response. */
  readonly close: boolean;
  readonly headersStart: number;
  readonly headers: readonly HeaderLine[];
}

/**
 * Parses a complete response head, `head[0, end)`. `requestMethod` decides HEAD's bodiless
 * answers. The application is trusted, but its framing still must be unambiguous, because the
 * client reads the same bytes: the same refusals apply.
 */
export function parseResponseHead(
  head: Uint8Array,
  end: number,
  requestMethod: string,
): ResponseHead {
  // "HTTP/1.x SSS[ reason]" CRLF
  if (
    head[0] !== 0x48 ||
    head[1] !== 0x54 ||
    head[2] !== 0x54 ||
    head[3] !== 0x50 ||
    head[4] !== 0x2f ||
    head[5] !== 0x31 ||
    head[6] !== 0x2e ||
    (head[7] !== 0x31 && head[7] !== 0x30) ||
    head[8] !== SP
  ) {
    fail('malformed status line');
  }
  const http11 = head[7] === 0x31;
  let status = 0;
  for (let i = 9; i < 12; i++) {
    const d = head[i]! - 0x30;
    if (d < 0 || d > 9) fail('malformed status line');
    status = status * 10 + d;
  }
  if (status < 100) fail('malformed status line');
  let i = 12;
  if (head[i] === SP) {
    i++;
    while (VALUE[head[i]!] === 1) i++;
  }
  if (head[i] !== CR || head[i + 1] !== LF) fail('malformed status line');
  const headersStart = i + 2;
  const headers = parseHeaderLines(head, headersStart, end);
  let contentLength: number | undefined;
  let chunked = false;
  let transferEncoding = false;
  let sawClose = false;
  let sawKeepAlive = false;
  for (const h of headers) {
    if (equalsLower(head, h.start, h.colon, 'content-length')) {
      if (contentLength !== undefined) fail('more than one Content-Length');
      contentLength = parseContentLength(head, h);
    } else if (equalsLower(head, h.start, h.colon, 'transfer-encoding')) {
      if (transferEncoding) fail('more than one Transfer-Encoding');
      transferEncoding = true;
      const codings = valueTokens(head, h);
      chunked = codings[codings.length - 1] === 'chunked';
    } else if (equalsLower(head, h.start, h.colon, 'connection')) {
      if (equalsLower(head, h.valueStart, h.valueEnd, 'keep-alive')) {
        sawKeepAlive = true; // the usual value, without splitting it
      } else {
        const tokens = valueTokens(head, h);
        sawClose ||= tokens.includes('close');
        sawKeepAlive ||= tokens.includes('keep-alive');
      }
    }
  }
  let close = sawClose || (!http11 && !sawKeepAlive);
  if (transferEncoding && contentLength !== undefined)
    fail('both Content-Length and Transfer-Encoding');
  let framing: Framing;
  if (status < 200 || status === 204 || status === 304 || requestMethod === 'HEAD') {
    framing = NO_BODY;
  } else if (transferEncoding) {
    framing = chunked ? CHUNKED : UNTIL_CLOSE;
  } else if (contentLength !== undefined) {
    framing = contentLength === 0 ? NO_BODY : { kind: 'length', length: contentLength };
  } else {
    framing = UNTIL_CLOSE;
  }
  if (framing.kind === 'close') close = true;
  return { status, framing, close, headersStart, headers };
}

/**
 * Parses a chunk-size line, `line[0, end)` ending in CRLF: hex digits, then optional extensions
 * (`;` and visible characters), which are passed on unchanged. Returns the size.
 */
export function parseChunkSize(line: Uint8Array, end: number): number {
  let i = 0;
  let size = 0;
  while (HEX[line[i]!]! >= 0) {
    // 12 hex digits is 256 TB: plenty, and far from losing precision.
    if (i === 12) fail('chunk size too large');
    size = size * 16 + HEX[line[i]!]!;
    i++;
  }
  if (i === 0) fail('invalid chunk size');
  while (line[i] === SP || line[i] === HT) i++;
  if (line[i] === 0x3b) {
    i++;
    while (i < end - 2 && (VALUE[line[i]!] === 1 || line[i] === 0x3b)) i++;
  }
  if (i !== end - 2 || line[i] !== CR || line[i + 1] !== LF) fail('invalid chunk size line');
  return size;
}

/**
 * Collects bytes up to a terminator across chunks without scanning a byte twice: either one
 * CRLF-terminated line, or a block of lines ended by an empty line (a head, or trailers). A LF
 * not preceded by CR is refused. Chunks are kept, not concatenated, until the end is found.
 */
export class Collector {
  #parts: Buffer[] = [];
  #length = 0;
  /** Bytes in the current line so far (across parts). */
  #lineLength = 0;
  #lastByte = -1;
  #sawLine = false;

  constructor(
    private readonly mode: 'line' | 'block',
    private readonly limit: number,
    /** For a request head: empty lines before the first line do not end the block. */
    private readonly skipLeadingEmpty = false,
  ) {}

  /** Bytes held so far. */
  get length(): number {
    return this.#length;
  }

  /**
   * Feeds `buf[from, buf.length)`. Returns the index in `buf` just after the terminator, or -1
   * when all of it was taken and the terminator has not come yet. Throws on a bare LF or when the
   * limit is passed.
   */
  feed(buf: Buffer, from: number): number {
    let i = from;
    for (;;) {
      const lf = buf.indexOf(LF, i);
      const upTo = lf === -1 ? buf.length : lf;
      if (this.#length + (upTo - from) + 1 > this.limit) {
        if (this.mode === 'line') fail('chunk size line too long');
        fail('head too large', 431);
      }
      if (lf === -1) {
        this.#lineLength += buf.length - i;
        if (buf.length > i) this.#lastByte = buf[buf.length - 1]!;
        this.#hold(buf, from, buf.length);
        return -1;
      }
      const before = lf > i ? buf[lf - 1]! : this.#lastByte;
      const lineLength = this.#lineLength + (lf - i);
      if (before !== CR || lineLength === 0) fail('bare LF');
      this.#lineLength = 0;
      this.#lastByte = LF;
      i = lf + 1;
      if (this.mode === 'line') return i;
      if (lineLength === 1) {
        // An empty line.
        if (this.#sawLine || !this.skipLeadingEmpty) return i;
      } else {
        this.#sawLine = true;
      }
    }
  }

  /** After `feed` returned an end: the collected bytes, terminator included. */
  take(buf: Buffer, from: number, end: number): Buffer {
    const parts = this.#parts;
    this.#parts = [];
    const length = this.#length;
    this.#length = 0;
    this.#sawLine = false;
    this.#lastByte = -1;
    if (parts.length === 0) return buf.subarray(from, end);
    parts.push(buf.subarray(from, end));
    return Buffer.concat(parts, length + end - from);
  }

  #hold(buf: Buffer, from: number, end: number): void {
    if (end > from) {
      this.#parts.push(buf.subarray(from, end));
      this.#length += end - from;
    }
  }
}
