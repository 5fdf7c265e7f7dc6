/**
 * The rotation controller: a persisted state machine that takes the mesh from root A to root B
 * without a failed handshake.
 *
 *   stage      the new root is made (cert-manager issues it, or it is generated locally) and added
 *              to the bundle beside the old one;
 *   propagate  wait until every observed proxy reports the staged bundle's fingerprint;
 *   switch     the identity issuer is re-issued from the new root; wait until it chains to it;
 *   drain      wait until no live leaf can chain to the old root: every leaf issued before the
 *              switch has expired (leaf lifetime + clock skew), and every observed proxy holds a
 *              certificate from after the switch;
 *   retire     the old root leaves the bundle.
 *
 * Every step is a read, a decision and one conditional write of bundle + state together
 * (resourceVersion in a cluster), so several replicas can run the controller: a loser gets a
 * conflict, re-reads and finds the step done. A wait that runs past its deadline is reported as
 * overdue and holds; nothing ever skips ahead. Pause stops every step; rollback is allowed until
 * the switch (after it the issuer chains to the new root, and removing it would break the mesh).
 */
import { MeshidError, bundleOfAnchors, isMeshidError } from '../core/index.js';
import type { Anchor } from '../core/index.js';
import { assertAnchorsIssuer, describeIssuer, fingerprintsOf } from './lineage.js';
import { RotationPhases, iso, rootRef } from './rotation-phases.js';
import type { RotationControllerOptions, StepResult } from './rotation-phases.js';
import { rotationInProgress } from './rotation-state.js';
import type { RotationState } from './rotation-state.js';

export type {
  BundleCopies,
  RotationBackend,
  RotationControllerOptions,
  RotationSnapshot,
} from './rotation-phases.js';

/**
 * The rotation controller. `start` begins a rotation; `step` takes the next step possible now;
 * `run` steps until the rotation is done or the signal aborts.
 *
 * @example
 * ```ts
 * const rc = new RotationController({ backend, observer, clock, random, logger, leafLifetime, clockSkew, waitTimeout, holder });
 * await rc.start();
 * await rc.run({ interval: 5000, signal });
 * ```
 */
export class RotationController {
  readonly #o: RotationControllerOptions;
  readonly #phases: RotationPhases;
  constructor(options: RotationControllerOptions) {
    this.#o = options;
    this.#phases = new RotationPhases(options);
  }

  /** The persisted state (undefined when no rotation was ever started). */
  async status(): Promise<RotationState | undefined> {
    return (await this.#o.backend.read()).state;
  }

  /**
   * Starts a rotation (phase stage). Refused when one is in progress, or when the live issuer
   * does not chain to the current bundle (a rotation from there would leave it unanchored).
   */
  async start(opts: { inPlace?: boolean } = {}): Promise<RotationState> {
    return this.#phases.retry(async () => {
      const snap = await this.#o.backend.read();
      if (snap.state !== undefined && rotationInProgress(snap.state)) {
        throw new MeshidError(
          'ERR_ROTATION_REFUSED',
          `a rotation (${snap.state.id}) is already in progress, in phase ${snap.state.phase}${snap.state.paused ? ' (paused)' : ''}`,
        );
      }
      const bundle = this.#phases.bundle(snap);
      let oldAnchor: Anchor;
      try {
        oldAnchor = assertAnchorsIssuer(bundle, snap.issuerChainPem);
      } catch (err) {
        if (!isMeshidError(err, 'ERR_ROTATION_REFUSED')) throw err;
        throw new MeshidError(
          'ERR_ROTATION_REFUSED',
          `refusing to rotate: the live issuer${describeIssuer(snap.issuerChainPem)} does not chain to any anchor of the current bundle, so a rotation would leave it unanchored; fix the issuer or the bundle first${fingerprintsOf(snap.issuerChainPem, bundle, this.#o.backend.sources)}`,
        );
      }
      const now = this.#o.clock.now();
      const id = `r${this.#o.random.bytes(4).toString('hex')}`;
      const plannedRoot = await this.#o.backend.planRoot(id, opts.inPlace === true);
      const state: RotationState = {
        version: 1,
        id,
        mode: this.#o.backend.mode,
        phase: 'stage',
        paused: false,
        startedAt: iso(now),
        phaseStartedAt: iso(now),
        updatedAt: iso(now),
        oldRoot: rootRef(oldAnchor, await this.#o.backend.currentRootName()),
        ...(plannedRoot === undefined ? {} : { plannedRoot }),
        holder: this.#o.holder,
        history: [{ phase: 'stage', at: iso(now) }],
      };
      await this.#o.backend.write(snap.version, snap.bundlePem, state);
      this.#o.logger.info({ rotation: id, oldRoot: oldAnchor.subject }, 'rotation started');
      return state;
    });
  }

  /** Pauses (true) or resumes (false) the rotation in progress. */
  async setPaused(paused: boolean): Promise<RotationState> {
    return this.#phases.retry(async () => {
      const snap = await this.#o.backend.read();
      const state = this.#phases.inProgress(snap, paused ? 'pause' : 'resume');
      if (state.paused === paused) return state;
      const next = { ...state, paused, updatedAt: iso(this.#o.clock.now()) };
      await this.#o.backend.write(snap.version, snap.bundlePem, next);
      this.#o.logger.info(
        { rotation: state.id, phase: state.phase },
        paused ? 'rotation paused' : 'rotation resumed',
      );
      return next;
    });
  }

  /**
   * Rolls back a rotation that has not switched yet: the staged root leaves the bundle and its
   * objects are removed. Refused from switch on (the issuer may already chain to the new root).
   */
  async rollback(): Promise<RotationState> {
    return this.#phases.retry(async () => {
      const snap = await this.#o.backend.read();
      const state = this.#phases.inProgress(snap, 'roll back');
      if (state.phase !== 'stage' && state.phase !== 'propagate') {
        throw new MeshidError(
          'ERR_ROTATION_REFUSED',
          `refusing to roll back from phase ${state.phase}: the issuer is (or may be) re-issued from the new root, so removing it would leave the issuer unanchored; let the rotation finish`,
        );
      }
      const bundle = this.#phases.bundle(snap);
      const kept = bundle.anchors.filter(
        (a) => state.newRoot === undefined || a.fingerprint !== state.newRoot.fingerprint,
      );
      const next = bundleOfAnchors(kept);
      assertAnchorsIssuer(next, snap.issuerChainPem);
      await this.#o.backend.discardNewRoot(state);
      const done = this.#phases.enter(state, 'rolled-back', { paused: false });
      await this.#o.backend.write(snap.version, next.pem, done);
      this.#o.logger.info({ rotation: state.id }, 'rotation rolled back');
      return done;
    });
  }

  /** Takes the next step possible now. */
  async step(signal: AbortSignal = new AbortController().signal): Promise<StepResult> {
    const snap = await this.#o.backend.read();
    const state = snap.state;
    if (state === undefined || !rotationInProgress(state) || state.paused) {
      return { state, advanced: false };
    }
    try {
      switch (state.phase) {
        case 'stage':
          return await this.#phases.stage(snap, state);
        case 'propagate':
          return await this.#phases.propagate(snap, state, signal);
        case 'switch':
          return await this.#phases.switch(snap, state, signal);
        case 'drain':
          return await this.#phases.drain(snap, state, signal);
        case 'retire':
          return await this.#phases.retire(snap, state);
        default:
          return { state, advanced: false };
      }
    } catch (err) {
      if (isMeshidError(err, 'ERR_ROTATION_CONFLICT')) {
        // Someone else wrote first: the next step re-reads and finds out what they did.
        return { state, advanced: true };
      }
      const message = err instanceof Error ? err.message : String(err);
      this.#o.logger.warn(
        { rotation: state.id, phase: state.phase, err: message },
        'rotation step failed; holding',
      );
      if (state.lastError !== message) {
        await this.#o.backend
          .write(snap.version, snap.bundlePem, {
            ...state,
            lastError: message,
            updatedAt: iso(this.#o.clock.now()),
          })
          .catch(() => undefined);
      }
      return { state: { ...state, lastError: message }, advanced: false };
    }
  }

  /**
   * Steps until the rotation is done (or rolled back, or paused), waiting `interval` between
   * checks that changed nothing. With `once`, returns after the steps possible now.
   */
  async run(opts: {
    interval: number;
    signal: AbortSignal;
    once?: boolean;
    /** Called after every step (progress reporting). */
    onStep?: (result: StepResult) => void;
  }): Promise<RotationState | undefined> {
    for (;;) {
      const r = await this.step(opts.signal);
      opts.onStep?.(r);
      if (r.state === undefined || !rotationInProgress(r.state)) return r.state;
      if (r.advanced) continue;
      if (opts.once === true || opts.signal.aborted || r.state.paused) return r.state;
      await waitInterval(opts.interval, opts.signal);
      if (opts.signal.aborted) return r.state;
    }
  }
}

/**
 * Resolves after `ms`, or at once when `signal` aborts (never rejects): the controllers' wait
 * between checks.
 *
 * @example
 * ```ts
 * await waitInterval(5000, signal);
 * ```
 */
export function waitInterval(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
