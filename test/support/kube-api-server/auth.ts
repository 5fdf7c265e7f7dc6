/**
 * Authentication (static bearer tokens of test users, service-account JWTs) and authorization
 * (static allow-lists, then RBAC over the stored Role/ClusterRole/RoleBinding/ClusterRoleBinding
 * objects, plus the bootstrap policy every cluster has for discovery and public endpoints).
 */
import type { ResourceRegistry } from './resources.js';
import type { Store } from './store.js';
import type { KubernetesClaim, TokenAuthority } from './tokens.js';
import type { RequestAttributes, UserInfo, UserRule } from './types.js';

/** Paths served to anyone, even without credentials (public info and OIDC discovery). */
export const ANONYMOUS_PATHS = [
  '/healthz',
  '/livez',
  '/readyz',
  '/version',
  '/.well-known/openid-configuration',
  '/openid/v1/jwks',
];

export const ANONYMOUS: UserInfo = {
  username: 'system:anonymous',
  groups: ['system:unauthenticated'],
};

/** Result of authenticating a token for some audiences. */
export type AuthnResult =
  | { readonly ok: true; readonly user: UserInfo; readonly audiences: string[] }
  | { readonly ok: false; readonly error: string };

export class Authenticator {
  readonly #static = new Map<string, UserInfo>();

  constructor(
    private readonly tokens: TokenAuthority,
    private readonly store: Store,
    private readonly registry: ResourceRegistry,
    /** The API server's own audiences (`--api-audiences`), default the issuer. */
    readonly apiAudiences: readonly string[],
  ) {}

  addStaticUser(token: string, user: UserInfo): void {
    this.#static.set(token, user);
  }

  staticUserByName(username: string): UserInfo | undefined {
    for (const u of this.#static.values()) if (u.username === username) return u;
    return undefined;
  }

  /**
   * Authenticates a bearer token for `audiences` (default the API audiences). Static tokens are
   * audience-agnostic, so they are valid only for the API audiences, as the real server wraps them.
   */
  async authenticate(token: string, audiences?: readonly string[]): Promise<AuthnResult> {
    const wanted = audiences !== undefined && audiences.length > 0 ? audiences : this.apiAudiences;
    const st = this.#static.get(token);
    if (st !== undefined) {
      const matched = wanted.filter((a) => this.apiAudiences.includes(a));
      if (matched.length === 0)
        return {
          ok: false,
          error: `[invalid bearer token, token audiences ${JSON.stringify(this.apiAudiences)} is invalid for the target audiences ${JSON.stringify(wanted)}]`,
        };
      return {
        ok: true,
        user: { ...st, groups: withAuthenticated(st.groups) },
        audiences: matched,
      };
    }
    if (token.split('.').length !== 3)
      return { ok: false, error: '[invalid bearer token, token lookup failed]' };
    let verified;
    try {
      verified = await this.tokens.verify(token, wanted);
    } catch (e) {
      return { ok: false, error: `[invalid bearer token, ${(e as Error).message}]` };
    }
    const k = verified.claims['kubernetes.io'];
    if (k === undefined || typeof k.namespace !== 'string' || k.serviceaccount === undefined)
      return {
        ok: false,
        error: '[invalid bearer token, service account token claims are missing]',
      };
    const invalidated = this.#boundObjectsGone(k);
    if (invalidated !== undefined)
      return { ok: false, error: `[invalid bearer token, ${invalidated}]` };
    const extra: Record<string, string[]> = {};
    if (verified.claims.jti !== undefined)
      extra['authentication.kubernetes.io/credential-id'] = [`JTI=${verified.claims.jti}`];
    if (k.pod !== undefined) {
      extra['authentication.kubernetes.io/pod-name'] = [k.pod.name];
      extra['authentication.kubernetes.io/pod-uid'] = [k.pod.uid];
    }
    return {
      ok: true,
      user: {
        username: `system:serviceaccount:${k.namespace}:${k.serviceaccount.name}`,
        uid: k.serviceaccount.uid,
        groups: [
          'system:serviceaccounts',
          `system:serviceaccounts:${k.namespace}`,
          'system:authenticated',
        ],
        extra,
      },
      audiences: verified.audiences,
    };
  }

  /** The bound objects of a token must still exist with the same uid, as the apiserver checks. */
  #boundObjectsGone(k: KubernetesClaim): string | undefined {
    const sa = this.store.get(
      this.registry.byPlural('', 'v1', 'serviceaccounts')!,
      k.namespace,
      k.serviceaccount.name,
    );
    if (sa === undefined || sa.metadata.deletionTimestamp !== undefined)
      return 'service account token has been invalidated';
    if (sa.metadata.uid !== k.serviceaccount.uid)
      return 'service account token has been invalidated';
    if (k.pod !== undefined) {
      const pod = this.store.get(
        this.registry.byPlural('', 'v1', 'pods')!,
        k.namespace,
        k.pod.name,
      );
      if (
        pod === undefined ||
        pod.metadata.uid !== k.pod.uid ||
        pod.metadata.deletionTimestamp !== undefined
      )
        return 'service account token has been invalidated';
    }
    if (k.secret !== undefined) {
      const s = this.store.get(
        this.registry.byPlural('', 'v1', 'secrets')!,
        k.namespace,
        k.secret.name,
      );
      if (s === undefined || s.metadata.uid !== k.secret.uid)
        return 'service account token has been invalidated';
    }
    return undefined;
  }
}

function withAuthenticated(groups: readonly string[]): string[] {
  return groups.includes('system:authenticated')
    ? [...groups]
    : [...groups, 'system:authenticated'];
}

/** An authorization decision with the reason an SSAR reports. */
export interface Decision {
  readonly allowed: boolean;
  readonly reason: string;
}

function has(list: readonly string[] | undefined, v: string): boolean {
  return list !== undefined && (list.includes('*') || list.includes(v));
}

function resourceMatches(resources: readonly string[] | undefined, a: RequestAttributes): boolean {
  const list = resources ?? ['*'];
  const combined = a.subresource === '' ? a.resource : `${a.resource}/${a.subresource}`;
  return list.some(
    (r) => r === '*' || r === combined || (a.subresource !== '' && r === `*/${a.subresource}`),
  );
}

function nonResourceMatches(urls: readonly string[] | undefined, path: string): boolean {
  return (urls ?? []).some(
    (u) => u === '*' || u === path || (u.endsWith('*') && path.startsWith(u.slice(0, -1))),
  );
}

interface PolicyRule {
  verbs?: string[];
  apiGroups?: string[];
  resources?: string[];
  resourceNames?: string[];
  nonResourceURLs?: string[];
}

function ruleAllows(
  rule: PolicyRule & { namespaces?: readonly string[] },
  a: RequestAttributes,
): boolean {
  if (!has(rule.verbs, a.verb)) return false;
  if (!a.resourceRequest) return nonResourceMatches(rule.nonResourceURLs, a.path);
  if (
    rule.nonResourceURLs !== undefined &&
    rule.apiGroups === undefined &&
    rule.resources === undefined
  )
    return false;
  if (!has(rule.apiGroups ?? ['*'], a.apiGroup)) return false;
  if (!resourceMatches(rule.resources, a)) return false;
  if (
    rule.resourceNames !== undefined &&
    rule.resourceNames.length > 0 &&
    !rule.resourceNames.includes(a.name)
  )
    return false;
  if (rule.namespaces !== undefined && !rule.namespaces.includes(a.namespace)) return false;
  return true;
}

interface Subject {
  kind?: string;
  name?: string;
  namespace?: string;
}

function subjectMatches(s: Subject, user: UserInfo, bindingNamespace: string): boolean {
  switch (s.kind) {
    case 'User':
      return s.name === user.username;
    case 'Group':
      return s.name !== undefined && user.groups.includes(s.name);
    case 'ServiceAccount': {
      const ns = s.namespace !== undefined && s.namespace !== '' ? s.namespace : bindingNamespace;
      return user.username === `system:serviceaccount:${ns}:${s.name ?? ''}`;
    }
    default:
      return false;
  }
}

const DISCOVERY = ['/api', '/api/*', '/apis', '/apis/*'];

export class Authorizer {
  constructor(
    private readonly store: Store,
    private readonly registry: ResourceRegistry,
  ) {}

  /** The one decision function used for every request and for access reviews. */
  authorize(user: UserInfo, a: RequestAttributes): Decision {
    if (user.groups.includes('system:masters')) return { allowed: true, reason: '' };
    // Bootstrap policy present in every cluster.
    if (!a.resourceRequest && a.verb === 'get') {
      if (ANONYMOUS_PATHS.some((p) => a.path === p || a.path.startsWith(`${p}/`)))
        return {
          allowed: true,
          reason: 'RBAC: allowed by ClusterRoleBinding "system:public-info-viewer"',
        };
      if (user.groups.includes('system:authenticated') && nonResourceMatches(DISCOVERY, a.path))
        return { allowed: true, reason: 'RBAC: allowed by ClusterRoleBinding "system:discovery"' };
    }
    if (
      user.groups.includes('system:authenticated') &&
      a.resourceRequest &&
      a.verb === 'create' &&
      ((a.apiGroup === 'authorization.k8s.io' &&
        ['selfsubjectaccessreviews', 'selfsubjectrulesreviews'].includes(a.resource)) ||
        (a.apiGroup === 'authentication.k8s.io' && a.resource === 'selfsubjectreviews'))
    )
      return { allowed: true, reason: 'RBAC: allowed by ClusterRoleBinding "system:basic-user"' };
    for (const rule of user.rules ?? [])
      if (ruleAllows(rule as UserRule & PolicyRule, a))
        return { allowed: true, reason: 'allowed by the test user rules' };
    return this.#rbac(user, a);
  }

  #type(plural: string) {
    return this.registry.byPlural('rbac.authorization.k8s.io', 'v1', plural)!;
  }

  #rbac(user: UserInfo, a: RequestAttributes): Decision {
    const clusterRoles = this.#type('clusterroles');
    for (const b of this.store.list(this.#type('clusterrolebindings'), '')) {
      const ref = b['roleRef'] as { kind?: string; name?: string } | undefined;
      if (ref?.kind !== 'ClusterRole') continue;
      if (
        !((b['subjects'] as Subject[] | undefined) ?? []).some((s) => subjectMatches(s, user, ''))
      )
        continue;
      const role = this.store.get(clusterRoles, '', ref.name ?? '');
      if (role === undefined) continue;
      if (((role['rules'] as PolicyRule[] | undefined) ?? []).some((r) => ruleAllows(r, a)))
        return {
          allowed: true,
          reason: `RBAC: allowed by ClusterRoleBinding "${b.metadata.name ?? ''}" of ClusterRole "${ref.name ?? ''}" to ${describe(user)}`,
        };
    }
    if (a.namespace !== '') {
      for (const b of this.store.list(this.#type('rolebindings'), a.namespace)) {
        const ref = b['roleRef'] as { kind?: string; name?: string } | undefined;
        if (
          !((b['subjects'] as Subject[] | undefined) ?? []).some((s) =>
            subjectMatches(s, user, a.namespace),
          )
        )
          continue;
        const role =
          ref?.kind === 'ClusterRole'
            ? this.store.get(clusterRoles, '', ref.name ?? '')
            : ref?.kind === 'Role'
              ? this.store.get(this.#type('roles'), a.namespace, ref.name ?? '')
              : undefined;
        if (role === undefined) continue;
        if (((role['rules'] as PolicyRule[] | undefined) ?? []).some((r) => ruleAllows(r, a)))
          return {
            allowed: true,
            reason: `RBAC: allowed by RoleBinding "${b.metadata.name ?? ''}/${a.namespace}" of ${ref?.kind ?? ''} "${ref?.name ?? ''}" to ${describe(user)}`,
          };
      }
    }
    return { allowed: false, reason: '' };
  }
}

function describe(user: UserInfo): string {
  const m = /^system:serviceaccount:([^:]+):(.+)$/.exec(user.username);
  return m !== null ? `ServiceAccount "${m[2]}/${m[1]}"` : `User "${user.username}"`;
}

/** The real API's refusal text (responsewriters.forbiddenMessage). */
export function forbiddenMessage(user: UserInfo, a: RequestAttributes): string {
  if (!a.resourceRequest) return `User "${user.username}" cannot ${a.verb} path "${a.path}"`;
  const resource = a.subresource === '' ? a.resource : `${a.resource}/${a.subresource}`;
  if (a.namespace !== '')
    return `User "${user.username}" cannot ${a.verb} resource "${resource}" in API group "${a.apiGroup}" in the namespace "${a.namespace}"`;
  return `User "${user.username}" cannot ${a.verb} resource "${resource}" in API group "${a.apiGroup}" at the cluster scope`;
}
