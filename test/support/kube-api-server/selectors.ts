/**
 * Label selectors (`=`, `==`, `!=`, `in`, `notin`, `key`, `!key`, comma = AND) and field selectors
 * (`=`, `==`, `!=` on the labels a type supports), parsed as the real API parses query strings.
 */
import { badRequest } from './status.js';
import type { KubeObject } from './types.js';

type LabelRequirement =
  | { op: 'eq' | 'neq'; key: string; value: string }
  | { op: 'in' | 'notin'; key: string; values: string[] }
  | { op: 'exists' | 'notexists'; key: string };

/** A compiled selector: a predicate over an object. */
export type Selector = (obj: KubeObject) => boolean;

const KEY =
  /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

/** Splits on commas that are not inside parentheses. */
function splitTerms(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of s) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out.map((t) => t.trim()).filter((t) => t !== '');
}

function checkKey(key: string): string {
  if (!KEY.test(key) || key.length > 316)
    throw badRequest(
      `unable to parse requirement: invalid label key "${key}": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character`,
    );
  return key;
}

function checkValue(v: string): string {
  if (!VALUE.test(v) || v.length > 63)
    throw badRequest(
      `unable to parse requirement: values[0]: Invalid value: "${v}": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character`,
    );
  return v;
}

function parseLabelTerm(term: string): LabelRequirement {
  let m = /^(\S+?)\s+(in|notin)\s*\(([^)]*)\)$/.exec(term);
  if (m !== null) {
    const values = m[3]!.split(',').map((v) => checkValue(v.trim()));
    return { op: m[2] as 'in' | 'notin', key: checkKey(m[1]!), values };
  }
  m = /^([^=!\s]+)\s*(==|=|!=)\s*(\S*)$/.exec(term);
  if (m !== null) {
    return { op: m[2] === '!=' ? 'neq' : 'eq', key: checkKey(m[1]!), value: checkValue(m[3]!) };
  }
  m = /^!\s*(\S+)$/.exec(term);
  if (m !== null) return { op: 'notexists', key: checkKey(m[1]!) };
  if (/^\S+$/.test(term)) return { op: 'exists', key: checkKey(term) };
  throw badRequest(
    `unable to parse requirement: found '${term}', expected: in, notin, =, ==, !=, gt, lt`,
  );
}

function matchLabel(r: LabelRequirement, labels: Record<string, string>): boolean {
  const has = Object.prototype.hasOwnProperty.call(labels, r.key);
  const v = labels[r.key];
  switch (r.op) {
    case 'eq':
      return has && v === r.value;
    case 'neq':
      return !has || v !== r.value;
    case 'in':
      return has && r.values.includes(v!);
    case 'notin':
      return !has || !r.values.includes(v!);
    case 'exists':
      return has;
    case 'notexists':
      return !has;
  }
}

/** Compiles a `labelSelector` query value; undefined or empty selects everything. */
export function parseLabelSelector(s: string | undefined): Selector {
  if (s === undefined || s.trim() === '') return () => true;
  const reqs = splitTerms(s).map(parseLabelTerm);
  return (obj) => reqs.every((r) => matchLabel(r, obj.metadata.labels ?? {}));
}

/** Reads a dotted field path as the field-label conversion of the real API does (strings). */
function fieldValue(obj: KubeObject, path: string): string {
  let cur: unknown = obj;
  for (const part of path.split('.')) {
    if (cur === null || typeof cur !== 'object') return '';
    cur = (cur as Record<string, unknown>)[part];
  }
  if (cur === undefined || cur === null) return '';
  return typeof cur === 'string' ? cur : JSON.stringify(cur);
}

/**
 * Compiles a `fieldSelector`; `supported` lists the field labels the type accepts beyond
 * metadata.name and metadata.namespace. Unknown labels are a 400, as on a real server.
 */
export function parseFieldSelector(s: string | undefined, supported: readonly string[]): Selector {
  if (s === undefined || s.trim() === '') return () => true;
  const allowed = new Set(['metadata.name', 'metadata.namespace', ...supported]);
  const reqs = splitTerms(s).map((term) => {
    const m = /^([^=!]+?)\s*(==|=|!=)\s*(.*)$/.exec(term);
    if (m === null) throw badRequest(`invalid selector: '${s}'; can't understand '${term}'`);
    const field = m[1]!.trim();
    if (!allowed.has(field)) throw badRequest(`field label not supported: ${field}`);
    return { field, neq: m[2] === '!=', value: m[3]!.trim() };
  });
  return (obj) => reqs.every((r) => (fieldValue(obj, r.field) === r.value) !== r.neq);
}
