/**
 * Validation of the CA's cold-path material: the issuer (certificate, private key, chain) against
 * the trust-anchor bundle core's parseAnchors accepted, with the full path validation on top of
 * core's rule. Everything the hot path relies on is decided here, once per load, so that
 * Certify only has to compare two numbers and sign:
 *
 * - the issuer key is ECDSA P-256 and belongs to the issuer certificate (leaves are signed with it);
 * - the issuer is a CA that may sign certificates, is valid now, and chains to a trust anchor
 *   through the certificates it was given, with every link checked (names, signatures, validity,
 *   CA-ness, path length);
 * - the chain Certify returns and the window a leaf may be clamped into are computed here.
 *
 * Every refusal is a MeshidError (ERR_ISSUER_INVALID or ERR_ANCHORS_INVALID) whose message names
 * the certificate and the problem, because it ends up in a Kubernetes Event an operator reads.
 */
// @peculiar/x509 needs a Reflect metadata polyfill loaded before it (tsyringe throws otherwise);
// imports are evaluated in order, so this one line makes the module importable on its own.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { createHash, createPrivateKey, createPublicKey, webcrypto } from 'node:crypto';
import type { KeyObject, webcrypto as WebCrypto } from 'node:crypto';
import {
  MeshidError,
  PemError,
  chainFingerprints,
  fipsCertificateProblem,
  importSpki,
  parseCertificates as parseCoreCertificates,
  isOneSequence,
  parsePem,
  printable,
} from '../../core/index.js';
import type { AnchorBundle, ErrorCode } from '../../core/index.js';

/** Issuer files as read: the contents of a `kubernetes.io/tls` Secret. */
export interface IssuerMaterial {
  /** The issuer certificate first, then optional chain certificates (PEM). */
  readonly tlsCrt: string;
  /** The issuer private key: `EC PRIVATE KEY` (SEC1) or `PRIVATE KEY` (PKCS#8). */
  readonly tlsKey: string;
  /** Optional CA certificates; used as candidate intermediates when building the chain. */
  readonly caCrt?: string;
}

/** A validated issuer, ready for the hot path. Frozen. */
export interface IssuerCredentials {
  readonly certificateDer: Uint8Array;
  readonly privateKey: KeyObject;
  /**
   * What Certify returns as intermediates: the issuer first, then the chain certificates up to
   * but excluding the anchor. (When the issuer is itself an anchor it is still listed, alone.)
   */
  readonly intermediatesDer: readonly Uint8Array[];
  /** The issuer's own validity (ms since the epoch). */
  readonly notBefore: number;
  readonly notAfter: number;
  /** Latest notBefore / earliest notAfter over the issuer, the intermediates and the anchor. */
  readonly chainNotBefore: number;
  readonly chainNotAfter: number;
  /** Hex SHA-256 of the issuer certificate DER. */
  readonly fingerprint: string;
  /** The issuer's subject (RFC 4514 string). */
  readonly subject: string;
  /** The issuer's serial number, lower-case hex. */
  readonly serial: string;
  /** The anchors the issuer was validated against. */
  readonly anchors: AnchorBundle;
}

/**
 * At most this many certificates between the issuer and its anchor. Real deployments have zero or
 * one; the bound keeps path building cheap whatever ca.crt holds.
 */
export const MAX_INTERMEDIATES = 5;

/** Signature checks one path search may make; a guard against pathological inputs. */
const MAX_SIGNATURE_CHECKS = 200;

/**
 * node's WebCrypto: the crypto @peculiar/x509 runs on for every check here (and for the FIPS
 * probe), so FIPS mode covers it. Never @peculiar/webcrypto or the library's global provider.
 */
export const x509Crypto: WebCrypto.Crypto = webcrypto;
const crypto = x509Crypto;

// Extensions a certificate in the issuer's chain may mark critical. Proxies (webpki, Go) refuse
// chains through a CA with any other critical extension, so such an issuer would sign leaves
// nobody accepts.
const KNOWN_CRITICAL = new Set([
  '2.5.29.14', // subjectKeyIdentifier
  '2.5.29.15', // keyUsage
  '2.5.29.17', // subjectAltName
  '2.5.29.19', // basicConstraints
  '2.5.29.30', // nameConstraints
  '2.5.29.32', // certificatePolicies
  '2.5.29.35', // authorityKeyIdentifier
  '2.5.29.36', // policyConstraints
  '2.5.29.37', // extendedKeyUsage
  '2.5.29.54', // inhibitAnyPolicy
]);

const EKU_SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const EKU_CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';
const EKU_ANY = '2.5.29.37.0';

/** A certificate with what path building needs, computed once. */
interface ParsedCert {
  readonly der: Uint8Array;
  readonly cert: x509.X509Certificate;
  readonly subject: string;
  readonly subjectDer: Buffer;
  readonly issuerDer: Buffer;
  readonly notBefore: number;
  readonly notAfter: number;
  readonly sha256: string;
}

/**
 * Validates issuer material against trust anchors and returns what the hot path needs.
 *
 * The first certificate of tls.crt is the issuer; later ones, and those in ca.crt, are candidate
 * intermediates. The key must be ECDSA P-256 (SEC1 or PKCS#8) and match the issuer; the issuer
 * must be a CA allowed to sign certificates, valid at `now`, and chain to a non-expired anchor
 * through at most {@link MAX_INTERMEDIATES} certificates, each link checked for name, signature,
 * validity, CA-ness and path length. Anything else is refused with ERR_ISSUER_INVALID and a
 * message naming the problem.
 *
 * @param material - the issuer files.
 * @param anchors - from core's parseAnchors.
 * @param now - ms since the epoch.
 */
export async function validateIssuer(
  material: IssuerMaterial,
  anchors: AnchorBundle,
  now: number,
): Promise<IssuerCredentials> {
  try {
    return await validate(material, anchors, now);
  } catch (err) {
    if (err instanceof MeshidError) throw err;
    // Whatever a library throws on odd input still becomes a refusal, never a crash.
    throw new MeshidError(
      'ERR_ISSUER_INVALID',
      `issuer material could not be validated: ${err instanceof Error ? err.message : String(err)}`,
      { cause: err },
    );
  }
}

async function validate(
  material: IssuerMaterial,
  anchors: AnchorBundle,
  now: number,
): Promise<IssuerCredentials> {
  const crt = parseCertificates(material.tlsCrt, 'issuer tls.crt', 'ERR_ISSUER_INVALID');
  const issuer = crt[0];
  if (issuer === undefined) throw invalid('issuer tls.crt holds no certificate');
  const privateKey = parseIssuerKey(material.tlsKey);
  checkKeyMatches(privateKey, issuer);

  const caProb = caProblem(issuer);
  if (caProb !== undefined) throw invalid(`issuer certificate ${quote(issuer.subject)} ${caProb}`);
  const issuerProb = chainCertProblem(issuer);
  if (issuerProb !== undefined) {
    throw invalid(`issuer certificate ${quote(issuer.subject)} ${issuerProb}`);
  }
  if (now < issuer.notBefore) {
    throw invalid(
      `issuer ${quote(issuer.subject)} is not yet valid: notBefore ${iso(issuer.notBefore)} is after now (${iso(now)})`,
    );
  }
  if (now > issuer.notAfter) {
    throw invalid(
      `issuer ${quote(issuer.subject)} expired at ${iso(issuer.notAfter)} (now ${iso(now)}; valid from ${iso(issuer.notBefore)})`,
    );
  }

  const caCrt =
    material.caCrt !== undefined && material.caCrt.trim() !== ''
      ? parseCertificates(material.caCrt, 'issuer ca.crt', 'ERR_ISSUER_INVALID')
      : [];
  const anchorCerts = anchors.anchors.map((a) =>
    parseCertificate(a.der, `trust anchor #${a.position}`, 'ERR_ANCHORS_INVALID'),
  );

  const found = await findPath(issuer, [...crt.slice(1), ...caCrt], anchorCerts, now);
  if (!('anchor' in found)) {
    const reasons = found.reasons.length > 0 ? `: ${found.reasons.join('; ')}` : '';
    // Every state folder names its certificates alike: the fingerprints tell them apart.
    let seen: string;
    try {
      seen = `; ${chainFingerprints(
        parseCoreCertificates(material.tlsCrt + (material.caCrt ?? ''), 'ERR_ISSUER_INVALID'),
        anchors.anchors,
        { chain: 'issuer tls.crt (+ ca.crt)', anchors: 'trust anchors' },
      )}`;
    } catch {
      seen = ''; // Parsed above by this module's rule; core's stricter reading adds nothing here.
    }
    throw invalid(
      `issuer does not chain to any trust anchor (issuer ${quote(issuer.subject)} issued by ${quote(issuer.cert.issuer)}, anchors: ${anchors.anchors.map((a) => quote(a.subject)).join(', ')})${reasons}${seen}`,
    );
  }

  const all = [...found.path, found.anchor];
  return Object.freeze({
    certificateDer: issuer.der,
    privateKey,
    intermediatesDer: Object.freeze(found.path.map((c) => c.der)),
    notBefore: issuer.notBefore,
    notAfter: issuer.notAfter,
    chainNotBefore: Math.max(...all.map((c) => c.notBefore)),
    chainNotAfter: Math.min(...all.map((c) => c.notAfter)),
    fingerprint: issuer.sha256,
    subject: issuer.subject,
    serial: issuer.cert.serialNumber.toLowerCase(),
    anchors,
  });
}

type PathResult =
  | { readonly path: readonly ParsedCert[]; readonly anchor: ParsedCert }
  | { readonly reasons: string[] };

/**
 * Depth-first search from the issuer towards an anchor. At each step the anchors are tried first
 * (shortest chain wins), then the candidate intermediates. A certificate whose name fits but
 * which fails a check is recorded as a reason, so that the refusal can say why the chain that
 * looked right was not accepted (an expired intermediate, a re-issued root with the same name).
 */
async function findPath(
  issuer: ParsedCert,
  candidates: readonly ParsedCert[],
  anchors: readonly ParsedCert[],
  now: number,
): Promise<PathResult> {
  const reasons = new Set<string>();
  const anchorHashes = new Set(anchors.map((a) => a.sha256));
  let signatureChecks = 0;

  // An issuer that is itself one of the anchors chains trivially (as in Go's Verify).
  const self = anchors.find((a) => a.sha256 === issuer.sha256);
  if (self !== undefined) return { path: [issuer], anchor: self };

  const linkProblem = async (
    child: ParsedCert,
    parent: ParsedCert,
    below: number,
    role: string,
  ): Promise<string | undefined> => {
    if (++signatureChecks > MAX_SIGNATURE_CHECKS) return 'too many candidate certificates to check';
    if (!(await signedBy(child, parent))) {
      return `${quote(child.subject)} is not signed by the key of ${role} ${quote(parent.subject)}`;
    }
    if (now > parent.notAfter) {
      return `${role} ${quote(parent.subject)} expired at ${iso(parent.notAfter)}`;
    }
    if (now < parent.notBefore) {
      return `${role} ${quote(parent.subject)} is not valid until ${iso(parent.notBefore)}`;
    }
    const ca = caProblem(parent);
    if (ca !== undefined) return `${role} ${quote(parent.subject)} ${ca}`;
    const pathLength = parent.cert.getExtension(x509.BasicConstraintsExtension)?.pathLength;
    // pathLenConstraint counts the CA certificates that may follow it towards the leaf: here the
    // issuer and every intermediate below `parent`.
    if (pathLength !== undefined && below > pathLength) {
      return `${role} ${quote(parent.subject)} allows ${pathLength} CA certificate(s) below it (pathLenConstraint) but the chain has ${below}`;
    }
    return undefined;
  };

  const extend = async (path: readonly ParsedCert[]): Promise<PathResult | undefined> => {
    const cur = path[path.length - 1]!;
    for (const anchor of anchors) {
      if (!cur.issuerDer.equals(anchor.subjectDer)) continue;
      const problem = await linkProblem(cur, anchor, path.length, 'trust anchor');
      if (problem === undefined) return { path, anchor };
      reasons.add(problem);
    }
    if (path.length > MAX_INTERMEDIATES) {
      reasons.add(`no trust anchor within ${MAX_INTERMEDIATES} intermediate certificates`);
      return undefined;
    }
    for (const next of candidates) {
      if (anchorHashes.has(next.sha256) || path.some((p) => p.sha256 === next.sha256)) continue;
      if (!cur.issuerDer.equals(next.subjectDer)) continue;
      const problem =
        (await linkProblem(cur, next, path.length, 'chain certificate')) ??
        prefixed(chainCertProblem(next), `chain certificate ${quote(next.subject)} `);
      if (problem !== undefined) {
        reasons.add(problem);
        continue;
      }
      const found = await extend([...path, next]);
      if (found !== undefined) return found;
    }
    return undefined;
  };

  return (await extend([issuer])) ?? { reasons: [...reasons] };
}

async function signedBy(child: ParsedCert, parent: ParsedCert): Promise<boolean> {
  try {
    return await child.cert.verify({ publicKey: parent.cert, signatureOnly: true }, crypto);
  } catch {
    // An unsupported or malformed key or signature is simply "not signed by this parent".
    return false;
  }
}

/** Why a certificate cannot act as a CA, or undefined when it can. */
function caProblem(c: ParsedCert): string | undefined {
  const bc = c.cert.getExtension(x509.BasicConstraintsExtension);
  if (bc === null) return 'is not a CA (it has no basicConstraints extension)';
  if (!bc.ca) return 'is not a CA (basicConstraints cA is false)';
  const ku = c.cert.getExtension(x509.KeyUsagesExtension);
  if (ku !== null && (ku.usages & x509.KeyUsageFlags.keyCertSign) === 0) {
    return 'has a keyUsage without keyCertSign, so it may not sign certificates';
  }
  return undefined;
}

/**
 * What proxies would hold against a CA between the leaf and the anchor: an unknown critical
 * extension, or an extendedKeyUsage that excludes TLS server or client authentication (webpki
 * and Go apply a CA's EKU to the leaves under it, and mesh leaves are both).
 */
function chainCertProblem(c: ParsedCert): string | undefined {
  for (const ext of c.cert.extensions) {
    if (ext.critical && !KNOWN_CRITICAL.has(ext.type)) {
      return `has an unsupported critical extension ${ext.type}`;
    }
  }
  const eku = c.cert.getExtension(x509.ExtendedKeyUsageExtension);
  if (eku !== null) {
    const usages = new Set(eku.usages.map(String));
    if (!usages.has(EKU_ANY) && !(usages.has(EKU_SERVER_AUTH) && usages.has(EKU_CLIENT_AUTH))) {
      return 'has an extendedKeyUsage without both serverAuth and clientAuth, so peers would refuse the leaves under it';
    }
  }
  return undefined;
}

/**
 * The issuer's private key from `tls.key` by the CA's rule: one unencrypted ECDSA P-256 key
 * (SEC1 or PKCS#8). Throws ERR_ISSUER_INVALID saying what the file holds instead. `meshid
 * check` applies the same rule, so it says what the CA would.
 *
 * @example
 * ```ts
 * const key = parseIssuerKey(await readFile('issuer/tls.key', 'utf8'));
 * ```
 */
export function parseIssuerKey(pem: string): KeyObject {
  let blocks;
  try {
    blocks = parsePem(pem);
  } catch (err) {
    if (err instanceof PemError) throw invalid(`issuer tls.key: ${err.message}`);
    throw err;
  }
  // `openssl ecparam -genkey` writes an EC PARAMETERS block before the key; it says nothing the
  // key does not, so it is skipped rather than refused.
  const keys = blocks.filter((b) => b.label !== 'EC PARAMETERS');
  const block = keys[0];
  if (block === undefined) throw invalid('issuer tls.key holds no private key');
  if (keys.length > 1) {
    throw invalid(`issuer tls.key holds ${keys.length} PEM blocks; expected one private key`);
  }

  let type: 'sec1' | 'pkcs8';
  switch (block.label) {
    case 'EC PRIVATE KEY':
      type = 'sec1';
      break;
    case 'PRIVATE KEY':
      type = 'pkcs8';
      break;
    case 'RSA PRIVATE KEY':
      throw invalid(rsaKeyMessage('PKCS#1 "RSA PRIVATE KEY"'));
    case 'ENCRYPTED PRIVATE KEY':
      throw invalid(
        'issuer private key is encrypted ("ENCRYPTED PRIVATE KEY"); meshid needs it unencrypted, as in a kubernetes.io/tls Secret',
      );
    default:
      throw invalid(
        `issuer tls.key holds a "${block.label}" block, not a private key (expected "EC PRIVATE KEY" or "PRIVATE KEY")`,
      );
  }

  let key: KeyObject;
  try {
    const der = Buffer.from(block.der.buffer, block.der.byteOffset, block.der.byteLength);
    key = createPrivateKey({ key: der, format: 'der', type });
  } catch (err) {
    throw invalid(
      `issuer private key ("${block.label}") cannot be parsed: ${(err as Error).message}`,
      err,
    );
  }
  if (key.asymmetricKeyType === 'rsa' || key.asymmetricKeyType === 'rsa-pss') {
    throw invalid(rsaKeyMessage('PKCS#8'));
  }
  if (key.asymmetricKeyType !== 'ec') {
    throw invalid(`issuer private key is ${String(key.asymmetricKeyType)}; it must be ECDSA P-256`);
  }
  const curve = key.asymmetricKeyDetails?.namedCurve;
  if (curve !== 'prime256v1') {
    throw invalid(
      `issuer private key is ECDSA ${curveName(curve)}; it must be ECDSA P-256, the curve meshid signs leaf certificates with`,
    );
  }
  return key;
}

function rsaKeyMessage(form: string): string {
  return `issuer private key is RSA (${form}); meshid signs leaf certificates with ECDSA P-256, so the issuer key must be ECDSA P-256`;
}

function curveName(curve: string | undefined): string {
  switch (curve) {
    case 'secp384r1':
      return 'P-384 (secp384r1)';
    case 'secp521r1':
      return 'P-521 (secp521r1)';
    default:
      return curve ?? '(unknown curve)';
  }
}

function checkKeyMatches(key: KeyObject, issuer: ParsedCert): void {
  let certKey: KeyObject;
  try {
    certKey = importSpki(new Uint8Array(issuer.cert.publicKey.rawData));
  } catch (err) {
    throw invalid(
      `issuer private key does not match the issuer certificate (its public key cannot be read: ${(err as Error).message})`,
      err,
    );
  }
  if (!createPublicKey(key).equals(certKey)) {
    throw invalid(
      `issuer private key does not match the issuer certificate ${quote(issuer.subject)}`,
    );
  }
}

function parseCertificates(pem: string, what: string, code: ErrorCode): ParsedCert[] {
  let blocks;
  try {
    blocks = parsePem(pem, 'CERTIFICATE');
  } catch (err) {
    if (err instanceof PemError) {
      throw new MeshidError(code, `${what}: ${err.message}`, { cause: err });
    }
    throw err;
  }
  return blocks.map((b, i) => parseCertificate(b.der, `${what} certificate #${i + 1}`, code));
}

function parseCertificate(der: Uint8Array, what: string, code: ErrorCode): ParsedCert {
  // @peculiar/x509 ignores bytes after the certificate; a truncated or concatenated body must
  // not pass as a certificate, so the outer SEQUENCE has to span the block exactly.
  if (!isOneSequence(der)) {
    throw new MeshidError(code, `${what} is not a DER X.509 certificate (bad or trailing bytes)`);
  }
  let cert: x509.X509Certificate;
  try {
    cert = new x509.X509Certificate(der);
  } catch (err) {
    throw new MeshidError(
      code,
      `${what} is not a parseable X.509 certificate: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
  return {
    der,
    cert,
    subject: cert.subject,
    subjectDer: Buffer.from(cert.subjectName.toArrayBuffer()),
    issuerDer: Buffer.from(cert.issuerName.toArrayBuffer()),
    notBefore: cert.notBefore.getTime(),
    notAfter: cert.notAfter.getTime(),
    sha256: sha256Hex(der),
  };
}

function invalid(message: string, cause?: unknown): MeshidError {
  return new MeshidError(
    'ERR_ISSUER_INVALID',
    message,
    cause === undefined ? undefined : { cause },
  );
}

function prefixed(problem: string | undefined, prefix: string): string | undefined {
  return problem === undefined ? undefined : prefix + problem;
}

function quote(subject: string): string {
  return `"${printable(subject, 120)}"`;
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function sha256Hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * FIPS mode's check of the issuer and its chain certificates (the anchors are checked by core's
 * parseAnchors with `fips`): each must have a key and a signature inside the FIPS policy (core's
 * fipsCertificateProblem). Throws ERR_FIPS_MATERIAL_REFUSED naming the first one outside it.
 */
export function checkFipsIssuer(issuer: IssuerCredentials): void {
  issuer.intermediatesDer.forEach((der, i) => {
    const problem = fipsCertificateProblem(der);
    if (problem !== undefined) {
      throw fipsRefused(
        i === 0 ? `the issuer certificate ${quote(issuer.subject)}` : `chain certificate #${i}`,
        problem,
      );
    }
  });
}

function fipsRefused(what: string, problem: string): MeshidError {
  return new MeshidError('ERR_FIPS_MATERIAL_REFUSED', `FIPS mode refused ${what}: ${problem}`);
}
