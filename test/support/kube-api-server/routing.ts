/**
 * Request routing: method and path mapped onto the real API's request attributes (verb, group,
 * resource, subresource, namespace, name), as kube-apiserver's RequestInfoFactory does.
 */
import type { ServerContext } from './context.js';
import type { ResourceType } from './resources.js';
import { methodNotAllowed, notFoundPath } from './status.js';
import type { RequestAttributes } from './types.js';

/** A parsed resource request. */
export interface ResourceRoute {
  readonly type: ResourceType;
  readonly namespace: string;
  readonly name: string;
  readonly subresource: string;
  readonly verb: string;
}

export type Route =
  | { readonly kind: 'resource'; readonly route: ResourceRoute; readonly attrs: RequestAttributes }
  | { readonly kind: 'nonResource'; readonly attrs: RequestAttributes };

export function truthy(v: string | null): boolean {
  return v === 'true' || v === '1';
}

/** The attributes of a request for a path outside the resource API (`/healthz`, `/version`…). */
export function nonResourceAttributes(verb: string, path: string): RequestAttributes {
  const none = { apiGroup: '', resource: '', subresource: '', namespace: '', name: '' };
  return { verb, resourceRequest: false, ...none, path };
}

function nonResource(verb: string, path: string): Route {
  return { kind: 'nonResource', attrs: nonResourceAttributes(verb, path) };
}

/** The name a field selector requires exactly (`metadata.name=x` or `metadata.name==x`), or ''. */
function selectedName(query: URLSearchParams): string {
  const terms = (query.get('fieldSelector') ?? '').split(',').map((t) => t.trim());
  for (const t of terms) {
    const m = /^metadata\.name==?(.+)$/.exec(t);
    if (m !== null) return m[1]!;
  }
  return '';
}

/** Maps method + path onto request attributes, as the real RequestInfoFactory does. */
export function route(
  ctx: ServerContext,
  method: string,
  path: string,
  query: URLSearchParams,
): Route {
  const parts = path
    .split('/')
    .filter((p) => p !== '')
    .map(decodeURIComponent);
  const httpVerb = method.toLowerCase();
  let group: string;
  let version: string;
  let rest: string[];
  if (parts[0] === 'api' && parts.length >= 3) {
    group = '';
    version = parts[1]!;
    rest = parts.slice(2);
  } else if (parts[0] === 'apis' && parts.length >= 4) {
    group = parts[1]!;
    version = parts[2]!;
    rest = parts.slice(3);
  } else {
    return nonResource(httpVerb === 'head' ? 'get' : httpVerb, path);
  }
  let legacyWatch = false;
  if (rest[0] === 'watch') {
    legacyWatch = true;
    rest = rest.slice(1);
  }
  let namespace = '';
  if (rest[0] === 'namespaces' && rest.length > 1) {
    namespace = rest[1]!;
    if (rest.length > 2 && !['status', 'finalize'].includes(rest[2]!)) rest = rest.slice(2);
  }
  const [plural, name = '', subresource = ''] = rest;
  if (plural === undefined || rest.length > 3) throw notFoundPath();
  const type = ctx.registry.byPlural(group, version, plural);
  if (type === undefined) throw notFoundPath();
  if (!type.namespaced && plural !== 'namespaces' && namespace !== '') throw notFoundPath();
  let verb: string;
  switch (method) {
    case 'GET':
    case 'HEAD':
      verb = legacyWatch || truthy(query.get('watch')) ? 'watch' : name === '' ? 'list' : 'get';
      break;
    case 'POST':
      verb = 'create';
      break;
    case 'PUT':
      verb = 'update';
      break;
    case 'PATCH':
      verb = 'patch';
      break;
    case 'DELETE':
      verb = name === '' ? 'deletecollection' : 'delete';
      break;
    default:
      throw methodNotAllowed();
  }
  const r: ResourceRoute = { type, namespace, name, subresource, verb };
  return {
    kind: 'resource',
    route: r,
    attrs: {
      verb,
      resourceRequest: true,
      apiGroup: group,
      resource: plural,
      subresource,
      namespace,
      // As the real RequestInfoFactory does: a list or watch whose field selector pins
      // metadata.name is authorized as a request for that name, so RBAC resourceNames apply.
      name: name === '' && (verb === 'list' || verb === 'watch') ? selectedName(query) : name,
      path,
    },
  };
}
