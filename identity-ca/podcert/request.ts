/**
 * What the pod certificate signer checks in a PodCertificateRequest before it issues, itself,
 * whatever the API server already checked (a request may come from any user with `create`, not
 * only from a kubelet the noderestriction plugin held to its own pods):
 *
 * - the key: ECDSA P-256 only (the mesh's leaf profile); anything else is Denied
 *   `UnsupportedKeyType`, with the key type to use in the message;
 * - proof of possession: the 1.35 shape's signature over the pod UID, or the stub CSR's own
 *   signature (1.36+), verified here; the stub CSR must be empty (no subject, no attributes or
 *   extensions): meshid decides every name in the leaf;
 * - the lifetime: maxExpirationSeconds of at least an hour (the API's floor);
 * - no unverifiedUserAnnotations (meshid defines none, and signers deny keys they do not know);
 * - the pod: it exists with the request's UID, runs as the request's ServiceAccount, and is bound
 *   to the request's node.
 *
 * Every refusal is a {@link Refusal}: the condition (Denied for what the request asks, Failed for
 * what the CA cannot do now), a CamelCase reason and a message naming what to change.
 */
import { createPublicKey, verify as cryptoVerify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import type { KubeResource, ParsedCsr } from '../../core/index.js';
import {
  DerError,
  DerReader,
  DerTag,
  MeshidError,
  parseCsr,
  parseSpki,
  verifyCsrSignature,
} from '../../core/index.js';

/** Why a request is not issued. */
export interface Refusal {
  readonly condition: 'Denied' | 'Failed';
  readonly reason: string;
  readonly message: string;
}

/** The refusal reasons (CamelCase, as the API's own `UnsupportedKeyType`). */
export const PodCertReason = {
  unsupportedKeyType: 'UnsupportedKeyType',
  invalidProofOfPossession: 'InvalidProofOfPossession',
  invalidStubPKCS10Request: 'InvalidStubPKCS10Request',
  invalidUserAnnotations: 'InvalidUnverifiedUserAnnotations',
  lifetimeTooShort: 'LifetimeTooShort',
  podMismatch: 'PodMismatch',
  nodeMismatch: 'NodeMismatch',
  issuerNotValid: 'IssuerNotValid',
  signingFailed: 'SigningFailed',
} as const;

/** The one key type meshid issues to (the podCertificate volume's `keyType` value). */
const SUGGESTED_KEY_TYPE = 'ECDSAP256';

/** The API's floor for maxExpirationSeconds and for an issued lifetime. */
export const MIN_LIFETIME_SECONDS = 3600;

/** A PodCertificateRequest's spec, as the signer reads it. */
export interface PodCertRequest {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  readonly resourceVersion: string;
  readonly signerName: string;
  readonly podName: string;
  readonly podUid: string;
  readonly serviceAccount: string;
  readonly serviceAccountUid: string;
  readonly nodeName: string;
  readonly maxExpirationSeconds: number;
  readonly pkixPublicKey?: Buffer;
  readonly proofOfPossession?: Buffer;
  readonly stubPKCS10Request?: Buffer;
  readonly userAnnotations: Readonly<Record<string, string>>;
  /** Issued, Denied or Failed, when the request already has its answer. */
  readonly answered?: string;
}

function str(v: unknown): string {
  return typeof v === 'string' ? v : '';
}

function bytes(v: unknown): Buffer | undefined {
  return typeof v === 'string' && v !== '' ? Buffer.from(v, 'base64') : undefined;
}

/**
 * Reads a PodCertificateRequest object (v1beta1 or v1 JSON).
 *
 * @example
 * ```ts
 * const req = readRequest(event.object);
 * if (req.answered === undefined) queue(req);
 * ```
 */
export function readRequest(o: KubeResource): PodCertRequest {
  const spec = (o['spec'] ?? {}) as Record<string, unknown>;
  const status = (o['status'] ?? {}) as { conditions?: { type?: string; status?: string }[] };
  const answered = (status.conditions ?? []).find(
    (c) => ['Issued', 'Denied', 'Failed'].includes(c.type ?? '') && c.status === 'True',
  )?.type;
  const annotations = spec['unverifiedUserAnnotations'];
  const pkix = bytes(spec['pkixPublicKey']);
  const pop = bytes(spec['proofOfPossession']);
  const stub = bytes(spec['stubPKCS10Request']);
  const max = spec['maxExpirationSeconds'];
  return {
    namespace: o.metadata.namespace ?? '',
    name: o.metadata.name,
    uid: o.metadata.uid ?? '',
    resourceVersion: o.metadata.resourceVersion ?? '',
    signerName: str(spec['signerName']),
    podName: str(spec['podName']),
    podUid: str(spec['podUID']),
    serviceAccount: str(spec['serviceAccountName']),
    serviceAccountUid: str(spec['serviceAccountUID']),
    nodeName: str(spec['nodeName']),
    maxExpirationSeconds: typeof max === 'number' ? max : 86_400,
    ...(pkix === undefined ? {} : { pkixPublicKey: pkix }),
    ...(pop === undefined ? {} : { proofOfPossession: pop }),
    ...(stub === undefined ? {} : { stubPKCS10Request: stub }),
    userAnnotations:
      typeof annotations === 'object' && annotations !== null
        ? (annotations as Record<string, string>)
        : {},
    ...(answered === undefined ? {} : { answered }),
  };
}

function denied(reason: string, message: string): Refusal {
  return { condition: 'Denied', reason, message };
}

function unsupported(found: string): Refusal {
  return denied(
    PodCertReason.unsupportedKeyType,
    `${found} is not supported: meshid issues to ECDSA P-256 keys only; set keyType: ${SUGGESTED_KEY_TYPE} in the podCertificate volume (SuggestedKeyType: ${SUGGESTED_KEY_TYPE})`,
  );
}

/** The key described for a message, or undefined when it is ECDSA P-256 (uncompressed). */
function keyProblem(spki: Uint8Array): string | undefined {
  let info;
  try {
    info = parseSpki(spki);
  } catch {
    return 'a malformed public key';
  }
  if (info.algorithm === 'EC' && info.curve === 'P-256') {
    const p = info.publicKey;
    return p.length === 65 && p[0] === 0x04 ? undefined : 'a compressed P-256 point';
  }
  switch (info.algorithm) {
    case 'EC':
      return `an ECDSA ${info.curve ?? 'explicit-curve'} key`;
    case 'RSA':
      return 'an RSA key';
    case 'Ed25519':
      return 'an Ed25519 key';
    default:
      return `a key of algorithm ${info.algorithmOid}`;
  }
}

/** True when the CSR's info has an empty subject and no attributes (requested extensions). */
function stubIsEmpty(csr: ParsedCsr): boolean {
  const r = new DerReader(csr.certificationRequestInfo, 'CertificationRequestInfo');
  const info = new DerReader(r.next(DerTag.SEQUENCE, 'info').contents, 'info');
  info.next(DerTag.INTEGER, 'version');
  const subject = info.next(DerTag.SEQUENCE, 'subject');
  info.next(DerTag.SEQUENCE, 'subjectPKInfo');
  const attributes = info.more ? info.next(undefined, 'attributes') : undefined;
  return subject.contents.length === 0 && (attributes?.contents.length ?? 0) === 0;
}

/**
 * The public key to issue to (SPKI DER), after the key and proof-of-possession checks; or the
 * refusal.
 *
 * @example
 * ```ts
 * const key = await requestedKey(req);
 * if ('condition' in key) deny(key); else issue(key.spki);
 * ```
 */
export async function requestedKey(req: PodCertRequest): Promise<{ spki: Uint8Array } | Refusal> {
  if (req.stubPKCS10Request !== undefined) {
    let csr: ParsedCsr;
    try {
      csr = parseCsr(req.stubPKCS10Request);
    } catch (err) {
      return denied(
        PodCertReason.invalidStubPKCS10Request,
        `spec.stubPKCS10Request is not a DER PKCS#10 request: ${(err as Error).message}`,
      );
    }
    const problem = keyProblem(csr.publicKey.spki);
    if (problem !== undefined) return unsupported(problem);
    let empty: boolean;
    try {
      empty = stubIsEmpty(csr);
    } catch (err) {
      if (!(err instanceof DerError || err instanceof MeshidError)) throw err;
      empty = false;
    }
    if (!empty)
      return denied(
        PodCertReason.invalidStubPKCS10Request,
        'spec.stubPKCS10Request must be an empty CSR (no subject, no attributes or extensions): meshid sets every name in the certificate itself',
      );
    if (!(await verifyCsrSignature(csr)))
      return denied(
        PodCertReason.invalidProofOfPossession,
        "spec.stubPKCS10Request's signature does not verify with its own key: no proof of possession",
      );
    return { spki: csr.publicKey.spki };
  }
  if (req.pkixPublicKey === undefined)
    return denied(
      PodCertReason.invalidProofOfPossession,
      'the request has neither spec.stubPKCS10Request nor spec.pkixPublicKey',
    );
  const problem = keyProblem(req.pkixPublicKey);
  if (problem !== undefined) return unsupported(problem);
  if (req.proofOfPossession === undefined)
    return denied(
      PodCertReason.invalidProofOfPossession,
      'spec.proofOfPossession is missing: it must be the pod UID signed with the requested key',
    );
  let key: KeyObject;
  try {
    key = createPublicKey({ key: req.pkixPublicKey, format: 'der', type: 'spki' });
  } catch {
    return unsupported('a malformed public key');
  }
  let ok: boolean;
  try {
    ok = cryptoVerify(
      'sha256',
      Buffer.from(req.podUid, 'ascii'),
      { key, dsaEncoding: 'der' },
      req.proofOfPossession,
    );
  } catch {
    ok = false;
  }
  if (!ok)
    return denied(
      PodCertReason.invalidProofOfPossession,
      `spec.proofOfPossession does not verify: it is not pod UID ${req.podUid} signed with spec.pkixPublicKey`,
    );
  return { spki: req.pkixPublicKey };
}

/** The request's fields that need no API call: lifetime and annotations. */
export function requestProblem(req: PodCertRequest): Refusal | undefined {
  if (req.maxExpirationSeconds < MIN_LIFETIME_SECONDS)
    return denied(
      PodCertReason.lifetimeTooShort,
      `spec.maxExpirationSeconds is ${req.maxExpirationSeconds}; pod certificates live at least ${MIN_LIFETIME_SECONDS} s (1 h): raise maxExpirationSeconds in the podCertificate volume`,
    );
  const keys = Object.keys(req.userAnnotations);
  if (keys.length > 0)
    return denied(
      PodCertReason.invalidUserAnnotations,
      `meshid defines no unverifiedUserAnnotations; remove ${keys.map((k) => JSON.stringify(k)).join(', ')} from the podCertificate volume's userAnnotations`,
    );
  return undefined;
}

/**
 * The pod binding: the named pod exists with the request's UID, runs as its ServiceAccount, and
 * is bound to its node. `pod` is the live Pod (undefined when it does not exist).
 *
 * @example
 * ```ts
 * const problem = podProblem(req, await api.get('v1', 'Pod', req.namespace, req.podName));
 * ```
 */
export function podProblem(
  req: PodCertRequest,
  pod: KubeResource | undefined,
): Refusal | undefined {
  const who = `pod ${req.namespace}/${req.podName}`;
  if (pod === undefined) return denied(PodCertReason.podMismatch, `${who} does not exist`);
  if (pod.metadata.uid !== req.podUid)
    return denied(
      PodCertReason.podMismatch,
      `${who} has UID ${pod.metadata.uid ?? '(none)'}, not the request's spec.podUID ${req.podUid}`,
    );
  const spec = (pod['spec'] ?? {}) as { nodeName?: string; serviceAccountName?: string };
  const sa = spec.serviceAccountName ?? 'default';
  if (sa !== req.serviceAccount)
    return denied(
      PodCertReason.podMismatch,
      `${who} runs as ServiceAccount ${sa}, not the request's spec.serviceAccountName ${req.serviceAccount}`,
    );
  if (spec.nodeName !== req.nodeName)
    return denied(
      PodCertReason.nodeMismatch,
      `${who} is bound to node ${spec.nodeName ?? '(none)'}, not the requesting node ${req.nodeName}`,
    );
  return undefined;
}
