/**
 * The proxy's inbound side: terminates mutual TLS 1.3 from meshed peers, authorizes each
 * connection by the peer's verified identity, and forwards to the application on loopback.
 *
 * Each connection goes through stages that read top to bottom, each a module of its own:
 *
 * 1. accept (here and inbound-accept.ts: the connection's record, the peer's shares): the first
 *    byte says TLS (a handshake record, 0x16) or not. Plaintext is served only when the policy
 *    allows unauthenticated peers; otherwise the connection is dropped.
 * 2. TLS (inbound-handshake.ts): the workload certificate and anchors of the moment, a client
 *    certificate required, the peer identity its first DNS SAN.
 * 3. route (inbound-route.ts): the policy decides once for the connection; Linkerd's transport
 *    header may name the app port.
 * 4. detect (detect.ts): the first decrypted bytes pick the protocol: HTTP/2, HTTP/1.x or
 *    opaque. Most clients speak first, so this costs no round trip; a silent client (a
 *    server-speaks-first protocol) is connected to the app after a short timeout.
 * 5. connect: HTTP/1 (inbound-http1.ts), HTTP/2 (inbound-http2.ts), opaque bytes piped both ways
 *    with half-close (inbound-opaque.ts). Every copy of `l5d-client-id` the client sent is
 *    removed and the verified identity added. Denied HTTP gets a 403 (gRPC: PERMISSION_DENIED)
 *    from the proxy and the app sees nothing.
 */
import { performance } from 'node:perf_hooks';
import { createServer as createNetServer } from 'node:net';
import type { Server as NetServer, Socket } from 'node:net';
import type { Address, Logger } from '../core/index.js';
import { DEFAULTS, LogKey, formatAddress, listenOn } from '../core/index.js';
import { PROXY_TLS } from './tls.js';
import type { MeshCredentials } from './tls.js';
import { detectProtocol, readFirstBytes } from './detect.js';
import type { DetectedProtocol, FirstBytes } from './detect.js';
import { AppProtocolDetector } from './app-protocol.js';
import type { AppPorts, AppProtocol } from './app-protocol.js';
import { AppConnections } from './h2-to-http1.js';
import type { InboundPolicy } from './policy.js';
import type { InboundEvent } from './inbound-events.js';
import type { Conn, InboundContext, InboundLimits } from './inbound-accept.js';
import {
  DEFAULT_INBOUND_LIMITS,
  PeerShares,
  addressKey,
  appAddress,
  destroyConn,
  drainConn,
  newConn,
  refuseConn,
} from './inbound-accept.js';
import { InboundHandshake } from './inbound-handshake.js';
import { authorize, carriesTransportHeader, routeByTransportHeader } from './inbound-route.js';
import { MAX_DETECT_BYTES, forwardOpaque } from './inbound-opaque.js';
import { InboundHttp1ToH2, refuseHttp1Busy, startHttp1Relay } from './inbound-http1.js';
import { AppSessions, InboundHttp2 } from './inbound-http2.js';

/** Settings of an {@link InboundProxy}. */
export interface InboundOptions extends MeshCredentials {
  /** Where to listen (the proxy's default is 127.0.0.1:4143 in config). Port 0 picks one. */
  readonly listen: Address;
  /** Where the application listens (plain TCP; HTTP/1.1 or h2c for HTTP). */
  readonly app: Address;
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

const DEFAULT_DETECT_TIMEOUT_MS = 1000;
const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
const DEFAULT_GRACE_MS = 10_000;
const TLS_HANDSHAKE_RECORD = 0x16;
/** A request head still arriving after this long gets its connection closed (slow clients). */
const HEAD_TIMEOUT_MS = 60_000;
/** How long a probe of what the app speaks may take. */
const APP_DETECT_TIMEOUT_MS = 5_000;

/**
 * The inbound listener.
 *
 * @example
 * ```ts
 * const inbound = new InboundProxy({
 *   listen: { host: '::', port: 4143 },
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
  readonly #ctx: InboundContext;
  readonly #detectTimeoutMs: number;
  readonly #handshakeTimeoutMs: number;
  readonly #server: NetServer;
  readonly #handshake: InboundHandshake;
  readonly #http2: InboundHttp2;
  readonly #http1ToH2: InboundHttp1ToH2;
  readonly #appSessions: AppSessions;
  readonly #conns = new Set<Conn>();
  readonly #detector = new AppProtocolDetector({ timeoutMs: APP_DETECT_TIMEOUT_MS });
  readonly #appConnections: AppConnections;
  #sweeper: NodeJS.Timeout | undefined;
  #closing = false;
  #closed: Promise<void> | undefined;
  #onEmpty: (() => void) | undefined;

  constructor(options: InboundOptions) {
    this.#o = options;
    this.#log = options.logger.child({ [LogKey.component]: 'proxy-inbound' });
    this.#detectTimeoutMs = options.detectTimeoutMs ?? DEFAULT_DETECT_TIMEOUT_MS;
    this.#handshakeTimeoutMs = options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
    const limits = { ...DEFAULT_INBOUND_LIMITS, ...options.limits };
    this.#ctx = {
      log: this.#log,
      app: options.app,
      appPorts: options.appPorts ?? new Map([[options.app.port, 'detect' as const]]),
      appTimeoutMs: options.appTimeoutMs ?? DEFAULTS.proxyAppTimeoutMs,
      limits,
      shares: new PeerShares(limits, this.#log),
      closing: () => this.#closing,
      emit: (e) => this.#emit(e),
    };
    this.#appConnections = new AppConnections(limits.maxAppConnections);

    // allowHalfOpen everywhere: an opaque client that finishes sending must still get the
    // app's answer.
    this.#server = createNetServer({ allowHalfOpen: true }, (raw) => this.#onConnection(raw));
    this.#server.on('error', (err) =>
      this.#log.error({ err: err.message }, 'inbound listener error'),
    );
    this.#handshake = new InboundHandshake(this.#ctx, {
      certificate: options.certificate,
      anchorsPem: options.anchorsPem,
      tls: options.tls ?? PROXY_TLS,
      handshakeTimeoutMs: this.#handshakeTimeoutMs,
      verified: (conn, socket) => this.#serveOrDestroy(conn, socket, undefined),
    });
    this.#appSessions = new AppSessions(this.#ctx);
    this.#http2 = new InboundHttp2(this.#ctx, this.#appSessions, this.#appConnections);
    this.#http1ToH2 = new InboundHttp1ToH2(this.#ctx, this.#appSessions);
  }

  /** Starts listening; resolves with the bound address (useful with port 0). */
  async listen(): Promise<Address> {
    const bound = await listenOn(this.#server, this.#o.listen, {
      logger: this.#log,
      name: 'inbound',
    });
    this.#startSweeper();
    this.#log.info({ [LogKey.address]: formatAddress(bound) }, 'inbound listening');
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
    const appTimeoutMs = this.#ctx.appTimeoutMs;
    const every =
      appTimeoutMs > 0
        ? Math.max(50, Math.min(HEAD_TIMEOUT_MS / 4, appTimeoutMs / 4))
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
      for (const conn of this.#conns) drainConn(conn);
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
    this.#appSessions.destroy();
    this.#appConnections.destroy();
  }

  #sweep(): void {
    const now = performance.now();
    const appTimeoutMs = this.#ctx.appTimeoutMs;
    for (const conn of this.#conns) {
      if (conn.relay === undefined) continue;
      if (conn.relay.stalledFor(now) > HEAD_TIMEOUT_MS) {
        this.#log.debug({ [LogKey.identity]: conn.peer }, 'inbound request head timed out');
        destroyConn(conn);
      } else if (appTimeoutMs > 0 && conn.relay.expire(now, appTimeoutMs)) {
        this.#log.info({ [LogKey.identity]: conn.peer }, 'inbound app answer timed out (504)');
      }
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

  // ---- accept ----

  #onConnection(raw: Socket, route?: InboundRoute): void {
    if (this.#closing) {
      raw.destroy();
      return;
    }
    raw.setNoDelay(true);
    raw.on('error', (err) => this.#log.debug({ err: err.message }, 'inbound connection error'));
    const pendingKey = addressKey(raw);
    if (!this.#ctx.shares.takePending(pendingKey)) {
      this.#emit({ type: 'handshake-failed', reason: 'too-many-connections', detail: pendingKey });
      raw.destroy();
      return;
    }
    const appPort = route?.appPort ?? this.#o.app.port;
    const conn = newConn(raw, appPort, route?.policy ?? this.#o.policy, pendingKey);
    this.#conns.add(conn);
    raw.once('close', () => this.#onClose(conn));
    this.#start(conn).catch((err: unknown) => {
      this.#log.warn({ err: String(err) }, 'inbound connection failed');
      destroyConn(conn);
    });
  }

  #onClose(conn: Conn): void {
    this.#conns.delete(conn);
    this.#ctx.shares.releaseAll(conn);
    this.#handshake.forget(conn);
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

  /** TLS or plaintext, by the first byte. */
  async #start(conn: Conn): Promise<void> {
    const { raw } = conn;
    const allowPlain = conn.policy.allowUnauthenticated;
    const first = await readFirstBytes(raw, {
      // A TLS client always speaks first; only a plaintext one may legitimately wait.
      timeoutMs: allowPlain ? this.#detectTimeoutMs : this.#handshakeTimeoutMs,
      maxBytes: 1,
    });
    if (raw.destroyed || this.#closing) {
      raw.destroy();
      return;
    }
    if (first.bytes[0] === TLS_HANDSHAKE_RECORD) {
      this.#handshake.begin(conn, first.bytes);
      return;
    }
    if (!allowPlain) {
      const reason = first.bytes.length === 0 ? 'closed' : 'plaintext-refused';
      refuseConn(this.#ctx, conn, reason, undefined);
      return;
    }
    if (first.bytes.length === 0 && first.ended) {
      refuseConn(this.#ctx, conn, 'closed', undefined);
      return;
    }
    conn.stream = raw;
    this.#ctx.shares.handshakeDone(conn);
    this.#emit({ type: 'handshake-succeeded', peer: undefined, tls: false });
    await this.#serve(conn, raw, first);
  }

  #serveOrDestroy(conn: Conn, stream: Socket, already: FirstBytes | undefined): void {
    this.#serve(conn, stream, already).catch((err: unknown) => {
      this.#log.warn({ err: String(err) }, 'inbound connection failed');
      destroyConn(conn);
    });
  }

  // ---- route, detect ----

  /**
   * Authorize, route, detect, dispatch. `already` is what the plaintext path read while
   * looking for a TLS record: detection goes on from there rather than waiting a second time.
   */
  async #serve(conn: Conn, stream: Socket, already: FirstBytes | undefined): Promise<void> {
    authorize(this.#ctx, conn);
    let bytes = already?.bytes ?? Buffer.alloc(0);
    let ended = already?.ended ?? false;
    let timedOut = already?.timedOut ?? false;
    if (carriesTransportHeader(conn, stream)) {
      const rest = await routeByTransportHeader(
        this.#ctx,
        conn,
        stream,
        this.#handshakeTimeoutMs,
        this.#o.policyForPort,
      );
      if (rest === undefined) return;
      bytes = rest;
    }
    const configured: AppProtocol = this.#ctx.appPorts.get(conn.appPort) ?? 'detect';
    if (configured === 'opaque') {
      // The operator said this port is not HTTP: no detection, no header added.
      conn.appProtocol = 'opaque';
      this.#opaque(conn, stream, bytes, ended, false);
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
    if (protocol === 'opaque') {
      this.#opaque(conn, stream, bytes, ended, timedOut && bytes.length === 0);
      return;
    }
    this.#opened(conn, protocol);
    await this.#learnThenHttp(conn, stream, bytes, protocol);
  }

  #opened(conn: Conn, protocol: DetectedProtocol): void {
    conn.protocol = protocol;
    this.#emit({
      type: 'connection-opened',
      peer: conn.peer,
      tls: conn.tls,
      protocol,
      authorized: conn.decision?.allowed === true,
    });
  }

  // ---- connect ----

  #opaque(conn: Conn, stream: Socket, first: Buffer, ended: boolean, lateDetect: boolean): void {
    this.#opened(conn, 'opaque');
    if (conn.decision?.allowed !== true) {
      destroyConn(conn);
      return;
    }
    forwardOpaque(this.#ctx, conn, stream, {
      first,
      ended,
      lateDetect,
      toHttp: (held, protocol) => void this.#learnThenHttp(conn, stream, held, protocol),
    });
  }

  async #learnThenHttp(
    conn: Conn,
    stream: Socket,
    bytes: Buffer,
    protocol: 'http1' | 'http2',
  ): Promise<void> {
    if (conn.decision?.allowed === true) {
      await this.#learnAppProtocol(conn, this.#ctx.appPorts.get(conn.appPort) ?? 'detect');
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
      conn.appProtocol = await this.#detector.resolve(appAddress(this.#ctx, conn), configured);
    } catch (err) {
      // The app is not reachable now: the HTTP/1.1 path answers 502 with the cause, and the
      // next connection probes again.
      this.#log.debug({ err: (err as Error).message }, 'inbound could not learn the app protocol');
      conn.appProtocol = 'http1';
    }
  }

  /** Hands a connection to the HTTP/1 or HTTP/2 stage, the detected bytes put back first. */
  #toHttp(conn: Conn, stream: Socket, bytes: Buffer, protocol: 'http1' | 'http2'): void {
    conn.protocol = protocol;
    if (protocol === 'http2') {
      this.#http2.serve(conn, stream, bytes);
      return;
    }
    const allowed = conn.decision?.allowed === true;
    if (allowed && !this.#ctx.shares.takeAppShare(conn)) refuseHttp1Busy(this.#ctx, stream);
    else if (allowed && conn.appProtocol === 'h2') this.#http1ToH2.serve(conn, stream, bytes);
    else startHttp1Relay(this.#ctx, conn, stream, bytes);
  }
}
