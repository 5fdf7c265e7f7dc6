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
 * Told about refused connections at a bounded rate, for a log line: the first refusal of a peer
 * (of any peer, for `total`), then at most one per {@link REFUSAL_REPORT_INTERVAL_MS};
 * `refused` is how many connections that key had refused since the last report, this one
 * included. A flood of refusals costs one line per key and interval, not one per connection.
 */
export type ConnectionRefusedHook = (
  peer: string,
  hit: ConnectionLimitHit,
  limit: number,
  refused: number,
) => void;

/** Told about every refused connection (a counter); no log line belongs here. */
export type ConnectionCountHook = (peer: string, hit: ConnectionLimitHit) => void;

/** How often refusals of one key are reported at most ({@link RefusalReports}). */
const REFUSAL_REPORT_INTERVAL_MS = 10_000;

/** Keys a {@link RefusalReports} remembers before it forgets the quiet ones. */
const MAX_REPORT_KEYS = 1024;

/**
 * Rate-limits the log lines of refusals: per key (a peer address, `*` for a listener's total),
 * the first refusal is reported, then at most one per `intervalMs`, carrying how many were
 * refused since the last report. Keys are forgotten once quiet for an interval, so peers that
 * come from many addresses cannot grow it past {@link MAX_REPORT_KEYS} for long.
 *
 * @example
 * ```ts
 * const reports = new RefusalReports();
 * const refused = reports.refused(peer);
 * if (refused !== undefined) log.warn({ peer, refused }, 'connections refused: limit reached');
 * ```
 */
export class RefusalReports {
  readonly #intervalMs: number;
  readonly #now: () => number;
  /** Per key: when it was last reported, and refusals since (the reported one excluded). */
  readonly #keys = new Map<string, { at: number; since: number }>();

  constructor(o: { readonly intervalMs?: number; readonly now?: () => number } = {}) {
    this.#intervalMs = o.intervalMs ?? REFUSAL_REPORT_INTERVAL_MS;
    this.#now = o.now ?? (() => performance.now());
  }

  /** Keys remembered now (for tests: bounded however many addresses refusals come from). */
  get size(): number {
    return this.#keys.size;
  }

  /**
   * Records one refusal for `key`: how many to report now (this one included), or undefined
   * while the key was reported less than an interval ago.
   */
  refused(key: string): number | undefined {
    const now = this.#now();
    const last = this.#keys.get(key);
    if (last !== undefined && now - last.at < this.#intervalMs) {
      last.since++;
      return undefined;
    }
    if (last === undefined && this.#keys.size >= MAX_REPORT_KEYS) this.#forgetQuiet(now);
    this.#keys.set(key, { at: now, since: 0 });
    return (last?.since ?? 0) + 1;
  }

  #forgetQuiet(now: number): void {
    for (const [key, last] of this.#keys) {
      if (now - last.at >= this.#intervalMs) this.#keys.delete(key);
    }
    // Still full: every key was reported within the interval (many addresses at once). Their
    // next refusals are reported again, which is at most MAX_REPORT_KEYS more lines.
    if (this.#keys.size >= MAX_REPORT_KEYS) this.#keys.clear();
  }
}

/** Optional parts of {@link limitConnections}. */
export interface ConnectionLimitOptions {
  /** Every refused connection, e.g. for a counter. */
  readonly count?: ConnectionCountHook;
  /** The clock of the report rate (milliseconds); default performance.now. */
  readonly now?: () => number;
}

/**
 * Caps the connections `server` holds open: at most `limits.perPeer` from one peer address, at
 * most `limits.total` in all. A connection beyond either is reset as it arrives, before the TLS
 * handshake or the HTTP parser sees a byte of it, so refusing costs next to nothing; the count
 * drops, exactly once, when a connection closes, whatever the server's own handlers were doing
 * with it. Works on any server built on net.Server (net, tls, http, https, http2): the check runs
 * before the server's own connection listener, which must skip a socket already destroyed.
 * Which limit refused: `total` when the listener is full (so a listener whose only peer is its
 * own app reports `total`), `per-peer` otherwise.
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
  o: ConnectionLimitOptions = {},
): PeerBudget {
  const budget = new PeerBudget(limits);
  const reports = new RefusalReports(o.now === undefined ? {} : { now: o.now });
  server.prependListener('connection', (socket: Socket) => {
    const peer = socket.remoteAddress;
    if (peer === undefined) {
      socket.destroy(); // already gone
      return;
    }
    if (!budget.acquire(peer)) {
      const hit: ConnectionLimitHit = budget.inUse >= limits.total ? 'total' : 'per-peer';
      o.count?.(peer, hit);
      const refused = reports.refused(hit === 'total' ? '*' : peer);
      if (refused !== undefined) {
        onRefused?.(peer, hit, hit === 'total' ? limits.total : limits.perPeer, refused);
      }
      resetSocket(socket);
      return;
    }
    socket.once('close', () => budget.release(peer));
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
