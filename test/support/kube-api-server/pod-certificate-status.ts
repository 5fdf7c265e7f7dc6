/**
 * PodCertificateRequest status writes (ValidatePodCertificateRequestStatusUpdate, as KEP-4317
 * describes it): once, to Issued, Denied or Failed, and immutable after; an issued chain checked
 * against the request. Part of the test double (pod-certificates.ts).
 */
import { X509Certificate, createPublicKey } from 'node:crypto';
import { requestedSpki } from './pod-certificate-keys.js';
import { fieldsOf, specOf, statusOf } from './pod-certificates.js';
import type { ResourceType } from './resources.js';
import { invalid } from './status.js';
import type { FieldError } from './status.js';
import { isObject } from './types.js';
import type { JsonObject, KubeObject } from './types.js';

const MAX_CHAIN_BYTES = 100 * 1024;

const TERMINAL = ['Issued', 'Denied', 'Failed'] as const;

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
