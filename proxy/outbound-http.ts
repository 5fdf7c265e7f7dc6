/**
 * The HTTP listener (Linkerd's 4140 in explicit mode): an HTTP/1.1 forward proxy that also takes
 * HTTP/2 with prior knowledge (as gRPC clients send), routing every request by its authority
 * through a {@link DestinationResolver}. Accept → detect (the first bytes pick the HTTP/1 or the
 * HTTP/2 server) → route (per request) → connect (outbound-forward.ts, outbound-tunnel.ts).
 */
import { createServer as createHttpServer } from 'node:http';
import type { IncomingMessage, Server as HttpServer, ServerResponse } from 'node:http';
import { createServer as createHttp2Server } from 'node:http2';
import type {
  Http2Server,
  IncomingHttpHeaders as Http2IncomingHeaders,
  ServerHttp2Session,
  ServerHttp2Stream,
} from 'node:http2';
import type { Socket } from 'node:net';
import { applyHttpTimeouts } from '../core/index.js';
import type { DestinationResolver } from './routes.js';
import type { OutboundContext } from './outbound-accept.js';
import { messageOf } from './outbound-connect.js';
import { opensWithH2Preface, sniffFirstBytes } from './outbound-detect.js';
import { forwardRequest, forwardStream } from './outbound-forward.js';
import { FastHttp1Connection } from './outbound-http1.js';
import type { FastFrontOptions, FastRouter } from './outbound-http1.js';
import type { StreamAnswer } from './outbound-forward.js';
import { destinationFor, proxyError, requestTarget } from './outbound-route.js';
import { tunnel, upgrade } from './outbound-tunnel.js';

/**
 * What an HTTP front serves: requests, HTTP/2 streams, and optionally CONNECT and upgrades; with
 * `fast`, HTTP/1.1 requests to meshid peers take the fast path (outbound-http1.ts) and only the
 * rest reach `request`.
 */
export interface HttpHandlers {
  readonly fast?: { readonly router: FastRouter; readonly listener: () => string };
  readonly request: (req: IncomingMessage, res: ServerResponse) => void;
  readonly stream: (stream: ServerHttp2Stream, headers: Http2IncomingHeaders) => void;
  readonly connect?: (req: IncomingMessage, app: Socket, head: Buffer) => void;
  readonly upgrade?: (req: IncomingMessage, app: Socket, head: Buffer) => void;
}

/**
 * An HTTP/1.1 server and an HTTP/2 server that listen on nothing: {@link HttpFront.accept} hands
 * each connection to one of them by its first bytes.
 */
export class HttpFront {
  readonly #ctx: OutboundContext;
  readonly #http1: HttpServer;
  readonly #http2: Http2Server;
  /** HTTP/2 sessions apps opened (closed with GOAWAY on shutdown). */
  readonly #appSessions = new Set<ServerHttp2Session>();
  readonly #fast: FastFrontOptions | undefined;
  /** Connections on the fast path (told to close on shutdown). */
  readonly #fastConns = new Set<FastHttp1Connection>();
  /** Connections already tracked (a fast one handed to node's server is not tracked twice). */
  readonly #tracked = new WeakSet<Socket>();

  constructor(ctx: OutboundContext, handlers: HttpHandlers) {
    this.#ctx = ctx;
    this.#fast =
      handlers.fast === undefined
        ? undefined
        : {
            ...handlers.fast,
            fallback: (app, bytes) => this.#serveHttp1(app, bytes),
            keepAliveTimeoutMs: ctx.limits.http.keepAliveTimeoutMs,
          };
    this.#http1 = createHttpServer({ noDelay: true });
    // Handed connections, never listening: node would enforce no request time without `fed`.
    applyHttpTimeouts(this.#http1, ctx.limits.http, { fed: true });
    // Node's default is 2^32-1 streams on one connection.
    this.#http2 = createHttp2Server({ settings: { maxConcurrentStreams: ctx.limits.maxStreams } });
    this.#http2.on('session', (session: ServerHttp2Session) => {
      this.#appSessions.add(session);
      session.once('close', () => this.#appSessions.delete(session));
      session.on('error', (err) =>
        ctx.log.debug({ err: err.message }, 'outbound app HTTP/2 session error'),
      );
    });
    this.#http2.on('stream', handlers.stream);
    this.#http2.on('sessionError', () => undefined);
    this.#http1.on('connection', (s: Socket) => this.#track(s));
    this.#http1.on('request', handlers.request);
    if (handlers.connect !== undefined) this.#http1.on('connect', handlers.connect);
    if (handlers.upgrade !== undefined) this.#http1.on('upgrade', handlers.upgrade);
  }

  /** A new app connection: the HTTP/1 or the HTTP/2 server gets it by its first bytes. */
  accept(app: Socket): void {
    const ctx = this.#ctx;
    app.setNoDelay(true);
    app.on('error', (err) => ctx.log.debug({ err: messageOf(err) }, 'outbound app error'));
    if (ctx.closing()) {
      app.destroy();
      return;
    }
    void sniffFirstBytes(app, ctx.detectTimeoutMs).then(({ bytes, ended }) => {
      if (app.destroyed) return;
      if (ended) {
        // Nothing can be put back once the client has ended, and a client that half-closes
        // before its first bytes told HTTP/1.1 from HTTP/2 has sent no request to serve.
        app.destroy();
        return;
      }
      this.serve(app, bytes);
    });
  }

  /** Serves a connection whose first bytes (already read) are `bytes`. */
  serve(app: Socket, bytes: Buffer): void {
    if (opensWithH2Preface(bytes)) {
      if (bytes.length > 0) app.unshift(bytes);
      this.#track(app);
      // node's HTTP/2 server reads the socket itself (the put-back bytes first).
      this.#http2.emit('connection', app);
      return;
    }
    if (this.#fast !== undefined) {
      this.#track(app);
      const conn = new FastHttp1Connection(this.#ctx, this.#fast, app);
      this.#fastConns.add(conn);
      app.once('close', () => this.#fastConns.delete(conn));
      conn.start(bytes);
      return;
    }
    this.#serveHttp1(app, bytes);
  }

  /** Node's HTTP/1 server serves the connection from `bytes` (read, not yet served) on. */
  #serveHttp1(app: Socket, bytes: Buffer): void {
    if (bytes.length > 0) app.unshift(bytes);
    this.#http1.emit('connection', app);
    app.resume();
  }

  #track(s: Socket): void {
    if (this.#tracked.has(s)) return;
    this.#tracked.add(s);
    this.#ctx.tracker.track([s]);
  }

  /**
   * Sends GOAWAY on every app HTTP/2 session, and stops the HTTP/1 server (its request-time
   * check, and its idle keep-alive connections; busy ones finish their request).
   */
  closeSessions(): void {
    for (const s of this.#appSessions) s.close();
    for (const c of this.#fastConns) c.drain();
    this.#http1.close();
  }
}

/** The HTTP listener's front: every request routed by its authority through `resolver`. */
export function httpListenerFront(
  ctx: OutboundContext,
  listener: string,
  resolver: DestinationResolver,
): HttpFront {
  return new HttpFront(ctx, {
    fast: {
      router: async (req, refuse) => {
        const dest = await destinationFor(
          ctx.emit,
          { required: req.required, authority: req.authority, listener },
          resolver,
          refuse,
        );
        return dest === undefined ? undefined : { dest };
      },
      listener: () => listener,
    },
    request: (req, res) => void routeRequest(ctx, req, res, listener, resolver),
    stream: (stream, headers) => void routeStream(ctx, stream, headers, listener, resolver),
    connect: (req, app, head) => void tunnel(ctx, { req, app, head, listener, resolver }),
    upgrade: (req, app, head) =>
      void upgrade(ctx, { req, app, head, listener, resolver }, (q, r) =>
        routeRequest(ctx, q, r, listener, resolver),
      ),
  });
}

/** One HTTP/1.1 request: its authority resolved, then forwarded. */
async function routeRequest(
  ctx: OutboundContext,
  req: IncomingMessage,
  res: ServerResponse,
  listener: string,
  resolver: DestinationResolver,
): Promise<void> {
  const target = requestTarget(req);
  if (target === undefined) {
    proxyError(
      res,
      400,
      'bad-request',
      'request has no usable authority (Host header or absolute URI)',
    );
    return;
  }
  const dest = await destinationFor(
    ctx.emit,
    { required: req.headers['l5d-require-id'], authority: target.authority, listener },
    resolver,
    (status, reason, message) => proxyError(res, status, reason, message),
  );
  if (dest === undefined) return;
  await forwardRequest(ctx, req, res, { listener, dest, target });
}

/** One HTTP/2 stream from the app (h2c prior knowledge, e.g. grpc-js), routed by :authority. */
async function routeStream(
  ctx: OutboundContext,
  stream: ServerHttp2Stream,
  headers: Http2IncomingHeaders,
  listener: string,
  resolver: DestinationResolver,
): Promise<void> {
  stream.on('error', (err) => ctx.log.debug({ err: err.message }, 'outbound app h2 stream error'));
  const answer = streamAnswer(stream);
  if (headers[':method'] === 'CONNECT') {
    answer(405, 'connect-over-http2', 'CONNECT over HTTP/2 is not supported; use HTTP/1.1 CONNECT');
    return;
  }
  const authority = headers[':authority'] ?? headers['host'];
  if (typeof authority !== 'string' || authority.length === 0) {
    answer(400, 'bad-request', 'request has no usable authority (:authority)');
    return;
  }
  const dest = await destinationFor(
    ctx.emit,
    { required: headers['l5d-require-id'], authority, listener },
    resolver,
    answer,
  );
  if (dest === undefined) return;
  await forwardStream(ctx, stream, headers, { listener, dest }, answer);
}

/** The proxy's own answer on an app's HTTP/2 stream, marked with `l5d-proxy-error`. */
export function streamAnswer(stream: ServerHttp2Stream): StreamAnswer {
  return (status, reason, message) => {
    if (stream.closed || stream.headersSent) return 0;
    stream.respond({
      ':status': status,
      'content-type': 'text/plain; charset=utf-8',
      'l5d-proxy-error': reason,
    });
    stream.end(`${message}\n`);
    return status;
  };
}
