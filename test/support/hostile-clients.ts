/**
 * Misbehaving clients for the listener-limit tests (issue 20): a slowloris that sends a request
 * head one byte at a time, and connections from chosen loopback source addresses (127.0.0.0/8 is
 * all local on Linux, so each address is a distinct peer to the server). Real sockets only.
 */
import { once } from 'node:events';
import { connect as netConnect } from 'node:net';
import type { Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { ConnectionOptions } from 'node:tls';
import type { Address } from '../../core/index.js';
import { waitFor } from './ca-process.js';

/** TLS settings for a client that connects over TLS (SNI, anchors, a client certificate...). */
export type TlsClient = Omit<ConnectionOptions, 'host' | 'port' | 'socket'>;

/** A connected socket (TCP, or TLS once its handshake is done) from `from`. */
export async function openFrom(
  to: Address,
  from: string,
  tls?: TlsClient,
): Promise<{ socket: Socket; closed: Promise<string> }> {
  const raw = netConnect({ host: to.host, port: to.port, localAddress: from });
  const socket = tls === undefined ? raw : tlsConnect({ ...tls, socket: raw });
  const closed = outcome(socket);
  // A refused connection may be reset before the connect callback (then 'error' rejects once).
  await Promise.race([
    once(socket, tls === undefined ? 'connect' : 'secureConnect').catch(() => undefined),
    closed,
  ]);
  return { socket, closed };
}

/**
 * How a socket ended: `reset` (ECONNRESET, as a refused connection ends), `closed` (a clean end)
 * or `error <code>`. Reads and drops what arrives.
 */
function outcome(socket: Socket): Promise<string> {
  let why = 'closed';
  socket.on('error', (err: NodeJS.ErrnoException) => {
    why = err.code === 'ECONNRESET' ? 'reset' : `error ${err.code ?? err.message}`;
  });
  socket.resume();
  // Not events.once: it would reject on the 'error' that comes before 'close'.
  return new Promise((resolve) => socket.once('close', () => resolve(why)));
}

/** What a slowloris got. */
export interface SlowHeadResult {
  /** Everything the server sent back (its 408, say). */
  readonly response: string;
  /** Bytes of the head sent before the server closed the connection. */
  readonly sent: number;
  /** Whether the whole head went out (the server waited for all of it). */
  readonly finished: boolean;
}

/**
 * Sends `head` one byte every `intervalMs` (each byte resets any idle timer), after `prefix` at
 * once, until the server closes the connection, or the head is out and `afterMs` more have
 * passed.
 *
 * @example
 * ```ts
 * const r = await slowHead(server, 'GET /live HTTP/1.1\r\nhost: x\r\n\r\n', { intervalMs: 50 });
 * assert.match(r.response, /^HTTP\/1.1 408/);
 * ```
 */
export async function slowHead(
  to: Address,
  head: string,
  o: { intervalMs: number; from?: string; tls?: TlsClient; afterMs?: number; prefix?: string },
): Promise<SlowHeadResult> {
  const { socket, closed } = await openFrom(to, o.from ?? '127.0.0.1', o.tls);
  // What goes out at once before the dribble (a complete head, to dribble a body).
  if (o.prefix !== undefined) socket.write(o.prefix, 'latin1');
  const chunks: Buffer[] = [];
  socket.on('data', (d: Buffer) => chunks.push(d));
  let sent = 0;
  let done = false;
  void closed.then(() => (done = true));
  const bytes = Buffer.from(head, 'latin1');
  while (!done && sent < bytes.length) {
    socket.write(bytes.subarray(sent, sent + 1));
    sent++;
    await new Promise((r) => setTimeout(r, o.intervalMs));
  }
  if (!done) {
    const timer = setTimeout(() => socket.destroy(), o.afterMs ?? 2000);
    await closed;
    clearTimeout(timer);
  }
  return {
    response: Buffer.concat(chunks).toString('latin1'),
    sent,
    finished: sent === bytes.length,
  };
}

/** What {@link perPeerCapScenario} saw. */
export interface PerPeerCapResult {
  /** How the connection beyond the attacker's share ended. */
  readonly beyondShare: string;
  /** How the connection beyond the total ended. */
  readonly beyondTotal: string;
  /** Whether a connection of the attacker's was taken again once one of its own had closed. */
  readonly readmitted: boolean;
}

/** The server's own count of its connections (core's PeerBudget of limitConnections). */
export interface ConnectionCounts {
  readonly inUse: number;
  heldBy(peer: string): number;
}

/**
 * Against a listener limited to `perPeer` connections per address and `total` in all (total >=
 * perPeer + 2): 127.0.0.2 opens its share and one more; 127.0.0.10 and up (each within its share)
 * fill up to the total and 127.0.0.4 opens one more; then one of 127.0.0.2's closes and it opens
 * another. `honest` is run while the
 * attacker holds its share and must succeed (it is the caller's assertion that another peer is
 * served). Waits on the server's own counts, never on time.
 */
export async function perPeerCapScenario(
  to: Address,
  limits: { total: number; perPeer: number },
  counts: ConnectionCounts,
  o: { tls?: TlsClient; honest: () => Promise<void> },
): Promise<PerPeerCapResult> {
  const opened: { socket: Socket; closed: Promise<string> }[] = [];
  try {
    for (let i = 0; i < limits.perPeer; i++) opened.push(await openFrom(to, '127.0.0.2', o.tls));
    await waitFor('the attacker holding its share', () =>
      counts.heldBy('127.0.0.2') === limits.perPeer ? true : undefined,
    );
    const beyond = await openFrom(to, '127.0.0.2', o.tls);
    const beyondShare = await beyond.closed;
    await o.honest();
    const filler = limits.total - limits.perPeer;
    await waitFor('the honest client gone', () =>
      counts.inUse === limits.perPeer ? true : undefined,
    );
    // Others, each within its share, fill up to the total.
    for (let i = 0; i < filler; i++) {
      opened.push(await openFrom(to, `127.0.0.${10 + Math.floor(i / limits.perPeer)}`, o.tls));
    }
    await waitFor('every connection taken', () =>
      counts.inUse === limits.total ? true : undefined,
    );
    const last = await openFrom(to, '127.0.0.4', o.tls);
    const beyondTotal = await last.closed;
    opened[0]!.socket.destroy();
    await opened[0]!.closed;
    await waitFor('a connection freed', () =>
      counts.inUse === limits.total - 1 ? true : undefined,
    );
    const again = await openFrom(to, '127.0.0.2', o.tls);
    opened.push(again);
    const readmitted = await waitFor('the attacker admitted again', () =>
      counts.heldBy('127.0.0.2') === limits.perPeer ? true : undefined,
    );
    return { beyondShare, beyondTotal, readmitted };
  } finally {
    for (const c of opened) c.socket.destroy();
  }
}

/**
 * Tries TLS session resumption against a server that speaks first once connected (HTTP/2's
 * SETTINGS): a first connection keeps any session ticket it is given (tickets come right after
 * the handshake, before the server's first application bytes, so waiting for those is enough),
 * and a second connection offers it. `offered` says the second connection had one to offer.
 */
export async function tryResumption(
  to: Address,
  tls: TlsClient,
): Promise<{ offered: boolean; resumed: boolean }> {
  const once1 = async (
    session?: Buffer,
  ): Promise<{ ticket: Buffer | undefined; reused: boolean }> => {
    const socket = tlsConnect({ ...tls, host: to.host, port: to.port, session });
    let ticket: Buffer | undefined;
    socket.on('session', (s: Buffer) => (ticket = s));
    socket.on('error', () => undefined);
    await once(socket, 'secureConnect');
    const reused = socket.isSessionReused();
    await once(socket, 'data');
    socket.destroy();
    return { ticket, reused };
  };
  const first = await once1();
  const second = await once1(first.ticket);
  // OpenSSL hands out a TLS 1.3 session even without tickets (a stateful one, which a server
  // without a session cache cannot resume): the second connection always offers something.
  return { offered: first.ticket !== undefined, resumed: second.reused };
}
