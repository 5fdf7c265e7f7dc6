/**
 * Copies of the anchors ConfigMap in meshed namespaces. An injected pod mounts the anchors
 * ConfigMap of its own namespace (a pod cannot mount another namespace's), so every namespace
 * that opts into injection needs one. This controller keeps them, as trust-manager's Bundle does
 * for its `namespaceSelector` targets:
 *
 * - a namespace with the annotation `meshid.io/inject: enabled` (the injector's opt-in), or with
 *   a pod the injector labelled {@link CONTROL_PLANE_NS_LABEL} (a pod that opted in by itself),
 *   other than the control plane's, kube-system, one labelled `config.linkerd.io/admission-webhooks:
 *   disabled` (the injector never sees its pods) or one being deleted, gets a copy;
 * - a copy holds the source's bundle text exactly (the proxies' fingerprint is of the text), and
 *   is updated whenever the source changes; every write is conditional on the resourceVersion read;
 * - a copy is ours when it carries the label {@link ANCHORS_COPY_LABEL} naming the source's
 *   namespace. A ConfigMap of that name without it is someone else's (trust-manager's, or made by
 *   hand): it is never updated or deleted, only reported;
 * - our copy in a namespace that no longer opts in is deleted (conditionally on the uid and
 *   resourceVersion read, so a ConfigMap put there since is left alone).
 *
 * Every pass reads everything afresh (the source, the namespaces, the copies), so a pass after a
 * restart converges from whatever an interrupted one left. {@link AnchorsCopyController.run}
 * passes on every change the watches report, never on a timer (only a failed write is retried
 * after a pause).
 */
import type { Logger } from '../core/index.js';
import {
  ADMISSION_WEBHOOKS_LABEL,
  CONTROL_PLANE_NS_LABEL,
  INJECT_ANNOTATION,
  isMeshidError,
} from '../core/index.js';
import type { TrustKubeApi, TrustKubeObject } from './kube.js';
import type { BundleCopies } from './rotation.js';

/** The label that marks a copy as ours; its value is the source's (control-plane) namespace. */
export const ANCHORS_COPY_LABEL = 'meshid.io/anchors-copy-of';

/** Where the source is and what the copies are called. */
interface AnchorsCopySettings {
  /** The control-plane namespace: the source lives there, and it gets no copy. */
  readonly namespace: string;
  readonly trustAnchorsConfigMap: string;
  readonly trustAnchorsKey: string;
}

/** What one pass did, by namespace. */
export interface CopyPassResult {
  readonly created: readonly string[];
  readonly updated: readonly string[];
  readonly deleted: readonly string[];
  /** Namespaces that opt in but hold a ConfigMap of that name that is not ours (left alone). */
  readonly foreign: readonly string[];
  /** Namespaces whose write failed (after the others were done), with why. */
  readonly failed: readonly { namespace: string; error: string }[];
  /** A write lost a race (the object changed since the read): another pass is due. */
  readonly conflicted: boolean;
  /** False when the source ConfigMap (or its key) does not exist: nothing was written. */
  readonly sourceFound: boolean;
}

/** How far the copies are from a bundle (the rotation's propagate step). */
interface CopiesLag {
  /** Namespaces that opt in. */
  readonly total: number;
  /** Those whose copy is missing or holds another text (ours, or none yet). */
  readonly behind: readonly string[];
  /** Those holding a ConfigMap of that name that is not ours (not waited for). */
  readonly foreign: readonly string[];
}

/**
 * Whether a namespace gets a copy.
 */
function wantsAnchorsCopy(
  ns: TrustKubeObject,
  s: AnchorsCopySettings,
  /** Namespaces that hold a pod the injector labelled. */
  injectedPodsIn: ReadonlySet<string> = new Set(),
): boolean {
  const name = ns.metadata.name;
  if (name === s.namespace || name === 'kube-system') return false;
  if (ns.metadata.labels?.[ADMISSION_WEBHOOKS_LABEL] === 'disabled') return false;
  if ((ns['status'] as { phase?: string } | undefined)?.phase === 'Terminating') return false;
  return ns.metadata.annotations?.[INJECT_ANNOTATION] === 'enabled' || injectedPodsIn.has(name);
}

/** The label selector of the pods the injector injected for the control plane of `s`. */
const injectedPodSelector = (s: AnchorsCopySettings): string =>
  `${CONTROL_PLANE_NS_LABEL}=${s.namespace}`;

/**
 * Whether a ConfigMap is a copy this controller made from `s`'s source.
 */
function isOurAnchorsCopy(cm: TrustKubeObject, s: AnchorsCopySettings): boolean {
  return cm.metadata.labels?.[ANCHORS_COPY_LABEL] === s.namespace;
}

const dataOf = (cm: TrustKubeObject | undefined, key: string): string | undefined =>
  (cm?.['data'] as Record<string, string> | undefined)?.[key];

/**
 * The controller of the copies.
 *
 * @example
 * ```ts
 * const copies = new AnchorsCopyController({ api, settings, logger });
 * await copies.reconcile();          // one pass
 * await copies.run(signal);          // a pass on every change, until aborted
 * ```
 */
export class AnchorsCopyController {
  readonly #api: TrustKubeApi;
  readonly #s: AnchorsCopySettings;
  readonly #logger: Logger;
  /** Foreign ConfigMaps already reported, by namespace → resourceVersion (one warning each). */
  readonly #reported = new Map<string, string>();
  /**
   * The injected pods by namespace (uids), as of the last pass's list and the pod watch's events
   * since: {@link run} passes again only when a namespace gains its first or loses its last.
   */
  readonly #pods = new Map<string, Set<string>>();

  constructor(o: { api: TrustKubeApi; settings: AnchorsCopySettings; logger: Logger }) {
    this.#api = o.api;
    this.#s = o.settings;
    this.#logger = o.logger;
  }

  /** The copies by namespace, and the namespaces that opt in. */
  async #read(): Promise<{
    source: string | undefined;
    wanted: Set<string>;
    copies: Map<string, TrustKubeObject>;
  }> {
    const s = this.#s;
    const [source, namespaces, configMaps, pods] = await Promise.all([
      this.#api.get('v1', 'ConfigMap', s.namespace, s.trustAnchorsConfigMap),
      this.#api.list('v1', 'Namespace', undefined),
      this.#api.list(
        'v1',
        'ConfigMap',
        undefined,
        undefined,
        `metadata.name=${s.trustAnchorsConfigMap}`,
      ),
      this.#api.list('v1', 'Pod', undefined, injectedPodSelector(s)),
    ]);
    this.#pods.clear();
    for (const p of pods) this.#trackPod('ADDED', p);
    const podsIn = new Set(this.#pods.keys());
    const wanted = new Set(
      namespaces.filter((n) => wantsAnchorsCopy(n, s, podsIn)).map((n) => n.metadata.name),
    );
    const copies = new Map(
      configMaps
        .filter((c) => c.metadata.namespace !== s.namespace)
        .map((c) => [c.metadata.namespace ?? '', c] as const),
    );
    return { source: dataOf(source, s.trustAnchorsKey), wanted, copies };
  }

  /**
   * Records a pod event; true when its namespace gained its first injected pod or lost its last
   * (which changes whether it wants a copy).
   */
  #trackPod(type: 'ADDED' | 'MODIFIED' | 'DELETED', pod: TrustKubeObject): boolean {
    const ns = pod.metadata.namespace ?? '';
    const uid = pod.metadata.uid ?? pod.metadata.name;
    const uids = this.#pods.get(ns) ?? new Set<string>();
    const had = uids.size > 0;
    if (type === 'DELETED') uids.delete(uid);
    else uids.add(uid);
    if (uids.size > 0) this.#pods.set(ns, uids);
    else this.#pods.delete(ns);
    return had !== uids.size > 0;
  }

  /** One pass: creates, updates and deletes what differs from the source and the opt-ins. */
  async reconcile(): Promise<CopyPassResult> {
    const s = this.#s;
    const { source, wanted, copies } = await this.#read();
    const result = {
      created: [] as string[],
      updated: [] as string[],
      deleted: [] as string[],
      foreign: [] as string[],
      failed: [] as { namespace: string; error: string }[],
      conflicted: false,
      sourceFound: source !== undefined,
    };
    // One namespace refusing a write (a quota, an admission policy) does not hold up the others.
    const conflictOk = async (ns: string, what: () => Promise<unknown>): Promise<boolean> => {
      try {
        await what();
        return true;
      } catch (err) {
        if (isMeshidError(err, 'ERR_ROTATION_CONFLICT')) result.conflicted = true;
        else
          result.failed.push({
            namespace: ns,
            error: isMeshidError(err) ? err.message : String(err),
          });
        return false;
      }
    };
    if (source === undefined) {
      // Never delete or empty the copies because the source is missing: pods keep what they have.
      this.#logger.info(
        { configMap: `${s.namespace}/${s.trustAnchorsConfigMap}` },
        'no anchors to copy yet: the anchors ConfigMap (or its key) does not exist',
      );
      return result;
    }
    for (const ns of [...wanted].sort()) {
      const copy = copies.get(ns);
      if (copy === undefined) {
        const made = await conflictOk(ns, () =>
          this.#api.create({
            apiVersion: 'v1',
            kind: 'ConfigMap',
            metadata: {
              name: s.trustAnchorsConfigMap,
              namespace: ns,
              labels: { 'app.kubernetes.io/part-of': 'meshid', [ANCHORS_COPY_LABEL]: s.namespace },
              annotations: {
                'meshid.io/anchors-source': `${s.namespace}/${s.trustAnchorsConfigMap}`,
              },
            },
            data: { [s.trustAnchorsKey]: source },
          }),
        );
        if (made) result.created.push(ns);
        continue;
      }
      if (!isOurAnchorsCopy(copy, s)) {
        result.foreign.push(ns);
        const rv = copy.metadata.resourceVersion ?? '';
        if (this.#reported.get(ns) !== rv) {
          this.#reported.set(ns, rv);
          this.#logger.warn(
            {
              namespace: ns,
              configMap: s.trustAnchorsConfigMap,
              sameAnchors: dataOf(copy, s.trustAnchorsKey) === source,
            },
            `ConfigMap ${ns}/${s.trustAnchorsConfigMap} exists and is not a copy made by meshid trust sync (no ${ANCHORS_COPY_LABEL} label): left alone, so its pods mount whatever it holds`,
          );
        }
        continue;
      }
      if (dataOf(copy, s.trustAnchorsKey) === source) continue;
      const written = await conflictOk(ns, () =>
        this.#api.replace({
          ...copy,
          data: {
            ...(copy['data'] as Record<string, string> | undefined),
            [s.trustAnchorsKey]: source,
          },
        }),
      );
      if (written) result.updated.push(ns);
    }
    for (const [ns, copy] of copies) {
      if (wanted.has(ns) || !isOurAnchorsCopy(copy, s)) continue;
      const gone = await conflictOk(ns, () =>
        this.#api.delete('v1', 'ConfigMap', ns, s.trustAnchorsConfigMap, {
          ...(copy.metadata.uid === undefined ? {} : { uid: copy.metadata.uid }),
          ...(copy.metadata.resourceVersion === undefined
            ? {}
            : { resourceVersion: copy.metadata.resourceVersion }),
        }),
      );
      if (gone) result.deleted.push(ns);
    }
    for (const ns of this.#reported.keys())
      if (!result.foreign.includes(ns)) this.#reported.delete(ns);
    if (result.created.length + result.updated.length + result.deleted.length > 0) {
      this.#logger.info(
        { created: result.created, updated: result.updated, deleted: result.deleted },
        'anchors copies in meshed namespaces updated',
      );
    }
    for (const f of result.failed)
      this.#logger.warn(
        { namespace: f.namespace, err: f.error },
        'anchors copy not written; retried on the next pass',
      );
    return result;
  }

  /**
   * Passes until nothing is left to do (a lost race is passed again, at most `attempts` times).
   */
  async converge(attempts = 5): Promise<CopyPassResult> {
    for (let i = 1; ; i++) {
      const r = await this.reconcile();
      if (!r.conflicted || i >= attempts) return r;
      this.#logger.debug({ attempt: i }, 'an anchors copy changed under us; passing again');
    }
  }

  /**
   * Which opted-in namespaces do not hold `bundlePem` in our copy yet.
   *
   * @example
   * ```ts
   * const { behind } = await copies.lag(stagedPem);
   * ```
   */
  async lag(bundlePem: string): Promise<CopiesLag> {
    const { wanted, copies } = await this.#read();
    const behind: string[] = [];
    const foreign: string[] = [];
    for (const ns of [...wanted].sort()) {
      const copy = copies.get(ns);
      if (copy !== undefined && !isOurAnchorsCopy(copy, this.#s)) foreign.push(ns);
      else if (dataOf(copy, this.#s.trustAnchorsKey) !== bundlePem) behind.push(ns);
    }
    return { total: wanted.size, behind, foreign };
  }

  /**
   * Watches the namespaces, every ConfigMap of the anchors' name and the injected pods, and
   * passes once at the start and again after every change that matters (a pod only when its
   * namespace gains its first injected pod or loses its last; changes during a pass cause one
   * more pass), until `signal` aborts. A failed pass is logged and retried on the next change or after `retryMs`.
   */
  async run(signal: AbortSignal, retryMs = 5_000): Promise<void> {
    let dirty = true;
    let wake: (() => void) | undefined;
    const poke = (): void => {
      dirty = true;
      wake?.();
    };
    const onRetry = (err: Error): void =>
      this.#logger.warn({ err: err.message }, 'anchors copies: watch failed; retrying');
    const watches = Promise.all([
      this.#api.watchList({ kind: 'Namespace', signal, onEvent: poke, onRetry }),
      this.#api.watchList({
        kind: 'ConfigMap',
        fieldSelector: `metadata.name=${this.#s.trustAnchorsConfigMap}`,
        signal,
        onEvent: poke,
        onRetry,
      }),
      this.#api.watchList({
        kind: 'Pod',
        labelSelector: injectedPodSelector(this.#s),
        signal,
        onEvent: (e) => {
          // A relist (SYNC) may hide any change: pass (the pass lists the pods afresh).
          if (e.type === 'SYNC' || this.#trackPod(e.type, e.object)) poke();
        },
        onRetry,
      }),
    ]);
    signal.addEventListener('abort', poke, { once: true });
    while (!signal.aborted) {
      if (!dirty) {
        await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
        continue;
      }
      dirty = false;
      let retry: boolean;
      try {
        const r = await this.converge();
        if (r.conflicted) dirty = true;
        retry = r.failed.length > 0;
      } catch (err) {
        this.#logger.warn(
          { err: err instanceof Error ? err.message : String(err) },
          'anchors copies: pass failed; retrying',
        );
        retry = true;
      }
      if (retry) {
        // A failure is not a change the watches would report: pass again after a while.
        const timer = setTimeout(poke, retryMs);
        signal.addEventListener('abort', () => clearTimeout(timer), { once: true });
      }
    }
    await watches;
  }
}

/**
 * The copies as the rotation controller's {@link BundleCopies}: a pass, then what is behind.
 *
 * @example
 * ```ts
 * new RotationController({ ...options, copies: bundleCopiesOf(copyController) });
 * ```
 */
export function bundleCopiesOf(copies: AnchorsCopyController): BundleCopies {
  return {
    description: 'namespace copies of the anchors',
    async sync(bundlePem) {
      await copies.converge();
      return copies.lag(bundlePem);
    },
  };
}
