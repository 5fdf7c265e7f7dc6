/**
 * `null` members of a request body, as the real API reads them. kube-apiserver decodes a body into
 * the kind's Go struct, where `null` is the zero value: an absent pointer, slice or map, which is
 * then defaulted (`TokenRequest.spec.expirationSeconds: null` is one hour) and never stored; for
 * custom resources, the structural schema prunes `null` from fields that are not `nullable`.
 * Clients send them: `kubectl create token` without `--duration` sends
 * `"expirationSeconds": null`, and objects serialised from Go carry `"creationTimestamp": null`.
 *
 * Only whole-object bodies go through here (create, update, reviews, TokenRequest, DeleteOptions);
 * in a merge patch `null` means "remove this field" and is kept (patch.ts).
 */
import type { JsonObject } from './types.js';

/** A copy of `value` without the object members whose value is `null`, at any depth. */
export function withoutNulls(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutNulls);
  if (typeof value !== 'object' || value === null) return value;
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(value as JsonObject)) {
    if (v !== null) out[k] = withoutNulls(v);
  }
  return out;
}
