/**
 * One watched file with a last-good value: the home of every hot reload (the issuer folder, the
 * trust anchors, a JWKS file, a serving pair, a pod's credential file). Linkerd has one such
 * watcher too (`FsCredsWatcher`, pkg/tls/creds_watcher.go).
 *
 * Files are mounted by the kubelet, which updates a Secret or ConfigMap volume by writing a new
 * hidden `..<timestamp>` folder and atomically swapping the `..data` symlink the visible names
 * point through; locally they are plain files that an editor replaces by rename or that a person
 * deletes and writes again, and a whole folder may be replaced with `mv`. A watch on a file's inode
 * goes deaf after any of these, so the watcher watches folders:
 *
 * - each watched file's folder (renames, in-place writes, the `..data` swap), filtered to the
 *   watched names and the kubelet's `..` names;
 * - that folder's parent, for the folder itself being replaced, deleted or made again, after which
 *   the folder's watch is re-made on the new inode.
 *
 * Events are debounced (a burst of writes makes one read). A watch that fails (or cannot be made
 * yet) is re-armed on the next read; a periodic re-read on the injected timers is the safety net for
 * whatever the watches miss (network filesystems, an exhausted inotify budget). Reads never overlap,
 * unchanged bytes are not parsed again, and content that fails to read or parse is reported once
 * (a `rejected` event) while the last good value stays in use. Nothing here throws out of a watch.
 */
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { watch as fsWatch } from 'node:fs';
import type { FSWatcher } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { systemTimers } from './clock.js';
import type { Clock, Timers } from './clock.js';
import { DEFAULTS } from './defaults.js';
import { isMeshidError, MeshidError } from './errors.js';
import type { ErrorCode } from './errors.js';
import { LogKey } from './logger.js';
import type { Logger } from './logger.js';

/** One file read together with the others of a {@link watchFiles} call. */
export interface WatchedPath {
  readonly path: string;
  /** What it holds, in errors: `cannot read <what> <path>: ENOENT`; default the options' `what`. */
  readonly what?: string;
  /** The code of its read failure; default the options' `code`. */
  readonly code?: ErrorCode;
  /** A missing file is handed to `parse` as undefined rather than failing the read. */
  readonly optional?: boolean;
}

/**
 * Makes a value of the files' bytes (in the order given; undefined for a missing optional file)
 * at time `now` (the injected clock's, for validity checks); throws a MeshidError to refuse them.
 */
export type Parse<T> = (contents: readonly (Buffer | undefined)[], now: number) => T | Promise<T>;

/** Makes a folder watch; node's `fs.watch` unless a test breaks it on purpose. */
export type WatchFolder = (dir: string, onEvent: (name: string | null) => void) => FSWatcher;

/** What {@link watchFile} needs. */
export interface WatchFileOptions {
  readonly clock: Clock;
  readonly logger: Logger;
  /** The code of a read failure (e.g. ERR_ANCHORS_INVALID). */
  readonly code: ErrorCode;
  /** What the file holds, for errors and logs (e.g. 'trust anchors'); default 'file'. */
  readonly what?: string;
  /** Debounce and re-check timers; default node's, unref'd. */
  readonly timers?: Timers;
  /** Quiet time after the last event before reading; default {@link DEFAULTS.fileDebounceMs}. */
  readonly debounceMs?: number;
  /** Period of the safety-net re-read; default {@link DEFAULTS.fileRecheckMs}. */
  readonly recheckMs?: number;
  /** Largest file read; default {@link DEFAULTS.maxWatchedFileBytes}. */
  readonly maxBytes?: number;
  /** Folder watches; default `fs.watch` (not persistent). */
  readonly watch?: WatchFolder;
}

/** The outcome of one read. */
export type ReloadResult<T> =
  | { readonly status: 'updated'; readonly value: T; readonly previous: T }
  | { readonly status: 'unchanged'; readonly value: T }
  /** `value` is the last good one, still in use. */
  | { readonly status: 'rejected'; readonly error: MeshidError; readonly value: T };

/** The events of a {@link WatchedFile}. */
export interface WatchedFileEvents<T> {
  /** New content parsed and now current. */
  change: [value: T, previous: T];
  /** New content (or a read) failed; the last good value stays. Once per distinct failure. */
  rejected: [error: MeshidError];
  /** A read finished (on an event, a re-check or a reload), whatever its outcome. */
  checked: [result: ReloadResult<T>];
}

const defaultWatch: WatchFolder = (dir, onEvent) =>
  fsWatch(dir, { persistent: false }, (_event, name) => onEvent(name));

/**
 * Watches one file and keeps the last good result of `parse` on its bytes. Resolves once the
 * first read parses; rejects with that read's error otherwise (nothing keeps watching).
 *
 * @example
 * ```ts
 * const anchors = await watchFile(file, (bytes) => parseAnchors(bytes.toString('utf8'), { now: clock.now() }), {
 *   clock, logger, code: 'ERR_ANCHORS_INVALID', what: 'trust anchors',
 * });
 * anchors.on('change', (bundle) => logger.info({ fingerprint: bundle.fingerprint }, 'anchors updated'));
 * anchors.current();
 * ```
 */
export function watchFile<T>(
  path: string,
  parse: (bytes: Buffer, now: number) => T | Promise<T>,
  options: WatchFileOptions,
): Promise<WatchedFile<T>> {
  return watchFiles([{ path }], ([bytes], now) => parse(bytes!, now), options);
}

/**
 * Watches files that make one value together (a certificate and its key; an issuer and the
 * anchors it must chain to): `parse` gets their bytes in the order given, read in one go.
 *
 * @example
 * ```ts
 * const pair = await watchFiles(
 *   [{ path: `${dir}/tls.crt` }, { path: `${dir}/tls.key` }],
 *   ([crt, key]) => servingPair(crt!, key!),
 *   { clock, logger, code: 'ERR_WEBHOOK_TLS_INVALID', what: 'serving certificate' },
 * );
 * ```
 */
export async function watchFiles<T>(
  files: readonly WatchedPath[],
  parse: Parse<T>,
  options: WatchFileOptions,
): Promise<WatchedFile<T>> {
  const watched = new WatchedFile(files, parse, options);
  await watched.start();
  return watched;
}

/** A folder watch and the inode it was made on. */
interface Arm {
  watcher: FSWatcher | undefined;
  ino: number | undefined;
}

/**
 * A watched file's last good value. Made by {@link watchFile} or {@link watchFiles}.
 */
export class WatchedFile<T> extends EventEmitter<WatchedFileEvents<T>> {
  readonly #files: readonly WatchedPath[];
  readonly #parse: Parse<T>;
  readonly #o: Required<WatchFileOptions>;
  /** Folder → names in it that matter (null: any). */
  readonly #dirs = new Map<string, Set<string> | null>();
  readonly #arms = new Map<string, Arm>();
  #value: T | undefined;
  /** Digest of the current value's bytes, and of the last bytes (or read failure) seen. */
  #goodDigest: string | undefined;
  #seenDigest: string | undefined;
  #lastError: MeshidError | undefined;
  #debounce: unknown;
  #recheck: unknown;
  #running: Promise<ReloadResult<T>> | undefined;
  #again = false;
  #forceAgain = false;
  #closed = false;

  /** Use {@link watchFile} or {@link watchFiles}. */
  constructor(files: readonly WatchedPath[], parse: Parse<T>, options: WatchFileOptions) {
    super();
    if (files.length === 0) throw new TypeError('watchFiles needs at least one file');
    this.#files = files.map((f) => ({ ...f, path: resolve(f.path) }));
    this.#parse = parse;
    this.#o = {
      clock: options.clock,
      logger: options.logger,
      code: options.code,
      what: options.what ?? 'file',
      timers: options.timers ?? systemTimers,
      debounceMs: options.debounceMs ?? DEFAULTS.fileDebounceMs,
      recheckMs: options.recheckMs ?? DEFAULTS.fileRecheckMs,
      maxBytes: options.maxBytes ?? DEFAULTS.maxWatchedFileBytes,
      watch: options.watch ?? defaultWatch,
    };
    for (const { path } of this.#files) {
      const dir = dirname(path);
      const names = this.#dirs.get(dir) ?? new Set<string>();
      names.add(basename(path));
      this.#dirs.set(dir, names);
    }
    for (const dir of [...this.#dirs.keys()]) {
      const parent = dirname(dir);
      if (parent === dir) continue;
      const names = this.#dirs.get(parent);
      if (names === undefined) this.#dirs.set(parent, new Set([basename(dir)]));
      else names?.add(basename(dir));
    }
  }

  /** The last good value. */
  current(): T {
    return this.#value as T;
  }

  /** @internal Arms the watches, then reads; throws the first read's error. */
  async start(): Promise<void> {
    // Watch first, so that a change made while the first read runs is not missed.
    const first = await this.#run(true);
    if (first.status === 'rejected' && this.#goodDigest === undefined) {
      await this.close();
      throw first.error;
    }
    this.#scheduleRecheck();
  }

  /**
   * Reads now (for SIGHUP or an operator's request), parsing even unchanged bytes again (a
   * verdict may depend on the time). Never throws: a failure is `rejected` with the value kept.
   */
  reload(): Promise<ReloadResult<T>> {
    return this.#run(true);
  }

  /** Stops watching and re-checking, and waits for a read in progress. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#o.timers.clear(this.#debounce);
    this.#o.timers.clear(this.#recheck);
    for (const arm of this.#arms.values()) arm.watcher?.close();
    this.#arms.clear();
    await this.#running?.catch(() => undefined);
  }

  /** Reads never overlap: a trigger during a read queues exactly one more. */
  #run(force: boolean): Promise<ReloadResult<T>> {
    if (this.#running !== undefined) {
      this.#again = true;
      this.#forceAgain ||= force;
      return this.#running;
    }
    const loop = async (): Promise<ReloadResult<T>> => {
      let result = await this.#once(force);
      this.#emit('checked', result);
      while (this.#again && !this.#closed) {
        const again = this.#forceAgain;
        this.#again = this.#forceAgain = false;
        result = await this.#once(again);
        this.#emit('checked', result);
      }
      return result;
    };
    this.#running = loop().finally(() => (this.#running = undefined));
    return this.#running;
  }

  async #once(force: boolean): Promise<ReloadResult<T>> {
    await this.#armAll();
    let contents: (Buffer | undefined)[];
    try {
      contents = await readFiles(this.#files, this.#o);
    } catch (err) {
      const error = asMeshidError(err, this.#o.code);
      return this.#reject(error, `unreadable: ${error.message}`, force);
    }
    const digest = digestOf(contents);
    if (digest === this.#goodDigest && !force)
      return { status: 'unchanged', value: this.current() };
    if (digest === this.#seenDigest && !force && this.#lastError !== undefined)
      return { status: 'rejected', error: this.#lastError, value: this.current() };
    this.#seenDigest = digest;
    let next: T;
    try {
      next = await this.#parse(contents, this.#o.clock.now());
    } catch (err) {
      return this.#reject(asMeshidError(err, this.#o.code), digest, true);
    }
    const previous = this.#value as T;
    const quiet = this.#goodDigest === undefined || digest === this.#goodDigest;
    this.#value = next;
    this.#goodDigest = digest;
    this.#lastError = undefined;
    if (quiet) return { status: 'unchanged', value: next };
    this.#emit('change', next, previous);
    return { status: 'updated', value: next, previous };
  }

  /** Reports a failure once per distinct cause (re-reads of the same bad bytes stay quiet). */
  #reject(error: MeshidError, seen: string, report: boolean): ReloadResult<T> {
    const repeat = seen === this.#seenDigest && !report;
    this.#seenDigest = seen;
    this.#lastError = error;
    if (!repeat && this.#goodDigest !== undefined) this.#emit('rejected', error);
    return { status: 'rejected', error, value: this.current() };
  }

  /** A listener that throws must not stop the watching. */
  #emit<K extends keyof WatchedFileEvents<T>>(event: K, ...args: WatchedFileEvents<T>[K]): void {
    try {
      (this.emit as (e: K, ...a: WatchedFileEvents<T>[K]) => boolean)(event, ...args);
    } catch (err) {
      this.#o.logger.error({ err, [LogKey.event]: event }, `a ${this.#o.what} listener threw`);
    }
  }

  #trigger(): void {
    if (this.#closed) return;
    this.#o.timers.clear(this.#debounce);
    this.#debounce = this.#o.timers.set(() => {
      this.#debounce = undefined;
      if (!this.#closed) void this.#run(false);
    }, this.#o.debounceMs);
  }

  #scheduleRecheck(): void {
    if (this.#closed) return;
    this.#recheck = this.#o.timers.set(() => {
      if (this.#closed) return;
      this.#scheduleRecheck();
      void this.#run(false);
    }, this.#o.recheckMs);
  }

  /** (Re-)makes every folder watch that is missing, failed, or on a folder since replaced. */
  async #armAll(): Promise<void> {
    await Promise.all([...this.#dirs].map(([dir, names]) => this.#arm(dir, names)));
  }

  async #arm(dir: string, names: Set<string> | null): Promise<void> {
    let ino: number | undefined;
    try {
      ino = (await stat(dir)).ino;
    } catch {
      ino = undefined;
    }
    if (this.#closed) return;
    const arm = this.#arms.get(dir) ?? { watcher: undefined, ino: undefined };
    this.#arms.set(dir, arm);
    if (arm.watcher !== undefined && arm.ino === ino) return;
    if (arm.watcher !== undefined) {
      this.#o.logger.debug({ dir }, 'watched folder replaced; watching the new one');
      arm.watcher.close();
      arm.watcher = undefined;
    }
    arm.ino = ino;
    if (ino === undefined) return; // Made again once the folder exists (parent watch, re-check).
    const relevant = (name: string | null): boolean =>
      name === null || names === null || names.has(name) || name.startsWith('..');
    try {
      const watcher = this.#o.watch(dir, (name) => {
        if (relevant(name)) this.#trigger();
      });
      watcher.on('error', (err) => this.#watchFailed(dir, watcher, err));
      arm.watcher = watcher;
    } catch (err) {
      this.#o.logger.warn(
        { dir, [LogKey.reason]: (err as Error).message },
        `cannot watch the ${this.#o.what} folder yet; re-reading it every ${this.#o.recheckMs} ms`,
      );
    }
  }

  /** A failed watch is dropped and made again on the next read, which it triggers. */
  #watchFailed(dir: string, watcher: FSWatcher, err: Error): void {
    this.#o.logger.warn(
      { dir, [LogKey.reason]: err.message },
      `${this.#o.what} folder watch failed; watching it again`,
    );
    watcher.close();
    const arm = this.#arms.get(dir);
    if (arm?.watcher === watcher) arm.watcher = undefined;
    this.#trigger();
  }
}

/**
 * Reads files as {@link watchFiles} does, once: bounded in size, a missing optional file as
 * undefined, a failure as a MeshidError naming the file (`cannot read <what> <path>: ENOENT`).
 *
 * @example
 * ```ts
 * const [crt, key] = await readFiles([{ path: 'tls.crt' }, { path: 'tls.key' }], {
 *   code: 'ERR_ISSUER_INVALID', what: 'issuer',
 * });
 * ```
 */
export function readFiles(
  files: readonly WatchedPath[],
  defaults: Pick<WatchFileOptions, 'code' | 'what' | 'maxBytes'>,
): Promise<(Buffer | undefined)[]> {
  return Promise.all(files.map((f) => readOne(f, defaults)));
}

async function readOne(
  file: WatchedPath,
  defaults: Pick<WatchFileOptions, 'code' | 'what' | 'maxBytes'>,
): Promise<Buffer | undefined> {
  const what = file.what ?? defaults.what ?? 'file';
  const fail = (reason: string, cause?: unknown): MeshidError =>
    new MeshidError(file.code ?? defaults.code, `cannot read ${what} ${file.path}: ${reason}`, {
      cause,
    });
  let handle;
  try {
    handle = await open(file.path, 'r');
  } catch (err) {
    const errno = (err as NodeJS.ErrnoException).code;
    if (file.optional === true && errno === 'ENOENT') return undefined;
    throw fail(errno ?? (err as Error).message, err);
  }
  try {
    const max = defaults.maxBytes ?? DEFAULTS.maxWatchedFileBytes;
    const tooBig = (n: number): MeshidError => fail(`it is ${n} bytes, over ${max}`);
    const { size } = await handle.stat();
    if (size > max) throw tooBig(size);
    const bytes = await handle.readFile();
    if (bytes.byteLength > max) throw tooBig(bytes.byteLength);
    return bytes;
  } catch (err) {
    if (isMeshidError(err)) throw err;
    throw fail((err as NodeJS.ErrnoException).code ?? (err as Error).message, err);
  } finally {
    await handle.close();
  }
}

function asMeshidError(err: unknown, code: ErrorCode): MeshidError {
  if (isMeshidError(err)) return err;
  return new MeshidError(code, err instanceof Error ? err.message : String(err), { cause: err });
}

function digestOf(contents: readonly (Buffer | undefined)[]): string {
  const h = createHash('sha256');
  for (const c of contents) {
    if (c === undefined) h.update('absent;');
    else h.update(`${c.byteLength};`).update(c);
  }
  return h.digest('hex');
}
