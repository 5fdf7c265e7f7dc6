/**
 * The non-resource endpoints: health, /version, OIDC discovery and JWKS, API discovery
 * (/api, /apis, group versions' resource lists) and OpenAPI v3.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ServerContext } from './context.js';
import { openApiV3 } from './openapi.js';
import { STORAGE_VERBS } from './resources.js';
import { methodNotAllowed, notFoundPath } from './status.js';
import type { JsonObject } from './types.js';
import { sendJson, sendText } from './wire.js';

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

export async function serveNonResource(
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
