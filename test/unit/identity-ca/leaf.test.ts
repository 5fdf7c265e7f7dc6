import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import {
  ECDH,
  KeyObject,
  X509Certificate,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  verify as cryptoVerify,
} from 'node:crypto';
import type { webcrypto as WebCrypto } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import {
  DerReader,
  DerTag,
  X509Oid,
  decodeDer,
  derOid,
  derUnsignedInteger,
  isMeshidError,
  systemRandom,
  tlv,
  type ErrorCode,
  type Random,
} from '../../../core/index.js';
import { LeafSigner, randomSerial, type LeafFields } from '../../../identity-ca/issuer/leaf.js';
import { inTempDir } from '../core/fixtures/csr-makers.js';
import {
  ECDSA_P256_SHA256,
  keyIdOfP256Spki,
  peculiarLeaf,
  webCrypto,
} from './fixtures/leaf-profile.js';
import { readOctetAlignedBitString } from '../../../core/der.js';

const fixture = (name: string): Buffer =>
  readFileSync(new URL(`./fixtures/${name}`, import.meta.url));

interface Kat {
  readonly dnsName: string;
  readonly uri: string;
  readonly serialHex: string;
  readonly notBefore: string;
  readonly notAfter: string;
}
const kat = JSON.parse(fixture('leaf-kat.json').toString('utf8')) as Kat;
const katIssuer = new X509Certificate(fixture('leaf-kat-issuer.pem'));
const katIssuerKey = createPrivateKey(fixture('leaf-kat-issuer-key.pem'));
const katSubjectSpki = createPublicKey(
  createPrivateKey(fixture('leaf-kat-subject-key.pem')),
).export({
  type: 'spki',
  format: 'der',
});
const katFields: LeafFields = {
  spki: katSubjectSpki,
  dnsName: kat.dnsName,
  uri: kat.uri,
  serial: Buffer.from(kat.serialHex, 'hex'),
  notBefore: Date.parse(kat.notBefore),
  notAfter: Date.parse(kat.notAfter),
};

/** The three parts of a certificate: TBS (whole TLV), signature algorithm, signature value. */
function certParts(der: Uint8Array): { tbs: Buffer; algorithm: Buffer; signature: Buffer } {
  const r = new DerReader(decodeDer(der, DerTag.SEQUENCE, 'certificate').contents, 'certificate');
  const tbs = Buffer.from(r.next(DerTag.SEQUENCE).raw);
  const algorithm = Buffer.from(r.next(DerTag.SEQUENCE).raw);
  const signature = Buffer.from(readOctetAlignedBitString(r.next(DerTag.BIT_STRING)));
  r.finish();
  return { tbs, algorithm, signature };
}

/** The subject Name TLV of a certificate, as encoded in it. */
function subjectNameBytes(der: Uint8Array): Buffer {
  const tbs = new DerReader(decodeDer(certParts(der).tbs).contents);
  tbs.optional(0xa0);
  for (let i = 0; i < 4; i++) tbs.next(); // serial, signature, issuer, validity
  return Buffer.from(tbs.next(DerTag.SEQUENCE).raw);
}

/** The issuer Name TLV of a certificate, as encoded in it. */
function issuerNameBytes(der: Uint8Array): Buffer {
  const tbs = new DerReader(decodeDer(certParts(der).tbs).contents);
  tbs.optional(0xa0);
  tbs.next();
  tbs.next();
  return Buffer.from(tbs.next(DerTag.SEQUENCE).raw);
}

function p256Spki(): Buffer {
  return generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({
    type: 'spki',
    format: 'der',
  });
}

function assertCode(fn: () => unknown, code: ErrorCode, message: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(isMeshidError(err, code), `expected ${code}, got ${String(err)}`);
    assert.match(err.message, message);
    return true;
  });
}

interface TestCa {
  readonly cert: x509.X509Certificate;
  readonly keys: WebCrypto.CryptoKeyPair;
  readonly privateKey: KeyObject;
}

/** A CA made with @peculiar/x509, valid from an hour ago for a year. */
async function makeCa(name: string, parent?: TestCa, withSki = true): Promise<TestCa> {
  const keys = (await webCrypto.subtle.generateKey(ECDSA_P256_SHA256, true, [
    'sign',
    'verify',
  ])) as WebCrypto.CryptoKeyPair;
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(true, parent === undefined ? undefined : 0, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
  ];
  if (withSki)
    extensions.push(
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, webCrypto),
    );
  const notBefore = new Date(Date.now() - 3_600_000);
  const notAfter = new Date(Date.now() + 365 * 86_400_000);
  let cert: x509.X509Certificate;
  if (parent === undefined) {
    cert = await x509.X509CertificateGenerator.createSelfSigned(
      { name, keys, notBefore, notAfter, signingAlgorithm: ECDSA_P256_SHA256, extensions },
      webCrypto,
    );
  } else {
    extensions.push(
      await x509.AuthorityKeyIdentifierExtension.create(parent.cert, false, webCrypto),
    );
    cert = await x509.X509CertificateGenerator.create(
      {
        subject: name,
        issuer: parent.cert.subjectName,
        notBefore,
        notAfter,
        publicKey: keys.publicKey,
        signingKey: parent.keys.privateKey,
        signingAlgorithm: ECDSA_P256_SHA256,
        extensions,
      },
      webCrypto,
    );
  }
  return { cert, keys, privateKey: KeyObject.from(keys.privateKey) };
}

/** Fields for a leaf valid now, as Certify makes them. */
function nowFields(spki: Uint8Array = p256Spki()): LeafFields {
  const now = Math.floor(Date.now() / 1000) * 1000;
  return {
    spki,
    dnsName: kat.dnsName,
    uri: kat.uri,
    serial: randomSerial(systemRandom),
    notBefore: now - 20_000,
    notAfter: now + 86_400_000,
  };
}

describe('identity-ca/issuer/leaf', () => {
  describe('the known-answer leaf', () => {
    const signer = new LeafSigner(katIssuer.raw, katIssuerKey);
    const leaf = signer.sign(katFields);

    it('has exactly the TBSCertificate of the fixed vector (encoded independently by @peculiar/x509)', () => {
      const expected = fixture('leaf-kat-tbs.hex').toString('utf8').trim();
      assert.equal(certParts(leaf).tbs.toString('hex'), expected);
    });

    it("is signed ecdsa-with-SHA256 with a signature the issuer's public key verifies", () => {
      const { tbs, algorithm, signature } = certParts(leaf);
      assert.deepEqual(algorithm, tlv(DerTag.SEQUENCE, derOid(X509Oid.ecdsaWithSha256)));
      assert.equal(cryptoVerify('sha256', tbs, katIssuer.publicKey, signature), true);
      const other = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey;
      assert.equal(cryptoVerify('sha256', tbs, other, signature), false);
    });

    it('gets a fresh ECDSA signature each time over the same TBS', () => {
      const again = signer.sign(katFields);
      assert.deepEqual(certParts(again).tbs, certParts(leaf).tbs);
      assert.notDeepEqual(certParts(again).signature, certParts(leaf).signature);
    });

    it('is read by node:crypto with the issuer, names and dates expected', () => {
      const cert = new X509Certificate(leaf);
      assert.equal(cert.verify(katIssuer.publicKey), true);
      assert.equal(cert.checkIssued(katIssuer), true);
      assert.equal(cert.subject ?? '', '', 'no subject');
      assert.equal(cert.subjectAltName, `DNS:${kat.dnsName}, URI:${kat.uri}`);
      assert.equal(cert.serialNumber, kat.serialHex.toUpperCase());
      assert.equal(cert.ca, false);
      assert.equal(Date.parse(cert.validTo), Date.parse(kat.notAfter));
    });
  });

  describe('compared with @peculiar/x509 building the same profile', () => {
    it('gives the same TBS bytes for a fresh issuer, key, serial and dates', async () => {
      const root = await makeCa('CN=root.linkerd.cluster.local');
      const issuer = await makeCa('CN=identity.linkerd.cluster.local, O=meshid', root);
      const fields = nowFields();
      const ours = new LeafSigner(new Uint8Array(issuer.cert.rawData), issuer.privateKey).sign(
        fields,
      );
      const theirs = await peculiarLeaf(issuer.cert, issuer.keys.privateKey, fields);
      assert.equal(
        certParts(ours).tbs.toString('hex'),
        certParts(new Uint8Array(theirs.rawData)).tbs.toString('hex'),
      );
    });

    it("computes the AKI from the issuer's key when the issuer has no SKI", async () => {
      const issuer = await makeCa('CN=no-ski issuer', undefined, false);
      assert.equal(issuer.cert.getExtension(x509.SubjectKeyIdentifierExtension), null);
      const fields = nowFields();
      const ours = new LeafSigner(new Uint8Array(issuer.cert.rawData), issuer.privateKey).sign(
        fields,
      );
      const theirs = await peculiarLeaf(issuer.cert, issuer.keys.privateKey, fields);
      assert.deepEqual(certParts(ours).tbs, certParts(new Uint8Array(theirs.rawData)).tbs);
      const aki = new x509.X509Certificate(ours).getExtension(x509.AuthorityKeyIdentifierExtension);
      assert.equal(
        aki?.keyId,
        keyIdOfP256Spki(new Uint8Array(issuer.cert.publicKey.rawData)).toString('hex'),
      );
    });
  });

  describe('every field, as @peculiar/x509 reads it', () => {
    const leafDer = new LeafSigner(katIssuer.raw, katIssuerKey).sign(katFields);
    const leaf = new x509.X509Certificate(leafDer);
    const issuer = new x509.X509Certificate(katIssuer.raw);

    it('is version 3', () => {
      const tbs = new DerReader(decodeDer(certParts(leafDer).tbs).contents);
      assert.equal(Buffer.from(tbs.next(0xa0).raw).toString('hex'), 'a003020102');
    });

    it('has the given serial', () => assert.equal(leaf.serialNumber, kat.serialHex));

    it("has the issuer certificate's subject, byte for byte, as issuer", () => {
      assert.equal(leaf.issuer, issuer.subject);
      assert.deepEqual(issuerNameBytes(leafDer), subjectNameBytes(katIssuer.raw));
    });

    it('has the given validity, 2049 as UTCTime and 2050 as GeneralizedTime', () => {
      assert.equal(leaf.notBefore.getTime(), Date.parse(kat.notBefore));
      assert.equal(leaf.notAfter.getTime(), Date.parse(kat.notAfter));
      const tbs = certParts(leafDer).tbs;
      const utc = Buffer.concat([Uint8Array.of(0x17, 13), Buffer.from('491231235940Z')]);
      const generalized = Buffer.concat([Uint8Array.of(0x18, 15), Buffer.from('20500101235940Z')]);
      assert.ok(
        tbs.includes(
          Buffer.concat([Uint8Array.of(0x30, utc.length + generalized.length), utc, generalized]),
        ),
      );
    });

    it('has an empty subject', () => {
      assert.equal(leaf.subject, '');
      assert.deepEqual(subjectNameBytes(leafDer), Buffer.from([0x30, 0x00]));
    });

    it('carries the subject key as given', () => {
      assert.deepEqual(Buffer.from(leaf.publicKey.rawData), katSubjectSpki);
    });

    it('has a critical SAN with the DNS identity first, then the SPIFFE URI', () => {
      const san = leaf.getExtension(x509.SubjectAlternativeNameExtension);
      assert.ok(san !== null);
      assert.equal(san.critical, true);
      assert.deepEqual(
        san.names.items.map((n) => [n.type, n.value]),
        [
          ['dns', kat.dnsName],
          ['url', kat.uri],
        ],
      );
    });

    it('has a critical keyUsage of digitalSignature only', () => {
      const ku = leaf.getExtension(x509.KeyUsagesExtension);
      assert.ok(ku !== null);
      assert.equal(ku.critical, true);
      assert.equal(ku.usages, x509.KeyUsageFlags.digitalSignature);
    });

    it('has a non-critical extKeyUsage of serverAuth and clientAuth', () => {
      const eku = leaf.getExtension(x509.ExtendedKeyUsageExtension);
      assert.ok(eku !== null);
      assert.equal(eku.critical, false);
      assert.deepEqual(
        [...eku.usages],
        [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth],
      );
    });

    it('has critical basicConstraints with cA false and no path length', () => {
      const bc = leaf.getExtension(x509.BasicConstraintsExtension);
      assert.ok(bc !== null);
      assert.equal(bc.critical, true);
      assert.equal(bc.ca, false);
      assert.equal(bc.pathLength, undefined);
    });

    it('has an SKI of the leftmost 160 bits of SHA-256 of the key (RFC 7093 method 1)', () => {
      const ski = leaf.getExtension(x509.SubjectKeyIdentifierExtension);
      assert.ok(ski !== null);
      assert.equal(ski.critical, false);
      assert.equal(ski.keyId, keyIdOfP256Spki(katSubjectSpki).toString('hex'));
    });

    it("has an AKI equal to the issuer's SKI", () => {
      const aki = leaf.getExtension(x509.AuthorityKeyIdentifierExtension);
      const issuerSki = issuer.getExtension(x509.SubjectKeyIdentifierExtension);
      assert.ok(aki !== null && issuerSki !== null);
      assert.equal(aki.keyId, issuerSki.keyId);
      assert.equal(aki.certId, undefined);
    });

    it('has those six extensions and no others', () => {
      assert.deepEqual(
        [...leaf.extensions].map((e) => e.type),
        ['2.5.29.15', '2.5.29.37', '2.5.29.19', '2.5.29.35', '2.5.29.14', '2.5.29.17'],
      );
    });

    it('is signed ECDSA SHA-256 and verifies with the issuer key', async () => {
      assert.deepEqual(leaf.signatureAlgorithm, { name: 'ECDSA', hash: { name: 'SHA-256' } });
      assert.equal(
        await leaf.verify({ publicKey: issuer.publicKey, signatureOnly: true }, webCrypto),
        true,
      );
    });
  });

  describe('checked by openssl', () => {
    let dir: string;
    let files: { root: string; issuer: string; leaf: string };

    before(async () => {
      const root = await makeCa('CN=root.linkerd.cluster.local');
      const issuer = await makeCa('CN=identity.linkerd.cluster.local', root);
      const leaf = new LeafSigner(new Uint8Array(issuer.cert.rawData), issuer.privateKey).sign(
        nowFields(),
      );
      dir = mkdtempSync(join(tmpdir(), 'meshid-leaf-'));
      files = {
        root: join(dir, 'root.pem'),
        issuer: join(dir, 'issuer.pem'),
        leaf: join(dir, 'leaf.pem'),
      };
      writeFileSync(files.root, root.cert.toString('pem'));
      writeFileSync(files.issuer, issuer.cert.toString('pem'));
      writeFileSync(files.leaf, new x509.X509Certificate(leaf).toString('pem'));
    });
    after(() => rmSync(dir, { recursive: true, force: true }));

    const openssl = (...args: string[]): string =>
      execFileSync('openssl', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

    for (const purpose of ['sslserver', 'sslclient']) {
      it(`verifies the leaf through the issuer to the root, strictly, for ${purpose}`, () => {
        const out = openssl(
          'verify',
          '-x509_strict',
          '-purpose',
          purpose,
          '-CAfile',
          files.root,
          '-untrusted',
          files.issuer,
          files.leaf,
        );
        assert.match(out, /: OK\s*$/);
      });
    }

    it('refuses the leaf without the issuer (so the check can fail)', () => {
      assert.throws(() => openssl('verify', '-CAfile', files.root, files.leaf));
    });

    it('shows the expected extensions in `openssl x509 -text`', () => {
      const text = openssl('x509', '-in', files.leaf, '-noout', '-text');
      assert.match(text, /Version: 3 \(0x2\)/);
      assert.match(text, /Signature Algorithm: ecdsa-with-SHA256/);
      assert.match(text, /Subject: *\n/);
      assert.match(text, /ASN1 OID: prime256v1/);
      assert.match(text, /X509v3 Key Usage: critical\n\s+Digital Signature\n/);
      assert.match(
        text,
        /X509v3 Extended Key Usage: *\n\s+TLS Web Server Authentication, TLS Web Client Authentication\n/,
      );
      assert.match(text, /X509v3 Basic Constraints: critical\n\s+CA:FALSE\n/);
      assert.match(text, /X509v3 Subject Key Identifier: *\n/);
      assert.match(text, /X509v3 Authority Key Identifier: *\n/);
      assert.match(
        text,
        new RegExp(
          `X509v3 Subject Alternative Name: critical\\n\\s+DNS:${kat.dnsName.replace(/\./g, '\\.')}, URI:${kat.uri.replace(/[./]/g, '\\$&')}\\n`,
        ),
      );
    });
  });

  describe('issuer name encodings', () => {
    it('copies an openssl-made issuer Name (UTF8String) unchanged, where re-encoding would differ', () => {
      const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const pem = inTempDir((dir) => {
        const keyPath = join(dir, 'key.pem');
        writeFileSync(keyPath, privateKey.export({ type: 'pkcs8', format: 'pem' }));
        return execFileSync(
          'openssl',
          [
            'req',
            '-x509',
            '-key',
            keyPath,
            '-subj',
            '/CN=issuer/O=Acme, Inc.',
            '-days',
            '2',
            '-addext',
            'basicConstraints=critical,CA:TRUE',
            '-addext',
            'keyUsage=critical,keyCertSign',
          ],
          { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
        );
      });
      const issuerDer = new X509Certificate(pem).raw;
      const subject = subjectNameBytes(issuerDer);
      assert.ok(
        subject.includes(Buffer.from([0x0c, 6, ...Buffer.from('issuer')])),
        'openssl wrote a UTF8String',
      );
      const leaf = new LeafSigner(issuerDer, privateKey).sign(nowFields());
      assert.deepEqual(issuerNameBytes(leaf), subject);
      assert.equal(new X509Certificate(leaf).checkIssued(new X509Certificate(pem)), true);
    });
  });

  describe('refusals', () => {
    it('refuses an issuer key that does not match the issuer certificate', () => {
      const other = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
      assertCode(
        () => new LeafSigner(katIssuer.raw, other),
        'ERR_ISSUER_INVALID',
        /does not match/,
      );
    });

    it('refuses an issuer key that is not P-256', () => {
      const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey;
      assertCode(
        () => new LeafSigner(katIssuer.raw, p384),
        'ERR_ISSUER_INVALID',
        /P-256, got secp384r1/,
      );
      const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
      assertCode(
        () => new LeafSigner(katIssuer.raw, rsa),
        'ERR_ISSUER_INVALID',
        /EC P-256 private key/,
      );
    });

    it('refuses a public key as the issuer key', () => {
      assertCode(
        () => new LeafSigner(katIssuer.raw, katIssuer.publicKey),
        'ERR_ISSUER_INVALID',
        /private key, got a public/,
      );
    });

    it('refuses a malformed issuer certificate', () => {
      assertCode(
        () => new LeafSigner(katIssuer.raw.subarray(0, 100), katIssuerKey),
        'ERR_ISSUER_INVALID',
        /issuer certificate is malformed: certificate is truncated/,
      );
      assertCode(
        () => new LeafSigner(Buffer.concat([katIssuer.raw, Uint8Array.of(0)]), katIssuerKey),
        'ERR_ISSUER_INVALID',
        /trailing byte/,
      );
    });

    const otherKeys: [string, () => Uint8Array, RegExp][] = [
      [
        'a P-384 key',
        () =>
          generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey.export({
            type: 'spki',
            format: 'der',
          }),
        /must be ECDSA P-256, got EC P-384/,
      ],
      [
        'an RSA key',
        () =>
          generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({
            type: 'spki',
            format: 'der',
          }),
        /got RSA/,
      ],
      [
        'an Ed25519 key',
        () => generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'der' }),
        /got Ed25519/,
      ],
      [
        'a compressed P-256 point',
        () => {
          const point = p256Spki().subarray(-65);
          const compressed = ECDH.convertKey(
            point,
            'prime256v1',
            undefined,
            undefined,
            'compressed',
          ) as Buffer;
          return tlv(
            DerTag.SEQUENCE,
            tlv(DerTag.SEQUENCE, derOid(X509Oid.ecPublicKey), derOid(X509Oid.p256)),
            tlv(DerTag.BIT_STRING, Uint8Array.of(0), compressed),
          );
        },
        /uncompressed P-256 point/,
      ],
      ['bytes that are not a key', () => Uint8Array.of(1, 2, 3), /malformed key/],
    ];
    const signer = new LeafSigner(katIssuer.raw, katIssuerKey);
    for (const [name, spki, message] of otherKeys) {
      it(`refuses to certify ${name} with ERR_CSR_POLICY`, () =>
        assertCode(() => signer.sign({ ...katFields, spki: spki() }), 'ERR_CSR_POLICY', message));
    }

    const callerBugs: [string, Partial<LeafFields>, RegExp][] = [
      ['a zero serial', { serial: Uint8Array.of(0, 0) }, /positive/],
      ['a 21-byte serial', { serial: Buffer.alloc(21, 0x11) }, /21 bytes/],
      [
        'notBefore after notAfter',
        { notBefore: katFields.notAfter + 1000 },
        /notBefore is after notAfter/,
      ],
      ['an empty DNS name', { dnsName: '' }, /DNS name must be non-empty ASCII/],
      [
        'a non-ASCII URI',
        { uri: 'spiffe://clüster.local/ns/a/sa/b' },
        /URI must be non-empty ASCII/,
      ],
      ['a date after year 9999', { notAfter: Date.UTC(10000, 0, 1) }, /cannot be encoded/],
    ];
    for (const [name, change, message] of callerBugs) {
      it(`refuses ${name} with ERR_INTERNAL`, () =>
        assertCode(() => signer.sign({ ...katFields, ...change }), 'ERR_INTERNAL', message));
    }
  });

  describe('details', () => {
    const signer = new LeafSigner(katIssuer.raw, katIssuerKey);

    it('pads a serial whose top bit is set so it stays positive', () => {
      const leaf = signer.sign({ ...katFields, serial: Uint8Array.of(0x80, 0x01) });
      const tbs = new DerReader(decodeDer(certParts(leaf).tbs).contents);
      tbs.next(0xa0);
      assert.equal(Buffer.from(tbs.next(DerTag.INTEGER).raw).toString('hex'), '0203008001');
      assert.equal(new x509.X509Certificate(leaf).serialNumber, '8001');
    });

    it('truncates times to whole seconds', () => {
      const leaf = new X509Certificate(
        signer.sign({
          ...katFields,
          notBefore: Date.UTC(2030, 0, 1, 0, 0, 0, 999),
          notAfter: Date.UTC(2030, 0, 2, 0, 0, 0, 1),
        }),
      );
      assert.equal(Date.parse(leaf.validFrom), Date.UTC(2030, 0, 1));
      assert.equal(Date.parse(leaf.validTo), Date.UTC(2030, 0, 2));
    });

    it("does not depend on the caller's buffers after construction", () => {
      const issuerCopy = Buffer.from(katIssuer.raw);
      const own = new LeafSigner(issuerCopy, katIssuerKey);
      issuerCopy.fill(0);
      assert.equal(
        certParts(own.sign(katFields)).tbs.toString('hex'),
        fixture('leaf-kat-tbs.hex').toString('utf8').trim(),
      );
    });
  });

  describe('randomSerial', () => {
    const fixed = (...draws: number[][]): Random => {
      let i = 0;
      return { bytes: (n) => Buffer.from(draws[Math.min(i++, draws.length - 1)]!.slice(0, n)) };
    };
    const sixteen = (head: number[], fill = 0x11): number[] => [
      ...head,
      ...Array<number>(16 - head.length).fill(fill),
    ];

    it('is positive, at most 16 bytes, minimal, and different on every call', () => {
      const seen = new Set<string>();
      for (let i = 0; i < 2000; i++) {
        const s = randomSerial(systemRandom);
        assert.ok(s.length >= 1 && s.length <= 16);
        assert.ok(s[0]! < 0x80, 'positive without padding');
        assert.ok(!(s.length > 1 && s[0] === 0 && s[1]! < 0x80), 'no redundant leading zero');
        assert.ok(
          s.some((b) => b !== 0),
          'never zero',
        );
        // As DER INTEGER contents it is already minimal: encoding it changes nothing.
        assert.equal(derUnsignedInteger(s).subarray(2).toString('hex'), s.toString('hex'));
        seen.add(s.toString('hex'));
      }
      assert.equal(seen.size, 2000);
    });

    it('clears the top bit of the first byte', () => {
      assert.equal(randomSerial(fixed(sixteen([0xff]))).toString('hex'), `7f${'11'.repeat(15)}`);
    });

    it('drops leading zero bytes', () => {
      assert.equal(
        randomSerial(fixed(sixteen([0x80, 0x00, 0x12]))).toString('hex'),
        `12${'11'.repeat(13)}`,
      );
    });

    it('keeps one zero byte before a byte with its top bit set', () => {
      assert.equal(
        randomSerial(fixed(sixteen([0x00, 0x00, 0x90]))).toString('hex'),
        `0090${'11'.repeat(13)}`,
      );
    });

    it('draws again when all 16 bytes are zero', () => {
      const s = randomSerial(fixed(sixteen([], 0), sixteen([0x80], 0), sixteen([0x01])));
      assert.equal(s.toString('hex'), `01${'11'.repeat(15)}`);
    });

    it('gives up with ERR_INTERNAL when the source only returns zeros', () => {
      assertCode(() => randomSerial(fixed(sixteen([], 0))), 'ERR_INTERNAL', /all-zero/);
    });

    it('refuses a source that returns the wrong number of bytes', () => {
      assertCode(
        () => randomSerial({ bytes: () => Buffer.alloc(8, 1) }),
        'ERR_INTERNAL',
        /8 bytes, not 16/,
      );
    });

    it("does not change the source's buffer", () => {
      const buf = Buffer.from(sixteen([0xff]));
      randomSerial({ bytes: () => buf });
      assert.equal(buf[0], 0xff);
    });
  });
});
