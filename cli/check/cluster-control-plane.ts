/**
 * The control plane's checks of `meshid check --kubeconfig`: the issuer's cert-manager Certificate
 * (ready, renewing before expiry) and the CA's RBAC (SubjectAccessReviews for its ServiceAccount,
 * from what its Deployment's arguments say it needs).
 */
import { caRequirements, describeAccess } from '../../identity-ca/index.js';
import type { CheckConfig } from '../../core/index.js';
import { CLUSTER_NAMES } from './cluster-api.js';
import type { Cluster, Deployment, Read } from './cluster-api.js';
import type { CheckResult } from './model.js';
import { result } from './model.js';
import { mapLimit } from './probes.js';

/** The parts of a cert-manager Certificate the checks read. */
export interface CertManagerCertificate {
  readonly spec?: { readonly issuerRef?: { readonly name?: string; readonly kind?: string } };
  readonly status?: {
    readonly conditions?: readonly {
      type?: string;
      status?: string;
      reason?: string;
      message?: string;
    }[];
    readonly notAfter?: string;
    readonly renewalTime?: string;
  };
}

/** The issuer's cert-manager Certificate: Ready, and renewing before it expires. */
export function checkCertificate(
  c: Read<CertManagerCertificate>,
  now: number,
  ns: string,
): CheckResult[] {
  if (c instanceof Error) {
    return [
      result(
        'cert-manager-ready',
        'warn',
        `cannot read the issuer Certificate: ${c.message}`,
        'give the checking user "get certificates.cert-manager.io"',
      ),
    ];
  }
  if (c === undefined) {
    const text =
      'no cert-manager Certificate for the issuer: it is not managed by cert-manager (renew it yourself)';
    return [
      result('cert-manager-ready', 'ok', text),
      result('cert-manager-renewal', 'ok', 'not managed by cert-manager'),
    ];
  }
  const ready = c.status?.conditions?.find((x) => x.type === 'Ready');
  const issuerRef = `${c.spec?.issuerRef?.kind ?? 'Issuer'} ${c.spec?.issuerRef?.name ?? '?'}`;
  const out: CheckResult[] = [
    ready?.status === 'True'
      ? result(
          'cert-manager-ready',
          'ok',
          `Ready (${ready.reason ?? 'Ready'}), issued by ${issuerRef}`,
        )
      : result(
          'cert-manager-ready',
          'error',
          `not Ready${ready === undefined ? ' (no Ready condition yet)' : `: ${ready.reason ?? ''} ${ready.message ?? ''}`.trimEnd()}`,
          `"kubectl -n ${ns} describe certificate" and check ${issuerRef} (it must hold the trust anchor's key)`,
        ),
  ];
  const notAfter = c.status?.notAfter === undefined ? NaN : Date.parse(c.status.notAfter);
  const renewal = c.status?.renewalTime === undefined ? NaN : Date.parse(c.status.renewalTime);
  if (Number.isNaN(notAfter) || Number.isNaN(renewal)) {
    out.push(
      result(
        'cert-manager-renewal',
        'warn',
        'cert-manager reports no notAfter/renewalTime yet',
        `wait for cert-manager to issue it, or "kubectl -n ${ns} describe certificate"`,
      ),
    );
  } else if (renewal >= notAfter) {
    out.push(
      result(
        'cert-manager-renewal',
        'error',
        `renewal at ${new Date(renewal).toISOString()} is not before expiry at ${new Date(notAfter).toISOString()}`,
        'lower spec.renewBefore (or raise spec.duration) so cert-manager renews before the issuer expires',
      ),
    );
  } else if (renewal < now - 3_600_000) {
    out.push(
      result(
        'cert-manager-renewal',
        'error',
        `renewal was due at ${new Date(renewal).toISOString()} and has not happened`,
        `"kubectl -n ${ns} describe certificate" and the cert-manager logs say why`,
      ),
    );
  } else {
    out.push(
      result(
        'cert-manager-renewal',
        'ok',
        `renews at ${new Date(renewal).toISOString()}, before expiry at ${new Date(notAfter).toISOString()}`,
      ),
    );
  }
  return out;
}

/** A `--name=value` argument of the CA container, if the Deployment has it. */
export function deploymentArg(d: Read<Deployment>, name: string): string | undefined {
  if (d === undefined || d instanceof Error) return undefined;
  const containers = d.spec?.template?.spec?.containers ?? [];
  for (const c of containers) {
    for (const arg of c.args ?? [])
      if (arg.startsWith(`--${name}=`)) return arg.slice(name.length + 3);
  }
  return undefined;
}

/** SubjectAccessReviews for the CA's ServiceAccount: what its configuration needs. */
export async function checkRbac(
  api: Cluster,
  config: CheckConfig,
  deployment: Read<Deployment>,
): Promise<CheckResult> {
  const ns = config.namespace;
  const sa =
    deployment === undefined || deployment instanceof Error
      ? CLUSTER_NAMES.caServiceAccount
      : (deployment.spec?.template?.spec?.serviceAccountName ?? 'default');
  const requirements = caRequirements({
    tokenReview: deploymentArg(deployment, 'token-validator') !== 'jwks',
    namespace: ns,
    issuerSecret: deploymentArg(deployment, 'issuer-secret') ?? config.issuerSecret,
    trustAnchorsConfigMap:
      deploymentArg(deployment, 'trust-anchors-config-map') ?? config.trustAnchorsConfigMap,
    events: deploymentArg(deployment, 'events') !== 'false',
  });
  const user = `system:serviceaccount:${ns}:${sa}`;
  const answers = await mapLimit(requirements, 8, async (r) => ({
    r,
    a: await api.call(`SubjectAccessReview for ${user}`, () =>
      api.kube.create({
        apiVersion: 'authorization.k8s.io/v1',
        kind: 'SubjectAccessReview',
        metadata: { name: '' },
        spec: {
          user,
          groups: [
            'system:serviceaccounts',
            `system:serviceaccounts:${ns}`,
            'system:authenticated',
          ],
          resourceAttributes: {
            verb: r.query.verb,
            group: r.query.group,
            resource: r.query.resource,
            ...(r.query.namespace === undefined ? {} : { namespace: r.query.namespace }),
            ...(r.query.name === undefined ? {} : { name: r.query.name }),
          },
        },
      }),
    ),
  }));
  const failed = answers.find((x) => x.a instanceof Error);
  if (failed !== undefined) {
    return result(
      'ca-rbac',
      'warn',
      `cannot ask SubjectAccessReviews: ${(failed.a as Error).message}`,
      'run the check as a user who may create subjectaccessreviews.authorization.k8s.io',
    );
  }
  const denied = answers.filter(
    (x) => !(x.a as { status?: { allowed?: boolean } }).status?.allowed,
  );
  const required = denied.filter((x) => x.r.required);
  if (required.length > 0) {
    return result(
      'ca-rbac',
      'error',
      `${user} may not ${required.map((x) => describeAccess(x.r.query)).join('; ')} (needed ${required[0]!.r.why})`,
      'apply the RBAC of "meshid install" (ClusterRoleBinding to create tokenreviews, Role to read the issuer and anchors)',
    );
  }
  if (denied.length > 0) {
    return result(
      'ca-rbac',
      'warn',
      `${user} may not ${denied.map((x) => describeAccess(x.r.query)).join('; ')}: ${denied[0]!.r.why} will not work`,
      'apply the RBAC of "meshid install"',
    );
  }
  return result(
    'ca-rbac',
    'ok',
    `${user} may ${requirements.map((r) => describeAccess(r.query)).join(', ')}`,
  );
}
