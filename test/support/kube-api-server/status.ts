/**
 * metav1.Status bodies with the real API's reasons, codes, details and message wordings
 * (k8s.io/apimachinery/pkg/api/errors). Every failure in the server is an {@link ApiError}.
 */
import { qualifiedKind, qualifiedResource } from './resources.js';
import type { ResourceType } from './resources.js';

/** A field-level cause of an Invalid Status. */
export interface StatusCause {
  readonly reason: string;
  readonly message: string;
  readonly field: string;
}

/** The wire shape of a metav1.Status. */
export interface StatusBody {
  kind: 'Status';
  apiVersion: 'v1';
  metadata: Record<string, never>;
  status: 'Failure' | 'Success';
  message?: string;
  reason?: string;
  details?: { name?: string; group?: string; kind?: string; uid?: string; causes?: StatusCause[] };
  code: number;
}

/** An error the server answers with a Status body. */
export class ApiError extends Error {
  constructor(readonly status: StatusBody) {
    super(status.message ?? status.reason ?? 'error');
    this.name = 'ApiError';
  }
  get code(): number {
    return this.status.code;
  }
}

type Gr = Pick<ResourceType, 'group' | 'plural'>;

function failure(
  code: number,
  reason: string,
  message: string,
  details?: StatusBody['details'],
): ApiError {
  const body: StatusBody = {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message,
    reason,
    code,
  };
  if (details !== undefined) body.details = details;
  return new ApiError(body);
}

function grDetails(t: Gr, name: string): NonNullable<StatusBody['details']> {
  const d: NonNullable<StatusBody['details']> = {};
  if (name !== '') d.name = name;
  if (t.group !== '') d.group = t.group;
  d.kind = t.plural;
  return d;
}

export function notFound(t: Gr, name: string): ApiError {
  return failure(
    404,
    'NotFound',
    `${qualifiedResource(t)} "${name}" not found`,
    grDetails(t, name),
  );
}

export function alreadyExists(t: Gr, name: string): ApiError {
  return failure(
    409,
    'AlreadyExists',
    `${qualifiedResource(t)} "${name}" already exists`,
    grDetails(t, name),
  );
}

export const MODIFIED_MESSAGE =
  'the object has been modified; please apply your changes to the latest version and try again';

export function conflict(t: Gr, name: string, why: string = MODIFIED_MESSAGE): ApiError {
  return failure(
    409,
    'Conflict',
    `Operation cannot be fulfilled on ${qualifiedResource(t)} "${name}": ${why}`,
    grDetails(t, name),
  );
}

/** One field error of an Invalid Status, worded as field.Error.Error() does. */
export interface FieldError {
  readonly type:
    'FieldValueInvalid' | 'FieldValueRequired' | 'FieldValueForbidden' | 'FieldValueNotSupported';
  readonly field: string;
  readonly value?: unknown;
  readonly detail: string;
}

function fieldErrorText(e: FieldError): string {
  switch (e.type) {
    case 'FieldValueInvalid':
      return `Invalid value: ${JSON.stringify(e.value)}: ${e.detail}`;
    case 'FieldValueRequired':
      return `Required value${e.detail === '' ? '' : `: ${e.detail}`}`;
    case 'FieldValueForbidden':
      return `Forbidden${e.detail === '' ? '' : `: ${e.detail}`}`;
    case 'FieldValueNotSupported':
      return `Unsupported value: ${JSON.stringify(e.value)}${e.detail === '' ? '' : `: ${e.detail}`}`;
  }
}

export function invalid(
  t: Pick<ResourceType, 'group' | 'kind'>,
  name: string,
  errors: readonly FieldError[],
): ApiError {
  const texts = errors.map((e) => `${e.field}: ${fieldErrorText(e)}`);
  const summary = texts.length === 1 ? texts[0]! : `[${texts.join(', ')}]`;
  const details: NonNullable<StatusBody['details']> = {};
  if (name !== '') details.name = name;
  if (t.group !== '') details.group = t.group;
  details.kind = t.kind;
  details.causes = errors.map((e) => ({
    reason: e.type,
    message: fieldErrorText(e),
    field: e.field,
  }));
  return failure(422, 'Invalid', `${qualifiedKind(t)} "${name}" is invalid: ${summary}`, details);
}

export function badRequest(message: string): ApiError {
  return failure(400, 'BadRequest', message);
}

export function unauthorized(): ApiError {
  return failure(401, 'Unauthorized', 'Unauthorized');
}

/** 403 with the wording of the real authorizer's refusal (responsewriters.forbiddenMessage). */
export function forbidden(gr: Gr | undefined, name: string, why: string): ApiError {
  if (gr === undefined) return failure(403, 'Forbidden', `forbidden: ${why}`, {});
  const head = name === '' ? qualifiedResource(gr) : `${qualifiedResource(gr)} "${name}"`;
  return failure(403, 'Forbidden', `${head} is forbidden: ${why}`, grDetails(gr, name));
}

export function expired(message: string): ApiError {
  return failure(410, 'Expired', message);
}

export function methodNotAllowed(): ApiError {
  return failure(
    405,
    'MethodNotAllowed',
    'the server does not allow this method on the requested resource',
  );
}

export function notFoundPath(): ApiError {
  return failure(404, 'NotFound', 'the server could not find the requested resource', {});
}

export function unsupportedMediaType(contentType: string): ApiError {
  return failure(
    415,
    'UnsupportedMediaType',
    `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got ${contentType})`,
  );
}

export function internalError(message: string): ApiError {
  return failure(500, 'InternalError', `Internal error occurred: ${message}`, {
    causes: [{ reason: '', message, field: '' }],
  });
}

export function serviceUnavailable(message: string): ApiError {
  return failure(503, 'ServiceUnavailable', message);
}

export function timeout(message: string): ApiError {
  return failure(504, 'Timeout', message);
}

/** A Success Status, as DELETE of most types answers. */
export function success(t: Gr, name: string, uid: string | undefined): StatusBody {
  const details = grDetails(t, name);
  if (uid !== undefined) details.uid = uid;
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', details, code: 200 };
}
