/**
 * Per-type validation and defaulting the real API applies on create and update, limited to what
 * clients commonly get wrong: names, namespaces, Secret data, MicroTime fields, required event
 * fields, pod containers.
 */
import type { NameRule, ResourceType } from './resources.js';
import { badRequest, invalid } from './status.js';
import type { FieldError } from './status.js';
import type { KubeObject } from './types.js';

const SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1035 = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;

const SUBDOMAIN_MSG =
  "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG =
  "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_MSG =
  "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

/** Problems with a name under a rule, worded as the real validators; empty when valid. */
export function nameProblems(name: string, rule: NameRule): string[] {
  const out: string[] = [];
  switch (rule) {
    case 'dns1123-subdomain':
      if (name.length > 253) out.push('must be no more than 253 characters');
      if (!SUBDOMAIN.test(name)) out.push(SUBDOMAIN_MSG);
      break;
    case 'dns1123-label':
      if (name.length > 63) out.push('must be no more than 63 characters');
      if (!LABEL.test(name)) out.push(LABEL_MSG);
      break;
    case 'dns1035-label':
      if (name.length > 63) out.push('must be no more than 63 characters');
      if (!DNS1035.test(name)) out.push(DNS1035_MSG);
      break;
    case 'path-segment':
      if (name === '.' || name === '..') out.push(`may not be '${name}'`);
      if (name.includes('/')) out.push("may not contain '/'");
      if (name.includes('%')) out.push("may not contain '%'");
      break;
  }
  return out;
}

/** The name and namespace checks of ValidateObjectMeta; throws 422 Invalid. */
export function validateMeta(type: ResourceType, obj: KubeObject): void {
  const name = obj.metadata.name ?? '';
  const errs: FieldError[] = [];
  if (name === '') {
    errs.push({
      type: 'FieldValueRequired',
      field: 'metadata.name',
      detail: 'name or generateName is required',
    });
  } else {
    for (const p of nameProblems(name, type.nameRule ?? 'dns1123-subdomain'))
      errs.push({ type: 'FieldValueInvalid', field: 'metadata.name', value: name, detail: p });
  }
  if (type.namespaced && (obj.metadata.namespace ?? '') === '')
    errs.push({ type: 'FieldValueRequired', field: 'metadata.namespace', detail: '' });
  if (!type.namespaced && (obj.metadata.namespace ?? '') !== '')
    errs.push({
      type: 'FieldValueForbidden',
      field: 'metadata.namespace',
      detail: 'not allowed on this type',
    });
  for (const [field, map] of [
    ['metadata.labels', obj.metadata.labels],
    ['metadata.annotations', obj.metadata.annotations],
  ] as const) {
    if (map === undefined || map === null) continue;
    if (typeof map !== 'object' || Array.isArray(map))
      throw badRequest(
        `json: cannot unmarshal into Go struct field ObjectMeta.${field} of type map[string]string`,
      );
    for (const [k, v] of Object.entries(map))
      if (typeof v !== 'string')
        throw badRequest(
          `json: cannot unmarshal ${typeof v} into Go struct field ObjectMeta.${field} of type string (key ${k})`,
        );
  }
  if (errs.length > 0) throw invalid(type, name, errs);
}

const MICRO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{2}:\d{2})$/;

function getPath(obj: unknown, path: string): unknown {
  let cur = obj;
  for (const p of path.split('.')) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[p];
  }
  return cur;
}

/**
 * metav1.MicroTime is decoded with the fixed layout 2006-01-02T15:04:05.000000Z07:00: exactly six
 * fractional digits. `Date.toISOString()` (three digits) is refused with a 400 by real servers,
 * so it is refused here too.
 */
export function checkMicroTimes(type: ResourceType, obj: KubeObject): void {
  for (const path of type.microTimeFields ?? []) {
    const v = getPath(obj, path);
    if (v === undefined || v === null) continue;
    if (typeof v !== 'string' || !MICRO.test(v)) {
      const s = String(v);
      const frac = /:\d{2}(\..*|Z.*|[+-].*)?$/.exec(s)?.[1] ?? s;
      throw badRequest(
        `${type.kind} in version "${type.version}" cannot be handled as a ${type.kind}: parsing time "${s}" as "2006-01-02T15:04:05.000000Z07:00": cannot parse "${frac}" as ".000000"`,
      );
    }
  }
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** Secrets: stringData is merged into data (base64) and dropped, type defaults, TLS keys required. */
export function normalizeSecret(obj: KubeObject): void {
  const data = (obj['data'] ?? {}) as Record<string, unknown>;
  if (typeof data !== 'object' || Array.isArray(data))
    throw badRequest('Secret.data must be a map');
  for (const [k, v] of Object.entries(data)) {
    if (typeof v !== 'string' || v.length % 4 !== 0 || !BASE64.test(v))
      throw badRequest(
        `Secret in version "v1" cannot be handled as a Secret: illegal base64 data at input byte 0 (key ${k})`,
      );
  }
  const stringData = obj['stringData'];
  if (stringData !== undefined && stringData !== null) {
    for (const [k, v] of Object.entries(stringData as Record<string, unknown>))
      data[k] = Buffer.from(String(v), 'utf8').toString('base64');
  }
  delete obj['stringData'];
  if (Object.keys(data).length > 0) obj['data'] = data;
  else delete obj['data'];
  if (obj['type'] === undefined || obj['type'] === '') obj['type'] = 'Opaque';
}

export function validateSecret(obj: KubeObject, old: KubeObject | undefined): void {
  const name = obj.metadata.name ?? '';
  const t = { group: '', kind: 'Secret' };
  const data = (obj['data'] ?? {}) as Record<string, string>;
  const errs: FieldError[] = [];
  for (const k of Object.keys(data))
    if (!/^[-._a-zA-Z0-9]+$/.test(k))
      errs.push({
        type: 'FieldValueInvalid',
        field: 'data',
        value: k,
        detail:
          "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
      });
  if (obj['type'] === 'kubernetes.io/tls')
    for (const k of ['tls.crt', 'tls.key'])
      if (!(k in data)) errs.push({ type: 'FieldValueRequired', field: `data[${k}]`, detail: '' });
  if (old !== undefined && old['type'] !== obj['type'])
    errs.push({
      type: 'FieldValueInvalid',
      field: 'type',
      value: obj['type'],
      detail: 'field is immutable',
    });
  if (
    old !== undefined &&
    old['immutable'] === true &&
    JSON.stringify(old['data']) !== JSON.stringify(obj['data'])
  )
    errs.push({
      type: 'FieldValueForbidden',
      field: 'data',
      detail: 'field is immutable when `immutable` is set',
    });
  if (errs.length > 0) throw invalid(t, name, errs);
}

export function validateConfigMap(obj: KubeObject, old: KubeObject | undefined): void {
  if (
    old !== undefined &&
    old['immutable'] === true &&
    (JSON.stringify(old['data']) !== JSON.stringify(obj['data']) ||
      JSON.stringify(old['binaryData']) !== JSON.stringify(obj['binaryData']))
  )
    throw invalid({ group: '', kind: 'ConfigMap' }, obj.metadata.name ?? '', [
      {
        type: 'FieldValueForbidden',
        field: 'data',
        detail: 'field is immutable when `immutable` is set',
      },
    ]);
}

/** Pods need containers; serviceAccountName defaults to `default`, phase to Pending. */
export function defaultAndValidatePod(obj: KubeObject): void {
  const spec = (obj['spec'] ?? {}) as Record<string, unknown>;
  obj['spec'] = spec;
  if (!Array.isArray(spec['containers']) || spec['containers'].length === 0)
    throw invalid({ group: '', kind: 'Pod' }, obj.metadata.name ?? '', [
      { type: 'FieldValueRequired', field: 'spec.containers', detail: '' },
    ]);
  spec['serviceAccountName'] ??= (spec['serviceAccount'] as string | undefined) ?? 'default';
  spec['serviceAccount'] ??= spec['serviceAccountName'];
  const status = (obj['status'] ?? {}) as Record<string, unknown>;
  status['phase'] ??= 'Pending';
  obj['status'] = status;
}

/** discovery.k8s.io/v1 EndpointSlice: `addressType` required, one of three, immutable; `endpoints` a list. */
export function validateEndpointSlice(obj: KubeObject, old: KubeObject | undefined): void {
  const errs: FieldError[] = [];
  const type = obj['addressType'];
  if (type === undefined || type === '')
    errs.push({ type: 'FieldValueRequired', field: 'addressType', detail: '' });
  else if (type !== 'IPv4' && type !== 'IPv6' && type !== 'FQDN')
    errs.push({
      type: 'FieldValueNotSupported',
      field: 'addressType',
      value: type,
      detail: 'supported values: "FQDN", "IPv4", "IPv6"',
    });
  else if (old !== undefined && old['addressType'] !== type)
    errs.push({
      type: 'FieldValueInvalid',
      field: 'addressType',
      value: type,
      detail: 'field is immutable',
    });
  if (
    obj['endpoints'] !== undefined &&
    obj['endpoints'] !== null &&
    !Array.isArray(obj['endpoints'])
  )
    errs.push({
      type: 'FieldValueInvalid',
      field: 'endpoints',
      value: '',
      detail: 'must be a list',
    });
  if (errs.length > 0)
    throw invalid(
      { group: 'discovery.k8s.io', kind: 'EndpointSlice' },
      obj.metadata.name ?? '',
      errs,
    );
}

/** events.k8s.io/v1 Event: the required fields of ValidateEventCreate for the v1 API. */
export function validateEventsV1(obj: KubeObject): void {
  const errs: FieldError[] = [];
  for (const f of ['eventTime', 'reportingController', 'reportingInstance', 'action', 'reason'])
    if (obj[f] === undefined || obj[f] === '' || obj[f] === null)
      errs.push({ type: 'FieldValueRequired', field: f, detail: '' });
  if (obj['type'] !== 'Normal' && obj['type'] !== 'Warning')
    errs.push({
      type: 'FieldValueNotSupported',
      field: 'type',
      value: obj['type'] ?? '',
      detail: 'supported values: "Normal", "Warning"',
    });
  if (errs.length > 0)
    throw invalid({ group: 'events.k8s.io', kind: 'Event' }, obj.metadata.name ?? '', errs);
}
