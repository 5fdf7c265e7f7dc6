import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { ECDH, createPublicKey } from 'node:crypto';
import type { webcrypto as WebCrypto } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import {
  DerTag,
  X509Oid,
  contextTag,
  createCsr,
  derOid,
  isMeshidError,
  parseCsr,
  tlv,
  verifyCsrSignature,
  type ParsedCsr,
} from '../../../core/index.js';
import {
  dnsName,
  extensionRequest,
  inTempDir,
  nodeKeyPair,
  opensslCsr,
  peculiarCsr,
  rawCsr,
  sanExtension,
  seededBytes,
  subjectName,
  webCrypto,
  type KeyKind,
} from './fixtures/csr-makers.js';
import { readElement } from '../../../core/der.js';

const ID = 'web.emojivoto.serviceaccount.identity.linkerd.cluster.local';

/** How meshid describes each @peculiar/x509 GeneralName type other than dns. */
function describePeculiarName(n: x509.GeneralName): string {
  switch (n.type) {
    case 'ip':
      return `IP:${n.value}`;
    case 'url':
      return `URI:${n.value}`;
    case 'email':
      return `email:${n.value}`;
    case 'id':
      return 'registeredID';
    case 'dn':
      return 'directoryName';
    case 'guid':
    case 'upn':
      return 'otherName';
    default:
      return `unexpected ${n.type}`;
  }
}

const SIGNATURE_OIDS: Record<string, string> = {
  'ECDSA/SHA-256': X509Oid.ecdsaWithSha256,
  'ECDSA/SHA-384': X509Oid.ecdsaWithSha384,
  'ECDSA/SHA-512': X509Oid.ecdsaWithSha512,
  'RSASSA-PKCS1-v1_5/SHA-256': '1.2.840.113549.1.1.11',
  'Ed25519/': X509Oid.ed25519,
};

/** Parses `der` with meshid and with @peculiar/x509 and checks they agree on every field. */
async function assertSameAsPeculiar(der: Uint8Array): Promise<ParsedCsr> {
  const ours = parseCsr(der);
  const theirs = new x509.Pkcs10CertificateRequest(der);

  assert.deepEqual(ours.subjectCommonNames, theirs.subjectName.getField('CN'));
  const sanExt = theirs.getExtension('2.5.29.17');
  const names =
    sanExt === null ? [] : new x509.SubjectAlternativeNameExtension(sanExt.rawData).names.items;
  assert.deepEqual(
    ours.dnsNames,
    names.filter((n) => n.type === 'dns').map((n) => n.value),
  );
  assert.deepEqual(
    ours.otherSubjectAltNames,
    names.filter((n) => n.type !== 'dns').map(describePeculiarName),
  );

  assert.deepEqual(Buffer.from(ours.publicKey.spki), Buffer.from(theirs.publicKey.rawData));
  const keyAlg = theirs.publicKey.algorithm as WebCrypto.EcKeyAlgorithm;
  const expectedKey =
    keyAlg.name === 'ECDSA'
      ? { algorithm: 'EC', curve: keyAlg.namedCurve }
      : { algorithm: keyAlg.name === 'Ed25519' ? 'Ed25519' : 'RSA', curve: undefined };
  assert.deepEqual(
    { algorithm: ours.publicKey.algorithm, curve: ours.publicKey.curve },
    expectedKey,
  );

  // The library's declaration leans on DOM types this project does not load; state the shape.
  const sigAlg = theirs.signatureAlgorithm as unknown as {
    name: string;
    hash?: WebCrypto.Algorithm;
  };
  const hashName = sigAlg.hash?.name ?? '';
  assert.equal(ours.signatureAlgorithm, SIGNATURE_OIDS[`${sigAlg.name}/${hashName}`]);
  assert.deepEqual(Buffer.from(ours.signature), Buffer.from(theirs.signature));

  // The signed bytes are the first element of the request.
  const outer = readElement(der, 0);
  assert.deepEqual(
    Buffer.from(ours.certificationRequestInfo),
    Buffer.from(readElement(outer.contents, 0).raw),
  );

  // Same verdict on the signature, except that meshid accepts only ECDSA.
  const peculiarVerdict = await theirs.verify(webCrypto);
  assert.equal(peculiarVerdict, true, 'the fixture request is genuine');
  assert.equal(await verifyCsrSignature(ours), keyAlg.name === 'ECDSA');
  return ours;
}

function assertMalformed(fn: () => unknown, message: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(
      isMeshidError(err, 'ERR_CSR_MALFORMED'),
      `expected ERR_CSR_MALFORMED, got ${String(err)}`,
    );
    assert.match(err.message, message);
    return true;
  });
}

/** The request with its outer length re-encoded by `header`. */
function withOuterHeader(der: Buffer, header: (length: number) => number[]): Buffer {
  const outer = readElement(der, 0);
  return Buffer.concat([Uint8Array.from([0x30, ...header(outer.contents.length)]), outer.contents]);
}

function compressedP256Spki(spki: Uint8Array): Buffer {
  const point = spki.subarray(spki.length - 65);
  const compressed = ECDH.convertKey(
    Buffer.from(point),
    'prime256v1',
    undefined,
    undefined,
    'compressed',
  );
  return tlv(
    DerTag.SEQUENCE,
    tlv(DerTag.SEQUENCE, derOid(X509Oid.ecPublicKey), derOid(X509Oid.p256)),
    tlv(DerTag.BIT_STRING, Uint8Array.of(0), compressed as Buffer),
  );
}

describe('core/csr', () => {
  describe('parsing requests made by @peculiar/x509, compared with what it reads', () => {
    const san: x509.JsonGeneralName[] = [
      { type: 'dns', value: ID },
      { type: 'url', value: 'spiffe://cluster.local/ns/emojivoto/sa/web' },
      { type: 'ip', value: '10.0.0.1' },
      { type: 'ip', value: '2001:db8::1' },
      { type: 'email', value: 'a@example.com' },
      { type: 'id', value: '1.2.3.4' },
      { type: 'dn', value: 'CN=z' },
      { type: 'upn', value: 'u@example.com' },
      { type: 'dns', value: 'second.example' },
    ];
    for (const key of ['P-256', 'P-384', 'RSA', 'Ed25519'] as KeyKind[]) {
      it(`parses a ${key} request with every kind of SAN`, async () => {
        const { der } = await peculiarCsr({ key, name: `CN=${ID}, O=Acme`, san });
        const csr = await assertSameAsPeculiar(der);
        assert.equal(csr.dnsNames.length, 2);
        assert.equal(csr.otherSubjectAltNames.length, 7);
      });
    }

    it('parses a request with two CNs among other subject attributes', async () => {
      const { der } = await peculiarCsr({ name: 'CN=a, O=Acme, CN=b, OU=x' });
      assert.deepEqual((await assertSameAsPeculiar(der)).subjectCommonNames, ['a', 'b']);
    });

    it('parses a request with no subject and no extensions', async () => {
      const { der } = await peculiarCsr({ name: '' });
      const csr = await assertSameAsPeculiar(der);
      assert.deepEqual(
        [csr.subjectCommonNames, csr.dnsNames, csr.otherSubjectAltNames],
        [[], [], []],
      );
    });

    it('accepts a CN longer than 64 characters, as Linkerd proxies send', async () => {
      const long = `a-service-account-with-a-long-name.a-namespace.serviceaccount.identity.linkerd.cluster.local`;
      assert.ok(long.length > 64);
      const { der } = await peculiarCsr({
        name: `CN=${long}`,
        san: [{ type: 'dns', value: long }],
      });
      assert.deepEqual((await assertSameAsPeculiar(der)).subjectCommonNames, [long]);
    });

    it('parses requested extensions other than the SAN without reading them', async () => {
      const { der } = await peculiarCsr({
        san: [{ type: 'dns', value: ID }],
        extraExtensions: [
          new x509.BasicConstraintsExtension(true, 2, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true),
        ],
      });
      assert.deepEqual((await assertSameAsPeculiar(der)).dnsNames, [ID]);
    });
  });

  describe('parsing requests made by openssl req, compared with what @peculiar/x509 reads', () => {
    const opensslSan = `DNS:${ID},URI:spiffe://cluster.local/ns/emojivoto/sa/web,IP:10.0.0.1,IP:2001:db8::1,email:a@example.com,RID:1.2.3.4`;
    for (const key of ['P-256', 'P-384', 'RSA', 'Ed25519'] as KeyKind[]) {
      it(`parses a ${key} request`, async () => {
        const der = opensslCsr({
          key: nodeKeyPair(key).privateKey,
          subject: `/CN=${ID}/O=Acme`,
          san: opensslSan,
        });
        const csr = await assertSameAsPeculiar(der);
        assert.deepEqual(csr.dnsNames, [ID]);
        assert.deepEqual(csr.otherSubjectAltNames, [
          'URI:spiffe://cluster.local/ns/emojivoto/sa/web',
          'IP:10.0.0.1',
          'IP:2001:db8::1',
          'email:a@example.com',
          'registeredID',
        ]);
      });
    }

    it('parses a request with a subject and no extensions', async () => {
      const der = opensslCsr({ key: nodeKeyPair('P-256').privateKey, subject: `/CN=${ID}` });
      const csr = await assertSameAsPeculiar(der);
      assert.deepEqual(csr.subjectCommonNames, [ID]);
      assert.deepEqual(csr.dnsNames, []);
    });
  });

  describe('createCsr', () => {
    it('round-trips through parseCsr with every field', async () => {
      const { privateKey, publicKey } = nodeKeyPair('P-256');
      const der = createCsr({
        privateKey,
        commonName: ID,
        dnsNames: [ID],
        uris: ['spiffe://cluster.local/ns/emojivoto/sa/web'],
        ipAddresses: ['10.0.0.1', '2001:db8::1', '::1', '::ffff:10.1.2.3', 'fe80::1:0:0:2'],
        emails: ['a@example.com'],
      });
      const csr = parseCsr(der);
      assert.deepEqual(csr.subjectCommonNames, [ID]);
      assert.deepEqual(csr.dnsNames, [ID]);
      assert.deepEqual(csr.otherSubjectAltNames, [
        'URI:spiffe://cluster.local/ns/emojivoto/sa/web',
        'IP:10.0.0.1',
        'IP:2001:db8::1',
        'IP:::1',
        'IP:::ffff:10.1.2.3',
        'IP:fe80::1:0:0:2',
        'email:a@example.com',
      ]);
      assert.deepEqual(
        Buffer.from(csr.publicKey.spki),
        publicKey.export({ type: 'spki', format: 'der' }),
      );
      assert.equal(csr.publicKey.curve, 'P-256');
      // The point is the uncompressed 0x04 ‖ x ‖ y.
      const jwk = publicKey.export({ format: 'jwk' });
      assert.deepEqual(
        Buffer.from(csr.publicKey.point),
        Buffer.concat([
          Buffer.of(4),
          Buffer.from(jwk.x!, 'base64url'),
          Buffer.from(jwk.y!, 'base64url'),
        ]),
      );
      assert.equal(csr.signatureAlgorithm, X509Oid.ecdsaWithSha256);
      assert.equal(await verifyCsrSignature(csr), true);
    });

    it('makes requests @peculiar/x509 reads the same way and verifies', async () => {
      const der = createCsr({
        privateKey: nodeKeyPair('P-256').privateKey,
        commonName: ID,
        dnsNames: [ID],
        uris: ['spiffe://x/y'],
        ipAddresses: ['10.0.0.1', '2001:db8::1'],
        emails: ['a@example.com'],
      });
      await assertSameAsPeculiar(der);
    });

    it('makes requests that `openssl req -verify` accepts', async () => {
      const der = createCsr({
        privateKey: nodeKeyPair('P-256').privateKey,
        commonName: ID,
        dnsNames: [ID],
      });
      const text = inTempDir((dir) => {
        const path = join(dir, 'csr.der');
        writeFileSync(path, der);
        return execFileSync(
          'openssl',
          ['req', '-inform', 'DER', '-in', path, '-verify', '-noout', '-text'],
          {
            encoding: 'utf8',
            stdio: ['ignore', 'pipe', 'pipe'],
          },
        );
      });
      assert.match(text, new RegExp(`Subject: CN ?= ?${ID.replace(/\./g, '\\.')}`));
      assert.match(text, new RegExp(`DNS:${ID.replace(/\./g, '\\.')}`));
    });

    it('leaves out the extensionRequest when no SAN is asked for', async () => {
      const der = createCsr({ privateKey: nodeKeyPair('P-256').privateKey });
      const theirs = new x509.Pkcs10CertificateRequest(der);
      assert.equal(theirs.attributes.length, 0);
      assert.equal(theirs.subject, '');
      assert.equal(await theirs.verify(webCrypto), true);
    });

    it('refuses a key that is not an EC private key', async () => {
      assert.throws(
        () => createCsr({ privateKey: nodeKeyPair('Ed25519').privateKey }),
        (err: unknown) => isMeshidError(err, 'ERR_INTERNAL'),
      );
      assert.throws(
        () => createCsr({ privateKey: nodeKeyPair('P-256').publicKey }),
        (err: unknown) => isMeshidError(err, 'ERR_INTERNAL'),
      );
    });

    it('refuses names that are not ASCII and addresses that are not IPs', async () => {
      const { privateKey } = nodeKeyPair('P-256');
      assert.throws(() => createCsr({ privateKey, dnsNames: ['wéb.example'] }), /not ASCII/);
      assert.throws(() => createCsr({ privateKey, ipAddresses: ['10.0.0.256'] }), /not an IP/);
      assert.throws(() => createCsr({ privateKey, ipAddresses: ['fe80::1%eth0'] }), /not an IP/);
    });
  });

  describe('refusing malformed requests with ERR_CSR_MALFORMED and a message naming the problem', () => {
    const good = createCsr({
      privateKey: nodeKeyPair('P-256').privateKey,
      commonName: ID,
      dnsNames: [ID],
    });
    const pem = `-----BEGIN CERTIFICATE REQUEST-----\n${good.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    const withVersion1 = (): Buffer => {
      const outer = readElement(good, 0);
      const cri = readElement(good, outer.raw.length - outer.contents.length);
      const versionAt = cri.offset + cri.raw.length - cri.contents.length;
      const copy = Buffer.from(good);
      assert.deepEqual([...copy.subarray(versionAt, versionAt + 3)], [0x02, 0x01, 0x00]);
      copy[versionAt + 2] = 1;
      return copy;
    };

    const cases: [string, () => Uint8Array, RegExp][] = [
      ['an empty input', () => new Uint8Array(0), /CSR is empty/],
      ['PEM text', () => Buffer.from(pem), /PEM.*must be DER/],
      ['PEM text after blank lines', () => Buffer.from(`\n\r\n ${pem}`), /PEM.*must be DER/],
      ['a request cut short by one byte', () => good.subarray(0, good.length - 1), /truncated/],
      ['a request cut to its first 40 bytes', () => good.subarray(0, 40), /truncated/],
      [
        'trailing bytes after the request',
        () => Buffer.concat([good, Uint8Array.of(0)]),
        /CSR has trailing bytes after the CertificationRequest \(1 byte/,
      ],
      [
        'an indefinite outer length',
        () =>
          Buffer.concat([
            Uint8Array.of(0x30, 0x80),
            readElement(good, 0).contents,
            Uint8Array.of(0, 0),
          ]),
        /indefinite length/,
      ],
      [
        'a non-minimal outer length (a leading 0x00 length byte)',
        () => withOuterHeader(good, (n) => [0x83, 0x00, n >> 8, n & 0xff]),
        /non-minimal length/,
      ],
      [
        'a long-form length for a short request',
        () => withOuterHeader(Buffer.from('3003020100', 'hex'), (n) => [0x81, n]),
        /non-minimal length/,
      ],
      ['a version of 1', withVersion1, /CSR version must be 0 \(v1\), got 1/],
      [
        'a SET where the SEQUENCE should be',
        () => Buffer.from([0x31, ...good.subarray(1)]),
        /does not start with a SEQUENCE/,
      ],
      ['a multi-byte tag', () => Uint8Array.of(0x1f, 0x81, 0x01, 0x00), /multi-byte tag/],
      ['a lone NULL', () => Uint8Array.of(0x05, 0x00), /not a DER PKCS#10 request/],
      [
        'a request without the attributes field',
        () => rawCsr({ attributes: null }),
        /attributes is missing/,
      ],
      [
        'a request whose attributes are not [0]',
        () => rawCsr({ attributes: tlv(DerTag.SET) }),
        /attributes has tag 0x31, expected 0xa0/,
      ],
      [
        'a request whose signature is not a BIT STRING',
        () => {
          const outer = readElement(good, 0);
          const cri = readElement(outer.contents, 0);
          const alg = readElement(outer.contents, cri.end);
          return tlv(DerTag.SEQUENCE, cri.raw, alg.raw, tlv(DerTag.OCTET_STRING, Uint8Array.of(1)));
        },
        /signature has tag 0x04, expected 0x03/,
      ],
      [
        'an ECDSA signature algorithm with NULL parameters',
        () =>
          rawCsr({
            signatureAlgorithm: tlv(
              DerTag.SEQUENCE,
              derOid(X509Oid.ecdsaWithSha256),
              tlv(DerTag.NULL),
            ),
          }),
        /must not have parameters/,
      ],
      [
        'a CN that is not valid UTF-8',
        () =>
          rawCsr({
            subject: subjectName([
              X509Oid.commonName,
              tlv(DerTag.UTF8_STRING, Uint8Array.of(0xc3, 0x28)),
            ]),
          }),
        /commonName is not valid UTF-8/,
      ],
      [
        'a CN that is not a string',
        () =>
          rawCsr({
            subject: subjectName([X509Oid.commonName, tlv(DerTag.INTEGER, Uint8Array.of(1))]),
          }),
        /not a character string/,
      ],
      [
        'an empty RDN in the subject',
        () => rawCsr({ subject: tlv(DerTag.SEQUENCE, tlv(DerTag.SET)) }),
        /empty RDN/,
      ],
      [
        'a SAN extension requested twice',
        () =>
          rawCsr({
            attributes: tlv(
              contextTag(0, true),
              extensionRequest(sanExtension(dnsName(ID)), sanExtension(dnsName(ID))),
            ),
          }),
        /requests extension 2\.5\.29\.17 more than once/,
      ],
      [
        'two extensionRequest attributes',
        () =>
          rawCsr({
            attributes: tlv(
              contextTag(0, true),
              extensionRequest(sanExtension(dnsName(ID))),
              extensionRequest(sanExtension(dnsName(ID))),
            ),
          }),
        /more than one extensionRequest attribute/,
      ],
      [
        'an empty SAN',
        () => rawCsr({ attributes: tlv(contextTag(0, true), extensionRequest(sanExtension())) }),
        /subjectAltName extension is empty/,
      ],
      [
        'a five-byte iPAddress',
        () =>
          rawCsr({
            attributes: tlv(
              contextTag(0, true),
              extensionRequest(sanExtension(tlv(contextTag(7), Uint8Array.of(1, 2, 3, 4, 5)))),
            ),
          }),
        /iPAddress is 5 bytes/,
      ],
      [
        'a constructed dNSName',
        () =>
          rawCsr({
            attributes: tlv(
              contextTag(0, true),
              extensionRequest(sanExtension(tlv(contextTag(2, true), dnsName(ID)))),
            ),
          }),
        /unknown tag 0xa2/,
      ],
      [
        'a dNSName with a non-ASCII byte',
        () =>
          rawCsr({
            attributes: tlv(
              contextTag(0, true),
              extensionRequest(sanExtension(tlv(contextTag(2), Uint8Array.of(0x61, 0xe9)))),
            ),
          }),
        /dNSName has a byte \(0xe9\)/,
      ],
      [
        'a critical flag that is not a DER BOOLEAN',
        () =>
          rawCsr({
            attributes: tlv(
              contextTag(0, true),
              extensionRequest(
                tlv(
                  DerTag.SEQUENCE,
                  derOid(X509Oid.subjectAltName),
                  Uint8Array.of(DerTag.BOOLEAN, 1, 1),
                  tlv(DerTag.OCTET_STRING, tlv(DerTag.SEQUENCE, dnsName(ID))),
                ),
              ),
            ),
          }),
        /critical is not a DER BOOLEAN/,
      ],
      [
        'an extensionRequest with two values',
        () =>
          rawCsr({
            attributes: tlv(
              contextTag(0, true),
              tlv(
                DerTag.SEQUENCE,
                derOid(X509Oid.extensionRequest),
                tlv(DerTag.SET, tlv(DerTag.SEQUENCE), tlv(DerTag.SEQUENCE)),
              ),
            ),
          }),
        /exactly one value, it holds 2/,
      ],
    ];
    for (const [name, make, message] of cases) {
      it(`refuses ${name}`, async () => assertMalformed(() => parseCsr(make()), message));
    }

    it('accepts an explicit critical=FALSE, as Go (Linkerd) does', async () => {
      const csr = parseCsr(
        rawCsr({
          attributes: tlv(
            contextTag(0, true),
            extensionRequest(
              tlv(
                DerTag.SEQUENCE,
                derOid(X509Oid.subjectAltName),
                Uint8Array.of(DerTag.BOOLEAN, 1, 0),
                tlv(DerTag.OCTET_STRING, tlv(DerTag.SEQUENCE, dnsName(ID))),
              ),
            ),
          ),
        }),
      );
      assert.deepEqual(csr.dnsNames, [ID]);
    });

    it('refuses random bytes with ERR_CSR_MALFORMED and nothing else', async () => {
      const random = seededBytes('csr-random');
      for (let i = 0; i < 500; i++) {
        const buf = random(1 + (i % 300));
        assertMalformed(() => parseCsr(buf), /./);
      }
      // and random bytes inside a well-formed outer SEQUENCE
      for (let i = 0; i < 500; i++) {
        const buf = tlv(DerTag.SEQUENCE, random(i % 200));
        assertMalformed(() => parseCsr(buf), /./);
      }
    });

    it('refuses every truncation of a genuine request', async () => {
      for (let n = 0; n < good.length; n++) {
        assertMalformed(() => parseCsr(good.subarray(0, n)), /./);
      }
    });

    it('either parses or refuses with ERR_CSR_MALFORMED when any byte is changed', async () => {
      for (let i = 0; i < good.length; i++) {
        for (const mask of [0x01, 0x80, 0xff]) {
          const copy = Buffer.from(good);
          copy[i] = copy[i]! ^ mask;
          try {
            parseCsr(copy);
          } catch (err) {
            assert.ok(
              isMeshidError(err, 'ERR_CSR_MALFORMED'),
              `byte ${i} ^ ${mask}: ${String(err)}`,
            );
          }
        }
      }
    });
  });

  describe('verifyCsrSignature', () => {
    const { privateKey } = nodeKeyPair('P-256');
    const good = createCsr({ privateKey, commonName: ID, dnsNames: [ID] });
    const csr = parseCsr(good);

    it('is true for a genuine request', async () =>
      assert.equal(await verifyCsrSignature(csr), true));

    it('is true for genuine P-256 and P-384 requests from @peculiar/x509 and openssl', async () => {
      for (const key of ['P-256', 'P-384'] as const) {
        assert.equal(
          await verifyCsrSignature(parseCsr((await peculiarCsr({ key })).der)),
          true,
          key,
        );
        const der = opensslCsr({ key: nodeKeyPair(key).privateKey, subject: '/CN=x' });
        assert.equal(await verifyCsrSignature(parseCsr(der)), true, `openssl ${key}`);
      }
    });

    it('is false when any byte of the signed CertificationRequestInfo is flipped', async () => {
      const criStart = good.indexOf(Buffer.from(csr.certificationRequestInfo));
      let parsed = 0;
      for (let i = criStart; i < criStart + csr.certificationRequestInfo.length; i++) {
        const copy = Buffer.from(good);
        copy[i] = copy[i]! ^ 0x01;
        let tampered: ParsedCsr;
        try {
          tampered = parseCsr(copy);
        } catch (err) {
          assert.ok(isMeshidError(err, 'ERR_CSR_MALFORMED'));
          continue;
        }
        parsed++;
        assert.equal(await verifyCsrSignature(tampered), false, `byte ${i} flipped still verifies`);
      }
      assert.ok(
        parsed > 100,
        `most flips still parse (${parsed}), so the signature is what refuses them`,
      );
    });

    it('is false when any byte of the signature is flipped', async () => {
      for (let i = 0; i < csr.signature.length; i++) {
        const signature = Buffer.from(csr.signature);
        signature[i] = signature[i]! ^ 0x01;
        assert.equal(await verifyCsrSignature({ ...csr, signature }), false, `signature byte ${i}`);
      }
    });

    it("is false when the key is swapped for another's", async () => {
      const other = parseCsr(
        createCsr({ privateKey: nodeKeyPair('P-256').privateKey, dnsNames: [ID] }),
      );
      assert.equal(await verifyCsrSignature({ ...csr, publicKey: other.publicKey }), false);
    });

    it('is false for genuine RSA and Ed25519 requests (ECDSA only)', async () => {
      for (const key of ['RSA', 'Ed25519'] as const) {
        const { der, csr: theirs } = await peculiarCsr({ key });
        assert.equal(await theirs.verify(webCrypto), true);
        assert.equal(await verifyCsrSignature(parseCsr(der)), false, key);
      }
    });

    it('is false for a genuine ecdsa-with-SHA1 signature', async () => {
      const der = rawCsr({
        key: privateKey,
        hash: 'sha1',
        signatureAlgorithm: tlv(DerTag.SEQUENCE, derOid('1.2.840.10045.4.1')),
      });
      const sha1 = parseCsr(der);
      assert.equal(sha1.signatureAlgorithm, '1.2.840.10045.4.1');
      assert.equal(await verifyCsrSignature(sha1), false);
    });

    it('is false, without throwing, for a key that is garbage or off the curve', async () => {
      const garbage = {
        ...csr.publicKey,
        spki: Uint8Array.of(0x30, 0x03, 0x02, 0x01, 0x00),
        point: Uint8Array.of(0x00),
      };
      assert.equal(await verifyCsrSignature({ ...csr, publicKey: garbage }), false);
      const offCurve = Buffer.from(csr.publicKey.spki);
      offCurve[offCurve.length - 1] = offCurve[offCurve.length - 1]! ^ 0x01;
      const offCurvePoint = Buffer.from(csr.publicKey.point);
      offCurvePoint[offCurvePoint.length - 1] = offCurvePoint[offCurvePoint.length - 1]! ^ 0x01;
      assert.equal(
        await verifyCsrSignature({
          ...csr,
          publicKey: { ...csr.publicKey, spki: offCurve, point: offCurvePoint },
        }),
        false,
      );
    });

    it('is true for a genuine request whose key is a compressed point (the DER import path)', async () => {
      const spki = compressedP256Spki(csr.publicKey.spki);
      assert.doesNotThrow(() => createPublicKey({ key: spki, format: 'der', type: 'spki' }));
      const compressed = parseCsr(rawCsr({ key: privateKey, spki }));
      assert.equal(compressed.publicKey.curve, 'P-256');
      assert.equal(await verifyCsrSignature(compressed), true);
    });
  });
});
