/**
 * The identity CA's permissions, each with the reason it exists. The reasons are printed as YAML
 * comments above the rules, so whoever reviews the install sees why every verb is there; the
 * same table is what the tests hold the rendered RBAC to.
 */
import type { IPolicyRule } from 'kubernetes-models/rbac.authorization.k8s.io/v1';

/** One RBAC rule and why the CA needs it. */
export interface Permission {
  readonly reason: string;
  readonly rule: IPolicyRule;
}

/** What the permissions depend on. */
interface PermissionInputs {
  readonly issuerSecret: string;
  readonly trustAnchorsConfigMap: string;
  readonly tokenValidator: 'tokenreview' | 'jwks';
  /** The CA signs PodCertificateRequests (docs/pod-certificates.md). */
  readonly podCertificates?: boolean;
  readonly podCertificateSigner?: string;
}

/**
 * The pod certificate signer's rules (KEP-4317): what a PodCertificateRequest signer needs and no
 * more. RBAC cannot limit list/watch by signer name; the signer asks for its own with a field
 * selector on spec.signerName.
 */
function podCertificatePermissions(signerName: string): Permission[] {
  return [
    {
      reason:
        'why: follow the PodCertificateRequests of every namespace (the signer lists and watches with fieldSelector=spec.signerName, which RBAC cannot express)',
      rule: {
        apiGroups: ['certificates.k8s.io'],
        resources: ['podcertificaterequests'],
        verbs: ['list', 'watch'],
      },
    },
    {
      reason:
        'why: answer a PodCertificateRequest (issue, deny or fail) through its status subresource only',
      rule: {
        apiGroups: ['certificates.k8s.io'],
        resources: ['podcertificaterequests/status'],
        verbs: ['update'],
      },
    },
    {
      reason: `why: the API server lets only a holder of "sign" on the signer name write a request's status; this signer name only`,
      rule: {
        apiGroups: ['certificates.k8s.io'],
        resources: ['signers'],
        resourceNames: [signerName],
        verbs: ['sign'],
      },
    },
    {
      reason:
        'why: check that a PodCertificateRequest names a real pod, with its UID and ServiceAccount, bound to the requesting node (get only)',
      rule: { apiGroups: [''], resources: ['pods'], verbs: ['get'] },
    },
  ];
}

/**
 * The signer replicas' Leases (identity-ca/podcert/replicas.ts), in the CA's namespace only.
 * Their names carry the pod name and a random suffix, and RBAC cannot limit create by name.
 */
const signerLeasePermission: Permission = {
  reason:
    'why: each pod certificate signer replica holds a Lease here (create, renew with update, delete when it stops or when one was left expired long ago) and follows the others (list, watch with a label selector) to share the PodCertificateRequests among the live replicas',
  rule: {
    apiGroups: ['coordination.k8s.io'],
    resources: ['leases'],
    verbs: ['create', 'update', 'delete', 'list', 'watch'],
  },
};

// The CA lists and watches its two inputs with `fieldSelector=metadata.name=<name>`. That is the
// only way Kubernetes applies `resourceNames` to list and watch, so the rules below can name the
// objects instead of granting every Secret in the namespace.
const BY_NAME =
  'list/watch are limited to this name because the CA lists with fieldSelector=metadata.name';

/**
 * Rules of the namespaced Role: the issuer Secret and the anchors ConfigMap, by name only.
 */
export function namespacedPermissions(inputs: PermissionInputs): Permission[] {
  return [
    ...(inputs.podCertificates === true ? [signerLeasePermission] : []),
    {
      reason: `why: load and hot-reload the issuer certificate and key the CA signs leaves with; ${BY_NAME}`,
      rule: {
        apiGroups: [''],
        resources: ['secrets'],
        resourceNames: [inputs.issuerSecret],
        verbs: ['get', 'list', 'watch'],
      },
    },
    {
      reason: `why: load and hot-reload the trust anchors the issuer must chain to; ${BY_NAME}`,
      rule: {
        apiGroups: [''],
        resources: ['configmaps'],
        resourceNames: [inputs.trustAnchorsConfigMap],
        verbs: ['get', 'list', 'watch'],
      },
    },
  ];
}

/**
 * Rules of the ClusterRole: TokenReview (with the tokenreview validator) and Events, which are
 * recorded in workload namespaces too and so cannot live in a Role.
 */
export function clusterPermissions(inputs: PermissionInputs): Permission[] {
  return [
    ...(inputs.tokenValidator === 'tokenreview'
      ? [
          {
            reason:
              'why: check the ServiceAccount token of every Certify request with a TokenReview (cluster-scoped, create only)',
            rule: {
              apiGroups: ['authentication.k8s.io'],
              resources: ['tokenreviews'],
              verbs: ['create'],
            },
          },
        ]
      : []),
    ...(inputs.podCertificates === true
      ? podCertificatePermissions(inputs.podCertificateSigner ?? 'meshid.io/workload-identity')
      : []),
    {
      // The CA writes core/v1 Events only (never events.k8s.io), and aggregates a repeat the way
      // kubectl shows it: a merge patch of the count on the Event it created. No get, list or
      // watch: it never reads Events.
      reason:
        'why: record Events on the issuer in this namespace and "leaf issued" Events on ServiceAccounts in workload namespaces, hence cluster-wide; patch counts a repeat on the one Event',
      rule: { apiGroups: [''], resources: ['events'], verbs: ['create', 'patch'] },
    },
  ];
}

/**
 * What the CA does with the API without a rule of its own, said in the ClusterRole's comment so
 * that nobody adds a rule for it.
 */
export function permissionsNotNeeded(tokenValidator: 'tokenreview' | 'jwks'): string[] {
  return [
    'no rule for the SelfSubjectAccessReview the CA makes at start-up: the default system:basic-user binding allows it to every authenticated user',
    ...(tokenValidator === 'jwks'
      ? [
          'no rule for the OIDC discovery document and JWKS (--jwks kubernetes): the default system:service-account-issuer-discovery binding allows them',
        ]
      : []),
  ];
}
