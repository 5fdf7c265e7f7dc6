/**
 * coordination.k8s.io/v1 Lease as the API server validates it (ValidateLeaseSpec, from the
 * published API reference): a TEST DOUBLE. The spec's integers are int32 (a string or a fraction
 * does not decode: 400), `leaseDurationSeconds` is greater than 0, `leaseTransitions` at least 0,
 * `strategy` only `OldestEmulationVersion`, and `preferredHolder` only beside a `strategy`. The
 * MicroTime fields (`acquireTime`, `renewTime`) are parsed by the table's `microTimeFields`.
 */
import type { ResourceType } from './resources.js';
import { badRequest, invalid } from './status.js';
import type { FieldError } from './status.js';
import type { KubeObject } from './types.js';

const INT32_MAX = 2 ** 31 - 1;
const STRATEGIES = ['OldestEmulationVersion'];

function int32(spec: Record<string, unknown>, field: string): number | undefined {
  const v = spec[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || Math.abs(v) > INT32_MAX)
    throw badRequest(
      `json: cannot unmarshal ${typeof v === 'number' ? 'number' : typeof v} into Go struct field LeaseSpec.spec.${field} of type int32`,
    );
  return v;
}

function text(spec: Record<string, unknown>, field: string): string | undefined {
  const v = spec[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string')
    throw badRequest(
      `json: cannot unmarshal ${typeof v} into Go struct field LeaseSpec.spec.${field} of type string`,
    );
  return v;
}

/**
 * Validates a Lease on create and update: throws 400 for a field that does not decode, 422 Invalid
 * for one the validation refuses.
 *
 * @example
 * ```ts
 * validateLease(leaseType, { metadata: { name: 'x' }, spec: { leaseDurationSeconds: 0 } }); // throws 422
 * ```
 */
export function validateLease(t: ResourceType, obj: KubeObject): void {
  const raw = obj['spec'];
  if (raw === undefined || raw === null) return;
  if (typeof raw !== 'object' || Array.isArray(raw))
    throw badRequest('json: cannot unmarshal into Go struct field Lease.spec of type v1.LeaseSpec');
  const spec = raw as Record<string, unknown>;
  const errs: FieldError[] = [];
  const duration = int32(spec, 'leaseDurationSeconds');
  const transitions = int32(spec, 'leaseTransitions');
  text(spec, 'holderIdentity');
  const strategy = text(spec, 'strategy');
  const preferred = text(spec, 'preferredHolder');
  if (duration !== undefined && duration <= 0)
    errs.push({
      type: 'FieldValueInvalid',
      field: 'spec.leaseDurationSeconds',
      value: duration,
      detail: 'must be greater than 0',
    });
  if (transitions !== undefined && transitions < 0)
    errs.push({
      type: 'FieldValueInvalid',
      field: 'spec.leaseTransitions',
      value: transitions,
      detail: 'must be greater than or equal to 0',
    });
  if (strategy !== undefined && !STRATEGIES.includes(strategy))
    errs.push({
      type: 'FieldValueNotSupported',
      field: 'spec.strategy',
      value: strategy,
      detail: `supported values: ${STRATEGIES.map((s) => `"${s}"`).join(', ')}`,
    });
  if (preferred !== undefined && preferred !== '' && (strategy ?? '') === '')
    errs.push({
      type: 'FieldValueForbidden',
      field: 'spec.preferredHolder',
      detail: 'may only be specified if `strategy` is defined',
    });
  if (errs.length > 0) throw invalid(t, obj.metadata.name ?? '', errs);
}
