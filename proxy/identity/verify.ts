/**
 * What a proxy checks before it uses a certificate the CA returned: that it is for this
 * workload's identity (first SAN, as peers read it), for the key this proxy holds, currently
 * valid, and chained to the trust anchors. Linkerd's proxy does the same checks; a CA that
 * answers with anything else is not trusted, whatever its TLS certificate says.
 */
import { X509Certificate } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import type { CertifyResponse } from '../../core/index.js';
import { parsePem } from '../../core/index.js';

/** The facts of a verified certificate. */
export interface VerifiedLeaf {
  readonly notBefore: number;
  readonly notAfter: number;
  readonly serialHex: string;
}

/** Certificates in a PEM bundle. */
export function certificatesOf(pem: string): X509Certificate[] {
  return parsePem(pem, 'CERTIFICATE').map((block) => new X509Certificate(block.der));
}

/**
 * Verifies a Certify response for `identity` and `publicKey` against `anchors` at `now`; throws
 * an Error naming the first problem.
 *
 * @example
 * ```ts
 * const leaf = verifyCertifyResponse(res, { identity, publicKey, anchors, now: Date.now() });
 * ```
 */
export function verifyCertifyResponse(
  res: CertifyResponse,
  expect: {
    readonly identity: string;
    readonly publicKey: KeyObject;
    readonly anchors: readonly X509Certificate[];
    readonly now: number;
  },
): VerifiedLeaf {
  const leaf = new X509Certificate(res.leafCertificate);
  const chain = res.intermediateCertificates.map((der) => new X509Certificate(der));
  const first = (leaf.subjectAltName ?? '').split(', ')[0];
  if (first !== `DNS:${expect.identity}`) {
    throw new Error(
      `certificate's first name is ${first ?? 'missing'}, not DNS:${expect.identity}`,
    );
  }
  if (
    !leaf.publicKey
      .export({ format: 'der', type: 'spki' })
      .equals(expect.publicKey.export({ format: 'der', type: 'spki' }))
  ) {
    throw new Error('certificate is not for the key this proxy holds');
  }
  const notBefore = Date.parse(leaf.validFrom);
  const notAfter = Date.parse(leaf.validTo);
  if (res.validUntil !== notAfter) {
    throw new Error(
      `valid_until ${res.validUntil} differs from the certificate's NotAfter ${notAfter}`,
    );
  }
  if (expect.now >= notAfter || expect.now < notBefore) {
    throw new Error(`certificate is not valid now (${leaf.validFrom} to ${leaf.validTo})`);
  }
  let cursor = leaf;
  for (const next of chain) {
    if (!next.ca || !cursor.checkIssued(next) || !cursor.verify(next.publicKey)) {
      throw new Error(`chain is broken at ${next.subject || '(empty subject)'}`);
    }
    if (expect.now >= Date.parse(next.validTo) || expect.now < Date.parse(next.validFrom)) {
      throw new Error(`chain certificate ${next.subject} is not valid now`);
    }
    cursor = next;
  }
  const anchored = expect.anchors.some(
    (a) =>
      a.ca &&
      cursor.checkIssued(a) &&
      cursor.verify(a.publicKey) &&
      expect.now < Date.parse(a.validTo) &&
      expect.now >= Date.parse(a.validFrom),
  );
  if (!anchored) throw new Error('chain does not lead to a trust anchor');
  return { notBefore, notAfter, serialHex: leaf.serialNumber.toLowerCase() };
}
