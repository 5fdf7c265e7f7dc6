/**
 * The inbound connect stage for HTTP/2 clients: node's HTTP/2 server (fed the socket) and each
 * stream re-issued to the app, every copy of `l5d-client-id` the client sent dropped and the
 * verified identity added; to an HTTP/1.1 app through translate.ts. Denied streams get a 403
 * (gRPC: PERMISSION_DENIED) from the proxy and the app sees nothing.
 */
import { performance } from 'node:perf_hooks';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { connect as http2Connect, constants as h2, createServer } from 'node:http2';
import type {
  ClientHttp2Session,
  Http2Server,
  IncomingHttpHeaders as Http2IncomingHeaders,
  ServerHttp2Session,
  ServerHttp2Stream,
} from 'node:http2';
import { CLIENT_ID_HEADER, forwardableHttp2Headers, relayH2Stream } from './h2-relay.js';
import { CONNECT_REFUSAL } from './http1-parse.js';
import { h2ToHttp1 } from './h2-to-http1.js';
import type { AppConnections } from './h2-to-http1.js';
import { appFailure, failureBody } from './translate.js';
import type { Conn, InboundContext } from './inbound-accept.js';
import { formatAddress } from '../core/index.js';
import { appAddress, peerOf, translateContext } from './inbound-accept.js';
import { PROXY_ERROR_HEADER } from './inbound-events.js';

/** gRPC's percent-encoding of grpc-message (only what is outside printable ASCII, and '%'). */
function grpcMessage(s: string): string {
  return s.replace(/[^\x20-\x24\x26-\x7e]/g, (c) => encodeURIComponent(c));
}

/** One HTTP/2 session to the app per app port, shared by every client (h2c, prior knowledge). */
export class AppSessions {
  readonly #ctx: InboundContext;
  readonly #sessions = new Map<number, ClientHttp2Session>();

  constructor(ctx: InboundContext) {
    this.#ctx = ctx;
  }

  get(port: number): ClientHttp2Session {
    const current = this.#sessions.get(port);
    if (current !== undefined && !current.closed && !current.destroyed) return current;
    const session = http2Connect(`http://${formatAddress({ host: this.#ctx.app.host, port })}`);
    session.on('error', (err) =>
      this.#ctx.log.debug({ err: err.message }, 'inbound app h2 session error'),
    );
    const forget = (): void => {
      if (this.#sessions.get(port) === session) this.#sessions.delete(port);
    };
    session.on('close', forget);
    session.on('goaway', forget);
    this.#sessions.set(port, session);
    return session;
  }

  destroy(): void {
    for (const s of this.#sessions.values()) s.destroy();
  }
}

/** The HTTP/2 server that connections are handed to once their bytes said HTTP/2. */
export class InboundHttp2 {
  readonly #ctx: InboundContext;
  readonly #appSessions: AppSessions;
  readonly #appConnections: AppConnections;
  readonly #server: Http2Server;
  readonly #conns = new WeakMap<ServerHttp2Session, Conn>();
  /** The connection being handed to the server (its 'session' event is synchronous). */
  #handing: Conn | undefined;

  constructor(ctx: InboundContext, appSessions: AppSessions, appConnections: AppConnections) {
    this.#ctx = ctx;
    this.#appSessions = appSessions;
    this.#appConnections = appConnections;
    this.#server = createServer({
      // Node's default is 2^32-1: one peer could open 10,000 streams on one connection.
      settings: { maxConcurrentStreams: ctx.limits.maxStreams },
    });
    this.#server.on('session', (session: ServerHttp2Session) => {
      const conn = this.#handing;
      if (conn === undefined) {
        session.destroy();
        return;
      }
      conn.session = session;
      this.#conns.set(session, conn);
      session.on('error', (err) => ctx.log.debug({ err: err.message }, 'inbound h2 session error'));
    });
    this.#server.on('stream', (stream: ServerHttp2Stream, headers: Http2IncomingHeaders) =>
      this.#onStream(stream, headers),
    );
    this.#server.on('sessionError', () => undefined);
    // Should not happen: a socket is handed over only after its bytes said HTTP/2.
    this.#server.on('unknownProtocol', (socket: Socket) => socket.destroy());
  }

  /** Serves a connection whose first bytes (`bytes`, not yet put back) said HTTP/2. */
  serve(conn: Conn, stream: Socket, bytes: Buffer): void {
    if (bytes.length > 0) stream.unshift(bytes);
    // node's HTTP/2 server falls back to HTTP/1 for a TLS socket whose ALPN was not h2; the
    // bytes have already said HTTP/2 (prior knowledge), so tell it so.
    if (conn.tls) (stream as TLSSocket).alpnProtocol = 'h2';
    this.#handing = conn;
    try {
      this.#server.emit('connection', stream);
    } finally {
      this.#handing = undefined;
    }
  }

  #onStream(stream: ServerHttp2Stream, headers: Http2IncomingHeaders): void {
    const conn = this.#conns.get(stream.session as ServerHttp2Session);
    stream.on('error', (err) =>
      this.#ctx.log.debug({ err: err.message }, 'inbound h2 stream error'),
    );
    if (conn === undefined || conn.decision === undefined) {
      stream.close(h2.NGHTTP2_REFUSED_STREAM);
      return;
    }
    const started = performance.now();
    const method = headers[':method'] ?? 'GET';
    let status = 0;
    stream.once('close', () => {
      this.#ctx.emit({
        type: 'http-request',
        peer: conn.peer,
        protocol: 'http2',
        method,
        status,
        authorized: conn.decision?.allowed === true,
        durationMs: performance.now() - started,
      });
    });

    if (!conn.decision.allowed) {
      status = denyHttp2(stream, headers, conn.decision.reason);
      conn.session?.close();
      return;
    }
    const exchangeKey = peerOf(conn);
    if (!this.#ctx.shares.takeExchange(exchangeKey)) {
      // Safe for the client to retry, here later or elsewhere (RFC 9113 §8.7).
      stream.close(h2.NGHTTP2_REFUSED_STREAM);
      return;
    }
    stream.once('close', () => this.#ctx.shares.releaseExchange(exchangeKey));
    if (method === 'CONNECT') {
      const r = CONNECT_REFUSAL;
      status = http2Error(stream, r.status, r.reason, r.body);
      return;
    }
    const onStatus = (s: number): void => {
      status = s;
    };
    if (conn.appProtocol !== 'h2') {
      h2ToHttp1(stream, headers, translateContext(this.#ctx, conn), this.#appConnections, onStatus);
      return;
    }
    this.#relayToH2App(conn, stream, headers, onStatus);
  }

  /** Re-issues a stream to an h2 app with the verified identity in `l5d-client-id`. */
  #relayToH2App(
    conn: Conn,
    stream: ServerHttp2Stream,
    headers: Http2IncomingHeaders,
    onStatus: (status: number) => void,
  ): void {
    const out = forwardableHttp2Headers(headers, (n) => n !== ':scheme');
    out[':scheme'] = 'http';
    if (conn.peer !== undefined) out[CLIENT_ID_HEADER] = conn.peer;
    const grpc = String(headers['content-type'] ?? '').startsWith('application/grpc');
    const app = appAddress(this.#ctx, conn);
    relayH2Stream(stream, out, this.#appSessions.get(conn.appPort), {
      // A gRPC call may stream for as long as it likes.
      timeoutMs: grpc ? 0 : this.#ctx.appTimeoutMs,
      failed: (cause) =>
        typeof cause === 'object' && 'rstCode' in cause
          ? http2Error(
              stream,
              502,
              'app reset',
              `bad gateway: the application at ${formatAddress({ host: app.host, port: conn.appPort })} reset the stream (HTTP/2 error code ${cause.rstCode})\n`,
            )
          : this.#appFailed(stream, conn, cause),
      onStatus,
      logger: this.#ctx.log,
    });
  }

  /** A 502 or 504 naming why the app did not answer. Returns the status. */
  #appFailed(stream: ServerHttp2Stream, conn: Conn, cause: Error | 'timeout'): number {
    if (stream.headersSent || stream.closed) return 0;
    const f = appFailure(appAddress(this.#ctx, conn), cause, this.#ctx.appTimeoutMs);
    return http2Error(stream, f.status, f.reason, failureBody(f));
  }
}

/** Answers a denied stream: gRPC PERMISSION_DENIED for gRPC, else 403. Returns the status. */
function denyHttp2(
  stream: ServerHttp2Stream,
  headers: Http2IncomingHeaders,
  reason: string,
): number {
  if ((headers['content-type'] ?? '').startsWith('application/grpc')) {
    stream.respond(
      {
        ':status': 200,
        'content-type': 'application/grpc',
        'grpc-status': '7',
        'grpc-message': grpcMessage(reason),
        [PROXY_ERROR_HEADER]: reason,
      },
      { endStream: true },
    );
    return 200;
  }
  return http2Error(stream, 403, reason, `forbidden: ${reason}\n`);
}

function http2Error(
  stream: ServerHttp2Stream,
  status: number,
  reason: string,
  body = `${reason}\n`,
): number {
  stream.respond({
    ':status': status,
    'content-type': 'text/plain; charset=utf-8',
    [PROXY_ERROR_HEADER]: reason,
  });
  stream.end(body);
  return status;
}
