/**
 * The proxy's client of the destination service: it resolves an original destination (an
 * address, or a Service name) to the endpoints behind it, each with the identity to require and
 * how to carry traffic to it, and keeps following the answer as it changes.
 *
 * - One `Get` stream per target, over one HTTP/2 mTLS connection to the destination service
 *   (node's http2, not grpc-js: a sidecar does not carry grpc-js's memory for one API). The
 *   service must present exactly its identity; the proxy presents its own certificate.
 * - Answers are cached: several resolutions of one target share its stream, and a target no
 *   longer used is kept `idleMs` so that a connection-by-connection caller does not churn streams.
 * - When the service is unreachable the last answers stay in use (marked `stale`), an unknown
 *   target is answered "pass through" at once, never stalled; the outage is logged once when it
 *   starts and once when it ends, and `destination_client_available` says which it is now.
 *   Streams are reopened after a jittered, capped exponential backoff (core's `backoffDelay`,
 *   the one the Kubernetes watch loop uses).
 *
 * What it answers (the types and the per-target record that applies updates) is in
 * destination-answers.ts; one `Get` stream's gRPC reading in destination-stream.ts.
 */
import { connect as http2Connect, constants as h2 } from 'node:http2';
import type { ClientHttp2Session } from 'node:http2';
import type { Address, Logger, MeshTlsSettings, Random, Registry } from '../core/index.js';
import { Counter, Gauge, backoffDelay, formatAddress, systemRandom } from '../core/index.js';
import { Entry, targetPath } from './destination-answers.js';
import type { EndpointSet, EndpointWatch, ResolveTarget, Resolver } from './destination-answers.js';
import { openGetStream } from './destination-stream.js';
import { identityOfCertificate } from './tls.js';

export type {
  EndpointSet,
  EndpointWatch,
  PassThroughReason,
  ResolveTarget,
  ResolvedEndpoint,
  Resolver,
} from './destination-answers.js';

/** The certificate the proxy holds (the destination service requires one). */
export interface ClientCertificate {
  readonly keyPem: string;
  readonly certChainPem: string;
}

/** Settings of a {@link DestinationClient}. */
export interface DestinationClientOptions {
  readonly address: Address;
  /** The identity the service's certificate must name (`linkerd-destination.<cp-ns>.serviceaccount.identity...`). */
  readonly serverName: string;
  readonly anchorsPem: () => string;
  readonly certificate: () => ClientCertificate | undefined;
  readonly logger: Logger;
  readonly tls?: MeshTlsSettings;
  /** `context_token` sent with each request (the pod's namespace and name, as Linkerd's injector writes it). */
  readonly contextToken?: string;
  readonly registry?: Registry;
  readonly random?: Random;
  /** First and longest wait before reopening streams after a failure; default 500 ms and 30 s. */
  readonly backoffMs?: { readonly min: number; readonly max: number };
  /** How long `answer()` waits for a first answer by default; default 1 s. */
  readonly answerTimeoutMs?: number;
  /** How long an unused target's stream and answer are kept; default 60 s. */
  readonly idleMs?: number;
  /** Most targets followed at once; beyond it new targets are answered pass-through. Default 10,000. */
  readonly maxTargets?: number;
  /** HTTP/2 PING interval on the connection, to notice a service gone silent; default 15 s. */
  readonly pingIntervalMs?: number;
}

interface ClientMetrics {
  available: Gauge;
  outages: Counter;
  passThrough: Counter;
  targets: Gauge;
  reconnects: Counter;
}

/**
 * The client. One per proxy.
 *
 * @example
 * ```ts
 * const destinations = new DestinationClient({
 *   address: { host: 'linkerd-dst.linkerd.svc', port: 8086 },
 *   serverName: 'linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local',
 *   anchorsPem: () => anchors.current().pem,
 *   certificate: () => identity.current(),
 *   logger,
 * });
 * const watch = destinations.resolve({ ip: '10.96.0.10', port: 80 });
 * ```
 */
export class DestinationClient implements Resolver {
  readonly #o: DestinationClientOptions;
  readonly #entries = new Map<string, Entry>();
  readonly #waiting = new Set<Entry>();
  readonly #metrics: ClientMetrics | undefined;
  #session: ClientHttp2Session | undefined;
  #ping: NodeJS.Timeout | undefined;
  #retryTimer: NodeJS.Timeout | undefined;
  #failures = 0;
  #outage: { since: number; reason: string } | undefined;
  #closed = false;
  /** Why the last connection failed (a stream's close says less: "code 2"). */
  #sessionError: string | undefined;

  constructor(options: DestinationClientOptions) {
    this.#o = options;
    const registry = options.registry;
    this.#metrics =
      registry === undefined
        ? undefined
        : {
            available: new Gauge({
              name: 'destination_client_available',
              help: 'Whether the destination service answers (1), or the proxy runs on its last answers and passes unknown destinations through (0)',
              registers: [registry],
            }),
            outages: new Counter({
              name: 'destination_client_outages_total',
              help: 'Times the destination service became unreachable',
              registers: [registry],
            }),
            passThrough: new Counter({
              name: 'destination_client_pass_through_total',
              help: 'Answers that said to pass a connection through as plain TCP, by reason (unknown, unavailable, invalid)',
              labelNames: ['reason'],
              registers: [registry],
            }),
            reconnects: new Counter({
              name: 'destination_client_reconnects_total',
              help: 'Times failed streams to the destination service were opened again (after the backoff)',
              registers: [registry],
            }),
            targets: new Gauge({
              name: 'destination_client_targets',
              help: 'Destinations followed now',
              registers: [registry],
            }),
          };
    this.#metrics?.available.set(1);
  }

  /** False while the destination service is unreachable. */
  get available(): boolean {
    return this.#outage === undefined;
  }

  /** Targets followed now (in use or idle). */
  get targets(): number {
    return this.#entries.size;
  }

  resolve(target: ResolveTarget): EndpointWatch {
    const path = targetPath(target);
    let entry = this.#entries.get(path);
    if (entry === undefined && this.#entries.size >= (this.#o.maxTargets ?? 10_000))
      this.#evictIdle();
    if (entry === undefined && this.#entries.size >= (this.#o.maxTargets ?? 10_000)) {
      return this.#fixed(target, { kind: 'pass-through', reason: 'unavailable' });
    }
    if (entry === undefined) {
      entry = new Entry(target);
      this.#entries.set(path, entry);
      this.#metrics?.targets.set(this.#entries.size);
      this.#open(entry);
    }
    const e = entry;
    e.refs++;
    clearTimeout(e.idleTimer);
    e.idleTimer = undefined;
    const mine = new Set<(set: EndpointSet) => void>();
    let closed = false;
    return {
      target,
      current: () => e.set,
      answer: (timeoutMs) => this.#answer(e, timeoutMs ?? this.#o.answerTimeoutMs ?? 1000),
      onChange: (listener) => {
        e.listeners.add(listener);
        mine.add(listener);
        return () => {
          e.listeners.delete(listener);
          mine.delete(listener);
        };
      },
      close: () => {
        if (closed) return;
        closed = true;
        for (const l of mine) e.listeners.delete(l);
        if (--e.refs === 0) this.#idle(e);
      },
    };
  }

  /** Closes every stream and the connection; answers from now on are pass-through. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    clearInterval(this.#ping);
    for (const e of this.#entries.values()) {
      clearTimeout(e.idleTimer);
      e.stream?.close(h2.NGHTTP2_CANCEL);
    }
    this.#entries.clear();
    this.#session?.close();
    this.#session = undefined;
  }

  #fixed(target: ResolveTarget, set: EndpointSet): EndpointWatch {
    if (set.kind === 'pass-through') this.#metrics?.passThrough.inc({ reason: set.reason });
    return {
      target,
      current: () => set,
      answer: () => Promise.resolve(set),
      onChange: () => () => undefined,
      close: () => undefined,
    };
  }

  #answer(e: Entry, timeoutMs: number): Promise<EndpointSet> {
    const counted = (set: EndpointSet): EndpointSet => {
      if (set.kind === 'pass-through') this.#metrics?.passThrough.inc({ reason: set.reason });
      return set;
    };
    const now = e.set;
    if (now !== undefined) return Promise.resolve(counted(now));
    const unavailable: EndpointSet = { kind: 'pass-through', reason: 'unavailable' };
    // Unreachable: do not make the connection wait for a stream that cannot answer.
    if (this.#outage !== undefined || this.#closed) return Promise.resolve(counted(unavailable));
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        e.waiters.delete(done);
        resolve(counted(unavailable));
      }, timeoutMs);
      timer.unref();
      const done = (set: EndpointSet): void => {
        clearTimeout(timer);
        resolve(counted(set));
      };
      e.waiters.add(done);
    });
  }

  #idle(e: Entry): void {
    e.idleTimer = setTimeout(() => this.#forget(e), this.#o.idleMs ?? 60_000);
    e.idleTimer.unref();
  }

  #forget(e: Entry): void {
    if (e.refs > 0 || this.#entries.get(e.path) !== e) return;
    clearTimeout(e.idleTimer);
    this.#entries.delete(e.path);
    this.#waiting.delete(e);
    e.stream?.close(h2.NGHTTP2_CANCEL);
    e.stream = undefined;
    this.#metrics?.targets.set(this.#entries.size);
  }

  #evictIdle(): void {
    for (const e of this.#entries.values()) if (e.refs === 0) this.#forget(e);
  }

  // ---- the connection ---------------------------------------------------------------------------

  #sessionNow(): ClientHttp2Session {
    const current = this.#session;
    if (current !== undefined && !current.closed && !current.destroyed) return current;
    const cert = this.#o.certificate();
    if (cert === undefined) throw new Error('the proxy has no certificate yet');
    const { address, serverName } = this.#o;
    this.#sessionError = undefined;
    const session = http2Connect(`https://${formatAddress(address)}`, {
      ...this.#o.tls,
      ca: this.#o.anchorsPem(),
      servername: serverName,
      key: cert.keyPem,
      cert: cert.certChainPem,
      checkServerIdentity: (_host, peer) =>
        identityOfCertificate(peer) === serverName
          ? undefined
          : new Error(
              `the destination service presented ${identityOfCertificate(peer) ?? 'no identity'}, not ${serverName}`,
            ),
      maxSessionMemory: 16,
    });
    session.unref();
    session.on('error', (err) => {
      this.#sessionError = err.message;
      this.#down(err.message);
    });
    const forget = (): void => {
      if (this.#session === session) {
        this.#session = undefined;
        clearInterval(this.#ping);
      }
    };
    session.on('close', forget);
    session.on('goaway', forget);
    clearInterval(this.#ping);
    this.#ping = setInterval(() => {
      if (session.closed || session.destroyed) return;
      const deadline = setTimeout(() => {
        session.destroy(new Error('the destination service did not answer a ping'));
      }, 10_000);
      deadline.unref();
      try {
        session.ping((err) => {
          clearTimeout(deadline);
          if (err !== null) session.destroy(err);
        });
      } catch {
        clearTimeout(deadline);
      }
    }, this.#o.pingIntervalMs ?? 15_000);
    this.#ping.unref();
    this.#session = session;
    return session;
  }

  /** Opens (or reopens) an entry's Get stream. */
  #open(e: Entry): void {
    if (this.#closed || this.#entries.get(e.path) !== e) return;
    let session: ClientHttp2Session;
    try {
      session = this.#sessionNow();
    } catch (err) {
      this.#failed(e, (err as Error).message);
      return;
    }
    e.fresh = true;
    const stream = openGetStream(
      session,
      { path: e.path, authority: this.#o.serverName, contextToken: this.#o.contextToken ?? '' },
      {
        update: (u) => {
          this.#up();
          e.apply(u);
        },
        connectionError: () => this.#sessionError,
        end: (end) => {
          if (e.stream !== stream) return;
          e.stream = undefined;
          if (this.#closed || this.#entries.get(e.path) !== e) return;
          if (end.kind === 'failed') {
            this.#failed(e, end.reason);
            return;
          }
          // Permanent: the service will never know this target; say so and stop asking.
          e.invalid = true;
          this.#o.logger.debug(
            { target: e.path, reason: end.message },
            'destination refused the target',
          );
          e.notify();
        },
      },
    );
    e.stream = stream;
  }

  /** A stream ended or could not open: keep its answer (stale), reopen after the backoff. */
  #failed(e: Entry, reason: string): void {
    if (e.held !== undefined && !e.stale) {
      e.stale = true;
      e.notify();
    }
    // Whoever waits for a first answer is not kept waiting for a service that cannot give it.
    if (e.held === undefined && !e.invalid) {
      for (const w of [...e.waiters]) w({ kind: 'pass-through', reason: 'unavailable' });
      e.waiters.clear();
    }
    this.#down(reason);
    this.#waiting.add(e);
    if (this.#retryTimer !== undefined || this.#closed) return;
    this.#failures++;
    const { min, max } = this.#o.backoffMs ?? { min: 500, max: 30_000 };
    const delay = backoffDelay(this.#failures, min, max, this.#o.random ?? systemRandom);
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#metrics?.reconnects.inc();
      const again = [...this.#waiting];
      this.#waiting.clear();
      for (const w of again) this.#open(w);
    }, delay);
    this.#retryTimer.unref();
  }

  /** The service is unreachable: logged and counted once per outage. */
  #down(reason: string): void {
    if (this.#outage !== undefined || this.#closed) return;
    this.#outage = { since: Date.now(), reason };
    this.#metrics?.available.set(0);
    this.#metrics?.outages.inc();
    this.#o.logger.warn(
      { destination: formatAddress(this.#o.address), reason },
      'destination service unreachable: keeping the last answers and passing unknown destinations through',
    );
  }

  /** An answer arrived: the outage, if any, is over. */
  #up(): void {
    this.#failures = 0;
    if (this.#outage === undefined) return;
    const seconds = Math.round((Date.now() - this.#outage.since) / 100) / 10;
    this.#outage = undefined;
    this.#metrics?.available.set(1);
    this.#o.logger.info(
      { destination: formatAddress(this.#o.address), outageSeconds: seconds },
      'destination service reachable again',
    );
  }
}
