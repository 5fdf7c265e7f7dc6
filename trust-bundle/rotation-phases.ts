/**
 * The phases of a root rotation (see rotation.ts for the sequence): what each step reads, waits
 * for and writes, and the backend contract it writes through. Each step is one conditional write
 * of bundle + state; RotationController chooses which step runs and when.
 */
import type { Clock, Logger, Random } from '../core/index.js';
import { MeshidError, bundleOfAnchors, isMeshidError, parseAnchors } from '../core/index.js';
import type { Anchor, AnchorBundle } from '../core/index.js';
import { anchorOfChain, assertAnchorsIssuer, rootFromPem } from './lineage.js';
import type { CaObserver, ProxyObservation, ProxyObserver } from './rotation-observe.js';
import { rotationInProgress } from './rotation-state.js';
import type { RootRef, RotationPhase, RotationState, RotationWait } from './rotation-state.js';

/** What the controller reads in one step. */
export interface RotationSnapshot {
  /** The anchors bundle text as stored ('' when there is none). */
  readonly bundlePem: string;
  readonly state: RotationState | undefined;
  /** The live issuer's certificate chain (tls.crt, then ca.crt). */
  readonly issuerChainPem: string;
  /** Opaque version of bundle + state (the ConfigMap's resourceVersion). */
  readonly version: string;
}

/**
 * Where the bundle, the state, the issuer and the roots live: files (local mode) or the
 * Kubernetes API with cert-manager. Every method is idempotent.
 */
export interface RotationBackend {
  readonly mode: RotationState['mode'];
  /** Where the issuer and the bundle are (files, objects), named when a chain is refused. */
  readonly sources?: { readonly issuer: string; readonly anchors: string };
  read(): Promise<RotationSnapshot>;
  /** Writes bundle and state together if `version` is still current; ERR_ROTATION_CONFLICT if not. */
  write(version: string, bundlePem: string, state: RotationState): Promise<void>;
  /** cert-manager: the name of the root Certificate the issuer is signed through now. */
  currentRootName(): Promise<string | undefined>;
  /**
   * cert-manager: the root Certificate a new rotation stages (a new one, or with `inPlace` the
   * current one that cert-manager renewed).
   */
  planRoot(rotationId: string, inPlace: boolean): Promise<string | undefined>;
  /** Makes sure the new root exists; its certificate PEM once it does, undefined while pending. */
  ensureNewRoot(state: RotationState): Promise<string | undefined>;
  /** Has the issuer re-issued from the new root (idempotent). */
  switchIssuer(state: RotationState): Promise<void>;
  /** Rollback: removes what staging made. */
  discardNewRoot(state: RotationState): Promise<void>;
  /** After retire: removes the old root's objects (its key goes with them). */
  removeOldRoot(state: RotationState): Promise<void>;
}

/**
 * Copies of the bundle that pods read instead of the original (the anchors ConfigMap in every
 * meshed namespace): the propagate step brings them up to date and waits until each holds the
 * staged bundle, before it waits for the proxies.
 */
export interface BundleCopies {
  readonly description: string;
  /** Brings the copies to the current bundle where it can; which still do not hold `bundlePem`. */
  sync(bundlePem: string): Promise<{ total: number; behind: readonly string[] }>;
}

/** Dependencies and timings of a {@link RotationController}. */
export interface RotationControllerOptions {
  readonly backend: RotationBackend;
  readonly observer: ProxyObserver;
  /**
   * The CA replicas: the switch is complete only when each serves a certificate that chains to
   * the new root (the CA renews its serving certificate when it loads a new issuer), so that no
   * leaf signed by the old issuer is issued after `switchedAt`. None: the switch is complete when
   * the issuer Secret (files) chain to the new root, and a warning says the CAs are not checked.
   */
  readonly caObserver?: CaObserver;
  /** The bundle's copies, when pods read copies (none: pods read the original). */
  readonly copies?: BundleCopies;
  readonly clock: Clock;
  readonly random: Random;
  readonly logger: Logger;
  /** The CA's leaf lifetime (drain waits this long after the switch, plus twice the skew). */
  readonly leafLifetime: number;
  readonly clockSkew: number;
  /** A wait longer than this is reported overdue (and still holds). */
  readonly waitTimeout: number;
  /** Who runs this controller (for the state's `holder`). */
  readonly holder: string;
}

/** What one {@link RotationController.step} did. */
export interface StepResult {
  readonly state: RotationState | undefined;
  /** True when the phase advanced (the caller steps again at once). */
  readonly advanced: boolean;
}

export const iso = (ms: number): string => new Date(ms).toISOString();

export function rootRef(a: Anchor, certificate?: string): RootRef {
  return {
    fingerprint: a.fingerprint,
    subject: a.subject,
    notAfter: iso(a.notAfter),
    ...(certificate === undefined ? {} : { certificate }),
  };
}

/** The steps of a rotation, for {@link RotationController}. */
export class RotationPhases {
  readonly #o: RotationControllerOptions;
  constructor(options: RotationControllerOptions) {
    this.#o = options;
  }

  async stage(snap: RotationSnapshot, state: RotationState): Promise<StepResult> {
    const pem = await this.#o.backend.ensureNewRoot(state);
    if (pem === undefined) {
      return this.#wait(snap, state, { description: 'the new root to be issued' });
    }
    const now = this.#o.clock.now();
    const newAnchor = rootFromPem(pem, now);
    if (newAnchor.fingerprint === state.oldRoot.fingerprint) {
      return this.#wait(snap, state, {
        description: 'the new root to be issued (the root Secret still holds the old root)',
      });
    }
    const bundle = this.bundle(snap);
    const staged = bundleOfAnchors([...bundle.anchors, newAnchor]);
    assertAnchorsIssuer(staged, snap.issuerChainPem);
    const next = this.enter(state, 'propagate', {
      newRoot: rootRef(newAnchor, state.plannedRoot),
      stagedBundleFingerprint: staged.fingerprint,
    });
    await this.#o.backend.write(snap.version, staged.pem, next);
    this.#o.logger.info(
      { rotation: state.id, newRoot: newAnchor.subject, bundle: staged.fingerprint },
      'rotation: new root staged',
    );
    return { state: next, advanced: true };
  }

  async propagate(
    snap: RotationSnapshot,
    state: RotationState,
    signal: AbortSignal,
  ): Promise<StepResult> {
    const want = state.stagedBundleFingerprint!;
    if (this.#o.copies !== undefined) {
      // A proxy loads its namespace's copy: none may be left with a bundle lacking the new root.
      const c = await this.#o.copies.sync(snap.bundlePem);
      if (c.behind.length > 0) {
        return this.#wait(snap, state, {
          description: `${c.total - c.behind.length} of ${c.total} ${this.#o.copies.description} hold the staged bundle (waiting for ${names(c.behind.map((name) => ({ name })))})`,
          done: c.total - c.behind.length,
          total: c.total,
        });
      }
    }
    const seen = await this.#o.observer.observe(signal);
    if (seen.length === 0) {
      this.#o.logger.warn(
        { rotation: state.id, observer: this.#o.observer.description },
        'rotation: no proxies are observed, so propagation has nothing to wait for (give --proxy-admin or --pod-selector)',
      );
    }
    // The staged bundle is written in canonical form, so its fingerprint is also the canonical
    // fingerprint of any file holding its anchors (a kubelet's trust bundle file, shuffled).
    const behind = seen.filter(
      (p) => p.bundleFingerprint !== want && p.canonicalFingerprint !== want,
    );
    if (behind.length > 0) {
      return this.#wait(snap, state, {
        description: `${seen.length - behind.length} of ${seen.length} proxies have loaded the staged bundle (waiting for ${names(behind)})`,
        done: seen.length - behind.length,
        total: seen.length,
      });
    }
    const next = this.enter(state, 'switch', {});
    await this.#o.backend.write(snap.version, snap.bundlePem, next);
    this.#o.logger.info(
      { rotation: state.id, proxies: seen.length },
      'rotation: staged bundle loaded everywhere',
    );
    return { state: next, advanced: true };
  }

  async switch(
    snap: RotationSnapshot,
    state: RotationState,
    signal: AbortSignal,
  ): Promise<StepResult> {
    const newAnchor = this.#newAnchor(snap, state);
    if (anchorOfChain(snap.issuerChainPem, [newAnchor]) === undefined) {
      await this.#o.backend.switchIssuer(state);
      const after = await this.#o.backend.read();
      if (anchorOfChain(after.issuerChainPem, [newAnchor]) === undefined) {
        return this.#wait(after, state, {
          description: 'the identity issuer to be re-issued from the new root',
        });
      }
      snap = after;
    }
    if (this.#o.caObserver === undefined) {
      this.#o.logger.warn(
        { rotation: state.id },
        'rotation: the CA replicas are not observed (give --ca-address): the switch counts from when the issuer Secret changed, not from when every CA loaded it',
      );
    } else {
      const cas = await this.#o.caObserver.observe(signal);
      const behind = cas.filter(
        (c) => c.chainPem === undefined || anchorOfChain(c.chainPem, [newAnchor]) === undefined,
      );
      if (behind.length > 0 || cas.length === 0) {
        return this.#wait(snap, state, {
          description: `${cas.length - behind.length} of ${cas.length} CA replicas serve from the new issuer${behind.length > 0 ? ` (waiting for ${names(behind)})` : ' (none found)'}`,
          done: cas.length - behind.length,
          total: cas.length,
        });
      }
    }
    const now = this.#o.clock.now();
    const next = this.enter(state, 'drain', { switchedAt: iso(now) });
    await this.#o.backend.write(snap.version, snap.bundlePem, next);
    this.#o.logger.info({ rotation: state.id }, 'rotation: issuer now chains to the new root');
    return { state: next, advanced: true };
  }

  async drain(
    snap: RotationSnapshot,
    state: RotationState,
    signal: AbortSignal,
  ): Promise<StepResult> {
    const switchedAt = Date.parse(state.switchedAt!);
    const expiry = switchedAt + this.#o.leafLifetime + 2 * this.#o.clockSkew;
    const newAnchor = this.#newAnchor(snap, state);
    const seen = await this.#o.observer.observe(signal);
    const old = seen.filter((p) => !renewedSince(p, newAnchor, switchedAt - this.#o.clockSkew));
    const now = this.#o.clock.now();
    if (now < expiry || old.length > 0) {
      const parts = [
        now < expiry
          ? `leaves issued before the switch to expire (at ${iso(expiry)})`
          : 'every leaf issued before the switch has expired',
        `${seen.length - old.length} of ${seen.length} proxies hold a certificate from the new issuer${old.length > 0 ? ` (waiting for ${names(old)})` : ''}`,
      ];
      return this.#wait(snap, state, {
        description: parts.join('; '),
        done: seen.length - old.length,
        total: seen.length,
        notBefore: iso(expiry),
      });
    }
    const next = this.enter(state, 'retire', {});
    await this.#o.backend.write(snap.version, snap.bundlePem, next);
    return { state: next, advanced: true };
  }

  async retire(snap: RotationSnapshot, state: RotationState): Promise<StepResult> {
    const bundle = this.bundle(snap);
    const kept = bundleOfAnchors(
      bundle.anchors.filter((a) => a.fingerprint !== state.oldRoot.fingerprint),
    );
    assertAnchorsIssuer(kept, snap.issuerChainPem);
    await this.#o.backend.removeOldRoot(state);
    const next = this.enter(state, 'done', {});
    await this.#o.backend.write(snap.version, kept.pem, next);
    this.#o.logger.info(
      { rotation: state.id, bundle: kept.fingerprint },
      'rotation done: old root retired',
    );
    await this.#retireCopies(state, kept.pem);
    return { state: next, advanced: true };
  }

  /**
   * Brings the copies (namespace ConfigMaps, ClusterTrustBundles) to the final bundle at once, as
   * stage did with the staged one, instead of leaving the old root in them until the sync
   * controller's next pass (or for good, where no sync controller runs). Best effort: the
   * rotation is done either way, and a copy not written now is the sync controller's to fix.
   */
  async #retireCopies(state: RotationState, bundlePem: string): Promise<void> {
    if (this.#o.copies === undefined) return;
    let behind: readonly string[];
    try {
      behind = (await this.#o.copies.sync(bundlePem)).behind;
    } catch (err) {
      behind = [err instanceof Error ? err.message : String(err)];
    }
    if (behind.length > 0)
      this.#o.logger.warn(
        { rotation: state.id, behind },
        `rotation: ${this.#o.copies.description} not all updated to the final bundle; meshid trust sync brings them along`,
      );
  }

  // ---- helpers ----------------------------------------------------------------------------

  bundle(snap: RotationSnapshot): AnchorBundle {
    return parseAnchors(snap.bundlePem, { now: this.#o.clock.now() });
  }

  #newAnchor(snap: RotationSnapshot, state: RotationState): Anchor {
    const a = this.bundle(snap).anchors.find((x) => x.fingerprint === state.newRoot?.fingerprint);
    if (a === undefined) {
      throw new MeshidError(
        'ERR_ROTATION_REFUSED',
        `the staged root "${state.newRoot?.subject ?? '?'}" is no longer in the bundle; the rotation holds (roll forward by restoring it)`,
      );
    }
    return a;
  }

  inProgress(snap: RotationSnapshot, what: string): RotationState {
    if (snap.state === undefined || !rotationInProgress(snap.state)) {
      throw new MeshidError('ERR_ROTATION_REFUSED', `no rotation in progress to ${what}`);
    }
    return snap.state;
  }

  enter(state: RotationState, phase: RotationPhase, fields: Partial<RotationState>): RotationState {
    const at = iso(this.#o.clock.now());
    const { waitingFor: _w, lastError: _e, ...rest } = state;
    void _w;
    void _e;
    return {
      ...rest,
      ...fields,
      phase,
      phaseStartedAt: at,
      updatedAt: at,
      holder: this.#o.holder,
      history: [...state.history, { phase, at }],
    };
  }

  /** Records what the phase waits for (written only when it changed) and holds. */
  async #wait(
    snap: RotationSnapshot,
    state: RotationState,
    wait: Omit<RotationWait, 'deadline'>,
  ): Promise<StepResult> {
    const deadline =
      Date.parse(state.phaseStartedAt) +
      this.#o.waitTimeout +
      (wait.notBefore === undefined
        ? 0
        : Math.max(0, Date.parse(wait.notBefore) - Date.parse(state.phaseStartedAt)));
    const overdue = this.#o.clock.now() > deadline;
    const waitingFor: RotationWait = {
      ...wait,
      description: overdue
        ? `OVERDUE (holding, never skipping): ${wait.description}`
        : wait.description,
      deadline: iso(deadline),
    };
    const same =
      JSON.stringify(state.waitingFor) === JSON.stringify(waitingFor) &&
      state.lastError === undefined;
    if (same) return { state, advanced: false };
    const { lastError: _e, ...rest } = state;
    void _e;
    const next: RotationState = {
      ...rest,
      waitingFor,
      updatedAt: iso(this.#o.clock.now()),
      holder: this.#o.holder,
    };
    await this.#o.backend.write(snap.version, snap.bundlePem, next);
    if (overdue)
      this.#o.logger.warn(
        { rotation: state.id, phase: state.phase },
        `rotation overdue: ${wait.description}`,
      );
    return { state: next, advanced: false };
  }

  async retry<T>(fn: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (!isMeshidError(err, 'ERR_ROTATION_CONFLICT') || attempt >= 5) throw err;
      }
    }
  }
}

function renewedSince(p: ProxyObservation, newAnchor: Anchor, since: number): boolean {
  if (p.chainPem !== undefined) return anchorOfChain(p.chainPem, [newAnchor]) !== undefined;
  return p.certNotBefore !== undefined && p.certNotBefore >= since;
}

function names(list: readonly { name: string; error?: string | undefined }[]): string {
  const shown = list
    .slice(0, 3)
    .map((p) => (p.error === undefined ? p.name : `${p.name}: ${p.error}`));
  return shown.join(', ') + (list.length > 3 ? ` and ${list.length - 3} more` : '');
}
