/**
 * Server-side field validation (KEP-2885, GA in 1.27), as kube-apiserver does it on create,
 * update and patch: the `fieldValidation` query parameter says what to do with fields the kind
 * does not have and with fields given twice.
 *
 * - `Strict`: the write is refused, every problem named. A create or update answers 400
 *   BadRequest `<Kind> in version "<v>" cannot be handled as a <Kind>: strict decoding error:
 *   unknown field "spec.foo", duplicate field "spec.replicas"` (the problems in the order of the
 *   body; a field both unknown and repeated is named once, as unknown). A merge, strategic merge
 *   or JSON patch answers 422 Invalid on `patch` with the same `strict decoding error: …`: first
 *   the fields repeated in the patch, then the unknown fields of the patched object in key order.
 * - `Warn` (the server's default, when the parameter is absent): the write goes ahead and each
 *   problem comes back as a `Warning: 299 - "unknown field \"spec.foo\""` header.
 * - `Ignore`: nothing is said.
 * Whatever the directive, an unknown field is dropped, never stored, and of a repeated field the
 * last value counts. kubectl sends `fieldValidation=Strict` on create, apply and replace unless
 * told `--validate=warn|ignore`.
 *
 * Server-side apply (`application/apply-patch+yaml`) differs: an unknown field always fails the
 * typed conversion (500, `failed to create typed patch object (<ns>/<name>; <gvk>): .spec.foo:
 * field not declared in schema`, one per object level) and the directive only governs repeated
 * keys, named by line. Elements of lists are named `[name="x"]` when they have a name, else by
 * index: the real server uses each list's merge keys, which the models here do not carry.
 *
 * YAML bodies (`Content-Type: application/yaml`) name repeated keys by line, as the real decoder
 * does. The schemas come from schemas.ts; a kind without one is not checked.
 */
import { LineCounter, isMap, isScalar, isSeq, parseDocument } from 'yaml';
import type { ResourceType } from './resources.js';
import { rootTypeOf, shapeOf } from './schemas.js';
import { ApiError, badRequest, invalid } from './status.js';
import type { JsonObject } from './types.js';

export type FieldValidation = 'Strict' | 'Warn' | 'Ignore';

/** What a write is told about field validation, and where its warnings go. */
export interface FieldCheck {
  readonly directive: FieldValidation;
  /** The request body as sent. */
  readonly raw: string;
  readonly contentType: string;
  /** Filled with the warnings to answer (Warn). */
  readonly warnings: string[];
}

/**
 * The `fieldValidation` of a request: absent or empty is `Warn`; anything but the three values is
 * refused as ValidateCreateOptions (and Update, Patch) do.
 */
export function fieldValidationOf(
  query: URLSearchParams,
  options: 'CreateOptions' | 'UpdateOptions' | 'PatchOptions',
): FieldValidation {
  const v = query.get('fieldValidation') ?? '';
  if (v === '') return 'Warn';
  if (v === 'Strict' || v === 'Warn' || v === 'Ignore') return v;
  throw invalid({ group: 'meta.k8s.io', kind: options }, '', [
    {
      type: 'FieldValueNotSupported',
      field: 'fieldValidation',
      value: v,
      detail: 'supported values: "", "Ignore", "Strict", "Warn"',
    },
  ]);
}

/** A JSON document as written: object members in order, repeated keys kept. */
type Tree =
  | { readonly kind: 'object'; readonly entries: readonly (readonly [string, Tree])[] }
  | { readonly kind: 'array'; readonly items: readonly Tree[] }
  | { readonly kind: 'scalar' };

const SCALAR: Tree = { kind: 'scalar' };

/** Parses JSON text that JSON.parse has already accepted, keeping repeated keys. */
function jsonTree(text: string): Tree {
  let i = 0;
  const ws = (): void => {
    while (i < text.length && ' \t\n\r'.includes(text[i]!)) i++;
  };
  const str = (): string => {
    const start = i;
    i++;
    while (text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
    i++;
    return JSON.parse(text.slice(start, i)) as string;
  };
  const value = (): Tree => {
    ws();
    const c = text[i];
    if (c === '{') {
      i++;
      const entries: [string, Tree][] = [];
      ws();
      if (text[i] === '}') i++;
      else
        for (;;) {
          ws();
          const k = str();
          ws();
          i++; // ':'
          entries.push([k, value()]);
          ws();
          if (text[i++] === '}') break;
        }
      return { kind: 'object', entries };
    }
    if (c === '[') {
      i++;
      const items: Tree[] = [];
      ws();
      if (text[i] === ']') i++;
      else
        for (;;) {
          items.push(value());
          ws();
          if (text[i++] === ']') break;
        }
      return { kind: 'array', items };
    }
    if (c === '"') str();
    else while (i < text.length && !',}] \t\n\r'.includes(text[i]!)) i++;
    return SCALAR;
  };
  return value();
}

/** `line N: key "k" already set in map` for each repeated key of a YAML text, in order. */
function yamlRepeats(text: string): string[] {
  const lines = new LineCounter();
  const doc = parseDocument(text, { uniqueKeys: false, lineCounter: lines });
  const out: string[] = [];
  const walk = (node: unknown): void => {
    if (isMap(node)) {
      const seen = new Set<string>();
      for (const p of node.items) {
        const k = isScalar(p.key) ? String(p.key.value) : String(p.key);
        if (seen.has(k) && isScalar(p.key) && p.key.range !== undefined && p.key.range !== null)
          out.push(`line ${lines.linePos(p.key.range[0]).line}: key "${k}" already set in map`);
        seen.add(k);
        walk(p.value);
      }
    } else if (isSeq(node)) for (const n of node.items) walk(n);
  };
  walk(doc.contents);
  return out;
}

const isYaml = (contentType: string): boolean => contentType.toLowerCase().includes('yaml');
const join = (path: string, key: string): string => (path === '' ? key : `${path}.${key}`);

/**
 * The problems of a body in document order: `unknown field` (once, and not looked into) and,
 * for known fields, `duplicate field`.
 */
function treeProblems(type: string, tree: Tree, path: string): string[] {
  const shape = shapeOf(type);
  const out: string[] = [];
  if (tree.kind === 'array' && shape.kind === 'list')
    tree.items.forEach((t, i) => out.push(...treeProblems(shape.item, t, `${path}[${i}]`)));
  if (tree.kind !== 'object') return out;
  const seen = new Set<string>();
  const unknown = new Set<string>();
  for (const [k, v] of tree.entries) {
    const p = join(path, k);
    const fieldType =
      shape.kind === 'object' ? shape.fields.get(k) : shape.kind === 'map' ? shape.value : 'any';
    if (fieldType === undefined) {
      if (!unknown.has(k)) out.push(`unknown field "${p}"`);
      unknown.add(k);
      continue;
    }
    if (seen.has(k)) out.push(`duplicate field "${p}"`);
    seen.add(k);
    out.push(...treeProblems(fieldType, v, p));
  }
  return out;
}

/** Every repeated key of a patch, wherever it is, in document order. */
function treeRepeats(tree: Tree, path: string, prefix: string): string[] {
  if (tree.kind === 'array')
    return tree.items.flatMap((t, i) => treeRepeats(t, `${path}[${i}]`, prefix));
  if (tree.kind !== 'object') return [];
  const seen = new Set<string>();
  const out: string[] = [];
  for (const [k, v] of tree.entries) {
    if (seen.has(k)) out.push(`${prefix}duplicate field "${join(path, k)}"`);
    seen.add(k);
    out.push(...treeRepeats(v, join(path, k), prefix));
  }
  return out;
}

/** Unknown fields of a decoded object, keys in sorted order (as the patched JSON is re-read). */
function objectUnknowns(type: string, value: unknown, path: string): string[] {
  const shape = shapeOf(type);
  if (Array.isArray(value))
    return shape.kind === 'list'
      ? value.flatMap((v, i) => objectUnknowns(shape.item, v, `${path}[${i}]`))
      : [];
  if (typeof value !== 'object' || value === null) return [];
  const out: string[] = [];
  for (const k of Object.keys(value).sort()) {
    const p = join(path, k);
    const fieldType =
      shape.kind === 'object' ? shape.fields.get(k) : shape.kind === 'map' ? shape.value : 'any';
    if (fieldType === undefined) out.push(`unknown field "${p}"`);
    else out.push(...objectUnknowns(fieldType, (value as JsonObject)[k], p));
  }
  return out;
}

/** Drops the unknown fields of a decoded object, in place, as decoding into the Go type does. */
function prune(type: string, value: unknown): void {
  const shape = shapeOf(type);
  if (Array.isArray(value)) {
    if (shape.kind === 'list') for (const v of value) prune(shape.item, v);
    return;
  }
  if (typeof value !== 'object' || value === null) return;
  const obj = value as JsonObject;
  for (const k of Object.keys(obj)) {
    const fieldType =
      shape.kind === 'object' ? shape.fields.get(k) : shape.kind === 'map' ? shape.value : 'any';
    // eslint-disable-next-line @typescript-eslint/no-dynamic-delete -- a JSON member by name
    if (fieldType === undefined) delete obj[k];
    else prune(fieldType, obj[k]);
  }
}

function report(check: FieldCheck, problems: readonly string[], refuse: () => ApiError): void {
  if (problems.length === 0) return;
  if (check.directive === 'Strict') throw refuse();
  if (check.directive === 'Warn') check.warnings.push(...problems);
}

/**
 * A create or update body (already decoded into `obj`): refuses it (Strict), or warns (Warn);
 * then drops its unknown fields.
 */
export function checkBody(t: ResourceType, obj: JsonObject, check: FieldCheck): void {
  const root = rootTypeOf(t);
  if (root === undefined) return;
  let problems: string[];
  if (isYaml(check.contentType)) {
    // The real decoder converts the YAML to JSON first: keys sorted, repeated ones by line.
    const repeats = yamlRepeats(check.raw);
    const unknown = objectUnknowns(root, obj, '');
    problems = repeats.length === 0 ? unknown : [yamlErrors(repeats), ...unknown];
    if (check.directive === 'Warn') {
      check.warnings.push(...repeats, ...unknown);
      problems = [];
    }
  } else problems = treeProblems(root, jsonTree(check.raw), '');
  report(check, problems, () =>
    badRequest(
      `${t.kind} in version "${t.version}" cannot be handled as a ${t.kind}: strict decoding error: ${problems.join(', ')}`,
    ),
  );
  prune(root, obj);
}

function yamlErrors(repeats: readonly string[]): string {
  return `yaml: unmarshal errors:\n  ${repeats.join('\n  ')}`;
}

/** The patched object's JSON as Go writes a map (keys sorted), for the Invalid value. */
function sortedJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(sortedJson).join(',')}]`;
  if (typeof value !== 'object' || value === null) return JSON.stringify(value);
  const o = value as JsonObject;
  return `{${Object.keys(o)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${sortedJson(o[k])}`)
    .join(',')}}`;
}

/** A map as Go's `%+v` prints it: `map[a:1 b:map[c:x]]`. */
function goPrint(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(goPrint).join(' ')}]`;
  if (value === null) return '<nil>';
  if (typeof value !== 'object') return String(value);
  const o = value as JsonObject;
  return `map[${Object.keys(o)
    .sort()
    .map((k) => `${k}:${goPrint(o[k])}`)
    .join(' ')}]`;
}

const JSON_PATCH_FIELDS = new Set(['op', 'path', 'from', 'value']);

/** The problems of the operations of a JSON patch themselves: unknown and repeated members. */
function jsonPatchOpProblems(tree: Tree): string[] {
  if (tree.kind !== 'array') return [];
  const out: string[] = [];
  tree.items.forEach((op, i) => {
    if (op.kind !== 'object') return;
    const seen = new Set<string>();
    for (const [k] of op.entries) {
      if (!JSON_PATCH_FIELDS.has(k)) out.push(`json patch unknown field "[${i}].${k}"`);
      else if (seen.has(k)) out.push(`json patch duplicate field "[${i}].${k}"`);
      seen.add(k);
    }
  });
  return out;
}

/**
 * A merge, strategic merge or JSON patch: the repeated keys of the patch (or the problems of a
 * JSON patch's operations), then the unknown fields of the patched object. Refuses with 422 on
 * `patch` (Strict) or warns (Warn); then drops the unknown fields of `patched`.
 */
export function checkPatch(
  t: ResourceType,
  contentType: string,
  patch: unknown,
  patched: JsonObject,
  check: FieldCheck,
): void {
  const root = rootTypeOf(t);
  if (root === undefined) return;
  const tree = jsonTree(check.raw);
  const jsonPatch = contentType === 'application/json-patch+json';
  const problems = [
    ...(jsonPatch ? jsonPatchOpProblems(tree) : treeRepeats(tree, '', '')),
    ...objectUnknowns(root, patched, ''),
  ];
  const strategic = contentType === 'application/strategic-merge-patch+json';
  report(check, problems, () =>
    invalid({ group: '', kind: '' }, '', [
      {
        type: 'FieldValueInvalid',
        field: 'patch',
        value: strategic ? goPrint(patch) : sortedJson(patched),
        detail: `strict decoding error: ${problems.join(', ')}`,
      },
    ]),
  );
  prune(root, patched);
}

/** The path of a field as structured-merge-diff names it: `.spec.containers[name="app"].foo`. */
function applyPath(type: string, value: unknown, path: string): string[] {
  const shape = shapeOf(type);
  if (Array.isArray(value)) {
    if (shape.kind !== 'list') return [];
    return value.flatMap((v, i) => {
      const name = (v as JsonObject | null)?.['name'];
      const el = typeof name === 'string' ? `[name=${JSON.stringify(name)}]` : `[${i}]`;
      return applyPath(shape.item, v, `${path}${el}`);
    });
  }
  if (typeof value !== 'object' || value === null) return [];
  if (shape.kind !== 'object' && shape.kind !== 'map') return [];
  const out: string[] = [];
  for (const k of Object.keys(value).sort()) {
    const fieldType = shape.kind === 'object' ? shape.fields.get(k) : shape.value;
    if (fieldType === undefined) {
      // The walk of a map stops at its first undeclared field.
      out.push(`${path}.${k}: field not declared in schema`);
      break;
    }
    out.push(...applyPath(fieldType, (value as JsonObject)[k], `${path}.${k}`));
  }
  return out;
}

/**
 * A server-side apply patch (`applied` is its decoded YAML): any unknown field is a 500, whatever
 * the directive; repeated keys are refused (Strict, 400) or warned about (Warn).
 */
export function checkApply(
  t: ResourceType,
  namespace: string,
  name: string,
  applied: unknown,
  check: FieldCheck,
): void {
  const root = rootTypeOf(t);
  if (root === undefined) return;
  const errors = applyPath(root, applied, '');
  if (errors.length > 0) {
    const gvk = `${t.group === '' ? '' : t.group}/${t.version}, Kind=${t.kind}`;
    const what = errors.length === 1 ? errors[0]! : `errors:\n  ${errors.join('\n  ')}`;
    throw new ApiError({
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: `failed to create typed patch object (${namespace}/${name}; ${gvk}): ${what}`,
      code: 500,
    });
  }
  const repeats = yamlRepeats(check.raw);
  report(check, repeats, () =>
    badRequest(`error strict decoding YAML: error converting YAML to JSON: ${yamlErrors(repeats)}`),
  );
}
