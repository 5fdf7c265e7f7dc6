/**
 * The start-up check that the CA's credentials may do what it is about to do, so that a missing
 * RBAC rule is one clear fatal error naming the rule, not a stream of refused Certify calls.
 */
import { MeshidError } from '../../core/index.js';
import type { AccessQuery, KubeApi } from './api.js';

/** One permission the CA needs, and what happens without it. */
interface Requirement {
  readonly query: AccessQuery;
  /** Why the CA needs it (goes into the error). */
  readonly why: string;
  /** Without a required permission the CA refuses to start; without another it warns. */
  readonly required: boolean;
}

/**
 * The permissions for a configuration.
 *
 * @example
 * ```ts
 * caRequirements({ tokenReview: true, namespace: 'linkerd', issuerSecret: 'linkerd-identity-issuer',
 *   trustAnchorsConfigMap: 'linkerd-identity-trust-roots', events: true });
 * ```
 */
export function caRequirements(c: {
  tokenReview: boolean;
  namespace: string;
  issuerSecret?: string | undefined;
  trustAnchorsConfigMap?: string | undefined;
  events: boolean;
  /** The PodCertificateRequest signer's name and API version, when it runs. */
  podCertificates?: { signerName: string; version: string } | undefined;
}): Requirement[] {
  const reqs: Requirement[] = [];
  if (c.tokenReview) {
    reqs.push({
      query: { verb: 'create', group: 'authentication.k8s.io', resource: 'tokenreviews' },
      why: 'to authenticate proxies’ ServiceAccount tokens',
      required: true,
    });
  }
  for (const [resource, name] of [
    ['secrets', c.issuerSecret],
    ['configmaps', c.trustAnchorsConfigMap],
  ] as const) {
    if (name === undefined) continue;
    for (const verb of ['get', 'list', 'watch']) {
      reqs.push({
        query: { verb, group: '', resource, namespace: c.namespace, name },
        why: `to read ${resource === 'secrets' ? 'the issuer' : 'the trust anchors'} and follow changes`,
        required: true,
      });
    }
  }
  if (c.podCertificates !== undefined) {
    const why = 'to sign PodCertificateRequests (podCertificates)';
    for (const verb of ['list', 'watch'])
      reqs.push({
        query: { verb, group: 'certificates.k8s.io', resource: 'podcertificaterequests' },
        why,
        required: true,
      });
    reqs.push(
      {
        query: {
          verb: 'update',
          group: 'certificates.k8s.io',
          resource: 'podcertificaterequests/status',
        },
        why,
        required: true,
      },
      {
        query: {
          verb: 'sign',
          group: 'certificates.k8s.io',
          resource: 'signers',
          name: c.podCertificates.signerName,
        },
        why,
        required: true,
      },
      {
        query: { verb: 'get', group: '', resource: 'pods' },
        why: 'to check that a PodCertificateRequest names a real pod on its node',
        required: true,
      },
    );
    for (const verb of ['create', 'update', 'delete', 'list', 'watch'])
      reqs.push({
        query: {
          verb,
          group: 'coordination.k8s.io',
          resource: 'leases',
          namespace: c.namespace,
        },
        why: 'to share PodCertificateRequests with the other signer replicas (a Lease each)',
        required: true,
      });
  }
  if (c.events) {
    reqs.push({
      query: { verb: 'create', group: '', resource: 'events', namespace: c.namespace },
      why: 'to record Events',
      required: false,
    });
  }
  return reqs;
}

/**
 * Asks a SelfSubjectAccessReview for each requirement. Throws ERR_CONFIG_INVALID listing every
 * denied required permission; returns the denied optional ones for a warning.
 *
 * @example
 * ```ts
 * const missing = await checkPermissions(api, caRequirements(...)); // throws when a required one is denied
 * ```
 */
export async function checkPermissions(
  api: Pick<KubeApi, 'canI' | 'server'>,
  requirements: readonly Requirement[],
): Promise<Requirement[]> {
  const answers = await Promise.all(
    requirements.map(async (r) => {
      try {
        return { r, ...(await api.canI(r.query, AbortSignal.timeout(10_000))) };
      } catch (err) {
        throw new MeshidError(
          'ERR_CONFIG_INVALID',
          `cannot check the CA's permissions at ${api.server}: ${err instanceof Error ? err.message : String(err)}`,
          { cause: err },
        );
      }
    }),
  );
  const denied = answers.filter((a) => !a.allowed);
  const fatal = denied.filter((a) => a.r.required);
  if (fatal.length > 0) {
    const lines = fatal.map((a) => `  ${describe(a.r.query)}: needed ${a.r.why}`).join('\n');
    throw new MeshidError(
      'ERR_CONFIG_INVALID',
      `the CA's credentials lack permissions it needs (SelfSubjectAccessReview at ${api.server}); grant them, as the RBAC rules of "meshid install" do:\n${lines}`,
    );
  }
  return denied.map((a) => a.r);
}

/** `create tokenreviews.authentication.k8s.io` / `get secrets "x" in namespace "linkerd"`. */
export function describe(q: AccessQuery): string {
  const resource = q.group === '' ? q.resource : `${q.resource}.${q.group}`;
  return `${q.verb} ${resource}${q.name === undefined ? '' : ` "${q.name}"`}${q.namespace === undefined ? '' : ` in namespace "${q.namespace}"`}`;
}
