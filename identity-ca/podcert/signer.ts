/**
 * The PodCertificateRequest signer (KEP-4317): watches the requests addressed to meshid's signer
 * name cluster-wide through core's one list/watch/resume loop, checks each itself
 * (./request.ts), and answers through the status subresource: Issued with the chain (leaf
 * first), notBefore, notAfter and a jittered beginRefreshAt; or Denied/Failed with a reason.
 *
 * It issues exactly as Certify does (identity-ca/issuer/issue.ts: the same issuer, leaf profile,
 * anchors, serials and audit record): the identity is the request's ServiceAccount and namespace.
 * The pod is bound in the audit record (log line, Event on the request, `onIssued`), not in the
 * leaf, so pod certificates and Certify's are the same profile to every peer.
 *
 * Replicas share the work: with a {@link WorkShare} (./replicas.ts), each answers the requests
 * it owns by rendezvous hashing of the request's UID over the live replicas, and takes over
 * another's request only when it waited `takeoverAfterMs` while its owner answered nothing (the
 * owner is stuck: no issuer, a broken watch). Replicas never issue twice: every status write is
 * conditional on the resourceVersion the decision was made on. The first write wins; a replica
 * that loses gets a 409, drops its leaf unpublished and un-audited, and sees the answer arrive on
 * its watch. A restarted signer lists again and answers whatever is still pending.
 */
import type {
  Clock,
  IdentityNaming,
  KubeResource,
  Logger,
  Random,
  Timers,
} from '../../core/index.js';
import { KubeApiError, MeshidError, systemTimers, toPem } from '../../core/index.js';
import type { IssuedLeaf } from '../issuer/issue.js';
import { auditIssued, signLeaf } from '../issuer/issue.js';
import type { SignedLeaf } from '../issuer/issue.js';
import type { IssuerCredentials } from '../issuer/material.js';
import type { KubeApi } from '../kube/api.js';
import type { EventRecorder } from '../kube/events.js';
import type { SignerCache } from '../server/certify.js';
import type { PodCertRequest, Refusal } from './request.js';
import {
  MIN_LIFETIME_SECONDS,
  PodCertReason,
  podProblem,
  readRequest,
  requestedKey,
  requestProblem,
} from './request.js';

/**
 * How a request ended, for metrics; `takeover` is counted besides the outcome when this replica
 * answers a request another replica owns.
 */
export type PodCertOutcome = 'issued' | 'denied' | 'failed' | 'conflict' | 'error' | 'takeover';

/** Which replica answers which request (./replicas.ts); without one, this replica answers all. */
export interface WorkShare {
  /** This replica. */
  readonly self: string;
  /** False until the replicas are known: nothing is answered before (it would be all of it). */
  readonly synced: boolean;
  /** The replica that owns the request of this UID. */
  ownerOf(uid: string): string;
  /** Called when owners may have changed; returns the unsubscribe. */
  onChange(listener: () => void): () => void;
}

/** What the signer needs; all of it passed in. */
export interface PodCertSignerDeps {
  readonly api: Pick<KubeApi, 'watchList' | 'get' | 'replaceStatus'>;
  /** Default `meshid.io/workload-identity`. */
  readonly signerName: string;
  /** `certificates.k8s.io/v1beta1` (1.35+, and skewed 1.35 kubelets on 1.37) or `.../v1`. */
  readonly apiVersion: string;
  readonly currentIssuer: () => IssuerCredentials | undefined;
  readonly signers: SignerCache;
  readonly naming: IdentityNaming;
  /** The CA's leaf lifetime; a pod certificate lives at least an hour and at most maxExpirationSeconds. */
  readonly certLifetimeMs: number;
  readonly clockSkewMs: number;
  readonly clock: Clock;
  readonly random: Random;
  readonly logger: Logger;
  readonly events?: EventRecorder;
  readonly onIssued?: (issued: IssuedLeaf) => void;
  /** Told how each request ended (and the reason of a refusal). */
  readonly onOutcome?: (outcome: PodCertOutcome, reason: string) => void;
  /** Requests answered at once; default 16. */
  readonly concurrency?: number;
  /** Where in the lifetime beginRefreshAt falls, as fractions; default 0.5 to 0.8. */
  readonly refreshWindow?: { readonly from: number; readonly to: number };
  /** Wait before trying a request again after an API failure; default 1 s. */
  readonly retryMs?: number;
  /** The replicas sharing the work; without it this replica answers every request. */
  readonly share?: WorkShare;
  /**
   * A request another replica owns is answered here once it waited this long while its owner
   * answered nothing; default 30 s.
   */
  readonly takeoverAfterMs?: number;
  /** For the takeover timer; default Node's. */
  readonly timers?: Timers;
}

/** A pending request: the latest version seen, since when, and its owner once computed. */
interface Pending {
  readonly o: KubeResource;
  readonly uid: string;
  /** When this replica first saw it pending (kept across newer versions). */
  readonly since: number;
  /** The owning replica, computed once per replica set. */
  owner?: string;
}

const PLURAL = 'podcertificaterequests';
const TEN_MINUTES = 600_000;

function iso(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function keyOf(r: { namespace: string; name: string }): string {
  return `${r.namespace}/${r.name}`;
}

/**
 * The signer. `start()` begins the watch; `close()` stops it and waits for answers in flight.
 *
 * @example
 * ```ts
 * const signer = new PodCertificateSigner({ api, signerName: 'meshid.io/workload-identity',
 *   apiVersion: 'certificates.k8s.io/v1beta1', currentIssuer: () => store.current(), signers, ... });
 * signer.start();
 * ```
 */
export class PodCertificateSigner {
  readonly #d: PodCertSignerDeps;
  readonly #log: Logger;
  readonly #timersApi: Timers;
  /** Pending requests by namespace/name: the latest object seen. */
  readonly #pending = new Map<string, Pending>();
  /** Keys being answered now. */
  readonly #busy = new Set<string>();
  /** When each replica last answered a request this one saw pending (the takeover's measure). */
  readonly #progress = new Map<string, number>();
  readonly #abort = new AbortController();
  readonly #timers = new Set<unknown>();
  #takeover: { at: number; timer: unknown } | undefined;
  #unshare: (() => void) | undefined;
  #loop: Promise<void> | undefined;
  #idle: (() => void)[] = [];
  #drained: (() => void)[] = [];

  constructor(deps: PodCertSignerDeps) {
    this.#d = deps;
    this.#log = deps.logger.child({ component: 'podcert-signer' });
    this.#timersApi = deps.timers ?? systemTimers;
  }

  /** Requests waiting for an answer now (this replica's and the others'). */
  get pending(): number {
    return this.#pending.size;
  }

  start(): void {
    if (this.#loop !== undefined) return;
    const d = this.#d;
    this.#log.info(
      {
        signerName: d.signerName,
        apiVersion: d.apiVersion,
        ...(d.share === undefined ? {} : { replica: d.share.self }),
      },
      'signing PodCertificateRequests',
    );
    this.#unshare = d.share?.onChange(() => {
      for (const p of this.#pending.values()) delete p.owner;
      this.#pump();
    });
    this.#loop = d.api.watchList({
      kind: 'PodCertificateRequest',
      apiVersion: d.apiVersion,
      fieldSelector: `spec.signerName=${d.signerName}`,
      signal: this.#abort.signal,
      onEvent: (e) => {
        if (e.type === 'SYNC') {
          const listed = new Set(e.items.map((o) => keyOf(readRequest(o))));
          for (const k of this.#pending.keys()) if (!listed.has(k)) this.#pending.delete(k);
          for (const o of e.items) this.#see(o);
        } else if (e.type === 'DELETED') this.#pending.delete(keyOf(readRequest(e.object)));
        else this.#see(e.object);
        this.#pump();
      },
      onRetry: (err, ms) =>
        this.#log.warn(
          { err: err.message, retryMs: ms },
          'PodCertificateRequest watch failed; retrying',
        ),
    });
  }

  /** Tries every pending request again now (the issuer changed). */
  kick(): void {
    this.#pump();
  }

  /** Resolves when nothing is pending or being answered (tests, benchmarks). */
  idle(): Promise<void> {
    if (this.#pending.size === 0 && this.#busy.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  async close(): Promise<void> {
    this.#abort.abort();
    this.#unshare?.();
    for (const t of this.#timers) this.#timersApi.clear(t);
    if (this.#takeover !== undefined) this.#timersApi.clear(this.#takeover.timer);
    await this.#loop;
    if (this.#busy.size > 0) await new Promise<void>((r) => this.#drained.push(r));
  }

  #see(o: KubeResource): void {
    const req = readRequest(o);
    // The field selector already limits the watch; this is the second look.
    if (req.signerName !== this.#d.signerName) return;
    const key = keyOf(req);
    const before = this.#pending.get(key);
    if (req.answered === undefined) {
      this.#pending.set(key, {
        o,
        uid: req.uid,
        since: before?.since ?? this.#d.clock.now(),
        ...(before?.owner === undefined ? {} : { owner: before.owner }),
      });
      return;
    }
    this.#pending.delete(key);
    // An answer: its owner is making progress (ours are recorded too; they are never consulted).
    if (before !== undefined && this.#d.share !== undefined)
      this.#progress.set(this.#ownerOf(before), this.#d.clock.now());
  }

  #ownerOf(p: Pending): string {
    p.owner ??= this.#d.share?.ownerOf(p.uid) ?? '';
    return p.owner;
  }

  /**
   * Whether this replica answers `p` now: it owns it, or its owner has answered nothing seen here
   * for `takeoverAfterMs` while `p` waited (then the time it becomes due is returned instead).
   */
  #mayAnswer(p: Pending, now: number): true | 'takeover' | number {
    const share = this.#d.share;
    if (share === undefined) return true;
    const owner = this.#ownerOf(p);
    if (owner === share.self) return true;
    const quiet = Math.max(p.since, this.#progress.get(owner) ?? 0);
    const due = quiet + (this.#d.takeoverAfterMs ?? 30_000);
    return now >= due ? 'takeover' : due;
  }

  #pump(): void {
    const max = this.#d.concurrency ?? 16;
    if (this.#d.currentIssuer() === undefined) return;
    if (this.#d.share?.synced === false) return;
    const now = this.#d.clock.now();
    let nextDue = Infinity;
    for (const [key, p] of this.#pending) {
      if (this.#busy.size >= max || this.#abort.signal.aborted) break;
      if (this.#busy.has(key)) continue;
      const may = this.#mayAnswer(p, now);
      if (typeof may === 'number') {
        nextDue = Math.min(nextDue, may);
        continue;
      }
      if (may === 'takeover') {
        this.#d.onOutcome?.('takeover', '');
        this.#log.info(
          { request: key, owner: p.owner, waitedMs: now - p.since },
          'answering a PodCertificateRequest of a replica that answers nothing',
        );
      }
      this.#busy.add(key);
      void this.#answer(key, p.o).finally(() => {
        this.#busy.delete(key);
        this.#pump();
        if (this.#busy.size > 0) return;
        for (const r of this.#drained.splice(0)) r();
        if (this.#pending.size === 0) for (const r of this.#idle.splice(0)) r();
      });
    }
    this.#armTakeover(nextDue, now);
  }

  /** One timer for the earliest takeover seen (a later pump arms the next). */
  #armTakeover(at: number, now: number): void {
    if (at === Infinity || this.#abort.signal.aborted) return;
    if (this.#takeover !== undefined && this.#takeover.at <= at) return;
    if (this.#takeover !== undefined) this.#timersApi.clear(this.#takeover.timer);
    const timer = this.#timersApi.set(
      () => {
        this.#takeover = undefined;
        this.#pump();
      },
      Math.max(0, at - now),
    );
    this.#takeover = { at, timer };
  }

  /** Decides one request and writes the answer, conditional on the version decided on. */
  async #answer(key: string, o: KubeResource): Promise<void> {
    const req = readRequest(o);
    let decided: { status: Record<string, unknown>; signed?: SignedLeaf; refusal?: Refusal };
    try {
      decided = await this.#decide(req);
    } catch (err) {
      this.#retryLater(key, o, err);
      return;
    }
    try {
      await this.#d.api.replaceStatus({ ...o, status: decided.status }, PLURAL);
    } catch (err) {
      if (err instanceof KubeApiError && (err.status === 409 || err.status === 404)) {
        // Another replica answered first (or the request changed or went): its answer, or the
        // new version, arrives on the watch. This leaf was never published.
        if (this.#pending.get(key)?.o === o) this.#pending.delete(key);
        this.#d.onOutcome?.('conflict', '');
        return;
      }
      this.#retryLater(key, o, err);
      return;
    }
    if (this.#pending.get(key)?.o === o) this.#pending.delete(key);
    this.#published(req, decided);
  }

  #retryLater(key: string, o: KubeResource, err: unknown): void {
    this.#d.onOutcome?.('error', '');
    this.#log.warn(
      { err: (err as Error).message, request: key },
      'could not answer a PodCertificateRequest; trying again',
    );
    // Out of the queue until the timer: the watch may bring a newer version meanwhile.
    const held = this.#pending.get(key);
    if (held?.o === o) this.#pending.delete(key);
    const t = this.#timersApi.set(() => {
      this.#timers.delete(t);
      if (!this.#pending.has(key) && held?.o === o) this.#pending.set(key, held);
      this.#pump();
    }, this.#d.retryMs ?? 1000);
    this.#timers.add(t);
  }

  async #decide(
    req: PodCertRequest,
  ): Promise<{ status: Record<string, unknown>; signed?: SignedLeaf; refusal?: Refusal }> {
    const refuse = (refusal: Refusal): { status: Record<string, unknown>; refusal: Refusal } => ({
      status: { conditions: [this.#condition(refusal.condition, refusal.reason, refusal.message)] },
      refusal,
    });
    const early = requestProblem(req);
    if (early !== undefined) return refuse(early);
    const key = await requestedKey(req);
    if ('condition' in key) return refuse(key);
    const pod = await this.#d.api.get('v1', 'Pod', req.namespace, req.podName);
    const podRefusal = podProblem(req, pod);
    if (podRefusal !== undefined) return refuse(podRefusal);
    const issuer = this.#d.currentIssuer();
    if (issuer === undefined) throw new MeshidError('ERR_ISSUER_NOT_LOADED', 'no issuer is loaded');
    const now = this.#d.clock.now();
    if (now < issuer.chainNotBefore || now >= issuer.chainNotAfter)
      return refuse({
        condition: 'Failed',
        reason: PodCertReason.issuerNotValid,
        message: `the issuer chain is not valid now (valid from ${iso(issuer.chainNotBefore)} to ${iso(issuer.chainNotAfter)})`,
      });
    const workload = { namespace: req.namespace, serviceAccount: req.serviceAccount };
    let signed: SignedLeaf;
    try {
      signed = signLeaf(
        issuer,
        this.#d.signers.get(issuer),
        {
          spki: key.spki,
          workload,
          naming: this.#d.naming,
          issuedAt: now,
          lifetimeMs: Math.max(this.#d.certLifetimeMs, MIN_LIFETIME_SECONDS * 1000),
          clockSkewMs: this.#d.clockSkewMs,
          maxLifetimeMs: req.maxExpirationSeconds * 1000,
          random: this.#d.random,
        },
        this.#log,
      );
    } catch (err) {
      return refuse({
        condition: 'Failed',
        reason: PodCertReason.signingFailed,
        message: (err as Error).message,
      });
    }
    if (signed.notAfter - signed.notBefore < MIN_LIFETIME_SECONDS * 1000)
      return refuse({
        condition: 'Failed',
        reason: PodCertReason.issuerNotValid,
        message: `the issuer chain expires at ${iso(issuer.chainNotAfter)}, too soon for a certificate of at least 1 h: rotate the issuer`,
      });
    const chain = [signed.leaf, ...issuer.intermediatesDer]
      .map((d) => toPem(d, 'CERTIFICATE'))
      .join('');
    return {
      signed,
      status: {
        conditions: [
          this.#condition(
            'Issued',
            'Issued',
            `issued ${signed.identity} (serial ${signed.serial.toString('hex')})`,
          ),
        ],
        certificateChain: chain,
        notBefore: iso(signed.notBefore),
        notAfter: iso(signed.notAfter),
        beginRefreshAt: iso(this.#refreshAt(signed.notBefore, signed.notAfter)),
      },
    };
  }

  /** A point in the refresh window, at random, whole seconds, 10 minutes inside both ends. */
  #refreshAt(notBefore: number, notAfter: number): number {
    const { from, to } = this.#d.refreshWindow ?? { from: 0.5, to: 0.8 };
    const life = notAfter - notBefore;
    const fraction = this.#d.random.bytes(4).readUInt32BE(0) / 2 ** 32;
    const at = notBefore + life * (from + (to - from) * fraction);
    const bounded = Math.min(Math.max(at, notBefore + TEN_MINUTES), notAfter - TEN_MINUTES);
    return Math.floor(bounded / 1000) * 1000;
  }

  #condition(type: string, reason: string, message: string): Record<string, unknown> {
    return {
      type,
      status: 'True',
      reason,
      message,
      lastTransitionTime: iso(this.#d.clock.now()),
    };
  }

  /** After the write won: the audit record, the Event, the outcome. */
  #published(req: PodCertRequest, decided: { signed?: SignedLeaf; refusal?: Refusal }): void {
    const target = {
      kind: 'PodCertificateRequest',
      apiVersion: this.#d.apiVersion,
      namespace: req.namespace,
      name: req.name,
    };
    if (decided.signed !== undefined) {
      const s = decided.signed;
      const pod = { name: req.podName, uid: req.podUid, node: req.nodeName, request: req.name };
      auditIssued(
        s,
        { namespace: req.namespace, serviceAccount: req.serviceAccount },
        this.#log,
        this.#d.onIssued,
        pod,
      );
      this.#d.events?.record(
        target,
        'Normal',
        'IssuedPodCertificate',
        `Issued ${s.identity} to pod ${req.podName} (uid ${req.podUid}) on node ${req.nodeName} until ${iso(s.notAfter)}: serial ${s.serial.toString('hex')}`,
      );
      this.#d.onOutcome?.('issued', 'Issued');
      return;
    }
    const r = decided.refusal!;
    this.#log.warn(
      { request: keyOf(req), condition: r.condition, reason: r.reason, detail: r.message },
      'refused a PodCertificateRequest',
    );
    this.#d.events?.record(
      target,
      'Warning',
      r.condition === 'Denied' ? 'DeniedPodCertificate' : 'FailedPodCertificate',
      `${r.reason}: ${r.message}`,
    );
    this.#d.onOutcome?.(r.condition === 'Denied' ? 'denied' : 'failed', r.reason);
  }
}
