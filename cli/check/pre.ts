/**
 * `meshid check --pre`: before an install, what `kubectl apply` of `meshid install`'s output
 * needs and would meet. The API server answers with these credentials; they may create what the
 * install creates (SelfSubjectAccessReviews); cert-manager's API is served; and what already runs
 * in the install's namespace: nothing, a meshid install (apply updates it), or Linkerd's control
 * plane (whose identity Deployment, Services and ServiceAccount have the names meshid's install
 * uses, so applying it there replaces Linkerd's identity service).
 */
import type { KubeClient, KubeResource } from '../../core/index.js';
import { KubeApiError } from '../../core/index.js';
import type { Progress } from './local.js';
import type { CheckResult } from './model.js';
import { result } from './model.js';

/** What the install creates, as SelfSubjectAccessReview queries (`namespace` for namespaced). */
const INSTALL_CREATES: readonly { group: string; resource: string; namespaced: boolean }[] = [
  { group: '', resource: 'namespaces', namespaced: false },
  { group: 'rbac.authorization.k8s.io', resource: 'clusterroles', namespaced: false },
  { group: 'rbac.authorization.k8s.io', resource: 'clusterrolebindings', namespaced: false },
  {
    group: 'admissionregistration.k8s.io',
    resource: 'mutatingwebhookconfigurations',
    namespaced: false,
  },
  {
    group: 'admissionregistration.k8s.io',
    resource: 'validatingwebhookconfigurations',
    namespaced: false,
  },
  { group: '', resource: 'serviceaccounts', namespaced: true },
  { group: '', resource: 'services', namespaced: true },
  { group: 'rbac.authorization.k8s.io', resource: 'roles', namespaced: true },
  { group: 'rbac.authorization.k8s.io', resource: 'rolebindings', namespaced: true },
  { group: 'apps', resource: 'deployments', namespaced: true },
  { group: 'policy', resource: 'poddisruptionbudgets', namespaced: true },
  { group: 'cert-manager.io', resource: 'issuers', namespaced: true },
  { group: 'cert-manager.io', resource: 'certificates', namespaced: true },
];

/** Linkerd's control-plane label on its Deployments (`identity`, `destination`, `proxy-injector`). */
const LINKERD_COMPONENT = 'linkerd.io/control-plane-component';

/** What runs in the install's namespace already. */
export type Existing =
  | { readonly kind: 'none'; readonly namespaceExists: boolean }
  | { readonly kind: 'meshid'; readonly version: string | undefined }
  | { readonly kind: 'linkerd'; readonly components: readonly string[] };

/**
 * Looks at the install's namespace: Linkerd's control-plane Deployments (by Linkerd's label), or
 * meshid's CA Deployment (by `app.kubernetes.io/part-of: meshid`).
 */
async function findExisting(
  kube: Pick<KubeClient, 'get' | 'list'>,
  namespace: string,
): Promise<Existing> {
  const ns = await kube.get('v1', 'Namespace', '', namespace);
  if (ns === undefined) return { kind: 'none', namespaceExists: false };
  const linkerd = await kube.list('apps/v1', 'Deployment', namespace, LINKERD_COMPONENT);
  if (linkerd.length > 0)
    return {
      kind: 'linkerd',
      components: linkerd.map((d: KubeResource) => d.metadata.name).sort(),
    };
  const meshid = await kube.list(
    'apps/v1',
    'Deployment',
    namespace,
    'app.kubernetes.io/part-of=meshid,app.kubernetes.io/component=identity',
  );
  if (meshid.length > 0)
    return { kind: 'meshid', version: meshid[0]!.metadata.labels?.['app.kubernetes.io/version'] };
  return { kind: 'none', namespaceExists: true };
}

/** One line on what applying the install does, given what is there (also `meshid install`'s). */
function describeExisting(existing: Existing, namespace: string): string {
  switch (existing.kind) {
    case 'none':
      return existing.namespaceExists
        ? `namespace ${namespace} exists and runs no Linkerd or meshid control plane: the install adds meshid there (and labels the namespace pod-security restricted)`
        : `namespace ${namespace} does not exist: the install creates it and installs beside nothing`;
    case 'meshid':
      return `meshid${existing.version === undefined ? '' : ` ${existing.version}`} is installed in namespace ${namespace}: kubectl apply updates it in place`;
    case 'linkerd':
      return `Linkerd's control plane runs in namespace ${namespace} (${existing.components.join(', ')}): the install's Deployment, Services and ServiceAccount linkerd-identity replace Linkerd's identity service`;
  }
}

const message = (err: unknown): string =>
  err instanceof KubeApiError
    ? `HTTP ${err.status}${err.reason === '' ? '' : ` ${err.reason}`}: ${err.message}`
    : err instanceof Error
      ? err.message
      : String(err);

/** Runs the checks before an install; resolves with their results. */
export async function checkPre(
  kube: Pick<KubeClient, 'get' | 'list' | 'canI' | 'server'>,
  namespace: string,
  context: string,
  progress: Progress,
): Promise<CheckResult[]> {
  progress('asking the API server');
  try {
    await kube.get('v1', 'Namespace', '', 'kube-system');
  } catch (err) {
    return [
      result(
        'pre-api',
        'error',
        `${kube.server} (context ${context}) does not answer: ${message(err)}`,
        'check the kubeconfig (kubectl version), or pick another context with --context',
      ),
    ];
  }
  const out: CheckResult[] = [
    result('pre-api', 'ok', `${kube.server} answers (context ${context})`),
  ];

  progress('asking what these credentials may create');
  const signal = AbortSignal.timeout(30_000);
  const denied: string[] = [];
  for (const q of INSTALL_CREATES) {
    const answer = await kube.canI(
      {
        verb: 'create',
        group: q.group,
        resource: q.resource,
        ...(q.namespaced ? { namespace } : {}),
      },
      signal,
    );
    if (!answer.allowed)
      denied.push(
        `${q.resource}${q.group === '' ? '' : `.${q.group}`}${q.namespaced ? ` in ${namespace}` : ''}`,
      );
  }
  out.push(
    denied.length === 0
      ? result(
          'pre-rbac',
          'ok',
          `may create all ${INSTALL_CREATES.length} kinds of object the install holds (namespace ${namespace} and cluster-wide)`,
        )
      : result(
          'pre-rbac',
          'error',
          `may not create ${denied.join(', ')}`,
          'apply the install with credentials that may (a cluster admin), or ask for these permissions',
        ),
  );

  progress('looking for cert-manager');
  try {
    await kube.list('cert-manager.io/v1', 'Certificate', namespace);
    out.push(
      result('pre-cert-manager', 'ok', 'cert-manager.io/v1 is served (Certificates, Issuers)'),
    );
  } catch (err) {
    out.push(
      result(
        'pre-cert-manager',
        'error',
        `cert-manager.io/v1 Certificates cannot be listed: ${message(err)}`,
        'install cert-manager with its CRDs first (https://cert-manager.io/docs/installation/); meshid install --cert-manager needs it',
      ),
    );
  }

  progress(`looking at namespace ${namespace}`);
  const existing = await findExisting(kube, namespace);
  const said = describeExisting(existing, namespace);
  out.push(
    existing.kind === 'linkerd'
      ? result(
          'pre-existing',
          'warn',
          said,
          'to replace only Linkerd identity, follow docs/linkerd-compatibility.md#replacing-linkerds-identity-service; to run beside it, install into another namespace (--control-plane-namespace)',
        )
      : result('pre-existing', 'ok', said),
  );
  return out;
}
