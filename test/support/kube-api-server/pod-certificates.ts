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
import {
  createPublicKey,
  constants as cryptoConstants,
  verify as cryptoVerify,
  X509Certificate,
} from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import type { ResourceType } from './resources.js';
import { apiVersionOf } from './resources.js';
import { forbidden, invalid } from './status.js';
import type { FieldError } from './status.js';
import type { Store } from './store.js';
import type { JsonObject, KubeObject, UserInfo } from './types.js';

/** Which Kubernetes version's PodCertificateRequest API the server plays; `off` serves none. */
export type PodCertificatesMode = 'off' | '1.35' | '1.36' | '1.37';

const GROUP = 'certificates.k8s.io';
const PLURAL = 'podcertificaterequests';
const MIN_MAX_EXPIRATION = 3600;
const MAX_MAX_EXPIRATION = 7_862_400;
const KUBERNETES_MAX_MAX_EXPIRATION = 86_400;
const MAX_PKIX_BYTES = 10 * 1024;
const MAX_POP_BYTES = 10 * 1024;
const MAX_CHAIN_BYTES = 100 * 1024;
const TERMINAL = ['Issued', 'Denied', 'Failed'] as const;

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

function fieldsOf(t: ResourceType): PcrFields | undefined {
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

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function specOf(o: KubeObject): JsonObject {
  return isObject(o['spec']) ? o['spec'] : {};
}

function statusOf(o: KubeObject): JsonObject {
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

function bytesField(
  spec: JsonObject,
  field: string,
  errs: FieldError[],
  max: number,
): Buffer | undefined {
  const v = spec[field];
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(v)) {
    errs.push({
      type: 'FieldValueInvalid',
      field: `spec.${field}`,
      value: '<value omitted>',
      detail: 'must be base64-encoded bytes',
    });
    return undefined;
  }
  const b = Buffer.from(v, 'base64');
  if (b.length > max) {
    errs.push({
      type: 'FieldValueInvalid',
      field: `spec.${field}`,
      value: '<value omitted>',
      detail: `must have at most ${max} bytes`,
    });
    return undefined;
  }
  return b;
}

/** The key types the API accepts; undefined when `key` is one, else the problem. */
function keyProblem(key: KeyObject): string | undefined {
  const d = key.asymmetricKeyDetails ?? {};
  switch (key.asymmetricKeyType) {
    case 'ed25519':
      return undefined;
    case 'ec':
      return ['prime256v1', 'secp384r1', 'secp521r1'].includes(d.namedCurve ?? '')
        ? undefined
        : `curve ${d.namedCurve ?? 'unknown'}: elliptic public keys must use curve P256, P384 or P521`;
    case 'rsa':
      return d.modulusLength === 3072 || d.modulusLength === 4096
        ? undefined
        : `${d.modulusLength ?? 0}-bit modulus: RSA keys must have modulus size 3072 or 4096`;
    default:
      return 'unknown public key type; supported types are Ed25519, ECDSA, and RSA';
  }
}

/**
 * Verifies a proof of possession: the pod UID's ASCII bytes signed with the key (ECDSA over
 * SHA-256 as ASN.1, RSASSA-PSS with SHA-256, or Ed25519), as KEP-4317 defines it.
 *
 * @example
 * ```ts
 * verifyProofOfPossession(publicKey, pod.metadata.uid, proof); // true or false
 * ```
 */
export function verifyProofOfPossession(key: KeyObject, podUid: string, proof: Buffer): boolean {
  const data = Buffer.from(podUid, 'ascii');
  try {
    switch (key.asymmetricKeyType) {
      case 'ed25519':
        return cryptoVerify(null, data, key, proof);
      case 'ec':
        return cryptoVerify('sha256', data, { key, dsaEncoding: 'der' }, proof);
      case 'rsa':
        return cryptoVerify(
          'sha256',
          data,
          {
            key,
            padding: cryptoConstants.RSA_PKCS1_PSS_PADDING,
            saltLength: cryptoConstants.RSA_PSS_SALTLEN_AUTO,
          },
          proof,
        );
      default:
        return false;
    }
  } catch {
    return false;
  }
}

/** One DER TLV at `at`: where its contents start and where it ends. */
function tlvAt(der: Buffer, at: number): { start: number; end: number } {
  let i = at + 1;
  const first = der[i++];
  if (first === undefined) throw new Error('truncated');
  let len = first;
  if (first & 0x80) {
    const n = first & 0x7f;
    if (n < 1 || n > 3) throw new Error('bad length');
    len = 0;
    for (let k = 0; k < n; k++) len = len * 256 + (der[i++] ?? 0);
  }
  if (i + len > der.length) throw new Error('truncated');
  return { start: i, end: i + len };
}

/** The CSR's self-signature checked with node:crypto (ECDSA, RSA PKCS#1 v1.5 or PSS, Ed25519). */
function csrSignatureVerifies(
  der: Buffer,
  csr: x509.Pkcs10CertificateRequest,
  key: KeyObject,
): boolean {
  try {
    const outer = tlvAt(der, 0);
    const info = tlvAt(der, outer.start);
    const alg = tlvAt(der, info.end);
    const sig = tlvAt(der, alg.end);
    const signed = der.subarray(outer.start, info.end);
    // BIT STRING: the first content byte counts unused bits (0 for signatures).
    const signature = der.subarray(sig.start + 1, sig.end);
    const a = csr.signatureAlgorithm as { name: string; hash?: { name: string } };
    const hash = a.hash?.name.replace('SHA-', 'sha') ?? null;
    if (a.name === 'Ed25519') return cryptoVerify(null, signed, key, signature);
    if (a.name === 'ECDSA')
      return cryptoVerify(hash, signed, { key, dsaEncoding: 'der' }, signature);
    if (a.name === 'RSASSA-PKCS1-v1_5') return cryptoVerify(hash, signed, key, signature);
    if (a.name === 'RSA-PSS')
      return cryptoVerify(
        hash,
        signed,
        {
          key,
          padding: cryptoConstants.RSA_PKCS1_PSS_PADDING,
          saltLength: cryptoConstants.RSA_PSS_SALTLEN_AUTO,
        },
        signature,
      );
    return false;
  } catch {
    return false;
  }
}

/** The stub CSR checked as the API does; records the problem. */
function checkStub(der: Buffer, errs: FieldError[]): void {
  const field = 'spec.stubPKCS10Request';
  const bad = (detail: string): void => {
    errs.push({ type: 'FieldValueInvalid', field, value: '<value omitted>', detail });
  };
  let csr: x509.Pkcs10CertificateRequest;
  let key: KeyObject;
  try {
    csr = new x509.Pkcs10CertificateRequest(der);
    key = createPublicKey({ key: Buffer.from(csr.publicKey.rawData), format: 'der', type: 'spki' });
  } catch {
    return bad('must be a valid DER-encoded PKCS#10 certificate signing request');
  }
  const problem = keyProblem(key);
  if (problem !== undefined) return bad(problem);
  if (!csrSignatureVerifies(der, csr, key))
    return bad('could not verify the CSR signature (proof of possession)');
  if (csr.subject !== '' || csr.attributes.length > 0)
    bad('the stub CSR must be empty: no subject, no attributes or requested extensions');
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

/** The public key the request is for, as SPKI DER (after validation), or undefined. */
export function requestedSpki(o: KubeObject): Buffer | undefined {
  const spec = specOf(o);
  const stub = spec['stubPKCS10Request'];
  if (typeof stub === 'string' && stub !== '') {
    // CertificationRequest { CertificationRequestInfo { version, subject, subjectPKInfo, ... } }:
    // the SPKI read in place (the CSR was fully checked on create; this runs on every status
    // write, so no ASN.1 schema parse here).
    try {
      const der = Buffer.from(stub, 'base64');
      const info = tlvAt(der, tlvAt(der, 0).start);
      const version = tlvAt(der, info.start);
      const subject = tlvAt(der, version.end);
      const spki = der.subarray(subject.end, tlvAt(der, subject.end).end);
      createPublicKey({ key: spki, format: 'der', type: 'spki' });
      return spki;
    } catch {
      return undefined;
    }
  }
  const pkix = spec['pkixPublicKey'];
  return typeof pkix === 'string' && pkix !== '' ? Buffer.from(pkix, 'base64') : undefined;
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

function checkKey(spec: JsonObject, f: PcrFields, errs: FieldError[]): void {
  const stub = f.stub ? bytesField(spec, 'stubPKCS10Request', errs, MAX_PKIX_BYTES) : undefined;
  const pkix = f.legacyKey ? bytesField(spec, 'pkixPublicKey', errs, MAX_PKIX_BYTES) : undefined;
  const pop = f.legacyKey ? bytesField(spec, 'proofOfPossession', errs, MAX_POP_BYTES) : undefined;
  if (errs.length > 0) return;
  if (stub !== undefined) {
    if (pkix !== undefined || pop !== undefined)
      errs.push({
        type: 'FieldValueForbidden',
        field: pkix !== undefined ? 'spec.pkixPublicKey' : 'spec.proofOfPossession',
        detail: 'must be empty when spec.stubPKCS10Request is set',
      });
    else checkStub(stub, errs);
    return;
  }
  if (!f.legacyKey) {
    errs.push({
      type: 'FieldValueRequired',
      field: 'spec.stubPKCS10Request',
      detail: 'must be set',
    });
    return;
  }
  let key: KeyObject;
  try {
    key = createPublicKey({ key: pkix ?? Buffer.alloc(0), format: 'der', type: 'spki' });
  } catch {
    errs.push({
      type: 'FieldValueInvalid',
      field: 'spec.pkixPublicKey',
      value: '<value omitted>',
      detail: 'must be a valid PKIX-serialized public key',
    });
    return;
  }
  const problem = keyProblem(key);
  if (problem !== undefined) {
    errs.push({
      type: 'FieldValueInvalid',
      field: 'spec.pkixPublicKey',
      value: '<value omitted>',
      detail: problem,
    });
    return;
  }
  if (!verifyProofOfPossession(key, String(spec['podUID']), pop ?? Buffer.alloc(0)))
    errs.push({
      type: 'FieldValueInvalid',
      field: 'spec.proofOfPossession',
      value: '<value omitted>',
      detail: 'could not verify proof-of-possession signature',
    });
}

function conditions(status: JsonObject): JsonObject[] {
  const c = status['conditions'];
  return Array.isArray(c) ? c.filter(isObject) : [];
}

function terminal(status: JsonObject): string | undefined {
  return conditions(status)
    .map((c) => String(c['type']))
    .find((t) => (TERMINAL as readonly string[]).includes(t));
}

function parseTime(v: unknown): number | undefined {
  if (typeof v !== 'string' || !/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/.test(v)) return undefined;
  const ms = Date.parse(v);
  return Number.isNaN(ms) ? undefined : ms;
}

/** Status update validation (ValidatePodCertificateRequestStatusUpdate, as the KEP describes it). */
export function validatePodCertificateRequestStatus(
  t: ResourceType,
  next: KubeObject,
  old: KubeObject,
  now: number,
): void {
  if (fieldsOf(t) === undefined) return;
  const name = old.metadata.name ?? '';
  const fail = (field: string, detail: string, value: unknown = '<value omitted>'): never => {
    throw invalid(t, name, [{ type: 'FieldValueInvalid', field, value, detail }]);
  };
  const status = statusOf(next);
  let known = 0;
  conditions(status).forEach((c, i) => {
    if (!(TERMINAL as readonly string[]).includes(String(c['type'])))
      throw invalid(t, name, [
        {
          type: 'FieldValueNotSupported',
          field: `status.conditions[${i}].type`,
          value: c['type'],
          detail: 'supported values: "Issued", "Denied", "Failed"',
        },
      ]);
    if (++known > 1)
      fail(
        `status.conditions[${i}].type`,
        'There may be at most one condition with type "Issued", "Denied", or "Failed"',
        c['type'],
      );
    if (c['status'] !== 'True')
      throw invalid(t, name, [
        {
          type: 'FieldValueNotSupported',
          field: `status.conditions[${i}].status`,
          value: c['status'],
          detail: 'supported values: "True"',
        },
      ]);
    for (const k of ['reason', 'message', 'lastTransitionTime'])
      if (typeof c[k] !== 'string' || (k !== 'message' && c[k] === ''))
        throw invalid(t, name, [
          { type: 'FieldValueRequired', field: `status.conditions[${i}].${k}`, detail: '' },
        ]);
  });
  const before = statusOf(old);
  const same = JSON.stringify(status) === JSON.stringify(before);
  if (terminal(before) !== undefined) {
    if (!same) fail('status', 'immutable after PodCertificateRequest is issued, denied, or failed');
    return;
  }
  const to = terminal(status);
  if (to === undefined) {
    if (!same)
      fail('status', 'status is immutable unless transitioning to "Issued", "Denied", or "Failed"');
    return;
  }
  if (to === 'Denied' || to === 'Failed') {
    if (Object.keys(status).some((k) => k !== 'conditions'))
      fail(
        'status',
        'non-condition status fields must be empty when denying or failing the PodCertificateRequest',
      );
    return;
  }
  checkIssued(t, name, next, old, now, fail);
}

function checkIssued(
  t: ResourceType,
  name: string,
  next: KubeObject,
  old: KubeObject,
  now: number,
  fail: (field: string, detail: string, value?: unknown) => never,
): void {
  const status = statusOf(next);
  const chain = status['certificateChain'];
  if (typeof chain !== 'string' || chain.length === 0)
    fail(
      'status.certificateChain',
      'issued certificate chain must contain at least one certificate',
    );
  if (chain.length > MAX_CHAIN_BYTES)
    fail('status.certificateChain', `must have at most ${MAX_CHAIN_BYTES} bytes`);
  const blocks = [...chain.matchAll(/-----BEGIN ([A-Z0-9 ]+)-----([^-]*)-----END \1-----/g)];
  if (blocks.length === 0)
    fail(
      'status.certificateChain',
      'issued certificate chain must contain at least one certificate',
    );
  // node:crypto's parser (native): the chain is parsed on every status write, and
  // @peculiar/x509's ASN.1 schema parser was most of the double's time under load.
  const certs: X509Certificate[] = [];
  for (const b of blocks) {
    if (b[1] !== 'CERTIFICATE')
      fail(
        'status.certificateChain',
        'issued certificate chain must consist entirely of CERTIFICATE PEM blocks',
      );
    try {
      certs.push(new X509Certificate(Buffer.from(b[2]!.replace(/\s+/g, ''), 'base64')));
    } catch {
      fail(
        'status.certificateChain',
        certs.length === 0
          ? 'leaf certificate does not parse as valid X.509'
          : 'intermediate certificate does not parse as valid X.509',
      );
    }
  }
  const leaf = certs[0]!;
  const want = requestedSpki(old);
  // Compared as keys, not as encodings (as Go's PublicKey.Equal does).
  const spkiOf = (der: Buffer): Buffer =>
    createPublicKey({ key: der, format: 'der', type: 'spki' }).export({
      type: 'spki',
      format: 'der',
    });
  if (
    want === undefined ||
    !leaf.publicKey.export({ type: 'spki', format: 'der' }).equals(spkiOf(want))
  )
    fail('status.certificateChain', 'leaf certificate was not issued to the requested public key');
  const nb = parseTime(status['notBefore']);
  const na = parseTime(status['notAfter']);
  const refresh = parseTime(status['beginRefreshAt']);
  const missing: FieldError[] = [];
  if (nb === undefined)
    missing.push({
      type: 'FieldValueRequired',
      field: 'status.notBefore',
      detail: 'must be present and consistent with the issued certificate',
    });
  if (na === undefined)
    missing.push({
      type: 'FieldValueRequired',
      field: 'status.notAfter',
      detail: 'must be present and consistent with the issued certificate',
    });
  if (refresh === undefined)
    missing.push({
      type: 'FieldValueRequired',
      field: 'status.beginRefreshAt',
      detail: 'must be present and in the range [notbefore+10min, notafter-10min]',
    });
  if (missing.length > 0) throw invalid(t, name, missing);
  if (nb !== leaf.validFromDate.getTime())
    fail(
      'status.notBefore',
      'must be set to the NotBefore time encoded in the leaf certificate',
      status['notBefore'],
    );
  if (Math.abs(nb! - now) >= 5 * 60_000)
    fail(
      'status.notBefore',
      "must be set to within 5 minutes of kube-apiserver's current time",
      status['notBefore'],
    );
  if (na !== leaf.validToDate.getTime())
    fail(
      'status.notAfter',
      'must be set to the NotAfter time encoded in the leaf certificate',
      status['notAfter'],
    );
  const lifetime = na! - nb!;
  const max = Number(specOf(old)['maxExpirationSeconds']) * 1000;
  if (lifetime < 3_600_000)
    fail(
      'status.certificateChain',
      'leaf certificate lifetime must be >= 1 hour',
      `${lifetime / 1000}s`,
    );
  if (lifetime > max)
    fail(
      'status.certificateChain',
      `leaf certificate lifetime must be <= spec.maxExpirationSeconds (${max / 1000})`,
      `${lifetime / 1000}s`,
    );
  if (refresh! < nb! + 600_000)
    fail(
      'status.beginRefreshAt',
      'must be at least 10 minutes after status.notBefore',
      status['beginRefreshAt'],
    );
  if (refresh! > na! - 600_000)
    fail(
      'status.beginRefreshAt',
      'must be at least 10 minutes before status.notAfter',
      status['beginRefreshAt'],
    );
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
