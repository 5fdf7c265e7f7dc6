/**
 * The transparent outbound listener (Linkerd's 4140 with iptables redirection): every TCP
 * connection the app opens arrives here with its original destination. Accept (the original
 * destination) → detect (the first bytes) and route (the destination service's answer, bounded
 * in time) together → connect:
 * - meshed endpoints: HTTP goes request by request to an endpoint picked by power of two
 *   choices over peak-EWMA latency, as streams on the multiplexed HTTP/2 mTLS session to its
 *   proxy; anything else goes over one mTLS connection to the endpoint's inbound port with
 *   Linkerd's `transport.l5d.io/v1` header naming the target port. The endpoint must prove
 *   exactly the identity the destination service gave, or nothing is sent.
 * - an unknown, unmeshed or unresolvable destination is passed through as plain TCP, never
 *   held back longer than the resolve bound.
 */
import { connect as netConnect, createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { IncomingHttpHeaders as Http2IncomingHeaders, ServerHttp2Stream } from 'node:http2';
import type { Address } from '../../core/index.js';
import { LogKey, formatAddress, resetSocket } from '../../core/index.js';
import { detectProtocol } from '../detect.js';
import type { Destination } from '../routes.js';
import { TRANSPORT_HEADER_ALPN, encodeTransportHeader } from '../l5d-transport.js';
import type { OutboundContext, Tracked } from '../outbound-accept.js';
import { splice } from '../outbound-accept.js';
import { messageOf } from '../outbound-connect.js';
import type { FirstBytes } from '../outbound-detect.js';
import { opensWithH2Preface, sniffFirstBytes } from '../outbound-detect.js';
import { forwardRequest, forwardStream } from '../outbound-forward.js';
import { HttpFront, streamAnswer } from '../outbound-http.js';
import type { FastRefuse, FastRequest, FastRoute } from '../outbound-http1.js';
import { proxyError, requestTarget } from '../outbound-route.js';
import { carryOpaque } from '../outbound-tcp.js';
import type { Pick } from '../balancer.js';
import type { OriginalDestinationReader } from './original-dst.js';
import type {
  DestinationWatch,
  PassthroughReason,
  ResolvedEndpoint,
  Resolver,
} from './resolver.js';
import { DestinationWatches } from './resolver.js';

/** Options of the transparent listener. */
export interface TransparentOutboundOptions {
  /**
   * Where iptables sends the app's connections; loopback (127.0.0.1:4140, and [::1]:4140 beside it
   * for IPv6).
   */
  readonly listen: Address;
  readonly originalDestination: OriginalDestinationReader;
  readonly resolver: Resolver;
  /** How long a new connection waits for the destination service's first answer; default 1 s. */
  readonly resolveTimeoutMs?: number;
  /** Uniform in [0, 1), for the balancer; default Math.random. */
  readonly random?: () => number;
}

const DEFAULT_RESOLVE_TIMEOUT_MS = 1_000;

/** What a meshed HTTP connection's requests are routed by. */
interface MeshedConnection {
  readonly dst: Address;
  /** `formatAddress(dst)`, the `dst` of every request's metrics (made once per connection). */
  readonly dstText: string;
  readonly watch: DestinationWatch;
}

/**
 * Marks a socket with its meshed connection. A property, not a WeakMap: node hands HTTP/2
 * streams a proxy of the socket (`session.socket`), which reads properties through.
 */
const MESHED = Symbol('meshid.transparent.connection');
type Marked = Socket & { [MESHED]?: MeshedConnection };

/** The transparent outbound listener of one {@link OutboundProxy}. */
export class TransparentOutbound {
  readonly #ctx: OutboundContext;
  readonly #o: TransparentOutboundOptions;
  readonly #watches: DestinationWatches;
  readonly #front: HttpFront;
  #listener = '';
  #bound: Address | undefined;

  constructor(ctx: OutboundContext, options: TransparentOutboundOptions) {
    this.#ctx = ctx;
    this.#o = options;
    this.#watches = new DestinationWatches({
      resolver: options.resolver,
      now: ctx.now,
      random: options.random ?? Math.random,
      logger: ctx.log,
      onUnavailable: (target, unavailable, message) =>
        ctx.emit({
          type: 'discovery',
          listener: this.#listener,
          target,
          available: !unavailable,
          message,
        }),
    });
    this.#front = new HttpFront(ctx, {
      fast: { router: (req, refuse) => this.#route(req, refuse), listener: () => this.#listener },
      request: (req, res) => this.#request(req, res),
      stream: (stream, headers) => this.#stream(stream, headers),
    });
  }

  /**
   * Starts listening through `bind` (the owner's, which keeps the servers to close); resolves
   * with the bound address. On `127.0.0.1` it also listens on `[::1]` at the same port: ip6tables'
   * REDIRECT sends the IPv6 connections the app makes to the loopback address of their own
   * family, so an IPv6 or dual-stack pod needs both. A host without IPv6 keeps the IPv4
   * listener alone (logged).
   */
  async listen(bind: (server: Server, address: Address) => Promise<Address>): Promise<Address> {
    const address = await bind(this.#server(), this.#o.listen);
    this.#bound = address;
    this.#listener = formatAddress(address);
    if (address.host !== '127.0.0.1') return address;
    const v6: Address = { host: '::1', port: address.port };
    try {
      await bind(this.#server(), v6);
      this.#ctx.log.info(
        { [LogKey.address]: formatAddress(v6) },
        'transparent outbound listening for IPv6 beside IPv4',
      );
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EAFNOSUPPORT' && code !== 'EADDRNOTAVAIL') throw err;
      this.#ctx.log.info({ err: code }, 'transparent outbound: no IPv6 on this host; IPv4 only');
    }
    return address;
  }

  /** Sends GOAWAY to the apps' HTTP/2 sessions and stops every destination watch. */
  close(): void {
    this.#front.closeSessions();
    this.#watches.close();
  }

  #server(): Server {
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true });
    server.on('connection', (app: Socket) => this.#accept(app));
    return server;
  }

  #accept(app: Socket): void {
    if (app.destroyed) return; // refused by the connection limit
    const ctx = this.#ctx;
    const tracked = ctx.tracker.track([app]);
    app.setNoDelay(true);
    app.on('error', (err) => ctx.log.debug({ err: messageOf(err) }, 'transparent app error'));
    if (ctx.closing()) {
      app.destroy();
      return;
    }
    const dst = this.#originalDestination(app);
    if (dst === undefined) {
      app.destroy();
      return;
    }
    const timeout = this.#o.resolveTimeoutMs ?? DEFAULT_RESOLVE_TIMEOUT_MS;
    void Promise.all([
      sniffFirstBytes(app, ctx.detectTimeoutMs),
      this.#watches.lookup(dst, timeout),
    ]).then(([early, { decision, release }]) => {
      if (app.destroyed) {
        release();
        return;
      }
      app.once('close', release);
      if (decision.kind === 'passthrough') {
        this.#passthrough(app, early, dst, decision.reason, tracked);
        return;
      }
      if (!early.ended && detectProtocol(early.bytes).protocol !== 'opaque') {
        (app as Marked)[MESHED] = { dst, dstText: formatAddress(dst), watch: decision.watch };
        this.#front.serve(app, early.bytes);
        return;
      }
      this.#opaque(app, early, decision.watch, tracked);
    });
  }

  /** The original destination, or undefined (logged) when there is none to use. */
  #originalDestination(app: Socket): Address | undefined {
    let dst: Address;
    try {
      const o = this.#o.originalDestination(app);
      dst = { host: o.address, port: o.port };
    } catch (err) {
      this.#ctx.log.warn(
        { err: messageOf(err) },
        'transparent connection without an original destination; closed',
      );
      return undefined;
    }
    const self = this.#bound;
    if (self !== undefined && dst.port === self.port && dst.host === app.localAddress) {
      // Dialled directly (loopback is not redirected): relaying it would loop back here.
      this.#ctx.log.warn(
        { [LogKey.address]: formatAddress(dst) },
        'connection addressed to the transparent outbound listener itself (not redirected); closed',
      );
      return undefined;
    }
    return dst;
  }

  /** Plain TCP to the original destination, first bytes included; counted as tls="false". */
  #passthrough(
    app: Socket,
    early: FirstBytes,
    dst: Address,
    reason: PassthroughReason,
    tracked: Tracked,
  ): void {
    const ctx = this.#ctx;
    ctx.emit({ type: 'passthrough', listener: this.#listener, target: dst, reason });
    ctx.log.debug(
      { [LogKey.address]: formatAddress(dst), [LogKey.reason]: reason },
      'transparent connection passed through',
    );
    const up = netConnect({ host: dst.host, port: dst.port, allowHalfOpen: true });
    up.setNoDelay(true);
    tracked.sockets.add(up);
    let connected = false;
    up.once('error', (err) => {
      if (connected) return;
      ctx.log.debug(
        { [LogKey.address]: formatAddress(dst), err: err.message },
        'pass-through connect failed',
      );
      resetSocket(app);
    });
    app.once('close', () => {
      if (!connected) up.destroy();
    });
    up.once('connect', () => {
      connected = true;
      if (early.bytes.length > 0) up.write(early.bytes);
      splice(app, up, early.ended);
    });
  }

  /** Not HTTP: one mTLS connection to an endpoint picked for the whole connection. */
  #opaque(app: Socket, early: FirstBytes, watch: DestinationWatch, tracked: Tracked): void {
    const picked = watch.balancer.pick();
    if (picked === undefined) {
      resetSocket(app);
      return;
    }
    app.once('close', () => picked.done(false));
    const ep = picked.endpoint;
    // Linkerd's opaque transport: the peer's inbound port, the target port in the header.
    const viaTransport = ep.inboundPort !== undefined;
    const dest: Destination = {
      target: viaTransport ? { host: ep.address.host, port: ep.inboundPort! } : ep.address,
      identity: ep.identity!,
    };
    carryOpaque(this.#ctx, app, early, {
      listener: this.#listener,
      dest,
      tracked,
      alpn: viaTransport
        ? [TRANSPORT_HEADER_ALPN]
        : opensWithH2Preface(early.bytes)
          ? ['h2']
          : undefined,
      ...(viaTransport
        ? {
            preamble: encodeTransportHeader({
              port: ep.address.port,
              name: '',
              protocol: undefined,
            }),
          }
        : {}),
    });
  }

  /** One HTTP/1.1 request on the fast path (outbound-http1.ts): an endpoint picked for it alone. */
  #route(req: FastRequest, refuse: FastRefuse): FastRoute | undefined {
    const conn = (req.socket as Marked)[MESHED];
    if (conn === undefined) {
      refuse(500, 'internal', 'request on a connection the transparent listener did not route');
      return undefined;
    }
    const picked = this.#pick(conn, refuse);
    if (picked === undefined) return undefined;
    const started = this.#ctx.now();
    return {
      dest: destOf(picked.endpoint),
      done: (status) => {
        // Handed to node's server, which picks again: this pick is not an observation.
        if (status === undefined) picked.done(false);
        else this.#done(conn, picked, started, status);
      },
    };
  }

  /** One HTTP/1.1 request on a meshed connection: an endpoint picked for it alone. */
  #request(req: IncomingMessage, res: ServerResponse): void {
    const conn = (req.socket as Marked)[MESHED];
    if (conn === undefined) {
      proxyError(
        res,
        500,
        'internal',
        'request on a connection the transparent listener did not route',
      );
      return;
    }
    const picked = this.#pick(conn, (status, reason, message) =>
      proxyError(res, status, reason, message),
    );
    if (picked === undefined) return;
    const started = this.#ctx.now();
    res.once('close', () =>
      this.#done(conn, picked, started, res.headersSent ? res.statusCode : 0),
    );
    const target = requestTarget(req) ?? {
      authority: formatAddress(conn.dst),
      path: req.url ?? '/',
    };
    void forwardRequest(this.#ctx, req, res, {
      listener: this.#listener,
      dest: destOf(picked.endpoint),
      target,
    });
  }

  /** One HTTP/2 stream on a meshed connection (gRPC): an endpoint picked for it alone. */
  #stream(stream: ServerHttp2Stream, headers: Http2IncomingHeaders): void {
    stream.on('error', (err) =>
      this.#ctx.log.debug({ err: err.message }, 'transparent app h2 stream error'),
    );
    const answer = streamAnswer(stream);
    const conn = (stream.session?.socket as Marked | undefined)?.[MESHED];
    if (conn === undefined) {
      answer(500, 'internal', 'stream on a connection the transparent listener did not route');
      return;
    }
    const picked = this.#pick(conn, answer);
    if (picked === undefined) return;
    const started = this.#ctx.now();
    stream.once('close', () => {
      const status = Number(stream.sentHeaders[':status'] ?? 0);
      this.#done(conn, picked, started, stream.rstCode === 0 ? status : 0);
    });
    void forwardStream(
      this.#ctx,
      stream,
      headers,
      { listener: this.#listener, dest: destOf(picked.endpoint) },
      answer,
    );
  }

  #pick(
    conn: MeshedConnection,
    refuse: (status: number, reason: string, message: string) => unknown,
  ): Pick<ResolvedEndpoint> | undefined {
    const picked = conn.watch.balancer.pick();
    if (picked === undefined) {
      refuse(503, 'no-endpoints', `no meshed endpoint is left for ${conn.dstText}`);
      this.#ctx.emit({
        type: 'request',
        listener: this.#listener,
        dst: conn.dstText,
        peerIdentity: '',
        tls: false,
        status: 503,
        durationMs: 0,
      });
    }
    return picked;
  }

  #done(
    conn: MeshedConnection,
    picked: Pick<ResolvedEndpoint>,
    started: number,
    status: number,
  ): void {
    picked.done();
    this.#ctx.emit({
      type: 'request',
      listener: this.#listener,
      target: picked.endpoint.address,
      dst: conn.dstText,
      peerIdentity: picked.endpoint.identity ?? '',
      tls: true,
      status,
      durationMs: this.#ctx.now() - started,
    });
  }
}

/** Each endpoint's destination, made once: the pool keys its sessions by the object. */
const DESTINATIONS = new WeakMap<ResolvedEndpoint, Destination>();

/** Where a request to a meshed endpoint goes: its own address, its identity. */
function destOf(ep: ResolvedEndpoint): Destination {
  let dest = DESTINATIONS.get(ep);
  if (dest === undefined) {
    dest = { target: ep.address, identity: ep.identity! };
    DESTINATIONS.set(ep, dest);
  }
  return dest;
}
