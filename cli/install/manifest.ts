/**
 * The objects of an in-cluster install of the identity CA, built as typed kubernetes-models
 * objects (never as text). docs/install.md explains every choice made here.
 */
import type { IContainer } from 'kubernetes-models/v1';
import { ConfigMap, Namespace, ServiceAccount } from 'kubernetes-models/v1';
import { formatDuration, IN_CLUSTER } from '../../core/index.js';
import type { InstallConfig } from '../../core/index.js';
import {
  SELF_SIGNED_ISSUER,
  caIssuer,
  identityIssuerCertificate,
  rootCertificate,
  selfSignedIssuer,
  trustManagerBundle,
} from '../../trust-bundle/index.js';
import type { CertManagerSettings } from '../../trust-bundle/index.js';
import { clusterPermissions, namespacedPermissions, permissionsNotNeeded } from './rbac.js';
import { webhookObjects } from './webhooks.js';
import { trustSyncObjects } from './trust-sync.js';
import { destinationObjects } from './destination.js';
import {
  adminProbes,
  clusterService,
  doc,
  flag,
  grant,
  oneAtATime,
  spreadOverNodes,
  statelessReplicas,
  workloadDeployment,
} from './workload.js';
import type { ManifestObject, Metadata } from './workload.js';

/** Names every install uses; the ServiceAccount name is part of the CA's own TLS identity. */
export const INSTALL_NAMES = Object.freeze({
  serviceAccount: 'linkerd-identity',
  deployment: 'linkerd-identity',
  service: 'linkerd-identity',
  headlessService: 'linkerd-identity-headless',
  role: 'meshid-identity',
  container: 'identity',
});

/** The CA's ports inside the pod (DESIGN.md: gRPC 8080, admin 9990). */
const CA_PORTS = Object.freeze({ grpc: 8080, admin: 9990 });

/** A fixed non-root uid/gid (the "nonroot" user of distroless images), so runAsNonRoot can be checked. */
export const RUN_AS_USER = 65532;

/** Inputs besides the configuration. */
interface InstallInputs {
  /** The validated trust-anchor bundle, when `--trust-anchors` was given. */
  readonly trustAnchorsPem?: string | undefined;
}

/**
 * Builds every object of the install, in the order they can be applied: the Namespace first,
 * the Deployment after what it refers to.
 */
export function buildInstallObjects(
  config: InstallConfig,
  inputs: InstallInputs,
): ManifestObject[] {
  const ns = config.controlPlaneNamespace;
  const labels = commonLabels(config.image);
  const meta = (name: string): Metadata => ({ name, namespace: ns, labels });
  const clusterName = `${INSTALL_NAMES.role}-${ns}`;
  const subject = {
    name: INSTALL_NAMES.serviceAccount,
    namespace: ns,
    who: "the CA's ServiceAccount",
  };
  const selector = selectorLabels();
  const grpc = { name: 'grpc', port: CA_PORTS.grpc };
  const objects: ManifestObject[] = [
    doc(
      new Namespace({
        metadata: {
          name: ns,
          labels: {
            'app.kubernetes.io/part-of': labels['app.kubernetes.io/part-of'],
            // The CA's own pods must never be injected by the mesh they issue identities for.
            'config.linkerd.io/admission-webhooks': 'disabled',
            // What trust-bundle targets select (Linkerd's trust-manager recipe uses the same label).
            'linkerd.io/is-control-plane': 'true',
            // Everything meshid runs here meets the "restricted" Pod Security Standard.
            'pod-security.kubernetes.io/enforce': 'restricted',
          },
        },
      }),
      `the control-plane namespace; the CA's identity is linkerd-identity.${ns}.serviceaccount.identity.${ns}.${config.trustDomain}`,
    ),
    doc(
      new ServiceAccount({ metadata: meta(INSTALL_NAMES.serviceAccount) }),
      'the CA runs as this ServiceAccount; its name is part of the CA identity, so it is not configurable',
    ),
    ...grant(
      'Role',
      meta(INSTALL_NAMES.role),
      namespacedPermissions(config),
      `what the CA reads in ${ns}: its two inputs, by name, and nothing else`,
      subject,
    ),
    ...grant(
      'ClusterRole',
      { name: clusterName, labels },
      clusterPermissions(config),
      [
        'what the CA does beyond its namespace; the name carries the namespace so installs do not collide',
        ...permissionsNotNeeded(config.tokenValidator),
      ].join('\n'),
      subject,
    ),
  ];
  if (inputs.trustAnchorsPem !== undefined) {
    objects.push(
      doc(
        new ConfigMap({
          metadata: meta(config.trustAnchorsConfigMap),
          data: { [config.trustAnchorsKey]: inputs.trustAnchorsPem },
        }),
        'the trust anchors from --trust-anchors (validated before rendering); every issuer must chain to one of them',
      ),
    );
  }
  if (config.certManager) {
    objects.push(...certManagerChain(certManagerSettings(config, labels), config.trustManager));
  }
  objects.push(
    doc(
      clusterService(meta(INSTALL_NAMES.service), selector, grpc),
      'Certify over gRPC/TLS, load-balanced by the cluster IP',
    ),
    doc(
      clusterService(meta(INSTALL_NAMES.headlessService), selector, grpc, true),
      'the same port without a cluster IP: proxies resolve every ready replica and balance themselves (Linkerd dials this one)',
    ),
    deployment(config, meta(INSTALL_NAMES.deployment)),
    doc(
      oneAtATime(meta(INSTALL_NAMES.deployment), selector),
      'voluntary evictions (drains) take one replica at a time; maxUnavailable, unlike minAvailable 1, still lets a drain finish with --replicas 1',
    ),
  );
  const workload = { runAsUser: RUN_AS_USER, labels };
  // The destination service proxies ask about their destinations (transparent mode).
  if (config.destination) objects.push(...destinationObjects(config, workload));
  // Without trust-manager, meshid's sync controller keeps the anchors ConfigMap.
  if (config.certManager && !config.trustManager)
    objects.push(...trustSyncObjects(config, workload));
  // Last: their configurations must not be in force before what they guard exists.
  if (config.webhooks) objects.push(...webhookObjects(config, workload));
  return objects;
}

/**
 * The `meshid ca` arguments of the container (after the image's `meshid` entrypoint). The
 * namespace comes from the downward API instead (`MESHID_NAMESPACE`).
 */
function caContainerArgs(config: InstallConfig): string[] {
  return [
    'ca',
    flag('issuer-secret', config.issuerSecret),
    flag('trust-anchors-config-map', config.trustAnchorsConfigMap),
    flag('trust-anchors-key', config.trustAnchorsKey),
    flag('token-validator', config.tokenValidator),
    ...(config.tokenValidator === 'jwks' ? [flag('jwks', 'kubernetes')] : []),
    ...(config.podCertificates
      ? ['--pod-certificates', flag('pod-certificate-signer', config.podCertificateSigner)]
      : []),
    flag('trust-domain', config.trustDomain),
    flag('control-plane-namespace', config.controlPlaneNamespace),
    flag('cert-lifetime', formatDuration(config.certLifetime)),
    flag('clock-skew', formatDuration(config.clockSkew)),
    flag('listen', `[::]:${CA_PORTS.grpc}`),
    flag('admin', `[::]:${CA_PORTS.admin}`),
    flag('kubeconfig', IN_CLUSTER),
    // One process per pod: os.availableParallelism() counts the node's cores, not the pod's CPU
    // share, so "one per core" could fork dozens of workers into a 256 MiB limit. Scale by replicas.
    flag('workers', 1),
    // FIPS mode: the image must run Node with a FIPS provider (docs/fips.md), or the CA exits.
    ...(config.fips ? ['--fips'] : []),
  ];
}

function deployment(config: InstallConfig, metadata: Metadata): ManifestObject {
  const container: IContainer & { args: string[] } = {
    name: INSTALL_NAMES.container,
    args: caContainerArgs(config),
    env: [
      {
        name: 'MESHID_NAMESPACE',
        valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.namespace' } },
      },
      {
        name: 'POD_NAME',
        valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.name' } },
      },
    ],
    ports: [
      { name: 'grpc', containerPort: CA_PORTS.grpc, protocol: 'TCP' },
      { name: 'admin', containerPort: CA_PORTS.admin, protocol: 'TCP' },
    ],
    // Up to a minute to load the issuer and anchors before liveness starts counting; ready only
    // with a valid issuer loaded, so Services send Certify calls only to replicas that can sign.
    ...adminProbes(),
    resources: {
      requests: { cpu: '100m', memory: '128Mi' },
      limits: { memory: '256Mi' },
    },
  };
  const selector = selectorLabels();
  const pathToPod = ['spec', 'template', 'spec'];
  return doc(
    workloadDeployment({
      metadata,
      selector,
      replicas: config.replicas,
      noInject: 'linkerd.io/inject',
      serviceAccount: INSTALL_NAMES.serviceAccount,
      runAsUser: RUN_AS_USER,
      image: config.image,
      scheduling: {
        affinity: spreadOverNodes(selector),
        topologySpreadConstraints: [
          {
            maxSkew: 1,
            topologyKey: 'topology.kubernetes.io/zone',
            whenUnsatisfiable: 'ScheduleAnyway',
            labelSelector: { matchLabels: selector },
          },
        ],
      },
      container,
    }),
    `the identity CA: ${statelessReplicas(config.replicas)} reading the issuer and anchors through the API`,
    [
      {
        path: [...pathToPod, 'automountServiceAccountToken'],
        text: 'the CA calls the API (watches, TokenReview, Events) with this token; workloads need nothing from it',
      },
      {
        path: [...pathToPod, 'enableServiceLinks'],
        text: 'no Service environment variables: a Service named "meshid" would add MESHID_* variables, which the config loader refuses',
      },
      {
        path: [...pathToPod, 'affinity'],
        text: 'replicas on different nodes when possible, so that one node going away is not an outage',
      },
      {
        path: [...pathToPod, 'containers', 0, 'env'],
        text: "the issuer Secret, anchors ConfigMap and Events are in the pod's namespace; POD_NAME names the replica in Events",
      },
      {
        path: [...pathToPod, 'containers', 0, 'resources'],
        text: 'no CPU limit (throttling would stall signing); a memory limit for one Node.js process',
      },
    ],
  );
}

/**
 * The cert-manager chain (trust-bundle's builders), in the order they can be applied: the
 * self-signed Issuer, the root Certificate, the CA Issuer over it, the identity issuer
 * Certificate, and with `trustManager` the Bundle that fills the anchors ConfigMap.
 */
export function certManagerChain(s: CertManagerSettings, trustManager: boolean): ManifestObject[] {
  return [
    doc(
      selfSignedIssuer(s),
      'cert-manager: a self-signed Issuer, used only to sign the trust anchor (root)',
    ),
    doc(
      rootCertificate(s),
      `the trust anchor: a self-signed ECDSA P-256 root in the Secret ${s.rootCertificate}; meshid trust rotate replaces it without downtime`,
    ),
    doc(caIssuer(s), `a CA Issuer over the root; it signs the identity issuer`),
    doc(
      identityIssuerCertificate(s),
      `cert-manager issues the CA's issuer (an intermediate CA) into the Secret ${s.issuerSecret} and renews it`,
    ),
    ...(trustManager
      ? [
          doc(
            trustManagerBundle(s),
            `trust-manager fills the anchors ConfigMap ${s.trustAnchorsConfigMap} from the root Secret (run trust-manager with app.trust.namespace=${s.namespace});\nwithout trust-manager, run \`meshid trust sync\``,
          ),
        ]
      : []),
  ];
}

/**
 * The names of the cert-manager chain an install uses (the root Certificate, its Secret and the
 * CA Issuer share the name of --cert-manager-issuer, as in Linkerd's recipe).
 */
function certManagerSettings(
  config: InstallConfig,
  labels: Record<string, string>,
): CertManagerSettings {
  return {
    namespace: config.controlPlaneNamespace,
    trustDomain: config.trustDomain,
    controlPlaneNamespace: config.controlPlaneNamespace,
    selfSignedIssuer: SELF_SIGNED_ISSUER,
    rootCertificate: config.certManagerIssuer,
    caIssuer: config.certManagerIssuer,
    issuerSecret: config.issuerSecret,
    trustAnchorsConfigMap: config.trustAnchorsConfigMap,
    trustAnchorsKey: config.trustAnchorsKey,
    certLifetime: config.certLifetime,
    labels,
  };
}

/** The labels that select the CA's pods; never the version, because selectors are immutable. */
function selectorLabels(): Record<string, string> {
  return { 'app.kubernetes.io/name': 'meshid', 'app.kubernetes.io/component': 'identity' };
}

/** Labels on every object: selector labels, part-of, and the image's tag as the version. */
function commonLabels(image: string): Record<string, string> & {
  'app.kubernetes.io/part-of': string;
} {
  const version = imageTag(image);
  return {
    ...selectorLabels(),
    'app.kubernetes.io/part-of': 'meshid',
    ...(version === undefined ? {} : { 'app.kubernetes.io/version': version }),
  };
}

/**
 * The tag of an image reference when it is also a valid label value (a digest-only reference has
 * none, and then the version label is left out rather than guessed).
 */
export function imageTag(image: string): string | undefined {
  const withoutDigest = image.split('@')[0]!;
  const lastSlash = withoutDigest.lastIndexOf('/');
  const colon = withoutDigest.lastIndexOf(':');
  if (colon <= lastSlash) return undefined;
  const tag = withoutDigest.slice(colon + 1);
  return /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/.test(tag) ? tag : undefined;
}
