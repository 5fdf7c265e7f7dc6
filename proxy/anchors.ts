/**
 * The proxy's trust anchors, from a PEM bundle file (a mounted ConfigMap), watched and
 * hot-reloaded. Linkerd bakes the anchors into an environment variable at injection, so a new
 * anchor needs every pod restarted; meshid's proxy picks a new bundle up by itself, and new
 * connections use it. A bundle core's parseAnchors refuses is refused here too, and the last good
 * bundle stays in use.
 */
import { EventEmitter } from 'node:events';
import { watch } from 'node:fs';
import type { FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import type { AnchorBundle, Clock, Logger } from '../core/index.js';
import { MeshidError, isMeshidError, parseAnchors } from '../core/index.js';

/** A bundle in use, and when it was loaded. */
export interface LoadedAnchors extends AnchorBundle {
  readonly loadedAt: number;
}

function load(text: string, now: number, fips: boolean): LoadedAnchors {
  return { ...parseAnchors(text, { now, fips }), loadedAt: now };
}

interface AnchorSourceEvents {
  updated: [LoadedAnchors];
  rejected: [MeshidError];
}

/**
 * A watched anchors file with last-good semantics.
 *
 * @example
 * ```ts
 * const anchors = await AnchorSource.open(file, { clock, logger });
 * anchors.current().pem;
 * ```
 */
export class AnchorSource extends EventEmitter<AnchorSourceEvents> {
  #current: LoadedAnchors;
  #watcher: FSWatcher | undefined;
  #timer: NodeJS.Timeout | undefined;
  readonly #file: string;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #fips: boolean;
  /** Counts for metrics. */
  readonly stats = { reloads: 0, rejected: 0 };

  private constructor(
    file: string,
    first: LoadedAnchors,
    clock: Clock,
    log: Logger,
    fips: boolean,
  ) {
    super();
    this.#fips = fips;
    this.#file = file;
    this.#current = first;
    this.#clock = clock;
    this.#log = log;
  }

  /**
   * Loads the bundle (an invalid first bundle is fatal) and starts watching its folder. In FIPS
   * mode (`fips`) bundles with an anchor outside the FIPS policy are refused.
   */
  static async open(
    file: string,
    deps: { clock: Clock; logger: Logger; fips?: boolean },
  ): Promise<AnchorSource> {
    const fips = deps.fips === true;
    let first: LoadedAnchors;
    try {
      first = load(await readFile(file, 'utf8'), deps.clock.now(), fips);
    } catch (err) {
      const code = isMeshidError(err) ? err.code : 'ERR_ANCHORS_INVALID';
      throw new MeshidError(code, `trust anchors ${file}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    const source = new AnchorSource(file, first, deps.clock, deps.logger, fips);
    // The folder, not the file: the kubelet swaps a `..data` symlink and editors rename files,
    // either of which would leave a watch on the old inode deaf.
    source.#watcher = watch(dirname(file), { persistent: false }, (_event, name) => {
      if (name === null || name === basename(file) || name.startsWith('..')) source.#changed();
    });
    source.#watcher.on('error', (err) =>
      deps.logger.warn({ err: err.message }, 'anchors watch failed'),
    );
    deps.logger.info(
      { fingerprint: first.fingerprint, anchors: first.anchors.map((a) => a.subject) },
      'trust anchors loaded',
    );
    return source;
  }

  current(): LoadedAnchors {
    return this.#current;
  }

  /** Re-reads the file now; resolves with the bundle in use afterwards. */
  async reload(): Promise<LoadedAnchors> {
    let next: LoadedAnchors;
    try {
      next = load(await readFile(this.#file, 'utf8'), this.#clock.now(), this.#fips);
    } catch (err) {
      this.stats.rejected++;
      this.#log.warn(
        { err: (err as Error).message },
        'new trust anchors refused; keeping the last good bundle',
      );
      this.emit(
        'rejected',
        isMeshidError(err) ? err : new MeshidError('ERR_ANCHORS_INVALID', String(err)),
      );
      return this.#current;
    }
    if (next.fingerprint === this.#current.fingerprint) return this.#current;
    this.#current = next;
    this.stats.reloads++;
    this.#log.info(
      { fingerprint: next.fingerprint, anchors: next.anchors.map((a) => a.subject) },
      'trust anchors updated',
    );
    this.emit('updated', next);
    return next;
  }

  close(): void {
    clearTimeout(this.#timer);
    this.#watcher?.close();
  }

  #changed(): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => void this.reload(), 50);
    this.#timer.unref();
  }
}
