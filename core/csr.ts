/**
 * PKCS#10 certification requests (RFC 2986) on the Certify hot path: a strict parser, a
 * synchronous signature check with node:crypto, and a builder for the proxy and the tests.
 *
 * The parser reads only DER. The Certify contract carries CSRs as DER bytes (the proto comments
 * say PEM, Linkerd sends DER), so PEM is detected and refused with a message saying so instead of
 * being quietly accepted: a client that sends PEM is broken and should hear about it.
 *
 * The parser checks structure only. What a CSR may ask for (key type, names, proof of possession)
 * is the issuer's policy, in identity-ca/issuer/csr-policy.ts.
 */
import { createPublicKey, sign as cryptoSign, verify as cryptoVerify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';
import {
  DerError,
  DerReader,
  DerTag,
  contextTag,
  decodeDer,
  readAll,
  readBoolean,
  readElement,
  readOctetAlignedBitString,
  readOctetString,
  readOid,
  readSmallInteger,
  readString,
  ia5ToString,
  plainView,
  type DerElement,
} from './der.js';
import { derOid, tlv } from './der-write.js';
import { MeshidError } from './errors.js';
import { formatIpv6 } from './ip.js';

/** A parsed PKCS#10 request. Byte fields are views into the input, not copies. */
export interface ParsedCsr {
  /** The whole request as given. */
  readonly der: Uint8Array;
  /** The CertificationRequestInfo TLV: the bytes the signature covers. */
  readonly certificationRequestInfo: Uint8Array;
  /** Every commonName (2.5.4.3) in the subject, in order. */
  readonly subjectCommonNames: readonly string[];
  /** The dNSName entries of the requested subjectAltName extension, in order. */
  readonly dnsNames: readonly string[];
  /**
   * Every other requested SAN, described: `URI:<uri>`, `IP:<address>`, `email:<address>`,
   * `otherName`, `directoryName`, `registeredID`, `x400Address`, `ediPartyName`.
   */
  readonly otherSubjectAltNames: readonly string[];
  /** The subjectPublicKeyInfo TLV and what kind of key it holds. */
  readonly publicKey: {
    readonly spki: Uint8Array;
    /** The subjectPublicKey bits (for EC, the encoded point). */
    readonly point: Uint8Array;
    readonly algorithm: 'EC' | 'RSA' | 'Ed25519' | 'other';
    /** For EC keys on a named curve: 'P-256', 'P-384', 'P-521', or the curve's dotted OID. */
    readonly curve?: string;
  };
  /** The signature algorithm's dotted OID, e.g. '1.2.840.10045.4.3.2' (ecdsa-with-SHA256). */
  readonly signatureAlgorithm: string;
  /** The signature BIT STRING's bytes (for ECDSA, a DER Ecdsa-Sig-Value). */
  readonly signature: Uint8Array;
}

/**
 * Object identifiers used by requests and leaves, dotted.
 *
 * @example
 * ```ts
 * csr.signatureAlgorithm === X509Oid.ecdsaWithSha256;
 * ```
 */
export const X509Oid = {
  commonName: '2.5.4.3',
  extensionRequest: '1.2.840.113549.1.9.14',
  subjectAltName: '2.5.29.17',
  ecPublicKey: '1.2.840.10045.2.1',
  rsaEncryption: '1.2.840.113549.1.1.1',
  ed25519: '1.3.101.112',
  p256: '1.2.840.10045.3.1.7',
  p384: '1.3.132.0.34',
  p521: '1.3.132.0.35',
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  ecdsaWithSha384: '1.2.840.10045.4.3.3',
  ecdsaWithSha512: '1.2.840.10045.4.3.4',
} as const;

// Maps, not object literals: keys come from requests, and a key like "constructor" must not find
// an inherited property.
const CURVE_NAMES: ReadonlyMap<string, string> = new Map([
  [X509Oid.p256, 'P-256'],
  [X509Oid.p384, 'P-384'],
  [X509Oid.p521, 'P-521'],
]);

/** The ECDSA signature algorithms accepted, and their hashes. */
const ECDSA_HASH: ReadonlyMap<string, string> = new Map([
  [X509Oid.ecdsaWithSha256, 'sha256'],
  [X509Oid.ecdsaWithSha384, 'sha384'],
  [X509Oid.ecdsaWithSha512, 'sha512'],
]);

/** A subjectPublicKeyInfo taken apart. */
interface SpkiInfo {
  readonly algorithm: 'EC' | 'RSA' | 'Ed25519' | 'other';
  /** The algorithm's dotted OID, e.g. '1.2.840.10045.2.1'. */
  readonly algorithmOid: string;
  /** For EC keys on a named curve: 'P-256', 'P-384', 'P-521', or the curve's dotted OID. */
  readonly curve?: string;
  /** The subjectPublicKey BIT STRING's bytes (for EC, the encoded point). */
  readonly publicKey: Uint8Array;
}

function malformed(message: string, cause?: unknown): MeshidError {
  return new MeshidError('ERR_CSR_MALFORMED', message, cause === undefined ? undefined : { cause });
}

/** Reads an AlgorithmIdentifier: the OID and at most one parameters element. */
function readAlgorithmIdentifier(
  el: DerElement,
  what: string,
): { oid: string; params: DerElement | undefined } {
  const r = new DerReader(el.contents, what);
  const oid = readOid(r.next(DerTag.OID, 'algorithm'), `${what} algorithm`);
  const params = r.more ? r.next(undefined, 'parameters') : undefined;
  r.finish();
  return { oid, params };
}

function spkiFromElement(el: DerElement): SpkiInfo {
  const r = new DerReader(el.contents, 'subjectPublicKeyInfo');
  const alg = readAlgorithmIdentifier(
    r.next(DerTag.SEQUENCE, 'algorithm'),
    'subjectPublicKeyInfo algorithm',
  );
  const publicKey = readOctetAlignedBitString(
    r.next(DerTag.BIT_STRING, 'subjectPublicKey'),
    'subjectPublicKey',
  );
  r.finish();
  switch (alg.oid) {
    case X509Oid.ecPublicKey: {
      // Only a namedCurve OID names a curve; explicit parameters (or implicitCA) leave it unset,
      // which the policy refuses like any other curve that is not P-256.
      if (alg.params?.tag !== DerTag.OID) {
        return { algorithm: 'EC', algorithmOid: alg.oid, publicKey };
      }
      const curveOid = readOid(alg.params, 'EC namedCurve');
      const curve = CURVE_NAMES.get(curveOid) ?? curveOid;
      return { algorithm: 'EC', algorithmOid: alg.oid, curve, publicKey };
    }
    case X509Oid.rsaEncryption:
      return { algorithm: 'RSA', algorithmOid: alg.oid, publicKey };
    case X509Oid.ed25519:
      return { algorithm: 'Ed25519', algorithmOid: alg.oid, publicKey };
    default:
      return { algorithm: 'other', algorithmOid: alg.oid, publicKey };
  }
}

/**
 * Takes a DER subjectPublicKeyInfo apart. Throws ERR_CSR_MALFORMED when it is not one.
 *
 * @example
 * ```ts
 * const { algorithm, curve } = parseSpki(csr.publicKey.spki); // 'EC', 'P-256'
 * ```
 */
export function parseSpki(spki: Uint8Array): SpkiInfo {
  try {
    return spkiFromElement(decodeDer(plainView(spki), DerTag.SEQUENCE, 'subjectPublicKeyInfo'));
  } catch (err) {
    if (err instanceof DerError) throw malformed(`public key is malformed: ${err.message}`, err);
    throw err;
  }
}

/** True when the bytes (after any ASCII whitespace) start with a PEM boundary. */
function looksLikePem(der: Uint8Array): boolean {
  let i = 0;
  while (i < der.length && (der[i] === 0x20 || (der[i]! >= 0x09 && der[i]! <= 0x0d))) i++;
  const marker = '-----BEGIN';
  if (der.length - i < marker.length) return false;
  for (let j = 0; j < marker.length; j++) {
    if (der[i + j] !== marker.charCodeAt(j)) return false;
  }
  return true;
}

function formatIp(b: Uint8Array): string {
  if (b.length === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  // RFC 5952 §5: an IPv4-mapped address keeps its IPv4 part dotted.
  if (b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff) {
    return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  }
  return formatIpv6(b);
}

function readGeneralNames(extnValue: Uint8Array, dnsNames: string[], others: string[]): void {
  const seq = decodeDer(extnValue, DerTag.SEQUENCE, 'subjectAltName');
  const names = readAll(seq.contents, 'subjectAltName');
  if (names.length === 0) {
    throw malformed('CSR subjectAltName extension is empty (GeneralNames needs at least one name)');
  }
  for (const gn of names) {
    switch (gn.tag) {
      case contextTag(2):
        dnsNames.push(ia5ToString(gn.contents, 'subjectAltName dNSName'));
        break;
      case contextTag(6):
        others.push(`URI:${ia5ToString(gn.contents, 'subjectAltName URI')}`);
        break;
      case contextTag(1):
        others.push(`email:${ia5ToString(gn.contents, 'subjectAltName rfc822Name')}`);
        break;
      case contextTag(7):
        if (gn.contents.length !== 4 && gn.contents.length !== 16) {
          throw malformed(
            `CSR subjectAltName iPAddress is ${gn.contents.length} bytes; it must be 4 (IPv4) or 16 (IPv6)`,
          );
        }
        others.push(`IP:${formatIp(gn.contents)}`);
        break;
      case contextTag(0, true):
        others.push('otherName');
        break;
      case contextTag(3, true):
        others.push('x400Address');
        break;
      case contextTag(4, true):
        others.push('directoryName');
        break;
      case contextTag(5, true):
        others.push('ediPartyName');
        break;
      case contextTag(8):
        others.push('registeredID');
        break;
      default:
        throw malformed(
          `CSR subjectAltName holds a GeneralName with unknown tag 0x${gn.tag.toString(16).padStart(2, '0')}`,
        );
    }
  }
}

/** Reads the Extensions requested in an extensionRequest attribute; only the SAN is decoded. */
function readRequestedExtensions(values: DerElement, dnsNames: string[], others: string[]): void {
  const vals = readAll(values.contents, 'extensionRequest values');
  if (vals.length !== 1) {
    throw malformed(
      `CSR extensionRequest attribute must hold exactly one value, it holds ${vals.length}`,
    );
  }
  const exts = vals[0]!;
  if (exts.tag !== DerTag.SEQUENCE) {
    throw malformed('CSR extensionRequest value is not a SEQUENCE of Extensions');
  }
  const seen = new Set<string>();
  for (const ext of readAll(exts.contents, 'requested extensions')) {
    if (ext.tag !== DerTag.SEQUENCE) throw malformed('CSR requested extension is not a SEQUENCE');
    const r = new DerReader(ext.contents, 'requested extension');
    const id = readOid(r.next(DerTag.OID, 'extnID'), 'requested extension extnID');
    // DER says a FALSE `critical` must be omitted, but Go's parser (Linkerd's CA) accepts an
    // explicit FALSE, so we do too; the BOOLEAN itself must still be DER (0x00 or 0xff).
    const critical = r.optional(DerTag.BOOLEAN, 'critical');
    if (critical !== undefined) readBoolean(critical, `requested extension ${id} critical`);
    const value = readOctetString(r.next(DerTag.OCTET_STRING, 'extnValue'), 'extnValue');
    r.finish();
    if (seen.has(id)) throw malformed(`CSR requests extension ${id} more than once`);
    seen.add(id);
    if (id === X509Oid.subjectAltName) readGeneralNames(value, dnsNames, others);
  }
}

function readSubjectCommonNames(subject: DerElement): string[] {
  const cns: string[] = [];
  for (const rdn of readAll(subject.contents, 'subject')) {
    if (rdn.tag !== DerTag.SET) throw malformed('CSR subject holds an RDN that is not a SET');
    const atvs = readAll(rdn.contents, 'subject RDN');
    if (atvs.length === 0) throw malformed('CSR subject holds an empty RDN');
    for (const atv of atvs) {
      if (atv.tag !== DerTag.SEQUENCE) {
        throw malformed('CSR subject holds an attribute that is not a SEQUENCE');
      }
      const r = new DerReader(atv.contents, 'subject attribute');
      const type = readOid(r.next(DerTag.OID, 'type'), 'subject attribute type');
      const value = r.next(undefined, 'value');
      r.finish();
      // No upper bound on the length: Linkerd proxies put the identity in the CN, and identity
      // names are often longer than X.520's 64-character ub-common-name.
      if (type === X509Oid.commonName) cns.push(readString(value, 'subject commonName'));
    }
  }
  return cns;
}

/** `der` is returned as given; `bytes` (the same bytes) is what is read. */
function parseStructure(der: Uint8Array, bytes: Uint8Array): ParsedCsr {
  const outer = readElement(bytes, 0, 'CertificationRequest');
  if (outer.tag !== DerTag.SEQUENCE) {
    throw malformed(
      `CSR does not start with a SEQUENCE (tag 0x${outer.tag.toString(16).padStart(2, '0')}); it is not a DER PKCS#10 request`,
    );
  }
  if (outer.end !== bytes.length) {
    throw malformed(
      `CSR has trailing bytes after the CertificationRequest (${bytes.length - outer.end} byte(s))`,
    );
  }
  const top = new DerReader(outer.contents, 'CertificationRequest');
  const cri = top.next(DerTag.SEQUENCE, 'certificationRequestInfo');
  const sigAlg = readAlgorithmIdentifier(
    top.next(DerTag.SEQUENCE, 'signatureAlgorithm'),
    'signatureAlgorithm',
  );
  const signature = readOctetAlignedBitString(
    top.next(DerTag.BIT_STRING, 'signature'),
    'signature',
  );
  top.finish();
  // RFC 5758 §3.2: ECDSA signature algorithm identifiers have no parameters at all.
  if (ECDSA_HASH.has(sigAlg.oid) && sigAlg.params !== undefined) {
    throw malformed(`CSR signatureAlgorithm ${sigAlg.oid} (ECDSA) must not have parameters`);
  }

  const info = new DerReader(cri.contents, 'certificationRequestInfo');
  const version = readSmallInteger(info.next(DerTag.INTEGER, 'version'), 'CSR version');
  if (version !== 0) throw malformed(`CSR version must be 0 (v1), got ${version}`);
  const subject = info.next(DerTag.SEQUENCE, 'subject');
  const spkiEl = info.next(DerTag.SEQUENCE, 'subjectPKInfo');
  // RFC 2986 makes `attributes [0]` mandatory (empty when there are none).
  const attributes = info.next(contextTag(0, true), 'attributes');
  info.finish();

  const subjectCommonNames = readSubjectCommonNames(subject);
  const spki = spkiFromElement(spkiEl);

  const dnsNames: string[] = [];
  const otherSubjectAltNames: string[] = [];
  let sawExtensionRequest = false;
  // The SET OF order DER requires is not enforced: the signature covers the bytes as sent, and
  // no meaning depends on the order.
  for (const attr of readAll(attributes.contents, 'attributes')) {
    if (attr.tag !== DerTag.SEQUENCE) throw malformed('CSR attribute is not a SEQUENCE');
    const r = new DerReader(attr.contents, 'attribute');
    const type = readOid(r.next(DerTag.OID, 'type'), 'attribute type');
    const values = r.next(DerTag.SET, 'values');
    r.finish();
    if (type === X509Oid.extensionRequest) {
      if (sawExtensionRequest) throw malformed('CSR has more than one extensionRequest attribute');
      sawExtensionRequest = true;
      readRequestedExtensions(values, dnsNames, otherSubjectAltNames);
    } else {
      readAll(values.contents, `attribute ${type} values`); // well-formed, otherwise ignored
    }
  }

  return {
    der,
    certificationRequestInfo: cri.raw,
    subjectCommonNames,
    dnsNames,
    otherSubjectAltNames,
    publicKey:
      spki.curve === undefined
        ? { spki: spkiEl.raw, point: spki.publicKey, algorithm: spki.algorithm }
        : { spki: spkiEl.raw, point: spki.publicKey, algorithm: spki.algorithm, curve: spki.curve },
    signatureAlgorithm: sigAlg.oid,
    signature,
  };
}

/**
 * Parses a DER PKCS#10 certification request, strictly. Checks structure only, not policy and
 * not the signature (see {@link verifyCsrSignature}).
 *
 * Throws MeshidError ERR_CSR_MALFORMED with a message naming the problem: empty input, PEM
 * instead of DER, a DER violation (indefinite or non-minimal length, truncation, trailing bytes),
 * a wrong version, a malformed name or extension.
 *
 * @example
 * ```ts
 * const csr = parseCsr(request.certificate_signing_request);
 * csr.dnsNames; // ['web.emojivoto.serviceaccount.identity.linkerd.cluster.local']
 * ```
 */
export function parseCsr(der: Uint8Array): ParsedCsr {
  if (der.length === 0) throw malformed('CSR is empty');
  if (looksLikePem(der)) {
    throw malformed(
      'CSR is PEM text; it must be DER (the raw bytes of the PKCS#10 request, as the Certify contract requires)',
    );
  }
  try {
    return parseStructure(der, plainView(der));
  } catch (err) {
    if (err instanceof DerError) throw malformed(`CSR is not valid DER: ${err.message}`, err);
    throw err;
  }
}

function asBuffer(u: Uint8Array): Buffer {
  return Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

/**
 * Imports a public key from its DER SubjectPublicKeyInfo with node:crypto: meshid's one key-import
 * path. OpenSSL's SPKI decoder checks an EC point is on the named curve (EC_POINT_oct2point), so
 * a key off the curve never imports. On OpenSSL 3.5 (Node 26) this is the cheapest import there
 * is: about twice as fast as WebCrypto's raw import, and it makes no CryptoKey, so nothing goes
 * through `KeyObject.from` (deprecated for non-extractable keys, DEP0204). docs/benchmarks.md has
 * the figures. Throws on a malformed key.
 *
 * @example
 * ```ts
 * const key = importSpki(new Uint8Array(cert.publicKey.rawData));
 * ```
 */
export function importSpki(spki: Uint8Array): KeyObject {
  return createPublicKey({ key: asBuffer(spki), format: 'der', type: 'spki' });
}

/**
 * Checks the request's self-signature (proof of possession of the private key) with
 * node:crypto. Only ECDSA with SHA-256, SHA-384 or SHA-512 over an EC key is accepted;
 * anything else, and any malformed key or signature, gives false. Never throws.
 *
 * @example
 * ```ts
 * if (!(await verifyCsrSignature(csr))) throw new MeshidError('ERR_CSR_POLICY', 'CSR signature does not verify');
 * ```
 */
export async function verifyCsrSignature(csr: ParsedCsr): Promise<boolean> {
  try {
    const hash = ECDSA_HASH.get(csr.signatureAlgorithm);
    if (hash === undefined || csr.publicKey.algorithm !== 'EC') return false;
    const key = importSpki(csr.publicKey.spki);
    return cryptoVerify(
      hash,
      csr.certificationRequestInfo,
      { key, dsaEncoding: 'der' },
      csr.signature,
    );
  } catch {
    // A key node:crypto cannot import (off the curve, malformed) proves nothing.
    return false;
  }
}

/** What {@link createCsr} puts in a request. */
export interface CreateCsrOptions {
  /** An EC private key (P-256 for the mesh); the request is signed ecdsa-with-SHA256. */
  readonly privateKey: KeyObject;
  /** Subject commonName, as a UTF8String; no subject when absent. */
  readonly commonName?: string;
  readonly dnsNames?: readonly string[];
  readonly uris?: readonly string[];
  readonly ipAddresses?: readonly string[];
  readonly emails?: readonly string[];
}

function ia5Bytes(s: string, what: string): Buffer {
  // Only ASCII encodes to as many UTF-8 bytes as it has UTF-16 code units.
  if (Buffer.byteLength(s, 'utf8') !== s.length) {
    throw new MeshidError('ERR_INTERNAL', `createCsr: ${what} "${s}" is not ASCII (IA5String)`);
  }
  return Buffer.from(s, 'latin1');
}

function ipBytes(ip: string): Uint8Array {
  if (isIPv4(ip)) return Uint8Array.from(ip.split('.').map(Number));
  if (!isIPv6(ip) || ip.includes('%')) {
    throw new MeshidError('ERR_INTERNAL', `createCsr: "${ip}" is not an IP address`);
  }
  let text = ip;
  const tail: number[] = [];
  const lastColon = text.lastIndexOf(':');
  const maybeV4 = text.slice(lastColon + 1);
  if (isIPv4(maybeV4)) {
    // An embedded IPv4 address (e.g. ::ffff:10.0.0.1) fills the last two groups.
    tail.push(...maybeV4.split('.').map(Number));
    text = `${text.slice(0, lastColon + 1)}0:0`;
  }
  const [head = '', rest] = text.split('::') as [string, string | undefined];
  const hs = head === '' ? [] : head.split(':');
  const rs = rest === undefined || rest === '' ? [] : rest.split(':');
  const fill = rest === undefined ? 0 : 8 - hs.length - rs.length;
  const groups = [...hs, ...Array<string>(fill).fill('0'), ...rs].map((g) => parseInt(g, 16));
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    out[2 * i] = g >>> 8;
    out[2 * i + 1] = g & 0xff;
  });
  if (tail.length === 4) out.set(tail, 12);
  return out;
}

/**
 * Builds a DER PKCS#10 request signed ecdsa-with-SHA256: subject CN when given, and an
 * extensionRequest with a subjectAltName when any name is given (DNS names, then URIs, IPs and
 * emails). The proxy uses it for its Certify request; tests use it to craft requests.
 *
 * @example
 * ```ts
 * const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
 * const der = createCsr({ privateKey, commonName: id, dnsNames: [id] });
 * ```
 */
export function createCsr(opts: CreateCsrOptions): Buffer {
  const { privateKey } = opts;
  if (privateKey.type !== 'private' || privateKey.asymmetricKeyType !== 'ec') {
    throw new MeshidError('ERR_INTERNAL', 'createCsr needs an EC private key');
  }
  const spki = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
  const subject =
    opts.commonName === undefined
      ? tlv(DerTag.SEQUENCE)
      : tlv(
          DerTag.SEQUENCE,
          tlv(
            DerTag.SET,
            tlv(
              DerTag.SEQUENCE,
              derOid(X509Oid.commonName),
              tlv(DerTag.UTF8_STRING, Buffer.from(opts.commonName, 'utf8')),
            ),
          ),
        );

  const names: Buffer[] = [
    ...(opts.dnsNames ?? []).map((n) => tlv(contextTag(2), ia5Bytes(n, 'DNS name'))),
    ...(opts.uris ?? []).map((u) => tlv(contextTag(6), ia5Bytes(u, 'URI'))),
    ...(opts.ipAddresses ?? []).map((ip) => tlv(contextTag(7), ipBytes(ip))),
    ...(opts.emails ?? []).map((e) => tlv(contextTag(1), ia5Bytes(e, 'email'))),
  ];
  const attributes =
    names.length === 0
      ? tlv(contextTag(0, true))
      : tlv(
          contextTag(0, true),
          tlv(
            DerTag.SEQUENCE,
            derOid(X509Oid.extensionRequest),
            tlv(
              DerTag.SET,
              tlv(
                DerTag.SEQUENCE,
                tlv(
                  DerTag.SEQUENCE,
                  derOid(X509Oid.subjectAltName),
                  tlv(DerTag.OCTET_STRING, tlv(DerTag.SEQUENCE, ...names)),
                ),
              ),
            ),
          ),
        );

  const cri = tlv(
    DerTag.SEQUENCE,
    tlv(DerTag.INTEGER, Uint8Array.of(0)),
    subject,
    spki,
    attributes,
  );
  const signature = cryptoSign('sha256', cri, { key: privateKey, dsaEncoding: 'der' });
  return tlv(
    DerTag.SEQUENCE,
    cri,
    tlv(DerTag.SEQUENCE, derOid(X509Oid.ecdsaWithSha256)),
    tlv(DerTag.BIT_STRING, Uint8Array.of(0), signature),
  );
}
