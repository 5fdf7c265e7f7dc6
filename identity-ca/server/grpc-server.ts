/**
 * The Certify endpoint: unary gRPC over HTTP/2 over TLS 1.3, on node's own http2 and tls.
 *
 * Linkerd's proxies dial the CA with TLS 1.3 and no ALPN, then speak HTTP/2 by prior knowledge.
 * Node's secure HTTP/2 server refuses a connection that did not negotiate `h2`. So meshid
 * terminates TLS itself with a `tls.Server` that offers `h2` but also accepts clients that offer
 * no ALPN at all, and hands each decrypted connection to a cleartext HTTP/2 server. Ordinary gRPC
 * clients that negotiate `h2` take the same path.
 *
 * The CA serves exactly one unary method, so the gRPC protocol is implemented here rather than
 * through a general gRPC server: per call that saves about a third of the framework's cost
 * (measured with an echo handler, 123 µs against 78 µs per call on one core), and the part that
 * is implemented is small and tested against grpc-js's client and a Linkerd-like raw client:
 * POST with `application/grpc`, identity encoding only, exactly one length-prefixed message of
 * bounded size, `grpc-timeout`, trailers-only responses for errors, UNIMPLEMENTED for any other
 * method.
 */
import { createServer as createNetServer } from 'node:net';
import type { Server as NetServer } from 'node:net';
import { createServer as createH2Server, constants as h2 } from 'node:http2';
import type {
  Http2Server,
  IncomingHttpHeaders,
  ServerHttp2Session,
  ServerHttp2Stream,
} from 'node:http2';
import { createServer as createTlsServer } from 'node:tls';
import type { Admission } from './admission.js';
import type { CallState } from './call-state.js';
import { CertifyConnections } from './connections.js';
import type { ConnectionObserver } from './connections.js';
import type { HandshakeGateSettings } from './handshake-gate.js';
import type { SecureContextOptions, Server as TlsServer, TLSSocket } from 'node:tls';
import type {
  Address,
  CertifyRequest,
  CertifyResponse,
  Clock,
  Logger,
  PeerBudget,
} from '../../core/index.js';
import type { MeshTlsSettings } from '../../core/index.js';
import {
  CERTIFY_PATH,
  ERROR_CODES,
  FIPS_TLS,
  MESH_TLS,
  GrpcStatus,
  MeshidError,
  NO_RESUMPTION,
  RETRY_AFTER_METADATA,
  RetryLaterError,
  decodeCertifyRequest,
  encodeCertifyResponse,
  encodeGrpcMessage,
  formatAddress,
  frameGrpcMessage,
  listenOn,
  negotiatedAlgorithms,
  unframeGrpcMessage,
} from '../../core/index.js';

/**
 * Turns a request into a response, or throws a MeshidError naming the refusal. `call` tells
 * whether anyone still waits for the answer, so that no work is done for a caller that left.
 */
export type CertifyHandler = (req: CertifyRequest, call?: CallState) => Promise<CertifyResponse>;

export type { CertifyConnectionRefusal, ConnectionObserver } from './connections.js';

/** Told about every call once it has ended, for metrics and logs. */
export type CallObserver = (outcome: {
  readonly status: number;
  readonly durationSeconds: number;
}) => void;

/** The key and certificate chain (PEM) the CA presents. */
export interface ServingCredentials {
  readonly keyPem: string;
  readonly certChainPem: string;
  /**
   * The trust anchors a client certificate is verified against (with admission control: a
   * caller presenting a valid certificate for the identity it asks for is renewing).
   */
  readonly clientCaPem?: string;
}

/**
 * TLS settings of the CA outside FIPS mode: TLS 1.3 only, AEAD suites, modern groups (core's
 * MESH_TLS; FIPS mode uses FIPS_TLS through the `tls` option).
 */
export const CA_TLS_SETTINGS = MESH_TLS;

export interface CertifyServerOptions {
  readonly handler: CertifyHandler;
  readonly logger: Logger;
  /** Largest request message accepted (bytes of protobuf, without the 5-byte gRPC prefix). */
  readonly maxRequestBytes: number;
  readonly credentials: ServingCredentials;
  readonly observe?: CallObserver;
  /** How long a TLS handshake may take before the connection is dropped. */
  readonly handshakeTimeoutMs?: number;
  /**
   * With the gate: how long a new connection may take to send its whole ClientHello before it
   * is reset (it holds no handshake slot meanwhile). Default 3 s.
   */
  readonly helloTimeoutMs?: number;
  /** An HTTP/2 connection with no stream for this long is closed (proxies reconnect). */
  readonly idleTimeoutMs?: number;
  /** TLS settings: core's `meshTlsSettings(fips)`; default {@link CA_TLS_SETTINGS}. */
  readonly tls?: MeshTlsSettings;
  /**
   * Backpressure: every decoded call is admitted (rate limits, bounded queue, first issuance
   * before renewal) before the handler runs. With it the server asks for an optional client
   * certificate, to tell renewals (a valid certificate for the requested identity) apart.
   */
  readonly admission?: Admission;
  /**
   * Bounds the TLS handshakes in progress (see handshake-gate.ts); absent or `maxHandshakes` 0:
   * every connection's handshake starts at once.
   */
  readonly handshakes?: HandshakeGateSettings;
  /**
   * Established connections one client address may hold at once, counted after the handshake
   * (beside the gate's share of handshakes); one beyond is reset and counted as `per-peer`.
   * Absent or 0: no limit.
   */
  readonly maxConnectionsPerPeer?: number;
  readonly observeConnections?: ConnectionObserver;
  /**
   * The clock of call deadlines and handshake waits: monotonic by default (a wall-clock step
   * must not expire every call in flight); tests pass a manual one.
   */
  readonly clock?: Clock;
}

/** performance.now(): milliseconds that only go forward, whatever the wall clock does. */
const monotonicClock: Clock = Object.freeze({ now: () => performance.now() });
/** The identity of a connection's verified client certificate (its first DNS SAN), if any. */
const kPeerIdentity = Symbol('meshid.peerIdentity');
type WithPeer = { [kPeerIdentity]?: string };

/**
 * The reason a call's "caller is gone" signal is aborted with. Made once: `abort()` without a
 * reason makes a new DOMException (with its stack trace) on every call, which was ~4 % of a
 * worker's time under load.
 */
const CALL_ENDED = Object.freeze(new Error('the Certify call has ended'));

/** Streams one connection may have open at once. */
const MAX_CONCURRENT_STREAMS = 256;
/** The longest deadline honoured; a larger grpc-timeout is cut to it. */
const MAX_DEADLINE_MS = 60_000;

/**
 * A running Certify server.
 *
 * @example
 * ```ts
 * const server = new CertifyServer({ handler, logger, maxRequestBytes: 65536, credentials });
 * const bound = await server.listen({ host: '127.0.0.1', port: 0 });
 * ```
 */
export class CertifyServer {
  #opts: CertifyServerOptions;
  readonly #h2: Http2Server;
  readonly #tls: TlsServer;
  /** Accepts TCP connections and hands each to the TLS server when `#connections` lets it. */
  readonly #net: NetServer;
  readonly #connections: CertifyConnections;
  readonly #clock: Clock;
  readonly #log: Logger;

  constructor(opts: CertifyServerOptions) {
    this.#opts = opts;
    this.#log = opts.logger;
    this.#clock = opts.clock ?? monotonicClock;
    this.#h2 = createH2Server({
      settings: { maxConcurrentStreams: MAX_CONCURRENT_STREAMS, maxHeaderListSize: 16 * 1024 },
      maxSessionMemory: 8,
    });
    this.#h2.on('session', (session: ServerHttp2Session) => this.#connections.session(session));
    this.#h2.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) =>
      this.#onStream(stream, headers),
    );
    this.#tls = createTlsServer({
      ...(opts.tls ?? CA_TLS_SETTINGS),
      // No session tickets, as on every mesh listener: a resumed session would carry the old
      // verification of a client certificate (renewing, below). A proxy connects once per renewal.
      ...NO_RESUMPTION,
      ...toSecureContext(opts.credentials),
      ALPNProtocols: ['h2'],
      handshakeTimeout: opts.handshakeTimeoutMs ?? 10_000,
      // Optional: a client without a certificate (every first issuance, Linkerd's proxy) is
      // served the same; one with a valid certificate is marked as renewing.
      requestCert: opts.admission !== undefined,
      rejectUnauthorized: false,
    });
    this.#tls.on('secureConnection', (socket: TLSSocket) => {
      opts.observeConnections?.handshake?.(negotiatedAlgorithms(socket));
      if (!this.#connections.handshaken(socket)) return;
      // `false` is the Linkerd proxy (no ALPN offered); 'h2' an ordinary gRPC client.
      if (socket.alpnProtocol !== false && socket.alpnProtocol !== 'h2') {
        socket.destroy();
        return;
      }
      // Node's HTTP/2 connection listener sends any socket whose `alpnProtocol` is `false` to
      // its HTTP/1 fallback ('unknownProtocol'), even on a cleartext server. A client that
      // offered no ALPN is speaking HTTP/2 by prior knowledge, so record that before handing
      // the connection over; the TLS session itself is not changed.
      if (socket.alpnProtocol === false) socket.alpnProtocol = 'h2';
      if (opts.admission !== undefined && socket.authorized) {
        const san = socket.getPeerCertificate().subjectaltname ?? '';
        const first = /^DNS:([^,]+)/.exec(san);
        if (first !== null) (socket as WithPeer)[kPeerIdentity] = first[1]!;
      }
      socket.setNoDelay(true);
      this.#h2.emit('connection', socket);
    });
    const fips = opts.tls === FIPS_TLS;
    this.#tls.on('tlsClientError', (err, socket) => {
      // In FIPS mode a client that offers only X25519, ChaCha20 or Ed25519 ends here.
      this.#log.debug(
        { err: err.message, remote: socket.remoteAddress },
        fips
          ? 'TLS handshake failed (FIPS mode: TLS 1.3 AES-GCM suites and P-256/P-384 groups only)'
          : 'TLS handshake failed',
      );
    });
    this.#connections = new CertifyConnections({
      ...(opts.handshakes === undefined ? {} : { handshakes: opts.handshakes }),
      ...(opts.helloTimeoutMs === undefined ? {} : { helloTimeoutMs: opts.helloTimeoutMs }),
      ...(opts.maxConnectionsPerPeer === undefined
        ? {}
        : { maxConnectionsPerPeer: opts.maxConnectionsPerPeer }),
      ...(opts.idleTimeoutMs === undefined ? {} : { idleTimeoutMs: opts.idleTimeoutMs }),
      ...(opts.observeConnections === undefined ? {} : { observer: opts.observeConnections }),
      clock: this.#clock,
      logger: this.#log,
      handshake: (socket) => this.#tls.emit('connection', socket),
    });
    this.#net = createNetServer((socket) => this.#connections.accept(socket));
  }

  /** HTTP/2 sessions open now (a session leaves this count when it closes). */
  get openSessions(): number {
    return this.#connections.openSessions;
  }

  /** Handshakes in progress and connections waiting for one now (zeros without the gate). */
  get handshakeLoad(): { handshaking: number; waiting: number } {
    return this.#connections.handshakeLoad;
  }

  /**
   * Established connections per client address, the server's own count (undefined without
   * `maxConnectionsPerPeer`).
   */
  get establishedByPeer(): PeerBudget | undefined {
    return this.#connections.establishedByPeer;
  }

  /** Replaces the serving key and certificate for new connections. */
  setCredentials(credentials: ServingCredentials): void {
    this.#opts = { ...this.#opts, credentials };
    this.#tls.setSecureContext({
      ...(this.#opts.tls ?? CA_TLS_SETTINGS),
      ...NO_RESUMPTION,
      ...toSecureContext(credentials),
    });
  }

  /** Binds and starts accepting; resolves with the bound address (port 0 allowed). */
  async listen(address: Address): Promise<Address> {
    const result = await listenOn(this.#net, address, { logger: this.#log, name: 'certify' });
    this.#connections.start();
    this.#log.debug({ address: formatAddress(result) }, 'TLS listener bound');
    return result;
  }

  /**
   * Stops accepting, tells every connection to go away (GOAWAY) while letting calls in flight
   * finish within `graceMs`, then cuts what is left.
   */
  async close(graceMs = 5000): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#net.close(() => resolve()));
    await this.#connections.close(graceMs);
    // Bounded too: after a flood of reset connections node's count of open connections was seen
    // not to reach zero (issue 20), and a worker must still stop.
    await Promise.race([closed, new Promise<void>((resolve) => setTimeout(resolve, 1000).unref())]);
  }

  #onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    const started = process.hrtime.bigint();
    stream.on('error', (err) => this.#log.debug({ err: err.message }, 'HTTP/2 stream error'));
    let done = false;
    const admission = this.#opts.admission;
    // Who asks, read now: once the caller has given up and its connection is gone, the socket
    // has no address any more (and every such call would share one bucket).
    const peer =
      admission === undefined ? undefined : (stream.session?.socket as TLSSocket & WithPeer);
    const source = peer?.remoteAddress ?? 'unknown';
    const peerIdentity = peer?.[kPeerIdentity];
    // Tells a call waiting for admission that nobody is waiting for its answer any more.
    const gone = admission === undefined ? undefined : new AbortController();
    if (gone !== undefined) stream.once('close', () => gone.abort(CALL_ENDED));
    const finish = (
      status: number,
      details: string,
      response?: Buffer,
      retryAfterMs?: number,
    ): void => {
      if (done) return;
      done = true;
      clearTimeout(deadline);
      gone?.abort(CALL_ENDED);
      this.#opts.observe?.({
        status,
        durationSeconds: Number(process.hrtime.bigint() - started) / 1e9,
      });
      if (response === undefined) sendStatus(stream, status, details, retryAfterMs);
      else sendMessage(stream, response);
    };
    let deadline: NodeJS.Timeout | undefined;

    if (headers[':method'] !== 'POST') {
      respondHttp(stream, 405);
      return;
    }
    const contentType = headers['content-type'] ?? '';
    if (!/^application\/grpc(\+proto)?(;|$)/.test(contentType)) {
      respondHttp(stream, 415);
      return;
    }
    if (headers[':path'] !== CERTIFY_PATH) {
      finish(GrpcStatus.UNIMPLEMENTED, `unknown method ${String(headers[':path'])}`);
      closeAfterAnswer(stream);
      return;
    }
    const encoding = headers['grpc-encoding'];
    if (encoding !== undefined && encoding !== 'identity') {
      finish(GrpcStatus.UNIMPLEMENTED, `message encoding "${String(encoding)}" is not supported`);
      closeAfterAnswer(stream);
      return;
    }
    const timeoutMs = parseGrpcTimeout(headers['grpc-timeout']);
    let deadlineAt = Number.POSITIVE_INFINITY;
    if (timeoutMs !== undefined) {
      const ms = Math.min(timeoutMs, MAX_DEADLINE_MS);
      deadlineAt = this.#clock.now() + ms;
      deadline = setTimeout(() => finish(GrpcStatus.DEADLINE_EXCEEDED, 'deadline exceeded'), ms);
      deadline.unref();
    }
    const clock = this.#clock;
    const call: CallState = {
      abandoned: () =>
        clock.now() >= deadlineAt
          ? 'deadline'
          : done || stream.closed || stream.destroyed
            ? 'gone'
            : undefined,
    };

    const limit = this.#opts.maxRequestBytes + 5;
    const chunks: Buffer[] = [];
    let size = 0;
    stream.on('data', (chunk: Buffer) => {
      if (done) return;
      size += chunk.length;
      if (size > limit) {
        finish(
          GrpcStatus.RESOURCE_EXHAUSTED,
          `Received message larger than max (over ${this.#opts.maxRequestBytes} bytes)`,
        );
        closeAfterAnswer(stream);
        return;
      }
      chunks.push(chunk);
    });
    stream.on('end', () => {
      if (done) return;
      const framed = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
      let message: Buffer;
      try {
        message = unframeGrpcMessage(framed, 'request');
      } catch (err) {
        finish(GrpcStatus.INTERNAL, (err as Error).message);
        return;
      }
      const handler = this.#opts.handler;
      const decide =
        admission === undefined
          ? (req: CertifyRequest): Promise<CertifyResponse> => handler(req, call)
          : async (req: CertifyRequest): Promise<CertifyResponse> => {
              const release = await admission.admit({
                identity: req.identity,
                source,
                renewal: peerIdentity === req.identity,
                signal: gone!.signal,
                abandoned: call.abandoned,
              });
              try {
                return await handler(req, call);
              } finally {
                release();
              }
            };
      Promise.resolve(message)
        .then(decodeCertifyRequest)
        .then(decide)
        .then(
          (res) => finish(GrpcStatus.OK, '', encodeCertifyResponse(res)),
          (err: unknown) => {
            const status = toStatus(err, this.#log);
            finish(status.code, status.details, undefined, status.retryAfterMs);
          },
        );
    });
  }
}

/** `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n); undefined when absent or bad. */
function parseGrpcTimeout(value: string | string[] | undefined): number | undefined {
  if (typeof value !== 'string') return undefined;
  const m = /^(\d{1,8})([HMSmun])$/.exec(value);
  if (m === null) return undefined;
  const n = Number(m[1]);
  const unitMs: Record<string, number> = {
    H: 3_600_000,
    M: 60_000,
    S: 1000,
    m: 1,
    u: 1e-3,
    n: 1e-6,
  };
  return Math.max(1, Math.ceil(n * unitMs[m[2]!]!));
}

/**
 * Ends a stream whose answer was sent before its request was read to the end. Resetting it at
 * once can overtake the answer (the fuzzer saw clients get a bare RST_STREAM for an oversized
 * message instead of RESOURCE_EXHAUSTED), so what the client still sends is read and dropped,
 * and the stream is reset only if it has not ended a moment later.
 */
function closeAfterAnswer(stream: ServerHttp2Stream): void {
  stream.resume();
  const timer = setTimeout(() => {
    if (!stream.closed) stream.close(h2.NGHTTP2_NO_ERROR);
  }, 1000);
  timer.unref();
  stream.once('close', () => clearTimeout(timer));
}

function respondHttp(stream: ServerHttp2Stream, status: number): void {
  if (stream.closed) return;
  stream.respond({ ':status': status }, { endStream: true });
}

function sendMessage(stream: ServerHttp2Stream, message: Buffer): void {
  if (stream.closed || stream.headersSent) return;
  const frame = frameGrpcMessage(message);
  stream.respond(
    { ':status': 200, 'content-type': 'application/grpc', 'grpc-accept-encoding': 'identity' },
    { waitForTrailers: true },
  );
  stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
  stream.end(frame);
}

/** A trailers-only response: status and message in the one HEADERS frame that ends the stream. */
function sendStatus(
  stream: ServerHttp2Stream,
  status: number,
  details: string,
  retryAfterMs?: number,
): void {
  if (stream.closed || stream.headersSent) return;
  stream.respond(
    {
      ':status': 200,
      'content-type': 'application/grpc',
      'grpc-accept-encoding': 'identity',
      'grpc-status': String(status),
      'grpc-message': encodeGrpcMessage(details),
      // The retry hint: meshid's name, and gRFC A6's, which grpc clients' retry policies read.
      ...(retryAfterMs === undefined
        ? {}
        : {
            [RETRY_AFTER_METADATA]: String(retryAfterMs),
            'grpc-retry-pushback-ms': String(retryAfterMs),
          }),
    },
    { endStream: true },
  );
}

function toSecureContext(c: ServingCredentials): SecureContextOptions {
  return {
    key: c.keyPem,
    cert: c.certChainPem,
    ...(c.clientCaPem === undefined ? {} : { ca: c.clientCaPem }),
  };
}

/**
 * Maps an error to a gRPC status at the edge. MeshidErrors carry their own status and message;
 * anything else becomes INTERNAL with the detail in the log only.
 */
function toStatus(
  err: unknown,
  log: Logger,
): { code: number; details: string; retryAfterMs?: number } {
  if (err instanceof RetryLaterError) {
    return {
      code: GrpcStatus[ERROR_CODES[err.code].grpc],
      details: err.message,
      retryAfterMs: err.retryAfterMs,
    };
  }
  if (err instanceof MeshidError) {
    return { code: GrpcStatus[ERROR_CODES[err.code].grpc], details: err.message };
  }
  log.error({ err }, 'Certify failed unexpectedly');
  return { code: GrpcStatus.INTERNAL, details: 'internal error' };
}
