/**
 * The Certify server's bookkeeping of its connections, from accept to close: a new TCP
 * connection holds no handshake slot until its whole ClientHello has arrived (bounded in time
 * and per source address), then waits for a slot of the handshake gate; once its handshake is
 * done it counts against its address's share of established connections; its HTTP/2 session is
 * kept until it closes, and closed after an idle time. grpc-server.ts owns the TLS and HTTP/2
 * servers and the calls; this module owns who is let through and what is held for each.
 */
import type { Socket } from 'node:net';
import type { ServerHttp2Session } from 'node:http2';
import type { TLSSocket } from 'node:tls';
import type { Clock, Logger, TlsAlgorithms } from '../../core/index.js';
import { LogKey, PeerBudget, RefusalReports, resetSocket } from '../../core/index.js';
import { HandshakeGate } from './handshake-gate.js';
import type { ConnectionRefusal, HandshakeGateSettings } from './handshake-gate.js';

/**
 * Why a connection was closed: by the handshake gate before its handshake, or (`per-peer`) right
 * after it because its address held its share of established connections.
 */
export type CertifyConnectionRefusal = ConnectionRefusal | 'per-peer';

/** Told about connections refused and how long admitted ones waited for a handshake slot. */
export interface ConnectionObserver {
  refused(why: CertifyConnectionRefusal): void;
  waited(seconds: number): void;
  /** A finished handshake's key-exchange group and cipher suite (core's negotiatedAlgorithms). */
  handshake?(algorithms: TlsAlgorithms): void;
}

/** Settings of {@link CertifyConnections}. */
interface CertifyConnectionsOptions {
  /** Bounds the TLS handshakes in progress; absent or `maxHandshakes` 0: no gate. */
  readonly handshakes?: HandshakeGateSettings;
  /** With the gate: how long a new connection may take to send its whole ClientHello. */
  readonly helloTimeoutMs?: number;
  /**
   * Established (handshaken) connections one client address may hold at once; a connection
   * beyond it is reset right after its handshake. Absent or 0: no limit.
   */
  readonly maxConnectionsPerPeer?: number;
  /** An HTTP/2 connection with no stream for this long is closed (proxies reconnect). */
  readonly idleTimeoutMs?: number;
  readonly observer?: ConnectionObserver;
  readonly clock: Clock;
  readonly logger: Logger;
  /** Starts the TLS handshake of a connection (the TLS server's 'connection'). */
  readonly handshake: (socket: Socket) => void;
}

const DEFAULT_HELLO_TIMEOUT_MS = 3000;
const DEFAULT_IDLE_TIMEOUT_MS = 10 * 60_000;
/** Connections from one address still sending their ClientHello (each a socket, no TLS state). */
const MAX_AWAITING_HELLO_PER_SOURCE = 256;
/** How often connections that waited too long for a handshake are looked for. */
const SWEEP_MS = 100;
/** A TLS record's header and the largest plaintext record (RFC 8446 §5.1). */
const TLS_RECORD_HEADER = 5;
const TLS_MAX_RECORD = 16_384;

/**
 * The connections of one Certify server.
 */
export class CertifyConnections {
  readonly #o: CertifyConnectionsOptions;
  readonly #gate: HandshakeGate<Socket> | undefined;
  /** Connections in set-up by remote address and port, to tell the gate a handshake ended. */
  readonly #settingUp = new Map<string, Socket>();
  /** Connections whose ClientHello has not arrived yet, per source address. */
  readonly #awaitingHello = new Map<string, number>();
  /** Established connections per client address (with `maxConnectionsPerPeer`). */
  readonly #established: PeerBudget | undefined;
  readonly #reports = new RefusalReports();
  readonly #sessions = new Set<ServerHttp2Session>();
  #sweep: NodeJS.Timeout | undefined;

  constructor(o: CertifyConnectionsOptions) {
    this.#o = o;
    const perPeer = o.maxConnectionsPerPeer ?? 0;
    this.#established =
      perPeer > 0 ? new PeerBudget({ total: Number.MAX_SAFE_INTEGER, perPeer }) : undefined;
    const gated = o.handshakes !== undefined && o.handshakes.maxHandshakes > 0;
    this.#gate = gated
      ? new HandshakeGate<Socket>(o.handshakes!, o.clock, {
          start: (socket, waitedMs) => {
            if (socket.destroyed) {
              // Closed while waiting (the server is closing): its slot is free again.
              queueMicrotask(() => this.#gate?.done(socket));
              return;
            }
            o.observer?.waited(waitedMs / 1000);
            o.handshake(socket);
          },
          source: (socket) => socket.remoteAddress ?? '',
          refuse: (socket, why) => {
            o.observer?.refused(why);
            this.#settingUp.delete(connectionKey(socket));
            resetSocket(socket);
          },
        })
      : undefined;
  }

  /** HTTP/2 sessions open now (a session leaves this count when it closes). */
  get openSessions(): number {
    return this.#sessions.size;
  }

  /** Handshakes in progress and connections waiting for one now (zeros without the gate). */
  get handshakeLoad(): { handshaking: number; waiting: number } {
    return this.#gate?.load ?? { handshaking: 0, waiting: 0 };
  }

  /** Established connections per client address (undefined without `maxConnectionsPerPeer`). */
  get establishedByPeer(): PeerBudget | undefined {
    return this.#established;
  }

  /** Starts the gate's timer (the server listens). */
  start(): void {
    const gate = this.#gate;
    if (gate === undefined) return;
    this.#sweep = setInterval(() => gate.sweep(), SWEEP_MS);
    this.#sweep.unref();
  }

  /** A new TCP connection: to its handshake now, or once its ClientHello is in and a slot free. */
  accept(socket: Socket): void {
    const gate = this.#gate;
    if (gate === undefined) {
      this.#o.handshake(socket);
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
      this.#o.observer?.refused('queue-full');
      resetSocket(socket);
      return;
    }
    this.#awaitingHello.set(source, pending + 1);
    const helloTimeoutMs = this.#o.helloTimeoutMs ?? DEFAULT_HELLO_TIMEOUT_MS;
    void readClientHello(socket, helloTimeoutMs).then((hello) => {
      const left = (this.#awaitingHello.get(source) ?? 1) - 1;
      if (left <= 0) this.#awaitingHello.delete(source);
      else this.#awaitingHello.set(source, left);
      if (hello === undefined || socket.destroyed) {
        this.#o.observer?.refused('hello-timeout');
        resetSocket(socket);
        return;
      }
      // Not read again until its handshake starts: a waiting connection holds its hello only.
      socket.pause();
      socket.unshift(hello);
      gate.offer(socket);
    });
  }

  /**
   * A connection's handshake is done: its gate slot is free, and it takes one of its address's
   * established connections; false when the address holds its share (the connection is reset,
   * closed, counted as `per-peer` and logged at most every 10 s per address).
   */
  handshaken(socket: TLSSocket): boolean {
    this.#handshakeEnded(socket);
    const budget = this.#established;
    if (budget === undefined) return true;
    const peer = socket.remoteAddress;
    if (peer === undefined) {
      socket.destroy(); // already gone
      return false;
    }
    if (!budget.acquire(peer)) {
      this.#o.observer?.refused('per-peer');
      const refused = this.#reports.refused(peer);
      if (refused !== undefined) {
        this.#o.logger.warn(
          { [LogKey.address]: peer, limit: budget.limits.perPeer, refused },
          'Certify connections refused after their handshake: the address holds its share (certifyMaxConnectionsPerPeer)',
        );
      }
      // Closed, not reset: a TLS socket has no TCP handle of its own to reset (node throws).
      socket.destroy();
      return false;
    }
    socket.once('close', () => budget.release(peer));
    return true;
  }

  /** Keeps a new HTTP/2 session until it closes, and closes it once idle. */
  session(session: ServerHttp2Session): void {
    this.#sessions.add(session);
    session.on('close', () => this.#sessions.delete(session));
    session.on('error', (err) =>
      this.#o.logger.debug({ err: err.message }, 'HTTP/2 session error'),
    );
    // Idle: no new call for idleTimeoutMs. Not session.setTimeout: node (20) keeps that timer,
    // and through it the closed session with its socket, until it fires, so every connection
    // (a proxy opens one per renewal) stayed in memory for the whole idle timeout.
    const idle = setTimeout(
      () => session.close(),
      this.#o.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS,
    );
    idle.unref();
    session.on('stream', () => idle.refresh());
    session.on('close', () => clearTimeout(idle));
  }

  /**
   * Closes what is being set up, asks every session to go away (GOAWAY) and resolves when they
   * have, or after `graceMs`, when what is left is destroyed.
   */
  async close(graceMs: number): Promise<void> {
    clearInterval(this.#sweep);
    for (const socket of this.#settingUp.values()) socket.destroy();
    const sessions = [...this.#sessions];
    await Promise.race([
      Promise.all(sessions.map((s) => new Promise<void>((resolve) => s.close(() => resolve())))),
      new Promise<void>((resolve) => setTimeout(resolve, graceMs).unref()),
    ]);
    for (const s of this.#sessions) s.destroy();
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
}

/** A TCP connection's remote address and port: unique among the listener's live connections. */
function connectionKey(socket: Socket): string {
  return `${socket.remoteAddress}|${socket.remotePort}`;
}

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
