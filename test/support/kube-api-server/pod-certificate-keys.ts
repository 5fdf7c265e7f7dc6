/**
 * The keys of PodCertificateRequests (KEP-4317), as the API server checks them on create: the
 * accepted key types, the proof of possession over the pod UID, the stub CSR's signature and
 * emptiness; and the requested key read back for status writes. Part of the test double
 * (pod-certificates.ts), written from the KEP, not kube-apiserver's code.
 */
import { createPublicKey, constants as cryptoConstants, verify as cryptoVerify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import type { FieldError } from './status.js';
import { isObject } from './types.js';
import type { JsonObject, KubeObject } from './types.js';

const MAX_PKIX_BYTES = 10 * 1024;

const MAX_POP_BYTES = 10 * 1024;

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

/** The public key the request is for, as SPKI DER (after validation), or undefined. */
export function requestedSpki(o: KubeObject): Buffer | undefined {
  const spec = isObject(o['spec']) ? o['spec'] : {};
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
 * The create checks of the key a request names: the stub CSR, or (v1beta1) the public key and
 * its proof of possession over the pod UID. Records the problems in `errs`.
 */
export function checkKey(
  spec: JsonObject,
  f: { readonly stub: boolean; readonly legacyKey: boolean },
  errs: FieldError[],
): void {
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
