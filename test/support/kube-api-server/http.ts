/**
 * The HTTP side: authentication and authorization of every request (routed by routing.ts),
 * then discovery and OIDC (discovery.ts), the storage verbs, watches and reviews, and the
 * request log.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ANONYMOUS, ANONYMOUS_PATHS, forbiddenMessage } from './auth.js';
import type { ServerContext } from './context.js';
import { faultStatus } from './faults.js';
import { fieldValidationOf } from './field-validation.js';
import type { FieldCheck } from './field-validation.js';
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
import type { JsonObject, KubeObject, UserInfo } from './types.js';
import { serveNonResource } from './discovery.js';
import { route, truthy } from './routing.js';
import type { ResourceRoute } from './routing.js';
import { bearer, decodeBody, readBody, sendJson, warningHeaders } from './wire.js';
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
