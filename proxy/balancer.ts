/**
 * Per-request load balancing over a destination's endpoints, as Linkerd's proxy does it: power
 * of two choices over peak-EWMA latency. Each pick draws two distinct endpoints at random and
 * takes the one with the lower cost, `rtt estimate × (requests in flight + 1)`. The estimate
 * jumps to any slower observation at once (the peak) and decays toward faster ones with a time
 * constant (10 s), so a slow endpoint is avoided quickly and trusted again slowly; between
 * observations it decays toward zero (as tower's PeakEwma, which Linkerd uses), so an endpoint
 * that gets no requests is tried again. An endpoint with no observation yet starts at 30 ms
 * (Linkerd's defaults for both).
 *
 * Endpoint sets are replaced as the resolver reports them: a removed endpoint is never picked
 * again; requests already on it finish.
 */

/** Linkerd's default initial RTT estimate and decay. */
const DEFAULT_RTT_MS = 30;
const DEFAULT_DECAY_MS = 10_000;

/** Options of {@link PeakEwmaBalancer}. */
interface BalancerOptions {
  /** Milliseconds, monotonic enough for latencies. */
  readonly now: () => number;
  /** Uniform in [0, 1). */
  readonly random: () => number;
  readonly defaultRttMs?: number;
  readonly decayMs?: number;
}

/** The load of one endpoint. */
class Load {
  pending = 0;
  /** When the estimate was last updated. */
  stamp: number;
  constructor(
    public rttMs: number,
    now: number,
  ) {
    this.stamp = now;
  }
}

/**
 * One request's claim on an endpoint: call `done` when its answer is complete (later calls do
 * nothing). `observe: false` (a connection rather than a request) releases the claim without
 * taking its duration as a latency.
 */
export interface Pick<E> {
  readonly endpoint: E;
  done(observe?: boolean): void;
}

/**
 * P2C over peak-EWMA for endpoints of type `E`, keyed by `keyOf`.
 */
export class PeakEwmaBalancer<E> {
  readonly #keyOf: (e: E) => string;
  readonly #o: Required<BalancerOptions>;
  #endpoints: { readonly e: E; readonly load: Load }[] = [];

  constructor(keyOf: (e: E) => string, options: BalancerOptions) {
    this.#keyOf = keyOf;
    this.#o = { defaultRttMs: DEFAULT_RTT_MS, decayMs: DEFAULT_DECAY_MS, ...options };
  }

  get size(): number {
    return this.#endpoints.length;
  }

  /** The endpoints now, in the order last given. */
  endpoints(): E[] {
    return this.#endpoints.map((x) => x.e);
  }

  /** Replaces the set; endpoints that stay keep their load. */
  update(endpoints: readonly E[]): void {
    const old = new Map(this.#endpoints.map((x) => [this.#keyOf(x.e), x.load]));
    const now = this.#o.now();
    const seen = new Set<string>();
    const next: { e: E; load: Load }[] = [];
    for (const e of endpoints) {
      const key = this.#keyOf(e);
      if (seen.has(key)) continue;
      seen.add(key);
      next.push({ e, load: old.get(key) ?? new Load(this.#o.defaultRttMs, now) });
    }
    this.#endpoints = next;
  }

  /** Picks an endpoint for one request, or undefined when there is none. */
  pick(): Pick<E> | undefined {
    const list = this.#endpoints;
    if (list.length === 0) return undefined;
    let chosen = list[0]!;
    if (list.length > 1) {
      const i = Math.floor(this.#o.random() * list.length);
      // A second index distinct from the first, uniform over the others.
      let j = Math.floor(this.#o.random() * (list.length - 1));
      if (j >= i) j++;
      const a = list[i]!;
      const b = list[j]!;
      chosen = this.#cost(b.load) < this.#cost(a.load) ? b : a;
    }
    const load = chosen.load;
    const started = this.#o.now();
    load.pending++;
    let finished = false;
    return {
      endpoint: chosen.e,
      done: (observe = true) => {
        if (finished) return;
        finished = true;
        load.pending--;
        if (observe) this.#observe(load, this.#o.now() - started);
      },
    };
  }

  /** Takes one observation: the peak at once, else a time-weighted move toward it. */
  #observe(load: Load, rttMs: number): void {
    this.#update(load, rttMs);
  }

  /** The cost now; reading it is an observation of 0, so an idle estimate decays toward zero. */
  #cost(load: Load): number {
    this.#update(load, 0);
    return load.rttMs * (load.pending + 1);
  }

  #update(load: Load, rttMs: number): void {
    const now = this.#o.now();
    const w = Math.exp(-Math.max(0, now - load.stamp) / this.#o.decayMs);
    load.rttMs = rttMs > load.rttMs ? rttMs : load.rttMs * w + rttMs * (1 - w);
    load.stamp = now;
  }
}
