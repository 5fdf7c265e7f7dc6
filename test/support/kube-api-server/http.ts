/**
 * The HTTP side: request parsing into the real API's request attributes (verb, group, resource,
 * subresource, namespace, name), authentication, authorization on every request, routing to
 * discovery, OIDC, storage verbs, watches and reviews, and the request log.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { parse as parseYaml } from 'yaml';
import { ANONYMOUS, ANONYMOUS_PATHS, forbiddenMessage } from './auth.js';
import type { ServerContext } from './context.js';
import { faultStatus } from './faults.js';
import { fieldValidationOf } from './field-validation.js';
import type { FieldCheck } from './field-validation.js';
import { withoutNulls } from './nulls.js';
import { openApiV3 } from './openapi.js';
import { STORAGE_VERBS, apiVersionOf } from './resources.js';
import type { ResourceType } from './resources.js';
import {
  selfSubjectAccessReview,
  selfSubjectReview,
  subjectAccessReview,
  tokenRequest,
  tokenReview,
} from './reviews.js';
import { parseFieldSelector, parseLabelSelector } from './selectors.js';
import type { Selector } from './selectors.js';
import {
  ApiError,
  badRequest,
  forbidden,
  internalError,
  methodNotAllowed,
  notFoundPath,
  unauthorized,
} from './status.js';
import type { JsonObject, KubeObject, RequestAttributes, UserInfo } from './types.js';
import { serveWatch } from './watch.js';
import {
  admitPodCertificateRequest,
  isPodCertificateRequest,
  presentPodCertificateRequest,
} from './pod-certificates.js';

/** An object as the requested version shows it (versions of one kind share storage). */
function present(t: ResourceType, o: KubeObject): KubeObject {
  return isPodCertificateRequest(t) ? presentPodCertificateRequest(t, o) : o;
}

/**
 * A PodCertificateRequest status write needs `sign` on its signer (`signers`, the signer name
 * or `<domain>/*`), as a CertificateSigningRequest's does.
 */
function authorizeSigner(ctx: ServerContext, r: ResourceRoute, user: UserInfo): void {
  const stored = ctx.store.get(r.type, r.namespace, r.name);
  if (stored === undefined) return;
  const spec = (stored['spec'] ?? {}) as JsonObject;
  const signer = String(spec['signerName'] ?? '');
  const names = [signer, `${signer.split('/')[0] ?? ''}/*`];
  const allowed = names.some(
    (name) =>
      ctx.authz.authorize(user, {
        verb: 'sign',
        resourceRequest: true,
        apiGroup: 'certificates.k8s.io',
        resource: 'signers',
        subresource: '',
        namespace: '',
        name,
        path: '',
      }).allowed,
  );
  if (!allowed)
    throw forbidden(
      r.type,
      r.name,
      `user "${user.username}" is not permitted to "sign" for signer "${signer}"`,
    );
}

/** The Kubernetes version the server claims to be. */
export const SERVER_VERSION = {
  major: '1',
  minor: '31',
  gitVersion: 'v1.31.0+meshid-test',
  gitCommit: '0000000000000000000000000000000000000000',
  gitTreeState: 'clean',
  buildDate: '2024-08-13T00:00:00Z',
  goVersion: 'go1.22.5',
  compiler: 'gc',
  platform: 'linux/amd64',
};

const MAX_BODY = 3 * 1024 * 1024;

/** A parsed resource request. */
interface ResourceRoute {
  readonly type: ResourceType;
  readonly namespace: string;
  readonly name: string;
  readonly subresource: string;
  readonly verb: string;
}

type Route =
  | { readonly kind: 'resource'; readonly route: ResourceRoute; readonly attrs: RequestAttributes }
  | { readonly kind: 'nonResource'; readonly attrs: RequestAttributes };

function sendJson(
  res: ServerResponse,
  code: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(code, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

function sendText(res: ServerResponse, code: number, text: string): void {
  res.writeHead(code, {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': Buffer.byteLength(text),
  });
  res.end(text);
}

function truthy(v: string | null): boolean {
  return v === 'true' || v === '1';
}

function nonResource(verb: string, path: string): Route {
  return {
    kind: 'nonResource',
    attrs: {
      verb,
      resourceRequest: false,
      apiGroup: '',
      resource: '',
      subresource: '',
      namespace: '',
      name: '',
      path,
    },
  };
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
function route(ctx: ServerContext, method: string, path: string, query: URLSearchParams): Route {
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

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > MAX_BODY)
      throw new ApiError({
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Failure',
        message: 'Request entity too large: limit is 3145728',
        reason: 'RequestEntityTooLarge',
        code: 413,
      });
    chunks.push(c);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function decodeBody(text: string, contentType: string | undefined): unknown {
  if (text.trim() === '')
    throw badRequest("couldn't get version/kind; json parse error: unexpected end of JSON input");
  try {
    if ((contentType ?? '').includes('yaml'))
      return withoutNulls(parseYaml(text, { uniqueKeys: false }));
    return withoutNulls(JSON.parse(text));
  } catch (e) {
    throw badRequest(`couldn't get version/kind; json parse error: ${(e as Error).message}`);
  }
}

function bearer(req: IncomingMessage): string | undefined {
  const h = req.headers.authorization;
  if (h === undefined) return undefined;
  const m = /^Bearer\s+(.+)$/i.exec(h.trim());
  return m === null ? '' : m[1]!.trim();
}

/** Built-in lists omit the items' apiVersion/kind on the wire; custom resource lists keep them. */
function listBody(t: ResourceType, items: KubeObject[], metadata: JsonObject): JsonObject {
  return {
    kind: `${t.kind}List`,
    apiVersion: apiVersionOf(t),
    metadata,
    items:
      t.custom === true
        ? items
        : items.map((o) => {
            const rest: JsonObject = { ...o };
            delete rest['apiVersion'];
            delete rest['kind'];
            return rest;
          }),
  };
}

function discoveryResources(
  ctx: ServerContext,
  group: string,
  version: string,
): JsonObject | undefined {
  const types = ctx.registry.all().filter((t) => t.group === group && t.version === version);
  if (types.length === 0) return undefined;
  const resources: JsonObject[] = [];
  for (const t of types) {
    const main: JsonObject = {
      name: t.plural,
      singularName: t.singular ?? t.kind.toLowerCase(),
      namespaced: t.namespaced,
      kind: t.kind,
      verbs: [...(t.verbs ?? STORAGE_VERBS)],
    };
    if (t.shortNames !== undefined && t.shortNames.length > 0)
      main['shortNames'] = [...t.shortNames];
    resources.push(main);
    for (const sub of t.subresources ?? []) {
      if (sub === 'status')
        resources.push({
          name: `${t.plural}/status`,
          singularName: '',
          namespaced: t.namespaced,
          kind: t.kind,
          verbs: ['get', 'patch', 'update'],
        });
      if (sub === 'token')
        resources.push({
          name: `${t.plural}/token`,
          singularName: '',
          namespaced: t.namespaced,
          group: 'authentication.k8s.io',
          version: 'v1',
          kind: 'TokenRequest',
          verbs: ['create'],
        });
    }
  }
  return {
    kind: 'APIResourceList',
    apiVersion: 'v1',
    groupVersion: group === '' ? version : `${group}/${version}`,
    resources,
  };
}

function apiGroup(group: string, versions: string[]): JsonObject {
  const vs = versions.map((v) => ({ groupVersion: `${group}/${v}`, version: v }));
  return { name: group, versions: vs, preferredVersion: vs[0] };
}

async function serveNonResource(
  ctx: ServerContext,
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
): Promise<number> {
  if (req.method !== 'GET' && req.method !== 'HEAD') throw methodNotAllowed();
  if (
    ['/healthz', '/livez', '/readyz'].includes(path) ||
    /^\/(healthz|livez|readyz)\/.+/.test(path)
  ) {
    sendText(res, 200, 'ok');
    return 200;
  }
  if (path === '/version') {
    sendJson(res, 200, SERVER_VERSION);
    return 200;
  }
  if (path === '/.well-known/openid-configuration') {
    sendJson(res, 200, {
      issuer: ctx.tokens.issuer,
      jwks_uri: `${ctx.url()}/openid/v1/jwks`,
      response_types_supported: ['id_token'],
      subject_types_supported: ['public'],
      id_token_signing_alg_values_supported: ['RS256'],
    });
    return 200;
  }
  if (path === '/openid/v1/jwks') {
    sendJson(res, 200, await ctx.tokens.jwks(), { 'Content-Type': 'application/jwk-set+json' });
    return 200;
  }
  if (path === '/api') {
    const host = new URL(ctx.url()).host;
    sendJson(res, 200, {
      kind: 'APIVersions',
      versions: ['v1'],
      serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: host }],
    });
    return 200;
  }
  if (path === '/apis') {
    const groups = ctx.registry
      .groupVersions()
      .filter((g) => g.group !== '')
      .map((g) => apiGroup(g.group, g.versions));
    sendJson(res, 200, { kind: 'APIGroupList', apiVersion: 'v1', groups });
    return 200;
  }
  const openapi = openApiV3(ctx.registry, path);
  if (openapi !== undefined) {
    sendJson(res, 200, openapi);
    return 200;
  }
  const parts = path.split('/').filter((p) => p !== '');
  if (parts[0] === 'api' && parts.length === 2) {
    const list = discoveryResources(ctx, '', parts[1]!);
    if (list === undefined) throw notFoundPath();
    sendJson(res, 200, list);
    return 200;
  }
  if (parts[0] === 'apis' && parts.length === 2) {
    const g = ctx.registry.groupVersions().find((x) => x.group === parts[1]);
    if (g === undefined) throw notFoundPath();
    sendJson(res, 200, { kind: 'APIGroup', apiVersion: 'v1', ...apiGroup(g.group, g.versions) });
    return 200;
  }
  if (parts[0] === 'apis' && parts.length === 3) {
    const list = discoveryResources(ctx, parts[1]!, parts[2]!);
    if (list === undefined) throw notFoundPath();
    sendJson(res, 200, list);
    return 200;
  }
  throw notFoundPath();
}

function selectorFor(r: ResourceRoute, query: URLSearchParams): Selector {
  const labels = parseLabelSelector(query.get('labelSelector') ?? undefined);
  const fields = parseFieldSelector(
    query.get('fieldSelector') ?? undefined,
    r.type.fieldLabels ?? [],
  );
  if (r.name === '') return (o) => labels(o) && fields(o);
  return (o) => o.metadata.name === r.name && labels(o) && fields(o);
}

async function serveResource(
  ctx: ServerContext,
  req: IncomingMessage,
  res: ServerResponse,
  r: ResourceRoute,
  user: UserInfo,
  query: URLSearchParams,
): Promise<number> {
  const t = r.type;
  const dryRun = query.getAll('dryRun').includes('All');
  const verbs: readonly string[] = t.verbs ?? STORAGE_VERBS;

  if (t.virtual === true || r.subresource === 'token') {
    if (r.verb !== 'create') throw methodNotAllowed();
    const body = decodeBody(await readBody(req), req.headers['content-type']);
    let out: JsonObject;
    if (r.subresource === 'token' && t.plural === 'serviceaccounts')
      out = await tokenRequest(ctx, r.namespace, r.name, body);
    else if (r.subresource !== '' || r.name !== '') throw notFoundPath();
    else if (t.plural === 'tokenreviews') out = await tokenReview(ctx, body);
    else if (t.plural === 'selfsubjectreviews') out = selfSubjectReview(user);
    else if (t.plural === 'selfsubjectaccessreviews')
      out = selfSubjectAccessReview(ctx, user, body);
    else if (t.plural === 'subjectaccessreviews') out = subjectAccessReview(ctx, body);
    else if (t.plural === 'localsubjectaccessreviews')
      out = subjectAccessReview(ctx, body, r.namespace);
    else throw notFoundPath();
    sendJson(res, 201, out);
    return 201;
  }
  if (r.subresource !== '' && !(t.subresources ?? []).includes(r.subresource)) throw notFoundPath();
  if (r.subresource === 'status' && !['get', 'update', 'patch'].includes(r.verb))
    throw methodNotAllowed();
  if (r.subresource === '' && !verbs.includes(r.verb)) throw methodNotAllowed();
  const sub = r.subresource === 'status' ? 'status' : '';

  switch (r.verb) {
    case 'get': {
      sendJson(res, 200, present(t, ctx.objects.get(t, r.namespace, r.name)));
      return 200;
    }
    case 'list': {
      const limit = query.get('limit');
      const result = ctx.objects.list(t, r.namespace, {
        labelSelector: query.get('labelSelector') ?? undefined,
        fieldSelector: query.get('fieldSelector') ?? undefined,
        limit: limit === null ? undefined : Number(limit),
        continue: query.get('continue') ?? undefined,
      });
      const metadata: JsonObject = { resourceVersion: result.resourceVersion };
      if (result.continue !== undefined) metadata['continue'] = result.continue;
      if (result.remainingItemCount !== undefined)
        metadata['remainingItemCount'] = result.remainingItemCount;
      sendJson(
        res,
        200,
        listBody(
          t,
          result.items.map((o) => present(t, o)),
          metadata,
        ),
      );
      return 200;
    }
    case 'watch': {
      const selector = selectorFor(r, query);
      const timeout = query.get('timeoutSeconds');
      const sie = query.get('sendInitialEvents');
      const rv = query.get('resourceVersion');
      if (rv !== null && rv !== '' && !/^\d+$/.test(rv))
        throw badRequest(
          `invalid resource version: strconv.ParseUint: parsing "${rv}": invalid syntax`,
        );
      let stop: () => void = () => undefined;
      const ender = (): void => stop();
      ctx.watches.add(ender);
      stop = serveWatch(
        ctx.store,
        {
          type: t,
          namespace: t.namespaced ? r.namespace : '',
          selector,
          resourceVersion: query.get('resourceVersion') ?? undefined,
          timeoutSeconds: timeout === null ? undefined : Number(timeout),
          allowBookmarks: truthy(query.get('allowWatchBookmarks')),
          sendInitialEvents: sie === null ? undefined : truthy(sie),
          bookmarkIntervalMs: ctx.bookmarkIntervalMs,
        },
        res,
        () => ctx.watches.delete(ender),
      );
      return 200;
    }
    case 'create': {
      if (r.name !== '' || r.subresource !== '') throw methodNotAllowed();
      const text = await readBody(req);
      const body = decodeBody(text, req.headers['content-type']);
      const fields = fieldCheck(query, 'CreateOptions', req, text);
      if (isPodCertificateRequest(t))
        admitPodCertificateRequest(
          t,
          ctx.store,
          ctx.registry.byPlural('', 'v1', 'pods')!,
          ctx.registry.byPlural('', 'v1', 'nodes'),
          user,
          r.namespace,
          body,
        );
      if (ctx.admission.idleFor(t)) {
        const created = ctx.objects.create(t, r.namespace, body, { dryRun, fields });
        sendJson(res, 201, present(t, created), warningHeaders(fields.warnings));
        return 201;
      }
      // As kube-apiserver: decoding, defaulting and validation, then admission, then storage.
      const candidate = ctx.objects.create(t, r.namespace, body, { dryRun: true, fields });
      const admitted = await ctx.admission.admit({
        type: t,
        operation: 'CREATE',
        namespace: r.namespace,
        object: candidate,
        user,
        dryRun,
      });
      const created = ctx.objects.create(t, r.namespace, admitted.object, { dryRun });
      sendJson(res, 201, created, warningHeaders([...fields.warnings, ...admitted.warnings]));
      return 201;
    }
    case 'update': {
      const text = await readBody(req);
      const body = decodeBody(text, req.headers['content-type']);
      const fields = fieldCheck(query, 'UpdateOptions', req, text);
      if (sub === 'status' && isPodCertificateRequest(t)) authorizeSigner(ctx, r, user);
      const old = ctx.store.get(t, t.namespaced ? r.namespace : '', r.name);
      if (ctx.admission.idleFor(t) || sub !== '') {
        const updated = ctx.objects.update(t, r.namespace, r.name, body, sub, { dryRun, fields });
        const code = old !== undefined ? 200 : 201;
        sendJson(res, code, present(t, updated), warningHeaders(fields.warnings));
        return code;
      }
      const candidate = ctx.objects.update(t, r.namespace, r.name, body, sub, {
        dryRun: true,
        fields,
      });
      return writeAdmitted(ctx, res, t, r, user, dryRun, candidate, old, fields.warnings);
    }
    case 'patch': {
      const text = await readBody(req);
      if (sub === 'status' && isPodCertificateRequest(t)) authorizeSigner(ctx, r, user);
      const fields = fieldCheck(query, 'PatchOptions', req, text);
      const patchOptions = {
        fieldManager: query.get('fieldManager') ?? undefined,
        force: truthy(query.get('force')),
        fields,
      };
      const old = ctx.store.get(t, t.namespaced ? r.namespace : '', r.name);
      const { object, created } = ctx.objects.patch(
        t,
        r.namespace,
        r.name,
        req.headers['content-type'] ?? '',
        text,
        sub,
        { dryRun: dryRun || (!ctx.admission.idleFor(t) && sub === ''), ...patchOptions },
      );
      if (ctx.admission.idleFor(t) || sub !== '') {
        const code = created ? 201 : 200;
        sendJson(res, code, present(t, object), warningHeaders(fields.warnings));
        return code;
      }
      return writeAdmitted(
        ctx,
        res,
        t,
        r,
        user,
        dryRun,
        object,
        created ? undefined : old,
        fields.warnings,
      );
    }
    case 'delete': {
      const text = await readBody(req);
      let opts: JsonObject = {};
      if (text.trim() !== '') {
        const b = decodeBody(text, req.headers['content-type']);
        if (typeof b === 'object' && b !== null) opts = b as JsonObject;
      }
      const uidQ = query.get('preconditions.uid');
      const rvQ = query.get('preconditions.resourceVersion');
      const pre = { ...((opts['preconditions'] as JsonObject | undefined) ?? {}) } as {
        uid?: string;
        resourceVersion?: string;
      };
      if (uidQ !== null) pre.uid = uidQ;
      if (rvQ !== null) pre.resourceVersion = rvQ;
      const dry =
        dryRun || (Array.isArray(opts['dryRun']) && (opts['dryRun'] as unknown[]).includes('All'));
      const result = ctx.objects.delete(t, r.namespace, r.name, {
        preconditions: pre,
        dryRun: dry,
      });
      // 202 when the object is only marked for deletion (finalizers pending).
      const pending =
        result.kind !== 'Status' &&
        (result as KubeObject).metadata.deletionTimestamp !== undefined &&
        ctx.store.get(t, t.namespaced ? r.namespace : '', r.name) !== undefined;
      const code = pending ? 202 : 200;
      sendJson(res, code, result);
      return code;
    }
    case 'deletecollection': {
      const result = ctx.objects.deleteCollection(t, r.namespace, {
        labelSelector: query.get('labelSelector') ?? undefined,
        fieldSelector: query.get('fieldSelector') ?? undefined,
        dryRun,
      });
      sendJson(res, 200, listBody(t, result.items, { resourceVersion: result.resourceVersion }));
      return 200;
    }
    default:
      throw methodNotAllowed();
  }
}

/** The field validation of a create, update or patch request (field-validation.ts). */
function fieldCheck(
  query: URLSearchParams,
  options: 'CreateOptions' | 'UpdateOptions' | 'PatchOptions',
  req: IncomingMessage,
  raw: string,
): FieldCheck {
  return {
    directive: fieldValidationOf(query, options),
    raw,
    contentType: (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase(),
    warnings: [],
  };
}

/**
 * `Warning: 299 - "..."` headers, as kube-apiserver returns a webhook's warnings and field
 * validation's.
 */
function warningHeaders(warnings: readonly string[]): Record<string, string> {
  if (warnings.length === 0) return {};
  return {
    Warning: warnings
      .map((w) => `299 - ${JSON.stringify(w.replace(/[^\x20-\x7e]/g, '?'))}`)
      .join(', '),
  };
}

/**
 * Stores an update or patch result after admission. The write is conditional on the
 * resourceVersion the webhooks saw, so a write that raced it is a 409, never a lost update.
 */
async function writeAdmitted(
  ctx: ServerContext,
  res: ServerResponse,
  t: ResourceType,
  r: ResourceRoute,
  user: UserInfo,
  dryRun: boolean,
  candidate: KubeObject,
  old: KubeObject | undefined,
  decodingWarnings: readonly string[],
): Promise<number> {
  const admitted = await ctx.admission.admit({
    type: t,
    operation: old === undefined ? 'CREATE' : 'UPDATE',
    namespace: r.namespace,
    object: candidate,
    oldObject: old,
    user,
    dryRun,
  });
  if (old === undefined) {
    const created = ctx.objects.create(t, r.namespace, admitted.object, { dryRun });
    sendJson(res, 201, created, warningHeaders([...decodingWarnings, ...admitted.warnings]));
    return 201;
  }
  const next = structuredClone(admitted.object);
  next.metadata.resourceVersion = old.metadata.resourceVersion!;
  const updated = ctx.objects.update(t, r.namespace, r.name, next, '', { dryRun });
  sendJson(res, 200, updated, warningHeaders([...decodingWarnings, ...admitted.warnings]));
  return 200;
}

function namespaceOf(r: ResourceRoute): string {
  return r.type.namespaced ? r.namespace : '';
}

/** The request handler of the HTTPS server. */
export function createHandler(
  ctx: ServerContext,
): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    void handle(ctx, req, res);
  };
}

async function handle(
  ctx: ServerContext,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const at = Date.now();
  const method = (req.method ?? 'GET').toUpperCase();
  const url = new URL(req.url ?? '/', 'https://localhost');
  const path = url.pathname.length > 1 ? url.pathname.replace(/\/+$/, '') : url.pathname;
  const query = url.searchParams;
  let username: string | undefined;
  let verb = method.toLowerCase();
  let resource = '';
  let status = 500;
  try {
    const fault = ctx.faults.take(method, path);
    if (fault !== undefined) {
      if (fault.delayMs !== undefined) await new Promise((r) => setTimeout(r, fault.delayMs));
      if (fault.reset === true) {
        status = 0;
        req.socket.destroy();
        return;
      }
      if (fault.status !== undefined) {
        const body = faultStatus(fault);
        status = fault.status;
        sendJson(res, status, body, status === 429 || status === 503 ? { 'Retry-After': '1' } : {});
        return;
      }
    }
    const rt = route(ctx, method, path, query);
    verb = rt.attrs.verb;
    resource = rt.attrs.resource;

    let user: UserInfo;
    const token = bearer(req);
    if (token === undefined || token === '') {
      // Anonymous access is limited to the public endpoints (AnonymousAuthConfigurableEndpoints).
      if (rt.kind === 'nonResource' && ANONYMOUS_PATHS.includes(path)) user = ANONYMOUS;
      else throw unauthorized();
    } else {
      const a = await ctx.authn.authenticate(token);
      if (!a.ok) throw unauthorized();
      user = a.user;
    }
    username = user.username;

    const decisionAttrs =
      rt.kind === 'resource'
        ? { ...rt.attrs, namespace: namespaceOf(rt.route) || rt.attrs.namespace }
        : rt.attrs;
    const d = ctx.authz.authorize(user, decisionAttrs);
    if (!d.allowed) {
      const msg = forbiddenMessage(user, decisionAttrs);
      throw rt.kind === 'resource'
        ? forbidden(rt.route.type, rt.attrs.name, msg)
        : forbidden(undefined, '', msg);
    }
    if (rt.kind === 'nonResource') status = await serveNonResource(ctx, req, res, path);
    else status = await serveResource(ctx, req, res, rt.route, user, query);
  } catch (e) {
    const err = e instanceof ApiError ? e : internalError((e as Error).message);
    status = err.code;
    if (!res.headersSent) sendJson(res, err.code, err.status);
    else res.destroy();
  } finally {
    const q: Record<string, string> = {};
    for (const [k, v] of query) q[k] = v;
    ctx.log({ method, path, query: q, user: username, verb, resource, status, at });
  }
}
