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
 * Every new upstream connection asks for the current certificate and anchors, so a renewed
 * certificate or a reloaded bundle applies to the next connection; live ones keep what they
 * negotiated. No certificate yet (the identity client is not ready) means the connection is
 * refused: sending it in the clear, or as nobody, would be worse.
 */
import { createServer } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { ConnectionOptions, PeerCertificate, TLSSocket } from 'node:tls';
import {
  Agent as HttpAgent,
  createServer as createHttpServer,
  request as httpRequest,
  STATUS_CODES,
} from 'node:http';
import type {
  ClientRequest,
  ClientRequestArgs,
  IncomingHttpHeaders,
  IncomingMessage,
  OutgoingHttpHeaders,
  ServerResponse,
} from 'node:http';
import {
  connect as http2Connect,
  constants as h2,
  createServer as createHttp2Server,
} from 'node:http2';
import type {
  ClientHttp2Session,
  IncomingHttpHeaders as Http2IncomingHeaders,
  ServerHttp2Session,
  ServerHttp2Stream,
} from 'node:http2';
import { ServerResponse as HttpServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Address, Logger, MeshTlsSettings, TlsAlgorithms } from '../core/index.js';
import {
  FIPS_TLS,
  LogKey,
  MeshidError,
  formatAddress,
  negotiatedAlgorithms,
  printable,
} from '../core/index.js';
import type { WorkloadCertificate } from './identity/client.js';
import type { Destination, DestinationResolver, Route } from './routes.js';
import { isLoopback } from './routes.js';
import { ContextCache, MESH_H2_ALPN, fipsPeerProblem, identityOfCertificate } from './tls.js';
import { forwardUpgrade, upgradeRequestHead } from './upgrade.js';
import { detectProtocol } from './detect.js';
import { forwardableHttp2Headers, relayH2Stream } from './h2-relay.js';
import type { H2RelayFailure } from './h2-relay.js';

// The route and destination vocabulary is part of the outbound surface.
export {
  StaticDestinationResolver,
  normalizeAuthority,
  parseDestination,
  parseRoute,
} from './routes.js';
export type { Destination, DestinationResolver, Route } from './routes.js';

/** Why an outbound connection was not established. */
export type OutboundFailureReason =
  /** The identity client has no valid certificate yet. */
  | 'no-certificate'
  /** The HTTP listener found no destination for the request's authority. */
  | 'no-route'
  /** TCP to the target failed (refused, unreachable, reset before TLS began). */
  | 'connect-failed'
  /** TCP plus the TLS handshake took longer than `connectTimeoutMs`. */
  | 'timeout'
  /** The server's chain does not verify against the current anchors (or is expired). */
  | 'untrusted'
  /** The chain verified but names another identity than the expected one. */
  | 'identity-mismatch'
  /** The TLS handshake failed otherwise (protocol version, alert, reset mid-handshake). */
  | 'tls-failed'
  /** The app closed its connection before the handshake finished. */
  | 'cancelled';

/** Which listener a connection came in on: `route` listeners are named by their address. */
export interface OutboundEventBase {
  /** `formatAddress` of the listener the app connected to. */
  readonly listener: string;
  readonly target?: Address;
  readonly expectedIdentity?: string;
}

/**
 * What the outbound side reports for metrics and logs. Every upstream connection attempt gets
 * exactly one `handshake` event; every established one then gets `opened` and, later, exactly
 * one `closed`.
 */
export type OutboundEvent =
  | (OutboundEventBase & {
      readonly type: 'handshake';
      readonly ok: true;
      readonly target: Address;
      readonly expectedIdentity: string;
      readonly peerIdentity: string;
      readonly durationMs: number;
      /** The key-exchange group and cipher suite negotiated (core's negotiatedAlgorithms). */
      readonly algorithms: TlsAlgorithms;
    })
  | (OutboundEventBase & {
      readonly type: 'handshake';
      readonly ok: false;
      readonly reason: OutboundFailureReason;
      readonly message: string;
    })
  | (OutboundEventBase & {
      readonly type: 'opened';
      readonly target: Address;
      readonly peerIdentity: string;
    })
  | (OutboundEventBase & {
      readonly type: 'closed';
      readonly target: Address;
      readonly peerIdentity: string;
      /** Plaintext bytes sent to the peer. */
      readonly bytesSent: number;
      /** Plaintext bytes received from the peer. */
      readonly bytesReceived: number;
      readonly durationMs: number;
      /** Set when the connection ended on an error rather than by both sides closing. */
      readonly error?: string;
    });

/** Options of {@link OutboundProxy}. */
export interface OutboundOptions {
  /** One loopback listener per route. */
  readonly routes: readonly Route[];
  /** The HTTP/1.1 forward-proxy listener (4140), routing each request through `resolver`. */
  readonly http?: { readonly listen: Address; readonly resolver: DestinationResolver };
  /** The workload certificate in force now, or undefined before the first one. */
  readonly certificate: () => WorkloadCertificate | undefined;
  /** The trust anchors in force now (PEM bundle). */
  readonly anchorsPem: () => string;
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
   * TLS settings (core's meshTlsSettings); default PROXY_TLS. With FIPS_TLS, peers whose
   * certificates are outside the FIPS policy are also refused.
   */
  readonly tls?: MeshTlsSettings;
  /**
   * Carry the HTTP listener's requests to peers that are meshid proxies over one multiplexed
   * HTTP/2 connection per destination (ALPN {@link MESH_H2_ALPN}); default true. Peers that do
   * not select it get HTTP/1.1, pooled, as before.
   */
  readonly meshH2?: boolean;
}

/** The error `checkServerIdentity` returns: it names both identities. */
export class PeerIdentityMismatchError extends Error {
  constructor(
    readonly expected: string,
    readonly actual: string | undefined,
  ) {
    super(
      `server identity ${actual === undefined ? '(none: no DNS SAN first)' : `"${printable(actual)}"`} is not the expected identity "${expected}"`,
    );
    this.name = 'PeerIdentityMismatchError';
  }
}

/** A failed upstream attempt, classified. */
class UpstreamError extends Error {
  constructor(
    readonly reason: OutboundFailureReason,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'UpstreamError';
  }
}

/**
 * OpenSSL's X509_V_ERR_* names as node reports them in `err.code` when the server's chain does
 * not verify. Everything else that fails after TCP connected is a TLS failure.
 */
const VERIFY_CODES = new Set([
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_CRL',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'UNABLE_TO_DECRYPT_CRL_SIGNATURE',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY',
  'CERT_SIGNATURE_FAILURE',
  'CRL_SIGNATURE_FAILURE',
  'CERT_NOT_YET_VALID',
  'CERT_HAS_EXPIRED',
  'CRL_NOT_YET_VALID',
  'CRL_HAS_EXPIRED',
  'ERROR_IN_CERT_NOT_BEFORE_FIELD',
  'ERROR_IN_CERT_NOT_AFTER_FIELD',
  'ERROR_IN_CRL_LAST_UPDATE_FIELD',
  'ERROR_IN_CRL_NEXT_UPDATE_FIELD',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'CERT_CHAIN_TOO_LONG',
  'CERT_REVOKED',
  'INVALID_CA',
  'PATH_LENGTH_EXCEEDED',
  'INVALID_PURPOSE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'HOSTNAME_MISMATCH',
]);

const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
const DEFAULT_GRACE_MS = 10_000;
const DEFAULT_DETECT_TIMEOUT_MS = 1_000;
/** The HTTP/2 connection preface (RFC 9113 §3.4). */
const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/** Whether what an app sent first opens with the HTTP/2 preface. */
function opensWithH2Preface(bytes: Buffer): boolean {
  return (
    bytes.length >= H2_PREFACE.length && bytes.subarray(0, H2_PREFACE.length).equals(H2_PREFACE)
  );
}

/** One app-facing connection and what it is piped to, tracked for graceful close. */
interface Tracked {
  readonly sockets: Set<Duplex>;
  readonly closed: Promise<void>;
}

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
  readonly #contexts: ContextCache;
  readonly #fips: boolean;
  readonly #now: () => number;
  readonly #connectTimeoutMs: number;
  readonly #detectTimeoutMs: number;
  readonly #servers: Server[] = [];
  readonly #tracked = new Set<Tracked>();
  /** Raw socket errors of failed attempts → their classification, for whoever hears them later. */
  readonly #failures = new WeakMap<Error, UpstreamError>();
  #agent: MeshAgent | undefined;
  #closing = false;
  /** One HTTP/2 session per destination whose proxy selected the mesh ALPN. */
  readonly #sessions = new Map<string, Promise<ClientHttp2Session | undefined>>();
  /** HTTP/2 sessions apps opened to the HTTP listener (closed with GOAWAY on shutdown). */
  readonly #appSessions = new Set<ServerHttp2Session>();
  /** Destinations that answered without the mesh ALPN, and since when (re-asked hourly). */
  readonly #http1Peers = new Map<string, number>();
  /** A connection that answered the mesh offer with HTTP/1.1, for the pool's next request. */
  readonly #spare = new Map<string, TLSSocket>();

  /**
   * @throws MeshidError ERR_CONFIG_INVALID when a listen address is not loopback or two
   *   listeners share one address.
   */
  constructor(options: OutboundOptions) {
    this.#contexts = new ContextCache(options.tls);
    this.#fips = options.tls === FIPS_TLS;
    const seen = new Set<string>();
    const listens = [...options.routes.map((r) => r.listen)];
    if (options.http !== undefined) listens.push(options.http.listen);
    for (const a of listens) {
      const key = formatAddress(a);
      // Whoever reaches an outbound listener speaks as this workload: loopback only.
      if (!isLoopback(a.host)) {
        throw new MeshidError('ERR_CONFIG_INVALID', `outbound listener ${key} is not loopback`);
      }
      if (a.port !== 0 && seen.has(key)) {
        throw new MeshidError('ERR_CONFIG_INVALID', `outbound listener ${key} is configured twice`);
      }
      seen.add(key);
    }
    this.#o = options;
    this.#log = options.logger.child({ [LogKey.component]: 'proxy-outbound' });
    this.#now = options.now ?? Date.now;
    this.#connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    this.#detectTimeoutMs = options.protocolDetectTimeoutMs ?? DEFAULT_DETECT_TIMEOUT_MS;
  }

  /**
   * Starts every listener: the routes in order, then the HTTP listener.
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
        server.on('connection', (app: Socket) => {
          this.#onRouteConnection(app, listener, route);
        });
        bound.push(address);
      }
      if (this.#o.http !== undefined) {
        const resolver = this.#o.http.resolver;
        // One port, two protocols: the first bytes say HTTP/2 (prior knowledge, as gRPC
        // clients send) or HTTP/1.1; neither server listens itself.
        const front = createServer({ pauseOnConnect: true });
        const server = createHttpServer({ noDelay: true });
        const h2Server = createHttp2Server();
        const address = await this.#bind(front, this.#o.http.listen);
        const listener = formatAddress(address);
        front.on('connection', (s: Socket) => this.#onHttpConnection(s, server, h2Server));
        h2Server.on('session', (session: ServerHttp2Session) => {
          this.#appSessions.add(session);
          session.once('close', () => this.#appSessions.delete(session));
          session.on('error', (err) =>
            this.#log.debug({ err: err.message }, 'outbound app HTTP/2 session error'),
          );
        });
        h2Server.on('stream', (stream: ServerHttp2Stream, headers: Http2IncomingHeaders) => {
          void this.#forwardStream(stream, headers, listener, resolver);
        });
        h2Server.on('sessionError', () => undefined);
        this.#agent = new MeshAgent((dest) => this.#pooledConnection(listener, dest));
        server.on('connection', (s: Socket) => this.#track([s]));
        server.on('request', (req: IncomingMessage, res: ServerResponse) => {
          void this.#forward(req, res, listener, resolver);
        });
        server.on('connect', (req: IncomingMessage, app: Socket, head: Buffer) => {
          void this.#tunnel(req, app, head, listener, resolver);
        });
        server.on('upgrade', (req: IncomingMessage, app: Socket, head: Buffer) => {
          void this.#upgrade(req, app, head, listener, resolver);
        });
        bound.push(address);
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
    for (const s of this.#appSessions) s.close();
    // Pooled idle upstream connections would otherwise wait out the grace for nothing.
    this.#agent?.destroyIdle();
    for (const p of this.#sessions.values())
      void p.then(
        (s) => s?.close(),
        () => undefined,
      );
    const drained = Promise.all([...this.#tracked].map((t) => t.closed));
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<'expired'>((resolve) => {
      timer = setTimeout(() => resolve('expired'), graceMs);
    });
    const outcome = await Promise.race([drained, expired]);
    clearTimeout(timer);
    if (outcome === 'expired') {
      this.#log.info({ open: this.#tracked.size }, 'outbound grace expired; closing connections');
      for (const t of this.#tracked) for (const s of t.sockets) s.destroy();
      await Promise.all([...this.#tracked].map((t) => t.closed));
    }
    this.#agent?.destroy();
    for (const s of this.#spare.values()) s.destroy();
    for (const p of this.#sessions.values())
      void p.then(
        (s) => s?.destroy(),
        () => undefined,
      );
    this.#sessions.clear();
    await Promise.all(stopped);
  }

  /**
   * Opens one mTLS connection to a destination, or throws an {@link UpstreamError} when it
   * cannot even start (no certificate). Reports the handshake's outcome; the caller reports
   * opened/closed (it knows which byte counts matter).
   */
  #originate(listener: string, dest: Destination, alpn?: readonly string[]): TLSSocket {
    const started = this.#now();
    const base = { listener, target: dest.target, expectedIdentity: dest.identity };
    const fail = (err: UpstreamError): never => {
      this.#emit({
        type: 'handshake',
        ok: false,
        ...base,
        reason: err.reason,
        message: err.message,
      });
      throw err;
    };
    const cert = this.#o.certificate();
    if (cert === undefined) {
      return fail(new UpstreamError('no-certificate', 'no workload certificate yet'));
    }
    let context;
    try {
      context = this.#contexts.get(cert, this.#o.anchorsPem());
    } catch (cause) {
      return fail(
        new UpstreamError(
          'tls-failed',
          `cannot build a TLS context from the certificate and anchors: ${messageOf(cause)}`,
          { cause },
        ),
      );
    }
    const expected = dest.identity;
    const options: ConnectionOptions & { allowHalfOpen: boolean } = {
      host: dest.target.host,
      port: dest.target.port,
      // SNI is the identity the peer must prove: Linkerd's inbound terminates only when SNI
      // names it, and our own inbound may choose a certificate by it.
      servername: expected,
      secureContext: context,
      rejectUnauthorized: true,
      // Node calls this only after the chain verified against the context's anchors. The
      // certificate must name exactly the expected identity as its first DNS SAN: the
      // hostname rules of RFC 6125 (wildcards, CN fallback) do not apply to identities.
      checkServerIdentity: (_host: string, peer: PeerCertificate) => {
        const actual = identityOfCertificate(peer);
        if (actual !== expected) return new PeerIdentityMismatchError(expected, actual);
        const refused = this.#fips ? fipsPeerProblem(peer) : undefined;
        return refused === undefined
          ? undefined
          : new MeshidError('ERR_FIPS_PEER_REFUSED', refused);
      },
      // The app may half-close (send FIN and keep reading); the TLS side must follow suit
      // instead of closing its write side when the server's FIN arrives.
      allowHalfOpen: true,
      ...(alpn !== undefined ? { ALPNProtocols: [...alpn] } : {}),
    };
    const socket = tlsConnect(options);
    // Small frames (HTTP/2 HEADERS, WINDOW_UPDATE, a request head) go out at once: Nagle
    // would hold a second small write until the first is acknowledged.
    socket.setNoDelay(true);
    let tcpConnected = false;
    let settled = false;
    const timer = setTimeout(() => {
      socket.destroy(
        new UpstreamError(
          'timeout',
          `no TLS session with ${formatAddress(dest.target)} within ${this.#connectTimeoutMs} ms`,
        ),
      );
    }, this.#connectTimeoutMs);
    socket.once('connect', () => {
      tcpConnected = true;
    });
    socket.once('secureConnect', () => {
      settled = true;
      clearTimeout(timer);
      const peerIdentity = identityOfCertificate(socket.getPeerCertificate()) ?? expected;
      this.#emit({
        type: 'handshake',
        ok: true,
        ...base,
        peerIdentity,
        durationMs: this.#now() - started,
        algorithms: negotiatedAlgorithms(socket),
      });
    });
    const failed = (err: Error | undefined): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      const classified =
        err === undefined
          ? classify(new Error('connection closed during the TLS handshake'), tcpConnected)
          : classify(err, tcpConnected);
      if (err !== undefined) this.#failures.set(err, classified);
      this.#emit({
        type: 'handshake',
        ok: false,
        ...base,
        reason: classified.reason,
        message: classified.message,
      });
      this.#log.info(
        {
          [LogKey.reason]: classified.reason,
          [LogKey.address]: formatAddress(dest.target),
          [LogKey.identity]: expected,
          err: classified.message,
        },
        'outbound connection refused',
      );
    };
    // Registered first, so the caller's own 'error' listeners find the error classified.
    socket.on('error', failed);
    // A close without an error before the handshake finished is a failure too.
    socket.once('close', () => failed(undefined));
    return socket;
  }

  /** The classification of an error an upstream socket emitted, when it failed its handshake. */
  #failureOf(err: Error): UpstreamError | undefined {
    return err instanceof UpstreamError ? err : this.#failures.get(err);
  }

  /** The status, reason and sentence for an upstream that failed before the request went out. */
  #connectFailure(err: unknown): [status: number, reason: OutboundFailureReason, message: string] {
    const failure = err instanceof Error ? this.#failureOf(err) : undefined;
    const reason = failure?.reason ?? 'connect-failed';
    return [statusOf(reason), reason, failure?.message ?? messageOf(err)];
  }

  /** Reports a connection that finished its handshake: opened now, closed when both ends are. */
  #reportEstablished(
    listener: string,
    dest: Destination,
    socket: TLSSocket,
    counts: () => { sent: number; received: number },
    others: readonly Duplex[] = [],
  ): void {
    const peerIdentity = identityOfCertificate(socket.getPeerCertificate()) ?? dest.identity;
    const opened = this.#now();
    this.#emit({
      type: 'opened',
      listener,
      target: dest.target,
      expectedIdentity: dest.identity,
      peerIdentity,
    });
    let error: string | undefined;
    const noteError = (err: Error): void => {
      error ??= messageOf(err);
    };
    socket.on('error', noteError);
    for (const o of others) o.on('error', noteError);
    void Promise.all([socket, ...others].map(closedOf)).then(() => {
      const { sent, received } = counts();
      this.#emit({
        type: 'closed',
        listener,
        target: dest.target,
        expectedIdentity: dest.identity,
        peerIdentity,
        bytesSent: sent,
        bytesReceived: received,
        durationMs: this.#now() - opened,
        ...(error !== undefined ? { error } : {}),
      });
    });
  }

  /** A new connection for the HTTP listener's pool, reported like a route connection. */
  #pooledConnection(listener: string, dest: Destination): TLSSocket {
    const key = destinationKey(dest);
    const spare = this.#spare.get(key);
    if (spare !== undefined && !spare.destroyed) {
      this.#spare.delete(key);
      return spare;
    }
    const socket = this.#originate(listener, dest);
    socket.once('secureConnect', () => {
      this.#reportEstablished(listener, dest, socket, () => ({
        sent: socket.bytesWritten,
        received: socket.bytesRead,
      }));
    });
    return socket;
  }

  /** Keeps sockets under graceful close; returns the record. */
  #track(sockets: Duplex[]): Tracked {
    const set = new Set(sockets);
    const t: Tracked = {
      sockets: set,
      closed: Promise.all(sockets.map(closedOf)).then(() => {
        this.#tracked.delete(t);
      }),
    };
    this.#tracked.add(t);
    return t;
  }

  #onRouteConnection(app: Socket, listener: string, route: Route): void {
    const tracked = this.#track([app]);
    app.setNoDelay(true);
    app.on('error', (err) => {
      this.#log.debug({ err: messageOf(err), listener }, 'outbound app connection error');
    });
    if (this.#closing) {
      app.destroy();
      return;
    }
    void this.#sniff(app).then((early) => {
      if (app.destroyed) return;
      this.#carry(app, early, listener, route, tracked);
    });
  }

  /**
   * Reads what the app sends first, just enough to tell whether it opens with the HTTP/2
   * preface: a TLS server that speaks HTTP/2 needs ALPN `h2` offered in the ClientHello,
   * before any byte has been carried. Anything else is carried without ALPN, which TLS servers
   * take as HTTP/1.1 or raw bytes. A client-first protocol decides this at once; only a
   * server-first one (it sends nothing until greeted) waits out `protocolDetectTimeoutMs`.
   */
  #sniff(app: Socket): Promise<{ bytes: Buffer; ended: boolean }> {
    return new Promise((resolve) => {
      const chunks: Buffer[] = [];
      let length = 0;
      const done = (ended: boolean): void => {
        clearTimeout(timer);
        app.off('data', onData);
        app.off('end', onEnd);
        app.off('close', onEnd);
        app.pause();
        resolve({ bytes: Buffer.concat(chunks, length), ended });
      };
      const onData = (chunk: Buffer): void => {
        chunks.push(chunk);
        length += chunk.length;
        const seen = Buffer.concat(chunks, length);
        const n = Math.min(seen.length, H2_PREFACE.length);
        if (n === H2_PREFACE.length || !seen.subarray(0, n).equals(H2_PREFACE.subarray(0, n))) {
          done(false);
        }
      };
      const onEnd = (): void => done(true);
      const timer = setTimeout(() => done(false), this.#detectTimeoutMs);
      app.on('data', onData);
      app.once('end', onEnd);
      app.once('close', onEnd);
      // pauseOnConnect left the socket explicitly paused, so a 'data' listener alone does not
      // start the flow.
      app.resume();
    });
  }

  /**
   * Opens the upstream for a route connection and splices the two once it is verified. Nothing
   * of the app's goes upstream before the handshake has finished, so an attempt that failed in
   * TCP or TLS (a reset, a peer closing mid-handshake) is tried again, up to
   * {@link ROUTE_CONNECT_ATTEMPTS} in all, as Linkerd retries a failed connect. When every
   * attempt failed, an app that sent an HTTP/1 request gets the proxy's own answer (502, or 503
   * without a certificate, 504 on a timeout) with `l5d-proxy-error` naming the cause; any other
   * app gets a reset, which cannot pass for an empty answer as a clean FIN could.
   */
  #carry(
    app: Socket,
    early: { bytes: Buffer; ended: boolean },
    listener: string,
    route: Route,
    tracked: Tracked,
  ): void {
    const dest: Destination = { target: route.target, identity: route.identity };
    const h2 = opensWithH2Preface(early.bytes);
    let established = false;
    let up: TLSSocket | undefined;
    // The app gave up before the handshake finished: nothing to carry.
    app.once('close', () => {
      if (!established) up?.destroy(cancelled());
    });
    const giveUp = (failure: UpstreamError): void => {
      if (app.destroyed) return;
      if (detectProtocol(early.bytes).protocol !== 'http1') {
        app.resetAndDestroy();
        return;
      }
      app.on('finish', () => app.destroy());
      app.end(rawProxyError(statusOf(failure.reason), failure.reason, `${failure.message}\n`));
    };
    const attempt = (n: number): void => {
      let socket: TLSSocket;
      try {
        socket = this.#originate(listener, dest, h2 ? ['h2'] : undefined);
      } catch (err) {
        // The event is out (no certificate, or no TLS context from it): no retry helps.
        giveUp(this.#failureOf(err as Error) ?? new UpstreamError('tls-failed', messageOf(err)));
        return;
      }
      up = socket;
      tracked.sockets.add(socket);
      let failedOnce = false;
      const failed = (err: Error | undefined): void => {
        if (established || failedOnce) return;
        failedOnce = true;
        tracked.sockets.delete(socket);
        socket.destroy();
        const failure =
          (err === undefined ? undefined : this.#failureOf(err)) ??
          new UpstreamError('tls-failed', 'connection closed during the TLS handshake');
        if (app.destroyed || this.#closing) {
          if (!app.destroyed) app.resetAndDestroy();
          return;
        }
        if (n < ROUTE_CONNECT_ATTEMPTS && RETRIED.has(failure.reason)) {
          this.#log.debug(
            { [LogKey.reason]: failure.reason, attempt: n, err: failure.message },
            'outbound connect failed before anything was sent; trying again',
          );
          attempt(n + 1);
          return;
        }
        giveUp(failure);
      };
      socket.on('error', failed);
      socket.once('close', () => failed(undefined));
      socket.once('secureConnect', () => {
        established = true;
        this.#reportEstablished(
          listener,
          dest,
          socket,
          () => ({ sent: app.bytesRead, received: app.bytesWritten }),
          [app],
        );
        if (early.bytes.length > 0) socket.write(early.bytes);
        splice(app, socket, early.ended);
      });
    };
    attempt(1);
  }

  /** Forwards one HTTP/1.1 request to its destination over a pooled mTLS connection. */
  async #forward(
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
    const dest = await this.#destinationFor(
      req.headers['l5d-require-id'],
      target.authority,
      listener,
      resolver,
      (status, reason, message) => proxyError(res, status, reason, message),
    );
    if (dest === undefined) return;
    if (this.#o.meshH2 !== false && !this.#isHttp1Peer(dest)) {
      let session: ClientHttp2Session | undefined;
      try {
        session = await this.#meshSession(listener, dest);
      } catch (err) {
        proxyError(res, ...this.#connectFailure(err));
        return;
      }
      if (session !== undefined) {
        this.#forwardH2(req, res, session, target);
        return;
      }
    }
    const upstream: ClientRequest = httpRequest({
      agent: this.#agent!,
      host: dest.target.host,
      port: dest.target.port,
      method: req.method ?? 'GET',
      path: target.path,
      headers: forwardHeaders(req.headers),
      // Read by MeshAgent: the identity is part of the pool key and of the TLS check.
      ...({ meshDestination: dest } satisfies MeshRequestExtras),
    });
    upstream.on('response', (up: IncomingMessage) => {
      res.writeHead(up.statusCode ?? 502, up.statusMessage, responseHeaders(up.headers));
      up.pipe(res);
      up.on('error', () => res.destroy());
    });
    upstream.on('error', (err: Error) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      proxyError(res, ...this.#connectFailure(err));
    });
    req.pipe(upstream);
    // The app hung up mid-request: abandon the upstream exchange.
    res.on('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
  }

  /** A connection to the HTTP listener, handed to the HTTP/1 or the HTTP/2 server by its first bytes. */
  #onHttpConnection(
    app: Socket,
    http1: ReturnType<typeof createHttpServer>,
    http2: ReturnType<typeof createHttp2Server>,
  ): void {
    app.setNoDelay(true);
    app.on('error', (err) => this.#log.debug({ err: messageOf(err) }, 'outbound app error'));
    if (this.#closing) {
      app.destroy();
      return;
    }
    void this.#sniff(app).then(({ bytes, ended }) => {
      if (app.destroyed) return;
      if (ended) {
        // Nothing can be put back once the client has ended, and a client that half-closes
        // before its first bytes told HTTP/1.1 from HTTP/2 has sent no request to serve.
        app.destroy();
        return;
      }
      if (bytes.length > 0) app.unshift(bytes);
      if (opensWithH2Preface(bytes)) {
        this.#track([app]);
        // node's HTTP/2 server reads the socket itself (the put-back bytes first).
        http2.emit('connection', app);
        return;
      }
      http1.emit('connection', app);
      app.resume();
    });
  }

  /**
   * One HTTP/2 stream from the app (h2c prior knowledge, e.g. grpc-js) on the HTTP listener:
   * routed by its :authority and carried as a stream on the HTTP/2 connection to the peer
   * proxy. A peer that is not a meshid proxy (it chose HTTP/1.1) gets no HTTP/2: the answer
   * says so.
   */
  async #forwardStream(
    stream: ServerHttp2Stream,
    headers: Http2IncomingHeaders,
    listener: string,
    resolver: DestinationResolver,
  ): Promise<void> {
    stream.on('error', (err) =>
      this.#log.debug({ err: err.message }, 'outbound app h2 stream error'),
    );
    const answer = (status: number, reason: string, message: string): number => {
      if (stream.closed || stream.headersSent) return 0;
      stream.respond({
        ':status': status,
        'content-type': 'text/plain; charset=utf-8',
        'l5d-proxy-error': reason,
      });
      stream.end(`${message}\n`);
      return status;
    };
    if (headers[':method'] === 'CONNECT') {
      answer(
        405,
        'connect-over-http2',
        'CONNECT over HTTP/2 is not supported; use HTTP/1.1 CONNECT',
      );
      return;
    }
    const authority = headers[':authority'] ?? headers['host'];
    if (typeof authority !== 'string' || authority.length === 0) {
      answer(400, 'bad-request', 'request has no usable authority (:authority)');
      return;
    }
    const dest = await this.#destinationFor(
      headers['l5d-require-id'],
      authority,
      listener,
      resolver,
      answer,
    );
    if (dest === undefined) return;
    let session: ClientHttp2Session | undefined;
    if (this.#o.meshH2 !== false && !this.#isHttp1Peer(dest)) {
      try {
        session = await this.#meshSession(listener, dest);
      } catch (err) {
        answer(...this.#connectFailure(err));
        return;
      }
    }
    if (session === undefined) {
      answer(
        502,
        'peer-not-http2',
        `the proxy at ${formatAddress(dest.target)} does not take HTTP/2 from other proxies (it is not a meshid proxy): send HTTP/1.1 to this listener, or use a route listener`,
      );
      return;
    }
    if (stream.closed) return;
    const out = forwardableHttp2Headers(headers, (n) => n !== ':scheme');
    delete out['l5d-require-id'];
    out[':scheme'] = 'http';
    relayH2Stream(stream, out, session, {
      timeoutMs: 0,
      failed: (cause) => answer(502, 'peer-failed', peerStreamFailure(cause)),
      onStatus: () => undefined,
      logger: this.#log,
    });
  }

  #isHttp1Peer(dest: Destination): boolean {
    const since = this.#http1Peers.get(destinationKey(dest));
    if (since === undefined) return false;
    if (this.#now() - since < HTTP1_PEER_RECHECK_MS) return true;
    this.#http1Peers.delete(destinationKey(dest));
    return false;
  }

  /**
   * The HTTP/2 session to a destination's proxy, opened on first use with ALPN offering the
   * mesh protocol and HTTP/1.1. Resolves undefined when the peer chose HTTP/1.1 (it is not a
   * meshid proxy); that handshake is not reused, and the peer is remembered as HTTP/1.1.
   */
  #meshSession(listener: string, dest: Destination): Promise<ClientHttp2Session | undefined> {
    const key = destinationKey(dest);
    const current = this.#sessions.get(key);
    if (current !== undefined) return current;
    const opening = new Promise<ClientHttp2Session | undefined>((resolve, reject) => {
      const socket = this.#originate(listener, dest, [MESH_H2_ALPN, 'http/1.1']);
      const forget = (): void => {
        if (this.#sessions.get(key) === opening) this.#sessions.delete(key);
      };
      socket.once('error', (err) => {
        forget();
        reject(err);
      });
      socket.once('secureConnect', () => {
        this.#reportEstablished(listener, dest, socket, () => ({
          sent: socket.bytesWritten,
          received: socket.bytesRead,
        }));
        if (socket.alpnProtocol !== MESH_H2_ALPN) {
          // Not a meshid proxy: HTTP/1.1 from now on, starting with this connection.
          forget();
          this.#http1Peers.set(key, this.#now());
          this.#spare.get(key)?.destroy();
          this.#spare.set(key, socket);
          socket.once('close', () => {
            if (this.#spare.get(key) === socket) this.#spare.delete(key);
          });
          resolve(undefined);
          return;
        }
        const session = http2Connect(`http://${formatAddress(dest.target)}`, {
          createConnection: () => socket,
        });
        session.on('error', (err) =>
          this.#log.debug({ err: err.message }, 'outbound mesh HTTP/2 session error'),
        );
        session.once('close', forget);
        session.once('goaway', forget);
        // An idle session is closed as the HTTP/1.1 pool's idle sockets are.
        session.setTimeout(60_000, () => session.close());
        resolve(session);
      });
    });
    // The rejection is handled by the caller; this only keeps it from being reported twice.
    opening.catch(() => undefined);
    this.#sessions.set(key, opening);
    return opening;
  }

  /** One HTTP/1.1 request from the app carried as an HTTP/2 stream to the peer proxy. */
  #forwardH2(
    req: IncomingMessage,
    res: ServerResponse,
    session: ClientHttp2Session,
    target: { authority: string; path: string },
  ): void {
    const headers: Record<string, string | string[] | number> = {};
    for (const [k, v] of Object.entries(forwardHeaders(req.headers))) {
      if (v !== undefined && k !== 'host') headers[k] = typeof v === 'number' ? String(v) : v;
    }
    headers[':method'] = req.method ?? 'GET';
    headers[':path'] = target.path;
    headers[':scheme'] = 'http';
    headers[':authority'] = target.authority;
    const hasBody =
      req.headers['transfer-encoding'] !== undefined ||
      (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0');
    let stream;
    try {
      stream = session.request(headers, { endStream: !hasBody });
    } catch (err) {
      proxyError(res, 502, 'connect-failed', `HTTP/2 to the peer proxy failed: ${messageOf(err)}`);
      return;
    }
    const up = stream;
    if (hasBody) req.pipe(up);
    else req.resume();
    up.on('response', (h: Http2IncomingHeaders) => {
      const status = Number(h[':status'] ?? 502);
      if (status < 200) return;
      const out: OutgoingHttpHeaders = {};
      for (const [k, v] of Object.entries(h)) if (!k.startsWith(':') && v !== undefined) out[k] = v;
      res.writeHead(status, out);
      up.pipe(res);
    });
    up.on('error', (err) => {
      if (res.headersSent) res.destroy();
      else proxyError(res, 502, 'peer-failed', peerStreamFailure(err));
    });
    up.on('close', () => {
      if (!res.headersSent && up.rstCode !== h2.NGHTTP2_NO_ERROR) {
        proxyError(res, 502, 'peer-failed', peerStreamFailure({ rstCode: up.rstCode }));
      }
    });
    // Only an exchange the app gave up on is cancelled: a RST_STREAM after a complete answer
    // raced node's HTTP/2 server on the peer, which then failed the whole session with GOAWAY
    // INTERNAL_ERROR under load (every stream on it answered 502).
    res.on('close', () => {
      if (!res.writableFinished && !up.closed) up.close(h2.NGHTTP2_CANCEL);
    });
  }

  /**
   * `Connection: Upgrade` (WebSocket) on the HTTP listener: carried over an HTTP/1.1 mTLS
   * connection of its own (HTTP/2 between proxies has no upgrade). An h2c upgrade is ignored
   * and the request served as any other.
   */
  async #upgrade(
    req: IncomingMessage,
    app: Socket,
    head: Buffer,
    listener: string,
    resolver: DestinationResolver,
  ): Promise<void> {
    this.#track([app]);
    app.on('error', () => undefined);
    if (/(^|,)\s*h2c/i.test(String(req.headers.upgrade ?? ''))) {
      const res = new HttpServerResponse(req);
      res.assignSocket(app);
      res.shouldKeepAlive = false;
      res.once('finish', () => app.end());
      delete req.headers.upgrade;
      await this.#forward(req, res, listener, resolver);
      return;
    }
    const refuse: Refuse = (status, reason, message) =>
      app.end(rawProxyError(status, reason, `${message}\n`));
    const target = requestTarget(req);
    if (target === undefined) {
      refuse(400, 'bad-request', 'request has no usable authority (Host header or absolute URI)');
      return;
    }
    const dest = await this.#destinationFor(
      req.headers['l5d-require-id'],
      target.authority,
      listener,
      resolver,
      refuse,
    );
    if (dest === undefined) return;
    let up: TLSSocket;
    try {
      up = this.#originate(listener, dest);
    } catch (err) {
      const reason = this.#failureOf(err as Error)?.reason ?? 'tls-failed';
      refuse(statusOf(reason), reason, messageOf(err));
      return;
    }
    const d = dest;
    up.once('secureConnect', () =>
      this.#reportEstablished(listener, d, up, () => ({
        sent: up.bytesWritten,
        received: up.bytesRead,
      })),
    );
    req.url = target.path;
    forwardUpgrade({
      client: app,
      clientRest: head,
      requestHead: upgradeRequestHead(req, undefined, undefined),
      upstream: up,
      where: `the peer proxy at ${formatAddress(dest.target)}`,
      errorHeader: 'l5d-proxy-error',
      logger: this.#log,
    });
  }

  /** CONNECT host:port: an opaque tunnel to the destination, for protocols that are not HTTP/1. */
  async #tunnel(
    req: IncomingMessage,
    app: Socket,
    head: Buffer,
    listener: string,
    resolver: DestinationResolver,
  ): Promise<void> {
    const tracked = this.#track([app]);
    app.on('error', () => undefined);
    const fail: Refuse = (status, reason, message) => {
      app.end(rawProxyError(status, reason, ''));
      this.#log.debug({ [LogKey.reason]: reason, err: message }, 'outbound CONNECT refused');
    };
    const authority = req.url ?? '';
    const dest = await this.#destinationFor(
      req.headers['l5d-require-id'],
      authority,
      listener,
      resolver,
      fail,
    );
    if (dest === undefined) return;
    let up: TLSSocket;
    try {
      up = this.#originate(listener, dest);
    } catch (err) {
      const reason = this.#failureOf(err as Error)?.reason ?? 'tls-failed';
      fail(statusOf(reason), reason, messageOf(err));
      return;
    }
    tracked.sockets.add(up);
    let established = false;
    app.once('close', () => {
      if (!established) up.destroy(cancelled());
    });
    up.on('error', (err: Error) => {
      if (established) return;
      const reason = this.#failureOf(err)?.reason ?? 'tls-failed';
      fail(statusOf(reason), reason, messageOf(err));
    });
    const d = dest;
    up.once('secureConnect', () => {
      established = true;
      const sentBefore = app.bytesWritten;
      app.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) up.write(head);
      this.#reportEstablished(
        listener,
        d,
        up,
        () => ({
          sent: app.bytesRead,
          received: app.bytesWritten - sentBefore,
        }),
        [app],
      );
      splice(app, up);
    });
  }

  /**
   * The destination of a request on the HTTP listener, or the sentence for its 502 no-route
   * (reported as a failed handshake).
   */
  async #destinationFor(
    required: unknown,
    authority: string,
    listener: string,
    resolver: DestinationResolver,
    refuse: Refuse,
  ): Promise<Destination | undefined> {
    let dest: Destination | undefined;
    try {
      dest = await this.#resolveFor(required, authority, resolver);
    } catch (err) {
      refuse(502, 'no-route', `destination lookup failed: ${messageOf(err)}`);
      return undefined;
    }
    if (dest !== undefined) return dest;
    this.#emit({
      type: 'handshake',
      ok: false,
      listener,
      reason: 'no-route',
      message: `no destination for ${printable(authority)}`,
    });
    refuse(502, 'no-route', `no meshed destination for ${printable(authority)}`);
    return undefined;
  }

  /** Resolves an authority; `l5d-require-id` (Linkerd's header) overrides the expected identity. */
  async #resolveFor(
    required: unknown,
    authority: string,
    resolver: DestinationResolver,
  ): Promise<Destination | undefined> {
    const dest = await resolver.resolve(authority);
    if (dest === undefined || typeof required !== 'string' || required.length === 0) return dest;
    return { target: dest.target, identity: required };
  }

  #bind(server: Server, address: Address): Promise<Address> {
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: address.host, port: address.port }, () => {
        server.off('error', reject);
        this.#servers.push(server);
        const a = server.address() as AddressInfo;
        resolve({ host: address.host, port: a.port });
      });
    });
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

/** Attempts at a route connection's upstream (TCP + TLS) before the app is told it failed. */
const ROUTE_CONNECT_ATTEMPTS = 3;
/**
 * Failures worth another attempt: transient ones in TCP or TLS. A timeout has already waited
 * long; an untrusted or wrong peer, or a missing certificate, would fail the same way again.
 */
const RETRIED: ReadonlySet<OutboundFailureReason> = new Set(['connect-failed', 'tls-failed']);

/** How long a peer that chose HTTP/1.1 is taken at its word before the mesh ALPN is offered again. */
const HTTP1_PEER_RECHECK_MS = 3_600_000;

function destinationKey(dest: Destination): string {
  return `${formatAddress(dest.target)}@${dest.identity}`;
}

/** Extra request options MeshAgent reads. */
interface MeshRequestExtras {
  readonly meshDestination: Destination;
}

/**
 * An HTTPS agent whose connections are the proxy's mTLS connections: pooled per target and
 * expected identity, each new one made by {@link OutboundProxy.originate} (so with the current
 * certificate and anchors) and reported like a route connection.
 */
class MeshAgent extends HttpAgent {
  readonly #connect: (dest: Destination) => TLSSocket;

  /** @param connect opens a new mTLS connection (throws when it cannot start). */
  constructor(connect: (dest: Destination) => TLSSocket) {
    // Idle pooled connections close after a minute, as the app's own would.
    super({ keepAlive: true, maxFreeSockets: 16, timeout: 60_000 });
    this.#connect = connect;
  }

  /** The pool key: target and expected identity, so one pool never serves two identities. */
  override getName(options?: ClientRequestArgs): string {
    const dest = destinationOf(options);
    return dest === undefined
      ? super.getName(options)
      : `${formatAddress(dest.target)}@${dest.identity}`;
  }

  override createConnection(
    options: ClientRequestArgs,
    callback?: (err: Error | null, stream: Duplex) => void,
  ): Duplex | null | undefined {
    const dest = destinationOf(options);
    if (dest === undefined) {
      // Every request of the HTTP listener names its destination; this is a bug if reached.
      throw new MeshidError('ERR_INTERNAL', 'outbound request without a destination');
    }
    // Synchronous success or failure both go through the callback: node's agent then hands
    // the socket to the request, or the error to its 'error' event.
    let socket: TLSSocket;
    try {
      socket = this.#connect(dest);
    } catch (err) {
      callback?.(err instanceof Error ? err : new Error(String(err)), undefined as never);
      return undefined;
    }
    callback?.(null, socket);
    return undefined;
  }

  /** Closes pooled connections that carry no request. */
  destroyIdle(): void {
    for (const list of Object.values(this.freeSockets)) for (const s of list ?? []) s.destroy();
  }
}

function destinationOf(options: ClientRequestArgs | undefined): Destination | undefined {
  return (options as Partial<MeshRequestExtras> | undefined)?.meshDestination;
}

/** Pipes both ways; a half-close passes through; an error on one side destroys the other. */
function splice(app: Socket, up: TLSSocket, appEnded = false): void {
  // An app that already half-closed (while its first bytes were read) gets its FIN passed on.
  if (appEnded) up.end();
  else app.pipe(up);
  up.pipe(app);
  app.on('error', () => up.destroy());
  up.on('error', () => app.destroy());
  // When one side is fully closed, the other can neither send nor receive any more: close it
  // once what it still has to write has been flushed.
  const follow = (closed: Duplex, other: Duplex): void => {
    closed.once('close', () => {
      if (other.destroyed) return;
      if (other.writableFinished) other.destroy();
      else other.once('finish', () => other.destroy());
    });
  };
  follow(app, up);
  follow(up, app);
}

function closedOf(s: Duplex): Promise<void> {
  if (s.closed) return Promise.resolve();
  return new Promise((resolve) => s.once('close', () => resolve()));
}

function classify(err: Error, tcpConnected: boolean): UpstreamError {
  if (err instanceof UpstreamError) return err;
  if (err instanceof PeerIdentityMismatchError) {
    return new UpstreamError('identity-mismatch', err.message, { cause: err });
  }
  const code = (err as NodeJS.ErrnoException).code;
  if (code !== undefined && VERIFY_CODES.has(code)) {
    return new UpstreamError('untrusted', `server certificate not trusted: ${err.message}`, {
      cause: err,
    });
  }
  if (!tcpConnected) {
    return new UpstreamError('connect-failed', `connect failed: ${err.message}`, { cause: err });
  }
  return new UpstreamError('tls-failed', `TLS handshake failed: ${err.message}`, { cause: err });
}

function cancelled(): UpstreamError {
  return new UpstreamError(
    'cancelled',
    'the app closed its connection before the TLS handshake finished',
  );
}

/** Why an HTTP/2 stream to the peer proxy gave no answer, for the 502 body. */
function peerStreamFailure(cause: H2RelayFailure): string {
  if (cause === 'timeout') return 'the peer proxy did not answer in time';
  if ('rstCode' in cause)
    return `the peer proxy reset the stream (HTTP/2 error code ${cause.rstCode})`;
  return `HTTP/2 stream to the peer proxy failed: ${cause.message}`;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The status the HTTP listener answers a failure with (as Linkerd: 503 not ready, 504 slow). */
function statusOf(reason: OutboundFailureReason): number {
  return reason === 'no-certificate' ? 503 : reason === 'timeout' ? 504 : 502;
}

/** How a request path answers a refusal: the status, the `l5d-proxy-error` reason, a message. */
type Refuse = (status: number, reason: string, message: string) => void;

/**
 * A refusal written straight to a client socket (upgrades and CONNECT, which have no response
 * object), closing the connection; `body` empty sends no content type.
 */
function rawProxyError(status: number, reason: string, body: string): string {
  const type = body.length > 0 ? 'content-type: text/plain; charset=utf-8\r\n' : '';
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\n${type}l5d-proxy-error: ${reason}\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`;
}

/**
 * An error the proxy itself answers, marked with `l5d-proxy-error` as Linkerd's proxy does so
 * that the app (and a human) can tell it from the destination's own errors.
 */
function proxyError(res: ServerResponse, status: number, reason: string, message: string): void {
  res.writeHead(status, {
    'content-type': 'text/plain; charset=utf-8',
    'l5d-proxy-error': reason,
  });
  res.end(`${message}\n`);
}

/** The authority to route by and the origin-form path to send upstream. */
function requestTarget(req: IncomingMessage): { authority: string; path: string } | undefined {
  const url = req.url ?? '/';
  if (url.startsWith('/') || url === '*') {
    const host = req.headers.host;
    return host === undefined || host.length === 0 ? undefined : { authority: host, path: url };
  }
  // Absolute form, as clients configured with an HTTP proxy send it.
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return undefined;
  }
  if (parsed.protocol !== 'http:' || parsed.host.length === 0) return undefined;
  return { authority: parsed.host, path: `${parsed.pathname}${parsed.search}` };
}

/** Headers that describe one hop, not the message (RFC 9110 §7.6.1); never forwarded. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authorization',
  'proxy-authenticate',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'l5d-require-id',
]);

function withoutHopByHop(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const named = new Set(HOP_BY_HOP);
  const connection = headers.connection;
  if (typeof connection === 'string') {
    for (const t of connection.split(',')) named.add(t.trim().toLowerCase());
  }
  const out: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(headers)) {
    if (v !== undefined && !named.has(k)) out[k] = v;
  }
  return out;
}

function forwardHeaders(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  return withoutHopByHop(headers);
}

function responseHeaders(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  return withoutHopByHop(headers);
}
