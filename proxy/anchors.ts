/**
 * The proxy's trust anchors, from a PEM bundle file (a mounted ConfigMap), watched and
 * hot-reloaded with core's watchFile. Linkerd bakes the anchors into an environment variable at
 * injection, so a new anchor needs every pod restarted; meshid's proxy picks a new bundle up by
 * itself, and new connections use it. A bundle core's parseAnchors refuses is refused here too,
 * and the last good bundle stays in use.
 */
import { EventEmitter } from 'node:events';
import type { AnchorBundle, Clock, Logger, Timers, WatchedFile } from '../core/index.js';
import { MeshidError, isMeshidError, parseAnchors, watchFile } from '../core/index.js';

/** A bundle in use, and when it was loaded. */
export interface LoadedAnchors extends AnchorBundle {
  readonly loadedAt: number;
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
  readonly #file: WatchedFile<LoadedAnchors>;
  /** Counts for metrics. */
  readonly stats = { reloads: 0, rejected: 0 };

  private constructor(file: WatchedFile<LoadedAnchors>, log: Logger) {
    super();
    this.#file = file;
    file.on('change', (next) => {
      this.stats.reloads++;
      log.info(
        { fingerprint: next.fingerprint, anchors: next.anchors.map((a) => a.subject) },
        'trust anchors updated',
      );
      this.emit('updated', next);
    });
    file.on('rejected', (err) => {
      this.stats.rejected++;
      log.warn({ err: err.message }, 'new trust anchors refused; keeping the last good bundle');
      this.emit('rejected', err);
    });
  }

  /**
   * Loads the bundle (an invalid first bundle is fatal) and starts watching it. In FIPS mode
   * (`fips`) bundles with an anchor outside the FIPS policy are refused.
   */
  static async open(
    file: string,
    deps: { clock: Clock; logger: Logger; fips?: boolean; timers?: Timers },
  ): Promise<AnchorSource> {
    const fips = deps.fips === true;
    const parse = (bytes: Buffer, now: number): LoadedAnchors => ({
      ...parseAnchors(bytes.toString('utf8'), { now, fips }),
      loadedAt: now,
    });
    let watched: WatchedFile<LoadedAnchors>;
    try {
      watched = await watchFile(file, parse, {
        ...deps,
        code: 'ERR_ANCHORS_INVALID',
        what: 'trust anchors',
      });
    } catch (err) {
      const code = isMeshidError(err) ? err.code : 'ERR_ANCHORS_INVALID';
      const message = (err as Error).message;
      throw message.includes(file)
        ? err
        : new MeshidError(code, `trust anchors ${file}: ${message}`, { cause: err });
    }
    const first = watched.current();
    deps.logger.info(
      { fingerprint: first.fingerprint, anchors: first.anchors.map((a) => a.subject) },
      'trust anchors loaded',
    );
    return new AnchorSource(watched, deps.logger);
  }

  current(): LoadedAnchors {
    return this.#file.current();
  }

  close(): void {
    void this.#file.close();
  }
}
