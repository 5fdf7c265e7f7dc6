/**
 * Backpressure for Certify: what a CA process takes on when the whole mesh asks at once (a
 * restart storm), so that it keeps issuing at the rate it can sign and validate tokens instead of
 * queueing without bound, timing everyone out and growing in memory.
 *
 * Every call, once decoded and before any expensive check:
 * 1. takes a token from its source's bucket (the peer address), then from its identity's bucket
 *    (the requested identity, not yet authenticated: this bounds what one Deployment's restart
 *    costs the token validator and the API server);
 * 2. runs at once if fewer than `maxInFlight` calls are running, or waits in a bounded queue.
 *    First issuance waits ahead of renewal: a proxy without a certificate cannot serve at all,
 *    one renewing still holds a valid certificate. When the queue is full, a first issuance
 *    takes the place of the newest waiting renewal (which is refused instead).
 * Anything refused gets a {@link RetryLaterError} (RESOURCE_EXHAUSTED) whose hint says when
 * trying again can succeed: when the bucket has a token again, or when the queue ahead is
 * expected to have drained (its length over the running slots, times the mean call time).
 *
 * All of it is per process, so a CA with N workers admits N times these figures; time comes
 * from the injected clock.
 */
import type { Clock } from '../../core/index.js';
import { RetryLaterError } from '../../core/index.js';
import { abandonedError } from './call-state.js';
import type { CallAbandoned, DropObserver } from './call-state.js';

/** Limits of one CA process. A rate or size of 0 turns that limit off. */
export interface AdmissionSettings {
  /** Certify calls being decided at once (most of them wait for the token validator). */
  readonly maxInFlight: number;
  /** Calls waiting for a slot; beyond it RESOURCE_EXHAUSTED. */
  readonly maxQueue: number;
  /** Calls one source (peer address) may make at once, then `sourcePerSecond`. */
  readonly sourceBurst: number;
  readonly sourcePerSecond: number;
  /** Calls for one identity at once, then `identityPerSecond`. */
  readonly identityBurst: number;
  readonly identityPerSecond: number;
}

/** One call asking to be admitted. */
export interface AdmissionRequest {
  /** The requested identity (from the request, not yet authenticated). */
  readonly identity: string;
  /** The peer's address. */
  readonly source: string;
  /** True when the caller proved it holds a valid certificate for this identity. */
  readonly renewal: boolean;
  /** Aborted when the caller is gone (deadline, cancel): a waiting call leaves the queue. */
  readonly signal?: AbortSignal;
  /**
   * Whether the caller has gone (its deadline passed, its stream closed): asked on arrival and
   * when the call's turn comes, so that a call whose caller left is dropped, never run.
   */
  readonly abandoned?: () => CallAbandoned | undefined;
}

/** Why a call was refused, for metrics. */
export type AdmissionRefusal = 'source-rate' | 'identity-rate' | 'queue-full' | 'displaced';

interface Bucket {
  tokens: number;
  at: number;
}

interface Waiter {
  readonly resolve: (release: () => void) => void;
  readonly reject: (err: unknown) => void;
  readonly renewal: boolean;
  readonly unlisten: () => void;
  readonly abandoned: (() => CallAbandoned | undefined) | undefined;
}

/** Most bucket keys remembered; the oldest are forgotten first (a forgotten bucket is full). */
const MAX_KEYS = 50_000;
/** Bounds of a queue-full hint. */
const MIN_HINT_MS = 50;
const MAX_HINT_MS = 30_000;

/**
 * The admission control of one CA process.
 */
export class Admission {
  readonly #s: AdmissionSettings;
  readonly #clock: Clock;
  readonly #onRefused: ((why: AdmissionRefusal) => void) | undefined;
  readonly #onDropped: DropObserver | undefined;
  readonly #sources = new Map<string, Bucket>();
  readonly #identities = new Map<string, Bucket>();
  readonly #first: Waiter[] = [];
  readonly #renewals: Waiter[] = [];
  #inFlight = 0;
  /** Mean time a call holds its slot (exponentially weighted), for the queue-full hint. */
  #meanCallMs = 10;

  constructor(
    settings: AdmissionSettings,
    clock: Clock,
    onRefused?: (why: AdmissionRefusal) => void,
    onDropped?: DropObserver,
  ) {
    this.#s = settings;
    this.#clock = clock;
    this.#onRefused = onRefused;
    this.#onDropped = onDropped;
  }

  /** Calls running and waiting now. */
  get load(): { inFlight: number; queued: number } {
    return { inFlight: this.#inFlight, queued: this.#first.length + this.#renewals.length };
  }

  /**
   * Resolves with the function that gives the slot back (call it exactly once, when the call is
   * done), or rejects with a {@link RetryLaterError}.
   */
  admit(req: AdmissionRequest): Promise<() => void> {
    const gone = req.abandoned?.();
    if (gone !== undefined) return this.#drop(gone);
    const now = this.#clock.now();
    const s = this.#s;
    const sourceWait = takeToken(this.#sources, req.source, now, s.sourceBurst, s.sourcePerSecond);
    if (sourceWait > 0) {
      return this.#refuse('source-rate', `too many Certify calls from ${req.source}`, sourceWait);
    }
    const identityWait = takeToken(
      this.#identities,
      req.identity,
      now,
      s.identityBurst,
      s.identityPerSecond,
    );
    if (identityWait > 0) {
      return this.#refuse(
        'identity-rate',
        'too many Certify calls for this identity',
        identityWait,
      );
    }
    if (s.maxInFlight <= 0 || this.#inFlight < s.maxInFlight) {
      return Promise.resolve(this.#start());
    }
    if (this.load.queued >= s.maxQueue) {
      const displaced = req.renewal ? undefined : this.#renewals.pop();
      if (displaced === undefined) {
        return this.#refuse('queue-full', 'the CA is overloaded', this.#drainHintMs());
      }
      displaced.unlisten();
      this.#onRefused?.('displaced');
      displaced.reject(
        new RetryLaterError(
          'ERR_CERTIFY_OVERLOADED',
          'the CA is overloaded and serving first issuance before renewal',
          this.#drainHintMs(),
        ),
      );
    }
    return new Promise((resolve, reject) => {
      const signal = req.signal;
      const onAbort = (): void => {
        const queue = req.renewal ? this.#renewals : this.#first;
        const i = queue.indexOf(waiter);
        if (i >= 0) queue.splice(i, 1);
        const why = req.abandoned?.() ?? 'gone';
        this.#onDropped?.(why, 'queue');
        reject(abandonedError(why, 'queue'));
      };
      const waiter: Waiter = {
        resolve,
        reject,
        renewal: req.renewal,
        unlisten: () => signal?.removeEventListener('abort', onAbort),
        abandoned: req.abandoned,
      };
      if (signal?.aborted) {
        this.#onDropped?.('gone', 'queue');
        reject(abandonedError('gone', 'queue'));
        return;
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      (req.renewal ? this.#renewals : this.#first).push(waiter);
    });
  }

  #start(): () => void {
    this.#inFlight++;
    const started = this.#clock.now();
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#inFlight--;
      const took = Math.max(0, this.#clock.now() - started);
      this.#meanCallMs = this.#meanCallMs * 0.9 + took * 0.1;
      this.#next();
    };
  }

  #next(): void {
    while (this.#inFlight < this.#s.maxInFlight) {
      const waiter = this.#first.shift() ?? this.#renewals.shift();
      if (waiter === undefined) return;
      waiter.unlisten();
      // Its caller's deadline may have passed while it waited: dropped, and the next one runs.
      const gone = waiter.abandoned?.();
      if (gone !== undefined) {
        this.#onDropped?.(gone, 'queue');
        waiter.reject(abandonedError(gone, 'queue'));
        continue;
      }
      waiter.resolve(this.#start());
    }
  }

  /** When the calls ahead of a newcomer are expected to be done. */
  #drainHintMs(): number {
    const ahead = this.#inFlight + this.load.queued;
    const rounds = ahead / Math.max(1, this.#s.maxInFlight);
    return Math.min(MAX_HINT_MS, Math.max(MIN_HINT_MS, Math.ceil(rounds * this.#meanCallMs)));
  }

  #drop(why: CallAbandoned): Promise<never> {
    this.#onDropped?.(why, 'queue');
    return Promise.reject(abandonedError(why, 'queue'));
  }

  #refuse(why: AdmissionRefusal, reason: string, waitMs: number): Promise<never> {
    this.#onRefused?.(why);
    const code = why === 'queue-full' ? 'ERR_CERTIFY_OVERLOADED' : 'ERR_CERTIFY_RATE_LIMITED';
    return Promise.reject(new RetryLaterError(code, reason, Math.min(MAX_HINT_MS, waitMs)));
  }
}

/**
 * Takes one token from the key's bucket (refilled at `perSecond`, holding at most `burst`).
 * Returns 0 when taken, else the milliseconds until a token will be there. A burst of 0 means
 * no limit.
 */
function takeToken(
  buckets: Map<string, Bucket>,
  key: string,
  now: number,
  burst: number,
  perSecond: number,
): number {
  if (burst <= 0) return 0;
  let b = buckets.get(key);
  if (b === undefined) {
    b = { tokens: burst, at: now };
    if (buckets.size >= MAX_KEYS) {
      const oldest = buckets.keys().next().value;
      if (oldest !== undefined) buckets.delete(oldest);
    }
  } else {
    buckets.delete(key); // re-inserted below: the map's order is least recently used first
  }
  buckets.set(key, b);
  const ratePerMs = perSecond / 1000;
  // A clock that went back refills nothing (and moves the reference back with it).
  b.tokens = Math.min(burst, b.tokens + Math.max(0, now - b.at) * ratePerMs);
  b.at = now;
  if (b.tokens >= 1) {
    b.tokens -= 1;
    return 0;
  }
  return ratePerMs > 0 ? Math.ceil((1 - b.tokens) / ratePerMs) : MAX_HINT_MS;
}
