/**
 * An HTTP/2 stream (a peer meshid proxy's, or any HTTP/2 client's) carried to an HTTP/1.1 app on
 * the inbound's own pooled keep-alive connections: the request head is written in one piece from
 * the stream's header list, the response head is parsed by the strict parser (http1-parse.ts)
 * and its body decoded by its framing (Content-Length, chunked, until close) straight into the
 * stream. Compared with node's HTTP client and agent, there is no ClientRequest,
 * IncomingMessage or agent bookkeeping per request: this is the per-request cost of the HTTP/2
 * carriage between proxies.
 *
 * Semantics (what translate.ts's header says for both directions): pseudo-headers become the
 * request line and Host, cookies are joined, hop-by-hop fields and every `l5d-client-id` are
 * dropped and the verified one added; request trailers go on as chunked trailers when the body is
 * chunked (no content-length); response trailers of a chunked answer become HTTP/2 trailers;
 * bodies flow with backpressure both ways; 502 naming the cause when the app cannot be reached,
 * resets, closes or answers something unreadable; 504 when it has not started its answer within
 * the timeout. A client that resets its stream abandons the exchange (the app connection closes).
 */
import { connect as netConnect } from 'node:net';
import type { Socket } from 'node:net';
import { constants as h2 } from 'node:http2';
import type {
  IncomingHttpHeaders as Http2IncomingHeaders,
  OutgoingHttpHeaders as Http2OutgoingHeaders,
  ServerHttp2Stream,
} from 'node:http2';
import type { Address } from '../core/index.js';
import {
  Collector,
  Http1ParseError,
  MAX_CHUNK_LINE_BYTES,
  MAX_HEAD_BYTES,
  parseChunkSize,
  parseHeaderLines,
  parseResponseHead,
} from './http1-parse.js';
import { UNSAFE_FIELD, fieldsOf, requestHead } from './h2-http1-heads.js';
import type { AppFailure, TranslateContext } from './translate.js';
import { TRANSLATION_HOP_BY_HOP, appFailure, failureBody } from './translate.js';

/** Idle app connections kept per app address. */
const MAX_FREE_PER_APP = 64;

/** An app response the strict parser refused, as an error {@link appFailure} names. */
class AppResponseError extends Error {
  readonly code = 'ERR_HTTP1_APP_RESPONSE';
}

/** One pooled connection to the app, and the exchange on it, if any. */
class AppConn {
  readonly socket: Socket;
  readonly key: string;
  exchange: Exchange | undefined;
  error: Error | undefined;

  constructor(app: Address, key: string, gone: (c: AppConn) => void) {
    this.key = key;
    const socket = netConnect({ host: app.host, port: app.port, noDelay: true });
    this.socket = socket;
    socket.on('data', (buf: Buffer) => {
      if (this.exchange === undefined)
        socket.destroy(); // the app spoke unasked
      else this.exchange.onData(buf);
    });
    socket.on('drain', () => this.exchange?.onDrain());
    socket.on('error', (err) => (this.error ??= err));
    socket.on('end', () => this.exchange?.onEnd());
    socket.on('close', () => {
      gone(this);
      this.exchange?.onClose(this.error);
    });
  }
}

/**
 * The inbound's connections to its HTTP/1.1 app(s), kept alive and reused (last used first), at
 * most `max` at once; exchanges beyond that wait for one (in order).
 *
 * @example
 * ```ts
 * const pool = new AppConnections(512);
 * h2ToHttp1(stream, headers, ctx, pool, (status) => …);
 * ```
 */
export class AppConnections {
  readonly #max: number;
  #open = 0;
  readonly #free = new Map<string, AppConn[]>();
  readonly #waiting: Exchange[] = [];
  #destroyed = false;

  constructor(max = Infinity) {
    this.#max = max;
  }

  /** Hands `ex` a connection now, or when one is available. */
  acquire(ex: Exchange): void {
    const key = `${ex.app.host}:${ex.app.port}`;
    const free = this.#free.get(key);
    for (let c = free?.pop(); c !== undefined; c = free?.pop()) {
      if (c.socket.destroyed) continue;
      ex.attach(c);
      return;
    }
    if (this.#destroyed) {
      ex.onClose(new Error('the proxy is shutting down'));
      return;
    }
    if (this.#open >= this.#max) {
      this.#waiting.push(ex);
      return;
    }
    this.#open++;
    ex.attach(new AppConn(ex.app, key, (c) => this.#gone(c)));
  }

  /** An exchange that no longer wants a connection (its client went away while it waited). */
  cancel(ex: Exchange): void {
    const i = this.#waiting.indexOf(ex);
    if (i !== -1) this.#waiting.splice(i, 1);
  }

  /** A connection whose exchange completed cleanly: kept for the next one. */
  release(conn: AppConn): void {
    conn.exchange = undefined;
    const next = this.#waiting.shift();
    if (next !== undefined) {
      if (`${next.app.host}:${next.app.port}` === conn.key) {
        next.attach(conn);
        return;
      }
      // Another app port: this connection gives way to a new one there.
      conn.socket.destroy();
      this.#open++;
      next.attach(new AppConn(next.app, `${next.app.host}:${next.app.port}`, (c) => this.#gone(c)));
      return;
    }
    let free = this.#free.get(conn.key);
    if (free === undefined) this.#free.set(conn.key, (free = []));
    if (free.length >= MAX_FREE_PER_APP || this.#destroyed) conn.socket.destroy();
    else free.push(conn);
  }

  #gone(conn: AppConn): void {
    this.#open--;
    const free = this.#free.get(conn.key);
    const i = free?.indexOf(conn) ?? -1;
    if (i !== -1) free!.splice(i, 1);
    const next = this.#destroyed ? undefined : this.#waiting.shift();
    if (next !== undefined) this.acquire(next);
  }

  /** Closes every connection; waiting exchanges fail. */
  destroy(): void {
    this.#destroyed = true;
    for (const free of this.#free.values()) for (const c of free.splice(0)) c.socket.destroy();
    for (const ex of this.#waiting.splice(0)) ex.onClose(new Error('the proxy is shutting down'));
  }
}

// Response parser states.
const HEAD = 0;
const LENGTH = 1;
const CHUNK_SIZE = 2;
const CHUNK_DATA = 3;
const CHUNK_CR = 4;
const CHUNK_LF = 5;
const TRAILERS = 6;
const UNTIL_CLOSE = 7;
const DONE = 8;

/** One stream's exchange with the app. */
class Exchange {
  readonly app: Address;
  readonly #stream: ServerHttp2Stream;
  readonly #ctx: TranslateContext;
  readonly #pool: AppConnections;
  readonly #onStatus: (status: number) => void;
  readonly #method: string;
  readonly #head: string;
  readonly #chunkedRequest: boolean;
  #conn: AppConn | undefined;
  #timer: NodeJS.Timeout | undefined;
  #requestSent = false;
  #reusable = true;
  #answered = false;
  #failed = false;
  #state = HEAD;
  #remaining = 0;
  #headBytes: Collector | undefined;
  #line: Collector | undefined;
  #trailerBlock: Collector | undefined;
  #trailers: Http2OutgoingHeaders | undefined;
  #requestTrailers: Http2IncomingHeaders | undefined;
  #paused = false;

  constructor(
    stream: ServerHttp2Stream,
    ctx: TranslateContext,
    pool: AppConnections,
    onStatus: (status: number) => void,
    request: { method: string; head: string; chunked: boolean },
  ) {
    this.app = ctx.app;
    this.#stream = stream;
    this.#ctx = ctx;
    this.#pool = pool;
    this.#onStatus = onStatus;
    this.#method = request.method;
    this.#head = request.head;
    this.#chunkedRequest = request.chunked;
  }

  start(): void {
    const stream = this.#stream;
    if (this.#ctx.appTimeoutMs > 0) {
      this.#timer = setTimeout(() => {
        this.#fail(appFailure(this.app, 'timeout', this.#ctx.appTimeoutMs));
        this.#abandon();
      }, this.#ctx.appTimeoutMs);
    }
    stream.once('close', () => {
      if (this.#state === DONE && this.#requestSent) return;
      // The client went away (or reset): the app's exchange is abandoned.
      this.#stopTimer();
      this.#failed = true;
      this.#abandon();
    });
    if (!stream.endAfterHeaders) {
      if (this.#chunkedRequest) {
        stream.on('trailers', (t: Http2IncomingHeaders) => (this.#requestTrailers = t));
      }
      stream.pause();
      stream.on('data', (d: Buffer) => this.#requestData(d));
      stream.once('end', () => this.#requestEnd());
    }
    this.#pool.acquire(this);
  }

  /** The pool handed a connection: the head goes out, the body follows. */
  attach(conn: AppConn): void {
    if (this.#failed) {
      this.#conn = conn;
      this.#abandon();
      return;
    }
    this.#conn = conn;
    conn.exchange = this;
    const ok = conn.socket.write(this.#head, 'latin1');
    if (this.#stream.endAfterHeaders) {
      this.#requestSent = true;
    } else if (ok) {
      this.#stream.resume();
    } else {
      this.#paused = true;
    }
  }

  // ---- request body ----

  #requestData(d: Buffer): void {
    const conn = this.#conn;
    if (conn === undefined || this.#failed || this.#state === DONE) return;
    const socket = conn.socket;
    let ok: boolean;
    if (this.#chunkedRequest) {
      if (d.length === 0) return;
      socket.cork();
      socket.write(`${d.length.toString(16)}\r\n`, 'latin1');
      socket.write(d);
      ok = socket.write('\r\n', 'latin1');
      socket.uncork();
    } else {
      ok = socket.write(d);
    }
    if (!ok && !this.#paused) {
      this.#paused = true;
      this.#stream.pause();
    }
  }

  #requestEnd(): void {
    const conn = this.#conn;
    if (conn === undefined || this.#failed) return;
    if (this.#chunkedRequest && this.#state !== DONE) {
      let tail = '0\r\n';
      if (this.#requestTrailers !== undefined) {
        for (const [name, value] of Object.entries(this.#requestTrailers)) {
          if (value === undefined || name.startsWith(':') || TRANSLATION_HOP_BY_HOP.has(name))
            continue;
          if (name === this.#ctx.clientIdHeader) continue;
          for (const v of Array.isArray(value) ? value : [value]) {
            if (!UNSAFE_FIELD.test(v)) tail += `${name}: ${v}\r\n`;
          }
        }
      }
      conn.socket.write(`${tail}\r\n`, 'latin1');
    }
    this.#requestSent = true;
    if (this.#state === DONE) this.#done();
  }

  onDrain(): void {
    if (this.#paused) {
      this.#paused = false;
      if (!this.#failed) this.#stream.resume();
    }
  }

  // ---- response ----

  onData(buf: Buffer): void {
    if (this.#failed) return;
    let pos = 0;
    const len = buf.length;
    try {
      while (pos < len && this.#state !== DONE) {
        switch (this.#state) {
          case HEAD: {
            const c = (this.#headBytes ??= new Collector('block', MAX_HEAD_BYTES));
            const end = c.feed(buf, pos);
            if (end === -1) return;
            const head = c.take(buf, pos, end);
            pos = end;
            this.#responseHead(head);
            break;
          }
          case LENGTH:
          case CHUNK_DATA: {
            const n = Math.min(this.#remaining, len - pos);
            this.#toClient(pos === 0 && n === len ? buf : buf.subarray(pos, pos + n));
            pos += n;
            this.#remaining -= n;
            if (this.#remaining === 0) {
              if (this.#state === LENGTH) this.#complete();
              else this.#state = CHUNK_CR;
            }
            break;
          }
          case CHUNK_CR:
            if (buf[pos] !== 0x0d) throw new Http1ParseError(400, 'chunk not followed by CRLF');
            this.#state = CHUNK_LF;
            pos++;
            break;
          case CHUNK_LF:
            if (buf[pos] !== 0x0a) throw new Http1ParseError(400, 'chunk not followed by CRLF');
            this.#state = CHUNK_SIZE;
            pos++;
            break;
          case CHUNK_SIZE: {
            const c = (this.#line ??= new Collector('line', MAX_CHUNK_LINE_BYTES));
            const end = c.feed(buf, pos);
            if (end === -1) return;
            const line = c.take(buf, pos, end);
            pos = end;
            const size = parseChunkSize(line, line.length);
            if (size === 0) {
              this.#state = TRAILERS;
            } else {
              this.#state = CHUNK_DATA;
              this.#remaining = size;
            }
            break;
          }
          case TRAILERS: {
            const c = (this.#trailerBlock ??= new Collector('block', MAX_HEAD_BYTES));
            const end = c.feed(buf, pos);
            if (end === -1) return;
            const block = c.take(buf, pos, end);
            pos = end;
            this.#trailers = fieldsOf(block, parseHeaderLines(block, 0, block.length), 0);
            this.#complete();
            break;
          }
          default: // UNTIL_CLOSE
            this.#toClient(pos === 0 ? buf : buf.subarray(pos));
            pos = len;
        }
      }
    } catch (err) {
      if (!(err instanceof Http1ParseError)) throw err;
      this.#ctx.logger.debug({ err: err.message }, 'inbound app HTTP/1 response unreadable');
      this.#reusable = false;
      if (this.#answered) this.#resetClient();
      else this.#fail(appFailure(this.app, new AppResponseError(err.message)));
      this.#abandon();
      return;
    }
    if (this.#state === DONE) {
      // Bytes after a complete answer: this connection cannot be trusted again.
      if (pos < len) this.#reusable = false;
      this.#finished();
    }
  }

  #responseHead(head: Buffer): void {
    const res = parseResponseHead(head, head.length, this.#method);
    if (res.status < 200) {
      // 100 Continue and other interim answers: the final one follows.
      if (res.status === 101) throw new Http1ParseError(400, 'unexpected 101');
      return;
    }
    this.#stopTimer();
    this.#answered = true;
    const status = res.status;
    this.#onStatus(status);
    if (res.close) this.#reusable = false;
    const stream = this.#stream;
    if (stream.destroyed || stream.closed) {
      this.#failed = true;
      this.#abandon();
      return;
    }
    const framing = res.framing;
    const chunked = framing.kind === 'chunked';
    try {
      stream.respond(fieldsOf(head, res.headers, status), {
        endStream: framing.kind === 'none',
        waitForTrailers: chunked,
      });
    } catch (err) {
      // A field node's HTTP/2 will not send (a repeated single-value one, say).
      throw new Http1ParseError(400, (err as Error).message);
    }
    if (chunked) {
      stream.once('wantTrailers', () => stream.sendTrailers(this.#trailers ?? {}));
    }
    switch (framing.kind) {
      case 'none':
        this.#state = DONE;
        return;
      case 'length':
        this.#state = LENGTH;
        this.#remaining = framing.length;
        return;
      case 'chunked':
        this.#state = CHUNK_SIZE;
        return;
      case 'close':
        this.#state = UNTIL_CLOSE;
        this.#reusable = false;
        return;
    }
  }

  #toClient(data: Buffer): void {
    if (!this.#stream.write(data) && !this.#failed) {
      const socket = this.#conn?.socket;
      if (socket === undefined || socket.isPaused()) return;
      socket.pause();
      this.#stream.once('drain', () => socket.resume());
    }
  }

  /** The answer's body is complete. */
  #complete(): void {
    this.#state = DONE;
    this.#stream.end();
    this.#finished();
  }

  #finished(): void {
    if (this.#requestSent) {
      this.#done();
    } else {
      // The app answered before the request's body was all sent: that connection is done.
      this.#reusable = false;
      this.#stream.resume();
    }
  }

  /** Answer complete and request sent: the connection goes back to the pool or closes. */
  #done(): void {
    const conn = this.#conn;
    if (conn === undefined || conn.exchange !== this) return;
    conn.exchange = undefined;
    if (this.#reusable && !conn.socket.destroyed && !conn.socket.isPaused()) {
      this.#pool.release(conn);
    } else {
      conn.socket.destroy();
    }
  }

  onEnd(): void {
    if (this.#state === UNTIL_CLOSE) {
      this.#complete();
      this.#finished();
      return;
    }
    this.#reusable = false;
  }

  onClose(err: Error | undefined): void {
    this.#stopTimer();
    if (this.#failed) return;
    if (this.#state === DONE) {
      if (!this.#requestSent) this.#failed = true;
      return;
    }
    if (this.#state === UNTIL_CLOSE) {
      this.#complete();
      this.#finished();
      return;
    }
    if (!this.#answered) {
      this.#fail(appFailure(this.app, err ?? 'closed'));
      return;
    }
    this.#failed = true;
    this.#resetClient();
  }

  #resetClient(): void {
    if (!this.#stream.closed) this.#stream.close(h2.NGHTTP2_INTERNAL_ERROR);
  }

  #stopTimer(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
  }

  /** Drops the app side of an exchange that will not complete. */
  #abandon(): void {
    this.#pool.cancel(this);
    const conn = this.#conn;
    if (conn !== undefined) {
      if (conn.exchange === this) conn.exchange = undefined;
      conn.socket.destroy();
    }
  }

  /** Answers the client with the proxy's own 502/504 (the first failure only). */
  #fail(f: AppFailure): void {
    if (this.#failed) return;
    this.#failed = true;
    this.#stopTimer();
    this.#onStatus(f.status);
    const stream = this.#stream;
    if (stream.destroyed || stream.closed) return;
    if (stream.headersSent) {
      stream.close(h2.NGHTTP2_INTERNAL_ERROR);
      return;
    }
    stream.respond({
      ':status': f.status,
      'content-type': 'text/plain; charset=utf-8',
      [this.#ctx.errorHeader]: f.reason,
    });
    stream.end(failureBody(f));
  }
}

/**
 * Carries one HTTP/2 stream to an HTTP/1.1 app. `onStatus` gets the status sent to the client.
 *
 * @example
 * ```ts
 * http2Server.on('stream', (stream, headers) => h2ToHttp1(stream, headers, ctx, pool, (s) => (status = s)));
 * ```
 */
export function h2ToHttp1(
  stream: ServerHttp2Stream,
  headers: Http2IncomingHeaders,
  ctx: TranslateContext,
  pool: AppConnections,
  onStatus: (status: number) => void,
): void {
  const method = headers[':method'] ?? 'GET';
  const authority = headers[':authority'] ?? headers['host'];
  if (typeof authority !== 'string' || authority.length === 0) {
    onStatus(400);
    stream.respond({ ':status': 400, [ctx.errorHeader]: 'no authority' });
    stream.end('bad request: an HTTP/1.1 app needs a Host; the request had no :authority\n');
    return;
  }
  const request = requestHead(headers, ctx, method, authority, stream.endAfterHeaders);
  if (request === undefined) {
    onStatus(400);
    stream.respond({ ':status': 400, [ctx.errorHeader]: 'invalid field' });
    stream.end('bad request: a field contains CR, LF or NUL, which HTTP/1.1 cannot carry\n');
    return;
  }
  new Exchange(stream, ctx, pool, onStatus, { method, ...request }).start();
}
