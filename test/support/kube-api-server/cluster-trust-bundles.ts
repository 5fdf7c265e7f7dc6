/**
 * ClusterTrustBundle (certificates.k8s.io/v1beta1, KEP-3257) as kube-apiserver serves it: the
 * name rule tied to `spec.signerName`, the PEM rules of `spec.trustBundle` (CERTIFICATE blocks
 * only, no block headers, X.509 CA certificates, no duplicates, at least one, at most 1 MiB),
 * `spec.signerName` immutable, and the ClusterTrustBundleAttest admission plugin: writing a
 * bundle that names a signer needs the `attest` verb on `signers` (resourceName the signer name,
 * or `<domain>/*`) in certificates.k8s.io.
 *
 * The API is beta and off by default on real clusters (1.33+: `--runtime-config` and the
 * `ClusterTrustBundle` feature gate), so it is not in the built-in table: a test opts in with
 * `startKubeApiServer({ resources: [CLUSTER_TRUST_BUNDLE_RESOURCE] })`. This is a test double
 * written from the published API reference, not the real server.
 */
import { X509Certificate } from 'node:crypto';
import type { BuiltinAdmission, ResourceType } from './resources.js';
import { forbidden, invalid } from './status.js';
import type { FieldError } from './status.js';
import type { KubeObject } from './types.js';

/** `certificates.MaxTrustBundleSize`. */
export const MAX_TRUST_BUNDLE_SIZE = 1024 * 1024;

const GROUP = 'certificates.k8s.io';

interface CtbSpec {
  signerName?: unknown;
  trustBundle?: unknown;
}

const specOf = (o: KubeObject | undefined): CtbSpec => (o?.['spec'] as CtbSpec | undefined) ?? {};
const text = (v: unknown): string => (typeof v === 'string' ? v : '');

/** The name prefix a bundle of `signerName` must carry (slashes become colons). */
export const signerNamePrefix = (signerName: string): string =>
  `${signerName.replaceAll('/', ':')}:`;

const SIGNER_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/[^/]+$/;

/** Problems of a PEM trust bundle, worded as the real validator; empty when valid. */
export function trustBundleProblems(pem: string): string[] {
  if (Buffer.byteLength(pem) > MAX_TRUST_BUNDLE_SIZE)
    return [`must have at most ${MAX_TRUST_BUNDLE_SIZE} bytes`];
  const out: string[] = [];
  const seen = new Map<string, number[]>();
  const blocks = /-----BEGIN ([^-]+)-----\r?\n([\s\S]*?)-----END \1-----/g;
  let i = -1;
  for (const m of pem.matchAll(blocks)) {
    i++;
    const [, type, body] = m as unknown as [string, string, string];
    if (type !== 'CERTIFICATE') {
      out.push(`entry ${i} has bad block type: ${type}`);
      continue;
    }
    if (/^[^\s:]+:/m.test(body)) {
      out.push(`entry ${i} has PEM block headers`);
      continue;
    }
    const der = Buffer.from(body.replace(/\s+/g, ''), 'base64');
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(der);
    } catch {
      out.push(`entry ${i} does not parse as X.509`);
      continue;
    }
    if (!cert.ca) {
      out.push(`entry ${i} does not have the CA bit set`);
      continue;
    }
    const key = der.toString('base64');
    seen.set(key, [...(seen.get(key) ?? []), i]);
  }
  if (out.length > 0) return out;
  if (seen.size === 0) return ['at least one trust anchor must be provided'];
  for (const indices of seen.values())
    if (indices.length > 1) out.push(`duplicate trust anchor (indices [${indices.join(' ')}])`);
  return out;
}

/** ValidateClusterTrustBundle (and its update form): throws 422 Invalid. */
export function validateClusterTrustBundle(
  t: ResourceType,
  obj: KubeObject,
  old: KubeObject | undefined,
): void {
  const errs: FieldError[] = [];
  const name = obj.metadata.name ?? '';
  const spec = specOf(obj);
  const signer = text(spec.signerName);
  if (signer === '') {
    if (name.includes(':'))
      errs.push({
        type: 'FieldValueInvalid',
        field: 'metadata.name',
        value: name,
        detail: 'ClusterTrustBundle without signer name must not have ":" in its name',
      });
  } else {
    if (!SIGNER_NAME.test(signer))
      errs.push({
        type: 'FieldValueInvalid',
        field: 'spec.signerName',
        value: signer,
        detail: 'must be a fully qualified domain and path of the form "example.com/signer-name"',
      });
    if (!name.startsWith(signerNamePrefix(signer)))
      errs.push({
        type: 'FieldValueInvalid',
        field: 'metadata.name',
        value: name,
        detail: `ClusterTrustBundle for signerName ${signer} must be named with prefix ${signerNamePrefix(signer)}`,
      });
  }
  if (old !== undefined && text(specOf(old).signerName) !== signer)
    errs.push({
      type: 'FieldValueInvalid',
      field: 'spec.signerName',
      value: signer,
      detail: 'field is immutable',
    });
  // As the real update validation: an unchanged bundle is not parsed again.
  const bundle = text(spec.trustBundle);
  if (old === undefined || text(specOf(old).trustBundle) !== bundle) {
    if (typeof spec.trustBundle !== 'string' || bundle === '')
      errs.push({ type: 'FieldValueRequired', field: 'spec.trustBundle', detail: '' });
    else
      for (const p of trustBundleProblems(bundle))
        errs.push({
          type: 'FieldValueInvalid',
          field: 'spec.trustBundle',
          value: '<value omitted>',
          detail: p,
        });
  }
  if (errs.length > 0) throw invalid(t, name, errs);
}

/**
 * The ClusterTrustBundleAttest admission plugin: a bundle with a signer name needs `attest` on
 * the signer (exactly, or on `<domain>/*`), unless the write leaves the bundle text unchanged.
 */
export function admitClusterTrustBundle(a: BuiltinAdmission): void {
  const signer = text(specOf(a.object).signerName);
  if (signer === '') return;
  if (
    a.oldObject !== undefined &&
    text(specOf(a.oldObject).trustBundle) === text(specOf(a.object).trustBundle) &&
    text(specOf(a.oldObject).signerName) === signer
  )
    return;
  const wildcard = `${signer.split('/')[0]!}/*`;
  if (a.can('attest', GROUP, 'signers', signer) || a.can('attest', GROUP, 'signers', wildcard))
    return;
  throw forbidden(
    a.type,
    a.object.metadata.name ?? '',
    `user not permitted to attest for signerName "${signer}"`,
  );
}

/** The v1beta1 type, with its validation and admission. */
export const CLUSTER_TRUST_BUNDLE_RESOURCE: ResourceType = {
  group: GROUP,
  version: 'v1beta1',
  kind: 'ClusterTrustBundle',
  plural: 'clustertrustbundles',
  namespaced: false,
  nameRule: 'path-segment',
  fieldLabels: ['spec.signerName'],
  validate: validateClusterTrustBundle,
  admit: admitClusterTrustBundle,
};
