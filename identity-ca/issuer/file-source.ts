/**
 * Issuer and trust anchors from files, hot-reloaded.
 *
 * In a cluster the issuer is a Secret and the anchors a ConfigMap, both mounted by the kubelet,
 * which updates a mount by writing a new hidden `..<timestamp>` folder and atomically swapping the
 * `..data` symlink the visible files point through. Locally (`meshid init`) they are plain files
 * that a person or an editor rewrites, and a whole issuer folder may be replaced with `mv`. All of
 * these show up as directory events, so the source watches directories, not files:
 *
 * - the issuer folder (kubelet swaps, file rewrites);
 * - the issuer folder's parent, for the folder itself being replaced (its watch is then re-made);
 * - the anchors file's folder (kubelet swaps, editors writing a temporary file and renaming it).
 *
 * Events are debounced, then everything is re-read and handed to the store, which validates the
 * pair and keeps the last good one. A read that fails half-way through a swap is logged and tried
 * again on the next event; it never throws out of a watcher.
 */
import { watch } from 'node:fs';
import type { FSWatcher } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { LogKey, MeshidError } from '../../core/index.js';
import type { ErrorCode, Logger } from '../../core/index.js';
import type { IssuerMaterial, IssuerCredentials } from './material.js';
import type { ApplyResult, IssuerStore } from './store.js';

/** File names inside an issuer folder (a `kubernetes.io/tls` Secret). */
export const ISSUER_FILES = Object.freeze({ crt: 'tls.crt', key: 'tls.key', ca: 'ca.crt' });

/** What a {@link FileIssuerSource} needs. */
export interface FileIssuerSourceOptions {
  /** Folder holding tls.crt, tls.key and optionally ca.crt. */
  readonly issuerDir: string;
  /** The PEM trust-anchor bundle (e.g. …/trust-roots/ca-bundle.crt). */
  readonly trustAnchorsFile: string;
  readonly store: IssuerStore;
  readonly logger: Logger;
  /** Quiet time after the last file event before re-reading; default 100 ms. */
  readonly debounceMs?: number;
}

/**
 * Reads issuer material from a folder: `tls.crt` and `tls.key` (required) and `ca.crt` (optional).
 * Throws ERR_ISSUER_INVALID naming the file that cannot be read.
 *
 * @example
 * ```ts
 * const material = await readIssuerMaterial('/var/run/linkerd/identity/issuer');
 * ```
 */
export async function readIssuerMaterial(dir: string): Promise<IssuerMaterial> {
  const [tlsCrt, tlsKey, caCrt] = await Promise.all([
    readText(join(dir, ISSUER_FILES.crt), 'ERR_ISSUER_INVALID', 'issuer certificate'),
    readText(join(dir, ISSUER_FILES.key), 'ERR_ISSUER_INVALID', 'issuer private key'),
    readText(join(dir, ISSUER_FILES.ca), 'ERR_ISSUER_INVALID', 'issuer CA certificates', true),
  ]);
  return caCrt === undefined
    ? { tlsCrt: tlsCrt!, tlsKey: tlsKey! }
    : { tlsCrt: tlsCrt!, tlsKey: tlsKey!, caCrt };
}

async function readText(
  path: string,
  code: ErrorCode,
  what: string,
  optional = false,
): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    const errno = (err as NodeJS.ErrnoException).code;
    if (optional && errno === 'ENOENT') return undefined;
    throw new MeshidError(code, `cannot read ${what} ${path}: ${errno ?? (err as Error).message}`, {
      cause: err,
    });
  }
}

/**
 * Loads the issuer and trust anchors from files into an {@link IssuerStore} and keeps them
 * current as the files change.
 *
 * @example
 * ```ts
 * const source = new FileIssuerSource({
 *   issuerDir: '/var/run/linkerd/identity/issuer',
 *   trustAnchorsFile: '/var/run/linkerd/identity/trust-roots/ca-bundle.crt',
 *   store,
 *   logger,
 * });
 * await source.start(); // throws when the initial material is invalid
 * process.on('SIGHUP', () => void source.reload());
 * ```
 */
export class FileIssuerSource {
  readonly #issuerDir: string;
  readonly #anchorsFile: string;
  readonly #store: IssuerStore;
  readonly #log: Logger;
  readonly #debounceMs: number;

  #started = false;
  #closed = false;
  #timer: NodeJS.Timeout | undefined;
  #pending: Promise<unknown> = Promise.resolve();
  #issuerWatcher: FSWatcher | undefined;
  #issuerIno: number | undefined;
  readonly #otherWatchers: FSWatcher[] = [];

  constructor(options: FileIssuerSourceOptions) {
    this.#issuerDir = resolve(options.issuerDir);
    this.#anchorsFile = resolve(options.trustAnchorsFile);
    this.#store = options.store;
    this.#log = options.logger;
    this.#debounceMs = options.debounceMs ?? 100;
  }

  /**
   * Reads and applies the material once, then starts watching. Throws the MeshidError (with the
   * paths in its message) when the initial material cannot be read or is invalid: the CA must not
   * start without a good issuer.
   */
  async start(): Promise<IssuerCredentials> {
    if (this.#started) throw new Error('FileIssuerSource already started');
    this.#started = true;
    try {
      // Watch first, so that a change made while the first load runs is not missed.
      await this.#watchAll();
      const result = await this.#load('start');
      if (result.status === 'rejected') {
        throw new MeshidError(
          result.error.code,
          `${result.error.message} (issuer ${this.#issuerDir}, trust anchors ${this.#anchorsFile})`,
          { cause: result.error },
        );
      }
      return result.credentials;
    } catch (err) {
      await this.close();
      throw err;
    }
  }

  /**
   * Re-reads everything now and applies it (for SIGHUP, or an operator's explicit request).
   * A read failure is reported as `rejected` without reaching the store.
   */
  reload(): Promise<ApplyResult> {
    return this.#load('reload');
  }

  /** Stops watching and waits for a reload in progress to finish. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#issuerWatcher?.close();
    this.#issuerWatcher = undefined;
    for (const w of this.#otherWatchers.splice(0)) w.close();
    await this.#pending;
  }

  /** Reads and applies, one at a time (a reload never reads while another is applying). */
  #load(reason: string): Promise<ApplyResult> {
    const run = this.#pending.then(() => this.#readAndApply(reason));
    this.#pending = run.catch(() => undefined);
    return run;
  }

  async #readAndApply(reason: string): Promise<ApplyResult> {
    if (reason !== 'start') await this.#rewatchIssuerDirIfReplaced();
    const source = `files (${reason}): ${this.#issuerDir}, ${this.#anchorsFile}`;
    let material: IssuerMaterial;
    let anchorsPem: string;
    try {
      [material, anchorsPem] = await Promise.all([
        readIssuerMaterial(this.#issuerDir),
        readText(this.#anchorsFile, 'ERR_ANCHORS_INVALID', 'trust anchors').then((t) => t!),
      ]);
    } catch (err) {
      const error =
        err instanceof MeshidError
          ? err
          : new MeshidError('ERR_INTERNAL', 'reading issuer files failed', { cause: err });
      // At start there is nothing to fall back to: the caller refuses to start.
      if (reason === 'start') throw error;
      // Most likely caught in the middle of a swap; the swap's own events bring another reload.
      this.#log.warn(
        { [LogKey.code]: error.code, [LogKey.reason]: error.message, source },
        'cannot read issuer files; keeping the last good issuer and waiting for the next change',
      );
      return { status: 'rejected', error, current: this.#store.current() };
    }
    return this.#store.apply(material, anchorsPem, source);
  }

  #schedule(): void {
    if (this.#closed) return;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (this.#closed) return;
      // #load never rejects for bad material; this catch is for the unexpected.
      this.#load('watch').catch((err: unknown) => this.#log.error({ err }, 'issuer reload failed'));
    }, this.#debounceMs);
  }

  async #watchAll(): Promise<void> {
    await this.#rewatchIssuerDirIfReplaced();
    const parent = dirname(this.#issuerDir);
    const name = basename(this.#issuerDir);
    this.#watchDir(parent, (file) => {
      // Only the issuer folder itself matters here: it was moved, replaced or removed.
      if (file === null || file === name) this.#schedule();
    });
    this.#watchDir(dirname(this.#anchorsFile), () => this.#schedule());
  }

  #watchDir(dir: string, onEvent: (file: string | null) => void): void {
    const w = this.#tryWatch(dir, onEvent);
    if (w !== undefined) this.#otherWatchers.push(w);
  }

  /**
   * When the issuer folder was replaced (`mv new issuer`), the watch still points at the old
   * folder's inode; re-make it on the new one.
   */
  async #rewatchIssuerDirIfReplaced(): Promise<void> {
    if (this.#closed) return;
    let ino: number | undefined;
    try {
      ino = (await stat(this.#issuerDir)).ino;
    } catch {
      ino = undefined;
    }
    if (this.#closed) return;
    if (ino !== this.#issuerIno || this.#issuerWatcher === undefined) {
      if (this.#issuerIno !== undefined) {
        this.#log.debug({ dir: this.#issuerDir }, 'issuer folder replaced; watching the new one');
      }
      this.#issuerWatcher?.close();
      this.#issuerWatcher =
        ino === undefined ? undefined : this.#tryWatch(this.#issuerDir, () => this.#schedule());
      this.#issuerIno = ino;
    }
  }

  #tryWatch(dir: string, onEvent: (file: string | null) => void): FSWatcher | undefined {
    try {
      const w = watch(dir, { persistent: true }, (_event, file) => onEvent(file));
      w.on('error', (err) => {
        // E.g. the folder was deleted. The parent watch (or the next reload) re-makes it.
        this.#log.warn({ err, dir }, 'file watch failed');
        w.close();
        if (w === this.#issuerWatcher) this.#issuerWatcher = undefined;
        this.#schedule();
      });
      return w;
    } catch (err) {
      this.#log.warn(
        { err, dir },
        'cannot watch folder; changes in it will be noticed only on reload',
      );
      return undefined;
    }
  }
}
