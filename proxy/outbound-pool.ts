/**
 * The outbound connection pools, shared by every listener that carries HTTP: one multiplexed
 * HTTP/2 mTLS session per destination whose proxy selected the mesh ALPN, and an HTTP/1.1 pool
 * (an http.Agent whose sockets are the proxy's mTLS connections) for peers that did not.
 */
import { Agent as HttpAgent } from 'node:http';
import type { ClientRequestArgs } from 'node:http';
import { connect as http2Connect } from 'node:http2';
import type { ClientHttp2Session } from 'node:http2';
import type { TLSSocket } from 'node:tls';
import type { Duplex } from 'node:stream';
import type { Logger } from '../core/index.js';
import { MeshidError, formatAddress } from '../core/index.js';
import type { Destination } from './routes.js';
import { MESH_H2_ALPN } from './tls.js';
import type { Connector } from './outbound-connect.js';

/** How long a peer that chose HTTP/1.1 is taken at its word before the mesh ALPN is offered again. */
const HTTP1_PEER_RECHECK_MS = 3_600_000;
/** Idle pooled connections and sessions close after a minute, as the app's own would. */
const IDLE_MS = 60_000;

/** Keys already made, by destination object (listeners hand the same objects per request). */
const KEYS = new WeakMap<Destination, string>();

/** The pool key: target and expected identity, so one pool never serves two identities. */
export function destinationKey(dest: Destination): string {
  let key = KEYS.get(dest);
  if (key === undefined) {
    key = `${formatAddress(dest.target)}@${dest.identity}`;
    KEYS.set(dest, key);
  }
  return key;
}

/** Extra request options MeshAgent reads. */
export interface MeshRequestExtras {
  readonly meshDestination: Destination;
  /** The listener the request came in on, for the connection's events. */
  readonly meshListener: string;
}

/** The HTTP/2 sessions and HTTP/1.1 connections to peer proxies. */
export class MeshPool {
  readonly #connector: Connector;
  readonly #now: () => number;
  readonly #log: Logger;
  /** The HTTP/1.1 pool, for peers that are not meshid proxies. */
  readonly agent: MeshAgent;
  /** One HTTP/2 session per destination whose proxy selected the mesh ALPN. */
  readonly #sessions = new Map<string, Promise<ClientHttp2Session | undefined>>();
  /** The same sessions once open, for a request to take without waiting on the promise. */
  readonly #open = new Map<string, ClientHttp2Session>();
  /** Destinations that answered without the mesh ALPN, and since when (re-asked hourly). */
  readonly #http1Peers = new Map<string, number>();
  /** A connection that answered the mesh offer with HTTP/1.1, for the pool's next request. */
  readonly #spare = new Map<string, TLSSocket>();

  constructor(connector: Connector, now: () => number, logger: Logger) {
    this.#connector = connector;
    this.#now = now;
    this.#log = logger;
    this.agent = new MeshAgent((listener, dest) => this.#pooledConnection(listener, dest));
  }

  isHttp1Peer(dest: Destination): boolean {
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
  meshSession(listener: string, dest: Destination): Promise<ClientHttp2Session | undefined> {
    const key = destinationKey(dest);
    const current = this.#sessions.get(key);
    if (current !== undefined) return current;
    const opening = new Promise<ClientHttp2Session | undefined>((resolve, reject) => {
      const socket = this.#connector.originate(listener, dest, [MESH_H2_ALPN, 'http/1.1']);
      const forget = (): void => {
        if (this.#sessions.get(key) !== opening) return;
        this.#sessions.delete(key);
        this.#open.delete(key);
      };
      socket.once('error', (err) => {
        forget();
        reject(err);
      });
      socket.once('secureConnect', () => {
        this.#connector.reportEstablished(listener, dest, socket, () => ({
          sent: socket.bytesWritten,
          received: socket.bytesRead,
        }));
        if (socket.alpnProtocol !== MESH_H2_ALPN) {
          forget();
          this.#keepAsHttp1(key, socket);
          resolve(undefined);
          return;
        }
        const session = this.#session(dest, socket, forget);
        if (this.#sessions.get(key) === opening) this.#open.set(key, session);
        resolve(session);
      });
    });
    // The rejection is handled by the caller; this only keeps it from being reported twice.
    opening.catch(() => undefined);
    this.#sessions.set(key, opening);
    return opening;
  }

  /**
   * The HTTP/2 session to a destination's proxy when one is open now (what
   * {@link MeshPool.meshSession} would resolve with), else undefined: a request then asks
   * {@link MeshPool.meshSession}. Saves each request a promise and a turn of the microtask queue.
   */
  openMeshSession(dest: Destination): ClientHttp2Session | undefined {
    const session = this.#open.get(destinationKey(dest));
    return session === undefined || session.closed || session.destroyed ? undefined : session;
  }

  /** Not a meshid proxy: HTTP/1.1 from now on, starting with this connection. */
  #keepAsHttp1(key: string, socket: TLSSocket): void {
    this.#http1Peers.set(key, this.#now());
    this.#spare.get(key)?.destroy();
    this.#spare.set(key, socket);
    socket.once('close', () => {
      if (this.#spare.get(key) === socket) this.#spare.delete(key);
    });
  }

  #session(dest: Destination, socket: TLSSocket, forget: () => void): ClientHttp2Session {
    const session = http2Connect(`http://${formatAddress(dest.target)}`, {
      createConnection: () => socket,
    });
    session.on('error', (err) =>
      this.#log.debug({ err: err.message }, 'outbound mesh HTTP/2 session error'),
    );
    session.once('close', forget);
    session.once('goaway', forget);
    // An idle session is closed as the HTTP/1.1 pool's idle sockets are.
    session.setTimeout(IDLE_MS, () => session.close());
    return session;
  }

  /** A new connection for the HTTP/1.1 pool, reported like a route connection. */
  #pooledConnection(listener: string, dest: Destination): TLSSocket {
    const key = destinationKey(dest);
    const spare = this.#spare.get(key);
    if (spare !== undefined && !spare.destroyed) {
      this.#spare.delete(key);
      return spare;
    }
    const socket = this.#connector.originate(listener, dest);
    socket.once('secureConnect', () => {
      this.#connector.reportEstablished(listener, dest, socket, () => ({
        sent: socket.bytesWritten,
        received: socket.bytesRead,
      }));
    });
    return socket;
  }

  /** Closes what carries no request now: idle pooled connections, sessions (with GOAWAY). */
  closeIdle(): void {
    this.agent.destroyIdle();
    for (const p of this.#sessions.values())
      void p.then(
        (s) => s?.close(),
        () => undefined,
      );
  }

  /** Destroys everything left. */
  destroy(): void {
    this.agent.destroy();
    for (const s of this.#spare.values()) s.destroy();
    for (const p of this.#sessions.values())
      void p.then(
        (s) => s?.destroy(),
        () => undefined,
      );
    this.#sessions.clear();
    this.#open.clear();
  }
}

/**
 * An HTTP agent whose connections are the proxy's mTLS connections: pooled per target and
 * expected identity, each new one made by the connect stage (so with the current certificate
 * and anchors) and reported like a route connection.
 */
class MeshAgent extends HttpAgent {
  readonly #connect: (listener: string, dest: Destination) => TLSSocket;

  /** @param connect opens a new mTLS connection (throws when it cannot start). */
  constructor(connect: (listener: string, dest: Destination) => TLSSocket) {
    super({ keepAlive: true, maxFreeSockets: 16, timeout: IDLE_MS });
    this.#connect = connect;
  }

  override getName(options?: ClientRequestArgs): string {
    const extras = extrasOf(options);
    return extras === undefined ? super.getName(options) : destinationKey(extras.meshDestination);
  }

  override createConnection(
    options: ClientRequestArgs,
    callback?: (err: Error | null, stream: Duplex) => void,
  ): Duplex | null | undefined {
    const extras = extrasOf(options);
    if (extras === undefined) {
      // Every request of the HTTP listener names its destination; this is a bug if reached.
      throw new MeshidError('ERR_INTERNAL', 'outbound request without a destination');
    }
    // Synchronous success or failure both go through the callback: node's agent then hands
    // the socket to the request, or the error to its 'error' event.
    let socket: TLSSocket;
    try {
      socket = this.#connect(extras.meshListener, extras.meshDestination);
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

function extrasOf(options: ClientRequestArgs | undefined): MeshRequestExtras | undefined {
  const o = options as Partial<MeshRequestExtras> | undefined;
  return o?.meshDestination === undefined || o.meshListener === undefined
    ? undefined
    : { meshDestination: o.meshDestination, meshListener: o.meshListener };
}
