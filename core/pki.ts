/**
 * Generation of CA certificates: the trust anchor and issuer that `meshid init` writes, and the
 * material tests build at run time (including material that is wrong on purpose, so that every
 * refusal of the issuer loader can be exercised).
 *
 * This is cold-path code built on @peculiar/x509. Its crypto argument is always node's own
 * WebCrypto, passed explicitly: the library's global provider is never set, so importing this
 * module registers nothing. Keys are handed back as node `KeyObject`s, which is what the hot path
 * signs with.
 */
// @peculiar/x509 resolves its algorithm registry through tsyringe, which throws at import time
// without a Reflect metadata polyfill. An ES module evaluates its imports in order, so importing
// the polyfill here, first, makes this module safe to import from anywhere (tests included).
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { createPrivateKey, createPublicKey, webcrypto } from 'node:crypto';
import type { KeyObject, webcrypto as WebCrypto } from 'node:crypto';
import { systemRandom } from './clock.js';
import type { Random } from './clock.js';
import { toPem } from './pem.js';

/** Key algorithms a generated CA can have. Only `ecdsa-p256` is usable as a meshid issuer. */
type CaKeyAlgorithm = 'ecdsa-p256' | 'ecdsa-p384' | 'rsa-2048';

/** Key usage bits a generated CA can carry. */
type CaKeyUsage = 'digitalSignature' | 'keyCertSign' | 'cRLSign';

/** Extended key usages a generated CA can carry (none by default, as cert-manager's CAs). */
type CaExtendedKeyUsage = 'serverAuth' | 'clientAuth' | 'codeSigning';

/** Options shared by root and intermediate CAs. */
export interface CaOptions {
  /** Subject common name; the subject is `CN=<commonName>`. */
  readonly commonName: string;
  /** Start of validity (ms since the epoch, or a Date). */
  readonly notBefore: number | Date;
  /** End of validity (ms since the epoch, or a Date). */
  readonly notAfter: number | Date;
  /** Key algorithm; default `ecdsa-p256`. The others exist for tests of refusals. */
  readonly keyAlgorithm?: CaKeyAlgorithm;
  /** basicConstraints cA; default true. False makes a certificate that is not a CA (tests). */
  readonly isCa?: boolean;
  /** basicConstraints pathLenConstraint; absent means unlimited. */
  readonly pathLength?: number;
  /** keyUsage bits; default `['keyCertSign', 'cRLSign']`. `'omit'` leaves the extension out. */
  readonly keyUsage?: readonly CaKeyUsage[] | 'omit';
  /** extendedKeyUsage purposes; absent means no extension. */
  readonly extendedKeyUsage?: readonly CaExtendedKeyUsage[];
  /** DNS subjectAltNames; absent means no extension (with `isCa: false`, a serving certificate). */
  readonly dnsNames?: readonly string[];
  /**
   * Return a freshly generated private key that does not belong to the certificate (tests of
   * the key-mismatch refusal). Default false.
   */
  readonly mismatchedKey?: boolean;
  /**
   * Certify this existing key instead of generating one (re-issuing or cross-signing a CA with
   * the same key). `keyAlgorithm` is then ignored.
   */
  readonly key?: KeyObject;
  /** Source of the serial number; default the system CSPRNG. */
  readonly random?: Random;
}

/** Options of {@link createRootCa}: a self-signed CA. */
type RootCaOptions = CaOptions;

/** The parts of a CA needed to sign with it. */
interface CaSigner {
  readonly certificateDer: Uint8Array;
  readonly privateKey: KeyObject;
}

/** Options of {@link createIntermediateCa}: a CA signed by `issuer`. */
interface IntermediateCaOptions extends CaOptions {
  /** The CA that signs the new certificate. */
  readonly issuer: CaSigner;
}

/** A generated CA certificate and its private key. */
export interface GeneratedCa {
  readonly certificateDer: Uint8Array;
  readonly certificatePem: string;
  readonly privateKey: KeyObject;
  /** The private key as PKCS#8 PEM (`PRIVATE KEY`). */
  readonly privateKeyPem: string;
}

type CryptoKey = WebCrypto.CryptoKey;
type CryptoKeyPair = WebCrypto.CryptoKeyPair;

// node's WebCrypto, handed to @peculiar/x509 on every call that takes a crypto argument.
const crypto: WebCrypto.Crypto = webcrypto;

/**
 * Creates a self-signed CA certificate (a trust anchor): ECDSA P-256 unless told otherwise,
 * SKI, keyUsage keyCertSign + cRLSign, critical basicConstraints cA, a random positive serial.
 */
export async function createRootCa(options: RootCaOptions): Promise<GeneratedCa> {
  const keys = await subjectKeys(options);
  return issue(options, keys, { subjectKeys: keys, name: subjectName(options.commonName) });
}

/**
 * Creates a CA certificate signed by another CA (an issuer or an intermediate), with an AKI that
 * names the signer's key.
 */
export async function createIntermediateCa(options: IntermediateCaOptions): Promise<GeneratedCa> {
  const keys = await subjectKeys(options);
  const signerCert = new x509.X509Certificate(options.issuer.certificateDer);
  const signingKey = await toSigningKey(options.issuer.privateKey);
  return issue(options, keys, {
    signerCert,
    signingKey,
    subjectKeys: keys,
    name: subjectName(options.commonName),
  });
}

interface IssueParams {
  readonly subjectKeys: CryptoKeyPair;
  readonly name: x509.JsonName;
  /** Absent for a self-signed certificate. */
  readonly signerCert?: x509.X509Certificate;
  readonly signingKey?: CryptoKey;
}

async function issue(
  options: CaOptions,
  keys: CryptoKeyPair,
  p: IssueParams,
): Promise<GeneratedCa> {
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(options.isCa ?? true, options.pathLength, true),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
  ];
  const usage = options.keyUsage ?? ['keyCertSign', 'cRLSign'];
  if (usage !== 'omit') {
    let flags = 0;
    for (const u of usage) flags |= x509.KeyUsageFlags[u];
    extensions.push(new x509.KeyUsagesExtension(flags, true));
  }
  if (options.extendedKeyUsage !== undefined) {
    extensions.push(
      new x509.ExtendedKeyUsageExtension(
        options.extendedKeyUsage.map((u) => x509.ExtendedKeyUsage[u]),
        false,
      ),
    );
  }
  if (options.dnsNames !== undefined && options.dnsNames.length > 0) {
    extensions.push(
      new x509.SubjectAlternativeNameExtension(
        options.dnsNames.map((value) => ({ type: 'dns' as const, value })),
        false,
      ),
    );
  }
  if (p.signerCert !== undefined) {
    // Point at the signer's key: its SKI when it has one, else an identifier computed the same way.
    const ski = p.signerCert.getExtension(x509.SubjectKeyIdentifierExtension);
    extensions.push(
      ski !== null
        ? new x509.AuthorityKeyIdentifierExtension(ski.keyId, false)
        : await x509.AuthorityKeyIdentifierExtension.create(p.signerCert.publicKey, false, crypto),
    );
  } else {
    extensions.push(
      await x509.AuthorityKeyIdentifierExtension.create(keys.publicKey, false, crypto),
    );
  }

  const signingKey = p.signingKey ?? keys.privateKey;
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: randomSerialHex(options.random ?? systemRandom),
      subject: p.name,
      issuer: p.signerCert?.subjectName ?? p.name,
      notBefore: new Date(options.notBefore),
      notAfter: new Date(options.notAfter),
      publicKey: keys.publicKey,
      signingKey,
      signingAlgorithm: signingAlgorithm(signingKey),
      extensions,
    },
    crypto,
  );

  const certificateDer = new Uint8Array(cert.rawData);
  const returnedKeys =
    options.mismatchedKey === true
      ? await generateKeys(options.keyAlgorithm ?? 'ecdsa-p256')
      : keys;
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey('pkcs8', returnedKeys.privateKey));
  const privateKey = createPrivateKey({ key: Buffer.from(pkcs8), format: 'der', type: 'pkcs8' });
  return {
    certificateDer,
    certificatePem: toPem(certificateDer, 'CERTIFICATE'),
    privateKey,
    privateKeyPem: toPem(pkcs8, 'PRIVATE KEY'),
  };
}

function subjectName(commonName: string): x509.JsonName {
  // The JSON form avoids RFC 4514 escaping: a common name may hold ',', '+' or '='.
  return [{ CN: [commonName] }];
}

/** 16 random bytes with the top bit cleared: a positive serial of up to 127 bits. */
function randomSerialHex(random: Random): string {
  for (;;) {
    const bytes = random.bytes(16);
    bytes[0] = bytes[0]! & 0x7f;
    // The library replaces an all-zero serial with one from its own global provider; never let it.
    if (bytes.some((b) => b !== 0)) return bytes.toString('hex');
  }
}

async function subjectKeys(options: CaOptions): Promise<CryptoKeyPair> {
  if (options.key === undefined) return generateKeys(options.keyAlgorithm ?? 'ecdsa-p256');
  const privateKey = await importPrivateKey(options.key, ['sign'], true);
  const spki = createPublicKey(options.key).export({ type: 'spki', format: 'der' });
  const publicKey = await crypto.subtle.importKey('spki', spki, privateKey.algorithm, true, [
    'verify',
  ]);
  return { privateKey, publicKey };
}

async function generateKeys(alg: CaKeyAlgorithm): Promise<CryptoKeyPair> {
  switch (alg) {
    case 'ecdsa-p256':
      return crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
        'sign',
        'verify',
      ]);
    case 'ecdsa-p384':
      return crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-384' }, true, [
        'sign',
        'verify',
      ]);
    case 'rsa-2048':
      return crypto.subtle.generateKey(
        {
          name: 'RSASSA-PKCS1-v1_5',
          modulusLength: 2048,
          publicExponent: new Uint8Array([1, 0, 1]),
          hash: 'SHA-256',
        },
        true,
        ['sign', 'verify'],
      );
  }
}

/** Imports a node private key into WebCrypto so that @peculiar/x509 can sign with it. */
function toSigningKey(key: KeyObject): Promise<CryptoKey> {
  return importPrivateKey(key, ['sign'], false);
}

async function importPrivateKey(
  key: KeyObject,
  usages: WebCrypto.KeyUsage[],
  extractable: boolean,
): Promise<CryptoKey> {
  const pkcs8 = key.export({ type: 'pkcs8', format: 'der' });
  if (key.asymmetricKeyType === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    const namedCurve = curve === 'secp384r1' ? 'P-384' : curve === 'secp521r1' ? 'P-521' : 'P-256';
    return crypto.subtle.importKey(
      'pkcs8',
      pkcs8,
      { name: 'ECDSA', namedCurve },
      extractable,
      usages,
    );
  }
  if (key.asymmetricKeyType === 'rsa') {
    return crypto.subtle.importKey(
      'pkcs8',
      pkcs8,
      { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
      extractable,
      usages,
    );
  }
  throw new TypeError(`cannot sign with a ${String(key.asymmetricKeyType)} key`);
}

function signingAlgorithm(key: CryptoKey): WebCrypto.Algorithm | WebCrypto.EcdsaParams {
  return key.algorithm.name === 'ECDSA'
    ? { name: 'ECDSA', hash: 'SHA-256' }
    : { name: key.algorithm.name };
}
