/**
 * The proxy injector (`/inject`, mutating, Pods on CREATE), after linkerd's
 * `controller/proxy-injector/webhook.go`: an opted-in pod gets the proxy (a container, or a
 * native sidecar), the projected ServiceAccount token it presents to the CA, the trust anchors
 * from the anchors ConfigMap, and annotations saying what was injected. The decision and the
 * patch are a pure function of the pod, its namespace's annotations and the options, so they are
 * tested as such; the handler only gathers those inputs.
 *
 * Transparent mode (the default): a `meshid proxy-init` init container redirects the pod's TCP to
 * the proxy, which runs as its own UID (transparent.ts, docs/transparent.md). With
 * `meshid.io/transparent: disabled`, the explicit mode: no traffic is redirected; the proxy's
 * inbound listens on the pod's port 4143 and forwards to the app on 127.0.0.1, and the app
 * reaches meshed peers through the proxy's outbound listeners on 127.0.0.1, configured by
 * annotation. docs/webhooks.md.
 */
import {
  CONTROL_PLANE_NS_LABEL,
  INJECT_ANNOTATION,
  TRANSPARENT_ANNOTATIONS,
  bundleFingerprint,
  isDns1123Label,
} from '../core/index.js';
import type { IdentityNaming, Logger } from '../core/index.js';
import { pointerToken } from './admission.js';
import {
  BadIdentitySourceAnnotation,
  IDENTITY_SOURCE_ANNOTATION,
  POD_CERTIFICATE_VOLUME,
  certifyVolumes,
  identitySourceOf,
  podCertificateVolume,
} from './identity-source.js';
import {
  BadTransparentAnnotation,
  XTABLES_LOCK_VOLUME,
  proxyInitContainer,
  proxyInitVolume,
  transparentSettings,
  transparentWanted,
} from './transparent.js';
import type { TransparentSettings } from './transparent.js';
import type { AdmissionHandler, AdmissionResult, JsonObject, PatchOperation } from './admission.js';
import { PROXY_CONTAINER, PROXY_PORTS, proxyContainer } from './proxy-container.js';

/** The annotations the injector reads and writes (the contract with `meshid check`). */
const ANNOTATIONS = Object.freeze({
  /** The opt-in, on the pod or its namespace: `enabled` or `disabled` (the pod's wins). */
  inject: INJECT_ANNOTATION,
  /** Written: the proxy's version (the image tag). */
  proxyVersion: 'meshid.io/proxy-version',
  /** Written: the proxy's image. */
  proxyImage: 'meshid.io/proxy-image',
  /** Written: hex SHA-256 of the anchors bundle text at injection (as `linkerd.io/trust-root-sha256`). */
  trustRootSha256: 'meshid.io/trust-root-sha256',
  /** Written: `meshid/proxy-injector <version>`. */
  createdBy: 'meshid.io/created-by',
  /** Read: `true` or `false`, overrides the `nativeSidecar` setting for this pod. */
  nativeSidecar: 'meshid.io/proxy-native-sidecar',
  /** Read: the app port inbound traffic is forwarded to (default: the first container's first TCP port). */
  inboundPort: 'meshid.io/inbound-port',
  /** Read: the proxy's `--route` values, comma-separated (`LISTEN=HOST:PORT@IDENTITY`). */
  routes: 'meshid.io/proxy-routes',
  /** Read: the proxy's `--destination` values, comma-separated (`AUTHORITY=HOST:PORT@IDENTITY`). */
  destinations: 'meshid.io/proxy-destinations',
  /** Read, on the pod or its namespace: `certify` (default) or `pod-certificate` (identity-source.ts). */
  identitySource: IDENTITY_SOURCE_ANNOTATION,
});

const TOKEN_VOLUME = 'meshid-identity-token';
const ANCHORS_VOLUME = 'meshid-trust-anchors';
/** Options of the injector; from the `meshid webhooks` configuration. */
export interface InjectorOptions {
  readonly naming: IdentityNaming;
  readonly proxyImage: string;
  /** Recorded in `meshid.io/proxy-version`. */
  readonly proxyVersion: string;
  /** The CA, `HOST:PORT`, and its TLS identity name. */
  readonly identityAddr: string;
  readonly identityName: string;
  readonly trustAnchorsConfigMap: string;
  readonly trustAnchorsKey: string;
  readonly tokenExpirationSeconds: number;
  /** The pod-certificate signer's name, for pods with `meshid.io/identity-source: pod-certificate`. */
  readonly podCertificateSigner: string;
  readonly nativeSidecar: boolean;
  /** Never injected, whatever the annotations (kube-system and the control plane are added). */
  readonly excludeNamespaces: readonly string[];
  readonly resources: {
    readonly cpuRequest: string;
    readonly memoryRequest: string;
    readonly memoryLimit: string;
  };
}

/** What the handler needs from outside: the namespace's annotations and the current bundle. */
export interface InjectorDeps {
  /**
   * The annotations of a namespace (undefined when it does not exist). Absent: the webhook has no
   * API access and only pod annotations opt in.
   */
  readonly namespaceAnnotations?: (name: string) => Promise<Record<string, string> | undefined>;
  /** The anchors bundle text, for the fingerprint annotation; undefined when unknown. */
  readonly trustAnchorsPem?: () => Promise<string | undefined>;
  readonly logger: Logger;
}

/** Why a pod was or was not injected. */
type InjectionReason =
  | 'injected'
  | 'not-opted-in'
  | 'disabled-on-pod'
  | 'disabled-on-namespace'
  | 'excluded-namespace'
  | 'host-network'
  | 'already-injected'
  | 'port-conflict';

/** The decision for one pod. */
type InjectionPlan =
  | { readonly inject: true; readonly patch: PatchOperation[]; readonly warnings: string[] }
  | {
      readonly inject: false;
      readonly reason: Exclude<InjectionReason, 'injected'>;
      readonly warnings: string[];
    };

/** A pod the injector cannot work with; the handler refuses it with this message (400). */
export class PodNotInjectable extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PodNotInjectable';
  }
}

/** The inputs of {@link planInjection} besides the pod. */
interface InjectionContext {
  /** The pod's namespace (the request's). */
  readonly namespace: string;
  /** The namespace's annotations, when known. */
  readonly namespaceAnnotations?: Readonly<Record<string, string>> | undefined;
  /** Hex SHA-256 of the anchors bundle, when known. */
  readonly trustRootSha256?: string | undefined;
}

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function list(v: unknown, field: string): JsonObject[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || !v.every(isObject))
    throw new PodNotInjectable(`${field} must be a list of objects`);
  return v;
}

function annotationsOf(pod: JsonObject): Record<string, string> {
  const meta = pod['metadata'];
  if (meta === undefined) return {};
  if (!isObject(meta)) throw new PodNotInjectable('metadata must be an object');
  const a = meta['annotations'];
  if (a === undefined || a === null) return {};
  if (!isObject(a) || !Object.values(a).every((v) => typeof v === 'string'))
    throw new PodNotInjectable('metadata.annotations must map names to strings');
  return a as Record<string, string>;
}

/**
 * Whether the opt-in annotations ask for injection: the pod's `meshid.io/inject` decides when
 * present, else the namespace's. Only `enabled` and `disabled` mean anything.
 *
 * @example
 * ```ts
 * optIn({ 'meshid.io/inject': 'disabled' }, { 'meshid.io/inject': 'enabled' }); // 'disabled-on-pod'
 * ```
 */
export function optIn(
  pod: Readonly<Record<string, string>>,
  namespace: Readonly<Record<string, string>> | undefined,
): 'enabled' | 'disabled-on-pod' | 'disabled-on-namespace' | 'not-opted-in' {
  const onPod = pod[ANNOTATIONS.inject];
  if (onPod === 'enabled') return 'enabled';
  if (onPod === 'disabled') return 'disabled-on-pod';
  const onNs = namespace?.[ANNOTATIONS.inject];
  if (onNs === 'enabled') return 'enabled';
  if (onNs === 'disabled') return 'disabled-on-namespace';
  return 'not-opted-in';
}

/** Namespaces never injected, whatever they say. */
function excludedNamespaces(options: InjectorOptions): Set<string> {
  return new Set([
    'kube-system',
    options.naming.controlPlaneNamespace,
    ...options.excludeNamespaces,
  ]);
}

/** A name not in `taken`: `base`, else `base-1`, `base-2`… */
function freeName(base: string, taken: ReadonlySet<string>): string {
  if (!taken.has(base)) return base;
  for (let i = 1; ; i++) if (!taken.has(`${base}-${i}`)) return `${base}-${i}`;
}

function portsOf(c: JsonObject, field: string): { port: number; tcp: boolean }[] {
  return list(c['ports'], `${field}.ports`).map((p, i) => {
    const port = p['containerPort'];
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535)
      throw new PodNotInjectable(`${field}.ports[${i}].containerPort must be a port 1-65535`);
    return { port, tcp: p['protocol'] === undefined || p['protocol'] === 'TCP' };
  });
}

function commaList(value: string | undefined, name: string): string[] {
  if (value === undefined) return [];
  const items = value.split(',').map((s) => s.trim());
  if (items.some((s) => s === '' || /\s/.test(s) || s.length > 512))
    throw new PodNotInjectable(`annotation ${name} must be a comma-separated list of values`);
  return items;
}

/** An opted-in pod the injector works on: its parts, checked. */
type PodParts = Exclude<ReturnType<typeof podToInject>, string>;

/** Everything the later stages build from: the pod, the proxy's settings and ports, the inputs. */
type Injection = PodParts &
  ReturnType<typeof proxySettings> &
  Exclude<ReturnType<typeof proxyPorts>, 'port-conflict'> & {
    readonly context: InjectionContext;
    readonly options: InjectorOptions;
    /** The names of the volumes the injector adds, free in the pod. */
    readonly names: ReturnType<typeof proxyVolumeNames>;
  };

/**
 * Decides whether to inject a pod and builds the JSON Patch, in stages: the decision, the
 * proxy's settings and ports, its volumes and container, then the patch. Pure: the same pod and
 * context give the same patch. Throws {@link PodNotInjectable} for an opted-in pod it cannot work
 * with (malformed spec, bad annotation values).
 *
 * @example
 * ```ts
 * const plan = planInjection(pod, { namespace: 'emojivoto', trustRootSha256 }, options);
 * if (plan.inject) applyPatch(pod, plan.patch);
 * ```
 */
export function planInjection(
  pod: JsonObject,
  context: InjectionContext,
  options: InjectorOptions,
): InjectionPlan {
  const warnings: string[] = [];
  const parts = podToInject(pod, context, options, warnings);
  if (typeof parts === 'string') return { inject: false, reason: parts, warnings };
  const settings = proxySettings(parts.annotations, context, options, warnings);
  const ports = proxyPorts(parts, settings, warnings);
  if (ports === 'port-conflict') return { inject: false, reason: ports, warnings };
  const names = proxyVolumeNames(parts.volumes, settings.podCertificate);
  const i: Injection = { ...parts, ...settings, ...ports, context, options, names };
  const patch = [...volumesPatch(i), ...containersPatch(i), ...metadataPatch(pod['metadata'], i)];
  return { inject: true, patch, warnings };
}

/** The decision: whether the pod opts in and can carry a proxy, and its parts when it does. */
function podToInject(
  pod: JsonObject,
  context: InjectionContext,
  options: InjectorOptions,
  warnings: string[],
) {
  const annotations = annotationsOf(pod);
  const decided = optIn(annotations, context.namespaceAnnotations);
  if (decided !== 'enabled') return decided;
  if (excludedNamespaces(options).has(context.namespace)) return 'excluded-namespace' as const;

  const spec = pod['spec'];
  if (!isObject(spec)) throw new PodNotInjectable('spec must be an object');
  if (spec['hostNetwork'] === true) {
    warnings.push(
      `meshid: pod uses hostNetwork, so it is not injected (the proxy's ports would be the node's)`,
    );
    return 'host-network' as const;
  }
  const containers = list(spec['containers'], 'spec.containers');
  if (containers.length === 0) throw new PodNotInjectable('spec.containers must not be empty');
  const initContainers = list(spec['initContainers'], 'spec.initContainers');
  const volumes = list(spec['volumes'], 'spec.volumes');
  const names = [...containers, ...initContainers].map((c, i) => {
    if (typeof c['name'] !== 'string')
      throw new PodNotInjectable(`container #${i + 1} has no name`);
    return c['name'];
  });
  if (names.includes(PROXY_CONTAINER)) return 'already-injected' as const;

  const sa = spec['serviceAccountName'] ?? spec['serviceAccount'] ?? 'default';
  if (typeof sa !== 'string' || !isDns1123Label(sa))
    throw new PodNotInjectable('spec.serviceAccountName must be a DNS-1123 label');
  if (!isDns1123Label(context.namespace))
    throw new PodNotInjectable('the namespace must be a DNS-1123 label');
  return { annotations, spec, containers, initContainers, volumes, serviceAccount: sa };
}

/** What the pod's annotations (and its namespace's) ask of the proxy. */
function proxySettings(
  annotations: Readonly<Record<string, string>>,
  context: InjectionContext,
  options: InjectorOptions,
  warnings: string[],
) {
  const nativeAnnotation = annotations[ANNOTATIONS.nativeSidecar];
  const native =
    nativeAnnotation === undefined
      ? options.nativeSidecar
      : parseBool(nativeAnnotation, ANNOTATIONS.nativeSidecar);
  let transparent: TransparentSettings | undefined;
  let podCertificate: boolean;
  try {
    transparent = transparentWanted(annotations) ? transparentSettings(annotations) : undefined;
    podCertificate =
      identitySourceOf(annotations, context.namespaceAnnotations) === 'pod-certificate';
  } catch (err) {
    if (err instanceof BadTransparentAnnotation || err instanceof BadIdentitySourceAnnotation)
      throw new PodNotInjectable(err.message);
    throw err;
  }
  const routes = commaList(annotations[ANNOTATIONS.routes], ANNOTATIONS.routes);
  let destinations = commaList(annotations[ANNOTATIONS.destinations], ANNOTATIONS.destinations);
  if (transparent !== undefined && destinations.length > 0) {
    // The transparent outbound holds 4140 and asks the destination service instead.
    warnings.push(
      `meshid: annotation ${ANNOTATIONS.destinations} is ignored in transparent mode (the destination service answers); set ${TRANSPARENT_ANNOTATIONS.transparent}: disabled to use it`,
    );
    destinations = [];
  }
  return { native, transparent, podCertificate, routes, destinations };
}

/**
 * The proxy's ports: inbound when there is an app port to forward to (always in transparent
 * mode), outbound when there is somewhere to send to. None may be one the pod uses.
 */
function proxyPorts(
  parts: PodParts,
  settings: { transparent: TransparentSettings | undefined; destinations: string[] },
  warnings: string[],
) {
  const transparent = settings.transparent;
  // The app's ports, from every container that runs beside the proxy (and sidecars in init).
  const running = [
    ...parts.containers.map((c, i) => ({ c, field: `spec.containers[${i}]` })),
    ...parts.initContainers
      .map((c, i) => ({ c, field: `spec.initContainers[${i}]` }))
      .filter(({ c }) => c['restartPolicy'] === 'Always'),
  ];
  const appPorts = running.map(({ c, field }) => portsOf(c, field));
  const declared = parts.annotations[ANNOTATIONS.inboundPort];
  if (
    declared !== undefined &&
    !(/^\d{1,5}$/.test(declared) && +declared >= 1 && +declared <= 65535)
  )
    throw new PodNotInjectable(`annotation ${ANNOTATIONS.inboundPort} must be a port 1-65535`);
  const appPort = declared === undefined ? appPorts[0]?.find((p) => p.tcp)?.port : +declared;
  // In transparent mode the proxy listens on all three whatever the pod declares.
  const inbound = transparent !== undefined || appPort !== undefined;
  const proxyPorts: number[] = [
    PROXY_PORTS.admin,
    ...(inbound ? [PROXY_PORTS.inbound] : []),
    ...(transparent !== undefined || settings.destinations.length > 0
      ? [PROXY_PORTS.outbound]
      : []),
  ];
  const clash = [
    ...appPorts.flat().map((p) => p.port),
    ...(appPort === undefined ? [] : [appPort]),
  ].filter((p) => proxyPorts.includes(p));
  if (clash.length > 0) {
    warnings.push(
      `meshid: not injected: the pod uses port ${clash[0]}, which the proxy needs (${proxyPorts.join(', ')})`,
    );
    return 'port-conflict' as const;
  }
  if (appPort === undefined && transparent === undefined)
    warnings.push(
      `meshid: no container port and no ${ANNOTATIONS.inboundPort} annotation: the proxy takes no inbound traffic`,
    );
  return { inbound, appPort };
}

/** The injected volumes' names, each free among the pod's and the others. */
function proxyVolumeNames(volumes: JsonObject[], podCertificate: boolean) {
  const volumeNames = new Set(volumes.map((v) => (typeof v['name'] === 'string' ? v['name'] : '')));
  const token = freeName(podCertificate ? POD_CERTIFICATE_VOLUME : TOKEN_VOLUME, volumeNames);
  const anchors = freeName(ANCHORS_VOLUME, new Set([...volumeNames, token]));
  const lock = freeName(XTABLES_LOCK_VOLUME, new Set([...volumeNames, token, anchors]));
  return { token, anchors, lock };
}

/** Adds `values` to the list at `path`: the whole list when the pod has none. */
function addToList(
  spec: JsonObject,
  field: string,
  values: JsonObject[],
  at: (i: number) => string,
) {
  if (spec[field] === undefined || spec[field] === null)
    return [{ op: 'add' as const, path: `/spec/${field}`, value: values }];
  return values.map((value, i) => ({ op: 'add' as const, path: `/spec/${field}/${at(i)}`, value }));
}

/** The identity's volumes (a token and the anchors, or the pod certificate) and proxy-init's lock. */
function volumesPatch({ names, options, ...i }: Injection): PatchOperation[] {
  const identityVolumes: JsonObject[] = i.podCertificate
    ? [podCertificateVolume(names.token, options.podCertificateSigner)]
    : certifyVolumes(names.token, names.anchors, options);
  const lock = i.transparent === undefined ? [] : [proxyInitVolume(names.lock)];
  return addToList(i.spec, 'volumes', [...identityVolumes, ...lock], () => '-');
}

/**
 * First among init containers: proxy-init, so that no container's traffic goes out before the
 * rules exist; then a native sidecar proxy, so that the ones after it can use the mesh. A plain
 * proxy goes last among the containers.
 */
function containersPatch(i: Injection): PatchOperation[] {
  const { native, transparent } = i;
  const proxy = proxyContainer(i);
  const inits = [
    ...(transparent === undefined
      ? []
      : [proxyInitContainer(i.options.proxyImage, transparent, i.names.lock)]),
    ...(native ? [proxy] : []),
  ];
  return [
    ...(inits.length > 0 ? addToList(i.spec, 'initContainers', inits, String) : []),
    ...(native ? [] : [{ op: 'add' as const, path: '/spec/containers/-', value: proxy }]),
  ];
}

/** The annotations saying what was injected, and the label naming the control plane. */
function metadataPatch(meta: unknown, { context, options }: Injection): PatchOperation[] {
  const written: Record<string, string> = {
    [ANNOTATIONS.proxyVersion]: options.proxyVersion,
    [ANNOTATIONS.proxyImage]: options.proxyImage,
    [ANNOTATIONS.createdBy]: `meshid/proxy-injector ${options.proxyVersion}`,
    ...(context.trustRootSha256 === undefined
      ? {}
      : { [ANNOTATIONS.trustRootSha256]: context.trustRootSha256 }),
  };
  // The label lets `meshid trust sync` find a namespace whose pods opt in one by one: it needs a
  // copy of the anchors ConfigMap as much as one that opts in as a whole.
  const labels = { [CONTROL_PLANE_NS_LABEL]: options.naming.controlPlaneNamespace };
  if (!isObject(meta))
    return [{ op: 'add', path: '/metadata', value: { annotations: written, labels } }];
  return (
    [
      ['annotations', written],
      ['labels', labels],
    ] as const
  ).flatMap(([field, values]): PatchOperation[] =>
    isObject(meta[field])
      ? Object.entries(values).map(([k, v]) => ({
          op: 'add',
          path: `/metadata/${field}/${pointerToken(k)}`,
          value: v,
        }))
      : [{ op: 'add', path: `/metadata/${field}`, value: values }],
  );
}

function parseBool(value: string, name: string): boolean {
  if (value === 'true') return true;
  if (value === 'false') return false;
  throw new PodNotInjectable(`annotation ${name} must be "true" or "false"`);
}

/**
 * The `/inject` handler: Pods on CREATE are planned with {@link planInjection}; anything else is
 * allowed unchanged. The namespace's annotations are looked up only when the pod's own do not
 * decide; a failed lookup fails the review (the webhook's failurePolicy then decides).
 *
 * @example
 * ```ts
 * const handlers = { '/inject': createInjector(options, { namespaceAnnotations, logger }) };
 * ```
 */
export function createInjector(options: InjectorOptions, deps: InjectorDeps): AdmissionHandler {
  const excluded = excludedNamespaces(options);
  return async (request): Promise<AdmissionResult> => {
    const isPod =
      request.kind.group === '' &&
      request.kind.version === 'v1' &&
      request.kind.kind === 'Pod' &&
      request.subResource === undefined;
    if (!isPod || request.operation !== 'CREATE') return { allowed: true };
    const pod = request.object;
    if (pod === undefined) return refuse('the review of a Pod CREATE carries no object', 400);
    const podMeta = isObject(pod['metadata']) ? pod['metadata'] : {};
    const namespace =
      request.namespace ??
      (typeof podMeta['namespace'] === 'string' ? podMeta['namespace'] : 'default');
    try {
      const podAnnotations = annotationsOf(pod);
      let nsAnnotations: Record<string, string> | undefined;
      // The namespace decides the opt-in when the pod does not, and the identity source of a
      // pod that opts in without choosing one.
      const podInject = podAnnotations[ANNOTATIONS.inject];
      if (
        (podInject === undefined ||
          (podInject === 'enabled' && podAnnotations[ANNOTATIONS.identitySource] === undefined)) &&
        !excluded.has(namespace) &&
        deps.namespaceAnnotations !== undefined
      )
        nsAnnotations = await deps.namespaceAnnotations(namespace);
      const decided = optIn(podAnnotations, nsAnnotations);
      const pem = decided === 'enabled' ? await deps.trustAnchorsPem?.() : undefined;
      const plan = planInjection(
        pod,
        {
          namespace,
          namespaceAnnotations: nsAnnotations,
          trustRootSha256: pem === undefined ? undefined : bundleFingerprint(pem),
        },
        options,
      );
      const name = typeof podMeta['name'] === 'string' ? podMeta['name'] : podMeta['generateName'];
      deps.logger.info(
        { namespace, pod: name, reason: plan.inject ? 'injected' : plan.reason, uid: request.uid },
        plan.inject ? 'proxy injected' : 'pod not injected',
      );
      return plan.inject
        ? { allowed: true, patch: plan.patch, warnings: plan.warnings }
        : { allowed: true, warnings: plan.warnings };
    } catch (err) {
      if (err instanceof PodNotInjectable)
        return refuse(`meshid proxy injector: ${err.message}`, 400);
      throw err;
    }
  };
}

function refuse(message: string, code: number): AdmissionResult {
  return {
    allowed: false,
    status: { code, message, reason: code === 400 ? 'BadRequest' : 'Forbidden' },
  };
}
