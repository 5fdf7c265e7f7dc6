/**
 * The proxy container the injector adds (a plain container or a native sidecar): its
 * environment says who it is, where its identity comes from and what it listens on.
 */
import {
  SIDECAR_NODE_OPTIONS,
  destinationIdentityName,
  destinationServiceAddress,
} from '../core/index.js';
import type { IdentityNaming } from '../core/index.js';
import { POD_CERTIFICATE_MOUNT, podCertificateEnv } from './identity-source.js';
import type { TransparentSettings } from './transparent.js';
import type { JsonObject } from './admission.js';

/** The injected container's name; its presence is what "already injected" means. */
export const PROXY_CONTAINER = 'meshid-proxy';

/** The proxy's ports in the pod (DESIGN.md). */
export const PROXY_PORTS = Object.freeze({ inbound: 4143, outbound: 4140, admin: 4191 });

/** Where the proxy finds its token and its anchors. */
const PROXY_MOUNTS = Object.freeze({
  token: '/var/run/secrets/meshid.io/serviceaccount',
  anchors: '/var/run/meshid/trust-anchors',
});

/** The proxy's user in explicit mode: the image's non-root user (distroless "nonroot"). */
const PROXY_UID = 65532;

/** What the proxy container is built from; planInjection's stages decide it. */
interface ProxySpec {
  readonly serviceAccount: string;
  readonly context: { readonly namespace: string };
  readonly options: {
    readonly naming: IdentityNaming;
    readonly proxyImage: string;
    readonly identityAddr: string;
    readonly identityName: string;
    readonly trustAnchorsKey: string;
    readonly resources: { cpuRequest: string; memoryRequest: string; memoryLimit: string };
  };
  readonly podCertificate: boolean;
  readonly native: boolean;
  readonly transparent: TransparentSettings | undefined;
  /** Whether it listens inbound, and the app port it forwards to. */
  readonly inbound: boolean;
  readonly appPort: number | undefined;
  readonly destinations: readonly string[];
  readonly routes: readonly string[];
  /** The volumes' names in the pod. */
  readonly names: { readonly token: string; readonly anchors: string };
}

/** The proxy's environment: its identity, where it gets it, and its listeners. */
function proxyEnv(i: ProxySpec): { name: string; value: string }[] {
  const { transparent, destinations, routes, context, options } = i;
  const identity = `${i.serviceAccount}.${context.namespace}.serviceaccount.identity.${options.naming.controlPlaneNamespace}.${options.naming.trustDomain}`;
  const naming = [
    { name: 'MESHID_TRUST_DOMAIN', value: options.naming.trustDomain },
    { name: 'MESHID_CONTROL_PLANE_NAMESPACE', value: options.naming.controlPlaneNamespace },
  ];
  // Certify: the CA, a token for it and the anchors ConfigMap; pod-certificate: the kubelet's files.
  const identityEnv = i.podCertificate
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
  return [
    { name: 'MESHID_LOCAL_IDENTITY', value: identity },
    ...identityEnv,
    { name: 'MESHID_ADMIN', value: `[::]:${PROXY_PORTS.admin}` },
    ...(i.inbound ? [{ name: 'MESHID_INBOUND', value: `[::]:${PROXY_PORTS.inbound}` }] : []),
    ...(i.appPort === undefined ? [] : [{ name: 'MESHID_APP', value: `127.0.0.1:${i.appPort}` }]),
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
}

/** The proxy container (a native sidecar or a plain container). */
export function proxyContainer(i: ProxySpec): JsonObject {
  const { native, transparent, options, names } = i;
  const probe = (path: string, extra: JsonObject): JsonObject => ({
    httpGet: { path, port: PROXY_PORTS.admin, scheme: 'HTTP' },
    timeoutSeconds: 2,
    ...extra,
  });
  return {
    name: PROXY_CONTAINER,
    image: options.proxyImage,
    imagePullPolicy: 'IfNotPresent',
    args: ['proxy'],
    env: proxyEnv(i),
    ports: [
      ...(i.inbound
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
    volumeMounts: i.podCertificate
      ? [{ name: names.token, mountPath: POD_CERTIFICATE_MOUNT, readOnly: true }]
      : [
          { name: names.token, mountPath: PROXY_MOUNTS.token, readOnly: true },
          { name: names.anchors, mountPath: PROXY_MOUNTS.anchors, readOnly: true },
        ],
  };
}
