/**
 * The outbound's fast path for HTTP/1.1 from the app to a peer meshid proxy: requests are read
 * by the strict parser (http1-parse.ts), each carried as a stream on the multiplexed HTTP/2
 * session to the peer, its answer written back as an HTTP/1.1 response; one exchange at a time
 * per connection (a pipelined request waits, unread, for the answer before it). No
 * IncomingMessage, ServerResponse or node HTTP parser per request: this is the app side of the
 * HTTP/2 carriage between proxies.
 *
 * It takes the common case only: an HTTP/1.1 request in origin form with one Host, no body or a
 * Content-Length one, no Upgrade, CONNECT or Expect, whose head arrives whole, to a destination
 * whose proxy speaks the mesh's HTTP/2. Anything else (and the rest of that connection) is handed,
 * bytes unread, to node's HTTP/1 server and the listener's usual handlers, which take all cases:
 * chunked uploads, absolute-form targets, CONNECT and upgrades, HTTP/1.0, heads that dribble in
 * (node's head timeout, 408), malformed requests (node's 400), peers that chose HTTP/1.1.
 */
import { STATUS_CODES } from 'node:http';
import { constants as h2 } from 'node:http2';
import type {
  ClientHttp2Session,
  ClientHttp2Stream,
  IncomingHttpHeaders as Http2IncomingHeaders,
  OutgoingHttpHeaders as Http2OutgoingHeaders,
} from 'node:http2';
import type { Socket } from 'node:net';
import { Collector, MAX_HEAD_BYTES, parseRequestHead } from './http1-parse.js';
import type { RequestHead } from './http1-parse.js';
import { HOP_BY_HOP_HTTP1, isHopByHop } from './hop-by-hop.js';
import type { OutboundContext } from './outbound-accept.js';
import { messageOf } from './outbound-connect.js';
import type { Destination } from './routes.js';

/** One request as the router sees it. */
export interface FastRequest {
  readonly method: string;
  readonly authority: string;
  readonly path: string;
  /** The request's `l5d-require-id`, if any. */
  readonly required: string | undefined;
  /** The app's connection (the transparent listener reads its mark). */
  readonly socket: Socket;
}

/** Where a request goes, and who hears how it ended. */
export interface FastRoute {
  readonly dest: Destination;
  /**
   * Called once when the exchange is over with the status sent (0 when none was), or with
   * undefined when the request was handed to node's server instead (it is routed again there).
   */
  readonly done?: (status: number | undefined) => void;
}

/** The proxy's own refusal of a request: status, `l5d-proxy-error` reason, a sentence. */
export type FastRefuse = (status: number, reason: string, message: string) => void;

/** Picks a request's destination, or refuses it (then returns undefined). */
export type FastRouter = (
  req: FastRequest,
  refuse: FastRefuse,
) => FastRoute | undefined | Promise<FastRoute | undefined>;

/** What the front needs from its owner. */
export interface FastFrontOptions {
  readonly router: FastRouter;
  /** The listener's name, for the connection's events. */
  readonly listener: () => string;
  /** Hands a connection to node's HTTP/1 server; `bytes` are read but not yet served. */
  readonly fallback: (app: Socket, bytes: Buffer) => void;
  /** How long an idle keep-alive connection stays open, ms. */
  readonly keepAliveTimeoutMs: number;
}

/** Fields never sent to the peer: this hop's (hop-by-hop.ts), Host (it is :authority), Trailer. */
const NOT_FORWARDED = new Set([...HOP_BY_HOP_HTTP1, 'host', 'trailer']);

/** Fields HTTP/2 carries once (node refuses a second): the first is kept, as node's parser did. */
const SINGLE_VALUE = new Set([
  'authorization',
  'content-length',
  'content-type',
  'from',
  'if-modified-since',
  'if-unmodified-since',
  'max-forwards',
  'proxy-authorization',
  'referer',
  'user-agent',
  'if-match',
  'if-none-match',
  'if-range',
  'range',
]);

/** A request the fast path does not take (handed to node's server). */
const FALLBACK = Symbol('fallback');

/**
 * Serves one app connection's HTTP/1.1 requests over the mesh's HTTP/2 sessions.
 *
 * @example
 * ```ts
 * new FastHttp1Connection(ctx, options, app).start(firstBytes);
 * ```
 */
export class FastHttp1Connection {
  readonly #ctx: OutboundContext;
  readonly #o: FastFrontOptions;
  readonly #app: Socket;
  readonly #head = new Collector('block', MAX_HEAD_BYTES, true);
  /** Bytes read and not yet served (a request waiting for the answer before it). */
  #pending: Buffer | undefined;
  /** The exchange in progress. */
  #ex: FastExchange | undefined;
  #handedOff = false;
  #closing = false;
  readonly #onData = (buf: Buffer): void => this.#read(buf);

  constructor(ctx: OutboundContext, options: FastFrontOptions, app: Socket) {
    this.#ctx = ctx;
    this.#o = options;
    this.#app = app;
  }

  start(first: Buffer): void {
    const app = this.#app;
    app.setTimeout(this.#o.keepAliveTimeoutMs, () => {
      // Idle between requests for the keep-alive time: closed, as node's server does.
      if (this.#ex === undefined && !this.#handedOff) app.end();
    });
    app.on('data', this.#onData);
    app.once('end', () => {
      if (this.#handedOff) return;
      if (this.#ex === undefined) app.end();
      else this.#closing = true;
    });
    app.once('close', () => this.#ex?.appGone());
    this.#read(first);
    if (!this.#handedOff && this.#ex === undefined) app.resume();
  }

  /** The proxy is shutting down: close now when idle, else after the exchange in progress. */
  drain(): void {
    this.#closing = true;
    if (this.#ex === undefined && !this.#handedOff) this.#app.end();
  }

  #read(buf: Buffer): void {
    if (this.#handedOff || buf.length === 0) return;
    if (this.#ex !== undefined && !this.#ex.readingBody) {
      // A pipelined request: it waits, unread, for the answer before it.
      this.#pending = this.#pending === undefined ? buf : Buffer.concat([this.#pending, buf]);
      this.#app.pause();
      return;
    }
    if (this.#ex !== undefined) {
      const pos = this.#ex.body(buf, 0);
      if (pos < buf.length) {
        this.#pending = buf.subarray(pos);
        this.#app.pause();
      }
      return;
    }
    this.#nextRequest(buf);
  }

  /** `buf` starts with a request head (or empty lines before one). */
  #nextRequest(buf: Buffer): void {
    if (this.#closing) return;
    let end: number;
    try {
      end = this.#head.feed(buf, 0);
    } catch {
      end = -1;
    }
    const route = end === -1 ? FALLBACK : this.#parse(buf, end);
    if (route === FALLBACK) {
      this.#handOff(buf);
      return;
    }
    const ex = new FastExchange(this.#ctx, this.#o, this.#app, route, buf.subarray(0, end), () =>
      this.#exchangeDone(ex),
    );
    this.#ex = ex;
    this.#app.pause();
    let rest = buf.subarray(end);
    if (route.bodyLength > 0 && rest.length > 0) {
      const used = ex.body(rest, 0);
      rest = rest.subarray(used);
    }
    if (rest.length > 0) this.#pending = rest;
    ex.start();
  }

  #parse(buf: Buffer, end: number): ParsedRequest | typeof FALLBACK {
    this.#head.take(buf, 0, end); // resets it (the head is whole in `buf`)
    let req: RequestHead;
    try {
      req = parseRequestHead(buf, end, 'l5d-client-id');
    } catch {
      return FALLBACK; // node's parser answers it (400), or serves it (CONNECT)
    }
    if (!req.http11 || req.upgrade !== undefined || req.framing.kind === 'chunked') return FALLBACK;
    const target = requestTargetOf(buf);
    if (target === undefined || target.charCodeAt(0) !== 0x2f) return FALLBACK;
    const headers: Http2OutgoingHeaders = {
      ':method': req.method,
      ':path': target,
      ':scheme': 'http',
    };
    let authority: string | undefined;
    let required: string | undefined;
    for (const h of req.headers) {
      const name = buf.toString('latin1', h.start, h.colon).toLowerCase();
      const value = buf.toString('latin1', h.valueStart, h.valueEnd);
      if (name === 'host') authority = value;
      else if (name === 'expect') return FALLBACK;
      else if (name === 'l5d-require-id') required = value;
      if (NOT_FORWARDED.has(name) || req.drop.has(h)) continue;
      const prev = headers[name];
      if (prev === undefined) headers[name] = value;
      else if (SINGLE_VALUE.has(name)) continue;
      else if (Array.isArray(prev)) prev.push(value);
      else headers[name] = [prev as string, value];
    }
    if (authority === undefined || authority.length === 0) return FALLBACK;
    headers[':authority'] = authority;
    return {
      method: req.method,
      authority,
      path: target,
      required,
      headers,
      bodyLength: req.framing.kind === 'length' ? req.framing.length : 0,
      close: req.close,
    };
  }

  /** Node's HTTP/1 server takes the connection from here, `bytes` first. */
  #handOff(bytes: Buffer): void {
    this.#handedOff = true;
    const app = this.#app;
    app.off('data', this.#onData);
    app.setTimeout(0);
    app.pause();
    this.#o.fallback(app, bytes);
  }

  #exchangeDone(ex: FastExchange): void {
    if (this.#ex !== ex) return;
    this.#ex = undefined;
    if (ex.handedOff) {
      // Routed to a peer that is not a meshid proxy: node's server serves it from its head.
      const rest = this.#pending;
      this.#pending = undefined;
      this.#handOff(rest === undefined ? ex.headBytes : Buffer.concat([ex.headBytes, rest]));
      return;
    }
    if (ex.closeAfter || this.#closing) {
      this.#app.end();
      return;
    }
    const pending = this.#pending;
    this.#pending = undefined;
    if (pending !== undefined) this.#read(pending);
    if (this.#ex === undefined && !this.#handedOff) this.#app.resume();
  }
}

interface ParsedRequest {
  readonly method: string;
  readonly authority: string;
  readonly path: string;
  readonly required: string | undefined;
  readonly headers: Http2OutgoingHeaders;
  readonly bodyLength: number;
  readonly close: boolean;
}

function uncork(socket: Socket): void {
  socket.uncork();
}

/** The request-target of a request head (after any empty lines), or undefined. */
function requestTargetOf(head: Buffer): string | undefined {
  let i = 0;
  while (head[i] === 0x0d && head[i + 1] === 0x0a) i += 2;
  const sp = head.indexOf(0x20, i);
  if (sp === -1) return undefined;
  const sp2 = head.indexOf(0x20, sp + 1);
  return sp2 === -1 ? undefined : head.toString('latin1', sp + 1, sp2);
}

/** One request carried to the peer and its answer written back. */
class FastExchange {
  readonly #ctx: OutboundContext;
  readonly #o: FastFrontOptions;
  readonly #app: Socket;
  readonly #req: ParsedRequest;
  /** The head as read, to hand to node's server if the peer is not a meshid proxy. */
  readonly headBytes: Buffer;
  readonly #onDone: () => void;
  #route: FastRoute | undefined;
  #up: ClientHttp2Stream | undefined;
  /** Body bytes that came before the stream existed. */
  #early: Buffer[] = [];
  #bodyLeft: number;
  #status = 0;
  #chunked = false;
  #over = false;
  handedOff = false;
  closeAfter: boolean;

  constructor(
    ctx: OutboundContext,
    o: FastFrontOptions,
    app: Socket,
    req: ParsedRequest,
    headBytes: Buffer,
    onDone: () => void,
  ) {
    this.#ctx = ctx;
    this.#o = o;
    this.#app = app;
    this.#req = req;
    this.headBytes = headBytes;
    this.#onDone = onDone;
    this.#bodyLeft = req.bodyLength;
    this.closeAfter = req.close;
  }

  /** Whether request body bytes are still expected from the app. */
  get readingBody(): boolean {
    return this.#bodyLeft > 0;
  }

  /** Takes request body bytes from `buf[pos…]`; returns where they end. */
  body(buf: Buffer, pos: number): number {
    const n = Math.min(this.#bodyLeft, buf.length - pos);
    if (n === 0) return pos;
    this.#bodyLeft -= n;
    const part = pos === 0 && n === buf.length ? buf : buf.subarray(pos, pos + n);
    const up = this.#up;
    if (up === undefined) {
      this.#early.push(part);
      // Held until the stream exists: no more is read meanwhile.
      this.#app.pause();
    } else if (!up.write(part)) {
      this.#app.pause();
      up.once('drain', () => {
        if (!this.#over && this.#bodyLeft > 0) this.#app.resume();
      });
    }
    if (this.#bodyLeft === 0) up?.end();
    return pos + n;
  }

  start(): void {
    const req = this.#req;
    const refuse: FastRefuse = (status, reason, message) => this.#refuse(status, reason, message);
    let routed: FastRoute | undefined | Promise<FastRoute | undefined>;
    try {
      routed = this.#o.router(
        {
          method: req.method,
          authority: req.authority,
          path: req.path,
          required: req.required,
          socket: this.#app,
        },
        refuse,
      );
    } catch (err) {
      refuse(502, 'no-route', `destination lookup failed: ${messageOf(err)}`);
      return;
    }
    if (routed instanceof Promise) {
      routed.then(
        (r) => this.#routed(r),
        (err: unknown) => refuse(502, 'no-route', `destination lookup failed: ${messageOf(err)}`),
      );
    } else {
      this.#routed(routed);
    }
  }

  #routed(route: FastRoute | undefined): void {
    if (route === undefined || this.#over) return;
    this.#route = route;
    const ctx = this.#ctx;
    if (!ctx.meshH2 || ctx.pool.isHttp1Peer(route.dest)) {
      this.#handOff();
      return;
    }
    const open = ctx.pool.openMeshSession(route.dest);
    if (open !== undefined) {
      this.#send(open);
      return;
    }
    ctx.pool.meshSession(this.#o.listener(), route.dest).then(
      (session) => {
        if (session === undefined) this.#handOff();
        else this.#send(session);
      },
      (err: unknown) => this.#refuse(...ctx.connector.connectFailure(err)),
    );
  }

  /** The peer is not a meshid proxy: node's server and the HTTP/1.1 pool take the request. */
  #handOff(): void {
    if (this.#over) return;
    this.#over = true;
    this.handedOff = true;
    if (this.#early.length > 0) {
      // Body bytes already read go back behind the head.
      const early = Buffer.concat(this.#early);
      (this as { headBytes: Buffer }).headBytes = Buffer.concat([this.headBytes, early]);
    }
    this.#route?.done?.(undefined);
    this.#onDone();
  }

  #send(session: ClientHttp2Session): void {
    if (this.#over) return;
    const app = this.#app;
    if (app.destroyed) {
      this.#finish(0);
      return;
    }
    const noBody = this.#req.bodyLength === 0;
    let up: ClientHttp2Stream;
    try {
      up = session.request(this.#req.headers, { endStream: noBody });
    } catch (err) {
      this.#refuse(502, 'connect-failed', `HTTP/2 to the peer proxy failed: ${messageOf(err)}`);
      return;
    }
    this.#up = up;
    for (const part of this.#early) up.write(part);
    this.#early = [];
    if (!noBody) {
      if (this.#bodyLeft === 0) up.end();
      else app.resume();
    }
    up.on('response', (h: Http2IncomingHeaders) => this.#response(h));
    up.on('data', (d: Buffer) => this.#data(d));
    up.on('end', () => this.#end());
    up.on('error', (err) => {
      if (this.#status === 0)
        this.#refuse(502, 'peer-failed', `HTTP/2 stream to the peer proxy failed: ${err.message}`);
      else this.#broken();
    });
    up.on('close', () => {
      if (this.#over) return;
      if (this.#status === 0) {
        this.#refuse(
          502,
          'peer-failed',
          `the peer proxy reset the stream (HTTP/2 error code ${up.rstCode})`,
        );
      } else {
        this.#broken();
      }
    });
  }

  #response(h: Http2IncomingHeaders): void {
    const status = Number(h[':status'] ?? 502);
    if (status < 200 || this.#over) return;
    this.#status = status;
    const up = this.#up!;
    const bodiless =
      this.#req.method === 'HEAD' || status === 204 || status === 304 || up.endAfterHeaders;
    let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n`;
    let length = false;
    for (const name in h) {
      const v = h[name];
      if (v === undefined || name.charCodeAt(0) === 0x3a || isHopByHop('http/1.1', name)) continue;
      if (name === 'content-length') length = true;
      if (typeof v === 'string') head += `${name}: ${v}\r\n`;
      else for (const one of v) head += `${name}: ${one}\r\n`;
    }
    if (!length && !bodiless) {
      head += 'transfer-encoding: chunked\r\n';
      this.#chunked = true;
    } else if (!length && up.endAfterHeaders && status !== 204 && status !== 304) {
      head += 'content-length: 0\r\n';
    }
    if (this.closeAfter) head += 'connection: close\r\n';
    const app = this.#app;
    if (up.endAfterHeaders) {
      app.write(`${head}\r\n`, 'latin1');
      this.#finish(status);
      return;
    }
    // The head and the body that usually comes in the same read go out in one write: node
    // emits the stream's data and end in later ticks of this turn of the loop (not in this
    // one), so the socket stays corked until the loop's check phase, after all of them.
    app.cork();
    app.write(`${head}\r\n`, 'latin1');
    setImmediate(uncork, app);
  }

  #data(d: Buffer): void {
    if (this.#over || this.#status === 0 || d.length === 0) return;
    const app = this.#app;
    let ok: boolean;
    if (this.#chunked) {
      app.cork();
      app.write(`${d.length.toString(16)}\r\n`, 'latin1');
      app.write(d);
      ok = app.write('\r\n', 'latin1');
      app.uncork();
    } else {
      ok = app.write(d);
    }
    if (!ok) {
      const up = this.#up!;
      up.pause();
      app.once('drain', () => up.resume());
    }
  }

  #end(): void {
    if (this.#over || this.#status === 0) return;
    if (this.#chunked) this.#app.write('0\r\n\r\n', 'latin1');
    this.#finish(this.#status);
  }

  /** The answer broke off after it started: the app's connection cannot be used again. */
  #broken(): void {
    if (this.#over) return;
    this.#over = true;
    this.#route?.done?.(this.#status);
    this.#app.destroy();
  }

  /** The app went away mid-exchange: the peer's stream is cancelled. */
  appGone(): void {
    if (this.#over) return;
    this.#over = true;
    const up = this.#up;
    if (up !== undefined && !up.closed) up.close(h2.NGHTTP2_CANCEL);
    this.#route?.done?.(this.#status);
  }

  /** The proxy's own answer (no stream, or it failed before its answer). */
  #refuse(status: number, reason: string, message: string): void {
    if (this.#over || this.#status !== 0) return;
    const body = Buffer.from(`${message}\n`, 'utf8');
    // A body not read to its end cannot be skipped reliably: the connection ends with this answer.
    if (this.#bodyLeft > 0) this.closeAfter = true;
    this.#app.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\ncontent-type: text/plain; charset=utf-8\r\nl5d-proxy-error: ${reason}\r\ncontent-length: ${body.length}\r\n${this.closeAfter ? 'connection: close\r\n' : ''}\r\n`,
      'latin1',
    );
    this.#app.write(body);
    const up = this.#up;
    if (up !== undefined && !up.closed) up.close(h2.NGHTTP2_CANCEL);
    this.#finish(status);
  }

  #finish(status: number): void {
    if (this.#over) return;
    this.#over = true;
    if (this.#bodyLeft > 0) this.closeAfter = true;
    this.#route?.done?.(status);
    this.#onDone();
  }
}
