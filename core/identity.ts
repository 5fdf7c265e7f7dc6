/**
 * Workload identity names (Linkerd-compatible) and their SPIFFE form.
 *
 * `<sa>.<ns>.serviceaccount.identity.<control-plane-ns>.<trust-domain>`, where sa, ns and the
 * control-plane namespace are DNS-1123 labels and the trust domain is a DNS-1123 subdomain.
 */
import { MeshidError } from './errors.js';

/** The two settings every identity name is built from. */
export interface IdentityNaming {
  readonly trustDomain: string;
  readonly controlPlaneNamespace: string;
}

/**
 * The label the injector puts on every pod it injects, naming the control-plane namespace (as
 * Linkerd's injector does). `meshid trust sync` selects on it to find the namespaces that need a
 * copy of the anchors ConfigMap because a pod there opted in by itself.
 */
export const CONTROL_PLANE_NS_LABEL = 'linkerd.io/control-plane-ns';

/** The injection opt-in, on a pod or its namespace: `enabled` or `disabled` (the pod's wins). */
export const INJECT_ANNOTATION = 'meshid.io/inject';

/**
 * The namespace label (Linkerd's) that, set to `disabled`, keeps a namespace out of the
 * injector's namespaceSelector: its pods are never injected, so it needs no anchors copy.
 */
export const ADMISSION_WEBHOOKS_LABEL = 'config.linkerd.io/admission-webhooks';

/** A Kubernetes ServiceAccount, the unit of workload identity. */
export interface WorkloadIdentity {
  readonly namespace: string;
  readonly serviceAccount: string;
}

const LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** True for a DNS-1123 label: lower-case alphanumerics and '-', 1–63 characters. */
export function isDns1123Label(s: string): boolean {
  return s.length > 0 && s.length <= 63 && LABEL.test(s);
}

/** True for a DNS-1123 subdomain: dot-separated labels, at most 253 characters, no trailing dot. */
export function isDns1123Subdomain(s: string): boolean {
  return s.length > 0 && s.length <= 253 && s.split('.').every(isDns1123Label);
}

/**
 * Checks the naming settings; returns a list of problems (empty when valid).
 */
export function namingProblems(naming: IdentityNaming): string[] {
  const problems: string[] = [];
  if (!isDns1123Subdomain(naming.trustDomain)) {
    problems.push(`trust domain "${naming.trustDomain}" is not a DNS-1123 subdomain`);
  }
  if (!isDns1123Label(naming.controlPlaneNamespace)) {
    problems.push(
      `control-plane namespace "${naming.controlPlaneNamespace}" is not a DNS-1123 label`,
    );
  }
  return problems;
}

/**
 * The identity name of a workload.
 *
 * @example
 * ```ts
 * identityName({ namespace: 'emojivoto', serviceAccount: 'web' }, naming);
 * // 'web.emojivoto.serviceaccount.identity.linkerd.cluster.local'
 * ```
 */
export function identityName(w: WorkloadIdentity, naming: IdentityNaming): string {
  return `${w.serviceAccount}.${w.namespace}.serviceaccount.identity.${naming.controlPlaneNamespace}.${naming.trustDomain}`;
}

/**
 * The SPIFFE ID of a workload: `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
 *
 * @example
 * ```ts
 * spiffeId({ namespace: 'emojivoto', serviceAccount: 'web' }, naming);
 * // 'spiffe://cluster.local/ns/emojivoto/sa/web'
 * ```
 */
export function spiffeId(w: WorkloadIdentity, naming: IdentityNaming): string {
  return `spiffe://${naming.trustDomain}/ns/${w.namespace}/sa/${w.serviceAccount}`;
}

/**
 * Parses an identity name of this trust domain back into its ServiceAccount.
 * Throws ERR_IDENTITY_INVALID naming what is wrong.
 *
 * @example
 * ```ts
 * parseIdentityName('web.emojivoto.serviceaccount.identity.linkerd.cluster.local', naming);
 * // { namespace: 'emojivoto', serviceAccount: 'web' }
 * ```
 */
export function parseIdentityName(name: string, naming: IdentityNaming): WorkloadIdentity {
  const suffix = `.serviceaccount.identity.${naming.controlPlaneNamespace}.${naming.trustDomain}`;
  if (name.length > 253) {
    throw new MeshidError(
      'ERR_IDENTITY_INVALID',
      `identity is ${name.length} characters long, over 253`,
    );
  }
  if (!name.endsWith(suffix)) {
    throw new MeshidError(
      'ERR_IDENTITY_INVALID',
      `identity "${printable(name)}" is not of the form <sa>.<ns>${suffix}`,
    );
  }
  const head = name.slice(0, name.length - suffix.length).split('.');
  if (head.length !== 2) {
    throw new MeshidError(
      'ERR_IDENTITY_INVALID',
      `identity "${printable(name)}" must have exactly a service account and a namespace before "${suffix}"`,
    );
  }
  const [serviceAccount, namespace] = head as [string, string];
  for (const [what, value] of [
    ['service account', serviceAccount],
    ['namespace', namespace],
  ] as const) {
    if (!isDns1123Label(value)) {
      throw new MeshidError(
        'ERR_IDENTITY_INVALID',
        `identity's ${what} "${printable(value)}" is not a DNS-1123 label`,
      );
    }
  }
  return { namespace, serviceAccount };
}

/**
 * Parses a Kubernetes ServiceAccount username, `system:serviceaccount:<ns>:<sa>`.
 * Throws ERR_TOKEN_MALFORMED naming what is wrong.
 *
 * @example
 * ```ts
 * parseServiceAccountUsername('system:serviceaccount:emojivoto:web');
 * // { namespace: 'emojivoto', serviceAccount: 'web' }
 * ```
 */
export function parseServiceAccountUsername(username: string): WorkloadIdentity {
  const parts = username.split(':');
  if (parts.length !== 4 || parts[0] !== 'system' || parts[1] !== 'serviceaccount') {
    throw new MeshidError(
      'ERR_TOKEN_MALFORMED',
      `token subject "${printable(username)}" is not of the form system:serviceaccount:<namespace>:<name>`,
    );
  }
  const namespace = parts[2]!;
  const serviceAccount = parts[3]!;
  if (!isDns1123Label(namespace)) {
    throw new MeshidError(
      'ERR_TOKEN_MALFORMED',
      `token subject's namespace "${printable(namespace)}" is not a DNS-1123 label`,
    );
  }
  if (!isDns1123Label(serviceAccount)) {
    throw new MeshidError(
      'ERR_TOKEN_MALFORMED',
      `token subject's service account "${printable(serviceAccount)}" is not a DNS-1123 label`,
    );
  }
  return { namespace, serviceAccount };
}

/** Makes an untrusted string safe to put in a message or log: bounded, control characters escaped. */
export function printable(s: string, max = 80): string {
  const cut = s.length > max ? `${s.slice(0, max)}…` : s;
  return cut.replace(
    // eslint-disable-next-line no-control-regex -- matching control characters is the point
    /[\u0000-\u001f\u007f-\u009f"\\]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}
