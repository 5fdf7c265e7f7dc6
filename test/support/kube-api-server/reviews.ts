/**
 * The non-stored "create-only" APIs: TokenRequest, TokenReview, SelfSubjectReview,
 * SelfSubjectAccessReview, SubjectAccessReview and LocalSubjectAccessReview.
 */
import type { ServerContext } from './context.js';
import { timestamp } from './objects.js';
import { badRequest, conflict, invalid, notFound } from './status.js';
import { nonResourceAttributes } from './routing.js';
import { isObject } from './types.js';
import type { JsonObject, RequestAttributes, UserInfo } from './types.js';

function checkTypeMeta(body: unknown, apiVersion: string, kind: string): JsonObject {
  if (!isObject(body))
    throw badRequest(
      `${kind} in version "${apiVersion.split('/')[1] ?? apiVersion}" cannot be handled as a ${kind}: the body is not a JSON object`,
    );
  if (body['apiVersion'] !== undefined && body['apiVersion'] !== apiVersion)
    throw badRequest(
      `the API version in the data (${String(body['apiVersion'])}) does not match the expected API version (${apiVersion})`,
    );
  if (body['kind'] !== undefined && body['kind'] !== kind)
    throw badRequest(
      `the kind in the data (${String(body['kind'])}) does not match the expected kind (${kind})`,
    );
  return body;
}

function strings(v: unknown): string[] {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
}

/** POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token */
export async function tokenRequest(
  ctx: ServerContext,
  namespace: string,
  name: string,
  body: unknown,
): Promise<JsonObject> {
  const req = checkTypeMeta(body, 'authentication.k8s.io/v1', 'TokenRequest');
  const spec = isObject(req['spec']) ? req['spec'] : {};
  const saType = ctx.registry.byPlural('', 'v1', 'serviceaccounts')!;
  const sa = ctx.store.get(saType, namespace, name);
  if (sa === undefined) throw notFound(saType, name);
  const trKind = { group: 'authentication.k8s.io', kind: 'TokenRequest' };
  const expirationSeconds =
    spec['expirationSeconds'] === undefined ? 3600 : Number(spec['expirationSeconds']);
  const min = ctx.minTokenExpirationSeconds;
  if (!Number.isInteger(expirationSeconds) || expirationSeconds < min)
    throw invalid(trKind, name, [
      {
        type: 'FieldValueInvalid',
        field: 'spec.expirationSeconds',
        value: expirationSeconds,
        detail:
          min === 600
            ? 'may not specify a duration less than 10 minutes'
            : `may not specify a duration less than ${min} seconds`,
      },
    ]);
  if (expirationSeconds > 2 ** 32)
    throw invalid(trKind, name, [
      {
        type: 'FieldValueInvalid',
        field: 'spec.expirationSeconds',
        value: expirationSeconds,
        detail: 'may not specify a duration larger than 2^32 seconds',
      },
    ]);
  let audiences = strings(spec['audiences']);
  if (audiences.length === 0) audiences = [...ctx.authn.apiAudiences];
  let pod: { name: string; uid: string } | undefined;
  const ref = spec['boundObjectRef'];
  if (isObject(ref)) {
    const kind = String(ref['kind'] ?? '');
    const refName = String(ref['name'] ?? '');
    const refUid = String(ref['uid'] ?? '');
    if (kind === 'Pod') {
      const podType = ctx.registry.byPlural('', 'v1', 'pods')!;
      const p = ctx.store.get(podType, namespace, refName);
      if (p === undefined) throw notFound(podType, refName);
      if (refUid !== '' && refUid !== p.metadata.uid)
        throw conflict(
          { group: '', plural: 'Pod' },
          refName,
          `the UID in the bound object reference (${refUid}) does not match the UID in record. The object might have been deleted and then recreated`,
        );
      const podSa =
        ((p['spec'] as JsonObject | undefined)?.['serviceAccountName'] as string | undefined) ??
        'default';
      if (podSa !== name)
        throw badRequest(
          `cannot bind token for serviceaccount "${name}" to pod running with different serviceaccount name.`,
        );
      pod = { name: refName, uid: p.metadata.uid! };
    } else {
      throw badRequest(`cannot bind token to object of type ${kind}`);
    }
  }
  const { token, claims } = await ctx.tokens.mint({
    namespace,
    serviceAccount: { name, uid: sa.metadata.uid! },
    pod,
    audiences,
    expirationSeconds,
  });
  const outSpec: JsonObject = { audiences, expirationSeconds };
  if (isObject(ref)) outSpec['boundObjectRef'] = ref;
  return {
    kind: 'TokenRequest',
    apiVersion: 'authentication.k8s.io/v1',
    metadata: { name, namespace, creationTimestamp: timestamp(ctx.now()) },
    spec: outSpec,
    status: { token, expirationTimestamp: timestamp(claims.exp * 1000) },
  };
}

/** POST /apis/authentication.k8s.io/v1/tokenreviews */
export async function tokenReview(ctx: ServerContext, body: unknown): Promise<JsonObject> {
  const req = checkTypeMeta(body, 'authentication.k8s.io/v1', 'TokenReview');
  const spec = isObject(req['spec']) ? req['spec'] : {};
  const token = typeof spec['token'] === 'string' ? spec['token'] : '';
  if (token === '') throw badRequest('token is required for TokenReview in authentication');
  const audiences = strings(spec['audiences']);
  const r = await ctx.authn.authenticate(token, audiences);
  const out: JsonObject = {
    kind: 'TokenReview',
    apiVersion: 'authentication.k8s.io/v1',
    metadata: { creationTimestamp: null },
    spec,
  };
  if (r.ok) {
    const user: JsonObject = { username: r.user.username, groups: [...r.user.groups] };
    if (r.user.uid !== undefined) user['uid'] = r.user.uid;
    if (r.user.extra !== undefined && Object.keys(r.user.extra).length > 0)
      user['extra'] = r.user.extra;
    out['status'] = { authenticated: true, user, audiences: r.audiences };
  } else {
    // authenticated is omitempty on the wire: a refusal carries no `authenticated` field.
    out['status'] = { user: {}, error: r.error };
  }
  return out;
}

/** POST /apis/authentication.k8s.io/v1/selfsubjectreviews: who am I. */
export function selfSubjectReview(user: UserInfo): JsonObject {
  const info: JsonObject = { username: user.username, groups: [...user.groups] };
  if (user.uid !== undefined) info['uid'] = user.uid;
  if (user.extra !== undefined && Object.keys(user.extra).length > 0) info['extra'] = user.extra;
  return {
    kind: 'SelfSubjectReview',
    apiVersion: 'authentication.k8s.io/v1',
    metadata: { creationTimestamp: null },
    status: { userInfo: info },
  };
}

function attributesOf(spec: JsonObject, forceNamespace?: string): RequestAttributes {
  const ra = spec['resourceAttributes'];
  const nra = spec['nonResourceAttributes'];
  if (isObject(ra)) {
    return {
      verb: String(ra['verb'] ?? ''),
      resourceRequest: true,
      apiGroup: String(ra['group'] ?? ''),
      resource: String(ra['resource'] ?? ''),
      subresource: String(ra['subresource'] ?? ''),
      namespace: forceNamespace ?? String(ra['namespace'] ?? ''),
      name: String(ra['name'] ?? ''),
      path: '',
    };
  }
  if (isObject(nra)) {
    return nonResourceAttributes(String(nra['verb'] ?? ''), String(nra['path'] ?? ''));
  }
  throw invalid({ group: 'authorization.k8s.io', kind: 'SubjectAccessReview' }, '', [
    {
      type: 'FieldValueRequired',
      field: 'spec.resourceAttributes',
      detail: 'exactly one of nonResourceAttributes or resourceAttributes must be specified',
    },
  ]);
}

function decision(ctx: ServerContext, user: UserInfo, attrs: RequestAttributes): JsonObject {
  const d = ctx.authz.authorize(user, attrs);
  const status: JsonObject = { allowed: d.allowed };
  if (d.reason !== '') status['reason'] = d.reason;
  return status;
}

/** SelfSubjectAccessReview: the caller's own access, decided by the same function as requests. */
export function selfSubjectAccessReview(
  ctx: ServerContext,
  user: UserInfo,
  body: unknown,
): JsonObject {
  const req = checkTypeMeta(body, 'authorization.k8s.io/v1', 'SelfSubjectAccessReview');
  const spec = isObject(req['spec']) ? req['spec'] : {};
  return {
    kind: 'SelfSubjectAccessReview',
    apiVersion: 'authorization.k8s.io/v1',
    metadata: { creationTimestamp: null },
    spec,
    status: decision(ctx, user, attributesOf(spec)),
  };
}

/** SubjectAccessReview / LocalSubjectAccessReview: someone else's access. */
export function subjectAccessReview(
  ctx: ServerContext,
  body: unknown,
  localNamespace?: string,
): JsonObject {
  const kind = localNamespace === undefined ? 'SubjectAccessReview' : 'LocalSubjectAccessReview';
  const req = checkTypeMeta(body, 'authorization.k8s.io/v1', kind);
  const spec = isObject(req['spec']) ? req['spec'] : {};
  const username = String(spec['user'] ?? '');
  const groups = strings(spec['groups']);
  if (username === '' && groups.length === 0)
    throw invalid({ group: 'authorization.k8s.io', kind }, '', [
      {
        type: 'FieldValueInvalid',
        field: 'spec.user',
        value: '',
        detail: 'at least one of user or group must be specified',
      },
    ]);
  const known = ctx.authn.staticUserByName(username);
  const user: UserInfo = {
    username,
    groups,
    ...(known?.rules !== undefined ? { rules: known.rules } : {}),
  };
  const out: JsonObject = {
    kind,
    apiVersion: 'authorization.k8s.io/v1',
    metadata:
      localNamespace === undefined
        ? { creationTimestamp: null }
        : { namespace: localNamespace, creationTimestamp: null },
    spec,
    status: decision(ctx, user, attributesOf(spec, localNamespace)),
  };
  return out;
}
