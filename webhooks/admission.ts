/**
 * The `admission.k8s.io/v1` AdmissionReview envelope: what the API server sends, checked
 * strictly, and what it expects back. A review that cannot be answered (no uid, wrong kind or
 * version, no request) is an ERR_WEBHOOK_REVIEW_INVALID, which the server turns into a 400.
 */
import { JsonTooDeep, MeshidError, parseJson, printable } from '../core/index.js';

/** A JSON object as decoded. */
export type JsonObject = { [key: string]: unknown };

/** The parts of `request` a handler uses (the API server sends more; it is kept in `raw`). */
export interface AdmissionRequest {
  readonly uid: string;
  readonly kind: { readonly group: string; readonly version: string; readonly kind: string };
  readonly resource: {
    readonly group: string;
    readonly version: string;
    readonly resource: string;
  };
  readonly subResource?: string;
  readonly name?: string;
  readonly namespace?: string;
  readonly operation: 'CREATE' | 'UPDATE' | 'DELETE' | 'CONNECT';
  readonly object?: JsonObject;
  readonly oldObject?: JsonObject;
  readonly dryRun: boolean;
  readonly raw: JsonObject;
}

/** A JSON Patch (RFC 6902) operation, as the injector writes them. */
export interface PatchOperation {
  readonly op: 'add' | 'replace' | 'remove' | 'test';
  readonly path: string;
  readonly value?: unknown;
}

/** What a handler decides. */
export interface AdmissionResult {
  readonly allowed: boolean;
  /** For a refusal: the status the API server shows the user (code defaults to 403 here). */
  readonly status?: { readonly code?: number; readonly message: string; readonly reason?: string };
  /** For a mutation: applied by the API server in order. */
  readonly patch?: readonly PatchOperation[];
  /** Shown by kubectl as "Warning: …" (each at most 120 characters is what the API keeps best). */
  readonly warnings?: readonly string[];
}

/** One webhook's logic: a decision for a review request. */
export type AdmissionHandler = (request: AdmissionRequest) => Promise<AdmissionResult>;

const OPERATIONS = new Set(['CREATE', 'UPDATE', 'DELETE', 'CONNECT']);

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function invalid(message: string): MeshidError {
  return new MeshidError('ERR_WEBHOOK_REVIEW_INVALID', message);
}

function gvk(v: unknown, field: string, third: 'kind' | 'resource'): Record<string, string> {
  if (!isObject(v)) throw invalid(`request.${field} must be an object`);
  const out: Record<string, string> = {};
  for (const k of ['group', 'version', third]) {
    const x = v[k] ?? '';
    if (typeof x !== 'string') throw invalid(`request.${field}.${k} must be a string`);
    out[k] = x;
  }
  return out;
}

/**
 * Parses the body of a webhook call into its request. Throws ERR_JSON_TOO_DEEP for a body nested
 * deeper than core's bound (before parsing it), else ERR_WEBHOOK_REVIEW_INVALID naming what is
 * wrong: not JSON, not an object, `apiVersion` not `admission.k8s.io/v1`, `kind` not
 * `AdmissionReview`, no `request`, no `uid`, an unknown `operation`, an `object` that is not an
 * object.
 *
 * @example
 * ```ts
 * const request = parseAdmissionReview(await readBody(req));
 * ```
 */
export function parseAdmissionReview(body: string): AdmissionRequest {
  let doc: unknown;
  try {
    doc = parseJson(body, 'the request body');
  } catch (err) {
    if (err instanceof JsonTooDeep) throw err;
    throw invalid(`the body is not JSON: ${(err as Error).message}`);
  }
  if (!isObject(doc)) throw invalid('the body is not a JSON object');
  if (doc['apiVersion'] !== 'admission.k8s.io/v1')
    throw invalid(
      `apiVersion must be admission.k8s.io/v1, got ${typeof doc['apiVersion'] === 'string' ? `"${printable(doc['apiVersion'])}"` : 'none'} (admissionReviewVersions: ["v1"])`,
    );
  if (doc['kind'] !== 'AdmissionReview')
    throw invalid(
      `kind must be AdmissionReview, got ${typeof doc['kind'] === 'string' ? `"${printable(doc['kind'])}"` : 'none'}`,
    );
  const r = doc['request'];
  if (!isObject(r)) throw invalid('the review has no request object');
  const uid = r['uid'];
  if (typeof uid !== 'string' || uid === '') throw invalid('request.uid is missing');
  if (uid.length > 256) throw invalid('request.uid is longer than 256 characters');
  const operation = r['operation'];
  if (typeof operation !== 'string' || !OPERATIONS.has(operation))
    throw invalid('request.operation must be CREATE, UPDATE, DELETE or CONNECT');
  for (const f of ['object', 'oldObject'] as const) {
    if (r[f] !== undefined && r[f] !== null && !isObject(r[f]))
      throw invalid(`request.${f} must be an object`);
  }
  const str = (k: string): string | undefined => {
    const v = r[k];
    if (v === undefined || v === null || v === '') return undefined;
    if (typeof v !== 'string') throw invalid(`request.${k} must be a string`);
    return v;
  };
  const kind = gvk(r['kind'], 'kind', 'kind');
  const resource = gvk(r['resource'], 'resource', 'resource');
  const name = str('name');
  const namespace = str('namespace');
  const subResource = str('subResource');
  return {
    uid,
    kind: { group: kind['group']!, version: kind['version']!, kind: kind['kind']! },
    resource: {
      group: resource['group']!,
      version: resource['version']!,
      resource: resource['resource']!,
    },
    ...(subResource === undefined ? {} : { subResource }),
    ...(name === undefined ? {} : { name }),
    ...(namespace === undefined ? {} : { namespace }),
    operation: operation as AdmissionRequest['operation'],
    ...(isObject(r['object']) ? { object: r['object'] } : {}),
    ...(isObject(r['oldObject']) ? { oldObject: r['oldObject'] } : {}),
    dryRun: r['dryRun'] === true,
    raw: r,
  };
}

/**
 * The AdmissionReview the API server expects back: the same `uid`, `allowed`, and for a
 * mutation the base64 JSON Patch with `patchType: JSONPatch`.
 *
 * @example
 * ```ts
 * res.end(JSON.stringify(admissionResponse(request.uid, { allowed: true, patch })));
 * ```
 */
export function admissionResponse(uid: string, result: AdmissionResult): JsonObject {
  const response: JsonObject = { uid, allowed: result.allowed };
  if (result.status !== undefined) {
    response['status'] = {
      code: result.status.code ?? (result.allowed ? 200 : 403),
      message: result.status.message,
      ...(result.status.reason === undefined ? {} : { reason: result.status.reason }),
    };
  }
  if (result.allowed && result.patch !== undefined && result.patch.length > 0) {
    response['patchType'] = 'JSONPatch';
    response['patch'] = Buffer.from(JSON.stringify(result.patch), 'utf8').toString('base64');
  }
  if (result.warnings !== undefined && result.warnings.length > 0)
    response['warnings'] = [...result.warnings];
  return { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response };
}

/**
 * Escapes one JSON Pointer token (RFC 6901): `~` → `~0`, `/` → `~1`, so an annotation key such as
 * `meshid.io/inject` can be a path segment.
 *
 * @example
 * ```ts
 * `/metadata/annotations/${pointerToken('meshid.io/inject')}`; // '/metadata/annotations/meshid.io~1inject'
 * ```
 */
export function pointerToken(token: string): string {
  return token.replace(/~/g, '~0').replace(/\//g, '~1');
}
