/**
 * The Destination gRPC service: `Get` and `GetProfile`, server-streaming, over HTTP/2 over
 * mutual TLS 1.3, on node's own http2 and tls (as the CA's Certify server: a Linkerd proxy dials
 * with no ALPN and speaks HTTP/2 by prior knowledge, which node's secure HTTP/2 server refuses,
 * so TLS is terminated here and each connection handed to a cleartext HTTP/2 server).
 *
 * Callers must present a mesh certificate (any workload identity chained to the trust anchors):
 * the answers say which pods are meshed and as whom, which only the mesh needs to know.
 *
 * Bounds against one misbehaving peer: connections per peer address and in all
 * (core's LISTENER_LIMITS.destination); no TLS resumption; the TLS handshake has a deadline; a
 * connection holds at most {@link MAX_STREAMS_PER_CONNECTION} streams; a request is one message
 * of at most 4 KiB; a stream whose reader stops reading is cancelled once
 * {@link MAX_BUFFERED_BYTES} wait for it; the index bounds the subscriptions of all callers
 * together.
 */
import { createServer as createH2Server, constants as h2 } from 'node:http2';
import type {
  Http2Server,
  IncomingHttpHeaders,
  ServerHttp2Session,
  ServerHttp2Stream,
} from 'node:http2';
import { createServer as createTlsServer } from 'node:tls';
import type { Server as TlsServer, TLSSocket } from 'node:tls';
import type {
  Address,
  Logger,
  MeshTlsSettings,
  PeerBudget,
  PeerBudgetLimits,
  Registry,
} from '../core/index.js';
import {
  Counter,
  DESTINATION_GET_PATH,
  DESTINATION_GET_PROFILE_PATH,
  Gauge,
  GrpcStatus,
  LISTENER_LIMITS,
  LogKey,
  MESH_TLS,
  NO_RESUMPTION,
  decodeGetDestination,
  encodeDestinationProfile,
  encodeDestinationUpdate,
  encodeGrpcMessage,
  frameGrpcMessage,
  isMeshidError,
  limitConnections,
  listenOn,
  unframeGrpcMessage,
} from '../core/index.js';
import type { EndpointIndex, IndexSubscription } from './endpoint-index.js';
import { formatTarget, parseTarget } from './target.js';
import type { Target } from './target.js';
import { UpdateStream, profileOf } from './updates.js';

/** Streams one connection may have open at once (a proxy asks about each destination once). */
export const MAX_STREAMS_PER_CONNECTION = 1000;
/** Bytes of answers that may wait for a slow reader before its stream is cancelled. */
export const MAX_BUFFERED_BYTES = 4 * 1024 * 1024;
/** The largest request message (a GetDestination is a name and a token). */
const MAX_REQUEST_BYTES = 4096;

/** The key, certificate chain and anchors the server uses (all PEM). */
export interface DestinationCredentials {
  readonly keyPem: string;
  readonly certChainPem: string;
  /** Client certificates must chain to these. */
  readonly anchorsPem: string;
}

export interface DestinationServerOptions {
  readonly index: EndpointIndex;
  readonly clusterDomain: string;
  readonly logger: Logger;
  readonly credentials: DestinationCredentials;
  /** Core's meshTlsSettings(fips); default MESH_TLS. */
  readonly tls?: MeshTlsSettings;
  /** Where the stream and call metrics go. */
  readonly registry?: Registry;
  readonly handshakeTimeoutMs?: number;
  /** Connections per peer address and in all; default LISTENER_LIMITS.destination. */
  readonly connectionLimits?: PeerBudgetLimits;
}

interface Metrics {
  calls: Counter;
  updates: Counter;
  streams: Gauge;
}

function metricsOn(registry: Registry | undefined): Metrics | undefined {
  if (registry === undefined) return undefined;
  return {
    calls: new Counter({
      name: 'destination_calls_total',
      help: 'Destination calls by method and how they ended (gRPC status name; OK = ended by the caller)',
      labelNames: ['method', 'status'],
      registers: [registry],
    }),
    updates: new Counter({
      name: 'destination_updates_total',
      help: 'Messages sent on Destination streams, by method',
      labelNames: ['method'],
      registers: [registry],
    }),
    streams: new Gauge({
      name: 'destination_streams',
      help: 'Destination streams open now, by method',
      labelNames: ['method'],
      registers: [registry],
    }),
  };
}

const STATUS_NAME = new Map<number, string>(
  Object.entries(GrpcStatus).map(([name, code]) => [code, name]),
);

/**
 * A running destination server.
 *
 * @example
 * ```ts
 * const server = new DestinationServer({ index, clusterDomain: 'cluster.local', logger, credentials });
 * const bound = await server.listen({ host: '::', port: 8086 });
 * ```
 */
export class DestinationServer {
  readonly #o: DestinationServerOptions;
  readonly #h2: Http2Server;
  readonly #tls: TlsServer;
  readonly #sessions = new Set<ServerHttp2Session>();
  readonly #open = new Set<() => void>();
  readonly #metrics: Metrics | undefined;
  readonly #log: Logger;
  readonly #connections: PeerBudget;

  constructor(options: DestinationServerOptions) {
    this.#o = options;
    this.#log = options.logger;
    this.#metrics = metricsOn(options.registry);
    this.#h2 = createH2Server({
      settings: { maxConcurrentStreams: MAX_STREAMS_PER_CONNECTION, maxHeaderListSize: 16 * 1024 },
      maxSessionMemory: 16,
    });
    this.#h2.on('session', (session: ServerHttp2Session) => {
      this.#sessions.add(session);
      session.on('close', () => this.#sessions.delete(session));
      session.on('error', (err) => this.#log.debug({ err: err.message }, 'HTTP/2 session error'));
    });
    this.#h2.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) =>
      this.#onStream(stream, headers),
    );
    this.#tls = createTlsServer({
      ...this.#secureContext(options.credentials),
      ALPNProtocols: ['h2'],
      handshakeTimeout: options.handshakeTimeoutMs ?? 10_000,
      requestCert: true,
      rejectUnauthorized: true,
    });
    this.#tls.on('secureConnection', (socket: TLSSocket) => {
      // `false` is a Linkerd proxy (no ALPN); 'h2' an ordinary gRPC client.
      if (socket.alpnProtocol !== false && socket.alpnProtocol !== 'h2') {
        socket.destroy();
        return;
      }
      // Node's HTTP/2 connection listener would send a socket without ALPN to its HTTP/1
      // fallback; a client that offered none speaks HTTP/2 by prior knowledge.
      if (socket.alpnProtocol === false) socket.alpnProtocol = 'h2';
      const san = socket.getPeerCertificate().subjectaltname ?? '';
      (socket as WithPeer)[kPeer] = /^DNS:([^,]+)/.exec(san)?.[1] ?? 'unknown';
      socket.setNoDelay(true);
      // A proxy that vanished without a FIN is noticed, and its subscriptions closed.
      socket.setKeepAlive(true, 30_000);
      this.#h2.emit('connection', socket);
    });
    this.#tls.on('tlsClientError', (err, socket) =>
      this.#log.debug({ err: err.message, remote: socket.remoteAddress }, 'TLS handshake failed'),
    );
    // A proxy keeps one connection; a peer that opens many more is refused before its handshake.
    this.#connections = limitConnections(
      this.#tls,
      options.connectionLimits ?? LISTENER_LIMITS.destination.connections,
      (peer, hit, limit, refused) =>
        this.#log.warn(
          { [LogKey.address]: peer, hit, limit, refused },
          'destination refusing connections: limit reached',
        ),
    );
  }

  /** The server's count of open connections, per peer address. */
  get connections(): PeerBudget {
    return this.#connections;
  }

  #secureContext(c: DestinationCredentials): Record<string, unknown> {
    // No resumption: a caller is verified on every connection, against the anchors of now.
    return {
      ...(this.#o.tls ?? MESH_TLS),
      ...NO_RESUMPTION,
      key: c.keyPem,
      cert: c.certChainPem,
      ca: c.anchorsPem,
    };
  }

  /** New key, certificate or anchors, for connections from now on. */
  setCredentials(credentials: DestinationCredentials): void {
    this.#tls.setSecureContext(this.#secureContext(credentials));
  }

  /** Binds; resolves with the bound address (port 0 allowed). */
  async listen(address: Address): Promise<Address> {
    return listenOn(this.#tls, address, { logger: this.#log, name: 'destination' });
  }

  /** Streams open now. */
  get openStreams(): number {
    return this.#open.size;
  }

  /**
   * Stops accepting; ends every open stream with UNAVAILABLE (callers reconnect elsewhere) and
   * closes the connections within `graceMs`.
   */
  async close(graceMs = 2000): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#tls.close(() => resolve()));
    for (const end of [...this.#open]) end();
    await Promise.race([
      Promise.all(
        [...this.#sessions].map((s) => new Promise<void>((resolve) => s.close(() => resolve()))),
      ),
      new Promise<void>((resolve) => setTimeout(resolve, graceMs).unref()),
    ]);
    for (const s of this.#sessions) s.destroy();
    await closed;
  }

  #onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    stream.on('error', (err) => this.#log.debug({ err: err.message }, 'HTTP/2 stream error'));
    if (headers[':method'] !== 'POST') {
      stream.respond({ ':status': 405 }, { endStream: true });
      return;
    }
    if (!/^application\/grpc(\+proto)?(;|$)/.test(headers['content-type'] ?? '')) {
      stream.respond({ ':status': 415 }, { endStream: true });
      return;
    }
    const path = headers[':path'];
    const method =
      path === DESTINATION_GET_PATH
        ? 'Get'
        : path === DESTINATION_GET_PROFILE_PATH
          ? 'GetProfile'
          : undefined;
    if (method === undefined) {
      this.#refuse(stream, 'unknown', GrpcStatus.UNIMPLEMENTED, `unknown method ${String(path)}`);
      return;
    }
    const encoding = headers['grpc-encoding'];
    if (encoding !== undefined && encoding !== 'identity') {
      this.#refuse(
        stream,
        method,
        GrpcStatus.UNIMPLEMENTED,
        `message encoding "${String(encoding)}" is not supported`,
      );
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let started = false;
    const start = (): void => {
      if (started || stream.closed) return;
      started = true;
      let target: Target;
      try {
        const req = decodeGetDestination(
          unframeGrpcMessage(Buffer.concat(chunks, size), 'request'),
        );
        target = parseTarget(req.path, this.#o.clusterDomain);
      } catch (err) {
        this.#refuse(
          stream,
          method,
          isMeshidError(err) ? GrpcStatus.INVALID_ARGUMENT : GrpcStatus.INTERNAL,
          (err as Error).message,
        );
        return;
      }
      this.#serve(stream, method, target);
    };
    stream.on('data', (chunk: Buffer) => {
      if (started) return;
      size += chunk.length;
      if (size > MAX_REQUEST_BYTES + 5) {
        started = true;
        this.#refuse(
          stream,
          method,
          GrpcStatus.RESOURCE_EXHAUSTED,
          `request larger than ${MAX_REQUEST_BYTES} bytes`,
        );
        return;
      }
      chunks.push(chunk);
      // The one message is whole: serve now, whether or not the caller half-closes after it.
      const framed = Buffer.concat(chunks, size);
      if (framed.length >= 5 && framed.length >= 5 + framed.readUInt32BE(1)) start();
    });
    stream.on('end', start);
  }

  /** Subscribes the stream to its target and writes each change until either side ends it. */
  #serve(stream: ServerHttp2Stream, method: 'Get' | 'GetProfile', target: Target): void {
    const peer = peerIdentity(stream);
    const log = this.#log.child({ method, target: formatTarget(target), peer });
    stream.respond(
      { ':status': 200, 'content-type': 'application/grpc', 'grpc-accept-encoding': 'identity' },
      { waitForTrailers: true },
    );
    let ended = false;
    let sub: IndexSubscription | undefined;
    const end = (status: number, message: string): void => {
      if (ended) return;
      ended = true;
      sub?.close();
      this.#open.delete(shutdown);
      this.#metrics?.streams.dec({ method });
      this.#metrics?.calls.inc({ method, status: STATUS_NAME.get(status) ?? String(status) });
      if (stream.closed || stream.destroyed) return;
      stream.once('wantTrailers', () =>
        stream.sendTrailers({
          'grpc-status': String(status),
          'grpc-message': encodeGrpcMessage(message),
        }),
      );
      stream.end();
    };
    const shutdown = (): void =>
      end(GrpcStatus.UNAVAILABLE, 'the destination service is shutting down');
    this.#open.add(shutdown);
    this.#metrics?.streams.inc({ method });
    stream.once('close', () => end(GrpcStatus.OK, ''));
    const send = (message: Buffer): void => {
      if (ended) return;
      if (stream.writableLength > MAX_BUFFERED_BYTES) {
        log.warn('caller reads too slowly: stream cancelled');
        end(GrpcStatus.RESOURCE_EXHAUSTED, 'too many updates wait for this caller to read them');
        return;
      }
      this.#metrics?.updates.inc({ method });
      stream.write(frameGrpcMessage(message));
    };
    const updates = new UpdateStream();
    let lastProfile = '';
    try {
      sub = this.#o.index.subscribe(target, (r) => {
        if (method === 'Get') {
          for (const u of updates.next(r)) send(encodeDestinationUpdate(u));
          return;
        }
        const profile = encodeDestinationProfile(profileOf(r));
        const text = profile.toString('base64');
        if (text === lastProfile) return;
        lastProfile = text;
        send(profile);
      });
    } catch (err) {
      end(GrpcStatus.RESOURCE_EXHAUSTED, (err as Error).message);
      return;
    }
    if (ended) sub.close();
    log.debug('stream opened');
  }

  #refuse(stream: ServerHttp2Stream, method: string, status: number, message: string): void {
    this.#metrics?.calls.inc({ method, status: STATUS_NAME.get(status) ?? String(status) });
    if (stream.closed || stream.headersSent) return;
    stream.respond(
      {
        ':status': 200,
        'content-type': 'application/grpc',
        'grpc-status': String(status),
        'grpc-message': encodeGrpcMessage(message),
      },
      { endStream: true },
    );
    // What the caller still sends is read and dropped; a stream left open is reset shortly.
    stream.resume();
    const timer = setTimeout(() => {
      if (!stream.closed) stream.close(h2.NGHTTP2_NO_ERROR);
    }, 1000);
    timer.unref();
    stream.once('close', () => clearTimeout(timer));
  }
}

/** The identity of a connection's verified client certificate (its first DNS SAN). */
const kPeer = Symbol('meshid.destination.peer');
type WithPeer = { [kPeer]?: string };

function peerIdentity(stream: ServerHttp2Stream): string {
  return (stream.session?.socket as (TLSSocket & WithPeer) | undefined)?.[kPeer] ?? 'unknown';
}
