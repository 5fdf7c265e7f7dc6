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
  SIDECAR_NODE_OPTIONS,
  TRANSPARENT_ANNOTATIONS,
  bundleFingerprint,
  destinationIdentityName,
  destinationServiceAddress,
  isDns1123Label,
} from '../core/index.js';
import type { IdentityNaming, Logger } from '../core/index.js';
import { pointerToken } from './admission.js';
import {
  BadIdentitySourceAnnotation,
  IDENTITY_SOURCE_ANNOTATION,
  POD_CERTIFICATE_MOUNT,
  POD_CERTIFICATE_VOLUME,
  certifyVolumes,
  identitySourceOf,
  podCertificateEnv,
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

/** The injected container's name; its presence is what "already injected" means. */
export const PROXY_CONTAINER = 'meshid-proxy';

/** The proxy's ports in the pod (DESIGN.md). */
const PROXY_PORTS = Object.freeze({ inbound: 4143, outbound: 4140, admin: 4191 });

/** Where the proxy finds its token and its anchors. */
const PROXY_MOUNTS = Object.freeze({
  token: '/var/run/secrets/meshid.io/serviceaccount',
  anchors: '/var/run/meshid/trust-anchors',
});

const TOKEN_VOLUME = 'meshid-identity-token';
const ANCHORS_VOLUME = 'meshid-trust-anchors';
/** The proxy's user in explicit mode: the image's non-root user (distroless "nonroot"). */
const PROXY_UID = 65532;

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

/**
 * Decides whether to inject a pod and builds the JSON Patch. Pure: the same pod and context give
 * the same patch. Throws {@link PodNotInjectable} for an opted-in pod it cannot work with
 * (malformed spec, bad annotation values).
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
  const annotations = annotationsOf(pod);
  const warnings: string[] = [];
  const decided = optIn(annotations, context.namespaceAnnotations);
  if (decided !== 'enabled') return { inject: false, reason: decided, warnings };
  if (excludedNamespaces(options).has(context.namespace))
    return { inject: false, reason: 'excluded-namespace', warnings };

  const spec = pod['spec'];
  if (!isObject(spec)) throw new PodNotInjectable('spec must be an object');
  if (spec['hostNetwork'] === true) {
    warnings.push(
      `meshid: pod uses hostNetwork, so it is not injected (the proxy's ports would be the node's)`,
    );
    return { inject: false, reason: 'host-network', warnings };
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
  if (names.includes(PROXY_CONTAINER))
    return { inject: false, reason: 'already-injected', warnings };

  const sa = spec['serviceAccountName'] ?? spec['serviceAccount'] ?? 'default';
  if (typeof sa !== 'string' || !isDns1123Label(sa))
    throw new PodNotInjectable('spec.serviceAccountName must be a DNS-1123 label');
  if (!isDns1123Label(context.namespace))
    throw new PodNotInjectable('the namespace must be a DNS-1123 label');

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

  // The app's ports, from every container that runs beside the proxy (and sidecars in init).
  const running = [
    ...containers.map((c, i) => ({ c, field: `spec.containers[${i}]` })),
    ...initContainers
      .map((c, i) => ({ c, field: `spec.initContainers[${i}]` }))
      .filter(({ c }) => c['restartPolicy'] === 'Always'),
  ];
  const appPorts = running.map(({ c, field }) => portsOf(c, field));
  let appPort: number | undefined;
  const declared = annotations[ANNOTATIONS.inboundPort];
  if (declared !== undefined) {
    if (!/^\d{1,5}$/.test(declared) || Number(declared) < 1 || Number(declared) > 65535)
      throw new PodNotInjectable(`annotation ${ANNOTATIONS.inboundPort} must be a port 1-65535`);
    appPort = Number(declared);
  } else {
    appPort = appPorts[0]?.find((p) => p.tcp)?.port;
  }
  // In transparent mode the proxy listens on all three whatever the pod declares.
  const inbound = transparent !== undefined || appPort !== undefined;
  const proxyPorts: number[] = [
    PROXY_PORTS.admin,
    ...(inbound ? [PROXY_PORTS.inbound] : []),
    ...(transparent !== undefined || destinations.length > 0 ? [PROXY_PORTS.outbound] : []),
  ];
  const clash = [
    ...appPorts.flat().map((p) => p.port),
    ...(appPort === undefined ? [] : [appPort]),
  ].filter((p) => proxyPorts.includes(p));
  if (clash.length > 0) {
    warnings.push(
      `meshid: not injected: the pod uses port ${clash[0]}, which the proxy needs (${proxyPorts.join(', ')})`,
    );
    return { inject: false, reason: 'port-conflict', warnings };
  }
  if (appPort === undefined && transparent === undefined)
    warnings.push(
      `meshid: no container port and no ${ANNOTATIONS.inboundPort} annotation: the proxy takes no inbound traffic`,
    );

  const volumeNames = new Set(volumes.map((v) => (typeof v['name'] === 'string' ? v['name'] : '')));
  const tokenVolume = freeName(podCertificate ? POD_CERTIFICATE_VOLUME : TOKEN_VOLUME, volumeNames);
  const anchorsVolume = freeName(ANCHORS_VOLUME, new Set([...volumeNames, tokenVolume]));
  const lockVolume = freeName(
    XTABLES_LOCK_VOLUME,
    new Set([...volumeNames, tokenVolume, anchorsVolume]),
  );

  const identity = `${sa}.${context.namespace}.serviceaccount.identity.${options.naming.controlPlaneNamespace}.${options.naming.trustDomain}`;
  const naming = [
    { name: 'MESHID_TRUST_DOMAIN', value: options.naming.trustDomain },
    { name: 'MESHID_CONTROL_PLANE_NAMESPACE', value: options.naming.controlPlaneNamespace },
  ];
  // Certify: the CA, a token for it and the anchors ConfigMap; pod-certificate: the kubelet's files.
  const identityEnv = podCertificate
    ? [...naming, ...podCertificateEnv()]
    : [
        { name: 'MESHID_IDENTITY_ADDR', value: options.identityAddr },
        { name: 'MESHID_IDENTITY_NAME', value: options.identityName },
        ...naming,
        {
          name: 'MESHID_TRUST_ANCHORS',
          value: `${PROXY_MOUNTS.anchors}/${options.trustAnchorsKey}`,
        },
        { name: 'MESHID_TOKEN_FILE', value: `${PROXY_MOUNTS.token}/token` },
      ];
  const env: { name: string; value: string }[] = [
    { name: 'MESHID_LOCAL_IDENTITY', value: identity },
    ...identityEnv,
    { name: 'MESHID_ADMIN', value: `[::]:${PROXY_PORTS.admin}` },
    ...(inbound ? [{ name: 'MESHID_INBOUND', value: `[::]:${PROXY_PORTS.inbound}` }] : []),
    ...(appPort === undefined ? [] : [{ name: 'MESHID_APP', value: `127.0.0.1:${appPort}` }]),
    ...(transparent === undefined
      ? []
      : [
          { name: 'MESHID_TRANSPARENT', value: 'true' },
          { name: 'MESHID_INBOUND_POLICY', value: transparent.inboundPolicy },
          ...(transparent.portPolicies.length === 0
            ? []
            : [{ name: 'MESHID_INBOUND_PORT_POLICY', value: transparent.portPolicies.join(',') }]),
          { name: 'MESHID_DESTINATION_ADDR', value: destinationServiceAddress(options.naming) },
          { name: 'MESHID_DESTINATION_NAME', value: destinationIdentityName(options.naming) },
        ]),
    ...(destinations.length > 0
      ? [
          { name: 'MESHID_OUTBOUND', value: `127.0.0.1:${PROXY_PORTS.outbound}` },
          { name: 'MESHID_DESTINATION', value: destinations.join(',') },
        ]
      : []),
    ...(routes.length > 0 ? [{ name: 'MESHID_ROUTE', value: routes.join(',') }] : []),
    // V8 reads the young-generation bound only at start (docs/benchmarks.md).
    { name: 'NODE_OPTIONS', value: SIDECAR_NODE_OPTIONS.join(' ') },
  ];
  const probe = (path: string, extra: JsonObject): JsonObject => ({
    httpGet: { path, port: PROXY_PORTS.admin, scheme: 'HTTP' },
    timeoutSeconds: 2,
    ...extra,
  });
  const proxy: JsonObject = {
    name: PROXY_CONTAINER,
    image: options.proxyImage,
    imagePullPolicy: 'IfNotPresent',
    args: ['proxy'],
    env,
    ports: [
      ...(inbound
        ? [{ name: 'meshid-inbound', containerPort: PROXY_PORTS.inbound, protocol: 'TCP' }]
        : []),
      { name: 'meshid-admin', containerPort: PROXY_PORTS.admin, protocol: 'TCP' },
    ],
    ...(native ? { restartPolicy: 'Always' } : {}),
    // A native sidecar's startup probe holds the app's containers until the proxy has its
    // certificate; as a plain container it only gates readiness.
    ...(native
      ? { startupProbe: probe('/ready', { periodSeconds: 1, failureThreshold: 120 }) }
      : {}),
    livenessProbe: probe('/live', { periodSeconds: 10, failureThreshold: 3 }),
    readinessProbe: probe('/ready', { periodSeconds: 5, failureThreshold: 2 }),
    resources: {
      requests: { cpu: options.resources.cpuRequest, memory: options.resources.memoryRequest },
      limits: { memory: options.resources.memoryLimit },
    },
    securityContext: {
      runAsNonRoot: true,
      // In transparent mode, the UID whose connections the nat rules leave alone.
      runAsUser: transparent?.proxyUid ?? PROXY_UID,
      runAsGroup: transparent?.proxyUid ?? PROXY_UID,
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      privileged: false,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    },
    terminationMessagePolicy: 'FallbackToLogsOnError',
    volumeMounts: podCertificate
      ? [{ name: tokenVolume, mountPath: POD_CERTIFICATE_MOUNT, readOnly: true }]
      : [
          { name: tokenVolume, mountPath: PROXY_MOUNTS.token, readOnly: true },
          { name: anchorsVolume, mountPath: PROXY_MOUNTS.anchors, readOnly: true },
        ],
  };
  const identityVolumes: JsonObject[] = podCertificate
    ? [podCertificateVolume(tokenVolume, options.podCertificateSigner)]
    : certifyVolumes(tokenVolume, anchorsVolume, options);
  const newVolumes: JsonObject[] = [
    ...identityVolumes,
    ...(transparent === undefined ? [] : [proxyInitVolume(lockVolume)]),
  ];

  const patch: PatchOperation[] = [];
  if (spec['volumes'] === undefined || spec['volumes'] === null)
    patch.push({ op: 'add', path: '/spec/volumes', value: newVolumes });
  else for (const v of newVolumes) patch.push({ op: 'add', path: '/spec/volumes/-', value: v });
  // First among init containers: proxy-init, so that no container's traffic goes out before
  // the rules exist; then a native sidecar proxy, so that the ones after it can use the mesh.
  const inits = [
    ...(transparent === undefined
      ? []
      : [proxyInitContainer(options.proxyImage, transparent, lockVolume)]),
    ...(native ? [proxy] : []),
  ];
  if (inits.length > 0) {
    if (spec['initContainers'] === undefined || spec['initContainers'] === null)
      patch.push({ op: 'add', path: '/spec/initContainers', value: inits });
    else
      inits.forEach((c, i) =>
        patch.push({ op: 'add', path: `/spec/initContainers/${i}`, value: c }),
      );
  }
  if (!native) patch.push({ op: 'add', path: '/spec/containers/-', value: proxy });
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
  const meta = pod['metadata'];
  if (!isObject(meta))
    patch.push({ op: 'add', path: '/metadata', value: { annotations: written, labels } });
  else
    for (const [field, values] of [
      ['annotations', written],
      ['labels', labels],
    ] as const) {
      if (!isObject(meta[field]))
        patch.push({ op: 'add', path: `/metadata/${field}`, value: values });
      else
        for (const [k, v] of Object.entries(values))
          patch.push({ op: 'add', path: `/metadata/${field}/${pointerToken(k)}`, value: v });
    }
  return { inject: true, patch, warnings };
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
