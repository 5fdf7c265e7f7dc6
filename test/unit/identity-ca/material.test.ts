import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import { X509Certificate, createHash, createPrivateKey } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { toPem, parseAnchors } from '../../../core/index.js';
import type { GeneratedCa } from '../../../core/pki.js';
import { MAX_INTERMEDIATES, validateIssuer } from '../../../identity-ca/issuer/material.js';
import { DAY, HOUR, NOW, assertRefused, bundle, ca, material, root } from './fixtures/pki.js';

const sha256 = (b: Uint8Array | string): string => createHash('sha256').update(b).digest('hex');
const hex = (ders: readonly Uint8Array[]): string[] =>
  ders.map((d) => Buffer.from(d).toString('hex'));

describe('trust anchors (parseTrustAnchors)', () => {
  let rootA: GeneratedCa;
  let rootB: GeneratedCa;
  before(async () => {
    rootA = await root('root-a.test');
    rootB = await root('root-b.test', { notAfter: NOW + 100 * DAY });
  });

  it('accepts a bundle of two anchors with whitespace around and between them', () => {
    const pem = `\n\n${rootA.certificatePem}\n\n   \n${rootB.certificatePem}\n\n`;
    const anchors = parseAnchors(pem, { now: NOW });
    assert.deepEqual(
      anchors.anchors.map((a) => a.subject),
      ['CN=root-a.test', 'CN=root-b.test'],
    );
    assert.deepEqual(
      hex(anchors.anchors.map((a) => a.der)),
      hex([rootA.certificateDer, rootB.certificateDer]),
    );
    assert.equal(
      anchors.earliestNotAfter,
      Date.parse(new X509Certificate(rootB.certificatePem).validTo),
    );
    assert.equal(anchors.text, pem);
  });

  it('fingerprints the PEM text exactly as read, as linkerd.io/trust-root-sha256 does', () => {
    const pem = bundle(rootA);
    assert.equal(parseAnchors(pem, { now: NOW }).fingerprint, sha256(pem));
    assert.notEqual(parseAnchors(`${pem}\n`, { now: NOW }).fingerprint, sha256(pem));
  });

  it('refuses an empty bundle', async () => {
    await assertRefused(() => parseAnchors(' \n\n', { now: NOW }), 'ERR_ANCHORS_INVALID', /empty/);
  });

  it('refuses garbage that is not PEM', async () => {
    await assertRefused(
      () => parseAnchors(`${rootA.certificatePem}this is not PEM\n`, { now: NOW }),
      'ERR_ANCHORS_INVALID',
      /trust anchor bundle/,
      /outside a PEM block/,
    );
  });

  it('refuses a bundle with a block that is not a CERTIFICATE', async () => {
    await assertRefused(
      () => parseAnchors(rootA.certificatePem + rootA.privateKeyPem, { now: NOW }),
      'ERR_ANCHORS_INVALID',
      /"PRIVATE KEY"/,
    );
  });

  it('refuses a CERTIFICATE block that does not hold a certificate', async () => {
    const junk = toPem(Uint8Array.from([0x30, 0x03, 0x02, 0x01, 0x05]), 'CERTIFICATE');
    await assertRefused(
      () => parseAnchors(junk, { now: NOW }),
      'ERR_ANCHORS_INVALID',
      /trust anchor/,
      /certificate/,
    );
  });

  it('refuses a certificate with bytes after its DER', async () => {
    const padded = toPem(Buffer.concat([rootA.certificateDer, Buffer.from([0])]), 'CERTIFICATE');
    await assertRefused(
      () => parseAnchors(padded, { now: NOW }),
      'ERR_ANCHORS_INVALID',
      /trailing bytes/,
    );
  });

  it('refuses an anchor that is not a CA', async () => {
    const notCa = await root('leafish.test', { isCa: false });
    await assertRefused(
      () => parseAnchors(bundle(rootA, notCa), { now: NOW }),
      'ERR_ANCHORS_INVALID',
      /trust anchor #2 "CN=leafish.test" is not a CA/,
    );
  });

  it('refuses an anchor whose keyUsage lacks keyCertSign', async () => {
    const noSign = await root('nosign.test', { keyUsage: ['digitalSignature', 'cRLSign'] });
    await assertRefused(
      () => parseAnchors(bundle(noSign), { now: NOW }),
      'ERR_ANCHORS_INVALID',
      /keyCertSign/,
    );
  });

  it('keeps an expired anchor next to a valid one', async () => {
    const old = await root('old.test', { notBefore: NOW - 400 * DAY, notAfter: NOW - DAY });
    const anchors = parseAnchors(bundle(old, rootA), { now: NOW });
    assert.deepEqual(
      anchors.anchors.map((a) => a.subject),
      ['CN=old.test', 'CN=root-a.test'],
    );
    assert.equal(anchors.earliestNotAfter, Math.floor((NOW - DAY) / 1000) * 1000);
  });

  it('refuses a bundle in which every anchor has expired', async () => {
    const old = await root('old.test', { notBefore: NOW - 400 * DAY, notAfter: NOW - DAY });
    await assertRefused(
      () => parseAnchors(bundle(old), { now: NOW }),
      'ERR_ANCHORS_INVALID',
      /every trust anchor/,
      /expired/,
    );
  });
});

describe('issuer validation (validateIssuer)', () => {
  let anchor: GeneratedCa;
  let otherRoot: GeneratedCa;
  let issuer: GeneratedCa;
  let inter: GeneratedCa;
  let issuerUnderInter: GeneratedCa;
  const anchorsOf = (...a: GeneratedCa[]) => parseAnchors(bundle(...a), { now: NOW });

  before(async () => {
    anchor = await root();
    // Same name, different key: what a cert-manager "rotationPolicy: Always" renewal produces.
    otherRoot = await root();
    issuer = await ca(anchor);
    inter = await ca(anchor, 'intermediate.test', { notAfter: NOW + 30 * DAY });
    issuerUnderInter = await ca(inter);
  });

  describe('accepts', () => {
    it('an issuer signed directly by an anchor, and describes it', async () => {
      const creds = await validateIssuer(material(issuer), anchorsOf(anchor), NOW);
      const node = new X509Certificate(issuer.certificatePem);
      assert.deepEqual(hex(creds.intermediatesDer), hex([issuer.certificateDer]));
      assert.deepEqual(Buffer.from(creds.certificateDer), node.raw);
      assert.equal(creds.subject, 'CN=identity.linkerd.cluster.local');
      assert.equal(creds.serial, node.serialNumber.toLowerCase());
      assert.equal(creds.fingerprint, sha256(node.raw));
      assert.equal(creds.notBefore, Date.parse(node.validFrom));
      assert.equal(creds.notAfter, Date.parse(node.validTo));
      assert.equal(creds.chainNotAfter, creds.notAfter);
      assert.ok(creds.privateKey.equals(issuer.privateKey));
      assert.equal(creds.anchors.anchors.map((a) => a.subject)[0], 'CN=root.linkerd.cluster.local');
      assert.ok(Object.isFrozen(creds));
    });

    it('an issuer under an intermediate given after it in tls.crt', async () => {
      const creds = await validateIssuer(
        material(issuerUnderInter, [inter]),
        anchorsOf(anchor),
        NOW,
      );
      assert.deepEqual(
        hex(creds.intermediatesDer),
        hex([issuerUnderInter.certificateDer, inter.certificateDer]),
      );
    });

    it('an issuer under an intermediate given in ca.crt', async () => {
      const creds = await validateIssuer(
        material(issuerUnderInter, [], [inter]),
        anchorsOf(anchor),
        NOW,
      );
      assert.deepEqual(
        hex(creds.intermediatesDer),
        hex([issuerUnderInter.certificateDer, inter.certificateDer]),
      );
    });

    it('an issuer whose ca.crt holds certificates that are not anchors', async () => {
      const creds = await validateIssuer(material(issuer, [], [otherRoot]), anchorsOf(anchor), NOW);
      assert.equal(creds.intermediatesDer.length, 1);
    });

    it('a chain that carries the anchor itself, leaving the anchor out of intermediatesDer', async () => {
      const creds = await validateIssuer(
        material(issuerUnderInter, [inter, anchor], [anchor]),
        anchorsOf(anchor),
        NOW,
      );
      assert.deepEqual(
        hex(creds.intermediatesDer),
        hex([issuerUnderInter.certificateDer, inter.certificateDer]),
      );
    });

    it('an issuer that is itself one of the anchors, listing it alone as the chain', async () => {
      const creds = await validateIssuer(material(anchor), anchorsOf(anchor), NOW);
      assert.deepEqual(hex(creds.intermediatesDer), hex([anchor.certificateDer]));
    });

    it('a SEC1 "EC PRIVATE KEY"', async () => {
      const sec1 = issuer.privateKey.export({ type: 'sec1', format: 'pem' }) as string;
      assert.match(sec1, /BEGIN EC PRIVATE KEY/);
      const creds = await validateIssuer(
        { ...material(issuer), tlsKey: sec1 },
        anchorsOf(anchor),
        NOW,
      );
      assert.ok(creds.privateKey.equals(issuer.privateKey));
    });

    it('a PKCS#8 "PRIVATE KEY"', async () => {
      assert.match(issuer.privateKeyPem, /BEGIN PRIVATE KEY/);
      const creds = await validateIssuer(material(issuer), anchorsOf(anchor), NOW);
      assert.equal(creds.privateKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    });

    it('a SEC1 key preceded by the EC PARAMETERS block openssl ecparam writes', async () => {
      const params =
        '-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n';
      const sec1 = issuer.privateKey.export({ type: 'sec1', format: 'pem' }) as string;
      await validateIssuer({ ...material(issuer), tlsKey: params + sec1 }, anchorsOf(anchor), NOW);
    });

    it('a bundle with whitespace and two anchors, chaining to the second', async () => {
      const other = await root('other.test');
      const pem = `\n${other.certificatePem}\n\n\n${anchor.certificatePem}\n  \n`;
      const creds = await validateIssuer(material(issuer), parseAnchors(pem, { now: NOW }), NOW);
      assert.equal(creds.anchors.text, pem);
    });

    it('a rotated root with the same name: the issuer chains to the anchor whose key signed it', async () => {
      const underNew = await ca(otherRoot);
      const creds = await validateIssuer(material(underNew), anchorsOf(anchor, otherRoot), NOW);
      assert.equal(creds.fingerprint, sha256(underNew.certificateDer));
    });

    it('clamps chainNotAfter to the anchor when the anchor expires first', async () => {
      const shortRoot = await root('short.test', { notAfter: NOW + 6 * HOUR });
      const longIssuer = await ca(shortRoot, 'long.test', { notAfter: NOW + 30 * DAY });
      const creds = await validateIssuer(material(longIssuer), anchorsOf(shortRoot), NOW);
      assert.equal(creds.chainNotAfter, NOW + 6 * HOUR);
      assert.equal(creds.notAfter, NOW + 30 * DAY);
    });

    it('takes chainNotBefore as the latest notBefore and chainNotAfter as the earliest notAfter on the path', async () => {
      const i1 = await ca(anchor, 'i1.test', {
        notBefore: NOW - 2 * HOUR,
        notAfter: NOW + 5 * HOUR,
      });
      const leafCa = await ca(i1, 'i2.test', {
        notBefore: NOW - 3 * HOUR,
        notAfter: NOW + 9 * HOUR,
      });
      const creds = await validateIssuer(material(leafCa, [i1]), anchorsOf(anchor), NOW);
      assert.equal(creds.chainNotBefore, NOW - 2 * HOUR);
      assert.equal(creds.chainNotAfter, NOW + 5 * HOUR);
    });

    it('a chain that openssl verify accepts too', async () => {
      const dir = await mkdtemp(join(tmpdir(), 'meshid-material-'));
      try {
        const creds = await validateIssuer(
          material(issuerUnderInter, [inter]),
          anchorsOf(anchor),
          NOW,
        );
        const [issuerDer, ...chain] = creds.intermediatesDer;
        await writeFile(join(dir, 'anchors.pem'), creds.anchors.pem);
        await writeFile(join(dir, 'chain.pem'), chain.map((d) => toPem(d, 'CERTIFICATE')).join(''));
        await writeFile(join(dir, 'issuer.pem'), toPem(issuerDer!, 'CERTIFICATE'));
        const args = [
          'verify',
          '-x509_strict',
          '-attime',
          String(Math.floor(NOW / 1000)),
          '-CAfile',
          join(dir, 'anchors.pem'),
        ];
        const { stdout } = await promisify(execFile)('openssl', [
          ...args,
          '-untrusted',
          join(dir, 'chain.pem'),
          join(dir, 'issuer.pem'),
        ]);
        assert.match(stdout, /issuer\.pem: OK/);
        // The same check must fail without the intermediate, or it proves nothing.
        await assert.rejects(promisify(execFile)('openssl', [...args, join(dir, 'issuer.pem')]));
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  });

  describe('refuses', () => {
    let rsa: GeneratedCa;
    // RSA key generation is slow; one RSA issuer serves both RSA tests.
    before(async () => {
      rsa = await ca(anchor, 'rsa.test', { keyAlgorithm: 'rsa-2048' });
    });

    it('an issuer that is not a CA', async () => {
      const notCa = await ca(anchor, 'not-ca.test', { isCa: false });
      await assertRefused(
        validateIssuer(material(notCa), anchorsOf(anchor), NOW),
        'ERR_ISSUER_INVALID',
        /issuer certificate "CN=not-ca.test" is not a CA \(basicConstraints cA is false\)/,
      );
    });

    it('a private key that does not match the issuer certificate', async () => {
      const mismatched = await ca(anchor, 'mismatch.test', { mismatchedKey: true });
      await assertRefused(
        validateIssuer(material(mismatched), anchorsOf(anchor), NOW),
        'ERR_ISSUER_INVALID',
        /issuer private key does not match the issuer certificate/,
      );
    });

    it("another CA's key next to the issuer certificate", async () => {
      await assertRefused(
        validateIssuer(
          { ...material(issuer), tlsKey: inter.privateKeyPem },
          anchorsOf(anchor),
          NOW,
        ),
        'ERR_ISSUER_INVALID',
        /does not match/,
      );
    });

    it('an RSA issuer key, saying leaves are signed with ECDSA P-256', async () => {
      await assertRefused(
        validateIssuer(material(rsa), anchorsOf(anchor), NOW),
        'ERR_ISSUER_INVALID',
        /issuer private key is RSA/,
        /ECDSA P-256/,
      );
    });

    it('a PKCS#1 "RSA PRIVATE KEY"', async () => {
      const pkcs1 = rsa.privateKey.export({ type: 'pkcs1', format: 'pem' }) as string;
      await assertRefused(
        validateIssuer({ ...material(rsa), tlsKey: pkcs1 }, anchorsOf(anchor), NOW),
        'ERR_ISSUER_INVALID',
        /RSA \(PKCS#1/,
      );
    });

    it('a P-384 issuer key', async () => {
      const p384 = await ca(anchor, 'p384.test', { keyAlgorithm: 'ecdsa-p384' });
      await assertRefused(
        validateIssuer(material(p384), anchorsOf(anchor), NOW),
        'ERR_ISSUER_INVALID',
        /ECDSA P-384/,
        /must be ECDSA P-256/,
      );
    });

    it('an expired issuer, giving its notAfter', async () => {
      const expired = await ca(anchor, 'expired.test', {
        notBefore: NOW - 3 * DAY,
        notAfter: NOW - DAY,
      });
      await assertRefused(
        validateIssuer(material(expired), anchorsOf(anchor), NOW),
        'ERR_ISSUER_INVALID',
        new RegExp(`issuer "CN=expired.test" expired at ${new Date(NOW - DAY).toISOString()}`),
      );
    });

    it('an issuer that is not yet valid, giving its notBefore', async () => {
      const future = await ca(anchor, 'future.test', {
        notBefore: NOW + HOUR,
        notAfter: NOW + DAY,
      });
      await assertRefused(
        validateIssuer(material(future), anchorsOf(anchor), NOW),
        'ERR_ISSUER_INVALID',
        new RegExp(`not yet valid: notBefore ${new Date(NOW + HOUR).toISOString()}`),
      );
    });

    it('an issuer that chains to another root, naming issuer and anchors', async () => {
      const elsewhere = await root('elsewhere.test');
      const foreign = await ca(elsewhere, 'foreign.test');
      await assertRefused(
        validateIssuer(material(foreign), anchorsOf(anchor), NOW),
        'ERR_ISSUER_INVALID',
        /issuer does not chain to any trust anchor/,
        /issuer "CN=foreign.test"/,
        /anchors: "CN=root.linkerd.cluster.local"/,
      );
    });

    it('an issuer signed by a different root of the same name', async () => {
      const underOther = await ca(otherRoot);
      await assertRefused(
        validateIssuer(material(underOther), anchorsOf(anchor), NOW),
        'ERR_ISSUER_INVALID',
        /does not chain to any trust anchor/,
        /is not signed by the key of trust anchor "CN=root.linkerd.cluster.local"/,
      );
    });

    it('a refused chain names the fingerprints of the issuer, of its root (from ca.crt) and of the anchors (same names, told apart)', async () => {
      const underOther = await ca(otherRoot);
      const fp = (c: GeneratedCa): string =>
        createHash('sha256').update(c.certificateDer).digest('hex');
      await assertRefused(
        validateIssuer(material(underOther, [], [otherRoot]), anchorsOf(anchor), NOW),
        'ERR_ISSUER_INVALID',
        new RegExp(
          `; issuer tls\\.crt \\(\\+ ca\\.crt\\): \\S+ sha256 ${fp(underOther)}, issued by root\\.linkerd\\.cluster\\.local sha256 ${fp(otherRoot)}; trust anchors: root\\.linkerd\\.cluster\\.local sha256 ${fp(anchor)}$`,
        ),
      );
    });

    it('an issuer whose only anchor in the bundle has expired', async () => {
      const old = await root('old.test', { notBefore: NOW - 400 * DAY, notAfter: NOW - DAY });
      const underOld = await ca(old, 'under-old.test', { notBefore: NOW - 2 * DAY });
      await assertRefused(
        validateIssuer(material(underOld), anchorsOf(old, anchor), NOW),
        'ERR_ISSUER_INVALID',
        /trust anchor "CN=old.test" expired at/,
      );
    });

    it('an intermediate in the chain that has expired', async () => {
      const expiredInter = await ca(anchor, 'expired-inter.test', {
        notBefore: NOW - 10 * DAY,
        notAfter: NOW - HOUR,
      });
      const under = await ca(expiredInter, 'under.test', { notBefore: NOW - 2 * DAY });
      await assertRefused(
        validateIssuer(material(under, [expiredInter]), anchorsOf(anchor), NOW),
        'ERR_ISSUER_INVALID',
        /does not chain/,
        /chain certificate "CN=expired-inter.test" expired at/,
      );
    });

    it('an issuer whose intermediate is missing', async () => {
      await assertRefused(
        validateIssuer(material(issuerUnderInter), anchorsOf(anchor), NOW),
        'ERR_ISSUER_INVALID',
        /does not chain to any trust anchor/,
        /issued by "CN=intermediate.test"/,
      );
    });

    it('an issuer whose keyUsage lacks keyCertSign', async () => {
      const noSign = await ca(anchor, 'nosign.test', { keyUsage: ['digitalSignature'] });
      await assertRefused(
        validateIssuer(material(noSign), anchorsOf(anchor), NOW),
        'ERR_ISSUER_INVALID',
        /keyUsage without keyCertSign/,
      );
    });

    it('an intermediate in the chain that is not a CA', async () => {
      // The "intermediate" is not a CA, yet its key signed the issuer.
      const fake = await ca(anchor, 'fake-inter.test', { isCa: false });
      const under = await ca(fake, 'under-fake.test');
      await assertRefused(
        validateIssuer(material(under, [fake]), anchorsOf(anchor), NOW),
        'ERR_ISSUER_INVALID',
        /chain certificate "CN=fake-inter.test" is not a CA/,
      );
    });

    it("a chain that breaks an anchor's pathLenConstraint", async () => {
      const strict = await root('strict.test', { pathLength: 0 });
      const under = await ca(strict, 'under-strict.test');
      await assertRefused(
        validateIssuer(material(under), anchorsOf(strict), NOW),
        'ERR_ISSUER_INVALID',
        /pathLenConstraint/,
      );
    });

    it(`a chain with more than ${MAX_INTERMEDIATES} intermediates`, async () => {
      const chain: GeneratedCa[] = [];
      let parent = anchor;
      for (let i = 0; i <= MAX_INTERMEDIATES; i++) {
        parent = await ca(parent, `level-${i}.test`);
        chain.unshift(parent);
      }
      const deep = await ca(parent, 'deep.test');
      await assertRefused(
        validateIssuer(material(deep, chain), anchorsOf(anchor), NOW),
        'ERR_ISSUER_INVALID',
        new RegExp(`within ${MAX_INTERMEDIATES} intermediate`),
      );
      // One level less is accepted, so it is the depth that was refused.
      const ok = await validateIssuer(material(chain[0]!, chain.slice(1)), anchorsOf(anchor), NOW);
      assert.equal(ok.intermediatesDer.length, MAX_INTERMEDIATES + 1);
    });

    it('an issuer whose extendedKeyUsage excludes clientAuth', async () => {
      const serverOnly = await ca(anchor, 'server-only.test', { extendedKeyUsage: ['serverAuth'] });
      await assertRefused(
        validateIssuer(material(serverOnly), anchorsOf(anchor), NOW),
        'ERR_ISSUER_INVALID',
        /extendedKeyUsage/,
      );
      const both = await ca(anchor, 'both.test', {
        extendedKeyUsage: ['serverAuth', 'clientAuth'],
      });
      await validateIssuer(material(both), anchorsOf(anchor), NOW);
    });

    it('garbage in tls.crt', async () => {
      await assertRefused(
        validateIssuer(
          { ...material(issuer), tlsCrt: 'not a certificate' },
          anchorsOf(anchor),
          NOW,
        ),
        'ERR_ISSUER_INVALID',
        /issuer tls\.crt/,
        /outside a PEM block/,
      );
    });

    it('an empty tls.crt', async () => {
      await assertRefused(
        validateIssuer({ ...material(issuer), tlsCrt: '\n' }, anchorsOf(anchor), NOW),
        'ERR_ISSUER_INVALID',
        /holds no certificate/,
      );
    });

    it('garbage in tls.key', async () => {
      await assertRefused(
        validateIssuer(
          {
            ...material(issuer),
            tlsKey: '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n',
          },
          anchorsOf(anchor),
          NOW,
        ),
        'ERR_ISSUER_INVALID',
        /cannot be parsed/,
      );
    });

    it('a certificate where the key should be', async () => {
      await assertRefused(
        validateIssuer(
          { ...material(issuer), tlsKey: issuer.certificatePem },
          anchorsOf(anchor),
          NOW,
        ),
        'ERR_ISSUER_INVALID',
        /"CERTIFICATE" block, not a private key/,
      );
    });

    it('an encrypted private key', async () => {
      const encrypted = issuer.privateKey.export({
        type: 'pkcs8',
        format: 'pem',
        cipher: 'aes-256-cbc',
        passphrase: 'x',
      }) as string;
      assert.ok(createPrivateKey({ key: encrypted, passphrase: 'x' }).equals(issuer.privateKey));
      await assertRefused(
        validateIssuer({ ...material(issuer), tlsKey: encrypted }, anchorsOf(anchor), NOW),
        'ERR_ISSUER_INVALID',
        /encrypted/,
      );
    });

    it('a ca.crt that is not PEM', async () => {
      await assertRefused(
        validateIssuer({ ...material(issuer), caCrt: 'junk' }, anchorsOf(anchor), NOW),
        'ERR_ISSUER_INVALID',
        /issuer ca\.crt/,
      );
    });
  });
});
