/**
 * PodCertificateRequest (certificates.k8s.io, KEP-4317) as the API server serves it: a TEST
 * DOUBLE written from the published KEP and API reference, not kube-apiserver's code.
 *
 * What the Kubernetes version switch changes (`podCertificates` option of the server):
 * - `off` (the default, as on 1.35 and 1.36 without the `PodCertificateRequest` feature gate and
 *   `--runtime-config=certificates.k8s.io/v1beta1/podcertificaterequests=true`): not served, 404.
 * - `1.35`: v1beta1 only, and it has no `stubPKCS10Request` field (dropped as an unknown field):
 *   `pkixPublicKey` + `proofOfPossession` are required.
 * - `1.36`: v1beta1 with either the stub CSR or the public key + proof of possession, never both.
 * - `1.37`: v1 as well (stub CSR only; v1 drops the two deprecated fields when it shows an object).
 *
 * Rules kept (ValidatePodCertificateRequestCreate/Update/StatusUpdate and the noderestriction
 * admission plugin, as the KEP describes them): spec fields required and bounded; signerName a
 * domain-prefixed path; maxExpirationSeconds defaulted to 86400 and kept in [3600, 7862400]
 * ([3600, 86400] for kubernetes.io signers); the key one of RSA 3072/4096, ECDSA P-256/384/521,
 * Ed25519; the proof of possession over the pod UID's ASCII bytes verified; the stub CSR's
 * signature verified and the CSR empty (no subject, no attributes); spec immutable; status only
 * through `/status`, once, to Issued (chain, notBefore/notAfter equal to the leaf's and notBefore
 * within 5 minutes of now, lifetime in [1 h, maxExpirationSeconds], beginRefreshAt at least
 * 10 minutes inside both ends, leaf issued to the requested key), Denied or Failed (conditions
 * only), and immutable after; a status writer needs `sign` on the signer
 * (`signers`, resourceName the signer name or `<domain>/*`). A node (user `system:node:<n>`)
 * may only create requests for a pod bound to it, naming the pod's UID, ServiceAccount and UID,
 * and the node's UID.
 */
import { checkKey } from './pod-certificate-keys.js';
import type { ResourceType } from './resources.js';
import { apiVersionOf } from './resources.js';
import { forbidden, invalid } from './status.js';
import type { FieldError } from './status.js';
import type { Store } from './store.js';
import { isObject } from './types.js';
import type { JsonObject, KubeObject, UserInfo } from './types.js';

/** Which Kubernetes version's PodCertificateRequest API the server plays; `off` serves none. */
export type PodCertificatesMode = 'off' | '1.35' | '1.36' | '1.37';

const GROUP = 'certificates.k8s.io';
const PLURAL = 'podcertificaterequests';
const MIN_MAX_EXPIRATION = 3600;
const MAX_MAX_EXPIRATION = 7_862_400;
const KUBERNETES_MAX_MAX_EXPIRATION = 86_400;
function pcrType(version: 'v1beta1' | 'v1', stub: boolean, checks: boolean): ResourceType {
  return {
    group: GROUP,
    version,
    kind: 'PodCertificateRequest',
    plural: PLURAL,
    namespaced: true,
    subresources: ['status'],
    shortNames: ['pcr'],
    fieldLabels: ['spec.signerName', 'spec.podName', 'spec.nodeName'],
    podCertificateFields: {
      legacyKey: version === 'v1beta1',
      stub,
      checks,
    },
  } as ResourceType;
}

/** What fields a served version has (kept on the type entry). */
interface PcrFields {
  /** `pkixPublicKey` and `proofOfPossession` (v1beta1). */
  readonly legacyKey: boolean;
  /** `stubPKCS10Request` (v1beta1 from 1.36, v1). */
  readonly stub: boolean;
  /**
   * The key, proof-of-possession, stub-CSR and lifetime checks on create. Off only to play an API
   * server that lets anything through, so tests reach a signer's own checks.
   */
  readonly checks: boolean;
}

export function fieldsOf(t: ResourceType): PcrFields | undefined {
  return (t as ResourceType & { podCertificateFields?: PcrFields }).podCertificateFields;
}

/**
 * The PodCertificateRequest types a mode serves (none for `off`).
 *
 * @example
 * ```ts
 * const api = await startKubeApiServer({ podCertificates: '1.36' });
 * ```
 */
export function podCertificateResources(mode: PodCertificatesMode, checks = true): ResourceType[] {
  switch (mode) {
    case 'off':
      return [];
    case '1.35':
      return [pcrType('v1beta1', false, checks)];
    case '1.36':
      return [pcrType('v1beta1', true, checks)];
    case '1.37':
      return [pcrType('v1', true, checks), pcrType('v1beta1', true, checks)];
  }
}

/** True for a PodCertificateRequest type of any version. */
export function isPodCertificateRequest(t: Pick<ResourceType, 'group' | 'plural'>): boolean {
  return t.group === GROUP && t.plural === PLURAL;
}

export function specOf(o: KubeObject): JsonObject {
  return isObject(o['spec']) ? o['spec'] : {};
}

export function statusOf(o: KubeObject): JsonObject {
  return isObject(o['status']) ? o['status'] : {};
}

/**
 * The object as a version shows it: that version's apiVersion, and v1 without the two fields it
 * does not have (a 1.35 kubelet's request seen through v1 has no key at all, as the KEP says).
 */
export function presentPodCertificateRequest(t: ResourceType, o: KubeObject): KubeObject {
  const f = fieldsOf(t);
  if (f === undefined) return o;
  const out = structuredClone(o);
  out.apiVersion = apiVersionOf(t);
  const spec = specOf(out);
  if (!f.legacyKey) {
    delete spec['pkixPublicKey'];
    delete spec['proofOfPossession'];
  }
  if (!f.stub) delete spec['stubPKCS10Request'];
  return out;
}

function requiredString(spec: JsonObject, field: string, errs: FieldError[]): string {
  const v = spec[field];
  if (typeof v !== 'string' || v === '') {
    errs.push({ type: 'FieldValueRequired', field: `spec.${field}`, detail: 'must not be empty' });
    return '';
  }
  if (v.length > 253)
    errs.push({
      type: 'FieldValueInvalid',
      field: `spec.${field}`,
      value: v,
      detail: 'must be no more than 253 characters',
    });
  return v;
}

/**
 * Create and update validation (called with `old` on update): defaults, the create checks, and
 * spec immutability. Throws the 422 Invalid the API would.
 */
export function validatePodCertificateRequest(
  t: ResourceType,
  obj: KubeObject,
  old: KubeObject | undefined,
): void {
  const f = fieldsOf(t);
  if (f === undefined) return;
  const name = obj.metadata.name ?? '';
  if (!isObject(obj['spec'])) obj['spec'] = {};
  const spec = specOf(obj);
  // Fields this version does not have are dropped, as unknown JSON fields are.
  if (!f.legacyKey) {
    delete spec['pkixPublicKey'];
    delete spec['proofOfPossession'];
  }
  if (!f.stub) delete spec['stubPKCS10Request'];
  if (old !== undefined) {
    const before = presentPodCertificateRequest(t, old);
    if (JSON.stringify(specOf(before)) !== JSON.stringify(spec))
      throw invalid(t, name, [
        {
          type: 'FieldValueInvalid',
          field: 'spec',
          value: '<value omitted>',
          detail: 'field is immutable',
        },
      ]);
    return;
  }
  spec['maxExpirationSeconds'] ??= KUBERNETES_MAX_MAX_EXPIRATION;
  const errs: FieldError[] = [];
  const signer = requiredString(spec, 'signerName', errs);
  if (signer !== '' && !/^[a-z0-9.-]+\.[a-z]+\/[A-Za-z0-9._-]+$/.test(signer))
    errs.push({
      type: 'FieldValueInvalid',
      field: 'spec.signerName',
      value: signer,
      detail: 'must be a fully qualified domain and path of the form "example.com/signer-name"',
    });
  for (const field of [
    'podName',
    'podUID',
    'serviceAccountName',
    'serviceAccountUID',
    'nodeName',
    'nodeUID',
  ])
    requiredString(spec, field, errs);
  const max = spec['maxExpirationSeconds'];
  const top = signer.startsWith('kubernetes.io/')
    ? KUBERNETES_MAX_MAX_EXPIRATION
    : MAX_MAX_EXPIRATION;
  const floor = f.checks ? MIN_MAX_EXPIRATION : 1;
  if (typeof max !== 'number' || !Number.isInteger(max) || max < floor || max > top)
    errs.push({
      type: 'FieldValueInvalid',
      field: 'spec.maxExpirationSeconds',
      value: max,
      detail: `must be in the range [${floor}, ${top}]`,
    });
  const annotations = spec['unverifiedUserAnnotations'];
  if (annotations !== undefined && isObject(annotations))
    for (const k of Object.keys(annotations))
      if (!/^[a-z0-9.-]+\.[a-z]+\/.+$/.test(k))
        errs.push({
          type: 'FieldValueInvalid',
          field: 'spec.unverifiedUserAnnotations',
          value: k,
          detail: 'keys must be domain-prefixed',
        });
  if (errs.length === 0 && f.checks) checkKey(spec, f, errs);
  if (errs.length > 0) throw invalid(t, name, errs);
}

/**
 * The noderestriction admission plugin's PodCertificateRequest rule: a node may only ask for a
 * pod bound to it, with the pod's, ServiceAccount's and node's real names and UIDs. Other
 * users (with RBAC `create`) are not restricted by it, as on a real cluster.
 */
export function admitPodCertificateRequest(
  t: ResourceType,
  store: Store,
  pods: ResourceType,
  nodes: ResourceType | undefined,
  user: UserInfo,
  namespace: string,
  body: unknown,
): void {
  const m = /^system:node:(.+)$/.exec(user.username);
  if (m === null || !user.groups.includes('system:nodes')) return;
  const node = m[1]!;
  const spec = isObject(body) && isObject(body['spec']) ? body['spec'] : {};
  const deny = (why: string): never => {
    throw forbidden(t, '', `pod certificate request: ${why}`);
  };
  if (spec['nodeName'] !== node)
    deny(`node "${node}" may not request a certificate naming node "${String(spec['nodeName'])}"`);
  const pod = store.get(pods, namespace, String(spec['podName'] ?? ''));
  if (pod === undefined) return deny(`pod ${namespace}/${String(spec['podName'])} does not exist`);
  const podSpec = isObject(pod['spec']) ? pod['spec'] : {};
  if (pod.metadata.uid !== spec['podUID']) deny('spec.podUID is not the UID of the named pod');
  if (podSpec['nodeName'] !== node) deny(`pod is not bound to node "${node}"`);
  if ((podSpec['serviceAccountName'] ?? 'default') !== spec['serviceAccountName'])
    deny("spec.serviceAccountName is not the pod's ServiceAccount");
  const sa = store.get(
    { ...pods, plural: 'serviceaccounts', kind: 'ServiceAccount' },
    namespace,
    String(spec['serviceAccountName']),
  );
  if (sa === undefined || sa.metadata.uid !== spec['serviceAccountUID'])
    deny("spec.serviceAccountUID is not the UID of the pod's ServiceAccount");
  const n = nodes === undefined ? undefined : store.get(nodes, '', node);
  if (n === undefined || n.metadata.uid !== spec['nodeUID'])
    deny('spec.nodeUID is not the UID of the node');
}
