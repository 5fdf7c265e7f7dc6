/**
 * The inbound accept stage: one record per accepted connection, the context every later stage
 * works with, and the shares one peer may hold (connections, app exchanges).
 */
import { performance } from 'node:perf_hooks';
import type { Socket } from 'node:net';
import type { ServerHttp2Session } from 'node:http2';
import type { Address, Logger } from '../core/index.js';
import { DEFAULTS, LogKey, PeerBudget } from '../core/index.js';
import type { DetectedProtocol } from './detect.js';
import type { Http1Relay } from './http1-relay.js';
import type { AppPorts, ResolvedAppProtocol } from './app-protocol.js';
import type { TranslateContext } from './translate.js';
import { CLIENT_ID_HEADER } from './h2-relay.js';
import type { InboundPolicy, PolicyDecision } from './policy.js';
import type { HandshakeFailureReason, InboundEvent } from './inbound-events.js';
import { PROXY_ERROR_HEADER } from './inbound-events.js';

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
 * The defaults, one home: core's DEFAULTS (the `inbound*` settings of `meshid proxy` default to
 * the same values): 100 streams per connection (RFC 9113 §6.5.2 recommends no less than 100);
 * 512 app exchanges in all and 128 per peer; 128 connections per peer.
 *
 * @example
 * ```ts
 * new InboundProxy({ ...options, limits: { ...DEFAULT_INBOUND_LIMITS, maxStreams: 250 } });
 * ```
 */
export const DEFAULT_INBOUND_LIMITS: InboundLimits = Object.freeze({
  maxStreams: DEFAULTS.proxyInboundMaxStreams,
  maxAppConnections: DEFAULTS.proxyInboundMaxAppConnections,
  maxAppConnectionsPerPeer: DEFAULTS.proxyInboundMaxAppConnectionsPerPeer,
  maxConnectionsPerPeer: DEFAULTS.proxyInboundMaxConnectionsPerPeer,
});

/** One accepted connection, from the first byte to close. */
export interface Conn {
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
  /** The policy of this connection (the listener's, or the route's of `InboundProxy.accept`). */
  policy: InboundPolicy;
}

/** A fresh record for a connection accepted now, holding the address share `pendingKey`. */
export function newConn(
  raw: Socket,
  appPort: number,
  policy: InboundPolicy,
  pendingKey: string,
): Conn {
  return {
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
    appPort,
    appProtocol: undefined,
    pendingKey,
    connectionKey: undefined,
    exchangeKey: undefined,
    policy,
  };
}

/** What every inbound stage shares: one per {@link InboundProxy}. */
export interface InboundContext {
  readonly log: Logger;
  /** The app's address (its host serves every app port). */
  readonly app: Address;
  readonly appPorts: AppPorts;
  /** How long the app may take to start an answer; 0 for no bound. */
  readonly appTimeoutMs: number;
  readonly limits: InboundLimits;
  readonly shares: PeerShares;
  readonly closing: () => boolean;
  readonly emit: (e: InboundEvent) => void;
}

/** Where a connection's app port is. */
export function appAddress(ctx: InboundContext, conn: Conn): Address {
  return conn.appPort === ctx.app.port ? ctx.app : { host: ctx.app.host, port: conn.appPort };
}

/** What HTTP translation between versions needs of a connection. */
export function translateContext(ctx: InboundContext, conn: Conn): TranslateContext {
  return {
    app: appAddress(ctx, conn),
    peer: conn.peer,
    clientIdHeader: CLIENT_ID_HEADER,
    errorHeader: PROXY_ERROR_HEADER,
    appTimeoutMs: ctx.appTimeoutMs,
    logger: ctx.log,
  };
}

/**
 * The shares of the inbound that peers hold: connections per address while handshaking,
 * connections per identity after, and exchanges with the app per peer and in total.
 */
export class PeerShares {
  readonly #limits: InboundLimits;
  readonly #log: Logger;
  readonly #pending: PeerBudget;
  readonly #connections: PeerBudget;
  readonly #exchanges: PeerBudget;

  constructor(limits: InboundLimits, log: Logger) {
    this.#limits = limits;
    this.#log = log;
    const perPeer = { total: Number.MAX_SAFE_INTEGER, perPeer: limits.maxConnectionsPerPeer };
    this.#pending = new PeerBudget(perPeer);
    this.#connections = new PeerBudget(perPeer);
    this.#exchanges = new PeerBudget({
      total: limits.maxAppConnections,
      perPeer: limits.maxAppConnectionsPerPeer,
    });
  }

  /** The address share of a connection that is handshaking; false when the address holds its own. */
  takePending(key: string): boolean {
    return this.#pending.acquire(key);
  }

  /** Gives back the address share a connection held while handshaking. Idempotent. */
  handshakeDone(conn: Conn): void {
    if (conn.pendingKey === undefined) return;
    this.#pending.release(conn.pendingKey);
    conn.pendingKey = undefined;
  }

  /** The connection share of a verified peer; false (and logged) when it holds its own. */
  takeConnection(conn: Conn, peer: string): boolean {
    if (!this.#connections.acquire(peer)) {
      this.#log.info(
        { [LogKey.identity]: peer, limit: this.#limits.maxConnectionsPerPeer },
        'inbound connection refused: the peer holds its share of connections',
      );
      return false;
    }
    conn.connectionKey = peer;
    return true;
  }

  /**
   * Takes one app exchange of the peer's share for a connection that holds an app connection
   * for its lifetime (HTTP/1, opaque); false when the share or the total is used up.
   */
  takeAppShare(conn: Conn): boolean {
    if (conn.exchangeKey !== undefined) return true;
    const key = peerOf(conn);
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

  /** One exchange (an HTTP/2 stream) for `key`; the caller releases it with {@link releaseExchange}. */
  takeExchange(key: string): boolean {
    return this.#exchanges.acquire(key);
  }

  releaseExchange(key: string): void {
    this.#exchanges.release(key);
  }

  /** Gives back every share a closed connection held. */
  releaseAll(conn: Conn): void {
    this.handshakeDone(conn);
    if (conn.connectionKey !== undefined) this.#connections.release(conn.connectionKey);
    if (conn.exchangeKey !== undefined) this.#exchanges.release(conn.exchangeKey);
    conn.connectionKey = conn.exchangeKey = undefined;
  }
}

/** The budget key of a connection's peer: its identity, or its address for plaintext. */
export function peerOf(conn: Conn): string {
  return conn.peer ?? addressKey(conn.raw);
}

/** The budget key of a peer known only by its address. */
export function addressKey(socket: Socket): string {
  return `address:${socket.remoteAddress ?? ''}`;
}

/** A key that is the same for a raw socket and the TLS socket wrapping it. */
export function peerKey(socket: Socket): string {
  return `${socket.remoteAddress ?? ''}|${socket.remotePort ?? ''}`;
}

export function destroyConn(conn: Conn): void {
  conn.relay?.destroy();
  conn.app?.destroy();
  conn.stream?.destroy();
  conn.raw.destroy();
}

/** Reports a refusal before any application byte was read, and closes the connection. */
export function refuseConn(
  ctx: InboundContext,
  conn: Conn,
  reason: HandshakeFailureReason,
  detail: string | undefined,
): void {
  ctx.emit({ type: 'handshake-failed', reason, detail });
  ctx.log.debug({ [LogKey.reason]: reason, detail }, 'inbound connection refused');
  destroyConn(conn);
}

/** Asks one connection to finish what it is doing and close (graceful shutdown). */
export function drainConn(conn: Conn): void {
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
