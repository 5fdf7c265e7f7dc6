/**
 * The proxy's inbound side: terminates mutual TLS 1.3 from meshed peers, authorizes each
 * connection by the peer's verified identity, and forwards to the application on loopback.
 *
 * One connection goes through these steps:
 *
 * 1. The first byte says TLS (a handshake record, 0x16) or not. Plaintext is served only when the
 *    policy allows unauthenticated peers; otherwise the connection is dropped.
 * 2. TLS: the server certificate is the workload certificate of the moment and client
 *    certificates are verified against the anchors of the moment (both read per connection, so a
 *    renewal or an anchor reload applies to new connections without cutting existing ones). A
 *    client certificate is required; the peer identity is its first DNS SAN.
 * 3. The policy decides once for the connection.
 * 4. The first decrypted bytes pick the protocol: HTTP/2, HTTP/1.x or opaque (see detect.ts).
 *    Most clients speak first, so this costs no round trip; a silent client (a server-speaks-first
 *    protocol) is connected to the app after a short timeout.
 * 5. HTTP/1 is relayed to one app connection per client connection (http1-relay.ts): each
 *    request head is parsed strictly and rewritten, every copy of `l5d-client-id` the client sent
 *    removed and the verified identity added; bodies and responses pass through as they are.
 *    HTTP/2 goes through node's HTTP/2 server (fed the socket) and is re-issued to the app with
 *    the same header rule. Denied HTTP gets a 403 (gRPC: PERMISSION_DENIED) from the proxy and
 *    the app sees nothing. Opaque bytes are piped both ways with half-close.
 */
import { performance } from 'node:perf_hooks';
import { connect as netConnect, createServer as createNetServer } from 'node:net';
import type { AddressInfo, Server as NetServer, Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import type { Server as TlsServer, TLSSocket } from 'node:tls';
import {
  connect as http2Connect,
  constants as h2,
  createServer as createHttp2Server,
} from 'node:http2';
import { createServer as createHttp1Server, ServerResponse } from 'node:http';
import type {
  Agent as HttpAgent,
  IncomingMessage,
  Server as Http1Server,
  ServerResponse as Http1Response,
} from 'node:http';
import type {
  ClientHttp2Session,
  Http2Server,
  IncomingHttpHeaders as Http2IncomingHeaders,
  ServerHttp2Session,
  ServerHttp2Stream,
} from 'node:http2';
import type { Address, Logger, MeshTlsSettings, TlsAlgorithms } from '../core/index.js';
import { FIPS_TLS, LogKey, negotiatedAlgorithms } from '../core/index.js';
import type { WorkloadCertificate } from './identity/client.js';
import {
  MESH_H2_ALPN,
  NO_RESUMPTION,
  PROXY_TLS,
  ContextCache,
  fipsPeerProblem,
  verifiedPeerIdentity,
} from './tls.js';
import { detectProtocol, readFirstBytes } from './detect.js';
import { CLIENT_ID_HEADER, forwardableHttp2Headers, relayH2Stream } from './h2-relay.js';
import { CONNECT_REFUSAL } from './http1-parse.js';
import { Http1Relay, proxyResponse } from './http1-relay.js';
import type { DetectedProtocol, FirstBytes } from './detect.js';
import { AppProtocolDetector } from './app-protocol.js';
import type { AppPorts, AppProtocol, ResolvedAppProtocol } from './app-protocol.js';
import { appAgent, appFailure, failureBody, h2ToHttp1, http1ToH2 } from './translate.js';
import type { TranslateContext } from './translate.js';
import { TRANSPORT_HEADER_ALPN, readTransportHeader } from './l5d-transport.js';
import { forwardUpgrade, upgradeRequestHead } from './upgrade.js';
import type { InboundPolicy, PolicyDecision } from './policy.js';
import { PeerBudget } from './peer-budget.js';

export { InboundPolicy } from './policy.js';
export type { InboundPolicyOptions, PolicyDecision } from './policy.js';
export type { DetectedProtocol } from './detect.js';
export { AppProtocolDetector, parseAppProtocols } from './app-protocol.js';
export type { AppPorts, AppProtocol, ResolvedAppProtocol } from './app-protocol.js';
export {
  TRANSPORT_HEADER_ALPN,
  TransportHeaderError,
  decodeTransportHeaderMessage,
  encodeTransportHeader,
} from './l5d-transport.js';
export type { TransportHeader } from './l5d-transport.js';

// Defined beside the HTTP/2 relay, which drops every copy a client sends.
export { CLIENT_ID_HEADER } from './h2-relay.js';

/**
 * The header on responses the proxy makes itself (403, 502), saying why (Linkerd's name).
 *
 * @example
 * ```ts
 * if (res.headers[PROXY_ERROR_HEADER] !== undefined) log.warn('refused by the peer proxy');
 * ```
 */
export const PROXY_ERROR_HEADER = 'l5d-proxy-error';

/** Why a connection was refused before any application byte was read. */
export type HandshakeFailureReason =
  /** The identity client has no certificate yet: there is nothing to present. */
  | 'no-certificate'
  /** Not TLS, and the policy does not allow unauthenticated peers. */
  | 'plaintext-refused'
  /** The client sent no certificate. */
  | 'client-certificate-missing'
  /** The client's certificate did not verify against the anchors, or names no DNS identity. */
  | 'client-certificate-rejected'
  /** The TLS handshake failed (version, cipher, ALPN, malformed, timeout); `detail` has the code. */
  | 'tls-error'
  /** The client closed or sent nothing before the handshake. */
  | 'closed'
  /** The peer (identity, or address before its handshake) holds its share of connections. */
  | 'too-many-connections';

/** What the inbound proxy reports for metrics. */
export type InboundEvent =
  | {
      readonly type: 'handshake-succeeded';
      /** Verified identity; undefined for plaintext. */
      readonly peer: string | undefined;
      readonly tls: boolean;
      /** The key-exchange group and cipher suite negotiated (core's negotiatedAlgorithms); TLS only. */
      readonly algorithms?: TlsAlgorithms;
    }
  | {
      readonly type: 'handshake-failed';
      readonly reason: HandshakeFailureReason;
      /** A TLS error or certificate verification code, when there is one. */
      readonly detail: string | undefined;
    }
  | {
      readonly type: 'connection-opened';
      readonly peer: string | undefined;
      readonly tls: boolean;
      readonly protocol: DetectedProtocol;
      readonly authorized: boolean;
    }
  | {
      readonly type: 'connection-closed';
      readonly peer: string | undefined;
      readonly tls: boolean;
      readonly protocol: DetectedProtocol;
      readonly authorized: boolean;
      /** Bytes received from the peer, on the wire (TLS records included). */
      readonly bytesIn: number;
      /** Bytes sent to the peer, on the wire. */
      readonly bytesOut: number;
      readonly durationMs: number;
    }
  | {
      readonly type: 'http-request';
      readonly peer: string | undefined;
      readonly protocol: 'http1' | 'http2';
      readonly method: string;
      /** Status sent to the peer; 0 when the exchange broke off before a status. */
      readonly status: number;
      readonly authorized: boolean;
      readonly durationMs: number;
    };

/** Settings of an {@link InboundProxy}. */
export interface InboundOptions {
  /** Where to listen (the proxy's default is 127.0.0.1:4143 in config). Port 0 picks one. */
  readonly listen: Address;
  /** Where the application listens (plain TCP; HTTP/1.1 or h2c for HTTP). */
  readonly app: Address;
  /** The current workload certificate (renewed by the identity client); undefined before the first. */
  readonly certificate: () => WorkloadCertificate | undefined;
  /** The current trust anchors, PEM (hot-reloaded by their owner). */
  readonly anchorsPem: () => string;
  readonly policy: InboundPolicy;
  readonly logger: Logger;
  /** Receives an event per handshake, connection and HTTP request (for metrics). */
  readonly observe?: (e: InboundEvent) => void;
  /**
   * How long to wait for a client's first bytes before treating the connection as opaque and
   * connecting it to the app anyway (server-speaks-first protocols). Default 1000 ms.
   */
  readonly detectTimeoutMs?: number;
  /** Bound on the TLS handshake, and on the wait for a first byte. Default 10 s. */
  readonly handshakeTimeoutMs?: number;
  /**
   * TLS settings (core's meshTlsSettings); default {@link PROXY_TLS}. With FIPS_TLS, peers
   * whose certificates are outside the FIPS policy are also refused.
   */
  readonly tls?: MeshTlsSettings;
  /**
   * The app's ports and what each speaks (`--app-protocol`); default: the `app` port, `detect`.
   * Linkerd's transport header may route only to these ports.
   */
  readonly appPorts?: AppPorts;
  /**
   * How long the app may take to start its answer once the request was sent, before the client
   * gets a 504 (gRPC calls are exempt: they carry their own deadline). 0 turns it off. Default 60 s.
   */
  readonly appTimeoutMs?: number;
  /** Bounds against one misbehaving peer; each defaults to {@link DEFAULT_INBOUND_LIMITS}. */
  readonly limits?: Partial<InboundLimits>;
  /**
   * Transparent mode: the policy of an app port that Linkerd's transport header names, or
   * undefined when that port is not served. Without it, the header may name the `appPorts` only,
   * under `policy`.
   */
  readonly policyForPort?: (port: number) => InboundPolicy | undefined;
}

/** Where {@link InboundProxy.accept} sends a connection, and under which policy. */
export interface InboundRoute {
  readonly appPort: number;
  readonly policy: InboundPolicy;
}

/**
 * What one peer may hold of the inbound. A peer is its verified identity (or its address, for
 * plaintext and before the handshake).
 */
export interface InboundLimits {
  /** SETTINGS_MAX_CONCURRENT_STREAMS advertised on every HTTP/2 connection. */
  readonly maxStreams: number;
  /**
   * Exchanges with the app at once, all peers together: HTTP/2 requests in flight, HTTP/1 and
   * opaque connections (each holds an app connection). Also the app connection pool's size.
   */
  readonly maxAppConnections: number;
  /** The same, for one peer. Beyond it: REFUSED_STREAM, a 503, or the connection closed. */
  readonly maxAppConnectionsPerPeer: number;
  /** Connections one peer identity may hold open, and one address while handshaking. */
  readonly maxConnectionsPerPeer: number;
}

/**
 * The defaults: 100 streams per connection (RFC 9113 §6.5.2 recommends no less than 100);
 * 512 app exchanges in all and 128 per peer; 128 connections per peer.
 *
 * @example
 * ```ts
 * new InboundProxy({ ...options, limits: { ...DEFAULT_INBOUND_LIMITS, maxStreams: 250 } });
 * ```
 */
export const DEFAULT_INBOUND_LIMITS: InboundLimits = Object.freeze({
  maxStreams: 100,
  maxAppConnections: 512,
  maxAppConnectionsPerPeer: 128,
  maxConnectionsPerPeer: 128,
});

const DEFAULT_DETECT_TIMEOUT_MS = 1000;
const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
const DEFAULT_GRACE_MS = 10_000;
/** Longest request line looked at; longer ones are left to the HTTP/1 parser's own limit. */
const MAX_DETECT_BYTES = 16 * 1024;
const TLS_HANDSHAKE_RECORD = 0x16;
/** A request head still arriving after this long gets its connection closed (slow clients). */
const HEAD_TIMEOUT_MS = 60_000;
const DEFAULT_APP_TIMEOUT_MS = 60_000;
/** How long a probe of what the app speaks may take. */
const APP_DETECT_TIMEOUT_MS = 5_000;

/** One accepted connection, from the first byte to close. */
interface Conn {
  readonly raw: Socket;
  readonly openedAt: number;
  /** The stream the application bytes travel on: the TLS socket, or `raw` for plaintext. */
  stream: Socket | undefined;
  tls: boolean;
  peer: string | undefined;
  decision: PolicyDecision | undefined;
  protocol: DetectedProtocol | undefined;
  /** The HTTP/1 relay of an HTTP/1 connection. */
  relay: Http1Relay | undefined;
  session: ServerHttp2Session | undefined;
  /** The app-side socket of an opaque connection. */
  app: Socket | undefined;
  /** The app port this connection goes to (the `app` port unless a transport header said). */
  appPort: number;
  /** What the app on that port speaks, once known. */
  appProtocol: ResolvedAppProtocol | undefined;
  /** The address share this connection holds while handshaking (released once it is done). */
  pendingKey: string | undefined;
  /** The peer whose connection share this connection holds (after the handshake). */
  connectionKey: string | undefined;
  /** The peer whose app-exchange share this connection holds (HTTP/1 and opaque). */
  exchangeKey: string | undefined;
  /** The policy of this connection (the listener's, or the route's of {@link InboundProxy.accept}). */
  policy: InboundPolicy;
}

function formatHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

/** gRPC's percent-encoding of grpc-message (only what is outside printable ASCII, and '%'). */
function grpcMessage(s: string): string {
  return s.replace(/[^\x20-\x24\x26-\x7e]/g, (c) => encodeURIComponent(c));
}

/**
 * The inbound listener.
 *
 * @example
 * ```ts
 * const inbound = new InboundProxy({
 *   listen: { host: '0.0.0.0', port: 4143 },
 *   app: { host: '127.0.0.1', port: 8080 },
 *   certificate: () => identity.current(),
 *   anchorsPem: () => anchors.current().pem,
 *   policy: new InboundPolicy({ namespaces: ['emojivoto'] }),
 *   logger,
 * });
 * await inbound.listen();
 * // ...
 * await inbound.close(5000);
 * ```
 */
export class InboundProxy {
  readonly #o: InboundOptions;
  readonly #log: Logger;
  readonly #detectTimeoutMs: number;
  readonly #contexts: ContextCache;
  readonly #tlsSettings: MeshTlsSettings;
  readonly #server: NetServer;
  readonly #tls: TlsServer;
  readonly #http2: Http2Server;
  readonly #conns = new Set<Conn>();
  #sweeper: NodeJS.Timeout | undefined;
  /** Connections between the raw 'connection' and 'secureConnection', by peer address. */
  readonly #handshaking = new Map<string, Conn>();
  readonly #http2Conns = new WeakMap<ServerHttp2Session, Conn>();
  /** The connection being handed to the HTTP/2 server (its 'session' event is synchronous). */
  #handingToHttp2: Conn | undefined;
  readonly #appSessions = new Map<number, ClientHttp2Session>();
  readonly #appPorts: AppPorts;
  readonly #appTimeoutMs: number;
  readonly #detector = new AppProtocolDetector({ timeoutMs: APP_DETECT_TIMEOUT_MS });
  readonly #agent: HttpAgent;
  readonly #limits: InboundLimits;
  /** Exchanges with the app, per peer and in total. */
  readonly #exchanges: PeerBudget;
  /** Connections per address while handshaking, per identity after. */
  readonly #pending: PeerBudget;
  readonly #connections: PeerBudget;
  /** Node's HTTP/1 server (fed sockets) for HTTP/1.1 clients of an h2 app. */
  readonly #http1: Http1Server;
  readonly #http1Conns = new WeakMap<Socket, Conn>();
  /** (serial, anchors) of the TLS server's default context, for clients that send no SNI. */
  #defaultContextKey = '';
  #closing = false;
  #closed: Promise<void> | undefined;
  #onEmpty: (() => void) | undefined;

  constructor(options: InboundOptions) {
    this.#o = options;
    this.#tlsSettings = options.tls ?? PROXY_TLS;
    this.#contexts = new ContextCache(this.#tlsSettings);
    this.#log = options.logger.child({ [LogKey.component]: 'proxy-inbound' });
    this.#detectTimeoutMs = options.detectTimeoutMs ?? DEFAULT_DETECT_TIMEOUT_MS;
    this.#appPorts = options.appPorts ?? new Map([[options.app.port, 'detect' as const]]);
    this.#appTimeoutMs = options.appTimeoutMs ?? DEFAULT_APP_TIMEOUT_MS;
    const handshakeTimeout = options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
    this.#limits = { ...DEFAULT_INBOUND_LIMITS, ...options.limits };
    this.#agent = appAgent(this.#limits.maxAppConnections);
    this.#exchanges = new PeerBudget({
      total: this.#limits.maxAppConnections,
      perPeer: this.#limits.maxAppConnectionsPerPeer,
    });
    const perPeer = { total: Number.MAX_SAFE_INTEGER, perPeer: this.#limits.maxConnectionsPerPeer };
    this.#pending = new PeerBudget(perPeer);
    this.#connections = new PeerBudget(perPeer);

    // allowHalfOpen everywhere: an opaque client that finishes sending must still get the
    // app's answer.
    this.#server = createNetServer({ allowHalfOpen: true }, (raw) => this.#onConnection(raw));
    this.#server.on('error', (err) =>
      this.#log.error({ err: err.message }, 'inbound listener error'),
    );

    this.#tls = createTlsServer({
      ...this.#tlsSettings,
      ...NO_RESUMPTION,
      allowHalfOpen: true,
      handshakeTimeout,
      requestCert: true,
      // Verification results are checked on 'secureConnection' instead, so that a refusal can
      // be reported with its reason (node would otherwise drop the socket silently).
      rejectUnauthorized: false,
      SNICallback: (_servername, cb) => {
        const cert = this.#o.certificate();
        if (cert === undefined) {
          cb(new Error('no workload certificate yet'), undefined);
          return;
        }
        cb(null, this.#contexts.get(cert, this.#o.anchorsPem()));
      },
      // HTTP/2 over TLS needs `h2` selected by ALPN (curl and gRPC clients insist); the
      // protocol is still detected from the bytes. A client offering only protocols this
      // proxy does not speak gets a no_application_protocol alert rather than a wrong answer.
      // Linkerd's opaque transport and meshid's proxy-to-proxy HTTP/2 are chosen first: a
      // peer proxy that offers them means it.
      ALPNCallback: ({ protocols }) =>
        [TRANSPORT_HEADER_ALPN, MESH_H2_ALPN, 'h2', 'http/1.1'].find((p) => protocols.includes(p)),
    });
    this.#tls.on('secureConnection', (socket: TLSSocket) => this.#onSecure(socket));
    this.#tls.on('tlsClientError', (err: Error & { code?: string }, socket: TLSSocket) => {
      this.#handshaking.delete(peerKey(socket));
      this.#emit({
        type: 'handshake-failed',
        reason: 'tls-error',
        detail: err.code ?? err.message,
      });
      this.#log.debug({ err: err.message }, 'inbound TLS handshake failed');
      socket.destroy();
    });

    this.#http1 = createHttp1Server({ noDelay: true, maxHeaderSize: 64 * 1024 }, (req, res) =>
      this.#onHttp1Request(req, res),
    );
    this.#http1.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) =>
      this.#onHttp1Upgrade(req, socket, head),
    );
    // CONNECT from an HTTP/1.1 client of an h2 app (node's parser hands it over apart).
    this.#http1.on('connect', (_req: IncomingMessage, socket: Socket) => {
      socket.on('error', () => undefined);
      socket.end(
        proxyResponse(
          CONNECT_REFUSAL.status,
          PROXY_ERROR_HEADER,
          CONNECT_REFUSAL.reason,
          CONNECT_REFUSAL.body,
        ),
      );
    });
    this.#http1.on('clientError', (err: Error, socket: Socket) => {
      this.#log.debug({ err: err.message }, 'inbound HTTP/1 request refused');
      if (socket.writable) {
        socket.end('HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
      } else socket.destroy();
    });
    this.#http2 = createHttp2Server({
      // Node's default is 2^32-1: one peer could open 10,000 streams on one connection.
      settings: { maxConcurrentStreams: this.#limits.maxStreams },
    });
    this.#http2.on('session', (session: ServerHttp2Session) => {
      const conn = this.#handingToHttp2;
      if (conn === undefined) {
        session.destroy();
        return;
      }
      conn.session = session;
      this.#http2Conns.set(session, conn);
      session.on('error', (err) =>
        this.#log.debug({ err: err.message }, 'inbound h2 session error'),
      );
    });
    this.#http2.on('stream', (stream: ServerHttp2Stream, headers: Http2IncomingHeaders) =>
      this.#onHttp2Stream(stream, headers),
    );
    this.#http2.on('sessionError', () => undefined);
    // Should not happen: a socket is handed over only after its bytes said HTTP/2.
    this.#http2.on('unknownProtocol', (socket: Socket) => socket.destroy());
  }

  /** Starts listening; resolves with the bound address (useful with port 0). */
  async listen(): Promise<Address> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(this.#o.listen.port, this.#o.listen.host, () => {
        this.#server.off('error', reject);
        resolve();
      });
    });
    const a = this.#server.address() as AddressInfo;
    const bound = { host: a.address, port: a.port };
    this.#startSweeper();
    this.#log.info(
      { [LogKey.address]: `${formatHost(bound.host)}:${bound.port}` },
      'inbound listening',
    );
    return bound;
  }

  /**
   * Serves a connection accepted elsewhere (transparent mode's listener, which has read its
   * original destination) as if it had come to this listener, to `route.appPort` under
   * `route.policy`. Bytes already read from it must have been put back (`unshift`).
   */
  accept(raw: Socket, route: InboundRoute): void {
    this.#startSweeper();
    this.#onConnection(raw, route);
  }

  #startSweeper(): void {
    if (this.#sweeper !== undefined) return;
    // One timer for all connections rather than one per request: closes those whose request
    // head has been arriving for too long.
    const every =
      this.#appTimeoutMs > 0
        ? Math.max(50, Math.min(HEAD_TIMEOUT_MS / 4, this.#appTimeoutMs / 4))
        : HEAD_TIMEOUT_MS / 4;
    this.#sweeper = setInterval(() => this.#sweep(), every).unref();
  }

  /**
   * Stops accepting, lets in-flight work finish for up to `graceMs` (HTTP/1 connections close
   * after their current request, HTTP/2 sessions get GOAWAY, opaque connections run on), then
   * destroys whatever is left. Idempotent.
   */
  close(graceMs = DEFAULT_GRACE_MS): Promise<void> {
    this.#closed ??= this.#shutdown(graceMs);
    return this.#closed;
  }

  async #shutdown(graceMs: number): Promise<void> {
    this.#closing = true;
    const stopped = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    if (this.#conns.size > 0) {
      const empty = new Promise<void>((resolve) => (this.#onEmpty = resolve));
      for (const conn of this.#conns) this.#drain(conn);
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        empty,
        new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs))),
      ]);
      clearTimeout(timer);
      if (this.#conns.size > 0) {
        this.#log.info({ open: this.#conns.size }, 'inbound grace expired; closing connections');
        for (const conn of this.#conns) destroyConn(conn);
        // Destroyed sockets close on a later tick; their events are reported before resolving.
        await empty;
      }
    }
    await stopped;
    clearInterval(this.#sweeper);
    for (const s of this.#appSessions.values()) s.destroy();
    this.#agent.destroy();
  }

  #sweep(): void {
    const now = performance.now();
    for (const conn of this.#conns) {
      if (conn.relay === undefined) continue;
      if (conn.relay.stalledFor(now) > HEAD_TIMEOUT_MS) {
        this.#log.debug({ [LogKey.identity]: conn.peer }, 'inbound request head timed out');
        destroyConn(conn);
      } else if (this.#appTimeoutMs > 0 && conn.relay.expire(now, this.#appTimeoutMs)) {
        this.#log.info({ [LogKey.identity]: conn.peer }, 'inbound app answer timed out (504)');
      }
    }
  }

  /** Asks one connection to finish what it is doing and close. */
  #drain(conn: Conn): void {
    switch (conn.protocol) {
      case 'http1':
        if (conn.relay === undefined) conn.stream?.end();
        else conn.relay.drain();
        return;
      case 'http2':
        conn.session?.close();
        return;
      case 'opaque':
        return; // no boundary to stop at: it runs until the grace period ends
      case undefined:
        destroyConn(conn); // still in handshake or detection: nothing in flight yet
        return;
    }
  }

  #emit(e: InboundEvent): void {
    if (this.#o.observe === undefined) return;
    try {
      this.#o.observe(e);
    } catch (err) {
      this.#log.warn({ err: String(err) }, 'inbound observer threw');
    }
  }

  #onConnection(raw: Socket, route?: InboundRoute): void {
    if (this.#closing) {
      raw.destroy();
      return;
    }
    raw.setNoDelay(true);
    raw.on('error', (err) => this.#log.debug({ err: err.message }, 'inbound connection error'));
    const pendingKey = addressKey(raw);
    if (!this.#pending.acquire(pendingKey)) {
      this.#emit({ type: 'handshake-failed', reason: 'too-many-connections', detail: pendingKey });
      raw.destroy();
      return;
    }
    const conn: Conn = {
      raw,
      openedAt: performance.now(),
      stream: undefined,
      tls: false,
      peer: undefined,
      decision: undefined,
      protocol: undefined,
      relay: undefined,
      session: undefined,
      app: undefined,
      appPort: route?.appPort ?? this.#o.app.port,
      appProtocol: undefined,
      pendingKey,
      connectionKey: undefined,
      exchangeKey: undefined,
      policy: route?.policy ?? this.#o.policy,
    };
    this.#conns.add(conn);
    raw.once('close', () => this.#onClose(conn));
    this.#start(conn).catch((err: unknown) => {
      this.#log.warn({ err: String(err) }, 'inbound connection failed');
      destroyConn(conn);
    });
  }

  #onClose(conn: Conn): void {
    this.#conns.delete(conn);
    this.#handshakeDone(conn);
    if (conn.connectionKey !== undefined) this.#connections.release(conn.connectionKey);
    if (conn.exchangeKey !== undefined) this.#exchanges.release(conn.exchangeKey);
    conn.connectionKey = conn.exchangeKey = undefined;
    const key = peerKey(conn.raw);
    if (this.#handshaking.get(key) === conn) this.#handshaking.delete(key);
    conn.app?.destroy();
    if (conn.protocol !== undefined && conn.decision !== undefined) {
      this.#emit({
        type: 'connection-closed',
        peer: conn.peer,
        tls: conn.tls,
        protocol: conn.protocol,
        authorized: conn.decision.allowed,
        bytesIn: conn.raw.bytesRead,
        bytesOut: conn.raw.bytesWritten,
        durationMs: performance.now() - conn.openedAt,
      });
    }
    if (this.#closing && this.#conns.size === 0) this.#onEmpty?.();
  }

  /** Step 1: TLS or plaintext, by the first byte. */
  async #start(conn: Conn): Promise<void> {
    const { raw } = conn;
    const allowPlain = conn.policy.allowUnauthenticated;
    const first = await readFirstBytes(raw, {
      // A TLS client always speaks first; only a plaintext one may legitimately wait.
      timeoutMs: allowPlain
        ? this.#detectTimeoutMs
        : (this.#o.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS),
      maxBytes: 1,
    });
    if (raw.destroyed || this.#closing) {
      raw.destroy();
      return;
    }
    if (first.bytes[0] === TLS_HANDSHAKE_RECORD) {
      const cert = this.#o.certificate();
      if (cert === undefined) {
        this.#refuse(conn, 'no-certificate', undefined);
        return;
      }
      this.#syncDefaultContext(cert);
      raw.unshift(first.bytes);
      this.#handshaking.set(peerKey(raw), conn);
      // The TLS server wraps the socket and reads the bytes put back first.
      this.#tls.emit('connection', raw);
      return;
    }
    if (!allowPlain) {
      this.#refuse(conn, first.bytes.length === 0 ? 'closed' : 'plaintext-refused', undefined);
      return;
    }
    if (first.bytes.length === 0 && first.ended) {
      this.#refuse(conn, 'closed', undefined);
      return;
    }
    conn.stream = raw;
    this.#handshakeDone(conn);
    this.#emit({ type: 'handshake-succeeded', peer: undefined, tls: false });
    await this.#serve(conn, raw, first);
  }

  #refuse(conn: Conn, reason: HandshakeFailureReason, detail: string | undefined): void {
    this.#emit({ type: 'handshake-failed', reason, detail });
    this.#log.debug({ [LogKey.reason]: reason, detail }, 'inbound connection refused');
    destroyConn(conn);
  }

  /**
   * Keeps the TLS server's default context (used when a client sends no SNI, so SNICallback is
   * not called) in step with the certificate and anchors; rebuilt only when either changed.
   */
  #syncDefaultContext(cert: WorkloadCertificate): void {
    const anchors = this.#o.anchorsPem();
    const key = `${cert.serialHex}\u0000${anchors}`;
    if (key === this.#defaultContextKey) return;
    this.#tls.setSecureContext({
      ...this.#tlsSettings,
      ...NO_RESUMPTION,
      key: cert.keyPem,
      cert: cert.certChainPem,
      ca: anchors,
    });
    this.#defaultContextKey = key;
  }

  /** Gives back the address share a connection held while handshaking. Idempotent. */
  #handshakeDone(conn: Conn): void {
    if (conn.pendingKey === undefined) return;
    this.#pending.release(conn.pendingKey);
    conn.pendingKey = undefined;
  }

  /**
   * Takes one app exchange of the peer's share for a connection that holds an app connection
   * for its lifetime (HTTP/1, opaque); false when the share or the total is used up.
   */
  #takeAppShare(conn: Conn): boolean {
    if (conn.exchangeKey !== undefined) return true;
    const key = conn.peer ?? addressKey(conn.raw);
    if (!this.#exchanges.acquire(key)) {
      this.#log.info(
        { [LogKey.identity]: key, limit: this.#limits.maxAppConnectionsPerPeer },
        'inbound connection refused: the peer holds its share of app connections',
      );
      return false;
    }
    conn.exchangeKey = key;
    return true;
  }

  /** Step 2: the handshake finished; the client certificate must have verified. */
  #onSecure(socket: TLSSocket): void {
    const key = peerKey(socket);
    const conn = this.#handshaking.get(key);
    this.#handshaking.delete(key);
    if (conn === undefined || this.#closing) {
      socket.destroy();
      return;
    }
    socket.on('error', (err) => this.#log.debug({ err: err.message }, 'inbound TLS error'));
    conn.stream = socket;
    conn.tls = true;
    if (socket.isSessionReused()) {
      // Never offered (NO_RESUMPTION); a resumed session would carry an old verification.
      this.#refuse(conn, 'client-certificate-rejected', 'TLS session resumption is not accepted');
      return;
    }
    if (!socket.authorized) {
      const presented = Object.keys(socket.getPeerCertificate()).length > 0;
      this.#refuse(
        conn,
        presented ? 'client-certificate-rejected' : 'client-certificate-missing',
        presented ? String(socket.authorizationError) : undefined,
      );
      return;
    }
    const peer = verifiedPeerIdentity(socket);
    if (peer === undefined) {
      this.#refuse(conn, 'client-certificate-rejected', 'no DNS identity in the first SAN');
      return;
    }
    if (this.#tlsSettings === FIPS_TLS) {
      const refused = fipsPeerProblem(socket.getPeerCertificate(true));
      if (refused !== undefined) {
        this.#log.warn({ [LogKey.code]: 'ERR_FIPS_PEER_REFUSED', peer }, refused);
        this.#refuse(conn, 'client-certificate-rejected', refused);
        return;
      }
    }
    this.#handshakeDone(conn);
    if (!this.#connections.acquire(peer)) {
      this.#log.info(
        { [LogKey.identity]: peer, limit: this.#limits.maxConnectionsPerPeer },
        'inbound connection refused: the peer holds its share of connections',
      );
      this.#refuse(conn, 'too-many-connections', peer);
      return;
    }
    conn.connectionKey = peer;
    conn.peer = peer;
    this.#emit({
      type: 'handshake-succeeded',
      peer,
      tls: true,
      algorithms: negotiatedAlgorithms(socket),
    });
    this.#serve(conn, socket, undefined).catch((err: unknown) => {
      this.#log.warn({ err: String(err) }, 'inbound connection failed');
      destroyConn(conn);
    });
  }

  /**
   * Steps 3 and 4: authorize, detect, dispatch. `already` is what the plaintext path read while
   * looking for a TLS record: detection goes on from there rather than waiting a second time.
   */
  async #serve(conn: Conn, stream: Socket, already: FirstBytes | undefined): Promise<void> {
    conn.decision = conn.policy.authorize(conn.peer);
    if (!conn.decision.allowed) {
      this.#log.info(
        { [LogKey.identity]: conn.peer, [LogKey.reason]: conn.decision.reason },
        'inbound connection denied by policy',
      );
    }
    let bytes = already?.bytes ?? Buffer.alloc(0);
    let ended = already?.ended ?? false;
    let timedOut = already?.timedOut ?? false;
    if (conn.tls && (stream as TLSSocket).alpnProtocol === TRANSPORT_HEADER_ALPN) {
      // Linkerd's opaque transport: the header names the target port before any app byte.
      let rest: Buffer;
      try {
        const read = await readTransportHeader(
          stream,
          this.#o.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS,
        );
        rest = read.rest;
        if (read.header.name !== '') {
          // Linkerd's gateway forwarding: the header names another target to go on to. This
          // inbound serves its own app only; delivering to a local port instead would be wrong.
          this.#log.info(
            { [LogKey.identity]: conn.peer, name: read.header.name, port: read.header.port },
            'inbound transport header names a target to forward to (gateway forwarding), which this proxy does not do; closed',
          );
          destroyConn(conn);
          return;
        }
        const portPolicy = this.#o.policyForPort?.(read.header.port);
        if (portPolicy !== undefined) {
          // Transparent mode: the named port's own policy decides.
          conn.policy = portPolicy;
          conn.decision = portPolicy.authorize(conn.peer);
        } else if (!this.#appPorts.has(read.header.port)) {
          this.#log.info(
            { [LogKey.identity]: conn.peer, port: read.header.port },
            'inbound transport header names a port that is not one of the app ports; closed',
          );
          destroyConn(conn);
          return;
        }
        conn.appPort = read.header.port;
      } catch (err) {
        this.#log.info(
          { [LogKey.identity]: conn.peer, err: (err as Error).message },
          'inbound transport header refused; closed',
        );
        destroyConn(conn);
        return;
      }
      bytes = rest;
    }
    const configured: AppProtocol = this.#appPorts.get(conn.appPort) ?? 'detect';
    if (configured === 'opaque') {
      // The operator said this port is not HTTP: no detection, no header added.
      conn.protocol = 'opaque';
      conn.appProtocol = 'opaque';
      this.#emit({
        type: 'connection-opened',
        peer: conn.peer,
        tls: conn.tls,
        protocol: 'opaque',
        authorized: conn.decision.allowed,
      });
      if (!conn.decision.allowed) {
        destroyConn(conn);
        return;
      }
      this.#forwardOpaque(conn, stream, bytes, ended, false);
      return;
    }
    if (!ended && !timedOut && !detectProtocol(bytes).decided) {
      if (bytes.length > 0) stream.unshift(bytes);
      const first = await readFirstBytes(stream, {
        timeoutMs: this.#detectTimeoutMs,
        maxBytes: MAX_DETECT_BYTES,
      });
      ({ bytes, ended, timedOut } = first);
    }
    if (stream.destroyed || this.#closing) {
      destroyConn(conn);
      return;
    }
    // A client that ended before its request line was complete cannot send headers any more,
    // so passing its bytes on unparsed is safe.
    const protocol: DetectedProtocol = ended ? 'opaque' : detectProtocol(bytes).protocol;
    conn.protocol = protocol;
    this.#emit({
      type: 'connection-opened',
      peer: conn.peer,
      tls: conn.tls,
      protocol,
      authorized: conn.decision.allowed,
    });
    if (protocol === 'opaque') {
      if (!conn.decision.allowed) {
        destroyConn(conn);
        return;
      }
      this.#forwardOpaque(conn, stream, bytes, ended, timedOut && bytes.length === 0);
      return;
    }
    await this.#learnThenHttp(conn, stream, bytes, protocol);
  }

  async #learnThenHttp(
    conn: Conn,
    stream: Socket,
    bytes: Buffer,
    protocol: 'http1' | 'http2',
  ): Promise<void> {
    if (conn.decision?.allowed === true) {
      await this.#learnAppProtocol(conn, this.#appPorts.get(conn.appPort) ?? 'detect');
    }
    if (stream.destroyed || this.#closing) {
      destroyConn(conn);
      return;
    }
    this.#toHttp(conn, stream, bytes, protocol);
  }

  /** What the app behind this connection's port speaks (learned once per port when `detect`). */
  async #learnAppProtocol(conn: Conn, configured: AppProtocol): Promise<void> {
    try {
      conn.appProtocol = await this.#detector.resolve(this.#appAddress(conn), configured);
    } catch (err) {
      // The app is not reachable now: the HTTP/1.1 path answers 502 with the cause, and the
      // next connection probes again.
      this.#log.debug({ err: (err as Error).message }, 'inbound could not learn the app protocol');
      conn.appProtocol = 'http1';
    }
  }

  #appAddress(conn: Conn): Address {
    return conn.appPort === this.#o.app.port
      ? this.#o.app
      : { host: this.#o.app.host, port: conn.appPort };
  }

  #translateContext(conn: Conn): TranslateContext {
    return {
      app: this.#appAddress(conn),
      peer: conn.peer,
      clientIdHeader: CLIENT_ID_HEADER,
      errorHeader: PROXY_ERROR_HEADER,
      appTimeoutMs: this.#appTimeoutMs,
      logger: this.#log,
    };
  }

  /** Hands a connection to node's HTTP/1 or HTTP/2 server, the detected bytes put back first. */
  #toHttp(conn: Conn, stream: Socket, bytes: Buffer, protocol: 'http1' | 'http2'): void {
    conn.protocol = protocol;
    if (protocol === 'http1') {
      if (conn.decision?.allowed === true && !this.#takeAppShare(conn)) {
        stream.on('error', () => undefined);
        stream.end(
          proxyResponse(
            503,
            PROXY_ERROR_HEADER,
            'too many connections',
            `service unavailable: this peer already holds ${this.#limits.maxAppConnectionsPerPeer} connections to the application (or the proxy its ${this.#limits.maxAppConnections}); retry later or reuse connections\n`,
          ),
        );
        return;
      }
      if (conn.appProtocol === 'h2' && conn.decision?.allowed === true) {
        this.#startHttp1ToH2(conn, stream, bytes);
        return;
      }
      this.#startHttp1(conn, stream, bytes);
      return;
    }
    if (bytes.length > 0) stream.unshift(bytes);
    // node's HTTP/2 server falls back to HTTP/1 for a TLS socket whose ALPN was not h2; the
    // bytes have already said HTTP/2 (prior knowledge), so tell it so.
    if (conn.tls) (stream as TLSSocket).alpnProtocol = 'h2';
    this.#handingToHttp2 = conn;
    try {
      this.#http2.emit('connection', stream);
    } finally {
      this.#handingToHttp2 = undefined;
    }
  }

  /**
   * Pipes an opaque connection to the app, both ways, with half-close. `lateDetect` is set when
   * the client said nothing before the detection timeout: the app is connected so that a server
   * that speaks first can, but if the app has said nothing either when the client's first bytes
   * come, those bytes are still checked, and an HTTP request goes to the HTTP path after all.
   * Without that, waiting out the timeout would be a way to get a header past the proxy.
   */
  #forwardOpaque(
    conn: Conn,
    client: Socket,
    first: Buffer,
    ended: boolean,
    lateDetect: boolean,
  ): void {
    if (!this.#takeAppShare(conn)) {
      destroyConn(conn);
      return;
    }
    const target = this.#appAddress(conn);
    const app = netConnect({ host: target.host, port: target.port, allowHalfOpen: true });
    conn.app = app;
    app.setNoDelay(true);
    app.on('error', (err) => {
      this.#log.debug({ err: err.message }, 'inbound app connection failed');
      client.destroy();
    });
    app.on('close', (hadError) => {
      if (hadError) client.destroy();
    });
    client.on('close', () => {
      if (!app.writableFinished || !app.readableEnded) app.destroy();
    });
    app.pipe(client);

    const startPiping = (held: Buffer): void => {
      if (held.length > 0) app.write(held);
      client.pipe(app);
    };
    if (!lateDetect) {
      startPiping(first);
      if (ended) app.end();
      return;
    }
    const chunks: Buffer[] = [];
    let length = 0;
    let detecting = true;
    const stop = (): Buffer => {
      detecting = false;
      client.off('data', onData);
      client.off('end', onEnd);
      app.off('data', onAppData);
      client.pause();
      return Buffer.concat(chunks, length);
    };
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      length += chunk.length;
      const d = detectProtocol(Buffer.concat(chunks, length));
      if (d.protocol === 'opaque') {
        startPiping(stop());
      } else if (d.decided || length >= MAX_DETECT_BYTES) {
        const held = stop();
        // The app never spoke (or this would not be running): drop it and serve HTTP.
        app.unpipe(client);
        app.destroy();
        conn.app = undefined;
        this.#log.debug('inbound late detection found HTTP');
        void this.#learnThenHttp(conn, client, held, d.protocol);
      }
    };
    const onEnd = (): void => {
      startPiping(stop());
    };
    // Once the app speaks, this is a server-speaks-first protocol: carry the client's bytes.
    const onAppData = (): void => {
      if (detecting) startPiping(stop());
    };
    client.on('data', onData);
    client.once('end', onEnd);
    app.on('data', onAppData);
    // Detection paused the socket; a 'data' listener alone does not undo an explicit pause.
    client.resume();
  }

  // ---- HTTP/1 ----

  #startHttp1(conn: Conn, stream: Socket, bytes: Buffer): void {
    const decision = conn.decision;
    const relay = new Http1Relay({
      client: stream,
      app: this.#appAddress(conn),
      appTimeoutMs: this.#appTimeoutMs,
      peer: conn.peer,
      denied: decision === undefined || decision.allowed ? undefined : decision.reason,
      clientIdHeader: CLIENT_ID_HEADER,
      errorHeader: PROXY_ERROR_HEADER,
      logger: this.#log,
      onExchange: (method, status, durationMs) =>
        this.#emit({
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
    if (this.#closing) relay.drain();
  }

  // ---- HTTP/1.1 client, h2 app ----

  #startHttp1ToH2(conn: Conn, stream: Socket, bytes: Buffer): void {
    if (bytes.length > 0) stream.unshift(bytes);
    this.#http1Conns.set(stream, conn);
    this.#http1.emit('connection', stream);
    stream.resume();
  }

  #http1Request(conn: Conn, req: IncomingMessage, res: Http1Response): void {
    const started = performance.now();
    let status = 0;
    res.once('close', () =>
      this.#emit({
        type: 'http-request',
        peer: conn.peer,
        protocol: 'http1',
        method: req.method ?? 'GET',
        status,
        authorized: true,
        durationMs: performance.now() - started,
      }),
    );
    if (this.#closing) res.setHeader('connection', 'close');
    http1ToH2(
      req,
      res,
      this.#translateContext(conn),
      { session: () => this.#appHttp2(conn.appPort) },
      (s) => (status = s),
    );
  }

  #onHttp1Request(req: IncomingMessage, res: Http1Response): void {
    const conn = this.#http1Conns.get(req.socket);
    if (conn === undefined) {
      res.destroy();
      return;
    }
    this.#http1Request(conn, req, res);
  }

  /**
   * An upgrade from an HTTP/1.1 client when the app speaks h2: h2c is ignored and the request
   * served over HTTP/2 to the app (RFC 9113 §3.1 deprecates h2c upgrades); anything else
   * (WebSocket) is tried over HTTP/1.1 on a connection of its own, which a server speaking both
   * accepts and an h2-only one answers with a 502 that says so.
   */
  #onHttp1Upgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    const conn = this.#http1Conns.get(socket);
    if (conn === undefined) {
      socket.destroy();
      return;
    }
    const upgrade = String(req.headers.upgrade ?? '').toLowerCase();
    if (/(^|,)\s*h2c/.test(upgrade)) {
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
      this.#http1Request(conn, req, res);
      return;
    }
    const app = this.#appAddress(conn);
    const started = performance.now();
    forwardUpgrade({
      client: socket,
      clientRest: head,
      requestHead: upgradeRequestHead(req, CLIENT_ID_HEADER, conn.peer),
      upstream: netConnect({ host: app.host, port: app.port }),
      where: `the application at ${formatHost(app.host)}:${app.port}`,
      errorHeader: PROXY_ERROR_HEADER,
      logger: this.#log,
      onStatus: (status) =>
        this.#emit({
          type: 'http-request',
          peer: conn.peer,
          protocol: 'http1',
          method: req.method ?? 'GET',
          status,
          authorized: true,
          durationMs: performance.now() - started,
        }),
    });
  }

  // ---- HTTP/2 ----

  #appHttp2(port: number): ClientHttp2Session {
    const current = this.#appSessions.get(port);
    if (current !== undefined && !current.closed && !current.destroyed) return current;
    const session = http2Connect(`http://${formatHost(this.#o.app.host)}:${port}`);
    session.on('error', (err) =>
      this.#log.debug({ err: err.message }, 'inbound app h2 session error'),
    );
    const forget = (): void => {
      if (this.#appSessions.get(port) === session) this.#appSessions.delete(port);
    };
    session.on('close', forget);
    session.on('goaway', forget);
    this.#appSessions.set(port, session);
    return session;
  }

  #onHttp2Stream(stream: ServerHttp2Stream, headers: Http2IncomingHeaders): void {
    const conn = this.#http2Conns.get(stream.session as ServerHttp2Session);
    stream.on('error', (err) => this.#log.debug({ err: err.message }, 'inbound h2 stream error'));
    if (conn === undefined || conn.decision === undefined) {
      stream.close(h2.NGHTTP2_REFUSED_STREAM);
      return;
    }
    const started = performance.now();
    const method = headers[':method'] ?? 'GET';
    let status = 0;
    stream.once('close', () => {
      this.#emit({
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
      status = this.#denyHttp2(stream, headers, conn.decision.reason);
      conn.session?.close();
      return;
    }
    const exchangeKey = conn.peer ?? addressKey(conn.raw);
    if (!this.#exchanges.acquire(exchangeKey)) {
      // Safe for the client to retry, here later or elsewhere (RFC 9113 §8.7).
      stream.close(h2.NGHTTP2_REFUSED_STREAM);
      return;
    }
    stream.once('close', () => this.#exchanges.release(exchangeKey));
    if (method === 'CONNECT') {
      status = this.#http2Error(
        stream,
        CONNECT_REFUSAL.status,
        CONNECT_REFUSAL.reason,
        CONNECT_REFUSAL.body,
      );
      return;
    }
    if (conn.appProtocol !== 'h2') {
      h2ToHttp1(stream, headers, this.#translateContext(conn), this.#agent, (s) => (status = s));
      return;
    }

    const out = forwardableHttp2Headers(headers, (n) => n !== ':scheme');
    out[':scheme'] = 'http';
    if (conn.peer !== undefined) out[CLIENT_ID_HEADER] = conn.peer;
    const grpc = String(headers['content-type'] ?? '').startsWith('application/grpc');
    relayH2Stream(stream, out, this.#appHttp2(conn.appPort), {
      // A gRPC call may stream for as long as it likes.
      timeoutMs: grpc ? 0 : this.#appTimeoutMs,
      failed: (cause) =>
        typeof cause === 'object' && 'rstCode' in cause
          ? this.#http2Error(
              stream,
              502,
              'app reset',
              `bad gateway: the application at ${formatHost(this.#appAddress(conn).host)}:${conn.appPort} reset the stream (HTTP/2 error code ${cause.rstCode})\n`,
            )
          : this.#appFailed(stream, conn, cause),
      onStatus: (s) => (status = s),
      logger: this.#log,
    });
  }

  /** A 502 or 504 naming why the app did not answer. Returns the status. */
  #appFailed(stream: ServerHttp2Stream, conn: Conn, cause: Error | 'timeout'): number {
    if (stream.headersSent || stream.closed) return 0;
    const f = appFailure(this.#appAddress(conn), cause, this.#appTimeoutMs);
    return this.#http2Error(stream, f.status, f.reason, failureBody(f));
  }

  /** Answers a denied stream: gRPC PERMISSION_DENIED for gRPC, else 403. Returns the status. */
  #denyHttp2(stream: ServerHttp2Stream, headers: Http2IncomingHeaders, reason: string): number {
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
    return this.#http2Error(stream, 403, reason, `forbidden: ${reason}\n`);
  }

  #http2Error(
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
}

/** The budget key of a peer known only by its address. */
function addressKey(socket: Socket): string {
  return `address:${socket.remoteAddress ?? ''}`;
}

/** A key that is the same for a raw socket and the TLS socket wrapping it. */
function peerKey(socket: Socket): string {
  return `${socket.remoteAddress ?? ''}|${socket.remotePort ?? ''}`;
}

function destroyConn(conn: Conn): void {
  conn.relay?.destroy();
  conn.app?.destroy();
  conn.stream?.destroy();
  conn.raw.destroy();
}
