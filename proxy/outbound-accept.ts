/**
 * The outbound accept stage: binding listeners, keeping every app connection (and what it is
 * piped to) under graceful close, and the context every later stage works with.
 */
import type { Server, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Address, HttpTimeouts, Logger, PeerBudgetLimits } from '../core/index.js';
import { ALL_ADDRESSES, listenOn } from '../core/index.js';
import type { Connector } from './outbound-connect.js';
import { closedOf } from './outbound-connect.js';
import type { OutboundEvent } from './outbound-events.js';
import type { MeshPool } from './outbound-pool.js';

/** Bounds of the outbound listeners; the defaults are core's LISTENER_LIMITS.outbound. */
export interface OutboundLimits {
  /** Connections each listener holds, per peer address and in all. */
  readonly connections: PeerBudgetLimits;
  /** The HTTP listener's request times (HTTP/1). */
  readonly http: HttpTimeouts;
  /** SETTINGS_MAX_CONCURRENT_STREAMS of the HTTP listener's HTTP/2 connections. */
  readonly maxStreams: number;
}

/** What every outbound stage shares: one per {@link OutboundProxy}. */
export interface OutboundContext {
  readonly log: Logger;
  readonly now: () => number;
  /** How long a connection waits for the app's first bytes (server-first protocols). */
  readonly detectTimeoutMs: number;
  /** Whether HTTP goes over multiplexed HTTP/2 to peers that are meshid proxies. */
  readonly meshH2: boolean;
  readonly limits: OutboundLimits;
  readonly connector: Connector;
  readonly pool: MeshPool;
  readonly tracker: Tracker;
  readonly closing: () => boolean;
  readonly emit: (e: OutboundEvent) => void;
}

/** One app-facing connection and what it is piped to, tracked for graceful close. */
export interface Tracked {
  readonly sockets: Set<Duplex>;
  readonly closed: Promise<void>;
}

/** The connections open now, for a graceful close. */
export class Tracker {
  readonly #tracked = new Set<Tracked>();

  get size(): number {
    return this.#tracked.size;
  }

  /** Keeps sockets under graceful close; returns the record (add upstreams to it later). */
  track(sockets: Duplex[]): Tracked {
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

  /** Resolves 'drained' when every connection closed, or 'expired' after `graceMs`. */
  async drain(graceMs: number): Promise<'drained' | 'expired'> {
    const drained = Promise.all([...this.#tracked].map((t) => t.closed)).then(
      () => 'drained' as const,
    );
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<'expired'>((resolve) => {
      timer = setTimeout(() => resolve('expired'), graceMs);
    });
    const outcome = await Promise.race([drained, expired]);
    clearTimeout(timer);
    return outcome;
  }

  /** Destroys every tracked socket and resolves when all are closed. */
  async destroyAll(): Promise<void> {
    for (const t of this.#tracked) for (const s of t.sockets) s.destroy();
    await Promise.all([...this.#tracked].map((t) => t.closed));
  }
}

/**
 * Listens on `address` (core's rule: `[::]` is both families); resolves with the address as
 * asked, with the real port when 0 was asked (and `0.0.0.0` when `[::]` fell back to IPv4).
 */
export async function bindServer(
  server: Server,
  address: Address,
  logger?: Logger,
): Promise<Address> {
  const bound = await listenOn(server, address, {
    ...(logger === undefined ? {} : { logger }),
    name: 'outbound',
  });
  return { host: address.host === ALL_ADDRESSES ? bound.host : address.host, port: bound.port };
}

/** Pipes both ways; a half-close passes through; an error on one side destroys the other. */
export function splice(app: Socket, up: Duplex, appEnded = false): void {
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
