/**
 * The destination service's part of an install: `meshid destination` as a Deployment with its
 * own ServiceAccount (its name is part of its mesh identity), a Service on 8086 (Linkerd's port
 * and Service name), and a ClusterRole that lists and watches Services, EndpointSlices and Pods
 * and nothing else. docs/destination.md.
 */
import { ServiceAccount } from 'kubernetes-models/v1';
import {
  DEFAULTS,
  DESTINATION_SERVICE_NAME,
  IN_CLUSTER,
  caIdentityName,
  destinationIdentityName,
} from '../../core/index.js';
import type { InstallConfig } from '../../core/index.js';
import type { Permission } from './rbac.js';
import {
  adminProbes,
  clusterService,
  doc,
  flag,
  grant,
  statelessReplicas,
  workloadDeployment,
} from './workload.js';
import type { ManifestObject } from './workload.js';

/** The destination service's object names (Linkerd's, so proxies and docs find them). */
export const DESTINATION_NAMES = Object.freeze({
  serviceAccount: 'linkerd-destination',
  deployment: 'linkerd-destination',
  service: DESTINATION_SERVICE_NAME,
  clusterRole: 'meshid-destination',
  container: 'destination',
});

/** Its ports inside the pod: the Destination API (Linkerd's 8086) and admin. */
const DESTINATION_PORTS = Object.freeze({
  grpc: DEFAULTS.destinationListen.port,
  admin: DEFAULTS.destinationAdmin.port,
});

const TOKEN_MOUNT = '/var/run/secrets/meshid.io/serviceaccount';
const ANCHORS_MOUNT = '/var/run/meshid/trust-anchors';

/**
 * The ClusterRole's rules with the reason for each: list and watch of exactly the three kinds
 * the endpoint index reads, cluster-wide because proxies in every namespace ask about Services
 * in every namespace.
 */
function destinationRules(): Permission[] {
  return [
    {
      rule: { apiGroups: [''], resources: ['services', 'pods'], verbs: ['list', 'watch'] },
      reason:
        "why: a Service's ClusterIPs and ports, and each pod's IP, ServiceAccount (its identity), mesh label and proxy port; no get: everything comes from the watches",
    },
    {
      rule: {
        apiGroups: ['discovery.k8s.io'],
        resources: ['endpointslices'],
        verbs: ['list', 'watch'],
      },
      reason: 'why: the ready endpoints of each Service and the port each Service port maps to',
    },
  ];
}

/**
 * The `meshid destination` arguments of the container.
 */
function destinationArgs(config: InstallConfig): string[] {
  const naming = {
    trustDomain: config.trustDomain,
    controlPlaneNamespace: config.controlPlaneNamespace,
  };
  return [
    'destination',
    flag('listen', `[::]:${DESTINATION_PORTS.grpc}`),
    flag('admin', `[::]:${DESTINATION_PORTS.admin}`),
    flag('kubeconfig', IN_CLUSTER),
    flag('trust-domain', config.trustDomain),
    flag('control-plane-namespace', config.controlPlaneNamespace),
    flag('identity-addr', `linkerd-identity.${config.controlPlaneNamespace}.svc:8080`),
    flag('identity-name', caIdentityName(naming)),
    flag('local-identity', destinationIdentityName(naming)),
    flag('trust-anchors', `${ANCHORS_MOUNT}/${config.trustAnchorsKey}`),
    flag('token-file', `${TOKEN_MOUNT}/token`),
    ...(config.fips ? ['--fips'] : []),
  ];
}

/**
 * The destination service's objects.
 */
export function destinationObjects(
  config: InstallConfig,
  o: { readonly runAsUser: number; readonly labels: Readonly<Record<string, string>> },
): ManifestObject[] {
  const ns = config.controlPlaneNamespace;
  const selector = {
    'app.kubernetes.io/name': 'meshid',
    'app.kubernetes.io/component': 'destination',
  };
  const labels = { ...o.labels, ...selector };
  const meta = (name: string) => ({ name, namespace: ns, labels });
  const N = DESTINATION_NAMES;
  const podSpec = ['spec', 'template', 'spec'];
  return [
    doc(
      new ServiceAccount({ metadata: meta(N.serviceAccount) }),
      `the destination service runs as this ServiceAccount; its mesh identity is ${destinationIdentityName({ trustDomain: config.trustDomain, controlPlaneNamespace: ns })}`,
    ),
    ...grant(
      'ClusterRole',
      { name: `${N.clusterRole}-${ns}`, labels },
      destinationRules(),
      'what the destination service reads: list and watch of Services, EndpointSlices and Pods, nothing else (no Secrets, no writes)',
      { name: N.serviceAccount, namespace: ns, who: "the destination service's ServiceAccount" },
    ),
    doc(
      clusterService(meta(N.service), selector, { name: 'grpc', port: DESTINATION_PORTS.grpc }),
      "Linkerd's Destination API over mTLS, where proxies ask about their destinations",
    ),
    doc(
      workloadDeployment({
        metadata: meta(N.deployment),
        selector,
        replicas: config.replicas,
        noInject: 'linkerd.io/inject',
        serviceAccount: N.serviceAccount,
        runAsUser: o.runAsUser,
        image: config.image,
        container: {
          name: N.container,
          args: destinationArgs(config),
          ports: [
            { name: 'grpc', containerPort: DESTINATION_PORTS.grpc, protocol: 'TCP' },
            { name: 'admin', containerPort: DESTINATION_PORTS.admin, protocol: 'TCP' },
          ],
          ...adminProbes(),
          resources: { requests: { cpu: '100m', memory: '128Mi' }, limits: { memory: '512Mi' } },
          volumeMounts: [
            { name: 'identity-token', mountPath: TOKEN_MOUNT, readOnly: true },
            { name: 'trust-anchors', mountPath: ANCHORS_MOUNT, readOnly: true },
          ],
        },
        volumes: [
          {
            name: 'identity-token',
            projected: {
              sources: [
                {
                  serviceAccountToken: {
                    audience: DEFAULTS.audience,
                    expirationSeconds: DEFAULTS.proxyTokenExpirationMs / 1000,
                    path: 'token',
                  },
                },
              ],
            },
          },
          { name: 'trust-anchors', configMap: { name: config.trustAnchorsConfigMap } },
        ],
      }),
      `the destination service: ${statelessReplicas(config.replicas)}, each following the cluster through its own watches`,
      [
        {
          path: [...podSpec, 'automountServiceAccountToken'],
          text: 'the watches of Services, EndpointSlices and Pods use this token',
        },
        {
          path: [...podSpec, 'volumes', 0],
          text: 'its mesh certificate comes from the CA as a proxy gets its own: this token (audience identity.l5d.io) and a CSR; the key stays in memory',
        },
        {
          path: [...podSpec, 'containers', 0, 'resources'],
          text: 'memory grows with the cluster: about 1.5 KB of heap per pod (npm run bench: 14 MB for 10,000 pods)',
        },
      ],
    ),
  ];
}
