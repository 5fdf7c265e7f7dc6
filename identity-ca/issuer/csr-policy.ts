/**
 * What a CSR may ask for (contract §3). Linkerd's CA checks the names and that the key is ECDSA;
 * meshid also requires P-256 and verifies the signature (proof of possession), which Linkerd does
 * not.
 *
 * Only the key, the CN and the SAN are looked at. Other subject attributes (O, OU, ...) and
 * requested extensions other than the SAN are ignored, not refused: the CA builds the leaf's
 * subject and extensions itself (identity-ca/issuer/leaf.ts) and never copies anything from the
 * request but the public key, so they cannot reach a certificate. Linkerd, by contrast, copies
 * other subject fields into the leaf.
 */
import {
  MeshidError,
  X509Oid,
  fipsKeyProblem,
  parseSpki,
  printable,
  verifyCsrSignature,
  type ParsedCsr,
} from '../../core/index.js';

function refuse(message: string): never {
  throw new MeshidError('ERR_CSR_POLICY', message);
}

function describeKey(csr: ParsedCsr): string {
  const { algorithm, curve } = csr.publicKey;
  switch (algorithm) {
    case 'EC':
      return curve === undefined ? 'EC with explicit curve parameters' : `EC ${curve}`;
    case 'RSA':
    case 'Ed25519':
      return algorithm;
    case 'other':
      // Only on the refusal path, so the second parse costs nothing on the hot path.
      return `a key of algorithm ${parseSpki(csr.publicKey.spki).algorithmOid}`;
  }
}

/**
 * Checks a parsed CSR against the issuance rules for `identity`, cheap structural checks first
 * and the signature last. Throws MeshidError ERR_CSR_POLICY naming the broken rule.
 *
 * Rules: the key is ECDSA P-256 (an uncompressed point, which is what TLS stacks accept); exactly
 * one DNS SAN, equal to `identity`; no other SANs (URI, IP, email, ...); at most one subject CN,
 * empty or equal to `identity` (it may exceed 64 characters); the signature verifies.
 */
export async function checkCsrPolicy(csr: ParsedCsr, identity: string): Promise<void> {
  const { algorithm, curve } = csr.publicKey;
  if (algorithm !== 'EC' || curve !== 'P-256') {
    refuse(`CSR key must be ECDSA P-256, got ${describeKey(csr)}`);
  }
  // rustls/webpki (the Linkerd proxy) and most TLS stacks take only uncompressed P-256 points in
  // certificates, so the leaf signer refuses a compressed one; refusing it here says why early.
  const point = csr.publicKey.point;
  if (point.length !== 65 || point[0] !== 0x04) {
    refuse(`CSR key must be an uncompressed P-256 point (65 bytes), got ${point.length} bytes`);
  }

  if (csr.dnsNames.length !== 1) {
    refuse(`CSR must have exactly one DNS SAN, it has ${csr.dnsNames.length}`);
  }
  const dns = csr.dnsNames[0]!;
  if (dns !== identity) {
    refuse(
      `CSR DNS SAN "${printable(dns)}" does not match the requested identity "${printable(identity)}"`,
    );
  }
  if (csr.otherSubjectAltNames.length > 0) {
    refuse(
      `CSR must have no SANs other than the DNS name, it has ${csr.otherSubjectAltNames
        .map((n) => printable(n))
        .join(', ')}`,
    );
  }

  if (csr.subjectCommonNames.length > 1) {
    refuse(`CSR subject must have at most one CN, it has ${csr.subjectCommonNames.length}`);
  }
  const cn = csr.subjectCommonNames[0];
  if (cn !== undefined && cn !== '' && cn !== identity) {
    refuse(
      `CSR subject CN "${printable(cn)}" must be empty or equal to the requested identity "${printable(identity)}"`,
    );
  }

  // Last: the only check that costs real time (a public-key import and an ECDSA verification).
  if (!(await verifyCsrSignature(csr))) {
    refuse('CSR signature does not verify: no proof of possession of the private key');
  }
}

/** CSR self-signatures inside the FIPS policy: ECDSA and RSA PKCS#1 v1.5 over SHA-256/384. */
const FIPS_CSR_SIGNATURES: ReadonlySet<string> = new Set([
  X509Oid.ecdsaWithSha256,
  X509Oid.ecdsaWithSha384,
  '1.2.840.113549.1.1.11', // sha256WithRSAEncryption
  '1.2.840.113549.1.1.12', // sha384WithRSAEncryption
]);

/**
 * FIPS mode's check of a CSR, before the issuance rules: its key must be inside the FIPS policy
 * (ECDSA P-256/P-384 or RSA ≥ 2048) and its self-signature ECDSA or RSA over SHA-256/384. Throws
 * ERR_FIPS_CSR_REFUSED saying FIPS mode refused it; the issuance rules (P-256 only) still follow.
 */
export function checkFipsCsr(csr: ParsedCsr): void {
  const keyProblem = fipsKeyProblem(csr.publicKey.spki);
  if (keyProblem !== undefined) {
    throw new MeshidError('ERR_FIPS_CSR_REFUSED', `FIPS mode refused the CSR: ${keyProblem}`);
  }
  if (!FIPS_CSR_SIGNATURES.has(csr.signatureAlgorithm)) {
    throw new MeshidError(
      'ERR_FIPS_CSR_REFUSED',
      `FIPS mode refused the CSR: it is signed with algorithm ${csr.signatureAlgorithm}, not ECDSA or RSA with SHA-256/384`,
    );
  }
}
