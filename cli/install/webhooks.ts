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
import { ServiceAccount } from 'kubernetes-models/v1';
import { ADMISSION_WEBHOOKS_LABEL, IN_CLUSTER } from '../../core/index.js';
import type { InstallConfig } from '../../core/index.js';
import {
  clusterService,
  doc,
  flag,
  grant,
  oneAtATime,
  probe,
  spreadOverNodes,
  statelessReplicas,
  workloadDeployment,
} from './workload.js';
import type { ManifestObject, Metadata } from './workload.js';

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
const N = WEBHOOK_NAMES;

/** The webhooks' HTTPS port in the pod; the Service exposes it on 443. */
const WEBHOOKS_PORT = 8443;

const TLS_MOUNT = '/var/run/meshid/tls';
const ANCHORS_MOUNT = '/var/run/meshid/trust-anchors';

const SELECTOR = Object.freeze({
  'app.kubernetes.io/name': 'meshid',
  'app.kubernetes.io/component': 'webhooks',
});

/** What every object builder below takes: the configuration and the metadata of a name. */
interface Context {
  readonly config: InstallConfig;
  readonly ns: string;
  readonly runAsUser: number;
  readonly labels: Record<string, string>;
  meta(name: string): Metadata;
}

/**
 * The `meshid webhooks` arguments of the container.
 */
function webhooksContainerArgs(config: InstallConfig): string[] {
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
 * yet. `labels` are the install's; the webhooks' selector labels go over them.
 */
export function webhookObjects(
  config: InstallConfig,
  inputs: { readonly runAsUser: number; readonly labels: Readonly<Record<string, string>> },
): ManifestObject[] {
  const ns = config.controlPlaneNamespace;
  const labels = { ...inputs.labels, ...SELECTOR };
  const c: Context = {
    config,
    ns,
    runAsUser: inputs.runAsUser,
    labels,
    meta: (name) => ({ name, namespace: ns, labels }),
  };
  return [
    doc(
      new ServiceAccount({ metadata: c.meta(N.serviceAccount) }),
      'the webhooks run as this ServiceAccount',
    ),
    ...rbac(c),
    ...servingCertificate(c),
    doc(
      clusterService(c.meta(N.service), SELECTOR, { name: 'https', port: 443 }),
      'the API server calls the webhooks through this Service',
    ),
    deployment(c),
    doc(oneAtATime(c.meta(N.deployment), SELECTOR), 'drains take one webhook replica at a time'),
    injectorConfiguration(c),
    guardConfiguration(c),
  ];
}

function rbac(c: Context): ManifestObject[] {
  const clusterName = `${N.serviceAccount}-${c.ns}`;
  return grant(
    'ClusterRole',
    { name: clusterName, labels: c.labels },
    [
      {
        rule: { apiGroups: [''], resources: ['namespaces'], verbs: ['get'] },
        reason:
          "why: the injector reads the meshid.io/inject annotation of a pod's namespace (an AdmissionReview carries only the pod)",
      },
    ],
    'what the webhooks read cluster-wide; the name carries the namespace so installs do not collide',
    { name: N.serviceAccount, namespace: c.ns, who: "the webhooks' ServiceAccount" },
  );
}

/** A self-signed CA Issuer for the webhooks only, and the serving Certificate it issues. */
function servingCertificate(c: Context): ManifestObject[] {
  const dns = [`${N.service}.${c.ns}.svc`, `${N.service}.${c.ns}.svc.cluster.local`];
  const privateKey = { algorithm: 'ECDSA', size: 256, rotationPolicy: 'Always' } as const;
  return [
    doc(
      new Issuer({ metadata: c.meta(N.selfSignedIssuer), spec: { selfSigned: {} } }),
      "signs only the webhooks' own CA below",
    ),
    doc(
      new Certificate({
        metadata: c.meta(N.caSecret),
        spec: {
          secretName: N.caSecret,
          isCA: true,
          commonName: `meshid-webhooks-ca.${c.ns}`,
          duration: '87600h',
          renewBefore: '720h',
          privateKey,
          issuerRef: { group: 'cert-manager.io', kind: 'Issuer', name: N.selfSignedIssuer },
        },
      }),
      "the CA the API server trusts for the webhooks (their caBundle); it is not the mesh's trust anchor",
    ),
    doc(
      new Issuer({ metadata: c.meta(N.caIssuer), spec: { ca: { secretName: N.caSecret } } }),
      "issues the webhooks' serving certificate from the CA above",
    ),
    doc(
      new Certificate({
        metadata: c.meta(N.certificate),
        spec: {
          secretName: N.tlsSecret,
          dnsNames: dns,
          duration: '2160h',
          renewBefore: '360h',
          privateKey,
          usages: ['server auth', 'digital signature'],
          issuerRef: { group: 'cert-manager.io', kind: 'Issuer', name: N.caIssuer },
        },
      }),
      `the webhooks' serving certificate for ${dns[0]} (what the API server dials); the webhooks reload it when cert-manager renews it`,
    ),
  ];
}

function deployment({ config, runAsUser, meta }: Context): ManifestObject {
  const https = (path: string, fields: { periodSeconds: number; failureThreshold: number }) =>
    probe('https', path, fields, 'HTTPS');
  return doc(
    workloadDeployment({
      metadata: meta(N.deployment),
      selector: SELECTOR,
      replicas: config.replicas,
      noInject: 'meshid.io/inject',
      serviceAccount: N.serviceAccount,
      runAsUser,
      image: config.image,
      scheduling: { affinity: spreadOverNodes(SELECTOR) },
      container: {
        name: 'webhooks',
        args: webhooksContainerArgs(config),
        ports: [{ name: 'https', containerPort: WEBHOOKS_PORT, protocol: 'TCP' }],
        readinessProbe: https('/ready', { periodSeconds: 5, failureThreshold: 2 }),
        livenessProbe: https('/live', { periodSeconds: 10, failureThreshold: 3 }),
        resources: { requests: { cpu: '50m', memory: '96Mi' }, limits: { memory: '256Mi' } },
        volumeMounts: [
          { name: 'tls', mountPath: TLS_MOUNT, readOnly: true },
          { name: 'trust-anchors', mountPath: ANCHORS_MOUNT, readOnly: true },
        ],
      },
      volumes: [
        { name: 'tls', secret: { secretName: N.tlsSecret } },
        {
          name: 'trust-anchors',
          configMap: { name: config.trustAnchorsConfigMap, optional: true },
        },
      ],
    }),
    `the admission webhooks: ${statelessReplicas(config.replicas)} serving /inject and /validate over HTTPS`,
    [
      {
        path: ['spec', 'template', 'spec', 'volumes', 1],
        text: 'optional: without the anchors the injector still injects, and leaves out the meshid.io/trust-root-sha256 annotation',
      },
    ],
  );
}

/** A webhook configuration's metadata: cert-manager's CA injector fills its caBundle. */
function configurationMeta(c: Context, name: string) {
  const annotations = { 'cert-manager.io/inject-ca-from': `${c.ns}/${N.certificate}` };
  return { name, labels: c.labels, annotations };
}

/** One webhook: the Service path it calls, what it matches, and what it does when down. */
function webhook<M extends object>(
  c: Context,
  name: string,
  path: string,
  match: M,
  failurePolicy: 'Fail' | 'Ignore',
) {
  return {
    name,
    clientConfig: { service: { name: N.service, namespace: c.ns, path, port: 443 } },
    ...match,
    sideEffects: 'None' as const,
    admissionReviewVersions: ['v1'],
    failurePolicy,
    timeoutSeconds: c.config.webhookTimeout / 1000,
  };
}

function rule(
  apiGroup: string,
  resource: string,
  ...operations: NonNullable<IRuleWithOperations['operations']>
): IRuleWithOperations {
  const versions = { apiGroups: [apiGroup], apiVersions: ['v1'], resources: [resource] };
  return { operations, ...versions, scope: 'Namespaced' };
}

/** The note above a configuration's failurePolicy: what its outage does. */
function failureNote(text: string): ManifestObject['notes'] {
  return [{ path: ['webhooks', 0, 'failurePolicy'], text }];
}

function injectorConfiguration(c: Context): ManifestObject {
  const policy = c.config.injectorFailurePolicy;
  const namespaceSelector = {
    matchExpressions: [
      { key: 'kubernetes.io/metadata.name', operator: 'NotIn', values: [c.ns, 'kube-system'] },
      { key: ADMISSION_WEBHOOKS_LABEL, operator: 'NotIn', values: ['disabled'] },
    ],
  };
  const match = { rules: [rule('', 'pods', 'CREATE')], namespaceSelector };
  return doc(
    new MutatingWebhookConfiguration({
      metadata: configurationMeta(c, N.injectorConfiguration),
      webhooks: [
        {
          ...webhook(c, N.injectorWebhook, '/inject', match, policy),
          reinvocationPolicy: 'Never',
        },
      ],
    }),
    `the proxy injector; cert-manager's CA injector fills caBundle from ${c.ns}/${N.certificate}`,
    failureNote(
      policy === 'Ignore'
        ? 'Ignore: while the injector is down, opted-in pods start without the proxy (no outage, but unmeshed); Fail would refuse them'
        : 'Fail: while the injector is down, pods in every namespace it matches are refused; Ignore would let them start unmeshed',
    ),
  );
}

function guardConfiguration(c: Context): ManifestObject {
  const policy = c.config.trustGuardFailurePolicy;
  const match = {
    rules: [
      rule('', 'configmaps', 'CREATE', 'UPDATE'),
      rule('cert-manager.io', 'certificates', 'CREATE', 'UPDATE'),
    ],
    namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': c.ns } },
    // Only the anchors ConfigMap is sent, not every ConfigMap of the namespace (CEL match
    // conditions, Kubernetes 1.30+; older API servers ignore them and the guard filters).
    matchConditions: [
      {
        name: 'anchors-config-map-or-certificate',
        expression: `request.kind.kind != 'ConfigMap' || object.metadata.name == '${c.config.trustAnchorsConfigMap}'`,
      },
    ],
  };
  return doc(
    new ValidatingWebhookConfiguration({
      metadata: configurationMeta(c, N.guardConfiguration),
      webhooks: [webhook(c, N.guardWebhook, '/validate', match, policy)],
    }),
    `the trust guard: anchors ConfigMap and issuer Certificate edits in ${c.ns} only`,
    failureNote(
      policy === 'Fail'
        ? `Fail: while the guard is down, ConfigMaps and Certificates in ${c.ns} cannot be written (the seat belt cannot be skipped); Ignore would let them through unchecked`
        : `Ignore: while the guard is down, trust edits in ${c.ns} go through unchecked`,
    ),
  );
}
