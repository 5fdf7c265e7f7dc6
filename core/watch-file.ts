/**
 * One watched file with a last-good value: the home of every hot reload (the issuer folder, the
 * trust anchors, a JWKS file, a serving pair, a pod's credential file), as Linkerd's
 * `FsCredsWatcher` (pkg/tls/creds_watcher.go) is theirs.
 *
 * The kubelet updates a Secret or ConfigMap volume by swapping a `..data` symlink; editors save
 * by rename; a person deletes a file and writes it again, or replaces a folder with `mv`. A watch
 * on a file's inode goes deaf after any of these, so each file's folder is watched (its names and
 * the kubelet's `..` ones), and that folder's parent (for the folder itself, whose watch is then
 * made again on the new inode). Events are debounced. A watch that fails or cannot be made yet is
 * made again on the next read, and a periodic re-read on the injected timers catches whatever the
 * watches miss. Reads never overlap, unchanged bytes are not parsed again, and content that fails
 * to read or parse is reported once while the last good value stays in use.
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
 * const parse = (bytes: Buffer, now: number) => parseAnchors(bytes.toString('utf8'), { now });
 * const anchors = await watchFile(file, parse, { clock, logger, code: 'ERR_ANCHORS_INVALID' });
 * anchors.on('change', (bundle) => logger.info({ fingerprint: bundle.fingerprint }, 'updated'));
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

/**
 * A watched file's last good value. Made by {@link watchFile} or {@link watchFiles}.
 *
 * @example
 * ```ts
 * watched.on('rejected', (err) => logger.warn({ code: err.code }, err.message));
 * await watched.close();
 * ```
 */
export class WatchedFile<T> extends EventEmitter<WatchedFileEvents<T>> {
  readonly #files: readonly WatchedPath[];
  readonly #parse: Parse<T>;
  readonly #o: WatchFileOptions;
  readonly #timers: Timers;
  /** Folder → the names in it that matter, and its watch with the inode it was made on. */
  readonly #dirs = new Map<
    string,
    { names: Set<string>; watcher?: FSWatcher | undefined; ino?: number | undefined }
  >();
  #value: T | undefined;
  /** Digest of the current value's bytes; of the last bytes (or read failure) seen, and its error. */
  #good: string | undefined;
  #seen: string | undefined;
  #error: MeshidError | undefined;
  #debounce: unknown;
  #recheck: unknown;
  #running: Promise<ReloadResult<T>> | undefined;
  #again: boolean | undefined;
  #closed = false;

  /** Use {@link watchFile} or {@link watchFiles}. */
  constructor(files: readonly WatchedPath[], parse: Parse<T>, options: WatchFileOptions) {
    super();
    this.#files = files.map((f) => ({ ...f, path: resolve(f.path) }));
    this.#parse = parse;
    this.#o = options;
    this.#timers = options.timers ?? systemTimers;
    // Each file's folder, for its names and the kubelet's `..` ones; and that folder's parent,
    // for the folder itself.
    const dirs = this.#files.map((f) => f.path);
    for (const path of [...dirs, ...dirs.map(dirname)]) {
      const dir = dirname(path);
      if (dir === path) continue;
      const entry = this.#dirs.get(dir) ?? { names: new Set<string>() };
      this.#dirs.set(dir, entry);
      entry.names.add(basename(path));
    }
  }

  /** The last good value. */
  current(): T {
    return this.#value as T;
  }

  /** @internal The first read (the watches armed before it); throws its error. */
  async start(): Promise<void> {
    const first = await this.#run(true);
    if (first.status === 'rejected' && this.#good === undefined) {
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
    this.#timers.clear(this.#debounce);
    this.#timers.clear(this.#recheck);
    for (const d of this.#dirs.values()) d.watcher?.close();
    await this.#running?.catch(() => undefined);
  }

  /** Reads never overlap: a trigger during a read queues one more (forced if any asked). */
  #run(force: boolean): Promise<ReloadResult<T>> {
    if (this.#running !== undefined) {
      this.#again = (this.#again ?? false) || force;
      return this.#running;
    }
    const loop = async (): Promise<ReloadResult<T>> => {
      let result = await this.#once(force);
      this.#emit('checked', result);
      for (let again = this.#again; again !== undefined && !this.#closed; again = this.#again) {
        this.#again = undefined;
        result = await this.#once(again);
        this.#emit('checked', result);
      }
      return result;
    };
    this.#running = loop().finally(() => (this.#running = undefined));
    return this.#running;
  }

  async #once(force: boolean): Promise<ReloadResult<T>> {
    await Promise.all([...this.#dirs.keys()].map((dir) => this.#arm(dir)));
    let contents: (Buffer | undefined)[];
    try {
      contents = await readFiles(this.#files, this.#o);
    } catch (err) {
      const error = asMeshidError(err, this.#o.code);
      return this.#reject(error, `unreadable: ${error.message}`, force);
    }
    const digest = digestOf(contents);
    const value = this.current();
    if (!force && digest === this.#good) {
      this.#seen = digest;
      return { status: 'unchanged', value };
    }
    if (!force && digest === this.#seen && this.#error !== undefined)
      return { status: 'rejected', error: this.#error, value };
    let next: T;
    try {
      next = await this.#parse(contents, this.#o.clock.now());
    } catch (err) {
      return this.#reject(asMeshidError(err, this.#o.code), digest, true);
    }
    const quiet = this.#good === undefined || digest === this.#good;
    this.#value = next;
    this.#good = this.#seen = digest;
    if (quiet) return { status: 'unchanged', value: next };
    this.#emit('change', next, value);
    return { status: 'updated', value: next, previous: value };
  }

  /** Reports a failure once per distinct cause (re-reads of the same bad bytes stay quiet). */
  #reject(error: MeshidError, seen: string, report: boolean): ReloadResult<T> {
    if ((report || seen !== this.#seen) && this.#good !== undefined) this.#emit('rejected', error);
    this.#seen = seen;
    this.#error = error;
    return { status: 'rejected', error, value: this.current() };
  }

  /** A listener that throws must not stop the watching. */
  #emit<K extends keyof WatchedFileEvents<T>>(event: K, ...args: WatchedFileEvents<T>[K]): void {
    try {
      (this.emit as (e: K, ...a: WatchedFileEvents<T>[K]) => boolean)(event, ...args);
    } catch (err) {
      this.#o.logger.error({ err, [LogKey.event]: event }, `a ${this.#what} listener threw`);
    }
  }

  get #what(): string {
    return this.#o.what ?? 'file';
  }

  #trigger(): void {
    if (this.#closed) return;
    this.#timers.clear(this.#debounce);
    this.#debounce = this.#timers.set(() => {
      if (!this.#closed) void this.#run(false);
    }, this.#o.debounceMs ?? DEFAULTS.fileDebounceMs);
  }

  #scheduleRecheck(): void {
    this.#recheck = this.#timers.set(() => {
      if (this.#closed) return;
      this.#scheduleRecheck();
      void this.#run(false);
    }, this.#o.recheckMs ?? DEFAULTS.fileRecheckMs);
  }

  /** (Re-)makes a folder's watch when it is missing, failed, or on a folder since replaced. */
  async #arm(dir: string): Promise<void> {
    const ino = await stat(dir).then(
      (s) => s.ino,
      () => undefined,
    );
    const d = this.#dirs.get(dir)!;
    if (this.#closed || (d.watcher !== undefined && d.ino === ino)) return;
    d.watcher?.close();
    d.watcher = undefined;
    d.ino = ino;
    if (ino === undefined) return; // Made once the folder exists (the parent's watch, a re-check).
    const relevant = (name: string | null): boolean =>
      name === null || d.names.has(name) || name.startsWith('..');
    try {
      const watcher = (this.#o.watch ?? defaultWatch)(dir, (name) => {
        if (relevant(name)) this.#trigger();
      });
      watcher.on('error', (err) => {
        // Dropped, and made again by the read this triggers.
        this.#o.logger.warn(
          { dir, [LogKey.reason]: err.message },
          `${this.#what} folder watch failed; watching it again`,
        );
        watcher.close();
        if (d.watcher === watcher) d.watcher = undefined;
        this.#trigger();
      });
      d.watcher = watcher;
    } catch (err) {
      this.#o.logger.warn(
        { dir, [LogKey.reason]: (err as Error).message },
        `cannot watch the ${this.#what} folder yet; re-reading it every ${this.#o.recheckMs ?? DEFAULTS.fileRecheckMs} ms`,
      );
    }
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
