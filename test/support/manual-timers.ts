/**
 * Timers a test fires by hand, on a ManualClock: `advance(ms)` moves the clock and runs every
 * timer due by then, in order (including timers those set). `pending(ms)` waits, on events, for a
 * timer of that delay to be set, so a test can react to a watcher's debounce without sleeping.
 */
import { EventEmitter, once } from 'node:events';
import { ManualClock } from '../../core/clock.js';
import type { Timers } from '../../core/index.js';

interface Entry {
  readonly at: number;
  readonly ms: number;
  readonly fn: () => void;
}

export class ManualTimers implements Timers {
  readonly clock: ManualClock;
  readonly #entries = new Map<number, Entry>();
  readonly #events = new EventEmitter();
  #next = 1;

  constructor(clock = new ManualClock(Date.UTC(2026, 11, 1))) {
    this.clock = clock;
  }

  set(fn: () => void, ms: number): unknown {
    const id = this.#next++;
    this.#entries.set(id, { at: this.clock.now() + ms, ms, fn });
    this.#events.emit('set');
    return id;
  }

  clear(handle: unknown): void {
    if (typeof handle === 'number') this.#entries.delete(handle);
  }

  /** How many timers of delay `ms` are pending. */
  count(ms: number): number {
    return [...this.#entries.values()].filter((e) => e.ms === ms).length;
  }

  /** Resolves once a timer of delay `ms` is pending (at once when one already is). */
  async pending(ms: number, signal = AbortSignal.timeout(10_000)): Promise<void> {
    while (this.count(ms) === 0) await once(this.#events, 'set', { signal });
  }

  /** Moves the clock by `ms`, running each timer due by then at its own time. */
  advance(ms: number): void {
    const end = this.clock.now() + ms;
    for (;;) {
      let due: [number, Entry] | undefined;
      for (const kv of this.#entries)
        if (kv[1].at <= end && (due === undefined || kv[1].at < due[1].at)) due = kv;
      if (due === undefined) break;
      this.#entries.delete(due[0]);
      this.clock.set(due[1].at);
      due[1].fn();
    }
    this.clock.set(end);
  }
}
