/**
 * Issuer and trust anchors from files, hot-reloaded with core's watchFiles.
 *
 * In a cluster the issuer is a Secret and the anchors a ConfigMap, both mounted by the kubelet
 * (which swaps a `..data` symlink); locally (`meshid init`) they are plain files that a person or
 * an editor rewrites, and a whole issuer folder may be replaced with `mv`. core/watch-file.ts
 * watches the folders for all of these, debounces, re-reads periodically, and reads the four files
 * together; each read is handed to the store, which validates the pair and keeps the last good
 * one. A read that fails half-way through a swap is logged, and the next event or re-check tries
 * again; it never throws out of a watcher.
 */
import { join, resolve } from 'node:path';
import { LogKey, MeshidError, readFiles, systemClock, watchFiles } from '../../core/index.js';
import type { Clock, Logger, WatchedFile, WatchedPath } from '../../core/index.js';
import type { IssuerMaterial, IssuerCredentials } from './material.js';
import type { ApplyResult, IssuerStore } from './store.js';

/** File names inside an issuer folder (a `kubernetes.io/tls` Secret). */
const ISSUER_FILES = Object.freeze({ crt: 'tls.crt', key: 'tls.key', ca: 'ca.crt' });

/** What a {@link FileIssuerSource} needs. */
interface FileIssuerSourceOptions {
  /** Folder holding tls.crt, tls.key and optionally ca.crt. */
  readonly issuerDir: string;
  /** The PEM trust-anchor bundle (e.g. …/trust-roots/ca-bundle.crt). */
  readonly trustAnchorsFile: string;
  readonly store: IssuerStore;
  readonly logger: Logger;
  /** Default the system clock. */
  readonly clock?: Clock;
  /** Quiet time after the last file event before re-reading; default 100 ms. */
  readonly debounceMs?: number;
}

/** The issuer folder's files, then the anchors file, as watchFiles reads them. */
function issuerFiles(dir: string, anchorsFile: string): WatchedPath[] {
  const issuer = (name: string, what: string, optional = false): WatchedPath => ({
    path: join(dir, name),
    what,
    code: 'ERR_ISSUER_INVALID',
    optional,
  });
  return [
    issuer(ISSUER_FILES.crt, 'issuer certificate'),
    issuer(ISSUER_FILES.key, 'issuer private key'),
    issuer(ISSUER_FILES.ca, 'issuer CA certificates', true),
    { path: anchorsFile, what: 'trust anchors', code: 'ERR_ANCHORS_INVALID' },
  ];
}

function material([crt, key, ca]: readonly (Buffer | undefined)[]): IssuerMaterial {
  const m = { tlsCrt: crt!.toString('utf8'), tlsKey: key!.toString('utf8') };
  return ca === undefined ? m : { ...m, caCrt: ca.toString('utf8') };
}

/**
 * Reads issuer material from a folder: `tls.crt` and `tls.key` (required) and `ca.crt` (optional).
 * Throws ERR_ISSUER_INVALID naming the file that cannot be read.
 */
export async function readIssuerMaterial(dir: string): Promise<IssuerMaterial> {
  const files = issuerFiles(dir, '').slice(0, 3);
  return material(await readFiles(files, { code: 'ERR_ISSUER_INVALID' }));
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
  readonly #o: FileIssuerSourceOptions;
  readonly #issuerDir: string;
  readonly #anchorsFile: string;
  #watched: WatchedFile<IssuerCredentials> | undefined;
  /** The store's verdict on the last read handed to it. */
  #applied: ApplyResult | undefined;
  #started = false;

  constructor(options: FileIssuerSourceOptions) {
    this.#o = options;
    this.#issuerDir = resolve(options.issuerDir);
    this.#anchorsFile = resolve(options.trustAnchorsFile);
  }

  /**
   * Reads and applies the material once, then starts watching. Throws the MeshidError (with the
   * paths in its message) when the initial material cannot be read or is invalid: the CA must not
   * start without a good issuer.
   */
  async start(): Promise<IssuerCredentials> {
    if (this.#started) throw new Error('FileIssuerSource already started');
    this.#started = true;
    const where = `(issuer ${this.#issuerDir}, trust anchors ${this.#anchorsFile})`;
    const source = `files: ${this.#issuerDir}, ${this.#anchorsFile}`;
    try {
      this.#watched = await watchFiles(
        issuerFiles(this.#issuerDir, this.#anchorsFile),
        async (contents) => {
          this.#applied = await this.#o.store.apply(
            material(contents),
            contents[3]!.toString('utf8'),
            source,
          );
          if (this.#applied.status === 'rejected') throw this.#applied.error;
          return this.#applied.credentials;
        },
        {
          clock: this.#o.clock ?? systemClock,
          logger: this.#o.logger,
          code: 'ERR_ISSUER_INVALID',
          what: 'issuer',
          ...(this.#o.debounceMs === undefined ? {} : { debounceMs: this.#o.debounceMs }),
        },
      );
    } catch (err) {
      // A read failure names its file; the store's verdict gets the paths added.
      if (err !== this.#rejection()) throw err;
      const e = err as MeshidError;
      throw new MeshidError(e.code, `${e.message} ${where}`, { cause: e });
    }
    this.#watched.on('rejected', (error) => {
      if (error === this.#rejection()) return; // The store has logged its verdict.
      // Most likely caught in the middle of a swap; the swap's own events bring another read.
      this.#o.logger.warn(
        { [LogKey.code]: error.code, [LogKey.reason]: error.message, source },
        'cannot read issuer files; keeping the last good issuer and waiting for the next change',
      );
    });
    return this.#watched.current();
  }

  /**
   * Re-reads everything now and applies it (for SIGHUP, or an operator's explicit request).
   * A read failure is reported as `rejected` without reaching the store.
   */
  async reload(): Promise<ApplyResult> {
    if (this.#watched === undefined) throw new Error('FileIssuerSource not started');
    const result = await this.#watched.reload();
    // Every reload that reads reaches the store; only a read failure does not.
    if (result.status === 'rejected' && result.error !== this.#rejection())
      return { status: 'rejected', error: result.error, current: this.#o.store.current() };
    return this.#applied!;
  }

  /** Stops watching and waits for a reload in progress to finish. */
  async close(): Promise<void> {
    await this.#watched?.close();
  }

  #rejection(): MeshidError | undefined {
    return this.#applied?.status === 'rejected' ? this.#applied.error : undefined;
  }
}
