/**
 * The inbound connect stage for HTTP/1.x clients. To an HTTP/1 app, one app connection per
 * client connection (http1-relay.ts): each request head is parsed strictly and rewritten, every
 * copy of `l5d-client-id` the client sent removed and the verified identity added; bodies and
 * responses pass through as they are. To an h2 app, node's HTTP/1 server (fed the socket) and
 * each request re-issued over the app's HTTP/2 session (translate.ts).
 */
import { performance } from 'node:perf_hooks';
import { connect as netConnect } from 'node:net';
import type { Socket } from 'node:net';
import { createServer, ServerResponse } from 'node:http';
import type { IncomingMessage, Server, ServerResponse as Response } from 'node:http';
import { CLIENT_ID_HEADER } from './h2-relay.js';
import { CONNECT_REFUSAL } from './http1-parse.js';
import { proxyResponse } from './http1-body.js';
import { Http1Relay } from './http1-relay.js';
import { http1ToH2 } from './translate.js';
import { forwardUpgrade, upgradeRequestHead } from './upgrade.js';
import type { Conn, InboundContext } from './inbound-accept.js';
import { formatAddress } from '../core/index.js';
import { appAddress, translateContext } from './inbound-accept.js';
import { PROXY_ERROR_HEADER } from './inbound-events.js';
import type { AppSessions } from './inbound-http2.js';

/** Relays an HTTP/1 connection to an HTTP/1 app; `bytes` is what was read while detecting. */
export function startHttp1Relay(
  ctx: InboundContext,
  conn: Conn,
  stream: Socket,
  bytes: Buffer,
): void {
  const decision = conn.decision;
  const relay = new Http1Relay({
    client: stream,
    app: appAddress(ctx, conn),
    appTimeoutMs: ctx.appTimeoutMs,
    peer: conn.peer,
    denied: decision === undefined || decision.allowed ? undefined : decision.reason,
    clientIdHeader: CLIENT_ID_HEADER,
    errorHeader: PROXY_ERROR_HEADER,
    logger: ctx.log,
    onExchange: (method, status, durationMs) =>
      ctx.emit({
        type: 'http-request',
        peer: conn.peer,
        protocol: 'http1',
        method,
        status,
        authorized: conn.decision?.allowed === true,
        durationMs,
      }),
  });
  conn.relay = relay;
  relay.start(bytes);
  if (ctx.closing()) relay.drain();
}

/** Answers an HTTP/1 client whose peer holds its share of app connections, and closes. */
export function refuseHttp1Busy(ctx: InboundContext, stream: Socket): void {
  const { maxAppConnectionsPerPeer, maxAppConnections } = ctx.limits;
  stream.on('error', () => undefined);
  stream.end(
    proxyResponse(
      503,
      PROXY_ERROR_HEADER,
      'too many connections',
      `service unavailable: this peer already holds ${maxAppConnectionsPerPeer} connections to the application (or the proxy its ${maxAppConnections}); retry later or reuse connections\n`,
    ),
  );
}

/** HTTP/1.1 clients of an app that speaks h2. */
export class InboundHttp1ToH2 {
  readonly #ctx: InboundContext;
  readonly #appSessions: AppSessions;
  readonly #server: Server;
  readonly #conns = new WeakMap<Socket, Conn>();

  constructor(ctx: InboundContext, appSessions: AppSessions) {
    this.#ctx = ctx;
    this.#appSessions = appSessions;
    this.#server = createServer({ noDelay: true, maxHeaderSize: 64 * 1024 }, (req, res) => {
      const conn = this.#conns.get(req.socket);
      if (conn === undefined) res.destroy();
      else this.#request(conn, req, res);
    });
    this.#server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) =>
      this.#onUpgrade(req, socket, head),
    );
    // CONNECT (node's parser hands it over apart).
    this.#server.on('connect', (_req: IncomingMessage, socket: Socket) => {
      const r = CONNECT_REFUSAL;
      socket.on('error', () => undefined);
      socket.end(proxyResponse(r.status, PROXY_ERROR_HEADER, r.reason, r.body));
    });
    this.#server.on('clientError', (err: Error, socket: Socket) => {
      ctx.log.debug({ err: err.message }, 'inbound HTTP/1 request refused');
      if (socket.writable) {
        socket.end('HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
      } else socket.destroy();
    });
  }

  /** Serves a connection whose first bytes (`bytes`, not yet put back) said HTTP/1. */
  serve(conn: Conn, stream: Socket, bytes: Buffer): void {
    if (bytes.length > 0) stream.unshift(bytes);
    this.#conns.set(stream, conn);
    this.#server.emit('connection', stream);
    stream.resume();
  }

  #request(conn: Conn, req: IncomingMessage, res: Response): void {
    const started = performance.now();
    let status = 0;
    res.once('close', () => this.#emitRequest(conn, req, status, started));
    if (this.#ctx.closing()) res.setHeader('connection', 'close');
    http1ToH2(
      req,
      res,
      translateContext(this.#ctx, conn),
      { session: () => this.#appSessions.get(conn.appPort) },
      (s) => (status = s),
    );
  }

  /**
   * An upgrade: h2c is ignored and the request served over HTTP/2 to the app (RFC 9113 §3.1
   * deprecates h2c upgrades); anything else (WebSocket) is tried over HTTP/1.1 on a connection
   * of its own, which a server speaking both accepts and an h2-only one answers with a 502 that
   * says so.
   */
  #onUpgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    const conn = this.#conns.get(socket);
    if (conn === undefined) {
      socket.destroy();
      return;
    }
    const upgrade = String(req.headers.upgrade ?? '').toLowerCase();
    if (/(^|,)\s*h2c/.test(upgrade)) {
      this.#h2cUpgrade(conn, req, socket, head);
      return;
    }
    const app = appAddress(this.#ctx, conn);
    const started = performance.now();
    forwardUpgrade({
      client: socket,
      clientRest: head,
      requestHead: upgradeRequestHead(req, CLIENT_ID_HEADER, conn.peer),
      upstream: netConnect({ host: app.host, port: app.port }),
      where: `the application at ${formatAddress(app)}`,
      errorHeader: PROXY_ERROR_HEADER,
      logger: this.#ctx.log,
      onStatus: (status) => this.#emitRequest(conn, req, status, started),
    });
  }

  #emitRequest(conn: Conn, req: IncomingMessage, status: number, started: number): void {
    this.#ctx.emit({
      type: 'http-request',
      peer: conn.peer,
      protocol: 'http1',
      method: req.method ?? 'GET',
      status,
      authorized: true,
      durationMs: performance.now() - started,
    });
  }

  /** An h2c upgrade: served as a plain request; with a body it is refused (400). */
  #h2cUpgrade(conn: Conn, req: IncomingMessage, socket: Socket, head: Buffer): void {
    const res = new ServerResponse(req);
    res.assignSocket(socket);
    res.shouldKeepAlive = false;
    res.once('finish', () => socket.end());
    const bodyLength = req.headers['content-length'];
    if (
      head.length > 0 ||
      req.headers['transfer-encoding'] !== undefined ||
      (bodyLength !== undefined && bodyLength !== '0')
    ) {
      res.writeHead(400, {
        'content-type': 'text/plain; charset=utf-8',
        [PROXY_ERROR_HEADER]: 'h2c upgrade refused',
      });
      res.end(
        'bad request: h2c upgrade with a request body is not supported; send the request without Upgrade: h2c\n',
      );
      return;
    }
    delete req.headers.upgrade;
    this.#request(conn, req, res);
  }
}
