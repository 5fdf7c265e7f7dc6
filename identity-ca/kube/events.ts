/**
 * Kubernetes Events for what the CA does, rate-limited so that a storm of Certify calls can
 * never become a storm of writes to the API server.
 *
 * - Recording never blocks or fails a caller: it queues and returns. A failure to write is logged
 *   (once per outage) and dropped; Events are for people, not for correctness.
 * - Repeats aggregate into one Event object with a growing `count` (as kubectl shows them), keyed
 *   by object, type and reason; the message is the latest one.
 * - Two token buckets: one per key (a burst, then one write per `perKeyIntervalMs`) and one for
 *   the whole process. What they refuse is counted in a metric, not written. A bounded queue and
 *   a small number of concurrent writes bound memory and API load when the API server is slow.
 */
import { createHash } from 'node:crypto';
import { LogKey } from '../../core/index.js';
import type { Clock, Logger } from '../../core/index.js';
import type { IssuerCredentials } from '../issuer/material.js';
import type { IssuedLeaf } from '../server/certify.js';
import type { EventRecord, KubeApi, WatchedKind } from './api.js';

/** Event reasons (CamelCase constants, as Linkerd's identity service writes them). */
export const EventReason = {
  issuerUpdated: 'IssuerUpdated',
  issuerUpdateSkipped: 'IssuerUpdateSkipped',
  issuerValidationFailed: 'IssuerValidationFailed',
  issuedLeafCertificate: 'IssuedLeafCertificate',
} as const;

/** The object an Event is about. */
interface EventTarget {
  readonly kind: string;
  readonly apiVersion?: string;
  readonly namespace: string;
  readonly name: string;
}

/** Options of {@link EventRecorder}. */
interface EventRecorderOptions {
  readonly api: Pick<KubeApi, 'recordEvent'>;
  /** `reportingController` / `source.component`. */
  readonly component: string;
  /** `reportingInstance` / `source.host` (the pod name). */
  readonly instance: string;
  readonly clock: Clock;
  readonly logger: Logger;
  /** Writes allowed at once per key, then one per interval; default 5 and 60 s. */
  readonly perKeyBurst?: number;
  readonly perKeyIntervalMs?: number;
  /** Writes allowed at once for the process, then `globalPerSecond`; default 25 and 5/s. */
  readonly globalBurst?: number;
  readonly globalPerSecond?: number;
  /** Events waiting to be written; more are dropped. Default 100. */
  readonly maxQueue?: number;
  /** Called with the reason of each Event not written (rate limit, full queue, error). */
  readonly onDropped?: (why: 'rate-limited' | 'queue-full' | 'error') => void;
}

interface Bucket {
  tokens: number;
  at: number;
}

interface Series {
  count: number;
  first: Date;
  name: string;
}

/** Most keys remembered (series and buckets); the oldest are forgotten first. */
const MAX_KEYS = 10_000;

/**
 * Records Events through the API, aggregated and rate-limited.
 */
export class EventRecorder {
  readonly #o: EventRecorderOptions;
  readonly #log: Logger;
  readonly #buckets = new Map<string, Bucket>();
  readonly #series = new Map<string, Series>();
  readonly #global: Bucket;
  readonly #queue: { name: string; record: EventRecord }[] = [];
  #writing = 0;
  #failing = false;
  #idle: (() => void)[] = [];
  /** Events written (for tests and metrics). */
  written = 0;

  constructor(options: EventRecorderOptions) {
    this.#o = options;
    this.#log = options.logger.child({ [LogKey.component]: 'events' });
    this.#global = { tokens: options.globalBurst ?? 25, at: options.clock.now() };
  }

  /** Queues an Event; never throws, never waits. */
  record(target: EventTarget, type: 'Normal' | 'Warning', reason: string, message: string): void {
    const now = this.#o.clock.now();
    const key = `${target.kind}/${target.namespace}/${target.name}/${type}/${reason}`;
    const perKeyBurst = this.#o.perKeyBurst ?? 5;
    const perKeyRate = 1 / (this.#o.perKeyIntervalMs ?? 60_000);
    let bucket = this.#buckets.get(key);
    if (bucket === undefined) {
      bucket = { tokens: perKeyBurst, at: now };
      remember(this.#buckets, key, bucket);
    }
    const globalRate = (this.#o.globalPerSecond ?? 5) / 1000;
    if (
      !take(bucket, now, perKeyRate, perKeyBurst) ||
      !take(this.#global, now, globalRate, this.#o.globalBurst ?? 25)
    ) {
      this.#o.onDropped?.('rate-limited');
      return;
    }
    if (this.#queue.length >= (this.#o.maxQueue ?? 100)) {
      this.#o.onDropped?.('queue-full');
      return;
    }
    let series = this.#series.get(key);
    if (series === undefined) {
      series = { count: 0, first: new Date(now), name: eventName(target.name, key, now) };
      remember(this.#series, key, series);
    }
    series.count++;
    this.#queue.push({
      name: series.name,
      record: {
        namespace: target.namespace,
        involvedObject: {
          kind: target.kind,
          name: target.name,
          namespace: target.namespace,
          ...(target.apiVersion === undefined ? {} : { apiVersion: target.apiVersion }),
        },
        type,
        reason,
        message,
        component: this.#o.component,
        instance: this.#o.instance,
        count: series.count,
        firstTimestamp: series.first,
        lastTimestamp: new Date(now),
      },
    });
    this.#pump();
  }

  /** Resolves when every queued Event has been written or dropped. */
  flush(): Promise<void> {
    if (this.#queue.length === 0 && this.#writing === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  #pump(): void {
    while (this.#writing < 2 && this.#queue.length > 0) {
      const next = this.#queue.shift()!;
      this.#writing++;
      this.#o.api
        .recordEvent(next.name, next.record, AbortSignal.timeout(5000))
        .then(
          () => {
            this.written++;
            if (this.#failing) {
              this.#failing = false;
              this.#log.info('recording Events works again');
            }
          },
          (err: unknown) => {
            this.#o.onDropped?.('error');
            if (!this.#failing) {
              this.#failing = true;
              this.#log.warn(
                {
                  [LogKey.reason]: err instanceof Error ? err.message : String(err),
                  [LogKey.event]: next.record.reason,
                },
                'cannot record a Kubernetes Event; dropping Events until it works again',
              );
            }
          },
        )
        .finally(() => {
          this.#writing--;
          this.#pump();
          if (this.#writing === 0 && this.#queue.length === 0) {
            for (const resolve of this.#idle.splice(0)) resolve();
          }
        });
    }
  }
}

function take(b: Bucket, now: number, ratePerMs: number, burst: number): boolean {
  b.tokens = Math.min(burst, b.tokens + Math.max(0, now - b.at) * ratePerMs);
  b.at = now;
  if (b.tokens < 1) return false;
  b.tokens -= 1;
  return true;
}

function remember<V>(map: Map<string, V>, key: string, value: V): void {
  map.set(key, value);
  if (map.size > MAX_KEYS) {
    const oldest = map.keys().next().value;
    if (oldest !== undefined) map.delete(oldest);
  }
}

/** `<object>.<hex>` like client-go's names: unique per series, valid as an object name. */
function eventName(objectName: string, key: string, now: number): string {
  const suffix = createHash('sha256').update(`${key}/${now}`).digest('hex').slice(0, 16);
  return `${objectName.slice(0, 200)}.${suffix}`;
}

/** What the CA's Events need to know of an issuer. */
type IssuerFacts = Pick<IssuerCredentials, 'subject' | 'serial' | 'notAfter'>;

/**
 * The Events the CA records, and their texts: issuer Events on the issuer Secret (where `kubectl
 * describe` shows them beside it), one per issued leaf on its ServiceAccount. Without a recorder
 * (no API, or `events: false`) every call does nothing; issuer Events only where `issuerTarget`
 * is set and `recordIssuer` (one worker of a multi-worker CA records them, so a change is
 * recorded once).
 */
export class CaEvents {
  constructor(
    readonly recorder: EventRecorder | undefined,
    readonly issuerTarget: EventTarget | undefined,
    readonly recordIssuer: boolean,
  ) {}

  issuerUpdated(i: IssuerFacts): void {
    this.#issuer(
      'Normal',
      EventReason.issuerUpdated,
      `Updated identity issuer ${i.subject} (serial ${i.serial}, valid until ${iso(i.notAfter)})`,
    );
  }

  issuerRefused(error: Error): void {
    this.#issuer(
      'Warning',
      EventReason.issuerUpdateSkipped,
      `Refused new issuer material, keeping the last good issuer: ${error.message}`,
    );
  }

  issuerDeleted(kind: WatchedKind, namespace: string, name: string): void {
    this.#issuer(
      'Warning',
      EventReason.issuerUpdateSkipped,
      `${kind === 'secrets' ? 'issuer Secret' : 'trust-anchor ConfigMap'} ${namespace}/${name} was deleted; keeping the last good issuer`,
    );
  }

  issuerNotValid(message: string): void {
    this.#issuer('Warning', EventReason.issuerValidationFailed, message);
  }

  issued(leaf: IssuedLeaf): void {
    this.recorder?.record(
      {
        kind: 'ServiceAccount',
        apiVersion: 'v1',
        namespace: leaf.namespace,
        name: leaf.serviceAccount,
      },
      'Normal',
      EventReason.issuedLeafCertificate,
      `Issued certificate for ${leaf.identity} until ${iso(leaf.notAfter)}: ${leaf.sha256}`,
    );
  }

  async flush(): Promise<void> {
    await this.recorder?.flush();
  }

  #issuer(type: 'Normal' | 'Warning', reason: string, message: string): void {
    if (this.issuerTarget !== undefined && this.recordIssuer)
      this.recorder?.record(this.issuerTarget, type, reason, message);
  }
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
