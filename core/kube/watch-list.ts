/**
 * The one Kubernetes list + watch + resume loop (client-go's reflector, reduced to what meshid
 * needs). It knows nothing of the client library: the adapter gives it a `list` and a `watch`.
 */
import type { Random } from '../clock.js';
import { systemRandom } from '../clock.js';

/** One event of a raw watch stream, as the adapter reports it. */
export type WatchStreamEvent<T> =
  | {
      readonly type: 'ADDED' | 'MODIFIED' | 'DELETED';
      readonly object: T;
      readonly resourceVersion: string;
    }
  | { readonly type: 'BOOKMARK'; readonly resourceVersion: string }
  /** The server said the resourceVersion is too old (410 Gone / Expired): list again. */
  | { readonly type: 'GONE' };

/** What the loop tells its caller: a whole list, or one change. */
export type WatchListEvent<T> =
  | { readonly type: 'SYNC'; readonly items: readonly T[] }
  | { readonly type: 'ADDED' | 'MODIFIED' | 'DELETED'; readonly object: T };

/** The inputs of {@link watchList}. */
export interface WatchListLoop<T> {
  /** Lists the collection: its items and the resourceVersion to watch from. */
  readonly list: (signal: AbortSignal) => Promise<{ items: readonly T[]; resourceVersion: string }>;
  /**
   * Opens a watch from `resourceVersion`. `onEnd` is called once when the stream ends
   * (undefined: the server closed it normally). Resolves with a function that stops it.
   */
  readonly watch: (
    resourceVersion: string,
    onEvent: (event: WatchStreamEvent<T>) => void,
    onEnd: (err: Error | undefined) => void,
  ) => Promise<() => void>;
  /** A `SYNC` after every list (the first one, and after a 410), then every change. */
  readonly onEvent: (event: WatchListEvent<T>) => void;
  /** Told of every failed list or watch, before the loop waits `delayMs`. */
  readonly onRetry?: (err: Error, delayMs: number) => void;
  /** Stops the loop (and the open watch). */
  readonly signal: AbortSignal;
  /** First and longest wait after a failure; default 500 ms and 30 s. */
  readonly backoff?: { readonly min: number; readonly max: number };
  /** The jitter's source; default the system's. */
  readonly random?: Random;
  /** Waits `ms` or until `signal` aborts; default a timer (tests inject their own). */
  readonly sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
}

const DEFAULT_BACKOFF = { min: 500, max: 30_000 } as const;

/**
 * Lists, then watches from the list's resourceVersion, until `signal` aborts:
 * - a watch the server ends (its timeout, a dropped connection without error) resumes from the
 *   last resourceVersion seen (an object's or a bookmark's);
 * - 410 Gone (the version left the server's history) lists again and reports a `SYNC`;
 * - a failed list or watch (the API server away, a 5xx, a refused connection) is reported to
 *   `onRetry` and retried after a jittered, capped exponential backoff (half the cap plus up to
 *   half again at random, so replicas that lost the API server together do not return together);
 *   any event or list that succeeds resets the backoff.
 *
 * @example
 * ```ts
 * await watchList({
 *   list: async (signal) => ({ items: [], resourceVersion: '1' }),
 *   watch: async (version, onEvent, onEnd) => () => undefined,
 *   onEvent: (e) => (e.type === 'SYNC' ? reset(e.items) : apply(e.type, e.object)),
 *   onRetry: (err, ms) => logger.warn({ err: err.message, ms }, 'watch failed; retrying'),
 *   signal: controller.signal,
 * });
 * ```
 */
export async function watchList<T>(o: WatchListLoop<T>): Promise<void> {
  const { min, max } = o.backoff ?? DEFAULT_BACKOFF;
  const random = o.random ?? systemRandom;
  const sleep = o.sleep ?? abortableSleep;
  let version = '';
  let failures = 0;
  const retry = async (err: Error): Promise<void> => {
    failures++;
    const delay = backoffDelay(failures, min, max, random);
    o.onRetry?.(err, delay);
    await sleep(delay, o.signal);
  };
  while (!o.signal.aborted) {
    if (version === '') {
      let listed: { items: readonly T[]; resourceVersion: string };
      try {
        listed = await o.list(o.signal);
      } catch (err) {
        if (o.signal.aborted) return;
        await retry(asError(err));
        continue;
      }
      if (o.signal.aborted) return;
      failures = 0;
      version = listed.resourceVersion;
      o.onEvent({ type: 'SYNC', items: listed.items });
    }
    const end = await watchOnce(o, version, (v) => {
      failures = 0;
      if (v !== '') version = v;
    });
    if (end === 'gone') version = '';
    else if (end instanceof Error) await retry(end);
  }
}

/** The wait before retry number `failures` (1-based): full jitter over the upper half. */
export function backoffDelay(failures: number, min: number, max: number, random: Random): number {
  const cap = Math.min(max, min * 2 ** Math.min(failures - 1, 16));
  const fraction = random.bytes(4).readUInt32BE(0) / 2 ** 32;
  return Math.round(cap / 2 + fraction * (cap / 2));
}

/** One watch stream, until it ends: 'closed' (resume), 'gone' (list again), or the failure. */
function watchOnce<T>(
  o: WatchListLoop<T>,
  version: string,
  seen: (resourceVersion: string) => void,
): Promise<'closed' | 'gone' | 'aborted' | Error> {
  return new Promise((resolve) => {
    let stop: (() => void) | undefined;
    let settled = false;
    const finish = (end: 'closed' | 'gone' | 'aborted' | Error): void => {
      if (settled) return;
      settled = true;
      o.signal.removeEventListener('abort', aborted);
      stop?.();
      resolve(end);
    };
    const aborted = (): void => finish('aborted');
    o.signal.addEventListener('abort', aborted, { once: true });
    o.watch(
      version,
      (event) => {
        if (settled) return;
        if (event.type === 'GONE') return finish('gone');
        seen(event.resourceVersion);
        if (event.type !== 'BOOKMARK') o.onEvent({ type: event.type, object: event.object });
      },
      (err) => finish(err ?? 'closed'),
    ).then(
      (s) => {
        stop = s;
        if (settled) s();
      },
      (err: unknown) => finish(asError(err)),
    );
  });
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
