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
import { once } from 'node:events';
import { createServer as createNetServer } from 'node:net';
import type { Server as NetServer, Socket } from 'node:net';
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
import { HandshakeGate } from './handshake-gate.js';
import type { ConnectionRefusal, HandshakeGateSettings } from './handshake-gate.js';
import type { SecureContextOptions, Server as TlsServer, TLSSocket } from 'node:tls';
import type { Address, CertifyRequest, CertifyResponse, Clock, Logger } from '../../core/index.js';
import type { MeshTlsSettings, TlsAlgorithms } from '../../core/index.js';
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
  negotiatedAlgorithms,
  resetSocket,
  unframeGrpcMessage,
} from '../../core/index.js';

/**
 * Turns a request into a response, or throws a MeshidError naming the refusal. `call` tells
 * whether anyone still waits for the answer, so that no work is done for a caller that left.
 */
export type CertifyHandler = (req: CertifyRequest, call?: CallState) => Promise<CertifyResponse>;

/** Told about connections the handshake gate refused and how long admitted ones waited. */
export interface ConnectionObserver {
  refused(why: ConnectionRefusal): void;
  waited(seconds: number): void;
  /** A finished handshake's key-exchange group and cipher suite (core's negotiatedAlgorithms). */
  handshake?(algorithms: TlsAlgorithms): void;
}

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
  readonly observeConnections?: ConnectionObserver;
  /**
   * The clock of call deadlines and handshake waits: monotonic by default (a wall-clock step
   * must not expire every call in flight); tests pass a manual one.
   */
  readonly clock?: Clock;
}

/** performance.now(): milliseconds that only go forward, whatever the wall clock does. */
const monotonicClock: Clock = Object.freeze({ now: () => performance.now() });
/** How often connections that waited too long for a handshake are looked for. */
const SWEEP_MS = 100;

/** The identity of a connection's verified client certificate (its first DNS SAN), if any. */
const kPeerIdentity = Symbol('meshid.peerIdentity');
type WithPeer = { [kPeerIdentity]?: string };

/**
 * The reason a call's "caller is gone" signal is aborted with. Made once: `abort()` without a
 * reason makes a new DOMException (with its stack trace) on every call, which was ~4 % of a
 * worker's time under load.
 */
const CALL_ENDED = Object.freeze(new Error('the Certify call has ended'));

const DEFAULT_HELLO_TIMEOUT_MS = 3000;
/** Connections from one address still sending their ClientHello (each a socket, no TLS state). */
const MAX_AWAITING_HELLO_PER_SOURCE = 256;
/** A TLS record's header and the largest plaintext record (RFC 8446 §5.1). */
const TLS_RECORD_HEADER = 5;
const TLS_MAX_RECORD = 16_384;

/**
 * Reads a connection's first TLS record (the ClientHello) within `timeoutMs`; undefined when it
 * is not a handshake record, is oversized, the connection ends, or time runs out. A ClientHello
 * split over several records is refused: clients send one (a post-quantum key share fits).
 */
function readClientHello(socket: Socket, timeoutMs: number): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let length = 0;
    const finish = (hello: Buffer | undefined): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
      resolve(hello);
    };
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      length += chunk.length;
      if (length < TLS_RECORD_HEADER) return;
      const head = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, length);
      const recordLength = head.readUInt16BE(3);
      if (head[0] !== 0x16 || recordLength > TLS_MAX_RECORD) {
        finish(undefined);
        return;
      }
      if (length >= TLS_RECORD_HEADER + recordLength) finish(Buffer.concat(chunks, length));
    };
    const onEnd = (): void => finish(undefined);
    const timer = setTimeout(() => finish(undefined), timeoutMs);
    timer.unref();
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.once('close', onEnd);
  });
}

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
  /** Accepts TCP connections and hands each to the TLS server when the gate lets it. */
  readonly #net: NetServer;
  readonly #gate: HandshakeGate<Socket> | undefined;
  /** Connections in set-up by remote address and port, to tell the gate a handshake ended. */
  readonly #settingUp = new Map<string, Socket>();
  #sweep: NodeJS.Timeout | undefined;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #sessions = new Set<ServerHttp2Session>();
  /** Connections whose ClientHello has not arrived yet, per source address. */
  readonly #awaitingHello = new Map<string, number>();

  constructor(opts: CertifyServerOptions) {
    this.#opts = opts;
    this.#log = opts.logger;
    this.#clock = opts.clock ?? monotonicClock;
    this.#h2 = createH2Server({
      settings: { maxConcurrentStreams: MAX_CONCURRENT_STREAMS, maxHeaderListSize: 16 * 1024 },
      maxSessionMemory: 8,
    });
    this.#h2.on('session', (session: ServerHttp2Session) => {
      this.#sessions.add(session);
      session.on('close', () => this.#sessions.delete(session));
      session.on('error', (err) => this.#log.debug({ err: err.message }, 'HTTP/2 session error'));
      // Idle: no new call for idleTimeoutMs. Not session.setTimeout: node (20) keeps that timer,
      // and through it the closed session with its socket, until it fires, so every connection
      // (a proxy opens one per renewal) stayed in memory for the whole idle timeout.
      const idle = setTimeout(() => session.close(), opts.idleTimeoutMs ?? 10 * 60_000);
      idle.unref();
      session.on('stream', () => idle.refresh());
      session.on('close', () => clearTimeout(idle));
    });
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
      this.#handshakeEnded(socket);
      opts.observeConnections?.handshake?.(negotiatedAlgorithms(socket));
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
    const gated = opts.handshakes !== undefined && opts.handshakes.maxHandshakes > 0;
    const observer = opts.observeConnections;
    this.#gate = gated
      ? new HandshakeGate<Socket>(opts.handshakes!, this.#clock, {
          start: (socket, waitedMs) => {
            if (socket.destroyed) {
              // Closed while waiting (the server is closing): its slot is free again.
              queueMicrotask(() => this.#gate?.done(socket));
              return;
            }
            observer?.waited(waitedMs / 1000);
            this.#tls.emit('connection', socket);
          },
          source: (socket) => socket.remoteAddress ?? '',
          refuse: (socket, why) => {
            observer?.refused(why);
            this.#settingUp.delete(connectionKey(socket));
            resetSocket(socket);
          },
        })
      : undefined;
    this.#net = createNetServer((socket) => this.#onConnection(socket));
  }

  /** HTTP/2 sessions open now (a session leaves this count when it closes). */
  get openSessions(): number {
    return this.#sessions.size;
  }

  /** Handshakes in progress and connections waiting for one now (zeros without the gate). */
  get handshakeLoad(): { handshaking: number; waiting: number } {
    return this.#gate?.load ?? { handshaking: 0, waiting: 0 };
  }

  #onConnection(socket: Socket): void {
    const gate = this.#gate;
    if (gate === undefined) {
      this.#tls.emit('connection', socket);
      return;
    }
    if (socket.remoteAddress === undefined) {
      socket.destroy(); // already gone
      return;
    }
    const key = connectionKey(socket);
    this.#settingUp.set(key, socket);
    socket.once('close', () => {
      if (this.#settingUp.get(key) === socket) this.#settingUp.delete(key);
      gate.done(socket);
    });
    // A failed handshake destroys the socket ('close' above); a waiting one cannot fail.
    socket.on('error', () => undefined);
    // No slot before the ClientHello: a connection that sends nothing (or dribbles) holds a
    // socket, not a handshake slot, and is closed at the hello deadline.
    const source = socket.remoteAddress;
    const pending = this.#awaitingHello.get(source) ?? 0;
    if (pending >= MAX_AWAITING_HELLO_PER_SOURCE) {
      this.#opts.observeConnections?.refused('queue-full');
      resetSocket(socket);
      return;
    }
    this.#awaitingHello.set(source, pending + 1);
    const helloTimeoutMs = this.#opts.helloTimeoutMs ?? DEFAULT_HELLO_TIMEOUT_MS;
    void readClientHello(socket, helloTimeoutMs).then((hello) => {
      const left = (this.#awaitingHello.get(source) ?? 1) - 1;
      if (left <= 0) this.#awaitingHello.delete(source);
      else this.#awaitingHello.set(source, left);
      if (hello === undefined || socket.destroyed) {
        this.#opts.observeConnections?.refused('hello-timeout');
        resetSocket(socket);
        return;
      }
      // Not read again until its handshake starts: a waiting connection holds its hello only.
      socket.pause();
      socket.unshift(hello);
      gate.offer(socket);
    });
  }

  /** Frees the gate's slot of a connection whose handshake has completed. */
  #handshakeEnded(socket: TLSSocket): void {
    if (this.#gate === undefined) return;
    const key = connectionKey(socket);
    const raw = this.#settingUp.get(key);
    if (raw === undefined) return;
    this.#settingUp.delete(key);
    this.#gate.done(raw);
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
    this.#net.listen({ host: address.host, port: address.port });
    await once(this.#net, 'listening');
    if (this.#gate !== undefined) {
      const gate = this.#gate;
      this.#sweep = setInterval(() => gate.sweep(), SWEEP_MS);
      this.#sweep.unref();
    }
    const bound = this.#net.address();
    if (bound === null || typeof bound === 'string') throw new Error('TLS server has no address');
    const result = { host: bound.address, port: bound.port };
    this.#log.debug({ address: formatAddress(result) }, 'TLS listener bound');
    return result;
  }

  /**
   * Stops accepting, tells every connection to go away (GOAWAY) while letting calls in flight
   * finish within `graceMs`, then cuts what is left.
   */
  async close(graceMs = 5000): Promise<void> {
    clearInterval(this.#sweep);
    const closed = new Promise<void>((resolve) => this.#net.close(() => resolve()));
    for (const socket of this.#settingUp.values()) socket.destroy();
    const sessions = [...this.#sessions];
    await Promise.race([
      Promise.all(sessions.map((s) => new Promise<void>((resolve) => s.close(() => resolve())))),
      new Promise<void>((resolve) => setTimeout(resolve, graceMs).unref()),
    ]);
    for (const s of this.#sessions) s.destroy();
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

/** A TCP connection's remote address and port: unique among the listener's live connections. */
function connectionKey(socket: Socket): string {
  return `${socket.remoteAddress}|${socket.remotePort}`;
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
