/**
 * The body half of the inbound HTTP/1.1 relay (http1-relay.ts): where each message's body ends
 * by its framing (Content-Length, or chunked: decoded only to find its end, forwarded unchanged,
 * trailers filtered), the runs of input forwarded in place, and the proxy's own answers.
 */
import type { Socket } from 'node:net';
import {
  Collector,
  Http1ParseError,
  MAX_CHUNK_LINE_BYTES,
  MAX_HEAD_BYTES,
  equalsLower,
  parseChunkSize,
  parseHeaderLines,
} from './http1-parse.js';
import type { Framing } from './http1-parse.js';

// Parser states (numbers: compared on every chunk).
export const HEAD = 0;
const LENGTH = 1;
const CHUNK_SIZE = 2;
const CHUNK_DATA = 3;
const CHUNK_CR = 4;
const CHUNK_LF = 5;
const TRAILERS = 6;
export const UNTIL_CLOSE = 7;

export const CRLF = Buffer.from('\r\n', 'latin1');

/** The body state of one direction. */
export class Body {
  state = HEAD;
  remaining = 0;
  readonly line = new Collector('line', MAX_CHUNK_LINE_BYTES);
  readonly trailers = new Collector('block', MAX_HEAD_BYTES);

  start(framing: Framing): void {
    switch (framing.kind) {
      case 'none':
        this.state = HEAD;
        return;
      case 'length':
        this.state = LENGTH;
        this.remaining = framing.length;
        return;
      case 'chunked':
        this.state = CHUNK_SIZE;
        return;
      case 'close':
        this.state = UNTIL_CLOSE;
        return;
    }
  }
}

/**
 * Output of one chunk: runs of the input forwarded in place, and replacement buffers between
 * them, in order.
 */
export class Out {
  parts: Buffer[] = [];
  #buf: Buffer = CRLF;
  #runStart = 0;

  reset(buf: Buffer): void {
    this.parts = [];
    this.#buf = buf;
    this.#runStart = 0;
  }

  /** Forwards the input from the run's start up to `end`. */
  flush(end: number): void {
    if (end > this.#runStart) {
      this.parts.push(
        this.#runStart === 0 && end === this.#buf.length
          ? this.#buf
          : this.#buf.subarray(this.#runStart, end),
      );
    }
    this.#runStart = end;
  }

  /** Forwards the input up to `at`, then `replacement`, then resumes at `resume`. */
  replace(at: number, replacement: readonly Buffer[], resume: number): void {
    this.flush(at);
    for (const b of replacement) if (b.length > 0) this.parts.push(b);
    this.#runStart = resume;
  }

  /** Skips the input from the run's start to `end` (not forwarded). */
  skip(end: number): void {
    this.#runStart = end;
  }
}

export function writeAll(socket: Socket, parts: readonly Buffer[]): boolean {
  if (parts.length === 1) return socket.write(parts[0]!);
  socket.cork();
  let ok = true;
  for (const p of parts) ok = socket.write(p);
  socket.uncork();
  return ok;
}

const REASONS: Record<number, string> = {
  400: 'Bad Request',
  403: 'Forbidden',
  405: 'Method Not Allowed',
  431: 'Request Header Fields Too Large',
  502: 'Bad Gateway',
  504: 'Gateway Timeout',
};

/** A response the proxy makes itself; the connection closes after it. */
export function proxyResponse(
  status: number,
  errorHeader: string,
  reason: string,
  body: string,
): Buffer {
  const text = Buffer.from(body, 'utf8');
  return Buffer.from(
    `HTTP/1.1 ${status} ${REASONS[status] ?? ''}\r\ncontent-type: text/plain; charset=utf-8\r\n${errorHeader}: ${reason}\r\ncontent-length: ${text.length}\r\nconnection: close\r\n\r\n${body}`,
    'utf8',
  );
}

/**
 * Consumes body bytes of the current message from `buf[pos, …)`; returns the new position.
 * `body.state` is HEAD again when the message is complete. Trailer lines named `dropTrailer` (a
 * request's `l5d-client-id`) are not forwarded.
 */
export function consumeBody(
  body: Body,
  buf: Buffer,
  pos: number,
  out: Out,
  dropTrailer: string | undefined,
): number {
  const len = buf.length;
  switch (body.state) {
    case LENGTH:
    case CHUNK_DATA: {
      const n = Math.min(body.remaining, len - pos);
      body.remaining -= n;
      if (body.remaining === 0) body.state = body.state === LENGTH ? HEAD : CHUNK_CR;
      return pos + n;
    }
    case CHUNK_CR:
      if (buf[pos] !== 0x0d) throw new Http1ParseError(400, 'chunk not followed by CRLF');
      body.state = CHUNK_LF;
      return pos + 1;
    case CHUNK_LF:
      if (buf[pos] !== 0x0a) throw new Http1ParseError(400, 'chunk not followed by CRLF');
      body.state = CHUNK_SIZE;
      return pos + 1;
    case CHUNK_SIZE: {
      const held = body.line.length;
      const end = body.line.feed(buf, pos);
      if (end === -1) {
        out.flush(pos);
        out.skip(len);
        return len;
      }
      const line = body.line.take(buf, pos, end);
      const size = parseChunkSize(line, line.length);
      if (held > 0) out.replace(pos, [line], end);
      if (size === 0) {
        body.state = TRAILERS;
      } else {
        body.state = CHUNK_DATA;
        body.remaining = size;
      }
      return end;
    }
    case TRAILERS: {
      const held = body.trailers.length;
      const end = body.trailers.feed(buf, pos);
      if (end === -1) {
        out.flush(pos);
        out.skip(len);
        return len;
      }
      const block = body.trailers.take(buf, pos, end);
      const lines = parseHeaderLines(block, 0, block.length);
      const drop =
        dropTrailer === undefined
          ? []
          : lines.filter((h) => equalsLower(block, h.start, h.colon, dropTrailer));
      if (drop.length > 0) {
        const parts: Buffer[] = [];
        let runStart = 0;
        for (const h of drop) {
          if (h.start > runStart) parts.push(block.subarray(runStart, h.start));
          runStart = h.end;
        }
        parts.push(block.subarray(runStart));
        out.replace(held > 0 ? 0 : pos, parts, end);
      } else if (held > 0) {
        out.replace(0, [block], end);
      }
      body.state = HEAD;
      return end;
    }
    default:
      throw new Error(`unexpected body state ${body.state}`);
  }
}
