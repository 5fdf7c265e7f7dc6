/**
 * `meshid ca` as a real process on 127.0.0.1 (two worker processes), called over gRPC/TLS by a
 * grpc-js client and by a client that behaves like Linkerd's proxy; the chain checked with the
 * openssl CLI, the profile field by field with @peculiar/x509, every refusal by its status.
 */
import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { generateKeyPairSync, webcrypto } from 'node:crypto';
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import {
  CertifyClient,
  DerReader,
  DerTag,
  contextTag,
  createCsr,
  decodeDer,
  toPem,
} from '../../core/index.js';
import type { CertifyResponse } from '../../core/index.js';
import type { CertifyCallError } from '../../core/certify-client.js';
import { adminGet, metricValue, startCaProcess } from '../support/ca-process.js';
import type { CaProcess } from '../support/ca-process.js';
import { linkerdLikeCertify } from '../support/linkerd-like-client.js';
import { CA_IDENTITY, idOf, makeTestState } from '../support/state.js';
import type { TestState } from '../support/state.js';

const Status = {
  OK: 0,
  INVALID_ARGUMENT: 3,
  FAILED_PRECONDITION: 9,
  RESOURCE_EXHAUSTED: 8,
} as const;
const WEB = idOf('emojivoto', 'web');

function p256Csr(
  identity: string,
  extra: Parameters<typeof createCsr>[0] extends infer O ? Partial<O> : never = {},
): Buffer {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return createCsr({ privateKey, commonName: identity, dnsNames: [identity], ...extra });
}

function opensslCsr(keyArgs: string[], san: string): Buffer {
  return execFileSync(
    'openssl',
    [
      'req',
      '-new',
      ...keyArgs,
      '-nodes',
      '-keyout',
      '/dev/null',
      '-subj',
      '/',
      '-addext',
      `subjectAltName=${san}`,
      '-outform',
      'DER',
    ],
    {
      stdio: ['ignore', 'pipe', 'ignore'],
    },
  );
}

describe('meshid ca (real process, gRPC over TLS)', function () {
  this.timeout(60_000);
  let state: TestState;
  let ca: CaProcess;
  let client: CertifyClient;
  let anchorsPem: string;
  const tmp = mkdtempSync(join(tmpdir(), 'meshid-it-'));

  before(async () => {
    state = await makeTestState();
    anchorsPem = readFileSync(state.anchorsFile, 'utf8');
    ca = await startCaProcess([
      ...state.caArgs,
      '--workers',
      '2',
      '--cert-lifetime',
      '24h',
      '--clock-skew',
      '20s',
    ]);
    client = new CertifyClient({ address: ca.address, serverName: CA_IDENTITY, anchorsPem });
  });
  after(async () => {
    client?.close();
    if (ca !== undefined) assert.equal(await ca.stop(), 0, 'the CA exits cleanly on SIGTERM');
    await state?.cleanup();
  });

  async function refusal(req: {
    identity?: string;
    token?: Uint8Array;
    csr?: Uint8Array;
  }): Promise<CertifyCallError> {
    const token = req.token ?? Buffer.from(await state.token('emojivoto', 'web'));
    try {
      await client.certify({
        identity: req.identity ?? WEB,
        token,
        certificateSigningRequest: req.csr ?? p256Csr(WEB),
      });
    } catch (err) {
      return err as CertifyCallError;
    }
    assert.fail('expected Certify to be refused');
  }

  function assertRefused(err: CertifyCallError, code: number, words: RegExp): void {
    assert.equal(err.code, code, `status ${err.code} (${err.details})`);
    assert.match(err.details, words);
  }

  it('logs one listening line with the bound addresses and worker count', () => {
    const listening = ca.lines.filter((l) => l.includes('"msg":"listening"'));
    assert.equal(listening.length, 1);
    const rec = JSON.parse(listening[0]!) as {
      address: string;
      admin: string;
      workers: number;
      identity: string;
    };
    assert.equal(rec.address, `127.0.0.1:${ca.address.port}`);
    assert.notEqual(ca.address.port, 0);
    assert.equal(rec.workers, 2);
    assert.equal(rec.identity, CA_IDENTITY);
  });

  describe('issuance', () => {
    let res: CertifyResponse;
    let leaf: x509.X509Certificate;
    let requestedAt: number;
    let csrSpki: ArrayBuffer;

    before(async () => {
      requestedAt = Date.now();
      // The CSR is made by an independent implementation, @peculiar/x509.
      const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
      const keys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
      const csr = await x509.Pkcs10CertificateRequestGenerator.create(
        {
          name: `CN=${WEB}`,
          keys,
          signingAlgorithm: alg,
          extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: WEB }])],
        },
        webcrypto,
      );
      csrSpki = csr.publicKey.rawData;
      res = await client.certify({
        identity: WEB,
        token: Buffer.from(await state.token('emojivoto', 'web')),
        certificateSigningRequest: Buffer.from(csr.rawData),
      });
      leaf = new x509.X509Certificate(res.leafCertificate);
    });

    it('returns a chain that the openssl CLI verifies against the anchors for TLS client and server use', () => {
      const leafFile = join(tmp, 'leaf.pem');
      const chainFile = join(tmp, 'chain.pem');
      writeFileSync(leafFile, toPem(res.leafCertificate, 'CERTIFICATE'));
      writeFileSync(
        chainFile,
        res.intermediateCertificates.map((d) => toPem(d, 'CERTIFICATE')).join(''),
      );
      for (const purpose of ['sslclient', 'sslserver']) {
        const out = execFileSync('openssl', [
          'verify',
          '-purpose',
          purpose,
          '-CAfile',
          state.anchorsFile,
          '-untrusted',
          chainFile,
          leafFile,
        ]).toString();
        assert.match(out, /: OK/);
      }
    });

    it('returns the issuer chain without the anchor', () => {
      assert.equal(res.intermediateCertificates.length, 1);
      assert.deepEqual(
        Buffer.from(res.intermediateCertificates[0]!),
        Buffer.from(state.issuer.certificateDer),
      );
    });

    it('puts the DNS identity first and the SPIFFE ID after it, in a critical SAN', () => {
      const san = leaf.getExtension(x509.SubjectAlternativeNameExtension)!;
      assert.deepEqual(
        san.names.items.map((n) => [n.type, n.value]),
        [
          ['dns', WEB],
          ['url', 'spiffe://cluster.local/ns/emojivoto/sa/web'],
        ],
      );
      assert.equal(san.critical, true);
      assert.equal(leaf.subject, '');
    });

    it('is an ECDSA P-256 / SHA-256 end-entity certificate for client and server auth', () => {
      assert.deepEqual(leaf.signatureAlgorithm, { name: 'ECDSA', hash: { name: 'SHA-256' } });
      assert.equal((leaf.publicKey.algorithm as { namedCurve?: string }).namedCurve, 'P-256');
      const bc = leaf.getExtension(x509.BasicConstraintsExtension)!;
      assert.equal(bc.ca, false);
      assert.equal(bc.critical, true);
      const ku = leaf.getExtension(x509.KeyUsagesExtension)!;
      assert.equal(ku.usages, x509.KeyUsageFlags.digitalSignature);
      const eku = leaf.getExtension(x509.ExtendedKeyUsageExtension)!;
      assert.deepEqual(
        [...eku.usages].sort(),
        [x509.ExtendedKeyUsage.clientAuth, x509.ExtendedKeyUsage.serverAuth].sort(),
      );
    });

    it('links AKI to the issuer SKI and has its own SKI', () => {
      const issuer = new x509.X509Certificate(state.issuer.certificateDer);
      const aki = leaf.getExtension(x509.AuthorityKeyIdentifierExtension)!;
      const issuerSki = issuer.getExtension(x509.SubjectKeyIdentifierExtension)!;
      assert.equal(aki.keyId, issuerSki.keyId);
      assert.ok(leaf.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId.length > 0);
      assert.equal(leaf.issuer, issuer.subject);
    });

    it('is back-dated by the skew allowance, lives 24h, and valid_until equals NotAfter', () => {
      const nb = leaf.notBefore.getTime();
      const na = leaf.notAfter.getTime();
      assert.ok(
        Math.abs(nb - (requestedAt - 20_000)) < 5_000,
        `notBefore ${leaf.notBefore.toISOString()}`,
      );
      assert.equal(na - nb, 24 * 3_600_000 + 20_000);
      assert.equal(res.validUntil, na);
    });

    it('uses a random positive serial of up to 128 bits, different every time', async () => {
      const other = await client.certify({
        identity: WEB,
        token: Buffer.from(await state.token('emojivoto', 'web')),
        certificateSigningRequest: p256Csr(WEB),
      });
      // The serial INTEGER as encoded: positive (top bit of the first byte clear), minimal (a
      // leading 00 only before a byte with its top bit set), at most 16 random bytes.
      const serialOf = (der: Uint8Array): Buffer => {
        const tbs = new DerReader(decodeDer(der, DerTag.SEQUENCE).contents).next(DerTag.SEQUENCE);
        const r = new DerReader(tbs.contents);
        r.next(contextTag(0, true));
        return Buffer.from(r.next(DerTag.INTEGER).contents);
      };
      const a = serialOf(res.leafCertificate);
      const b = serialOf(other.leafCertificate);
      assert.notDeepEqual(a, b);
      for (const s of [a, b]) {
        assert.ok(s[0]! < 0x80, `positive: ${s.toString('hex')}`);
        assert.ok(s[0] !== 0 || s[1]! >= 0x80, `minimal: ${s.toString('hex')}`);
        const magnitude = s[0] === 0 ? s.subarray(1) : s;
        assert.ok(magnitude.length <= 16 && magnitude.length >= 8, s.toString('hex'));
      }
    });

    it('certifies exactly the public key of the CSR', () => {
      assert.deepEqual(Buffer.from(leaf.publicKey.rawData), Buffer.from(csrSpki));
    });
  });

  it('serves a client that offers no ALPN and speaks HTTP/2 by prior knowledge, as Linkerd proxies do', async () => {
    const r = await linkerdLikeCertify(ca.address, {
      serverName: CA_IDENTITY,
      anchorsPem,
      request: {
        identity: WEB,
        token: Buffer.from(await state.token('emojivoto', 'web')),
        certificateSigningRequest: p256Csr(WEB),
      },
    });
    assert.equal(r.alpnProtocol, false, 'no ALPN was negotiated');
    assert.equal(r.tlsVersion, 'TLSv1.3');
    assert.equal(r.grpcStatus, 0, r.grpcMessage);
    assert.ok(r.response !== undefined && r.response.leafCertificate.length > 200);
  });

  it('answers a Linkerd-like client with the same precise refusals', async () => {
    const r = await linkerdLikeCertify(ca.address, {
      serverName: CA_IDENTITY,
      anchorsPem,
      request: {
        identity: WEB,
        token: Buffer.from(await state.token('emojivoto', 'voting')),
        certificateSigningRequest: p256Csr(WEB),
      },
    });
    assert.equal(r.grpcStatus, Status.FAILED_PRECONDITION);
    assert.match(r.grpcMessage, /token is for service account emojivoto\/voting/);
  });

  it("presents a TLS 1.3 certificate for the CA's identity that openssl verifies against the anchors", () => {
    const r = spawnSync(
      'openssl',
      [
        's_client',
        '-connect',
        `127.0.0.1:${ca.address.port}`,
        '-servername',
        CA_IDENTITY,
        '-CAfile',
        state.anchorsFile,
        '-verify_return_error',
        '-verify_hostname',
        CA_IDENTITY,
        '-brief',
      ],
      { input: '', encoding: 'utf8', timeout: 10_000 },
    );
    // -brief writes its session summary to stderr.
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /Protocol version: TLSv1\.3/);
    assert.match(r.stderr, /Verification: OK/);
    assert.match(r.stderr, /Verified peername: linkerd-identity\.linkerd\.serviceaccount/);
  });

  it('refuses TLS 1.2', () => {
    const r = spawnSync(
      'openssl',
      ['s_client', '-connect', `127.0.0.1:${ca.address.port}`, '-tls1_2', '-brief'],
      { input: '', encoding: 'utf8', timeout: 10_000 },
    );
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /protocol version|alert/i);
  });

  describe('refusals (exact status and the words of the message; nothing issued)', () => {
    let issuedBefore: number;
    before(async () => {
      issuedBefore = metricValue(
        (await adminGet(ca.admin, '/metrics')).body,
        'meshid_certify_requests_total',
        { outcome: 'issued' },
      );
    });
    after(async () => {
      const issuedAfter = metricValue(
        (await adminGet(ca.admin, '/metrics')).body,
        'meshid_certify_requests_total',
        { outcome: 'issued' },
      );
      assert.equal(issuedAfter, issuedBefore, 'no refusal issued a certificate');
    });

    it('empty identity → INVALID_ARGUMENT', async () => {
      assertRefused(await refusal({ identity: '' }), Status.INVALID_ARGUMENT, /identity is empty/);
    });
    it('empty token → INVALID_ARGUMENT', async () => {
      assertRefused(
        await refusal({ token: Buffer.alloc(0) }),
        Status.INVALID_ARGUMENT,
        /token is empty/,
      );
    });
    it('empty CSR → INVALID_ARGUMENT', async () => {
      assertRefused(
        await refusal({ csr: Buffer.alloc(0) }),
        Status.INVALID_ARGUMENT,
        /certificate_signing_request is empty/,
      );
    });
    it('identity outside the trust domain → INVALID_ARGUMENT', async () => {
      assertRefused(
        await refusal({ identity: 'web.emojivoto.serviceaccount.identity.linkerd.evil.example' }),
        Status.INVALID_ARGUMENT,
        /not of the form/,
      );
    });
    it('CSR in PEM → INVALID_ARGUMENT saying it must be DER', async () => {
      const pem = Buffer.from(toPem(p256Csr(WEB), 'CERTIFICATE REQUEST'));
      assertRefused(await refusal({ csr: pem }), Status.INVALID_ARGUMENT, /DER/);
    });
    it('CSR that is not PKCS#10 → INVALID_ARGUMENT', async () => {
      assertRefused(
        await refusal({ csr: Buffer.from('not a csr at all') }),
        Status.INVALID_ARGUMENT,
        /CSR/,
      );
    });
    it('CSR with an RSA key → FAILED_PRECONDITION', async () => {
      const csr = opensslCsr(['-newkey', 'rsa:2048'], `DNS:${WEB}`);
      assertRefused(await refusal({ csr }), Status.FAILED_PRECONDITION, /P-256/);
    });
    it('CSR with a P-384 key → FAILED_PRECONDITION', async () => {
      const csr = opensslCsr(
        ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-384'],
        `DNS:${WEB}`,
      );
      assertRefused(await refusal({ csr }), Status.FAILED_PRECONDITION, /P-256/);
    });
    it('CSR with two DNS SANs → FAILED_PRECONDITION', async () => {
      assertRefused(
        await refusal({ csr: p256Csr(WEB, { dnsNames: [WEB, idOf('emojivoto', 'voting')] }) }),
        Status.FAILED_PRECONDITION,
        /exactly one DNS/,
      );
    });
    it('CSR whose DNS SAN is another identity → FAILED_PRECONDITION', async () => {
      const other = idOf('emojivoto', 'voting');
      assertRefused(
        await refusal({ csr: p256Csr(WEB, { commonName: WEB, dnsNames: [other] }) }),
        Status.FAILED_PRECONDITION,
        /voting/,
      );
    });
    it('CSR with a URI SAN → FAILED_PRECONDITION', async () => {
      assertRefused(
        await refusal({
          csr: p256Csr(WEB, { uris: ['spiffe://cluster.local/ns/kube-system/sa/admin'] }),
        }),
        Status.FAILED_PRECONDITION,
        /URI/,
      );
    });
    it('CSR with an IP SAN → FAILED_PRECONDITION', async () => {
      assertRefused(
        await refusal({ csr: p256Csr(WEB, { ipAddresses: ['10.0.0.1'] }) }),
        Status.FAILED_PRECONDITION,
        /IP/,
      );
    });
    it('CSR whose CN differs from the identity → FAILED_PRECONDITION', async () => {
      assertRefused(
        await refusal({ csr: p256Csr(WEB, { commonName: 'admin' }) }),
        Status.FAILED_PRECONDITION,
        /CN/,
      );
    });
    it('CSR whose signature does not verify (no proof of possession) → FAILED_PRECONDITION', async () => {
      const csr = p256Csr(WEB);
      csr[csr.length - 5]! ^= 0x01;
      assertRefused(await refusal({ csr }), Status.FAILED_PRECONDITION, /signature/);
    });
    it('token for another service account → FAILED_PRECONDITION', async () => {
      assertRefused(
        await refusal({ token: Buffer.from(await state.token('emojivoto', 'voting')) }),
        Status.FAILED_PRECONDITION,
        /token is for service account emojivoto\/voting/,
      );
    });
    it('token with the wrong audience → FAILED_PRECONDITION', async () => {
      assertRefused(
        await refusal({
          token: Buffer.from(
            await state.token('emojivoto', 'web', { audience: 'https://kubernetes.default.svc' }),
          ),
        }),
        Status.FAILED_PRECONDITION,
        /audience/,
      );
    });
    it('token from the wrong issuer → FAILED_PRECONDITION', async () => {
      assertRefused(
        await refusal({
          token: Buffer.from(
            await state.token('emojivoto', 'web', { issuer: 'https://evil.example' }),
          ),
        }),
        Status.FAILED_PRECONDITION,
        /issuer/,
      );
    });
    it('expired token → FAILED_PRECONDITION', async () => {
      assertRefused(
        await refusal({
          token: Buffer.from(
            await state.token('emojivoto', 'web', { ttlMs: 3_600_000, issuedAgoMs: 2 * 3_600_000 }),
          ),
        }),
        Status.FAILED_PRECONDITION,
        /expired/,
      );
    });
    it('token with alg none → FAILED_PRECONDITION or INVALID_ARGUMENT naming the algorithm', async () => {
      const b64 = (o: object): string => Buffer.from(JSON.stringify(o)).toString('base64url');
      const now = Math.floor(Date.now() / 1000);
      const forged = `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ iss: 'https://kubernetes.default.svc.cluster.local', aud: ['identity.l5d.io'], sub: 'system:serviceaccount:emojivoto:web', exp: now + 600, iat: now, nbf: now })}.`;
      const err = await refusal({ token: Buffer.from(forged) });
      assert.ok(
        err.code === Status.FAILED_PRECONDITION || err.code === Status.INVALID_ARGUMENT,
        String(err.code),
      );
      assert.match(err.details, /none|alg/i);
    });
    it('token that is not a JWT → INVALID_ARGUMENT', async () => {
      assertRefused(
        await refusal({ token: Buffer.from('definitely-not-a-jwt') }),
        Status.INVALID_ARGUMENT,
        /token/,
      );
    });
    it('token over 16 KiB → INVALID_ARGUMENT', async () => {
      assertRefused(
        await refusal({ token: Buffer.alloc(17 * 1024, 0x61) }),
        Status.INVALID_ARGUMENT,
        /token is \d+ bytes, over the limit/,
      );
    });
    it('message over 64 KiB → RESOURCE_EXHAUSTED from gRPC before any decoding', async () => {
      assertRefused(
        await refusal({ token: Buffer.alloc(70 * 1024, 0x61) }),
        Status.RESOURCE_EXHAUSTED,
        /larger than max/i,
      );
    });
  });

  describe('admin', () => {
    it('is ready with a valid issuer and live', async () => {
      const ready = await adminGet(ca.admin, '/ready');
      assert.equal(ready.status, 200);
      assert.match(ready.body, /ready: issuer/);
      assert.equal((await adminGet(ca.admin, '/live')).status, 200);
    });

    it('exports Certify outcomes by status, latency, the issuer TTL and the anchors expiry, summed over workers', async () => {
      for (let i = 0; i < 3; i++) {
        await client.certify({
          identity: WEB,
          token: Buffer.from(await state.token('emojivoto', 'web')),
          certificateSigningRequest: p256Csr(WEB),
        });
      }
      await refusal({ token: Buffer.from(await state.token('emojivoto', 'voting')) });
      const text = (await adminGet(ca.admin, '/metrics')).body;
      assert.ok(
        metricValue(text, 'meshid_certify_requests_total', { outcome: 'issued', code: 'OK' }) >= 3,
      );
      assert.ok(
        metricValue(text, 'meshid_certify_requests_total', {
          outcome: 'refused',
          code: 'FAILED_PRECONDITION',
        }) >= 1,
      );
      assert.ok(
        metricValue(text, 'meshid_certify_duration_seconds_count', { outcome: 'issued' }) >= 3,
      );
      const ttl = metricValue(text, 'meshid_issuer_cert_ttl_seconds');
      assert.ok(ttl > 29 * 86_400 && ttl <= 30 * 86_400, String(ttl));
      assert.equal(
        metricValue(text, 'meshid_trust_anchors_earliest_not_after_timestamp_seconds'),
        Math.floor(new x509.X509Certificate(state.root.certificateDer).notAfter.getTime() / 1000),
      );
    });

    it('never logs a token', async () => {
      const token = await state.token('emojivoto', 'web');
      await client.certify({
        identity: WEB,
        token: Buffer.from(token),
        certificateSigningRequest: p256Csr(WEB),
      });
      await refusal({ token: Buffer.from(await state.token('emojivoto', 'voting')) });
      const signature = token.split('.')[2]!;
      const all = ca.lines.join('\n') + ca.stderr();
      assert.ok(
        !all.includes(signature) && !all.includes(token.slice(0, 40)),
        'token material in the logs',
      );
      assert.match(all, /"event":"issued".*"serial":"[0-9a-f]+".*"sha256":"[0-9a-f]{64}"/);
    });
  });
});
