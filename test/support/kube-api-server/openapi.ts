/**
 * OpenAPI v3 discovery, as the real API publishes it (KEP-2896): `GET /openapi/v3` lists one
 * document per group-version with a `serverRelativeURL` that carries a content hash, and each
 * document holds the paths and operations of that group-version's resources.
 *
 * Why clients need it: `kubectl apply` (and `create`, `replace`) with the default
 * `--validate=strict` first asks the group-version's document whether the PATCH operation of the
 * kind takes the `fieldValidation` query parameter; if so it leaves validation to the server
 * (`?fieldValidation=Strict`, which field-validation.ts honours), otherwise it validates on the
 * client against the OpenAPI v2 schemas (which this double does not serve: "failed to download
 * openapi").
 *
 * What is not copied: the documents hold operations, parameters and the
 * `x-kubernetes-group-version-kind`/`x-kubernetes-action` extensions, but no schemas
 * (`components.schemas` is empty), so clients that build strategic merge patches from the
 * schemas fall back to their compiled-in types, and `kubectl explain` finds nothing. (The
 * field lists that strict validation checks against come from client-node's models: schemas.ts.)
 */
import { createHash } from 'node:crypto';
import type { ResourceRegistry, ResourceType } from './resources.js';
import { STORAGE_VERBS } from './resources.js';
import type { JsonObject } from './types.js';

const ROOT = '/openapi/v3';

/** The path of a group-version's document under /openapi/v3: `api/v1`, `apis/apps/v1`. */
function gvPath(group: string, version: string): string {
  return group === '' ? `api/${version}` : `apis/${group}/${version}`;
}

function param(name: string, where: 'path' | 'query', description: string): JsonObject {
  return {
    name,
    in: where,
    description,
    ...(where === 'path' ? { required: true } : {}),
    schema: {
      type: where === 'query' && name === 'force' ? 'boolean' : 'string',
      uniqueItems: true,
    },
  };
}

const WRITE_PARAMS = [
  param('dryRun', 'query', 'When present, indicates that modifications should not be persisted.'),
  param('fieldManager', 'query', 'A name associated with the actor or entity making the changes.'),
  param(
    'fieldValidation',
    'query',
    'How the server handles unknown or duplicate fields in the object: Ignore, Warn or Strict.',
  ),
];

/** The operations of one type, keyed by path, with the extensions kubectl looks for. */
function typePaths(t: ResourceType): Record<string, JsonObject> {
  const gvk = { group: t.group, version: t.version, kind: t.kind };
  const verbs: readonly string[] = t.verbs ?? STORAGE_VERBS;
  const base = `/${gvPath(t.group, t.version)}${t.namespaced ? '/namespaces/{namespace}' : ''}/${t.plural}`;
  const scope = t.namespaced ? [param('namespace', 'path', 'object name and auth scope')] : [];
  const op = (action: string, id: string, extra: JsonObject[] = [], body = false): JsonObject => ({
    operationId: `${id}${t.kind}`,
    parameters: extra,
    ...(body
      ? { requestBody: { content: { '*/*': { schema: { type: 'object' } } }, required: true } }
      : {}),
    responses: { '200': { description: 'OK' }, '401': { description: 'Unauthorized' } },
    'x-kubernetes-action': action,
    'x-kubernetes-group-version-kind': gvk,
  });
  const collection: JsonObject = { parameters: scope };
  const item: JsonObject = {
    parameters: [param('name', 'path', `name of the ${t.kind}`), ...scope],
  };
  const patchParams = [
    ...WRITE_PARAMS,
    param('force', 'query', 'Force is going to "force" Apply requests.'),
  ];
  if (verbs.includes('list')) collection['get'] = op('list', 'list');
  if (verbs.includes('create')) collection['post'] = op('post', 'create', WRITE_PARAMS, true);
  if (verbs.includes('deletecollection'))
    collection['delete'] = op('deletecollection', 'deleteCollection');
  if (verbs.includes('get')) item['get'] = op('get', 'read');
  if (verbs.includes('update')) item['put'] = op('put', 'replace', WRITE_PARAMS, true);
  if (verbs.includes('patch')) item['patch'] = op('patch', 'patch', patchParams, true);
  if (verbs.includes('delete')) item['delete'] = op('delete', 'delete');
  const paths: Record<string, JsonObject> = {};
  if (Object.keys(collection).length > 1) paths[base] = collection;
  if (Object.keys(item).length > 1) paths[`${base}/{name}`] = item;
  for (const sub of t.subresources ?? []) {
    if (sub !== 'status') continue;
    paths[`${base}/{name}/status`] = {
      parameters: item['parameters'],
      get: op('get', 'read', [], false),
      put: op('put', 'replace', WRITE_PARAMS, true),
      patch: op('patch', 'patch', patchParams, true),
    };
  }
  return paths;
}

function document(types: readonly ResourceType[], group: string, version: string): JsonObject {
  const paths: Record<string, JsonObject> = {};
  for (const t of types) Object.assign(paths, typePaths(t));
  return {
    openapi: '3.0.0',
    info: { title: 'Kubernetes', version: 'v1.31.0+meshid-test' },
    paths,
    components: { schemas: {} },
    'x-meshid-test-double': `${gvPath(group, version)} of the Kubernetes API test double`,
  };
}

/**
 * Answers `GET /openapi/v3` and `GET /openapi/v3/<group-version>`; `undefined` for any other path
 * (or a group-version the server does not serve), which the caller turns into a 404.
 */
export function openApiV3(registry: ResourceRegistry, path: string): JsonObject | undefined {
  if (path !== ROOT && !path.startsWith(`${ROOT}/`)) return undefined;
  const all = registry.all();
  const docs = new Map<string, JsonObject>();
  for (const { group, versions } of registry.groupVersions()) {
    for (const version of versions) {
      const types = all.filter((t) => t.group === group && t.version === version);
      docs.set(gvPath(group, version), document(types, group, version));
    }
  }
  if (path === ROOT) {
    const paths: Record<string, JsonObject> = {};
    for (const [gv, doc] of docs) {
      const hash = createHash('sha512').update(JSON.stringify(doc)).digest('hex').toUpperCase();
      paths[gv] = { serverRelativeURL: `${ROOT}/${gv}?hash=${hash.slice(0, 128)}` };
    }
    return { paths };
  }
  return docs.get(path.slice(ROOT.length + 1));
}
