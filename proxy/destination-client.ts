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
 */
import { connect as http2Connect, constants as h2 } from 'node:http2';
import type { ClientHttp2Session, ClientHttp2Stream } from 'node:http2';
import type {
  Address,
  DestinationUpdate,
  Logger,
  MeshTlsSettings,
  Random,
  Registry,
} from '../core/index.js';
import {
  Counter,
  DESTINATION_GET_PATH,
  Gauge,
  backoffDelay,
  decodeDestinationUpdate,
  decodeGrpcMessage,
  encodeGetDestination,
  formatAddress,
  frameGrpcMessage,
  systemRandom,
} from '../core/index.js';
import { identityOfCertificate } from './tls.js';

/** What to resolve: an original destination address, or a Service name (`web.shop.svc.cluster.local`). */
export type ResolveTarget =
  { readonly ip: string; readonly port: number } | { readonly name: string; readonly port: number };

/** One endpoint of an answer. */
export interface ResolvedEndpoint {
  readonly ip: string;
  readonly port: number;
  /** Meshed: the identity its certificate must name (connect with mTLS to exactly this). Absent: plain TCP. */
  readonly identity?: string;
  /** `h2`: HTTP over the multiplexed HTTP/2 mTLS connection; `opaque`: the bytes as they are. */
  readonly protocol?: 'h2' | 'opaque';
  /** For an opaque port of a meshed endpoint: its proxy's inbound port, for the transport.l5d.io/v1 header. */
  readonly opaqueTransportPort?: number;
  readonly weight: number;
  /** Labels for metrics (`pod`, `serviceaccount`, and the set's `namespace`, `service`). */
  readonly labels: Readonly<Record<string, string>>;
}

/** Why an answer says to pass a connection through as plain TCP to its original destination. */
export type PassThroughReason =
  /** The destination service does not know the target (not a Service, not a pod). */
  | 'unknown'
  /** No answer could be had: the service is unreachable, or did not answer in time. */
  | 'unavailable'
  /** The service refused the target as malformed. */
  | 'invalid';

/** An answer. */
export type EndpointSet =
  | {
      readonly kind: 'endpoints';
      /** Every ready endpoint, by `ip:port` (IPv6 in brackets). */
      readonly endpoints: ReadonlyMap<string, ResolvedEndpoint>;
      /** True while the service is unreachable: this is the last answer it gave. */
      readonly stale: boolean;
    }
  /** The target exists (a Service) but has no ready endpoint: fail the connection, do not bypass. */
  | { readonly kind: 'no-endpoints'; readonly stale: boolean }
  | { readonly kind: 'pass-through'; readonly reason: PassThroughReason };

/**
 * A followed target. Take `current()` for the answer now, `answer()` to wait for the first one
 * (bounded: it never stalls a connection), `onChange` to hear of changes; `close()` when done.
 */
export interface EndpointWatch {
  readonly target: ResolveTarget;
  /** The answer now; undefined until the first one (or until the wait for it gave up). */
  current(): EndpointSet | undefined;
  /**
   * The first answer; pass-through (`unavailable`) at once while the service is unreachable, or
   * after `timeoutMs` (default the client's `answerTimeoutMs`) without one.
   */
  answer(timeoutMs?: number): Promise<EndpointSet>;
  /** Called with each new answer; returns the function that stops it. */
  onChange(listener: (set: EndpointSet) => void): () => void;
  /** Releases this watch (the answer is kept a while for the next caller). */
  close(): void;
}

/**
 * What the transparent outbound needs: resolve a target to a watch of its answers.
 *
 * @example
 * ```ts
 * const watch = resolver.resolve({ ip: '10.96.0.10', port: 80 });
 * const set = await watch.answer();
 * if (set.kind === 'pass-through') return plainTcp(original);
 * ```
 */
export interface Resolver {
  resolve(target: ResolveTarget): EndpointWatch;
}

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

function targetPath(t: ResolveTarget): string {
  if ('name' in t) return `${t.name}:${t.port}`;
  return t.ip.includes(':') ? `[${t.ip}]:${t.port}` : `${t.ip}:${t.port}`;
}

function addrKey(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** Largest message accepted on a stream (an add of a few thousand endpoints). */
const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;
const INVALID_ARGUMENT = 3;

interface ClientMetrics {
  available: Gauge;
  outages: Counter;
  passThrough: Counter;
  targets: Gauge;
  reconnects: Counter;
}

/** One target's stream and answer, shared by every watch of it. */
class Entry {
  readonly path: string;
  refs = 0;
  idleTimer: NodeJS.Timeout | undefined;
  stream: ClientHttp2Stream | undefined;
  /** Endpoints held; undefined before the first answer. */
  held: Map<string, ResolvedEndpoint> | undefined;
  exists = false;
  invalid = false;
  stale = false;
  /** True until the first message of the current stream (a snapshot that replaces what is held). */
  fresh = true;
  readonly listeners = new Set<(set: EndpointSet) => void>();
  readonly waiters = new Set<(set: EndpointSet) => void>();

  constructor(readonly target: ResolveTarget) {
    this.path = targetPath(target);
  }

  get set(): EndpointSet | undefined {
    if (this.invalid) return { kind: 'pass-through', reason: 'invalid' };
    if (this.held === undefined) return undefined;
    if (!this.exists) return { kind: 'pass-through', reason: 'unknown' };
    if (this.held.size === 0) return { kind: 'no-endpoints', stale: this.stale };
    return { kind: 'endpoints', endpoints: new Map(this.held), stale: this.stale };
  }

  /** Applies one update; the first of a stream replaces what is held. */
  apply(u: DestinationUpdate): void {
    const held =
      this.fresh || this.held === undefined ? new Map<string, ResolvedEndpoint>() : this.held;
    this.fresh = false;
    this.stale = false;
    if ('add' in u) {
      this.exists = true;
      for (const a of u.add.addrs) {
        const hint = a.protocolHint;
        held.set(addrKey(a.addr.ip, a.addr.port), {
          ip: a.addr.ip,
          port: a.addr.port,
          weight: a.weight,
          labels: { ...u.add.metricLabels, ...a.metricLabels },
          ...(a.tlsIdentity === undefined ? {} : { identity: a.tlsIdentity }),
          ...(hint?.protocol === undefined ? {} : { protocol: hint.protocol }),
          ...(hint?.opaqueTransport === undefined
            ? {}
            : { opaqueTransportPort: hint.opaqueTransport.inboundPort }),
        });
      }
    } else if ('remove' in u) {
      this.exists = true;
      for (const a of u.remove.addrs) held.delete(addrKey(a.ip, a.port));
    } else {
      this.exists = u.noEndpoints.exists;
      held.clear();
    }
    this.held = held;
    this.notify();
  }

  notify(): void {
    const set = this.set;
    if (set === undefined) return;
    for (const w of [...this.waiters]) w(set);
    this.waiters.clear();
    for (const l of [...this.listeners]) l(set);
  }
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
    const stream = session.request({
      [h2.HTTP2_HEADER_METHOD]: 'POST',
      [h2.HTTP2_HEADER_PATH]: DESTINATION_GET_PATH,
      [h2.HTTP2_HEADER_AUTHORITY]: this.#o.serverName,
      [h2.HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc',
      [h2.HTTP2_HEADER_TE]: 'trailers',
    });
    e.stream = stream;
    e.fresh = true;
    let buffered: Buffer = Buffer.alloc(0);
    let trailers: Record<string, unknown> | undefined;
    let headers: Record<string, unknown> = {};
    stream.on('response', (h) => (headers = h));
    stream.on('trailers', (t) => (trailers = t));
    stream.on('data', (chunk: Buffer) => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      while (buffered.length >= 5) {
        const len = buffered.readUInt32BE(1);
        if (buffered[0] !== 0 || len > MAX_MESSAGE_BYTES) {
          stream.close(h2.NGHTTP2_CANCEL);
          this.#failed(e, 'the destination service sent a compressed or oversized message');
          return;
        }
        if (buffered.length < 5 + len) break;
        const message = buffered.subarray(5, 5 + len);
        buffered = buffered.subarray(5 + len);
        let update: DestinationUpdate;
        try {
          update = decodeDestinationUpdate(message);
        } catch (err) {
          stream.close(h2.NGHTTP2_CANCEL);
          this.#failed(e, (err as Error).message);
          return;
        }
        this.#up();
        e.apply(update);
      }
    });
    stream.on('error', () => undefined); // the 'close' below says what happened
    // On the next turn: a failed connection's 'error' (which says why) comes after its streams close.
    stream.on('close', () =>
      setImmediate(() => {
        if (e.stream !== stream) return;
        e.stream = undefined;
        if (this.#closed || this.#entries.get(e.path) !== e) return;
        const final = trailers ?? headers;
        const status = final['grpc-status'];
        if (status === String(INVALID_ARGUMENT)) {
          // Permanent: the service will never know this target; say so and stop asking.
          e.invalid = true;
          this.#o.logger.debug(
            {
              target: e.path,
              reason: decodeGrpcMessage(final['grpc-message'] as string | undefined),
            },
            'destination refused the target',
          );
          e.notify();
          return;
        }
        const why =
          status === undefined
            ? (this.#sessionError ?? `stream closed (code ${stream.rstCode})`)
            : `stream ended with gRPC status ${String(status)} ${decodeGrpcMessage(final['grpc-message'] as string | undefined)}`;
        this.#failed(e, why);
      }),
    );
    stream.end(
      frameGrpcMessage(
        encodeGetDestination({
          scheme: 'k8s',
          path: e.path,
          contextToken: this.#o.contextToken ?? '',
        }),
      ),
    );
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
