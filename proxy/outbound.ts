/**
 * The proxy's outbound side: the app connects in plain TCP on loopback, the proxy carries the
 * bytes to the destination over TLS 1.3 mutual TLS and refuses any server that does not prove
 * the identity the destination is expected to have.
 *
 * - Route listeners (`--route LISTEN=HOST:PORT@IDENTITY`): one loopback listener per
 *   destination; the bytes are opaque, so HTTP/1.1 keep-alive, HTTP/2, gRPC and raw TCP all pass
 *   unchanged, half-closes included.
 * - The HTTP listener (Linkerd's 4140): an HTTP/1.1 forward proxy that routes every request by
 *   its authority through a {@link DestinationResolver}, pooling mTLS connections per
 *   destination; CONNECT opens an opaque tunnel the same way.
 *
 * Each connection goes through stages that read top to bottom, each a module of its own:
 * accept (outbound-accept.ts: listeners, tracking for graceful close) → detect
 * (outbound-detect.ts: the first bytes) → route (outbound-route.ts: the destination and whom to
 * expect there) → connect (outbound-connect.ts: one verified mTLS connection;
 * outbound-pool.ts: the HTTP/2 sessions and HTTP/1.1 pool between proxies; outbound-forward.ts,
 * outbound-tcp.ts, outbound-tunnel.ts: carrying requests and bytes over them). The route
 * listeners are in outbound-tcp.ts, the HTTP listener in outbound-http.ts.
 *
 * Every new upstream connection asks for the current certificate and anchors, so a renewed
 * certificate or a reloaded bundle applies to the next connection; live ones keep what they
 * negotiated. No certificate yet (the identity client is not ready) means the connection is
 * refused: sending it in the clear, or as nobody, would be worse.
 */
import { createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import type { Address, Logger } from '../core/index.js';
import {
  LISTENER_LIMITS,
  LogKey,
  MeshidError,
  formatAddress,
  limitConnections,
} from '../core/index.js';
import type { PeerBudget } from '../core/index.js';
import type { MeshCredentials } from './tls.js';
import type { DestinationResolver, Route } from './routes.js';
import { isLoopback } from './routes.js';
import type { OutboundContext, OutboundLimits } from './outbound-accept.js';
import { Tracker, bindServer } from './outbound-accept.js';
import { Connector, messageOf } from './outbound-connect.js';
import type { OutboundEvent } from './outbound-events.js';
import type { HttpFront } from './outbound-http.js';
import { httpListenerFront } from './outbound-http.js';
import { MeshPool } from './outbound-pool.js';
import { acceptRouteConnection } from './outbound-tcp.js';
import { TransparentOutbound } from './transparent/outbound.js';
import type { TransparentOutboundOptions } from './transparent/outbound.js';

/** Options of {@link OutboundProxy}. */
export interface OutboundOptions extends MeshCredentials {
  /** One loopback listener per route. */
  readonly routes: readonly Route[];
  /** The HTTP/1.1 forward-proxy listener (4140), routing each request through `resolver`. */
  readonly http?: { readonly listen: Address; readonly resolver: DestinationResolver };
  /**
   * The transparent listener (Linkerd's 4140 under iptables redirection): each connection goes
   * where the app dialled, meshed when the resolver says so.
   */
  readonly transparent?: TransparentOutboundOptions;
  readonly logger: Logger;
  readonly observe?: (e: OutboundEvent) => void;
  /** Bound on TCP connect plus TLS handshake; default 10 s. */
  readonly connectTimeoutMs?: number;
  /**
   * How long a route connection waits for the app's first bytes to see whether it speaks
   * HTTP/2 (and so offer ALPN `h2`); default 1 s. Only server-first protocols ever wait.
   */
  readonly protocolDetectTimeoutMs?: number;
  /** Monotonic-enough milliseconds for durations; default `Date.now`. */
  readonly now?: () => number;
  /**
   * Carry the HTTP listener's requests to peers that are meshid proxies over one multiplexed
   * HTTP/2 connection per destination (ALPN {@link MESH_H2_ALPN}); default true. Peers that do
   * not select it get HTTP/1.1, pooled, as before.
   */
  readonly meshH2?: boolean;
  /** Bounds of the route and HTTP listeners; each defaults to core's LISTENER_LIMITS.outbound. */
  readonly limits?: Partial<OutboundLimits>;
}

const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
const DEFAULT_GRACE_MS = 10_000;
const DEFAULT_DETECT_TIMEOUT_MS = 1_000;

/**
 * The outbound proxy. Build it with the identity client's accessors, `listen()`, and
 * `close()` on shutdown.
 *
 * @example
 * ```ts
 * const outbound = new OutboundProxy({
 *   routes: [parseRoute('127.0.0.1:7001=10.0.0.7:4143@web.emojivoto.serviceaccount.identity.linkerd.cluster.local')],
 *   certificate: () => identity.current(),
 *   anchorsPem: () => anchors.pem(),
 *   logger,
 * });
 * const [routeAddress] = await outbound.listen();
 * // ...
 * await outbound.close(5_000);
 * ```
 */
export class OutboundProxy {
  readonly #o: OutboundOptions;
  readonly #log: Logger;
  readonly #ctx: OutboundContext;
  readonly #servers: Server[] = [];
  readonly #connections: PeerBudget[] = [];
  readonly #fronts: (HttpFront | TransparentOutbound)[] = [];
  #closing = false;

  /**
   * @throws MeshidError ERR_CONFIG_INVALID when a listen address is not loopback or two
   *   listeners share one address.
   */
  constructor(options: OutboundOptions) {
    checkListeners([
      ...options.routes.map((r) => r.listen),
      ...(options.http ? [options.http.listen] : []),
      ...(options.transparent ? [options.transparent.listen] : []),
    ]);
    this.#o = options;
    this.#log = options.logger.child({ [LogKey.component]: 'proxy-outbound' });
    const now = options.now ?? Date.now;
    const emit = (e: OutboundEvent): void => this.#emit(e);
    const connector = new Connector({
      certificate: options.certificate,
      anchorsPem: options.anchorsPem,
      tls: options.tls,
      connectTimeoutMs: options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
      now,
      emit,
      logger: this.#log,
    });
    this.#ctx = {
      log: this.#log,
      now,
      detectTimeoutMs: options.protocolDetectTimeoutMs ?? DEFAULT_DETECT_TIMEOUT_MS,
      meshH2: options.meshH2 !== false,
      limits: { ...LISTENER_LIMITS.outbound, ...options.limits },
      connector,
      pool: new MeshPool(connector, now, this.#log),
      tracker: new Tracker(),
      closing: () => this.#closing,
      emit,
    };
  }

  /**
   * Starts every listener: the routes in order, then the HTTP listener, then the transparent one.
   *
   * @returns the bound addresses in the same order (real ports when 0 was asked for).
   */
  async listen(): Promise<Address[]> {
    const bound: Address[] = [];
    try {
      for (const route of this.#o.routes) {
        const server = createServer({ allowHalfOpen: true, pauseOnConnect: true });
        const address = await this.#bind(server, route.listen);
        const listener = formatAddress(address);
        this.#limit(server, listener);
        server.on('connection', (app: Socket) => {
          if (app.destroyed) return; // refused by the connection limit
          acceptRouteConnection(this.#ctx, app, listener, route);
        });
        bound.push(address);
      }
      if (this.#o.http !== undefined) {
        // One port, two protocols: the first bytes say HTTP/2 (prior knowledge, as gRPC
        // clients send) or HTTP/1.1.
        const front = createServer({ pauseOnConnect: true });
        const address = await this.#bind(front, this.#o.http.listen);
        const listener = formatAddress(address);
        const http = httpListenerFront(this.#ctx, listener, this.#o.http.resolver);
        this.#fronts.push(http);
        this.#limit(front, listener);
        front.on('connection', (s: Socket) => {
          if (!s.destroyed) http.accept(s);
        });
        bound.push(address);
      }
      if (this.#o.transparent !== undefined) {
        const transparent = new TransparentOutbound(this.#ctx, this.#o.transparent);
        this.#fronts.push(transparent);
        // Every connection is the app's (iptables redirects only the pod's own traffic), and
        // they all come from the pod's address: the per-peer share is the total, a cap on a
        // leaking or runaway app, as on the other outbound listeners (one cap per address family).
        const bindCapped = async (server: Server, address: Address): Promise<Address> => {
          const bound = await this.#bind(server, address);
          this.#limit(server, formatAddress(bound));
          return bound;
        };
        bound.push(await transparent.listen(bindCapped));
      }
    } catch (err) {
      await this.close(0);
      throw err;
    }
    for (const [i, a] of bound.entries()) {
      this.#log.info({ [LogKey.address]: formatAddress(a), listener: i }, 'outbound listening');
    }
    return bound;
  }

  /**
   * Stops accepting, lets open connections finish for up to `graceMs`, then destroys the rest.
   * Resolves when every connection is gone.
   */
  async close(graceMs = DEFAULT_GRACE_MS): Promise<void> {
    this.#closing = true;
    const stopped = this.#servers.map(
      (s) =>
        new Promise<void>((resolve) => {
          s.close(() => resolve());
        }),
    );
    this.#servers.length = 0;
    for (const f of this.#fronts) {
      if (f instanceof TransparentOutbound) f.close();
      else f.closeSessions();
    }
    // Pooled idle upstream connections would otherwise wait out the grace for nothing.
    this.#ctx.pool.closeIdle();
    const tracker = this.#ctx.tracker;
    if ((await tracker.drain(graceMs)) === 'expired') {
      this.#log.info({ open: tracker.size }, 'outbound grace expired; closing connections');
      await tracker.destroyAll();
    }
    this.#ctx.pool.destroy();
    await Promise.all(stopped);
  }

  /**
   * Each listener's count of its open connections, per peer address, in the order `listen()`
   * bound them (routes, the HTTP listener, the transparent listener).
   */
  get connections(): readonly PeerBudget[] {
    return this.#connections;
  }

  /**
   * Caps the connections of one listener: refused ones are reset before any handler runs, each
   * counted (a `refused` event), logged at most once per key and 10 s.
   */
  #limit(server: Server, listener: string): void {
    const budget = limitConnections(
      server,
      this.#ctx.limits.connections,
      (peer, hit, limit, refused) =>
        this.#log.warn(
          { [LogKey.address]: peer, listener, hit, limit, refused },
          'outbound listener refusing connections: limit reached',
        ),
      { count: (_peer, hit) => this.#emit({ type: 'refused', listener, reason: hit }) },
    );
    this.#connections.push(budget);
  }

  async #bind(server: Server, address: Address): Promise<Address> {
    const bound = await bindServer(server, address, this.#log);
    this.#servers.push(server);
    return bound;
  }

  #emit(e: OutboundEvent): void {
    try {
      this.#o.observe?.(e);
    } catch (err) {
      // A metrics callback must never take a connection down.
      this.#log.warn({ err: messageOf(err) }, 'outbound observer threw');
    }
  }
}

/** Whoever reaches an outbound listener speaks as this workload: loopback only, each once. */
function checkListeners(listens: readonly Address[]): void {
  const seen = new Set<string>();
  for (const a of listens) {
    const key = formatAddress(a);
    if (!isLoopback(a.host)) {
      throw new MeshidError('ERR_CONFIG_INVALID', `outbound listener ${key} is not loopback`);
    }
    if (a.port !== 0 && seen.has(key)) {
      throw new MeshidError('ERR_CONFIG_INVALID', `outbound listener ${key} is configured twice`);
    }
    seen.add(key);
  }
}
