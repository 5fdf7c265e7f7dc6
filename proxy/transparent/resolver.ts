/**
 * What the transparent outbound asks the destination service, as a small interface the proxy is
 * given (only cli/ wires a real one): a {@link Resolver} that streams the endpoints behind an
 * address (Linkerd's Destination `Get`). {@link DestinationWatches} shares one watch per
 * address among connections, keeps the last answer while the destination service is away, and
 * bounds how long a new connection waits for the first one.
 */
import type { Address, Logger } from '../../core/index.js';
import { formatAddress } from '../../core/index.js';
import { PeakEwmaBalancer } from '../balancer.js';

/** One endpoint behind a destination, as the destination service describes it. */
export interface ResolvedEndpoint {
  /** The endpoint's own address: pod IP and the target port. */
  readonly address: Address;
  /** Whether a meshed proxy runs beside it; only then is `identity` set. */
  readonly meshed: boolean;
  /** The identity its proxy proves (`TlsIdentity.DnsLikeIdentity.name`). */
  readonly identity?: string;
  /** The proxy's inbound port for Linkerd's opaque transport (4143). */
  readonly inboundPort?: number;
  /** What the endpoint is known to speak: `h2` between proxies, or `opaque` (never detect). */
  readonly protocolHint?: 'h2' | 'opaque';
}

/** One answer of a {@link Resolver} stream. */
export type EndpointUpdate =
  /** The full current set of endpoints (not a delta); may be empty. */
  | { readonly kind: 'endpoints'; readonly endpoints: readonly ResolvedEndpoint[] }
  /** The destination service does not know the address: pass it through. */
  | { readonly kind: 'unknown' }
  /** The destination service cannot be reached now; `message` says why. */
  | { readonly kind: 'unavailable'; readonly message: string };

/**
 * Streams the endpoints behind an address (a ClusterIP:port or a pod IP:port) as they change.
 *
 * @example
 * ```ts
 * const stop = resolver.resolve({ host: '10.96.0.12', port: 80 }, (u) => console.log(u.kind));
 * stop();
 * ```
 */
export interface Resolver {
  /** Starts a watch; `onUpdate` hears every answer until the returned function is called. */
  resolve(target: Address, onUpdate: (update: EndpointUpdate) => void): () => void;
}

/** What a connection does with its destination, decided when it arrives. */
export type Decision =
  /** Meshed endpoints: mTLS to them, balanced per request (HTTP) or per connection. */
  | { readonly kind: 'mesh'; readonly watch: DestinationWatch }
  /** Plain TCP to the original destination; `reason` says why. */
  | { readonly kind: 'passthrough'; readonly reason: PassthroughReason };

/** Why a connection passed through in plaintext. */
export type PassthroughReason =
  /** The destination service does not know the address. */
  | 'unknown'
  /** It knows it, but no endpoint is meshed. */
  | 'unmeshed'
  /** The destination service is unreachable and had never answered for this address. */
  | 'unavailable'
  /** No answer within the resolve bound. */
  | 'timeout';

/** Options of {@link DestinationWatches}. */
export interface DestinationWatchesOptions {
  readonly resolver: Resolver;
  readonly now: () => number;
  readonly random: () => number;
  readonly logger: Logger;
  /** The destination service became unreachable for `target` (or again reachable: `false`). */
  readonly onUnavailable?: (target: Address, unavailable: boolean, message: string) => void;
  /** How long a watch nobody uses is kept; default 60 s (Linkerd drops idle services after a minute). */
  readonly idleMs?: number;
}

/** The meshed endpoints of one address, kept current by its watch. */
export class DestinationWatch {
  readonly target: Address;
  readonly balancer: PeakEwmaBalancer<ResolvedEndpoint>;
  /** The last answer, kept while the destination service is unreachable. */
  last: EndpointUpdate | undefined;
  unavailable = false;
  users = 0;
  stop: () => void = () => undefined;
  idleTimer: NodeJS.Timeout | undefined;
  readonly #waiters = new Set<() => void>();

  constructor(target: Address, o: DestinationWatchesOptions) {
    this.target = target;
    this.balancer = new PeakEwmaBalancer(
      (e) => `${formatAddress(e.address)}@${e.identity ?? ''}`,
      o,
    );
  }

  /** Resolves when the first answer arrived, or after `timeoutMs`. */
  answered(timeoutMs: number): Promise<void> {
    if (this.last !== undefined || this.unavailable) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.#waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      this.#waiters.add(done);
    });
  }

  notify(): void {
    for (const w of [...this.#waiters]) w();
  }

  /** What a connection arriving now does. */
  decide(): Decision {
    const last = this.last;
    if (last === undefined)
      return { kind: 'passthrough', reason: this.unavailable ? 'unavailable' : 'timeout' };
    if (last.kind !== 'endpoints') return { kind: 'passthrough', reason: 'unknown' };
    return this.balancer.size > 0
      ? { kind: 'mesh', watch: this }
      : { kind: 'passthrough', reason: 'unmeshed' };
  }
}

/** One resolver watch per address, shared by the connections to it. */
export class DestinationWatches {
  readonly #o: DestinationWatchesOptions;
  readonly #watches = new Map<string, DestinationWatch>();

  constructor(options: DestinationWatchesOptions) {
    this.#o = options;
  }

  /**
   * The decision for a connection to `target`, waiting at most `timeoutMs` for a first answer.
   * Call the returned `release` when the connection closes.
   */
  async lookup(
    target: Address,
    timeoutMs: number,
  ): Promise<{ decision: Decision; release: () => void }> {
    const w = this.#watch(target);
    w.users++;
    if (w.idleTimer !== undefined) clearTimeout(w.idleTimer);
    w.idleTimer = undefined;
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      if (--w.users === 0) this.#idle(w);
    };
    await w.answered(timeoutMs);
    return { decision: w.decide(), release };
  }

  /** Stops every watch. */
  close(): void {
    for (const w of this.#watches.values()) {
      if (w.idleTimer !== undefined) clearTimeout(w.idleTimer);
      w.stop();
    }
    this.#watches.clear();
  }

  #watch(target: Address): DestinationWatch {
    const key = formatAddress(target);
    const existing = this.#watches.get(key);
    if (existing !== undefined) return existing;
    const w = new DestinationWatch(target, this.#o);
    this.#watches.set(key, w);
    w.stop = this.#o.resolver.resolve(target, (u) => this.#update(w, u));
    return w;
  }

  #update(w: DestinationWatch, u: EndpointUpdate): void {
    if (u.kind === 'unavailable') {
      // Keep the last answer: endpoints seldom all change while the control plane is away.
      if (!w.unavailable) {
        w.unavailable = true;
        this.#o.logger.warn(
          { address: formatAddress(w.target), err: u.message, keeping: w.last?.kind ?? 'nothing' },
          'destination service unreachable; keeping the last answer, passing unknown destinations through',
        );
        this.#o.onUnavailable?.(w.target, true, u.message);
      }
      w.notify();
      return;
    }
    if (w.unavailable) {
      w.unavailable = false;
      this.#o.onUnavailable?.(w.target, false, '');
    }
    w.last = u;
    w.balancer.update(
      u.kind === 'endpoints' ? u.endpoints.filter((e) => e.meshed && e.identity !== undefined) : [],
    );
    w.notify();
  }

  #idle(w: DestinationWatch): void {
    w.idleTimer = setTimeout(() => {
      if (w.users > 0) return;
      w.stop();
      this.#watches.delete(formatAddress(w.target));
    }, this.#o.idleMs ?? 60_000);
    w.idleTimer.unref();
  }
}
