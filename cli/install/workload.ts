/**
 * The shapes every meshid control-plane workload in an install shares, written once so that the
 * CA, the destination service, the trust-sync controller and the webhooks cannot drift apart:
 * the document type the YAML printer takes, a ServiceAccount's RBAC with a reason above each rule,
 * the Deployment of a restricted pod, its probes, Service and PodDisruptionBudget.
 */
import { Deployment } from 'kubernetes-models/apps/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import {
  ClusterRole,
  ClusterRoleBinding,
  Role,
  RoleBinding,
} from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import { Service } from 'kubernetes-models/v1';
import type {
  IAffinity,
  IContainer,
  IPodSecurityContext,
  IPodSpec,
  IProbe,
  ISecurityContext,
  IVolume,
} from 'kubernetes-models/v1';
import type { Permission } from './rbac.js';

/** A kubernetes-models object: it checks itself against the API schema and turns into JSON. */
interface KubeModel {
  readonly apiVersion: string;
  readonly kind: string;
  validate(): void;
  toJSON(): unknown;
}

/** A comment above one node of a document, found by its path (keys and sequence indexes). */
export interface NodeComment {
  readonly path: readonly (string | number)[];
  readonly text: string;
}

/** One document of the rendered install. */
export interface ManifestObject {
  readonly object: KubeModel;
  /** Printed at the top of the document: what the object is for. */
  readonly comment: string;
  /** Printed above nodes inside the document: why a setting or permission is there. */
  readonly notes: readonly NodeComment[];
}

/** An object's metadata; cluster-scoped objects have no namespace. */
export interface Metadata {
  name: string;
  namespace?: string;
  labels: Record<string, string>;
}

/** A document with its comment and notes. */
export function doc(
  object: KubeModel,
  comment: string,
  notes: readonly NodeComment[] = [],
): ManifestObject {
  return { object, comment, notes };
}

/** A container argument, `--name=value`. */
export function flag(name: string, value: string | number): string {
  return `--${name}=${value}`;
}

/** `N stateless replica(s)`, for the Deployments' comments. */
export function statelessReplicas(n: number): string {
  return `${n} stateless ${n === 1 ? 'replica' : 'replicas'}`;
}

/**
 * The security settings every meshid control-plane pod runs with: the Kubernetes "restricted" Pod
 * Security Standard (non-root, no privilege escalation, all capabilities dropped, RuntimeDefault
 * seccomp) plus a read-only root filesystem.
 */
function restrictedPodSecurity(uid: number): IPodSecurityContext {
  return {
    runAsNonRoot: true,
    runAsUser: uid,
    runAsGroup: uid,
    seccompProfile: { type: 'RuntimeDefault' },
  };
}

function restrictedContainerSecurity(uid: number): ISecurityContext {
  return {
    ...restrictedPodSecurity(uid),
    readOnlyRootFilesystem: true,
    allowPrivilegeEscalation: false,
    privileged: false,
    capabilities: { drop: ['ALL'] },
  };
}

/**
 * A Role or ClusterRole whose rules carry their reasons as comments, and its binding to one
 * ServiceAccount (`who` says whose, in the binding's comment). Both objects share the metadata.
 */
export function grant(
  kind: 'Role' | 'ClusterRole',
  metadata: Metadata,
  permissions: readonly Permission[],
  comment: string,
  subject: { name: string; namespace: string; who: string },
): ManifestObject[] {
  const rules = permissions.map((p) => p.rule);
  const roleRef = { apiGroup: 'rbac.authorization.k8s.io', kind, name: metadata.name };
  const subjects = [{ kind: 'ServiceAccount', name: subject.name, namespace: subject.namespace }];
  return [
    doc(
      kind === 'Role' ? new Role({ metadata, rules }) : new ClusterRole({ metadata, rules }),
      comment,
      permissions.map((p, i) => ({ path: ['rules', i], text: p.reason })),
    ),
    doc(
      kind === 'Role'
        ? new RoleBinding({ metadata, roleRef, subjects })
        : new ClusterRoleBinding({ metadata, roleRef, subjects }),
      `grants the ${kind} ${metadata.name} to ${subject.who}`,
    ),
  ];
}

/** An HTTP(S) GET probe on a named port, with a 2 s timeout. */
export function probe(
  port: string,
  path: string,
  fields: Omit<IProbe, 'httpGet'>,
  scheme: 'HTTP' | 'HTTPS' = 'HTTP',
): IProbe {
  return { httpGet: { path, port, scheme }, timeoutSeconds: 2, ...fields };
}

/** The probes of a process with an admin port: a minute to start, then liveness and readiness. */
export function adminProbes(): Pick<
  IContainer,
  'startupProbe' | 'livenessProbe' | 'readinessProbe'
> {
  return {
    startupProbe: probe('admin', '/live', { periodSeconds: 2, failureThreshold: 30 }),
    livenessProbe: probe('admin', '/live', { periodSeconds: 10, failureThreshold: 3 }),
    readinessProbe: probe('admin', '/ready', { periodSeconds: 5, failureThreshold: 2 }),
  };
}

/** Replicas on different nodes when the scheduler can. */
export function spreadOverNodes(selector: Record<string, string>): IAffinity {
  return {
    podAntiAffinity: {
      preferredDuringSchedulingIgnoredDuringExecution: [
        {
          weight: 100,
          podAffinityTerm: {
            labelSelector: { matchLabels: selector },
            topologyKey: 'kubernetes.io/hostname',
          },
        },
      ],
    },
  };
}

/** A control-plane workload: one restricted container under its own ServiceAccount. */
interface Workload {
  readonly metadata: Metadata;
  readonly selector: Record<string, string>;
  readonly replicas: number;
  /** The annotation that keeps the mesh's injector off these pods (set to `disabled`). */
  readonly noInject: string;
  readonly serviceAccount: string;
  readonly runAsUser: number;
  readonly image: string;
  /** Pod fields between the security context and the containers. */
  readonly scheduling?: Pick<IPodSpec, 'affinity' | 'topologySpreadConstraints'>;
  readonly container: Omit<IContainer, 'image' | 'imagePullPolicy' | 'securityContext'> & {
    args: string[];
  };
  readonly volumes?: IVolume[];
}

/**
 * The Deployment of a workload: the ServiceAccount's token mounted (every workload calls the
 * API), no Service environment variables, the restricted security contexts.
 */
export function workloadDeployment(w: Workload): Deployment {
  const { name, args, volumeMounts, ...fields } = w.container;
  return new Deployment({
    metadata: w.metadata,
    spec: {
      replicas: w.replicas,
      selector: { matchLabels: w.selector },
      template: {
        metadata: { labels: w.metadata.labels, annotations: { [w.noInject]: 'disabled' } },
        spec: {
          serviceAccountName: w.serviceAccount,
          automountServiceAccountToken: true,
          enableServiceLinks: false,
          securityContext: restrictedPodSecurity(w.runAsUser),
          ...w.scheduling,
          containers: [
            {
              name,
              image: w.image,
              imagePullPolicy: 'IfNotPresent',
              args,
              ...fields,
              securityContext: restrictedContainerSecurity(w.runAsUser),
              ...(volumeMounts === undefined ? {} : { volumeMounts }),
            },
          ],
          ...(w.volumes === undefined ? {} : { volumes: w.volumes }),
        },
      },
    },
  });
}

/** A ClusterIP Service with one TCP port to the pods' port of the same name. */
export function clusterService(
  metadata: Metadata,
  selector: Record<string, string>,
  port: { name: string; port: number },
  headless = false,
): Service {
  return new Service({
    metadata,
    spec: {
      type: 'ClusterIP',
      ...(headless ? { clusterIP: 'None' } : {}),
      selector,
      ports: [{ name: port.name, port: port.port, targetPort: port.name, protocol: 'TCP' }],
    },
  });
}

/** Voluntary evictions (drains) take one replica at a time. */
export function oneAtATime(
  metadata: Metadata,
  selector: Record<string, string>,
): PodDisruptionBudget {
  return new PodDisruptionBudget({
    metadata,
    spec: { maxUnavailable: 1, selector: { matchLabels: selector } },
  });
}
