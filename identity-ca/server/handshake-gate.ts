/**
 * Bounds the TLS handshakes a CA process runs at once.
 *
 * A mass restart opens thousands of connections to the CA together. Each costs about 1 ms of
 * CPU to set up (the TLS 1.3 handshake and the HTTP/2 session: more than a Certify call), and
 * node runs them interleaved, so with 4,000 in progress every one of them is slow together and
 * nearly all callers' deadlines pass before their first call is even sent (docs/benchmarks.md,
 * "The restart storm"). The gate lets `maxHandshakes` handshakes run; a connection beyond them
 * waits as a raw TCP socket, not read (no TLS state, a few hundred bytes), first come first
 * served. A connection that waited longer than `maxWaitMs` is closed instead of handshaken late
 * (its caller would have little or no time left; it retries with backoff), and beyond
 * `maxWaiting` waiting connections a new one is closed at once.
 *
 * One source (a peer address) holds at most `maxPerSource` of the slots: a connection from a
 * source at its share waits while others from other sources go ahead. Without this, a client that
 * opens connections and never finishes its handshake (each slot is held until the TLS server's
 * handshake timeout) could take every slot and keep the whole mesh from its certificates.
 *
 * Generic over the connection so that it is tested without sockets; time comes from the
 * injected clock, and `sweep` (run by a timer of the owner's) closes connections that waited
 * too long while nothing finishes.
 */
import type { Clock } from '../../core/index.js';

/** Limits of one CA process. */
export interface HandshakeGateSettings {
  /** Handshakes in progress at once; 0 turns the gate off (every connection starts at once). */
  readonly maxHandshakes: number;
  /** Longest a connection may wait for a handshake slot before it is closed. */
  readonly maxWaitMs: number;
  /** Connections that may wait; beyond it a new one is closed at once. */
  readonly maxWaiting: number;
  /** Slots one source may hold at once (with the `source` hook); 0 or absent: no share. */
  readonly maxPerSource?: number;
  /**
   * A handshake running longer than this while others wait is closed to free its slot; 0 or
   * absent: never. A connection is offered once its ClientHello has arrived, so what is left is
   * the server's reply and the client's last flight: one round trip for an honest client. A
   * client that stalls there holds its slot only while nobody needs it, however many addresses
   * it comes from.
   */
  readonly stalledAfterMs?: number;
}

/** Why a connection was closed without a handshake, for metrics. */
export type ConnectionRefusal =
  'wait-timeout' | 'queue-full' | 'handshake-stalled' | 'hello-timeout';

/** What the gate does with connections: the owner's socket operations. */
interface HandshakeGateHooks<C> {
  /** Starts the TLS handshake of `conn`; `waitedMs` is how long it waited for its slot. */
  readonly start: (conn: C, waitedMs: number) => void;
  /** Closes `conn` without a handshake. */
  readonly refuse: (conn: C, why: ConnectionRefusal) => void;
  /** Where `conn` comes from (its peer address), for `maxPerSource`. */
  readonly source?: (conn: C) => string;
}

interface Waiting<C> {
  readonly conn: C;
  readonly since: number;
}

/**
 * The handshake admission of one CA process.
 */
export class HandshakeGate<C> {
  readonly #s: HandshakeGateSettings;
  readonly #clock: Clock;
  readonly #hooks: HandshakeGateHooks<C>;
  /** Handshakes in progress and when each started (insertion order: oldest first). */
  readonly #running = new Map<C, number>();
  /** Slots held per source (only sources holding one). */
  readonly #bySource = new Map<string, number>();
  /** First come first served; `#head` skips the served part without shifting the array. */
  #waiting: Waiting<C>[] = [];
  #head = 0;

  constructor(settings: HandshakeGateSettings, clock: Clock, hooks: HandshakeGateHooks<C>) {
    this.#s = settings;
    this.#clock = clock;
    this.#hooks = hooks;
  }

  /** Handshakes in progress and connections waiting now. */
  get load(): { handshaking: number; waiting: number } {
    return { handshaking: this.#running.size, waiting: this.#waiting.length - this.#head };
  }

  /** A new connection: its handshake starts now, or it waits, or it is refused. */
  offer(conn: C): void {
    const s = this.#s;
    if (s.maxHandshakes <= 0) {
      this.#hooks.start(conn, 0);
      return;
    }
    this.#sweepWaiting();
    if (this.#running.size < s.maxHandshakes && this.load.waiting === 0 && this.#underShare(conn)) {
      this.#begin(conn, 0);
      return;
    }
    if (this.load.waiting >= s.maxWaiting) {
      this.#hooks.refuse(conn, 'queue-full');
      return;
    }
    this.#waiting.push({ conn, since: this.#clock.now() });
    this.#evictStalled();
    // Those waiting may all be sources at their share, so this one may still start now.
    if (this.#running.size < s.maxHandshakes) this.#next();
  }

  /** While connections wait and every slot is taken, closes the handshakes that stalled. */
  #evictStalled(): void {
    const after = this.#s.stalledAfterMs ?? 0;
    if (after <= 0) return;
    const now = this.#clock.now();
    const stalled: C[] = [];
    let short = this.load.waiting - (this.#s.maxHandshakes - this.#running.size);
    for (const [conn, started] of this.#running) {
      if (short <= 0 || now - started <= after) break;
      stalled.push(conn);
      short--;
    }
    for (const conn of stalled) {
      this.#hooks.refuse(conn, 'handshake-stalled');
      this.done(conn);
    }
  }

  /**
   * The handshake of `conn` has ended (secure, failed, or the connection closed): its slot goes
   * to the longest-waiting connection that has not waited too long. Idempotent.
   */
  done(conn: C): void {
    if (!this.#running.delete(conn)) return;
    const source = this.#sourceOf(conn);
    if (source !== undefined) {
      const held = (this.#bySource.get(source) ?? 1) - 1;
      if (held <= 0) this.#bySource.delete(source);
      else this.#bySource.set(source, held);
    }
    this.#next();
  }

  /**
   * Closes the connections that have waited longer than `maxWaitMs`, and the handshakes that
   * stalled while others wait.
   */
  sweep(): void {
    this.#sweepWaiting();
    if (this.load.waiting > 0) this.#evictStalled();
  }

  #sweepWaiting(): void {
    const now = this.#clock.now();
    while (this.#head < this.#waiting.length) {
      const w = this.#waiting[this.#head]!;
      if (now - w.since <= this.#s.maxWaitMs) break;
      this.#shift();
      this.#hooks.refuse(w.conn, 'wait-timeout');
    }
    this.#compact();
  }

  #next(): void {
    this.#sweepWaiting();
    while (this.#running.size < this.#s.maxHandshakes && this.#head < this.#waiting.length) {
      const w = this.#takeEligible();
      if (w === undefined) break; // every waiting source holds its share
      this.#begin(w.conn, Math.max(0, this.#clock.now() - w.since));
    }
    this.#compact();
  }

  /** The longest-waiting connection whose source is under its share, taken out of the queue. */
  #takeEligible(): Waiting<C> | undefined {
    if (this.#underShare(this.#waiting[this.#head]!.conn)) return this.#shift();
    for (let i = this.#head + 1; i < this.#waiting.length; i++) {
      if (this.#underShare(this.#waiting[i]!.conn)) return this.#waiting.splice(i, 1)[0];
    }
    return undefined;
  }

  #sourceOf(conn: C): string | undefined {
    return (this.#s.maxPerSource ?? 0) > 0 ? this.#hooks.source?.(conn) : undefined;
  }

  #underShare(conn: C): boolean {
    const source = this.#sourceOf(conn);
    return source === undefined || (this.#bySource.get(source) ?? 0) < this.#s.maxPerSource!;
  }

  #begin(conn: C, waitedMs: number): void {
    this.#running.set(conn, this.#clock.now());
    const source = this.#sourceOf(conn);
    if (source !== undefined) this.#bySource.set(source, (this.#bySource.get(source) ?? 0) + 1);
    this.#hooks.start(conn, waitedMs);
  }

  #shift(): Waiting<C> {
    const w = this.#waiting[this.#head]!;
    this.#head++;
    return w;
  }

  /** Drops the served part of the queue once it is most of the array. */
  #compact(): void {
    if (this.#head === this.#waiting.length) {
      this.#waiting = [];
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > this.#waiting.length) {
      this.#waiting = this.#waiting.slice(this.#head);
      this.#head = 0;
    }
  }
}
