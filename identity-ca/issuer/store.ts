/**
 * The last good issuer, and the only way to replace it.
 *
 * Issuer and trust anchors are validated together as a pair, because during a rotation they change
 * in separate steps (separate file events, separate API updates): a new issuer can arrive before
 * the bundle holding its new root, or a bundle can drop the root the current issuer chains to. Such
 * an inconsistent pair is refused and the previous good pair stays in use; when the other half
 * arrives the consistent pair is accepted. Each swap is a single reference assignment, so a Certify
 * call sees either the old pair or the new one, never a mix.
 */
import { EventEmitter } from 'node:events';
import { LogKey, MeshidError, parseAnchors } from '../../core/index.js';
import type { Clock, Logger } from '../../core/index.js';
import { checkFipsIssuer, validateIssuer } from './material.js';
import type { IssuerCredentials, IssuerMaterial } from './material.js';

/** The events of an {@link IssuerStore}, with their arguments. */
export interface IssuerStoreEvents {
  /** A new pair was accepted. `previous` is undefined for the first one. */
  updated: [current: IssuerCredentials, previous: IssuerCredentials | undefined, source: string];
  /** A pair was refused; the last good one (if any) stays in use. */
  rejected: [error: MeshidError, source: string];
}

/** The outcome of {@link IssuerStore.apply}. */
export type ApplyResult =
  | {
      readonly status: 'updated';
      readonly credentials: IssuerCredentials;
      readonly previous: IssuerCredentials | undefined;
    }
  | { readonly status: 'unchanged'; readonly credentials: IssuerCredentials }
  | {
      readonly status: 'rejected';
      readonly error: MeshidError;
      /** The last good pair, still in use. */
      readonly current: IssuerCredentials | undefined;
    };

/** What an {@link IssuerStore} needs. */
interface IssuerStoreOptions {
  readonly clock: Clock;
  readonly logger: Logger;
  /** FIPS mode: anchors and issuer chains outside the FIPS policy are refused. */
  readonly fips?: boolean;
}

/**
 * Holds the last good issuer credentials (with the anchors they were validated against).
 */
export class IssuerStore extends EventEmitter<IssuerStoreEvents> {
  readonly #clock: Clock;
  readonly #log: Logger;
  #current: IssuerCredentials | undefined;
  readonly #fips: boolean;
  #version = 0;
  // apply() calls run one after another: validation is asynchronous, and without the queue an
  // earlier, slower validation could finish last and overwrite a later pair.
  #queue: Promise<unknown> = Promise.resolve();

  constructor(options: IssuerStoreOptions) {
    super();
    this.#clock = options.clock;
    this.#log = options.logger;
    this.#fips = options.fips === true;
  }

  /** The last good credentials, or undefined before any pair was accepted. */
  current(): IssuerCredentials | undefined {
    return this.#current;
  }

  /** How many times the credentials were replaced (0 before the first). */
  get version(): number {
    return this.#version;
  }

  /**
   * Validates the issuer and the anchors together, at the clock's current time, and makes them
   * current when valid. Calls are serialised in call order, so the last call's pair is the one
   * left in place when it is valid. Never throws for a bad pair: the result says `rejected` and
   * a 'rejected' event is emitted.
   *
   * @param material - the issuer files.
   * @param anchorsPem - the trust-anchor bundle text.
   * @param source - where the pair came from, for logs and events (a path, a Secret name).
   */
  apply(material: IssuerMaterial, anchorsPem: string, source: string): Promise<ApplyResult> {
    const run = this.#queue.then(() => this.#apply(material, anchorsPem, source));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async #apply(material: IssuerMaterial, anchorsPem: string, source: string): Promise<ApplyResult> {
    let next: IssuerCredentials;
    try {
      const now = this.#clock.now();
      const anchors = parseAnchors(anchorsPem, { now, fips: this.#fips });
      next = await validateIssuer(material, anchors, now);
      if (this.#fips) checkFipsIssuer(next);
    } catch (err) {
      return this.#reject(
        err instanceof MeshidError
          ? err
          : new MeshidError('ERR_INTERNAL', 'issuer validation failed unexpectedly', {
              cause: err,
            }),
        source,
      );
    }

    const previous = this.#current;
    if (previous !== undefined && samePair(previous, next)) {
      this.#log.debug({ source, [LogKey.serial]: next.serial }, 'issuer material unchanged');
      return { status: 'unchanged', credentials: previous };
    }

    this.#current = next;
    this.#version++;
    this.#log.info(
      {
        [LogKey.event]: 'IssuerUpdated',
        [LogKey.issuer]: next.subject,
        [LogKey.serial]: next.serial,
        [LogKey.sha256]: next.fingerprint,
        [LogKey.notAfter]: new Date(next.notAfter).toISOString(),
        chainNotAfter: new Date(next.chainNotAfter).toISOString(),
        anchorsSha256: next.anchors.fingerprint,
        anchors: next.anchors.anchors.map((a) => a.subject),
        version: this.#version,
        source,
      },
      'updated identity issuer',
    );
    this.#emitSafely('updated', next, previous, source);
    return { status: 'updated', credentials: next, previous };
  }

  /**
   * Refuses new material that a source could not even turn into a pair (an issuer Secret without
   * its key, a ConfigMap without the bundle): logged, counted and announced exactly like a pair
   * that failed validation, and the last good pair stays. Queued behind any apply in progress.
   */
  reject(error: MeshidError, source: string): Promise<ApplyResult> {
    const run = this.#queue.then(() => this.#reject(error, source));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  #reject(error: MeshidError, source: string): ApplyResult {
    this.#log.warn(
      {
        [LogKey.event]: 'IssuerUpdateSkipped',
        [LogKey.code]: error.code,
        [LogKey.reason]: error.message,
        source,
        keptSerial: this.#current?.serial,
      },
      'refused new issuer material; keeping the last good issuer',
    );
    this.#emitSafely('rejected', error, source);
    return { status: 'rejected', error, current: this.#current };
  }

  // A throwing listener must not turn an accepted pair into a failed apply() or break the queue.
  #emitSafely<K extends keyof IssuerStoreEvents>(event: K, ...args: IssuerStoreEvents[K]): void {
    try {
      (this.emit as (e: K, ...a: IssuerStoreEvents[K]) => boolean)(event, ...args);
    } catch (err) {
      this.#log.error({ err, [LogKey.event]: event }, 'an issuer store listener threw');
    }
  }
}

/** Same issuer, same chain, same bundle text. */
function samePair(a: IssuerCredentials, b: IssuerCredentials): boolean {
  return (
    a.fingerprint === b.fingerprint &&
    a.anchors.fingerprint === b.anchors.fingerprint &&
    a.intermediatesDer.length === b.intermediatesDer.length &&
    a.intermediatesDer.every((der, i) => Buffer.compare(der, b.intermediatesDer[i]!) === 0)
  );
}
