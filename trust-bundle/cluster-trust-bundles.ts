/**
 * The anchors as ClusterTrustBundles (certificates.k8s.io/v1beta1, KEP-3257), for the kubelet's
 * `clusterTrustBundle` projected volumes: pods with pod certificates (and any workload that wants
 * meshid's anchors) mount them with no copy per namespace.
 *
 * Two bundles of meshid's signer, both labelled {@link TRUST_BUNDLE_ROLE_LABEL}, as the KEP
 * suggests for canarying anchor changes:
 * - `live` (`<signer>:live`) holds exactly the anchors of the anchors ConfigMap, always: what
 *   every meshed pod trusts. The rotation's stage step adds the new root to it, retire removes the
 *   old one, as for the ConfigMap and its copies (and propagate waits for it as for the copies).
 * - `canary` (`<signer>:canary`) holds what `live` will hold when the rotation in progress
 *   finishes (the new root only) and equals `live` otherwise. Pods that select the canary
 *   (`labelSelector: meshid.io/trust-bundle=canary`) test the retire step before it happens: if
 *   they still serve and connect, dropping the old root is safe for the workloads.
 *
 * Each pass reads the ConfigMap afresh and writes conditionally on the resourceVersion read; a
 * bundle of our name without our label is someone else's and is never written, only reported.
 * An anchors text that does not parse (ERR_ANCHORS_INVALID) is never published: the bundles keep
 * what they hold.
 */
import type { Logger } from '../core/index.js';
import { bundleOfAnchors, isMeshidError, parseAnchors } from '../core/index.js';
import type { AnchorBundle } from '../core/index.js';
import type { TrustKubeApi, TrustKubeObject } from './kube.js';
import type { BundleCopies } from './rotation.js';
import { ROTATION_ANNOTATION, parseRotationState, rotationInProgress } from './rotation-state.js';

/** The API version meshid writes (beta since Kubernetes 1.33). */
export const CTB_API_VERSION = 'certificates.k8s.io/v1beta1';

/** The label that marks a ClusterTrustBundle as meshid's; its value is the role. */
export const TRUST_BUNDLE_ROLE_LABEL = 'meshid.io/trust-bundle';

/** The two bundles meshid publishes. */
type TrustBundleRole = 'live' | 'canary';

/** Where the anchors are and which signer the bundles belong to. */
interface ClusterTrustBundleSettings {
  /** The signer whose anchors these are, e.g. `meshid.io/workload-identity`. */
  readonly signerName: string;
  /** The control-plane namespace holding the anchors ConfigMap. */
  readonly namespace: string;
  readonly trustAnchorsConfigMap: string;
  readonly trustAnchorsKey: string;
}

/** What one pass did. */
interface CtbPassResult {
  readonly created: readonly TrustBundleRole[];
  readonly updated: readonly TrustBundleRole[];
  /** Bundles of our names that are not ours (left alone). */
  readonly foreign: readonly TrustBundleRole[];
  /** A write lost a race: another pass is due. */
  readonly conflicted: boolean;
  /** False when the anchors ConfigMap (or its key) does not exist, or does not parse. */
  readonly sourceFound: boolean;
}

/**
 * The object name of a bundle: the signer name with `/` as `:`, then the role, as the API
 * requires of signer-linked bundles.
 *
 * @example
 * ```ts
 * clusterTrustBundleName('meshid.io/workload-identity', 'live'); // 'meshid.io:workload-identity:live'
 * ```
 */
export function clusterTrustBundleName(signerName: string, role: TrustBundleRole): string {
  return `${signerName.replaceAll('/', ':')}:${role}`;
}

/**
 * The fingerprints (hex SHA-256 of each certificate's DER) of a PEM bundle, sorted: two bundles
 * hold the same anchors when these are equal (order, duplicates and line breaks do not matter, as
 * the kubelet reorders and de-duplicates).
 */
function anchorSet(pem: string, now: number): string {
  return parseAnchors(pem, { now })
    .anchors.map((a) => a.fingerprint)
    .sort()
    .join(',');
}

const ROLES: readonly TrustBundleRole[] = ['live', 'canary'];

const trustBundleOf = (o: TrustKubeObject | undefined): string | undefined =>
  (o?.['spec'] as { trustBundle?: string } | undefined)?.trustBundle;

/**
 * The controller of meshid's ClusterTrustBundles.
 *
 * @example
 * ```ts
 * const ctbs = new ClusterTrustBundleController({ api, settings, logger, now: () => clock.now() });
 * await ctbs.converge();
 * ```
 */
export class ClusterTrustBundleController {
  readonly #api: TrustKubeApi;
  readonly #s: ClusterTrustBundleSettings;
  readonly #logger: Logger;
  readonly #now: () => number;
  /** Foreign bundles already reported, by role → resourceVersion (one warning each). */
  readonly #reported = new Map<TrustBundleRole, string>();

  constructor(o: {
    api: TrustKubeApi;
    settings: ClusterTrustBundleSettings;
    logger: Logger;
    now: () => number;
  }) {
    this.#api = o.api;
    this.#s = o.settings;
    this.#logger = o.logger;
    this.#now = o.now;
  }

  /** The live bundle, as messages name it. */
  get liveName(): string {
    return `ClusterTrustBundle ${clusterTrustBundleName(this.#s.signerName, 'live')}`;
  }

  /** The two bundles as they should be, from the anchors ConfigMap; undefined without anchors. */
  async #wanted(): Promise<Record<TrustBundleRole, AnchorBundle> | undefined> {
    const s = this.#s;
    const cm = await this.#api.get('v1', 'ConfigMap', s.namespace, s.trustAnchorsConfigMap);
    const text = (cm?.['data'] as Record<string, string> | undefined)?.[s.trustAnchorsKey];
    if (text === undefined) return undefined;
    let live: AnchorBundle;
    try {
      live = parseAnchors(text, { now: this.#now() });
    } catch (err) {
      if (!isMeshidError(err, 'ERR_ANCHORS_INVALID')) throw err;
      this.#logger.warn(
        { configMap: `${s.namespace}/${s.trustAnchorsConfigMap}`, err: err.message },
        'ClusterTrustBundles not updated: the anchors ConfigMap does not hold a valid bundle',
      );
      return undefined;
    }
    const stateText = cm?.metadata.annotations?.[ROTATION_ANNOTATION];
    const state = stateText === undefined ? undefined : parseRotationState(stateText);
    const next =
      state !== undefined && rotationInProgress(state) && state.newRoot !== undefined
        ? live.anchors.filter((a) => a.fingerprint === state.newRoot!.fingerprint)
        : [];
    return { live, canary: next.length > 0 ? bundleOfAnchors(next) : live };
  }

  #object(role: TrustBundleRole, bundle: AnchorBundle, base?: TrustKubeObject): TrustKubeObject {
    const s = this.#s;
    return {
      ...base,
      apiVersion: CTB_API_VERSION,
      kind: 'ClusterTrustBundle',
      metadata: {
        ...base?.metadata,
        name: clusterTrustBundleName(s.signerName, role),
        labels: {
          ...base?.metadata.labels,
          'app.kubernetes.io/part-of': 'meshid',
          [TRUST_BUNDLE_ROLE_LABEL]: role,
        },
        annotations: {
          ...base?.metadata.annotations,
          'meshid.io/anchors-source': `${s.namespace}/${s.trustAnchorsConfigMap}`,
          'meshid.io/anchors-sha256': bundle.fingerprint,
        },
      },
      spec: { signerName: s.signerName, trustBundle: bundle.pem },
    };
  }

  /** One pass: creates or updates each bundle that differs from what the anchors say. */
  async reconcile(): Promise<CtbPassResult> {
    const result = {
      created: [] as TrustBundleRole[],
      updated: [] as TrustBundleRole[],
      foreign: [] as TrustBundleRole[],
      conflicted: false,
      sourceFound: false,
    };
    const wanted = await this.#wanted();
    if (wanted === undefined) return result;
    result.sourceFound = true;
    for (const role of ROLES) {
      const name = clusterTrustBundleName(this.#s.signerName, role);
      const have = await this.#api.get(CTB_API_VERSION, 'ClusterTrustBundle', '', name);
      const want = wanted[role];
      try {
        if (have === undefined) {
          await this.#api.create(this.#object(role, want));
          result.created.push(role);
        } else if (have.metadata.labels?.[TRUST_BUNDLE_ROLE_LABEL] !== role) {
          result.foreign.push(role);
          this.#reportForeign(role, have);
        } else if (trustBundleOf(have) !== want.pem) {
          await this.#api.replace(this.#object(role, want, have));
          result.updated.push(role);
        }
      } catch (err) {
        if (!isMeshidError(err, 'ERR_ROTATION_CONFLICT')) throw err;
        result.conflicted = true;
      }
    }
    if (result.created.length + result.updated.length > 0)
      this.#logger.info(
        { created: result.created, updated: result.updated, signer: this.#s.signerName },
        'ClusterTrustBundles updated',
      );
    return result;
  }

  #reportForeign(role: TrustBundleRole, have: TrustKubeObject): void {
    const rv = have.metadata.resourceVersion ?? '';
    if (this.#reported.get(role) === rv) return;
    this.#reported.set(role, rv);
    this.#logger.warn(
      { clusterTrustBundle: have.metadata.name },
      `ClusterTrustBundle ${have.metadata.name} exists and was not made by meshid trust sync (no ${TRUST_BUNDLE_ROLE_LABEL}=${role} label): left alone; delete it to let meshid publish its anchors there`,
    );
  }

  /** Passes until no write loses a race (at most `attempts` passes). */
  async converge(attempts = 5): Promise<CtbPassResult> {
    for (let i = 1; ; i++) {
      const r = await this.reconcile();
      if (!r.conflicted || i >= attempts) return r;
    }
  }

  /**
   * Whether the live bundle holds exactly the anchors of `bundlePem` (what the rotation's
   * propagate step waits for): `behind` is `['live']` when it does not.
   *
   * @example
   * ```ts
   * (await ctbs.lag(stagedPem)).behind; // [] once published
   * ```
   */
  async lag(bundlePem: string): Promise<{ total: number; behind: readonly string[] }> {
    const name = clusterTrustBundleName(this.#s.signerName, 'live');
    const have = trustBundleOf(
      await this.#api.get(CTB_API_VERSION, 'ClusterTrustBundle', '', name),
    );
    const now = this.#now();
    const same = have !== undefined && anchorSet(have, now) === anchorSet(bundlePem, now);
    return { total: 1, behind: same ? [] : [this.liveName] };
  }
}

/**
 * The bundles as the rotation controller's {@link BundleCopies}: a pass, then whether `live`
 * holds the bundle.
 *
 * @example
 * ```ts
 * combinedCopies([bundleCopiesOf(copies), clusterTrustBundleCopiesOf(ctbs)]);
 * ```
 */
export function clusterTrustBundleCopiesOf(ctbs: ClusterTrustBundleController): BundleCopies {
  return {
    description: 'ClusterTrustBundles',
    async sync(bundlePem) {
      try {
        await ctbs.converge();
        return await ctbs.lag(bundlePem);
      } catch (err) {
        // Not written (or not readable) now: the rotation holds on it, naming why, and the
        // other copies it waits for are still brought along.
        const why = err instanceof Error ? err.message : String(err);
        return { total: 1, behind: [`${ctbs.liveName} (${why})`] };
      }
    },
  };
}

/**
 * Several sets of copies as one: the rotation waits until none is behind.
 *
 * @example
 * ```ts
 * new RotationController({ ...options, copies: combinedCopies([a, b]) });
 * ```
 */
export function combinedCopies(all: readonly BundleCopies[]): BundleCopies {
  return {
    description: all.map((c) => c.description).join(' and '),
    async sync(bundlePem) {
      const lags = await Promise.all(all.map((c) => c.sync(bundlePem)));
      return {
        total: lags.reduce((n, l) => n + l.total, 0),
        behind: lags.flatMap((l) => l.behind),
      };
    },
  };
}
