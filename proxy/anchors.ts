/**
 * The proxy's trust anchors, from a PEM bundle file (a mounted ConfigMap), watched and
 * hot-reloaded. Linkerd bakes the anchors into an environment variable at injection, so a new
 * anchor needs every pod restarted; meshid's proxy picks a new bundle up by itself, and new
 * connections use it. A bundle that does not parse, holds no certificate, or holds one that is
 * not a CA is refused, and the last good bundle stays in use.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { watch } from 'node:fs';
import type { FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import type { Clock, Logger } from '../core/index.js';
import { MeshidError, fipsCertificateProblem, parsePem } from '../core/index.js';

/** A loaded bundle. */
export interface AnchorBundle {
  readonly pem: string;
  /** Hex SHA-256 of the bundle's text, as Linkerd's `linkerd.io/trust-root-sha256` annotation. */
  readonly fingerprint: string;
  readonly subjects: readonly string[];
  readonly earliestNotAfter: number;
  readonly loadedAt: number;
}

/**
 * Parses and checks a bundle; throws an Error naming the problem.
 *
 * @example
 * ```ts
 * const bundle = parseAnchorBundle(await readFile(file, 'utf8'), Date.now());
 * ```
 *
 * In FIPS mode (`fips`) an anchor whose key or signature is outside the FIPS policy is refused
 * with a MeshidError ERR_FIPS_MATERIAL_REFUSED.
 */
export function parseAnchorBundle(text: string, now: number, fips = false): AnchorBundle {
  const blocks = parsePem(text, 'CERTIFICATE');
  if (blocks.length === 0) throw new Error('bundle holds no certificate');
  const certs = blocks.map((b, i) => {
    try {
      return new X509Certificate(b.der);
    } catch (err) {
      throw new Error(`certificate ${i + 1} does not parse: ${(err as Error).message}`, {
        cause: err,
      });
    }
  });
  for (const c of certs) {
    if (!c.ca) throw new Error(`"${c.subject}" is not a CA certificate`);
  }
  if (fips) {
    blocks.forEach((b, i) => {
      const problem = fipsCertificateProblem(b.der);
      if (problem !== undefined) {
        throw new MeshidError(
          'ERR_FIPS_MATERIAL_REFUSED',
          `FIPS mode refused trust anchor ${i + 1} "${certs[i]!.subject}": ${problem}`,
        );
      }
    });
  }
  return {
    pem: text,
    fingerprint: createHash('sha256').update(text).digest('hex'),
    subjects: certs.map((c) => c.subject),
    earliestNotAfter: Math.min(...certs.map((c) => Date.parse(c.validTo))),
    loadedAt: now,
  };
}

interface AnchorSourceEvents {
  updated: [AnchorBundle];
  rejected: [Error];
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
  #current: AnchorBundle;
  #watcher: FSWatcher | undefined;
  #timer: NodeJS.Timeout | undefined;
  readonly #file: string;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #fips: boolean;
  /** Counts for metrics. */
  readonly stats = { reloads: 0, rejected: 0 };

  private constructor(file: string, first: AnchorBundle, clock: Clock, log: Logger, fips: boolean) {
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
    let first: AnchorBundle;
    try {
      first = parseAnchorBundle(await readFile(file, 'utf8'), deps.clock.now(), fips);
    } catch (err) {
      throw new Error(`trust anchors ${file}: ${(err as Error).message}`, { cause: err });
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
      { fingerprint: first.fingerprint, anchors: first.subjects },
      'trust anchors loaded',
    );
    return source;
  }

  current(): AnchorBundle {
    return this.#current;
  }

  /** Re-reads the file now; resolves with the bundle in use afterwards. */
  async reload(): Promise<AnchorBundle> {
    let next: AnchorBundle;
    try {
      next = parseAnchorBundle(await readFile(this.#file, 'utf8'), this.#clock.now(), this.#fips);
    } catch (err) {
      this.stats.rejected++;
      this.#log.warn(
        { err: (err as Error).message },
        'new trust anchors refused; keeping the last good bundle',
      );
      this.emit('rejected', err as Error);
      return this.#current;
    }
    if (next.fingerprint === this.#current.fingerprint) return this.#current;
    this.#current = next;
    this.stats.reloads++;
    this.#log.info(
      { fingerprint: next.fingerprint, anchors: next.subjects },
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
