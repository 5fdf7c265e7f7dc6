/**
 * The trust-bundle controllers against the Kubernetes API. They reach it through one narrow
 * interface, {@link TrustKubeApi}: a slice of core's Kubernetes client whose failures are
 * MeshidErrors (a 409 is ERR_ROTATION_CONFLICT, anything else ERR_TRUST_API).
 *
 * Objects (all in one namespace, the control plane's):
 *   ConfigMap  <anchors>            data[<key>] = the bundle; annotation meshid.io/rotation = the state
 *   Secret     <issuer>             the identity issuer (tls.crt, ca.crt) cert-manager writes
 *   Certificate <issuer>            its cert-manager Certificate; spec.issuerRef names the CA Issuer
 *   Issuer + Certificate + Secret <root>   one name per root: the CA Issuer, the root Certificate, its Secret
 */
import type { Anchor, Clock, KubeClient, KubeResource, Logger } from '../core/index.js';
import {
  KubeApiError,
  MeshidError,
  bundleOfAnchors,
  formatAddress,
  isMeshidError,
  parseAnchors,
} from '../core/index.js';
import { rootCertificate, caIssuer, rotatedRootName } from './cert-manager.js';
import type { CertManagerSettings } from './cert-manager.js';
import { anchorOfChain, assertAnchorsIssuer, rootFromPem } from './lineage.js';
import { observeAdmin, observeCa } from './rotation-observe.js';
import type { CaObserver, ProxyObserver } from './rotation-observe.js';
import type { RotationBackend, RotationController, RotationSnapshot } from './rotation.js';
import {
  ROTATION_ANNOTATION,
  rotationInProgress,
  rotationStateFromAnnotations,
  serializeRotationState,
} from './rotation-state.js';
import type { RotationState } from './rotation-state.js';

/** An API object as JSON. */
export type TrustKubeObject = KubeResource;

/**
 * The API calls the trust controllers make: a slice of core's {@link KubeClient}, with failures
 * as MeshidErrors (see {@link trustKubeApi}).
 */
export type TrustKubeApi = Pick<
  KubeClient,
  'get' | 'list' | 'create' | 'replace' | 'delete' | 'replaceStatus' | 'watchList'
>;

/**
 * The trust controllers' view of core's Kubernetes client: a 409 (an object that exists, or a
 * stale resourceVersion or precondition) is ERR_ROTATION_CONFLICT, any other failure
 * ERR_TRUST_API, so nothing above depends on the client.
 *
 * @example
 * ```ts
 * const api = trustKubeApi(await openKubeClient(kubeConfig));
 * ```
 */
export function trustKubeApi(kube: TrustKubeApi): TrustKubeApi {
  const wrap =
    <A extends unknown[], R>(fn: (...args: A) => Promise<R>) =>
    async (...args: A): Promise<R> => {
      try {
        return await fn(...args);
      } catch (err) {
        throw trustError(err);
      }
    };
  return {
    get: wrap((...a) => kube.get(...a)),
    list: wrap((...a) => kube.list(...a)),
    create: wrap((obj) => kube.create(obj)),
    replace: wrap((obj) => kube.replace(obj)),
    delete: wrap((...a) => kube.delete(...a)),
    replaceStatus: wrap((obj, plural) => kube.replaceStatus(obj, plural)),
    watchList: (o) => kube.watchList(o),
  };
}

function trustError(err: unknown): MeshidError {
  if (err instanceof MeshidError) return err;
  if (err instanceof KubeApiError) {
    const code = err.status === 409 ? 'ERR_ROTATION_CONFLICT' : 'ERR_TRUST_API';
    return new MeshidError(code, err.message, { cause: err });
  }
  return new MeshidError('ERR_TRUST_API', err instanceof Error ? err.message : String(err), {
    cause: err,
  });
}

/** Names and settings of the trust objects in a cluster. */
export interface KubeTrustSettings extends CertManagerSettings {
  /** The identity issuer's cert-manager Certificate. */
  readonly issuerCertificate: string;
}

const CM = { apiVersion: 'cert-manager.io/v1' } as const;

/** Reads a Secret's key as text (base64 `data` decoded). */
function secretText(secret: TrustKubeObject | undefined, key: string): string {
  const v = (secret?.['data'] as Record<string, string> | undefined)?.[key];
  return v === undefined ? '' : Buffer.from(v, 'base64').toString('utf8');
}

/**
 * The live issuer's chain: the issuer Secret's `tls.crt` then `ca.crt`.
 *
 * @example
 * ```ts
 * const chain = await issuerChain(api, 'linkerd', 'linkerd-identity-issuer');
 * ```
 */
export async function issuerChain(
  api: TrustKubeApi,
  namespace: string,
  secret: string,
): Promise<string> {
  const s = await api.get('v1', 'Secret', namespace, secret);
  return secretText(s, 'tls.crt') + secretText(s, 'ca.crt');
}

/**
 * Writes the anchors ConfigMap: the bundle and (when given) the rotation state, conditional on
 * `version` (the resourceVersion read; '' means the ConfigMap must not exist yet). Other keys,
 * labels and annotations are kept.
 */
async function writeAnchors(
  api: TrustKubeApi,
  s: KubeTrustSettings,
  version: string,
  bundlePem: string,
  state: RotationState | undefined,
): Promise<void> {
  if (version === '') {
    await api.create({
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: {
        name: s.trustAnchorsConfigMap,
        namespace: s.namespace,
        labels: { 'app.kubernetes.io/part-of': 'meshid' },
        ...(state === undefined
          ? {}
          : { annotations: { [ROTATION_ANNOTATION]: serializeRotationState(state) } }),
      },
      data: { [s.trustAnchorsKey]: bundlePem },
    });
    return;
  }
  const current = await api.get('v1', 'ConfigMap', s.namespace, s.trustAnchorsConfigMap);
  if (current === undefined || current.metadata.resourceVersion !== version) {
    throw new MeshidError(
      'ERR_ROTATION_CONFLICT',
      `ConfigMap ${s.namespace}/${s.trustAnchorsConfigMap} changed since it was read`,
    );
  }
  const annotations = { ...current.metadata.annotations };
  if (state !== undefined) annotations[ROTATION_ANNOTATION] = serializeRotationState(state);
  await api.replace({
    ...current,
    metadata: { ...current.metadata, annotations, resourceVersion: version },
    data: {
      ...(current['data'] as Record<string, string> | undefined),
      [s.trustAnchorsKey]: bundlePem,
    },
  });
}

/**
 * The rotation backend over the API and cert-manager: a new root is a new root Certificate and
 * CA Issuer named `<root>-<rotation id>`; the switch points the issuer Certificate at the new CA
 * Issuer (cert-manager re-issues on the spec change), or, when cert-manager renewed the root in
 * place, asks for a re-issue as `cmctl renew` does (the `Issuing` condition).
 *
 * @example
 * ```ts
 * const backend = new KubeRotationBackend(api, settings);
 * ```
 */
export class KubeRotationBackend implements RotationBackend {
  readonly mode = 'cert-manager' as const;
  constructor(
    readonly api: TrustKubeApi,
    readonly s: KubeTrustSettings,
    readonly clock: Clock,
  ) {}

  async read(): Promise<RotationSnapshot> {
    const cm = await this.api.get(
      'v1',
      'ConfigMap',
      this.s.namespace,
      this.s.trustAnchorsConfigMap,
    );
    const data = cm?.['data'] as Record<string, string> | undefined;
    return {
      bundlePem: data?.[this.s.trustAnchorsKey] ?? '',
      state: rotationStateFromAnnotations(cm?.metadata.annotations),
      issuerChainPem: await issuerChain(this.api, this.s.namespace, this.s.issuerSecret),
      version: cm?.metadata.resourceVersion ?? '',
    };
  }

  write(version: string, bundlePem: string, state: RotationState): Promise<void> {
    return writeAnchors(this.api, this.s, version, bundlePem, state);
  }

  async currentRootName(): Promise<string | undefined> {
    const cert = await this.api.get(
      CM.apiVersion,
      'Certificate',
      this.s.namespace,
      this.s.issuerCertificate,
    );
    return (cert?.['spec'] as { issuerRef?: { name?: string } } | undefined)?.issuerRef?.name;
  }

  async planRoot(rotationId: string, inPlace: boolean): Promise<string> {
    const current = (await this.currentRootName()) ?? this.s.caIssuer;
    return inPlace ? current : rotatedRootName(current, rotationId);
  }

  async ensureNewRoot(state: RotationState): Promise<string | undefined> {
    const name = this.#planned(state);
    if (name !== state.oldRoot.certificate) {
      for (const obj of [rootCertificate(this.s, name), caIssuer(this.s, name, name)]) {
        const json = obj.toJSON() as TrustKubeObject;
        if ((await this.api.get(json.apiVersion, json.kind, this.s.namespace, name)) !== undefined)
          continue;
        try {
          await this.api.create(json);
        } catch (err) {
          if (!isMeshidError(err, 'ERR_ROTATION_CONFLICT')) throw err;
        }
      }
    }
    const pem = secretText(await this.api.get('v1', 'Secret', this.s.namespace, name), 'tls.crt');
    return pem === '' ? undefined : pem;
  }

  async switchIssuer(state: RotationState): Promise<void> {
    const name = this.#planned(state);
    const cert = await this.api.get(
      CM.apiVersion,
      'Certificate',
      this.s.namespace,
      this.s.issuerCertificate,
    );
    if (cert === undefined) {
      throw new MeshidError(
        'ERR_TRUST_API',
        `Certificate ${this.s.namespace}/${this.s.issuerCertificate} not found: nothing can re-issue the identity issuer`,
      );
    }
    const spec = cert['spec'] as { issuerRef: { name: string; kind?: string; group?: string } };
    if (spec.issuerRef.name !== name) {
      await this.api.replace({
        ...cert,
        spec: {
          ...spec,
          issuerRef: { ...spec.issuerRef, name, kind: 'Issuer', group: 'cert-manager.io' },
        },
      });
      return;
    }
    // Renewed in place: ask cert-manager to re-issue, as `cmctl renew` does.
    const status = (cert['status'] ?? {}) as { conditions?: { type: string }[] };
    if ((status.conditions ?? []).some((c) => c.type === 'Issuing')) return;
    await this.api.replaceStatus(
      {
        ...cert,
        status: {
          ...status,
          conditions: [
            ...(status.conditions ?? []),
            {
              type: 'Issuing',
              status: 'True',
              reason: 'ManuallyTriggered',
              message: `meshid trust rotate ${state.id}`,
              lastTransitionTime: new Date(this.clock.now()).toISOString(),
            },
          ],
        },
      },
      'certificates',
    );
  }

  async discardNewRoot(state: RotationState): Promise<void> {
    const name = this.#planned(state);
    if (name === state.oldRoot.certificate) return;
    await this.#deleteRoot(name);
  }

  async removeOldRoot(state: RotationState): Promise<void> {
    const name = state.oldRoot.certificate;
    if (name === undefined || name === this.#planned(state)) return;
    await this.#deleteRoot(name);
  }

  async #deleteRoot(name: string): Promise<void> {
    await this.api.delete(CM.apiVersion, 'Issuer', this.s.namespace, name);
    await this.api.delete(CM.apiVersion, 'Certificate', this.s.namespace, name);
    // The root's key goes with its Secret: nothing can sign under the retired root again.
    await this.api.delete('v1', 'Secret', this.s.namespace, name);
  }

  #planned(state: RotationState): string {
    return state.plannedRoot ?? rotatedRootName(this.s.caIssuer, state.id);
  }
}

/**
 * Observes the proxies of meshed pods: pods matching `labelSelector` (all namespaces), running,
 * with a pod IP, read at `http://<podIP>:<port>/identity`.
 *
 * @example
 * ```ts
 * const observer = podObserver(api, 'meshid.io/inject=enabled', 4191);
 * ```
 */
export function podObserver(
  api: TrustKubeApi,
  labelSelector: string,
  port = 4191,
  timeoutMs = 2000,
): ProxyObserver {
  return {
    description: `pods matching ${labelSelector} (admin port ${port})`,
    async observe(signal) {
      const pods = runningPods(await api.list('v1', 'Pod', undefined, labelSelector));
      return Promise.all(
        pods.map(({ pod, ip }) => {
          const name = `${pod.metadata.namespace ?? ''}/${pod.metadata.name}`;
          if (ip === '') return Promise.resolve({ name, error: 'no pod IP' });
          return observeAdmin(
            name,
            `http://${formatAddress({ host: ip, port })}`,
            timeoutMs,
            signal,
          );
        }),
      );
    },
  };
}

/**
 * Observes the CA's pods (`labelSelector` in `namespace`, running, with a pod IP) by their
 * serving certificate on `port`.
 *
 * @example
 * ```ts
 * const cas = caPodObserver(api, 'linkerd', 'app.kubernetes.io/component=identity', 8080, caIdentity);
 * ```
 */
export function caPodObserver(
  api: TrustKubeApi,
  namespace: string,
  labelSelector: string,
  port: number,
  serverName: string,
): CaObserver {
  return {
    description: `CA pods matching ${labelSelector} in ${namespace}`,
    async observe() {
      const pods = runningPods(await api.list('v1', 'Pod', namespace, labelSelector));
      return Promise.all(
        pods.map(({ pod, ip }) => {
          if (ip === '') return Promise.resolve({ name: pod.metadata.name, error: 'no pod IP' });
          return observeCa({ host: ip, port }, serverName, 2000);
        }),
      );
    },
  };
}

/** The running pods of a list, each with its IP ('' while it has none). */
function runningPods(pods: readonly TrustKubeObject[]): { pod: TrustKubeObject; ip: string }[] {
  return pods.flatMap((pod) => {
    const status = pod['status'] as { phase?: string; podIP?: string } | undefined;
    return status?.phase === 'Running' ? [{ pod, ip: status.podIP ?? '' }] : [];
  });
}

/**
 * Combines CA observers: every replica of each.
 *
 * @example
 * ```ts
 * const cas = combinedCaObserver([tlsCaObserver(addresses, name), caPodObserver(...)]);
 * ```
 */
export function combinedCaObserver(observers: readonly CaObserver[]): CaObserver {
  return {
    description: observers.map((o) => o.description).join('; '),
    observe: async (signal) => (await Promise.all(observers.map((o) => o.observe(signal)))).flat(),
  };
}

/**
 * Combines observers: every proxy of each.
 *
 * @example
 * ```ts
 * const observer = combinedObserver([adminUrlObserver(urls), podObserver(api, selector)]);
 * ```
 */
export function combinedObserver(observers: readonly ProxyObserver[]): ProxyObserver {
  return {
    description: observers.map((o) => o.description).join('; '),
    observe: async (signal) => (await Promise.all(observers.map((o) => o.observe(signal)))).flat(),
  };
}

/** What one sync pass did. */
type SyncResult = 'unchanged' | 'written' | 'waiting';

/**
 * The sync controller, for clusters without trust-manager: keeps the anchors ConfigMap equal to
 * the current root (the one the identity issuer's CA Issuer holds), the root the live issuer
 * chains to (never dropped), and, during a rotation, the rotation's roots (the rotation
 * controller owns the bundle then; sync only drives it). Writes only on a real change,
 * conditionally on the resourceVersion read, retrying on conflict. When cert-manager renews the
 * root in place (a new key in the same Secret), it starts a rotation so that the issuer moves to
 * the new root only after the proxies have it.
 *
 * @example
 * ```ts
 * const sync = new SyncController({ api, settings, clock, logger, rotation });
 * await sync.reconcile();
 * ```
 */
export class SyncController {
  readonly #api: TrustKubeApi;
  readonly #s: KubeTrustSettings;
  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly #rotation: RotationController | undefined;

  constructor(o: {
    api: TrustKubeApi;
    settings: KubeTrustSettings;
    clock: Clock;
    logger: Logger;
    /** Drives rotations (and starts one on an in-place root renewal); none: sync only. */
    rotation?: RotationController;
  }) {
    this.#api = o.api;
    this.#s = o.settings;
    this.#clock = o.clock;
    this.#logger = o.logger;
    this.#rotation = o.rotation;
  }

  /** One pass, retried on conflict. */
  async reconcile(signal?: AbortSignal): Promise<SyncResult> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#once(signal);
      } catch (err) {
        if (!isMeshidError(err, 'ERR_ROTATION_CONFLICT') || attempt >= 5) throw err;
        this.#logger.debug({ attempt }, 'anchors ConfigMap changed under us; re-reading');
      }
    }
  }

  async #once(signal: AbortSignal | undefined): Promise<SyncResult> {
    const cm = await this.#api.get(
      'v1',
      'ConfigMap',
      this.#s.namespace,
      this.#s.trustAnchorsConfigMap,
    );
    const state = rotationStateFromAnnotations(cm?.metadata.annotations);
    if (state !== undefined && rotationInProgress(state)) {
      if (this.#rotation !== undefined)
        await this.#rotation.run({
          interval: 0,
          once: true,
          signal: signal ?? new AbortController().signal,
        });
      return 'unchanged';
    }
    const now = this.#clock.now();
    // Absent (first run) starts from nothing; present, it must pass the bundle rule like anywhere.
    const current = (cm?.['data'] as Record<string, string> | undefined)?.[this.#s.trustAnchorsKey];
    const chain = await issuerChain(this.#api, this.#s.namespace, this.#s.issuerSecret);
    const root = await this.#currentRoot(now);
    if (root === undefined) return 'waiting';
    const existing = current === undefined ? [] : parseAnchors(current, { now }).anchors;
    // The live issuer's root stays, whatever the root Secret says now.
    const live = anchorOfChain(chain, [...existing, root]);
    if (chain !== '' && live === undefined) {
      throw new MeshidError(
        'ERR_ROTATION_REFUSED',
        'refusing to write the anchors: the live issuer chains neither to the current root nor to any anchor in the ConfigMap',
      );
    }
    const anchors: Anchor[] = [root, ...(live === undefined ? [] : [live])];
    const desired = bundleOfAnchors(anchors);
    if (chain !== '') assertAnchorsIssuer(desired, chain);
    if (desired.pem !== current) {
      await writeAnchors(
        this.#api,
        this.#s,
        cm?.metadata.resourceVersion ?? '',
        desired.pem,
        undefined,
      );
      this.#logger.info(
        { bundle: desired.fingerprint, anchors: desired.anchors.map((a) => a.subject) },
        'anchors ConfigMap updated',
      );
    }
    if (
      live !== undefined &&
      live.fingerprint !== root.fingerprint &&
      this.#rotation !== undefined
    ) {
      // cert-manager renewed the root in place: move the issuer to it, safely.
      const started = await this.#rotation.start({ inPlace: true });
      this.#logger.info(
        { rotation: started.id },
        'the root was renewed in place; rotation started',
      );
    }
    return desired.pem !== current ? 'written' : 'unchanged';
  }

  async #currentRoot(now: number): Promise<Anchor | undefined> {
    const cert = await this.#api.get(
      CM.apiVersion,
      'Certificate',
      this.#s.namespace,
      this.#s.issuerCertificate,
    );
    const issuerName =
      (cert?.['spec'] as { issuerRef?: { name?: string } } | undefined)?.issuerRef?.name ??
      this.#s.caIssuer;
    const issuer = await this.#api.get(CM.apiVersion, 'Issuer', this.#s.namespace, issuerName);
    const secretName =
      (issuer?.['spec'] as { ca?: { secretName?: string } } | undefined)?.ca?.secretName ??
      issuerName;
    const pem = secretText(
      await this.#api.get('v1', 'Secret', this.#s.namespace, secretName),
      'tls.crt',
    );
    if (pem === '') {
      this.#logger.info(
        { secret: secretName },
        'waiting for cert-manager to issue the root Secret',
      );
      return undefined;
    }
    return rootFromPem(pem, now);
  }
}
