/**
 * PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch,
 * which is applied as a merge patch (lists are replaced, not merged by key; `$patch` directives
 * are not interpreted). The resources meshid writes do not depend on list merge keys.
 */
import { ApiError, badRequest } from './status.js';
import { isObject } from './types.js';
import type { JsonObject } from './types.js';

/** RFC 7386: null deletes, objects merge recursively, anything else replaces. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isObject(patch)) return structuredClone(patch);
  const out: JsonObject = isObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    // JSON documents are plain records: removing a member by key is the operation itself.
    // eslint-disable-next-line @typescript-eslint/no-dynamic-delete
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

function unescape(token: string): string {
  return token.replace(/~1/g, '/').replace(/~0/g, '~');
}

function parsePointer(pointer: string): string[] {
  if (pointer === '') return [];
  if (!pointer.startsWith('/')) throw new Error(`invalid JSON pointer "${pointer}"`);
  return pointer.slice(1).split('/').map(unescape);
}

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) && Array.isArray(b))
    return a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
  if (isObject(a) && isObject(b)) {
    const ka = Object.keys(a);
    return ka.length === Object.keys(b).length && ka.every((k) => deepEqual(a[k], b[k]));
  }
  return false;
}

/** Returns the container and final key of a pointer, failing when the parent does not exist. */
function locate(doc: unknown, path: string[], op: string): { parent: unknown; key: string } {
  let cur = doc;
  for (const part of path.slice(0, -1)) {
    if (Array.isArray(cur)) cur = cur[Number(part)];
    else if (isObject(cur)) cur = cur[part];
    else cur = undefined;
    if (cur === undefined)
      throw new Error(
        `${op} operation does not apply: doc is missing path: "/${path.join('/')}": missing value`,
      );
  }
  return { parent: cur, key: path[path.length - 1]! };
}

function getAt(doc: unknown, path: string[]): unknown {
  let cur = doc;
  for (const part of path) {
    if (Array.isArray(cur)) cur = cur[Number(part)];
    else if (isObject(cur)) cur = cur[part];
    else return undefined;
  }
  return cur;
}

function removeAt(doc: unknown, path: string[], op: string): unknown {
  const { parent, key } = locate(doc, path, op);
  if (Array.isArray(parent)) {
    const i = Number(key);
    if (!Number.isInteger(i) || i < 0 || i >= parent.length)
      throw new Error(
        `${op} operation does not apply: doc is missing path: "/${path.join('/')}": missing value`,
      );
    return parent.splice(i, 1)[0];
  }
  if (isObject(parent) && Object.prototype.hasOwnProperty.call(parent, key)) {
    const v = parent[key];
    // eslint-disable-next-line @typescript-eslint/no-dynamic-delete
    delete parent[key];
    return v;
  }
  throw new Error(
    `${op} operation does not apply: doc is missing path: "/${path.join('/')}": missing value`,
  );
}

function addAt(doc: unknown, path: string[], value: unknown, op: string): unknown {
  if (path.length === 0) return value;
  const { parent, key } = locate(doc, path, op);
  if (Array.isArray(parent)) {
    const i = key === '-' ? parent.length : Number(key);
    if (!Number.isInteger(i) || i < 0 || i > parent.length)
      throw new Error(`${op} operation does not apply: index out of range`);
    parent.splice(i, 0, value);
  } else if (isObject(parent)) parent[key] = value;
  else
    throw new Error(
      `${op} operation does not apply: doc is missing path: "/${path.join('/')}": missing value`,
    );
  return doc;
}

/**
 * RFC 6902. A malformed patch is a 400 (as the real API's DecodePatch failure); a patch that does
 * not apply (missing path, failed `test`) is a 422 with the library's message.
 */
export function jsonPatch(target: unknown, patch: unknown): unknown {
  if (!Array.isArray(patch))
    throw badRequest('json: cannot unmarshal object into Go value of type jsonpatch.Patch');
  let doc = structuredClone(target);
  try {
    for (const raw of patch) {
      if (!isObject(raw) || typeof raw['op'] !== 'string' || typeof raw['path'] !== 'string')
        throw new Error('invalid JSON patch operation');
      const op = raw['op'];
      const path = parsePointer(raw['path']);
      switch (op) {
        case 'add':
          doc = addAt(doc, path, structuredClone(raw['value']), op);
          break;
        case 'remove':
          removeAt(doc, path, op);
          break;
        case 'replace':
          if (path.length === 0) {
            doc = structuredClone(raw['value']);
            break;
          }
          removeAt(doc, path, op);
          doc = addAt(doc, path, structuredClone(raw['value']), op);
          break;
        case 'move': {
          const from = parsePointer(String(raw['from']));
          const v = removeAt(doc, from, op);
          doc = addAt(doc, path, v, op);
          break;
        }
        case 'copy': {
          const from = parsePointer(String(raw['from']));
          doc = addAt(doc, path, structuredClone(getAt(doc, from)), op);
          break;
        }
        case 'test':
          if (!deepEqual(getAt(doc, path), raw['value']))
            throw new Error(`testing value /${path.join('/')} failed: test failed`);
          break;
        default:
          throw new Error(`Unexpected kind: ${op}`);
      }
    }
  } catch (e) {
    if (e instanceof ApiError) throw e;
    throw new ApiError({
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: (e as Error).message,
      reason: 'Invalid',
      code: 422,
    });
  }
  return doc;
}
