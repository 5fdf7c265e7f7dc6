/**
 * Leaf certificates on the Certify hot path.
 *
 * Everything in a leaf that depends only on the issuer (its Name, the authority key identifier,
 * the algorithm identifiers, the fixed extensions) is DER-encoded once, when the signer is made;
 * each request splices in its serial, validity, public key, key identifier and names, and signs
 * the TBSCertificate with node:crypto synchronously. No generic ASN.1 object model is involved:
 * that is what makes issuance cost little more than the ECDSA signature itself.
 *
 * The profile (DESIGN.md "Leaf certificates", contract §4):
 * - v3, serial from {@link randomSerial}, signature ecdsa-with-SHA256;
 * - issuer = the issuer certificate's subject Name, copied byte for byte (name chaining compares
 *   encodings, so re-encoding it could break the chain);
 * - empty subject: identity names are often longer than X.520's 64-character ub-common-name, so
 *   the identity lives only in the SAN, which RFC 5280 §4.2.1.6 then requires to be critical;
 * - SAN = dNSName identity first, then the SPIFFE URI: Linkerd proxies take the first name as the
 *   peer identity;
 * - keyUsage (critical) digitalSignature, extKeyUsage serverAuth + clientAuth, basicConstraints
 *   (critical) cA=false, subjectKeyIdentifier, authorityKeyIdentifier.
 */
import { createHash, createPublicKey, sign as cryptoSign, type KeyObject } from 'node:crypto';
import {
  DerError,
  DerReader,
  DerTag,
  MeshidError,
  X509Oid,
  concatBytes,
  contextTag,
  decodeDer,
  derOid,
  derTime,
  derUnsignedInteger,
  importSpki,
  parseSpki,
  plainView,
  readOctetString,
  readOid,
  tlv,
  type Random,
} from '../../core/index.js';

/** The per-request parts of a leaf. */
export interface LeafFields {
  /** The subject's DER subjectPublicKeyInfo; must be an uncompressed EC P-256 key. */
  readonly spki: Uint8Array;
  /** The identity name, the first SAN. */
  readonly dnsName: string;
  /** The SPIFFE ID, the second SAN. */
  readonly uri: string;
  /** The serial's unsigned big-endian magnitude, as {@link randomSerial} returns it. */
  readonly serial: Uint8Array;
  /** Milliseconds since the epoch; truncated to whole seconds. */
  readonly notBefore: number;
  /** Milliseconds since the epoch; truncated to whole seconds. */
  readonly notAfter: number;
}

const OID_KEY_USAGE = '2.5.29.15';
const OID_EXT_KEY_USAGE = '2.5.29.37';
const OID_BASIC_CONSTRAINTS = '2.5.29.19';
const OID_SUBJECT_KEY_ID = '2.5.29.14';
const OID_AUTHORITY_KEY_ID = '2.5.29.35';
const OID_SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const OID_CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

const TRUE = Uint8Array.of(DerTag.BOOLEAN, 0x01, 0xff);

/** An Extension: extnID, critical only when true (DER omits the FALSE default), extnValue. */
function extension(oid: string | Uint8Array, critical: boolean, value: Uint8Array): Buffer {
  const id = typeof oid === 'string' ? derOid(oid) : oid;
  return critical
    ? tlv(DerTag.SEQUENCE, id, TRUE, tlv(DerTag.OCTET_STRING, value))
    : tlv(DerTag.SEQUENCE, id, tlv(DerTag.OCTET_STRING, value));
}

/** The subjectAltName OID, encoded once (every leaf has one). */
const SAN_OID = derOid(X509Oid.subjectAltName);

/** `[0] EXPLICIT Version v3(2)`. */
const VERSION_V3 = tlv(contextTag(0, true), tlv(DerTag.INTEGER, Uint8Array.of(2)));
/** AlgorithmIdentifier ecdsa-with-SHA256, parameters absent (RFC 5758 §3.2). */
const ECDSA_WITH_SHA256 = tlv(DerTag.SEQUENCE, derOid(X509Oid.ecdsaWithSha256));
/** The empty subject Name. */
const EMPTY_NAME = tlv(DerTag.SEQUENCE);
/**
 * The subjectPublicKeyInfo of a P-256 key up to the point: AlgorithmIdentifier
 * { id-ecPublicKey, prime256v1 } and the BIT STRING header with 0 unused bits. Every leaf key is
 * re-encoded as this prefix plus its 65-byte point, so a leaf's SPKI is canonical whatever
 * encoding quirks the request had.
 */
const P256_SPKI_PREFIX = (() => {
  const spki = tlv(
    DerTag.SEQUENCE,
    tlv(DerTag.SEQUENCE, derOid(X509Oid.ecPublicKey), derOid(X509Oid.p256)),
    tlv(DerTag.BIT_STRING, Uint8Array.of(0), new Uint8Array(65)),
  );
  return spki.subarray(0, spki.length - 65);
})();
/** subjectKeyIdentifier Extension up to its 20-byte key identifier (whose length is fixed). */
const SKI_PREFIX = (() => {
  const ext = extension(OID_SUBJECT_KEY_ID, false, tlv(DerTag.OCTET_STRING, new Uint8Array(20)));
  return ext.subarray(0, ext.length - 20);
})();
/**
 * keyUsage: digitalSignature only. keyEncipherment (which Linkerd's CA sets out of Go habit)
 * means "this key encrypts session keys", RSA key transport; an EC key cannot do that, TLS 1.3
 * has no key transport at all, and RFC 8813 says keyEncipherment must not be asserted for
 * id-ecPublicKey. ECDHE key agreement plus an ECDSA signature needs digitalSignature alone.
 * BIT STRING 03 02 07 80: bit 0 set, 7 unused bits (DER drops trailing zero bits).
 */
const KEY_USAGE = extension(
  OID_KEY_USAGE,
  true,
  Uint8Array.of(DerTag.BIT_STRING, 0x02, 0x07, 0x80),
);
/** extKeyUsage: serverAuth + clientAuth, since proxies are both ends of mTLS. Not critical. */
const EXT_KEY_USAGE = extension(
  OID_EXT_KEY_USAGE,
  false,
  tlv(DerTag.SEQUENCE, derOid(OID_SERVER_AUTH), derOid(OID_CLIENT_AUTH)),
);
/** basicConstraints (critical), cA=false: the DEFAULT is omitted, leaving an empty SEQUENCE. */
const BASIC_CONSTRAINTS = extension(OID_BASIC_CONSTRAINTS, true, tlv(DerTag.SEQUENCE));

/**
 * RFC 7093 §2 method 1: the leftmost 160 bits of the SHA-256 of the subjectPublicKey BIT STRING's
 * value (no tag, length or unused-bits byte). SHA-256 rather than RFC 5280's SHA-1, so FIPS
 * builds that forbid SHA-1 compute the same identifiers.
 */
function keyIdentifier(subjectPublicKey: Uint8Array): Buffer {
  return createHash('sha256').update(subjectPublicKey).digest().subarray(0, 20);
}

function issuerInvalid(message: string, cause?: unknown): MeshidError {
  return new MeshidError(
    'ERR_ISSUER_INVALID',
    message,
    cause === undefined ? undefined : { cause },
  );
}

/** The parts of the issuer certificate the leaf needs. */
interface IssuerFacts {
  readonly subject: Uint8Array;
  readonly spki: Uint8Array;
  readonly subjectKeyId: Uint8Array | undefined;
}

function readIssuerCertificate(der: Uint8Array): IssuerFacts {
  const cert = new DerReader(
    decodeDer(plainView(der), DerTag.SEQUENCE, 'certificate').contents,
    'certificate',
  );
  const tbs = new DerReader(
    cert.next(DerTag.SEQUENCE, 'tbsCertificate').contents,
    'tbsCertificate',
  );
  cert.next(DerTag.SEQUENCE, 'signatureAlgorithm');
  cert.next(DerTag.BIT_STRING, 'signatureValue');
  cert.finish();

  tbs.optional(contextTag(0, true), 'version');
  tbs.next(DerTag.INTEGER, 'serialNumber');
  tbs.next(DerTag.SEQUENCE, 'signature');
  tbs.next(DerTag.SEQUENCE, 'issuer');
  tbs.next(DerTag.SEQUENCE, 'validity');
  const subject = tbs.next(DerTag.SEQUENCE, 'subject').raw;
  const spki = tbs.next(DerTag.SEQUENCE, 'subjectPublicKeyInfo').raw;
  tbs.optional(contextTag(1), 'issuerUniqueID');
  tbs.optional(contextTag(2), 'subjectUniqueID');
  const extensions = tbs.optional(contextTag(3, true), 'extensions');
  tbs.finish();

  let subjectKeyId: Uint8Array | undefined;
  if (extensions !== undefined) {
    const list = decodeDer(extensions.contents, DerTag.SEQUENCE, 'extensions');
    const r = new DerReader(list.contents, 'extensions');
    while (r.more) {
      const ext = new DerReader(r.next(DerTag.SEQUENCE, 'extension').contents, 'extension');
      const id = readOid(ext.next(DerTag.OID, 'extnID'));
      ext.optional(DerTag.BOOLEAN, 'critical');
      const value = readOctetString(ext.next(DerTag.OCTET_STRING, 'extnValue'));
      ext.finish();
      if (id === OID_SUBJECT_KEY_ID) {
        subjectKeyId = readOctetString(
          decodeDer(value, DerTag.OCTET_STRING, 'subjectKeyIdentifier'),
        );
      }
    }
  }
  return { subject, spki, subjectKeyId };
}

function canonicalSpki(key: KeyObject): Buffer {
  return key.export({ type: 'spki', format: 'der' });
}

/**
 * Signs leaves for one issuer. Make one per loaded issuer and reuse it: the constructor does the
 * per-issuer work (parsing the certificate, checking the key, encoding the constant parts) so
 * {@link LeafSigner.sign} does only the per-request part.
 *
 * The signer does not check that the issuer is a CA or chains to the anchors; the issuer loader
 * does, before a signer is made.
 */
export class LeafSigner {
  readonly #key: KeyObject;
  /** TBSCertificate from the signature AlgorithmIdentifier through the issuer Name. */
  readonly #afterSerial: Buffer;
  /** keyUsage, extKeyUsage, basicConstraints, authorityKeyIdentifier. */
  readonly #constantExtensions: Buffer;

  /**
   * @param issuerCertificateDer the issuer's certificate, DER.
   * @param issuerKey the issuer's EC P-256 private key; must match the certificate.
   * @throws MeshidError ERR_ISSUER_INVALID when the certificate cannot be read, the key is not an
   *   EC P-256 private key, or the key does not match the certificate.
   */
  constructor(issuerCertificateDer: Uint8Array, issuerKey: KeyObject) {
    let facts: IssuerFacts;
    try {
      facts = readIssuerCertificate(issuerCertificateDer);
    } catch (err) {
      if (err instanceof DerError) {
        throw issuerInvalid(`issuer certificate is malformed: ${err.message}`, err);
      }
      throw err;
    }
    if (issuerKey.type !== 'private' || issuerKey.asymmetricKeyType !== 'ec') {
      throw issuerInvalid(
        `issuer key must be an EC P-256 private key, got a ${[issuerKey.type, issuerKey.asymmetricKeyType].filter((w) => w !== undefined).join(' ')} key`,
      );
    }
    const curve = issuerKey.asymmetricKeyDetails?.namedCurve;
    if (curve !== 'prime256v1') {
      throw issuerInvalid(`issuer key must be on curve P-256, got ${curve ?? 'an unnamed curve'}`);
    }
    // Compare canonical encodings: the certificate's SPKI goes through node:crypto and back, so
    // an encoding difference (say a compressed point) is not taken for a different key.
    let certKey: Buffer;
    try {
      certKey = canonicalSpki(importSpki(facts.spki));
    } catch (err) {
      throw issuerInvalid('issuer certificate public key cannot be read', err);
    }
    if (!certKey.equals(canonicalSpki(createPublicKey(issuerKey)))) {
      throw issuerInvalid("issuer key does not match the issuer certificate's public key");
    }
    this.#key = issuerKey;

    const authorityKeyId =
      facts.subjectKeyId !== undefined
        ? Buffer.from(facts.subjectKeyId)
        : keyIdentifier(parseSpki(certKey).publicKey);
    const aki = extension(
      OID_AUTHORITY_KEY_ID,
      false,
      tlv(DerTag.SEQUENCE, tlv(contextTag(0), authorityKeyId)),
    );
    // Copies, not views: the caller's buffer may be reused after this returns.
    this.#afterSerial = concatBytes([ECDSA_WITH_SHA256, facts.subject]);
    this.#constantExtensions = concatBytes([KEY_USAGE, EXT_KEY_USAGE, BASIC_CONSTRAINTS, aki]);
  }

  /**
   * Builds and signs one leaf.
   *
   * @returns the leaf certificate, DER.
   * @throws MeshidError ERR_CSR_POLICY when `spki` is not an uncompressed EC P-256 key;
   *   ERR_INTERNAL when another field is unusable (a caller bug: names must be non-empty ASCII,
   *   the serial positive and at most 20 bytes, notBefore ≤ notAfter).
   */
  sign(fields: LeafFields): Buffer {
    const point = p256Point(fields.spki);
    const serial = serialInteger(fields.serial);
    if (!(fields.notBefore <= fields.notAfter)) {
      throw new MeshidError('ERR_INTERNAL', 'leaf notBefore is after notAfter');
    }
    let validity: Buffer;
    try {
      validity = tlv(DerTag.SEQUENCE, derTime(fields.notBefore), derTime(fields.notAfter));
    } catch (err) {
      throw new MeshidError(
        'ERR_INTERNAL',
        `leaf validity cannot be encoded: ${err instanceof Error ? err.message : String(err)}`,
        { cause: err },
      );
    }
    const san = extension(
      SAN_OID,
      true,
      tlv(
        DerTag.SEQUENCE,
        tlv(contextTag(2), ia5(fields.dnsName, 'DNS name')),
        tlv(contextTag(6), ia5(fields.uri, 'URI')),
      ),
    );
    const extensions = tlv(
      contextTag(3, true),
      tlv(DerTag.SEQUENCE, this.#constantExtensions, SKI_PREFIX, keyIdentifier(point), san),
    );
    const tbs = tlv(
      DerTag.SEQUENCE,
      VERSION_V3,
      serial,
      this.#afterSerial,
      validity,
      EMPTY_NAME,
      P256_SPKI_PREFIX,
      point,
      extensions,
    );
    // node:crypto's ECDSA signature is already the DER Ecdsa-Sig-Value X.509 wants.
    const signature = cryptoSign('sha256', tbs, this.#key);
    return tlv(
      DerTag.SEQUENCE,
      tbs,
      ECDSA_WITH_SHA256,
      tlv(DerTag.BIT_STRING, Uint8Array.of(0), signature),
    );
  }
}

/**
 * The 65-byte uncompressed point of a P-256 SPKI, or ERR_CSR_POLICY. The point is not checked to
 * be on the curve here: Certify checks proof of possession first (verifying the CSR signature
 * imports the key, which rejects points off the curve), and the CA's own keys are made by
 * node:crypto.
 */
function p256Point(spki: Uint8Array): Uint8Array {
  let info;
  try {
    info = parseSpki(spki);
  } catch (err) {
    throw new MeshidError(
      'ERR_CSR_POLICY',
      'leaf public key must be ECDSA P-256, got a malformed key',
      { cause: err },
    );
  }
  if (info.algorithm !== 'EC' || info.curve !== 'P-256') {
    const got =
      info.algorithm === 'EC' ? `EC ${info.curve ?? 'with explicit parameters'}` : info.algorithm;
    throw new MeshidError('ERR_CSR_POLICY', `leaf public key must be ECDSA P-256, got ${got}`);
  }
  const p = info.publicKey;
  if (p.length !== 65 || p[0] !== 0x04) {
    throw new MeshidError(
      'ERR_CSR_POLICY',
      `leaf public key must be an uncompressed P-256 point (65 bytes starting 0x04), got ${p.length} bytes`,
    );
  }
  return p;
}

/** The serial INTEGER; RFC 5280 §4.1.2.2: positive, at most 20 content bytes. */
function serialInteger(magnitude: Uint8Array): Buffer {
  if (magnitude.every((b) => b === 0)) {
    throw new MeshidError('ERR_INTERNAL', 'leaf serial must be positive, got zero');
  }
  const serial = derUnsignedInteger(magnitude);
  if (serial.length - 2 > 20) {
    throw new MeshidError(
      'ERR_INTERNAL',
      `leaf serial is ${serial.length - 2} bytes, over RFC 5280's 20`,
    );
  }
  return serial;
}

function ia5(s: string, what: string): Buffer {
  // Only ASCII encodes to as many UTF-8 bytes as it has UTF-16 code units.
  if (s.length === 0 || Buffer.byteLength(s, 'utf8') !== s.length) {
    throw new MeshidError('ERR_INTERNAL', `leaf ${what} must be non-empty ASCII`);
  }
  return Buffer.from(s, 'latin1');
}

/** How many random bytes a serial starts from: 128 bits, well over the contract's 64. */
const SERIAL_BYTES = 16;

/**
 * A random positive serial: 16 random bytes with the top bit cleared (so the INTEGER is positive
 * without a padding byte), as minimal DER INTEGER contents: leading zero bytes are dropped unless
 * the next byte has its top bit set. Never zero: an all-zero draw is drawn again.
 *
 * @throws MeshidError ERR_INTERNAL when the random source returns the wrong length, or only zeros
 *   four times running (it is broken).
 */
export function randomSerial(random: Random): Buffer {
  for (let attempt = 0; attempt < 4; attempt++) {
    const drawn = random.bytes(SERIAL_BYTES);
    if (drawn.length !== SERIAL_BYTES) {
      throw new MeshidError(
        'ERR_INTERNAL',
        `random source returned ${drawn.length} bytes, not ${SERIAL_BYTES}`,
      );
    }
    const b = Buffer.from(drawn); // a copy: the source's buffer is not ours to change
    b[0] = b[0]! & 0x7f;
    let i = 0;
    while (i < SERIAL_BYTES - 1 && b[i] === 0 && b[i + 1]! < 0x80) i++;
    // Stopping early means a non-zero byte (or 00 before a high byte) was found.
    if (i < SERIAL_BYTES - 1 || b[i] !== 0) return b.subarray(i);
  }
  throw new MeshidError('ERR_INTERNAL', 'random source returned an all-zero serial four times');
}
