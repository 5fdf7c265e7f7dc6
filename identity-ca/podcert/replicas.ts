/**
 * The live signer replicas, found through the Kubernetes API the way kube-apiserver finds its
 * peers (its `kube-apiserver-<id>` identity Leases in kube-system): each replica holds one
 * coordination.k8s.io/v1 Lease of its own in the CA's namespace, labelled with the signer, and
 * renews it every third of its duration; every replica watches the labelled Leases and counts a
 * replica live while its Lease was renewed within its `leaseDurationSeconds`.
 *
 * Time is local, as client-go's leader election keeps it: a Lease counts from when this replica
 * saw its `renewTime` change (first sight included), never from the renewTime itself, so
 * replicas whose clocks disagree still agree on who is live. A replica that stops deletes its
 * Lease (the others take its share at once); one that dies stops renewing and drops out one
 * duration after its last renewal was seen (or after a new replica first saw it). Leases seen
 * unrenewed for ten durations (left by replicas long gone) are deleted by whoever sees them,
 * conditional on the version seen, so a renewal racing the deletion wins.
 *
 * This is membership only; what each replica answers is ./ownership.ts over {@link live}, and
 * exactly-once is still the conditional status write (./signer.ts).
 */
import { createHash } from 'node:crypto';
import type { Clock, KubeResource, Logger, Random, Timers } from '../../core/index.js';
import { KubeApiError } from '../../core/index.js';
import type { KubeApi } from '../kube/api.js';
import { ownerOf } from './ownership.js';

/** The label every signer Lease carries: value {@link signerLabelValue} of the signer name. */
export const SIGNER_LEASE_LABEL = 'meshid.io/pod-certificate-signer';

const LEASE_API = 'coordination.k8s.io/v1';

/**
 * The label value for a signer name (a name has `/`, which label values cannot): the first 32
 * hex digits of its SHA-256.
 *
 * @example
 * ```ts
 * signerLabelValue('meshid.io/workload-identity'); // 32 hex digits
 * ```
 */
export function signerLabelValue(signerName: string): string {
  return createHash('sha256').update(signerName).digest('hex').slice(0, 32);
}

/**
 * A replica's Lease name: `meshid-podcert-`, the instance (pod) name made a DNS-1123 name, and a
 * random suffix, so two processes of one pod name (a restart racing its predecessor's Lease, two
 * CAs on one host) never share a Lease.
 *
 * @example
 * ```ts
 * replicaIdentity('linkerd-identity-7d9f-x2k4p', systemRandom); // 'meshid-podcert-linkerd-identity-7d9f-x2k4p-a1b2c3'
 * ```
 */
export function replicaIdentity(instance: string, random: Random): string {
  const name = instance
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 200);
  return `meshid-podcert-${name === '' ? 'ca' : name}-${random.bytes(3).toString('hex')}`;
}

/** What a replica set needs; all of it passed in. */
export interface SignerReplicasDeps {
  readonly api: Pick<KubeApi, 'watchList' | 'create' | 'replace' | 'delete'>;
  /** The CA's namespace: the Leases live there. */
  readonly namespace: string;
  readonly signerName: string;
  /** This replica's Lease name and holderIdentity ({@link replicaIdentity}). */
  readonly identity: string;
  /** How long a Lease counts without a renewal; renewed every third of it. */
  readonly leaseDurationMs: number;
  readonly clock: Clock;
  readonly timers: Timers;
  readonly logger: Logger;
}

/** One Lease as seen. */
interface Seen {
  readonly holder: string;
  readonly renewTime: string;
  readonly durationMs: number;
  /** Local time from which it counts. */
  readonly since: number;
  readonly uid: string;
  readonly resourceVersion: string;
}

/** MicroTime, as the API writes it: six fractional digits, UTC. */
function microTime(ms: number): string {
  return new Date(ms).toISOString().replace(/Z$/, '000Z');
}

/**
 * The live replicas of one signer, this one included. `start()` creates this replica's Lease and
 * follows the others; {@link synced} says the first list arrived (until then it knows only itself).
 *
 * @example
 * ```ts
 * const replicas = new SignerReplicas({ api, namespace: 'linkerd', signerName, identity,
 *   leaseDurationMs: 15_000, clock: systemClock, timers: systemTimers, logger });
 * replicas.onChange(() => signer.kick());
 * replicas.start();
 * replicas.ownerOf(pcr.metadata.uid) === replicas.self;
 * ```
 */
export class SignerReplicas {
  readonly #d: SignerReplicasDeps;
  readonly #log: Logger;
  readonly #seen = new Map<string, Seen>();
  readonly #abort = new AbortController();
  readonly #listeners = new Set<() => void>();
  #live: readonly string[];
  #synced = false;
  #loop: Promise<void> | undefined;
  /** Our Lease as last written (undefined until created). */
  #mine: KubeResource | undefined;
  #renewTimer: unknown;
  #expiryTimer: unknown;
  #writing: Promise<void> = Promise.resolve();
  #closed = false;

  constructor(deps: SignerReplicasDeps) {
    this.#d = deps;
    this.#log = deps.logger.child({ component: 'podcert-replicas', replica: deps.identity });
    this.#live = [deps.identity];
  }

  /** This replica's identity. */
  get self(): string {
    return this.#d.identity;
  }

  /** True once the Leases were listed (before that, only this replica is known). */
  get synced(): boolean {
    return this.#synced;
  }

  /** The live replicas, sorted, this one always among them. */
  get live(): readonly string[] {
    return this.#live;
  }

  /** The replica that answers the request of this UID (./ownership.ts over {@link live}). */
  ownerOf(uid: string): string {
    return ownerOf(uid, this.#live) ?? this.#d.identity;
  }

  /** Called when the live set changes (and at the first sync); returns the unsubscribe. */
  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  start(): void {
    if (this.#loop !== undefined) return;
    const d = this.#d;
    this.#write();
    this.#loop = d.api.watchList({
      kind: 'Lease',
      namespace: d.namespace,
      labelSelector: `${SIGNER_LEASE_LABEL}=${signerLabelValue(d.signerName)}`,
      signal: this.#abort.signal,
      onEvent: (e) => {
        if (e.type === 'SYNC') {
          const names = new Set(e.items.map((o) => o.metadata.name));
          for (const n of this.#seen.keys()) if (!names.has(n)) this.#seen.delete(n);
          for (const o of e.items) this.#see(o);
          this.#synced = true;
        } else if (e.type === 'DELETED') this.#seen.delete(e.object.metadata.name);
        else this.#see(e.object);
        this.#recompute(e.type === 'SYNC');
      },
      onRetry: (err, ms) =>
        this.#log.warn({ err: err.message, retryMs: ms }, 'signer Lease watch failed; retrying'),
    });
  }

  /** Stops renewing and watching, and deletes this replica's Lease so the others take over now. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#abort.abort();
    this.#d.timers.clear(this.#renewTimer);
    this.#d.timers.clear(this.#expiryTimer);
    await this.#loop;
    await this.#writing;
    const mine = this.#mine;
    if (mine === undefined) return;
    try {
      await this.#d.api.delete(LEASE_API, 'Lease', this.#d.namespace, mine.metadata.name, {
        ...(mine.metadata.uid === undefined ? {} : { uid: mine.metadata.uid }),
      });
    } catch (err) {
      this.#log.warn(
        { err: (err as Error).message },
        'could not delete this replica’s Lease; the others take its share when it expires',
      );
    }
  }

  #see(o: KubeResource): void {
    const spec = (o['spec'] ?? {}) as {
      holderIdentity?: unknown;
      renewTime?: unknown;
      leaseDurationSeconds?: unknown;
    };
    const name = o.metadata.name;
    const renewTime = typeof spec.renewTime === 'string' ? spec.renewTime : '';
    const seconds = typeof spec.leaseDurationSeconds === 'number' ? spec.leaseDurationSeconds : 0;
    const before = this.#seen.get(name);
    // From when this replica saw the renewTime change (first sight included), never from the
    // renewTime itself: the holder's clock may disagree with this one.
    const since =
      before !== undefined && before.renewTime === renewTime ? before.since : this.#d.clock.now();
    this.#seen.set(name, {
      holder: typeof spec.holderIdentity === 'string' ? spec.holderIdentity : '',
      renewTime,
      durationMs: seconds * 1000,
      since,
      uid: o.metadata.uid ?? '',
      resourceVersion: o.metadata.resourceVersion ?? '',
    });
  }

  /** The live set from what was seen; tells the listeners when it changed; arms the expiry. */
  #recompute(force = false): void {
    if (this.#closed) return;
    const now = this.#d.clock.now();
    const live = new Set([this.#d.identity]);
    let nextExpiry = Infinity;
    for (const [name, s] of this.#seen) {
      const until = s.since + s.durationMs;
      if (s.holder !== '' && until > now) {
        live.add(s.holder);
        nextExpiry = Math.min(nextExpiry, until);
      } else if (s.holder !== this.#d.identity && now - until >= 10 * this.#d.leaseDurationMs) {
        this.#collect(name, s);
      }
    }
    const sorted = [...live].sort();
    const changed = sorted.join('\n') !== this.#live.join('\n');
    if (changed || force) {
      const joined = sorted.filter((r) => !this.#live.includes(r));
      const left = this.#live.filter((r) => !sorted.includes(r));
      this.#live = sorted;
      this.#log.info({ replicas: sorted.length, joined, left }, 'pod certificate signer replicas');
    }
    this.#d.timers.clear(this.#expiryTimer);
    this.#expiryTimer = undefined;
    if (nextExpiry !== Infinity)
      this.#expiryTimer = this.#d.timers.set(() => this.#recompute(), nextExpiry - now);
    if (changed || force) for (const l of [...this.#listeners]) l();
  }

  /** Deletes a Lease left long ago, only if it is still the version seen. */
  #collect(name: string, s: Seen): void {
    this.#seen.delete(name);
    this.#d.api
      .delete(LEASE_API, 'Lease', this.#d.namespace, name, {
        uid: s.uid,
        resourceVersion: s.resourceVersion,
      })
      .then(
        () => this.#log.info({ lease: name, holder: s.holder }, 'deleted an expired signer Lease'),
        (err: unknown) =>
          this.#log.debug({ err: (err as Error).message, lease: name }, 'expired Lease kept'),
      );
  }

  /** Creates or renews this replica's Lease, then schedules the next renewal. */
  #write(): void {
    this.#writing = this.#renew().finally(() => {
      if (this.#closed) return;
      this.#renewTimer = this.#d.timers.set(
        () => this.#write(),
        Math.max(1, Math.floor(this.#d.leaseDurationMs / 3)),
      );
    });
  }

  async #renew(): Promise<void> {
    const d = this.#d;
    const now = microTime(d.clock.now());
    const spec = {
      holderIdentity: d.identity,
      leaseDurationSeconds: Math.max(1, Math.ceil(d.leaseDurationMs / 1000)),
      renewTime: now,
    };
    try {
      if (this.#mine === undefined) {
        this.#mine = await d.api.create({
          apiVersion: LEASE_API,
          kind: 'Lease',
          metadata: {
            name: d.identity,
            namespace: d.namespace,
            labels: { [SIGNER_LEASE_LABEL]: signerLabelValue(d.signerName) },
            annotations: { 'meshid.io/signer-name': d.signerName },
          },
          spec: { ...spec, acquireTime: now },
        });
        this.#log.info({ lease: d.identity }, 'holding a signer Lease');
        return;
      }
      const current = this.#mine;
      this.#mine = await d.api.replace({
        ...current,
        spec: { ...(current['spec'] as Record<string, unknown>), ...spec },
      });
    } catch (err) {
      if (err instanceof KubeApiError && err.status === 404) this.#mine = undefined;
      else if (err instanceof KubeApiError && err.status === 409 && this.#mine !== undefined) {
        // Changed under us (by hand, or a deletion and a new one): renew the latest seen next.
        const seen = this.#seen.get(this.#mine.metadata.name);
        if (seen === undefined) this.#mine = undefined;
        else
          this.#mine = {
            ...this.#mine,
            metadata: { ...this.#mine.metadata, resourceVersion: seen.resourceVersion },
          };
      }
      this.#log.warn(
        { err: (err as Error).message, lease: d.identity },
        'could not renew this replica’s signer Lease; trying again',
      );
    }
  }
}
