import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { ECDH, createPublicKey } from 'node:crypto';
import {
  DerTag,
  X509Oid,
  contextTag,
  createCsr,
  derOid,
  isMeshidError,
  parseCsr,
  tlv,
  type ParsedCsr,
} from '../../../core/index.js';
import { checkCsrPolicy } from '../../../identity-ca/issuer/csr-policy.js';
import {
  dnsName,
  extensionRequest,
  nodeKeyPair,
  opensslCsr,
  peculiarCsr,
  rawCsr,
  sanExtension,
  type KeyKind,
} from '../core/fixtures/csr-makers.js';
import type { CreateCsrOptions } from '../../../core/csr.js';

const ID = 'web.emojivoto.serviceaccount.identity.linkerd.cluster.local';
const LONG_ID =
  'a-service-account-with-a-long-name.a-namespace.serviceaccount.identity.linkerd.cluster.local';

/** A request as a Linkerd proxy sends it (P-256, CN = identity, one DNS SAN), with changes. */
function request(changes: Partial<CreateCsrOptions> = {}): ParsedCsr {
  return parseCsr(
    createCsr({
      privateKey: nodeKeyPair('P-256').privateKey,
      commonName: ID,
      dnsNames: [ID],
      ...changes,
    }),
  );
}

async function assertRefused(csr: ParsedCsr, identity: string, message: RegExp): Promise<void> {
  await assert.rejects(
    () => checkCsrPolicy(csr, identity),
    (err: unknown) => {
      assert.ok(
        isMeshidError(err, 'ERR_CSR_POLICY'),
        `expected ERR_CSR_POLICY, got ${String(err)}`,
      );
      assert.match(err.message, message);
      return true;
    },
  );
}

function withBadSignature(csr: ParsedCsr): ParsedCsr {
  const signature = Buffer.from(csr.signature);
  signature[signature.length - 1] = signature[signature.length - 1]! ^ 0x01;
  return { ...csr, signature };
}

describe('identity-ca/issuer/csr-policy', () => {
  describe('accepting', () => {
    it('accepts a request as a Linkerd proxy sends it', async () => {
      await checkCsrPolicy(request(), ID);
    });

    it('accepts a request with no subject', async () => {
      const csr = parseCsr(
        createCsr({ privateKey: nodeKeyPair('P-256').privateKey, dnsNames: [ID] }),
      );
      assert.deepEqual(csr.subjectCommonNames, []);
      await checkCsrPolicy(csr, ID);
    });

    it('accepts an empty CN', async () => {
      await checkCsrPolicy(request({ commonName: '' }), ID);
    });

    it('accepts a CN longer than 64 characters equal to the identity', async () => {
      assert.ok(LONG_ID.length > 64);
      await checkCsrPolicy(request({ commonName: LONG_ID, dnsNames: [LONG_ID] }), LONG_ID);
    });

    it('ignores subject attributes other than CN (the CA builds the subject)', async () => {
      const { der } = await peculiarCsr({
        name: `CN=${ID}, O=Evil Corp, OU=admins`,
        san: [{ type: 'dns', value: ID }],
      });
      await checkCsrPolicy(parseCsr(der), ID);
    });

    it('ignores requested extensions other than SAN (the CA builds the extensions)', async () => {
      const csr = parseCsr(
        rawCsr({
          attributes: tlv(
            contextTag(0, true),
            extensionRequest(
              sanExtension(dnsName(ID)),
              // basicConstraints cA=TRUE: asking to be a CA is ignored, never copied.
              tlv(
                DerTag.SEQUENCE,
                derOid('2.5.29.19'),
                tlv(
                  DerTag.OCTET_STRING,
                  tlv(DerTag.SEQUENCE, Uint8Array.of(DerTag.BOOLEAN, 1, 0xff)),
                ),
              ),
            ),
          ),
        }),
      );
      await checkCsrPolicy(csr, ID);
    });

    it('accepts a request made by openssl req', async () => {
      const der = opensslCsr({
        key: nodeKeyPair('P-256').privateKey,
        subject: `/CN=${ID}`,
        san: `DNS:${ID}`,
      });
      await checkCsrPolicy(parseCsr(der), ID);
    });
  });

  describe('the key must be ECDSA P-256', () => {
    const cases: [KeyKind, RegExp][] = [
      ['P-384', /must be ECDSA P-256, got EC P-384/],
      ['RSA', /must be ECDSA P-256, got RSA/],
      ['Ed25519', /must be ECDSA P-256, got Ed25519/],
    ];
    for (const [key, message] of cases) {
      it(`refuses a ${key} key`, async () => {
        const { der } = await peculiarCsr({
          key,
          name: `CN=${ID}`,
          san: [{ type: 'dns', value: ID }],
        });
        await assertRefused(parseCsr(der), ID, message);
      });
    }

    it('refuses a P-384 key from openssl too', async () => {
      const der = opensslCsr({
        key: nodeKeyPair('P-384').privateKey,
        subject: `/CN=${ID}`,
        san: `DNS:${ID}`,
      });
      await assertRefused(parseCsr(der), ID, /got EC P-384/);
    });

    it('refuses an EC key on a curve named by an unknown OID, naming the OID', async () => {
      const csr = request();
      await assertRefused(
        { ...csr, publicKey: { ...csr.publicKey, curve: '1.3.132.0.10' } },
        ID,
        /got EC 1\.3\.132\.0\.10/,
      );
    });

    it('refuses a key of an unknown algorithm, naming its OID', async () => {
      const spki = tlv(
        DerTag.SEQUENCE,
        tlv(DerTag.SEQUENCE, derOid('1.3.101.113')),
        tlv(DerTag.BIT_STRING, Uint8Array.of(0), new Uint8Array(57)),
      );
      const csr = request();
      await assertRefused(
        { ...csr, publicKey: { spki, point: new Uint8Array(57), algorithm: 'other' } },
        ID,
        /got a key of algorithm 1\.3\.101\.113/,
      );
    });

    it('refuses a compressed P-256 point', async () => {
      const { privateKey, publicKey } = nodeKeyPair('P-256');
      const point = publicKey.export({ type: 'spki', format: 'der' }).subarray(-65);
      const compressed = ECDH.convertKey(
        point,
        'prime256v1',
        undefined,
        undefined,
        'compressed',
      ) as Buffer;
      const spki = tlv(
        DerTag.SEQUENCE,
        tlv(DerTag.SEQUENCE, derOid(X509Oid.ecPublicKey), derOid(X509Oid.p256)),
        tlv(DerTag.BIT_STRING, Uint8Array.of(0), compressed),
      );
      assert.doesNotThrow(() => createPublicKey({ key: spki, format: 'der', type: 'spki' }));
      const csr = parseCsr(
        rawCsr({
          key: privateKey,
          spki,
          attributes: tlv(contextTag(0, true), extensionRequest(sanExtension(dnsName(ID)))),
        }),
      );
      await assertRefused(csr, ID, /uncompressed P-256 point \(65 bytes\), got 33 bytes/);
    });
  });

  describe('names', () => {
    it('refuses a request with no DNS SAN, saying how many it has', async () => {
      await assertRefused(request({ dnsNames: [] }), ID, /exactly one DNS SAN, it has 0/);
    });

    it('refuses a request with two DNS SANs, saying how many it has', async () => {
      await assertRefused(request({ dnsNames: [ID, ID] }), ID, /exactly one DNS SAN, it has 2/);
    });

    it('refuses a DNS SAN that is not the requested identity, quoting both', async () => {
      const other = 'admin.kube-system.serviceaccount.identity.linkerd.cluster.local';
      await assertRefused(
        request({ commonName: other, dnsNames: [other] }),
        ID,
        new RegExp(`DNS SAN "${other}" does not match the requested identity "${ID}"`),
      );
    });

    it('escapes control characters from the request in the message', async () => {
      await assertRefused(
        request({ dnsNames: [`evil\u0007\nname`] }),
        ID,
        /"evil\\u0007\\u000aname"/,
      );
    });

    it('refuses a DNS SAN that differs only in letter case', async () => {
      await assertRefused(request({ dnsNames: [ID.toUpperCase()] }), ID, /does not match/);
    });

    const others: [string, Partial<CreateCsrOptions>, RegExp][] = [
      [
        'a SPIFFE URI SAN',
        { uris: ['spiffe://cluster.local/ns/emojivoto/sa/web'] },
        /no SANs other than the DNS name, it has URI:spiffe:\/\/cluster\.local\/ns\/emojivoto\/sa\/web/,
      ],
      ['an IP SAN', { ipAddresses: ['10.0.0.1'] }, /it has IP:10\.0\.0\.1/],
      ['an email SAN', { emails: ['a@example.com'] }, /it has email:a@example\.com/],
      [
        'several other SANs, naming all of them',
        { uris: ['spiffe://x/y'], ipAddresses: ['::1'] },
        /it has URI:spiffe:\/\/x\/y, IP:::1/,
      ],
    ];
    for (const [name, changes, message] of others) {
      it(`refuses ${name}`, async () => assertRefused(request(changes), ID, message));
    }

    it('refuses otherName, directoryName and registeredID SANs', async () => {
      const { der } = await peculiarCsr({
        name: `CN=${ID}`,
        san: [
          { type: 'dns', value: ID },
          { type: 'upn', value: 'u@example.com' },
          { type: 'dn', value: 'CN=z' },
          { type: 'id', value: '1.2.3.4' },
        ],
      });
      await assertRefused(parseCsr(der), ID, /it has otherName, directoryName, registeredID/);
    });

    it('refuses a CN that is neither empty nor the identity, quoting both', async () => {
      await assertRefused(
        request({ commonName: 'someone-else' }),
        ID,
        new RegExp(`CN "someone-else" must be empty or equal to the requested identity "${ID}"`),
      );
    });

    it('refuses two CNs, even if both equal the identity', async () => {
      const { der } = await peculiarCsr({
        name: `CN=${ID}, CN=${ID}`,
        san: [{ type: 'dns', value: ID }],
      });
      await assertRefused(parseCsr(der), ID, /at most one CN, it has 2/);
    });
  });

  describe('proof of possession', () => {
    it('refuses a request whose signature does not verify', async () => {
      await assertRefused(
        withBadSignature(request()),
        ID,
        /^CSR signature does not verify: no proof of possession of the private key$/,
      );
    });

    it("refuses a request carrying someone else's key", async () => {
      const stolen = request();
      const mine = request();
      await assertRefused({ ...mine, publicKey: stolen.publicKey }, ID, /proof of possession/);
    });
  });

  describe('order of checks', () => {
    it('reports the key before a bad signature', async () => {
      const { der } = await peculiarCsr({
        key: 'P-384',
        name: `CN=${ID}`,
        san: [{ type: 'dns', value: ID }],
      });
      await assertRefused(withBadSignature(parseCsr(der)), ID, /P-256/);
    });

    it('reports a name problem before a bad signature (signature last)', async () => {
      await assertRefused(
        withBadSignature(request({ dnsNames: ['x.example'] })),
        ID,
        /does not match/,
      );
      await assertRefused(withBadSignature(request({ uris: ['spiffe://x/y'] })), ID, /URI:/);
      await assertRefused(withBadSignature(request({ commonName: 'x' })), ID, /CN/);
    });
  });
});
