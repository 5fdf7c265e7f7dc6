/**
 * The table of resource types the test server serves. Adding a type (a new CRD, say) is one entry:
 * group, version, kind, plural, scope. Discovery, routing, RBAC names and Status wording all come
 * from this table.
 */
import type { KubeObject } from './types.js';

/** How `metadata.name` is validated, as the real API does per type. */
export type NameRule = 'dns1123-subdomain' | 'dns1123-label' | 'dns1035-label' | 'path-segment';

/** A resource type served by the test server. */
export interface ResourceType {
  /** API group, `''` for the core group. */
  readonly group: string;
  readonly version: string;
  readonly kind: string;
  /** The plural resource name used in URLs and RBAC (`configmaps`). */
  readonly plural: string;
  /** Lower-case singular (`configmap`); default the kind in lower case. */
  readonly singular?: string;
  readonly namespaced: boolean;
  /** Verbs advertised in discovery and accepted; default the eight storage verbs. */
  readonly verbs?: readonly string[];
  /** Subresources served: `status` (spec/status split), or a custom one handled by the server. */
  readonly subresources?: readonly string[];
  readonly shortNames?: readonly string[];
  /** Name validation; default `dns1123-subdomain`. */
  readonly nameRule?: NameRule;
  /** Whether metadata.generation is kept (1 on create, +1 when anything but metadata/status changes). */
  readonly generation?: boolean;
  /** Whether PUT of a missing object creates it (true for a few core types). */
  readonly allowCreateOnUpdate?: boolean;
  /** DELETE answers with the deleted object instead of a Success Status (pods, custom resources). */
  readonly deleteReturnsObject?: boolean;
  /** Field selector labels beyond metadata.name and metadata.namespace. */
  readonly fieldLabels?: readonly string[];
  /** Virtual types (reviews, TokenRequest) are never stored; only `create` is served. */
  readonly virtual?: boolean;
  /** A custom resource: list items carry apiVersion/kind (built-in lists omit them). */
  readonly custom?: boolean;
  /** Paths (dotted) of metav1.MicroTime fields, which the real API parses strictly. */
  readonly microTimeFields?: readonly string[];
  /** Type-specific validation on create (`old` undefined) and update; throws an ApiError. */
  readonly validate?: (t: ResourceType, obj: KubeObject, old: KubeObject | undefined) => void;
  /** A built-in validating admission plugin of this type (after the webhooks); throws an ApiError. */
  readonly admit?: (a: BuiltinAdmission) => void;
}

/** What a built-in admission plugin sees of a write. */
export interface BuiltinAdmission {
  readonly type: ResourceType;
  readonly object: KubeObject;
  readonly oldObject?: KubeObject | undefined;
  /** Whether the requesting user may do `verb` on `resource` named `name` (cluster scope, RBAC). */
  readonly can: (verb: string, group: string, resource: string, name: string) => boolean;
}

export const STORAGE_VERBS = [
  'create',
  'delete',
  'deletecollection',
  'get',
  'list',
  'patch',
  'update',
  'watch',
] as const;

const EVENT_FIELDS = [
  'involvedObject.kind',
  'involvedObject.namespace',
  'involvedObject.name',
  'involvedObject.uid',
  'involvedObject.apiVersion',
  'involvedObject.resourceVersion',
  'involvedObject.fieldPath',
  'reason',
  'reportingComponent',
  'source',
  'type',
];

/** The built-in table. Extra types can be passed to `startKubeApiServer({ resources })`. */
export const BUILTIN_RESOURCES: readonly ResourceType[] = [
  // core/v1
  {
    group: '',
    version: 'v1',
    kind: 'Namespace',
    plural: 'namespaces',
    namespaced: false,
    nameRule: 'dns1123-label',
    subresources: ['status'],
    shortNames: ['ns'],
    deleteReturnsObject: true,
    fieldLabels: ['status.phase'],
  },
  {
    group: '',
    version: 'v1',
    kind: 'Node',
    plural: 'nodes',
    namespaced: false,
    subresources: ['status'],
    shortNames: ['no'],
    deleteReturnsObject: true,
  },
  {
    group: '',
    version: 'v1',
    kind: 'ConfigMap',
    plural: 'configmaps',
    namespaced: true,
    shortNames: ['cm'],
  },
  {
    group: '',
    version: 'v1',
    kind: 'Secret',
    plural: 'secrets',
    namespaced: true,
    fieldLabels: ['type'],
  },
  {
    group: '',
    version: 'v1',
    kind: 'ServiceAccount',
    plural: 'serviceaccounts',
    namespaced: true,
    subresources: ['token'],
    shortNames: ['sa'],
  },
  {
    group: '',
    version: 'v1',
    kind: 'Pod',
    plural: 'pods',
    namespaced: true,
    subresources: ['status'],
    shortNames: ['po'],
    deleteReturnsObject: true,
    fieldLabels: [
      'spec.nodeName',
      'spec.serviceAccountName',
      'spec.restartPolicy',
      'spec.schedulerName',
      'status.phase',
      'status.podIP',
    ],
  },
  {
    group: '',
    version: 'v1',
    kind: 'Service',
    plural: 'services',
    namespaced: true,
    subresources: ['status'],
    shortNames: ['svc'],
    nameRule: 'dns1035-label',
  },
  {
    group: '',
    version: 'v1',
    kind: 'Event',
    plural: 'events',
    namespaced: true,
    shortNames: ['ev'],
    allowCreateOnUpdate: true,
    fieldLabels: EVENT_FIELDS,
    microTimeFields: ['eventTime', 'series.lastObservedTime'],
  },
  // events.k8s.io/v1
  {
    group: 'events.k8s.io',
    version: 'v1',
    kind: 'Event',
    plural: 'events',
    namespaced: true,
    shortNames: ['ev'],
    allowCreateOnUpdate: true,
    microTimeFields: ['eventTime', 'series.lastObservedTime'],
  },
  // apps/v1
  {
    group: 'apps',
    version: 'v1',
    kind: 'Deployment',
    plural: 'deployments',
    namespaced: true,
    subresources: ['status'],
    shortNames: ['deploy'],
    generation: true,
  },
  // policy/v1
  {
    group: 'policy',
    version: 'v1',
    kind: 'PodDisruptionBudget',
    plural: 'poddisruptionbudgets',
    namespaced: true,
    subresources: ['status'],
    shortNames: ['pdb'],
    generation: true,
  },
  // discovery.k8s.io/v1 (what the EndpointSlice controller writes; tests write them by hand)
  {
    group: 'discovery.k8s.io',
    version: 'v1',
    kind: 'EndpointSlice',
    plural: 'endpointslices',
    namespaced: true,
  },
  // coordination.k8s.io/v1 (leader election)
  {
    group: 'coordination.k8s.io',
    version: 'v1',
    kind: 'Lease',
    plural: 'leases',
    namespaced: true,
    allowCreateOnUpdate: true,
    microTimeFields: ['spec.acquireTime', 'spec.renewTime'],
  },
  // rbac.authorization.k8s.io/v1: names may contain ':' (system:auth-delegator)
  ...(['Role', 'RoleBinding', 'ClusterRole', 'ClusterRoleBinding'] as const).map(
    (kind): ResourceType => ({
      group: 'rbac.authorization.k8s.io',
      version: 'v1',
      kind,
      plural: `${kind.toLowerCase()}s`,
      namespaced: !kind.startsWith('Cluster'),
      nameRule: 'path-segment',
      allowCreateOnUpdate: true,
    }),
  ),
  // admissionregistration.k8s.io/v1
  ...(['MutatingWebhookConfiguration', 'ValidatingWebhookConfiguration'] as const).map(
    (kind): ResourceType => ({
      group: 'admissionregistration.k8s.io',
      version: 'v1',
      kind,
      plural: `${kind.toLowerCase()}s`,
      namespaced: false,
      generation: true,
    }),
  ),
  // cert-manager.io/v1 and trust.cert-manager.io/v1alpha1, as custom resources
  ...(
    [
      ['Certificate', 'certificates', true, ['cert', 'certs']],
      ['Issuer', 'issuers', true, []],
      ['ClusterIssuer', 'clusterissuers', false, []],
      ['CertificateRequest', 'certificaterequests', true, ['cr', 'crs']],
    ] as const
  ).map(([kind, plural, namespaced, shortNames]): ResourceType => ({
    group: 'cert-manager.io',
    version: 'v1',
    kind,
    plural,
    namespaced,
    shortNames,
    subresources: ['status'],
    generation: true,
    deleteReturnsObject: true,
    custom: true,
  })),
  {
    group: 'trust.cert-manager.io',
    version: 'v1alpha1',
    kind: 'Bundle',
    plural: 'bundles',
    namespaced: false,
    subresources: ['status'],
    generation: true,
    deleteReturnsObject: true,
    custom: true,
  },
  // Reviews and requests: never stored, create only.
  {
    group: 'authentication.k8s.io',
    version: 'v1',
    kind: 'TokenReview',
    plural: 'tokenreviews',
    namespaced: false,
    verbs: ['create'],
    virtual: true,
  },
  {
    group: 'authentication.k8s.io',
    version: 'v1',
    kind: 'SelfSubjectReview',
    plural: 'selfsubjectreviews',
    namespaced: false,
    verbs: ['create'],
    virtual: true,
  },
  {
    group: 'authorization.k8s.io',
    version: 'v1',
    kind: 'SelfSubjectAccessReview',
    plural: 'selfsubjectaccessreviews',
    namespaced: false,
    verbs: ['create'],
    virtual: true,
  },
  {
    group: 'authorization.k8s.io',
    version: 'v1',
    kind: 'SubjectAccessReview',
    plural: 'subjectaccessreviews',
    namespaced: false,
    verbs: ['create'],
    virtual: true,
  },
  {
    group: 'authorization.k8s.io',
    version: 'v1',
    kind: 'LocalSubjectAccessReview',
    plural: 'localsubjectaccessreviews',
    namespaced: true,
    verbs: ['create'],
    virtual: true,
  },
];

/** Lookup of the resource table by group/version/plural and group/kind. */
export class ResourceRegistry {
  readonly #types: ResourceType[] = [];

  constructor(types: readonly ResourceType[]) {
    for (const t of types) this.add(t);
  }

  /** Adds (or replaces) a type. */
  add(type: ResourceType): void {
    const i = this.#types.findIndex(
      (t) => t.group === type.group && t.version === type.version && t.plural === type.plural,
    );
    if (i >= 0) this.#types.splice(i, 1, type);
    else this.#types.push(type);
  }

  all(): readonly ResourceType[] {
    return this.#types;
  }

  byPlural(group: string, version: string, plural: string): ResourceType | undefined {
    return this.#types.find(
      (t) => t.group === group && t.version === version && t.plural === plural,
    );
  }

  byKind(group: string, kind: string): ResourceType | undefined {
    return this.#types.find((t) => t.group === group && t.kind === kind);
  }

  /** The type of a kind in one version (a kind served in several versions has one per version). */
  byKindVersion(group: string, version: string, kind: string): ResourceType | undefined {
    return this.#types.find((t) => t.group === group && t.version === version && t.kind === kind);
  }

  /** Group/version pairs in table order, the core group first. */
  groupVersions(): { group: string; versions: string[] }[] {
    const out: { group: string; versions: string[] }[] = [];
    for (const t of this.#types) {
      let g = out.find((x) => x.group === t.group);
      if (g === undefined) out.push((g = { group: t.group, versions: [] }));
      if (!g.versions.includes(t.version)) g.versions.push(t.version);
    }
    return out;
  }
}

/** `configmaps` for the core group, `deployments.apps` otherwise (the real API's wording). */
export function qualifiedResource(t: Pick<ResourceType, 'group' | 'plural'>): string {
  return t.group === '' ? t.plural : `${t.plural}.${t.group}`;
}

/** `ConfigMap` for the core group, `Deployment.apps` otherwise (used by Invalid). */
export function qualifiedKind(t: Pick<ResourceType, 'group' | 'kind'>): string {
  return t.group === '' ? t.kind : `${t.kind}.${t.group}`;
}

/** `v1` or `apps/v1`. */
export function apiVersionOf(t: Pick<ResourceType, 'group' | 'version'>): string {
  return t.group === '' ? t.version : `${t.group}/${t.version}`;
}
