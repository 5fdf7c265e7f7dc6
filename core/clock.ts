/**
 * Time and randomness are passed in, never reached for globally, so tests control them.
 */
import { randomBytes } from 'node:crypto';

/** A source of the current time. */
export interface Clock {
  /** Milliseconds since the Unix epoch. */
  now(): number;
}

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
export const systemRandom: Random = Object.freeze({ bytes: (n: number) => randomBytes(n) });

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
