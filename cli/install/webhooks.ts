/**
 * The admission webhooks' part of an install (`meshid install --cert-manager --webhooks`): their
 * ServiceAccount and least-privilege RBAC, the serving certificate from cert-manager (a
 * self-signed CA Issuer for webhooks only, and a Certificate for the Service's DNS names), the
 * Deployment, Service and PodDisruptionBudget, and last the two webhook configurations, with
 * cert-manager's CA injector filling their caBundle. docs/webhooks.md explains every choice.
 */
import { Certificate, Issuer } from '@kubernetes-models/cert-manager/cert-manager.io/v1';
import {
  MutatingWebhookConfiguration,
  ValidatingWebhookConfiguration,
} from 'kubernetes-models/admissionregistration.k8s.io/v1';
import type { IRuleWithOperations } from 'kubernetes-models/admissionregistration.k8s.io/v1';
import { Deployment } from 'kubernetes-models/apps/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { ClusterRole, ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import { Service, ServiceAccount } from 'kubernetes-models/v1';
import type { IProbe } from 'kubernetes-models/v1';
import { ADMISSION_WEBHOOKS_LABEL, IN_CLUSTER } from '../../core/index.js';
import type { InstallConfig } from '../../core/index.js';
import { restrictedContainerSecurity, restrictedPodSecurity } from './pod-security.js';

/** One document, shaped as manifest.ts's ManifestObject (which imports this module). */
interface WebhookManifestObject {
  readonly object: { apiVersion: string; kind: string; validate(): void; toJSON(): unknown };
  readonly comment: string;
  readonly notes: readonly { path: readonly (string | number)[]; text: string }[];
}

/** What the rest of the install decides: the uid the pods run as, and the version label. */
interface WebhookInstallInputs {
  readonly runAsUser: number;
  readonly version: string | undefined;
}

/** The webhooks' object names (the contract with the other components and `meshid check`). */
const WEBHOOK_NAMES = Object.freeze({
  deployment: 'meshid-webhooks',
  service: 'meshid-webhooks',
  serviceAccount: 'meshid-webhooks',
  tlsSecret: 'meshid-webhooks-tls',
  certificate: 'meshid-webhooks',
  caSecret: 'meshid-webhooks-ca',
  selfSignedIssuer: 'meshid-webhooks-selfsigned',
  caIssuer: 'meshid-webhooks-ca',
  injectorConfiguration: 'meshid-proxy-injector',
  injectorWebhook: 'proxy-injector.meshid.io',
  guardConfiguration: 'meshid-trust-guard',
  guardWebhook: 'trust-guard.meshid.io',
});

/** The webhooks' HTTPS port in the pod; the Service exposes it on 443. */
const WEBHOOKS_PORT = 8443;

const TLS_MOUNT = '/var/run/meshid/tls';
const ANCHORS_MOUNT = '/var/run/meshid/trust-anchors';

function labels(version: string | undefined): Record<string, string> {
  return {
    ...selector(),
    'app.kubernetes.io/part-of': 'meshid',
    ...(version === undefined ? {} : { 'app.kubernetes.io/version': version }),
  };
}

function selector(): Record<string, string> {
  return { 'app.kubernetes.io/name': 'meshid', 'app.kubernetes.io/component': 'webhooks' };
}

/**
 * The `meshid webhooks` arguments of the container.
 */
function webhooksContainerArgs(config: InstallConfig): string[] {
  const flag = (name: string, value: string | number): string => `--${name}=${value}`;
  return [
    'webhooks',
    flag('listen', `[::]:${WEBHOOKS_PORT}`),
    flag('tls-dir', TLS_MOUNT),
    flag('kubeconfig', IN_CLUSTER),
    flag('trust-domain', config.trustDomain),
    flag('control-plane-namespace', config.controlPlaneNamespace),
    flag('proxy-image', config.image),
    flag('trust-anchors', `${ANCHORS_MOUNT}/${config.trustAnchorsKey}`),
    flag('trust-anchors-config-map', config.trustAnchorsConfigMap),
    flag('trust-anchors-key', config.trustAnchorsKey),
    flag('issuer-secret', config.issuerSecret),
    // Named in the volumes of pods that take their identity from pod certificates.
    flag('pod-certificate-signer', config.podCertificateSigner),
  ];
}

/**
 * Every object of the webhooks, in apply order: the webhook configurations last, so that a
 * first install does not send its own Certificates and ConfigMap to a guard that is not running
 * yet.
 */
export function webhookObjects(
  config: InstallConfig,
  inputs: WebhookInstallInputs,
): WebhookManifestObject[] {
  const RUN_AS_USER = inputs.runAsUser;
  const ns = config.controlPlaneNamespace;
  const l = labels(inputs.version);
  const meta = (
    name: string,
  ): { name: string; namespace: string; labels: Record<string, string> } => ({
    name,
    namespace: ns,
    labels: l,
  });
  const N = WEBHOOK_NAMES;
  const clusterName = `${N.serviceAccount}-${ns}`;
  const subjects = [{ kind: 'ServiceAccount', name: N.serviceAccount, namespace: ns }];
  const dns = [`${N.service}.${ns}.svc`, `${N.service}.${ns}.svc.cluster.local`];
  const injectCa = { 'cert-manager.io/inject-ca-from': `${ns}/${N.certificate}` };
  const timeoutSeconds = config.webhookTimeout / 1000;
  const probe = (path: string, fields: Omit<IProbe, 'httpGet'>): IProbe => ({
    httpGet: { path, port: 'https', scheme: 'HTTPS' },
    timeoutSeconds: 2,
    ...fields,
  });
  const guardRules: IRuleWithOperations[] = [
    {
      operations: ['CREATE', 'UPDATE'],
      apiGroups: [''],
      apiVersions: ['v1'],
      resources: ['configmaps'],
      scope: 'Namespaced',
    },
    {
      operations: ['CREATE', 'UPDATE'],
      apiGroups: ['cert-manager.io'],
      apiVersions: ['v1'],
      resources: ['certificates'],
      scope: 'Namespaced',
    },
  ];
  return [
    {
      object: new ServiceAccount({ metadata: meta(N.serviceAccount) }),
      comment: 'the webhooks run as this ServiceAccount',
      notes: [],
    },
    {
      object: new ClusterRole({
        metadata: { name: clusterName, labels: l },
        rules: [{ apiGroups: [''], resources: ['namespaces'], verbs: ['get'] }],
      }),
      comment:
        'what the webhooks read cluster-wide; the name carries the namespace so installs do not collide',
      notes: [
        {
          path: ['rules', 0],
          text: "why: the injector reads the meshid.io/inject annotation of a pod's namespace (an AdmissionReview carries only the pod)",
        },
      ],
    },
    {
      object: new ClusterRoleBinding({
        metadata: { name: clusterName, labels: l },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: clusterName },
        subjects,
      }),
      comment: `grants the ClusterRole ${clusterName} to the webhooks' ServiceAccount`,
      notes: [],
    },
    {
      object: new Issuer({ metadata: meta(N.selfSignedIssuer), spec: { selfSigned: {} } }),
      comment: "signs only the webhooks' own CA below",
      notes: [],
    },
    {
      object: new Certificate({
        metadata: meta(N.caSecret),
        spec: {
          secretName: N.caSecret,
          isCA: true,
          commonName: `meshid-webhooks-ca.${ns}`,
          duration: '87600h',
          renewBefore: '720h',
          privateKey: { algorithm: 'ECDSA', size: 256, rotationPolicy: 'Always' },
          issuerRef: { group: 'cert-manager.io', kind: 'Issuer', name: N.selfSignedIssuer },
        },
      }),
      comment:
        "the CA the API server trusts for the webhooks (their caBundle); it is not the mesh's trust anchor",
      notes: [],
    },
    {
      object: new Issuer({ metadata: meta(N.caIssuer), spec: { ca: { secretName: N.caSecret } } }),
      comment: "issues the webhooks' serving certificate from the CA above",
      notes: [],
    },
    {
      object: new Certificate({
        metadata: meta(N.certificate),
        spec: {
          secretName: N.tlsSecret,
          dnsNames: dns,
          duration: '2160h',
          renewBefore: '360h',
          privateKey: { algorithm: 'ECDSA', size: 256, rotationPolicy: 'Always' },
          usages: ['server auth', 'digital signature'],
          issuerRef: { group: 'cert-manager.io', kind: 'Issuer', name: N.caIssuer },
        },
      }),
      comment: `the webhooks' serving certificate for ${dns[0]} (what the API server dials); the webhooks reload it when cert-manager renews it`,
      notes: [],
    },
    {
      object: new Service({
        metadata: meta(N.service),
        spec: {
          type: 'ClusterIP',
          selector: selector(),
          ports: [{ name: 'https', port: 443, targetPort: 'https', protocol: 'TCP' }],
        },
      }),
      comment: 'the API server calls the webhooks through this Service',
      notes: [],
    },
    {
      object: new Deployment({
        metadata: meta(N.deployment),
        spec: {
          replicas: config.replicas,
          selector: { matchLabels: selector() },
          template: {
            metadata: { labels: l, annotations: { 'meshid.io/inject': 'disabled' } },
            spec: {
              serviceAccountName: N.serviceAccount,
              automountServiceAccountToken: true,
              enableServiceLinks: false,
              securityContext: restrictedPodSecurity(RUN_AS_USER),
              affinity: {
                podAntiAffinity: {
                  preferredDuringSchedulingIgnoredDuringExecution: [
                    {
                      weight: 100,
                      podAffinityTerm: {
                        labelSelector: { matchLabels: selector() },
                        topologyKey: 'kubernetes.io/hostname',
                      },
                    },
                  ],
                },
              },
              containers: [
                {
                  name: 'webhooks',
                  image: config.image,
                  imagePullPolicy: 'IfNotPresent',
                  args: webhooksContainerArgs(config),
                  ports: [{ name: 'https', containerPort: WEBHOOKS_PORT, protocol: 'TCP' }],
                  readinessProbe: probe('/ready', { periodSeconds: 5, failureThreshold: 2 }),
                  livenessProbe: probe('/live', { periodSeconds: 10, failureThreshold: 3 }),
                  resources: {
                    requests: { cpu: '50m', memory: '96Mi' },
                    limits: { memory: '256Mi' },
                  },
                  securityContext: restrictedContainerSecurity(RUN_AS_USER),
                  volumeMounts: [
                    { name: 'tls', mountPath: TLS_MOUNT, readOnly: true },
                    { name: 'trust-anchors', mountPath: ANCHORS_MOUNT, readOnly: true },
                  ],
                },
              ],
              volumes: [
                { name: 'tls', secret: { secretName: N.tlsSecret } },
                {
                  name: 'trust-anchors',
                  configMap: { name: config.trustAnchorsConfigMap, optional: true },
                },
              ],
            },
          },
        },
      }),
      comment: `the admission webhooks: ${config.replicas} stateless ${config.replicas === 1 ? 'replica' : 'replicas'} serving /inject and /validate over HTTPS`,
      notes: [
        {
          path: ['spec', 'template', 'spec', 'volumes', 1],
          text: 'optional: without the anchors the injector still injects, and leaves out the meshid.io/trust-root-sha256 annotation',
        },
      ],
    },
    {
      object: new PodDisruptionBudget({
        metadata: meta(N.deployment),
        spec: { maxUnavailable: 1, selector: { matchLabels: selector() } },
      }),
      comment: 'drains take one webhook replica at a time',
      notes: [],
    },
    {
      object: new MutatingWebhookConfiguration({
        metadata: { name: N.injectorConfiguration, labels: l, annotations: injectCa },
        webhooks: [
          {
            name: N.injectorWebhook,
            clientConfig: {
              service: { name: N.service, namespace: ns, path: '/inject', port: 443 },
            },
            rules: [
              {
                operations: ['CREATE'],
                apiGroups: [''],
                apiVersions: ['v1'],
                resources: ['pods'],
                scope: 'Namespaced',
              },
            ],
            namespaceSelector: {
              matchExpressions: [
                {
                  key: 'kubernetes.io/metadata.name',
                  operator: 'NotIn',
                  values: [ns, 'kube-system'],
                },
                {
                  key: ADMISSION_WEBHOOKS_LABEL,
                  operator: 'NotIn',
                  values: ['disabled'],
                },
              ],
            },
            sideEffects: 'None',
            admissionReviewVersions: ['v1'],
            failurePolicy: config.injectorFailurePolicy,
            timeoutSeconds,
            reinvocationPolicy: 'Never',
          },
        ],
      }),
      comment: `the proxy injector; cert-manager's CA injector fills caBundle from ${ns}/${N.certificate}`,
      notes: [
        {
          path: ['webhooks', 0, 'failurePolicy'],
          text:
            config.injectorFailurePolicy === 'Ignore'
              ? 'Ignore: while the injector is down, opted-in pods start without the proxy (no outage, but unmeshed); Fail would refuse them'
              : 'Fail: while the injector is down, pods in every namespace it matches are refused; Ignore would let them start unmeshed',
        },
      ],
    },
    {
      object: new ValidatingWebhookConfiguration({
        metadata: { name: N.guardConfiguration, labels: l, annotations: injectCa },
        webhooks: [
          {
            name: N.guardWebhook,
            clientConfig: {
              service: { name: N.service, namespace: ns, path: '/validate', port: 443 },
            },
            rules: guardRules,
            namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': ns } },
            // Only the anchors ConfigMap is sent, not every ConfigMap of the namespace (CEL match
            // conditions, Kubernetes 1.30+; older API servers ignore them and the guard filters).
            matchConditions: [
              {
                name: 'anchors-config-map-or-certificate',
                expression: `request.kind.kind != 'ConfigMap' || object.metadata.name == '${config.trustAnchorsConfigMap}'`,
              },
            ],
            sideEffects: 'None',
            admissionReviewVersions: ['v1'],
            failurePolicy: config.trustGuardFailurePolicy,
            timeoutSeconds,
          },
        ],
      }),
      comment: `the trust guard: anchors ConfigMap and issuer Certificate edits in ${ns} only`,
      notes: [
        {
          path: ['webhooks', 0, 'failurePolicy'],
          text:
            config.trustGuardFailurePolicy === 'Fail'
              ? `Fail: while the guard is down, ConfigMaps and Certificates in ${ns} cannot be written (the seat belt cannot be skipped); Ignore would let them through unchecked`
              : `Ignore: while the guard is down, trust edits in ${ns} go through unchecked`,
        },
      ],
    },
  ];
}
