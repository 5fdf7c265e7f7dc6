/**
 * Time and randomness are passed in, never reached for globally, so tests control them.
 */
import { randomFillSync } from 'node:crypto';

/** A source of the current time. */
export interface Clock {
  /** Milliseconds since the Unix epoch. */
  now(): number;
}

/** Timers, passed in like the clock so that tests fire them by hand instead of waiting. */
export interface Timers {
  set(fn: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

/**
 * Node's timers, unref'd: a pending timer alone does not keep the process alive.
 *
 * @example
 * ```ts
 * const handle = systemTimers.set(() => void renew(), 60_000);
 * systemTimers.clear(handle);
 * ```
 */
export const systemTimers: Timers = Object.freeze({
  set: (fn: () => void, ms: number) => setTimeout(fn, ms).unref(),
  clear: (handle: unknown) => clearTimeout(handle as NodeJS.Timeout),
});

/** A source of cryptographically secure random bytes. */
export interface Random {
  bytes(n: number): Buffer;
}

/**
 * The system clock.
 *
 * @example
 * ```ts
 * const issuedAt = new Date(systemClock.now());
 * ```
 */
export const systemClock: Clock = Object.freeze({ now: () => Date.now() });

/**
 * The system CSPRNG (`crypto.randomBytes`).
 *
 * @example
 * ```ts
 * const serial = systemRandom.bytes(16);
 * ```
 */
export const systemRandom: Random = Object.freeze({ bytes: (n: number) => pooledRandomBytes(n) });

/**
 * The CSPRNG drawn from in 4 KiB refills: one call into OpenSSL per 256 serials instead of one
 * per serial (each call costs about 8 µs on the CA's hot path; the bytes are the same
 * generator's). Every byte is handed out once and copied out, never shared.
 */
const POOL_SIZE = 4096;
const pool = Buffer.alloc(POOL_SIZE);
let poolOffset = POOL_SIZE;

function pooledRandomBytes(n: number): Buffer {
  if (n > POOL_SIZE / 4) return randomFillSync(Buffer.alloc(n));
  if (poolOffset + n > POOL_SIZE) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  const out = Buffer.from(pool.subarray(poolOffset, poolOffset + n));
  pool.fill(0, poolOffset, poolOffset + n);
  poolOffset += n;
  return out;
}

/** A clock tests set and advance by hand. */
export class ManualClock implements Clock {
  #now: number;
  constructor(start: number | Date) {
    this.#now = typeof start === 'number' ? start : start.getTime();
  }
  now(): number {
    return this.#now;
  }
  set(t: number | Date): void {
    this.#now = typeof t === 'number' ? t : t.getTime();
  }
  advance(ms: number): void {
    this.#now += ms;
  }
}
