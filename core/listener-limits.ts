/**
 * What every listener does against one misbehaving peer, in one place: shares of a resource per
 * peer and in all ({@link PeerBudget}), connections capped per peer address and in all
 * ({@link limitConnections}), the time an HTTP/1 request head and a whole request may take
 * ({@link applyHttpTimeouts}), no TLS session resumption ({@link NO_RESUMPTION}), and the
 * defaults of each listener family ({@link LISTENER_LIMITS}). docs/security.md ("Limits") lists
 * each with its reason.
 */
import { constants as cryptoConstants } from 'node:crypto';
import type { Server as HttpServer } from 'node:http';
import type { Server as NetServer, Socket } from 'node:net';
import { resetSocket } from './sockets.js';

/** Limits of a {@link PeerBudget}. */
export interface PeerBudgetLimits {
  readonly total: number;
  readonly perPeer: number;
}

/**
 * Bounded shares of one resource (a listener's connections, the inbound's exchanges with the
 * app) per peer and in total. A peer is whatever the owner keys it by: a verified identity, or an
 * address. One peer can take at most `perPeer` units, all peers together at most `total`:
 * whatever one peer does, the others keep `total - perPeer` units. Counting only; what a refusal
 * means (REFUSED_STREAM, a 503, a reset connection) is the caller's.
 *
 * @example
 * ```ts
 * const budget = new PeerBudget({ total: 512, perPeer: 128 });
 * if (!budget.acquire(peer)) return stream.close(h2.NGHTTP2_REFUSED_STREAM);
 * stream.once('close', () => budget.release(peer));
 * ```
 */
export class PeerBudget {
  readonly #limits: PeerBudgetLimits;
  readonly #byPeer = new Map<string, number>();
  #inUse = 0;
  /** Refusals so far (for metrics and tests). */
  refused = 0;

  constructor(limits: PeerBudgetLimits) {
    this.#limits = limits;
  }

  /** The limits this budget enforces. */
  get limits(): PeerBudgetLimits {
    return this.#limits;
  }

  /** Units in use, all peers together. */
  get inUse(): number {
    return this.#inUse;
  }

  /** Units `peer` holds. */
  heldBy(peer: string): number {
    return this.#byPeer.get(peer) ?? 0;
  }

  /** Takes one unit for `peer`; false (and nothing taken) when a limit is reached. */
  acquire(peer: string): boolean {
    const held = this.#byPeer.get(peer) ?? 0;
    if (held >= this.#limits.perPeer || this.#inUse >= this.#limits.total) {
      this.refused++;
      return false;
    }
    this.#byPeer.set(peer, held + 1);
    this.#inUse++;
    return true;
  }

  /** Gives back one unit of `peer`'s. */
  release(peer: string): void {
    const held = this.#byPeer.get(peer);
    if (held === undefined) return;
    if (held <= 1) this.#byPeer.delete(peer);
    else this.#byPeer.set(peer, held - 1);
    this.#inUse--;
  }
}

/** Which limit refused a connection. */
export type ConnectionLimitHit = 'per-peer' | 'total';

/**
 * Told when a peer starts being refused: once per episode (again only after one of its
 * connections, or for `total` any connection, has closed), so a flood does not flood the log.
 */
export type ConnectionRefusedHook = (peer: string, hit: ConnectionLimitHit, limit: number) => void;

/**
 * Caps the connections `server` holds open: at most `limits.perPeer` from one peer address, at
 * most `limits.total` in all. A connection beyond either is reset as it arrives, before the TLS
 * handshake or the HTTP parser sees a byte of it, so refusing costs next to nothing; the count
 * drops when a connection closes. Works on any server built on net.Server (net, tls, http,
 * https, http2): the check runs before the server's own connection listener.
 *
 * @returns the budget, whose counts are the listener's own accounting (`inUse`, `heldBy`,
 *   `refused`), for metrics and tests.
 * @example
 * ```ts
 * const connections = limitConnections(server, { total: 128, perPeer: 16 }, (peer, hit, limit) =>
 *   log.warn({ peer, hit, limit }, 'admin connections refused'),
 * );
 * ```
 */
export function limitConnections(
  server: NetServer,
  limits: PeerBudgetLimits,
  onRefused?: ConnectionRefusedHook,
): PeerBudget {
  const budget = new PeerBudget(limits);
  /** Peers (and `*` for the total) refused since their count last went down. */
  const refusing = new Set<string>();
  server.prependListener('connection', (socket: Socket) => {
    const peer = socket.remoteAddress;
    if (peer === undefined) {
      socket.destroy(); // already gone
      return;
    }
    if (!budget.acquire(peer)) {
      const hit: ConnectionLimitHit = budget.heldBy(peer) >= limits.perPeer ? 'per-peer' : 'total';
      const key = hit === 'total' ? '*' : peer;
      if (!refusing.has(key)) {
        refusing.add(key);
        onRefused?.(peer, hit, hit === 'total' ? limits.total : limits.perPeer);
      }
      resetSocket(socket);
      return;
    }
    socket.once('close', () => {
      budget.release(peer);
      refusing.delete(peer);
      refusing.delete('*');
    });
  });
  return budget;
}

/** Bounds on an HTTP/1 request's time, in milliseconds; 0 turns one off. */
export interface HttpTimeouts {
  /** From a request's first byte to the end of its head (slowloris). */
  readonly headersTimeoutMs: number;
  /** From a request's first byte to the end of its body. */
  readonly requestTimeoutMs: number;
  /** How long an idle keep-alive connection stays open between requests. */
  readonly keepAliveTimeoutMs: number;
}

/**
 * Sets the request-time bounds of an HTTP/1 server. Node enforces `headersTimeout` and
 * `requestTimeout` with a checker it starts on the server's 'listening' event: a server that is
 * handed connections (`server.emit('connection', socket)`) and never listens itself enforces
 * neither, so `fed` starts that checker here (and `server.close()` stops it).
 *
 * @example
 * ```ts
 * applyHttpTimeouts(http1, LISTENER_LIMITS.outbound.http, { fed: true });
 * ```
 */
export function applyHttpTimeouts(
  server: HttpServer,
  t: HttpTimeouts,
  o: { readonly fed?: boolean } = {},
): void {
  server.headersTimeout = t.headersTimeoutMs;
  server.requestTimeout = t.requestTimeoutMs;
  server.keepAliveTimeout = t.keepAliveTimeoutMs;
  // Node's check runs every `connectionsCheckingInterval` (30 s by default): a bound of a few
  // seconds needs a finer check to mean what it says.
  const shortest = Math.min(
    ...[t.headersTimeoutMs, t.requestTimeoutMs].filter((ms) => ms > 0),
    Number.POSITIVE_INFINITY,
  );
  if (Number.isFinite(shortest)) {
    // The createServer option of that name, stored on the server and read when the check starts.
    (server as HttpServer & { connectionsCheckingInterval: number }).connectionsCheckingInterval =
      Math.max(100, Math.min(1000, Math.floor(shortest / 4)));
  }
  if (o.fed === true) server.emit('listening');
}

/**
 * No TLS session resumption: the server issues no session tickets and keeps no session cache,
 * so every connection is a full handshake whose peer certificate is verified now, against the
 * anchors of now. A resumed session carries the verification result of the handshake that made
 * it: with tickets, a client could go on resuming after its certificate had expired (issue 20:
 * a 5 s certificate was still served by resuming), and tickets chain (each resumption hands out a
 * new one). Every listener that verifies client certificates uses it (the proxy's inbound, the
 * CA, the destination service); clients never offer a session either (node's client resumes only
 * when given one).
 *
 * @example
 * ```ts
 * tls.createServer({ ...MESH_TLS, ...NO_RESUMPTION, key, cert });
 * ```
 */
export const NO_RESUMPTION = Object.freeze({
  secureOptions: cryptoConstants.SSL_OP_NO_TICKET,
  // No stateful cache either (node stores none without a 'newSession' listener; explicit here).
  sessionTimeout: 0,
});

/** The bounds of one HTTP listener: its connections and its requests' time. */
export interface HttpListenerLimits {
  readonly connections: PeerBudgetLimits;
  readonly http: HttpTimeouts;
}

/**
 * Each listener family's defaults (the proxy's inbound and the CA have settings of their own in
 * config; these are fixed). Why each number: docs/security.md, "Limits".
 */
export const LISTENER_LIMITS = Object.freeze({
  /** Admin servers (CA 9990, proxy 4191, webhooks, destination): probes and a scraper. */
  admin: Object.freeze({
    connections: Object.freeze({ total: 128, perPeer: 16 }),
    http: Object.freeze({
      headersTimeoutMs: 10_000,
      requestTimeoutMs: 10_000,
      keepAliveTimeoutMs: 5_000,
    }),
  }) satisfies HttpListenerLimits,
  /** The admission webhooks (8443): the API servers, and anything else that can reach the pod. */
  webhooks: Object.freeze({
    connections: Object.freeze({ total: 1024, perPeer: 128 }),
    http: Object.freeze({
      headersTimeoutMs: 10_000,
      requestTimeoutMs: 30_000,
      keepAliveTimeoutMs: 5_000,
    }),
  }) satisfies HttpListenerLimits,
  /** The destination service (8086): one long-lived connection per proxy. */
  destination: Object.freeze({
    connections: Object.freeze({ total: 16_384, perPeer: 64 }),
  }),
  /**
   * The proxy's outbound listeners (HTTP 4140 and `--route`s), loopback only: every peer is the
   * pod's own app, so the per-peer share equals the total; it bounds a leaking or runaway app.
   */
  outbound: Object.freeze({
    connections: Object.freeze({ total: 4096, perPeer: 4096 }),
    http: Object.freeze({
      headersTimeoutMs: 10_000,
      requestTimeoutMs: 0,
      keepAliveTimeoutMs: 5_000,
    }),
    maxStreams: 100,
  }),
});
