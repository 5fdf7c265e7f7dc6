/**
 * The trust sync controller's part of an install (`meshid install --cert-manager` without
 * `--trust-manager`): `meshid trust sync` as a Deployment with its own ServiceAccount, a Role
 * limited to the control-plane namespace, and a ClusterRole for the anchors' copies in meshed
 * namespaces only, so that the CA itself never gets write access to the anchors or any access
 * to the root's key. docs/rotation.md describes what it does.
 */
import { ServiceAccount } from 'kubernetes-models/v1';
import { IN_CLUSTER, formatDuration } from '../../core/index.js';
import type { InstallConfig } from '../../core/index.js';
import { clusterTrustBundleName } from '../../trust-bundle/index.js';
import type { Permission } from './rbac.js';
import { doc, flag, grant, workloadDeployment } from './workload.js';
import type { ManifestObject } from './workload.js';

/** The sync controller's object names (its ClusterRole and binding: `<role>-<namespace>`). */
export const TRUST_SYNC_NAMES = Object.freeze({
  serviceAccount: 'meshid-trust',
  role: 'meshid-trust',
  deployment: 'meshid-trust',
});

function rules(config: InstallConfig): Permission[] {
  return [
    {
      rule: { apiGroups: [''], resources: ['pods'], verbs: ['list'] },
      reason:
        "find the CA's replicas, to check each serves from the new issuer before the drain starts",
    },
    {
      rule: {
        apiGroups: [''],
        resources: ['configmaps'],
        verbs: ['get', 'update'],
        resourceNames: [config.trustAnchorsConfigMap],
      },
      reason:
        'read and write the anchors bundle and the rotation state (annotation meshid.io/rotation), conditionally on its resourceVersion',
    },
    {
      rule: { apiGroups: [''], resources: ['configmaps'], verbs: ['create'] },
      reason: 'create the anchors ConfigMap the first time (create cannot be limited by name)',
    },
    {
      rule: { apiGroups: [''], resources: ['secrets'], verbs: ['get', 'delete'] },
      reason:
        "read the root and issuer certificates cert-manager writes; delete a retired root's Secret (its key) at the end of a rotation. Rotated roots get new names, so this is not limited by name",
    },
    {
      rule: {
        apiGroups: ['cert-manager.io'],
        resources: ['certificates', 'issuers'],
        verbs: ['get', 'create', 'update', 'delete'],
      },
      reason:
        'a rotation creates the new root Certificate and CA Issuer, points the issuer Certificate at it, and deletes the old ones',
    },
    {
      rule: {
        apiGroups: ['cert-manager.io'],
        resources: ['certificates/status'],
        verbs: ['update'],
      },
      reason:
        'ask cert-manager to re-issue the issuer after an in-place root renewal (the Issuing condition, as cmctl renew)',
    },
  ];
}

/**
 * The cluster-wide rules: the copies of the anchors ConfigMap in every namespace that opts into
 * injection (docs/install.md), and nothing else.
 */
function clusterRules(config: InstallConfig): Permission[] {
  return [
    {
      rule: { apiGroups: [''], resources: ['namespaces'], verbs: ['get', 'list', 'watch'] },
      reason:
        'find the namespaces that opt into injection (the meshid.io/inject annotation) and watch them opt in and out',
    },
    {
      rule: {
        apiGroups: [''],
        resources: ['configmaps'],
        verbs: ['get', 'list', 'watch', 'update', 'delete'],
        resourceNames: [config.trustAnchorsConfigMap],
      },
      reason:
        'keep the copy of the anchors in each meshed namespace (pods mount their own namespace’s): list and watch with fieldSelector=metadata.name, which is how resourceNames apply to them; update and delete only copies it labelled as its own',
    },
    {
      rule: { apiGroups: [''], resources: ['pods'], verbs: ['list', 'watch'] },
      reason:
        'find the namespaces where a pod opted into injection by itself (the injector labels it linkerd.io/control-plane-ns), which need a copy too; it lists with that labelSelector only',
    },
    {
      rule: { apiGroups: [''], resources: ['configmaps'], verbs: ['create'] },
      reason: 'create the copy in a namespace that opts in (create cannot be limited by name)',
    },
    {
      rule: {
        apiGroups: ['certificates.k8s.io'],
        resources: ['clustertrustbundles'],
        verbs: ['get', 'update'],
        resourceNames: (['live', 'canary'] as const).map((r) =>
          clusterTrustBundleName(config.podCertificateSigner, r),
        ),
      },
      reason:
        "publish the anchors as the signer's live and canary ClusterTrustBundles (docs/cluster-trust-bundles.md): read and update those two only",
    },
    {
      rule: {
        apiGroups: ['certificates.k8s.io'],
        resources: ['clustertrustbundles'],
        verbs: ['list', 'create'],
      },
      reason:
        'create the two bundles (create cannot be limited by name); list to learn whether the API serves ClusterTrustBundles at all (clusterTrustBundles: auto)',
    },
    {
      rule: {
        apiGroups: ['certificates.k8s.io'],
        resources: ['signers'],
        verbs: ['attest'],
        resourceNames: [config.podCertificateSigner],
      },
      reason:
        "attest for meshid's signer: the API server's ClusterTrustBundleAttest admission requires it to write a bundle that names the signer",
    },
  ];
}

/**
 * The `meshid trust sync` arguments of the container.
 */
function trustSyncArgs(config: InstallConfig): string[] {
  return [
    'trust',
    'sync',
    flag('kubeconfig', IN_CLUSTER),
    flag('namespace', config.controlPlaneNamespace),
    flag('trust-domain', config.trustDomain),
    flag('control-plane-namespace', config.controlPlaneNamespace),
    flag('trust-anchors-config-map', config.trustAnchorsConfigMap),
    flag('trust-anchors-key', config.trustAnchorsKey),
    flag('issuer-secret', config.issuerSecret),
    flag('issuer-certificate', config.issuerSecret),
    flag('root-certificate', config.certManagerIssuer),
    flag('cert-manager-issuer', config.certManagerIssuer),
    flag('cert-lifetime', formatDuration(config.certLifetime)),
    flag('clock-skew', formatDuration(config.clockSkew)),
    flag('pod-certificate-signer', config.podCertificateSigner),
  ];
}

/**
 * The ServiceAccount, Role, RoleBinding and Deployment of the sync controller.
 */
export function trustSyncObjects(
  config: InstallConfig,
  inputs: { runAsUser: number; labels: Record<string, string> },
): ManifestObject[] {
  const ns = config.controlPlaneNamespace;
  const selector = {
    'app.kubernetes.io/name': 'meshid',
    'app.kubernetes.io/component': 'trust-sync',
  };
  const labels = { ...inputs.labels, ...selector };
  const N = TRUST_SYNC_NAMES;
  const meta = (name: string) => ({ name, namespace: ns, labels });
  const subject = { name: N.serviceAccount, namespace: ns, who: 'its ServiceAccount' };
  return [
    doc(
      new ServiceAccount({ metadata: meta(N.serviceAccount) }),
      'the trust sync controller runs as this ServiceAccount, apart from the CA',
    ),
    ...grant(
      'Role',
      meta(N.role),
      rules(config),
      `what the sync controller may do, in ${ns} only`,
      subject,
    ),
    // Cluster-scoped names carry the namespace, so that two installs do not collide.
    ...grant(
      'ClusterRole',
      { name: `${N.role}-${ns}`, labels },
      clusterRules(config),
      'what the sync controller may do in other namespaces: the anchors copies only',
      subject,
    ),
    doc(
      workloadDeployment({
        metadata: meta(N.deployment),
        selector,
        replicas: 1,
        noInject: 'linkerd.io/inject',
        serviceAccount: N.serviceAccount,
        runAsUser: inputs.runAsUser,
        image: config.image,
        container: {
          name: 'trust-sync',
          args: trustSyncArgs(config),
          resources: { requests: { cpu: '10m', memory: '64Mi' }, limits: { memory: '192Mi' } },
        },
      }),
      "meshid trust sync: keeps the anchors ConfigMap equal to the current root (and the live issuer's), drives rotations; safe with more replicas (every write is conditional)",
    ),
  ];
}
