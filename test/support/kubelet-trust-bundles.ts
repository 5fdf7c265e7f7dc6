/**
 * The kubelet's side of `clusterTrustBundle` projected volume sources (KEP-3257), for the
 * kubelet simulator (kubelet-sim.ts): it follows the ClusterTrustBundles through a list and a
 * watch (as the kubelet's informer does) and computes the file a source projects the way the
 * kubelet normalizes it: every certificate of every bundle the source selects (by signer name and
 * label selector, or by name), de-duplicated, put in a random order (the kubelet sorts them and
 * then shuffles with Go's `rand.Shuffle`), each re-encoded as PEM with 64-column lines. So the
 * file is not the text of any one bundle: its anchors are the same, their order is not.
 *
 * Not modelled: the kubelet's five-minute normalization cache and its pod sync period (it sees a
 * changed bundle at its next sync of the pod, within about a minute; the simulator at once).
 */
import { EventEmitter } from 'node:events';
import { KubernetesObjectApi, Watch } from '@kubernetes/client-node';
import type { KubeConfig, KubernetesObject } from '@kubernetes/client-node';
import type { KubeObject } from './kube-api-server/index.js';

const CTB_API_VERSION = 'certificates.k8s.io/v1beta1';
const CTB_PATH = '/apis/certificates.k8s.io/v1beta1/clustertrustbundles';

/** A `clusterTrustBundle` projected volume source. */
export interface ClusterTrustBundleSource {
  /** Select by signer (with `labelSelector`; no selector matches nothing)... */
  readonly signerName?: string;
  readonly labelSelector?: { readonly matchLabels?: Readonly<Record<string, string>> };
  /** ...or one bundle by name. */
  readonly name?: string;
  readonly path: string;
  readonly optional?: boolean;
}

/** The DER of each certificate in a PEM text. */
function certificatesOf(pem: string): Buffer[] {
  return [...pem.matchAll(/-----BEGIN CERTIFICATE-----([^-]+)-----END CERTIFICATE-----/g)].map(
    (m) => Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64'),
  );
}

function selects(source: ClusterTrustBundleSource, ctb: KubeObject): boolean {
  if (source.name !== undefined) return ctb.metadata.name === source.name;
  const spec = (ctb['spec'] ?? {}) as { signerName?: string };
  // A nil selector matches nothing, an empty one everything (the kubelet's rule).
  if (spec.signerName !== source.signerName || source.labelSelector === undefined) return false;
  const labels = ctb.metadata.labels ?? {};
  return Object.entries(source.labelSelector.matchLabels ?? {}).every(([k, v]) => labels[k] === v);
}

/**
 * The anchors `source` selects among `bundles`, as a sorted set key (undefined when none is
 * selected), and the file the kubelet would write for them, shuffled with `random`.
 *
 * @example
 * ```ts
 * const { key, pem } = projectTrustBundles(source, bundles, Math.random)!;
 * ```
 */
export function projectTrustBundles(
  source: ClusterTrustBundleSource,
  bundles: Iterable<KubeObject>,
  random: () => number,
): { key: string; pem: string } | undefined {
  const set = new Map<string, Buffer>();
  let selected = 0;
  for (const ctb of bundles) {
    if (!selects(source, ctb)) continue;
    selected++;
    const spec = (ctb['spec'] ?? {}) as { trustBundle?: string };
    for (const der of certificatesOf(spec.trustBundle ?? '')) set.set(der.toString('hex'), der);
  }
  if (selected === 0) return undefined;
  const list = [...set.values()].sort(Buffer.compare);
  const key = list.map((d) => d.toString('hex')).join(',');
  // Go's rand.Shuffle: Fisher-Yates from the end.
  for (let i = list.length - 1; i > 0; i--) {
    const j = Math.min(i, Math.floor(random() * (i + 1)));
    [list[i], list[j]] = [list[j]!, list[i]!];
  }
  const pem = list
    .map((der) => {
      const b64 = der.toString('base64').replace(/(.{64})/g, '$1\n');
      return `-----BEGIN CERTIFICATE-----\n${b64.endsWith('\n') ? b64 : `${b64}\n`}-----END CERTIFICATE-----\n`;
    })
    .join('');
  return { key, pem };
}

interface TrustBundleEvents {
  change: [];
  error: [Error];
}

/**
 * The ClusterTrustBundles as the kubelet's informer holds them: a list, then a watch from its
 * resourceVersion, listed and watched again whenever the watch ends. Emits `change` after each
 * event.
 *
 * @example
 * ```ts
 * const bundles = await TrustBundleInformer.start(kubeConfig);
 * bundles.on('change', () => rewrite(bundles.all()));
 * ```
 */
export class TrustBundleInformer extends EventEmitter<TrustBundleEvents> {
  readonly #objects: KubernetesObjectApi;
  readonly #watch: Watch;
  readonly #bundles = new Map<string, KubeObject>();
  #abort: AbortController | undefined;
  #closed = false;

  private constructor(kc: KubeConfig) {
    super();
    this.#objects = KubernetesObjectApi.makeApiClient(kc);
    this.#watch = new Watch(kc);
  }

  /** Lists, starts watching, and resolves once the list is in. */
  static async start(kc: KubeConfig): Promise<TrustBundleInformer> {
    const informer = new TrustBundleInformer(kc);
    await informer.#listAndWatch();
    return informer;
  }

  /** The bundles held now. */
  all(): KubeObject[] {
    return [...this.#bundles.values()];
  }

  async #listAndWatch(): Promise<void> {
    const list = (await this.#objects.list(CTB_API_VERSION, 'ClusterTrustBundle')) as unknown as {
      items: KubeObject[];
      metadata?: { resourceVersion?: string };
    };
    this.#bundles.clear();
    for (const item of list.items) this.#bundles.set(item.metadata.name!, item);
    this.emit('change');
    if (this.#closed) return;
    const abort = new AbortController();
    this.#abort = abort;
    const restart = (): void => {
      if (this.#closed || abort.signal.aborted) return;
      abort.abort();
      this.#listAndWatch().catch((err: unknown) =>
        this.emit('error', err instanceof Error ? err : new Error(String(err))),
      );
    };
    const req = await this.#watch.watch(
      CTB_PATH,
      { resourceVersion: list.metadata?.resourceVersion ?? '' },
      (type: string, obj: KubernetesObject) => {
        const o = obj as unknown as KubeObject;
        if (type === 'ADDED' || type === 'MODIFIED') this.#bundles.set(o.metadata.name!, o);
        else if (type === 'DELETED') this.#bundles.delete(o.metadata.name!);
        else return;
        this.emit('change');
      },
      () => restart(),
    );
    if (abort.signal.aborted) req.abort();
    else abort.signal.addEventListener('abort', () => req.abort(), { once: true });
  }

  close(): void {
    this.#closed = true;
    this.#abort?.abort();
  }
}
