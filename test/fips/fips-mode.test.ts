/**
 * FIPS mode under the real OpenSSL 3.0 FIPS provider (built from Debian's openssl source by
 * scripts/fips-provider.sh): `meshid ca` and `meshid proxy` processes started with `--fips` and
 * Node running on the provider. The CA issues, the proxies do mTLS, the negotiated suite and
 * group are FIPS ones (from live connections and from `openssl s_client` running with the default
 * provider, so it could offer anything), and what is outside the policy is refused: CSRs with
 * other keys, Ed25519, X25519-only and ChaCha20-only peers, anchors outside the policy.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { createServer as createTlsServer } from 'node:tls';
import type { ConnectionOptions, TLSSocket } from 'node:tls';
import { CertifyClient, createCsr, formatAddress } from '../../core/index.js';
import {
  adminGet,
  metricValue,
  runMeshid,
  startCaProcess,
  waitFor,
} from '../support/ca-process.js';
import type { CaProcess } from '../support/ca-process.js';
import { fipsProvider, sClient } from '../support/fips.js';
import type { FipsProvider } from '../support/fips.js';
import { certificateFromCa, httpGet, startProxyProcess } from '../support/proxy-process.js';
import type { ProxyProcess } from '../support/proxy-process.js';
import { connectTls, readAll } from '../support/proxy-pki.js';
import type { WorkloadCertificate } from '../../proxy/index.js';
import { CA_IDENTITY, HOUR, TOKEN_ISSUER, idOf, makeTestState } from '../support/state.js';
import type { TestState } from '../support/state.js';
import { opensslCsr, peculiarCsr } from '../unit/core/fixtures/csr-makers.js';

const WEB = idOf('emojivoto', 'web');
const VOTING = idOf('emojivoto', 'voting');
const FIPS_SUITES = ['TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384'];
const FIPS_GROUPS = ['prime256v1', 'secp384r1'];

function logRecords(lines: readonly string[]): Record<string, unknown>[] {
  return lines.flatMap((l) => {
    try {
      return [JSON.parse(l) as Record<string, unknown>];
    } catch {
      return [];
    }
  });
}

/** Sends one HTTP/1.1 request over a connected TLS socket; the raw answer until close. */
async function httpOver(socket: TLSSocket): Promise<string> {
  const answer = readAll(socket);
  socket.on('error', () => undefined);
  socket.write('GET /fips HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n');
  return answer;
}

/**
 * A certificate for `identity` signed by the state's issuer (so it chains to the anchor), with a
 * key the openssl CLI makes from `keyArgs`: what the CA would never issue.
 */
async function issuerSignedLeaf(
  state: TestState,
  keyArgs: string[],
  identity: string,
): Promise<WorkloadCertificate> {
  const file = (n: string): string => join(state.dir, `${n}-${leafCount}`);
  leafCount++;
  await writeFile(file('issuer.key'), state.issuer.privateKeyPem);
  await writeFile(file('issuer.crt'), state.issuer.certificatePem);
  const run = (args: string[]): void => {
    execFileSync('openssl', args, { stdio: 'ignore', env: { PATH: process.env['PATH'] ?? '' } });
  };
  run(['genpkey', ...keyArgs, '-out', file('leaf.key')]);
  run(
    ['req', '-new', '-key', file('leaf.key'), '-subj', `/CN=${identity}`].concat([
      '-addext',
      `subjectAltName=DNS:${identity}`,
      '-out',
      file('leaf.csr'),
    ]),
  );
  run(
    [
      'x509',
      '-req',
      '-in',
      file('leaf.csr'),
      '-CA',
      file('issuer.crt'),
      '-CAkey',
      file('issuer.key'),
    ].concat(['-days', '1', '-sha256', '-copy_extensions', 'copy', '-out', file('leaf.crt')]),
  );
  return {
    keyPem: await readFile(file('leaf.key'), 'utf8'),
    certChainPem: (await readFile(file('leaf.crt'), 'utf8')) + state.issuer.certificatePem,
  } as WorkloadCertificate;
}
let leafCount = 0;

describe('FIPS mode under the real OpenSSL FIPS provider', function () {
  this.timeout(120_000);
  let provider: FipsProvider;
  let state: TestState;
  let ca: CaProcess;
  let web: ProxyProcess;
  let voting: ProxyProcess;
  let plainWeb: ProxyProcess;
  let app: Server;
  let anchorsPem: string;
  const appSaw: string[] = [];

  before(async function () {
    this.timeout(20 * 60_000); // a first run builds the provider
    provider = fipsProvider();
    state = await makeTestState();
    anchorsPem = await readFile(state.anchorsFile, 'utf8');
    ca = await startCaProcess([...state.caArgs, '--workers', '2', '--fips'], provider.env);
    app = createServer((req, res) => {
      appSaw.push(String(req.headers['l5d-client-id']));
      res.end(`web says hi to ${String(req.headers['l5d-client-id'])}\n`);
    });
    app.listen(0, '127.0.0.1');
    await once(app, 'listening');
    const appAddr = `127.0.0.1:${(app.address() as AddressInfo).port}`;
    const proxy = (sa: string, args: string[], env = provider.env): Promise<ProxyProcess> =>
      startProxyProcess({ state, ca: formatAddress(ca.address), sa, args, env });
    web = await proxy('web', ['--fips', '--inbound', '127.0.0.1:0', '--app', appAddr]);
    voting = await proxy('voting', [
      '--fips',
      '--route',
      `127.0.0.1:0=${formatAddress(web.inbound!)}@${WEB}`,
    ]);
    // The control: the same proxy without FIPS mode (and without the provider).
    plainWeb = await proxy('web', ['--inbound', '127.0.0.1:0', '--app', appAddr], {});
  });
  after(async () => {
    for (const p of [plainWeb, voting, web]) await p?.stop();
    await ca?.stop();
    app?.close();
    await state?.cleanup();
  });

  describe('the CA', () => {
    it('runs every worker on the FIPS provider and says so at start', () => {
      const fipsLines = logRecords(ca.lines).filter((r) => r['fipsRequested'] === true);
      // The primary and both workers each checked.
      assert.equal(fipsLines.length, 3, ca.lines.join('\n'));
      for (const r of fipsLines) {
        assert.equal(r['fips'], true);
        assert.equal(r['openssl'], process.versions.openssl);
        assert.match(String(r['msg']), /^FIPS mode: a FIPS provider serves all crypto/);
      }
    });

    it('proves @peculiar/x509 runs on the provider: an RSA key with public exponent 3, which only a non-FIPS provider offers, fails inside the CA', () => {
      const probes = logRecords(ca.lines).filter((r) => 'x509RsaExponent3' in r);
      assert.equal(probes.length, 2, 'one probe per worker');
      for (const p of probes) {
        assert.equal(p['x509EcdsaP256'], 'works');
        // The FIPS provider's own refusal of an exponent FIPS 186 does not allow.
        assert.match(String(p['x509RsaExponent3']), /^refused: .*pub exponent out of range/);
      }
    });

    it('reports fips_enabled 1 on its admin endpoint (every worker)', async () => {
      const metrics = await adminGet(ca.admin, '/metrics');
      assert.equal(metricValue(metrics.body, 'fips_enabled'), 1);
    });

    it('issues a certificate for a P-256 CSR', async () => {
      const chain = await certificateFromCa(state, ca.address, 'emojivoto', 'emoji');
      assert.match(chain.chainPem, /BEGIN CERTIFICATE/);
    });

    it('negotiates a FIPS suite and P-256 with an openssl s_client peer that offers X25519 first', () => {
      const r = sClient(ca.address, []);
      assert.ok(r.connected, r.output);
      assert.equal(r.protocol, 'TLSv1.3');
      assert.ok(FIPS_SUITES.includes(r.cipher ?? ''), r.output);
      assert.ok(FIPS_GROUPS.includes(r.group ?? ''), r.output);
      const p384 = sClient(ca.address, [
        '-groups',
        'P-384',
        '-ciphersuites',
        'TLS_AES_256_GCM_SHA384',
      ]);
      assert.equal(p384.group, 'secp384r1', p384.output);
      assert.equal(p384.cipher, 'TLS_AES_256_GCM_SHA384');
    });

    it('refuses an X25519-only, a ChaCha20-only and an Ed25519-only client', () => {
      for (const args of [
        ['-groups', 'X25519'],
        ['-ciphersuites', 'TLS_CHACHA20_POLY1305_SHA256'],
        ['-sigalgs', 'ed25519'],
      ]) {
        const r = sClient(ca.address, args);
        assert.equal(r.connected, false, `${args.join(' ')}:\n${r.output}`);
        assert.match(r.output, /handshake failure|alert/, args.join(' '));
      }
    });

    describe('refuses CSRs outside the FIPS policy, saying FIPS mode refused them', () => {
      const certify = async (
        csr: Buffer,
      ): Promise<{ code: number; details: string } | 'issued'> => {
        const client = new CertifyClient({
          address: ca.address,
          serverName: CA_IDENTITY,
          anchorsPem,
        });
        try {
          await client.certify({
            identity: idOf('emojivoto', 'emoji'),
            token: Buffer.from(await state.token('emojivoto', 'emoji', { ttlMs: HOUR })),
            certificateSigningRequest: csr,
          });
          return 'issued';
        } catch (err) {
          return err as { code: number; details: string };
        } finally {
          client.close();
        }
      };
      const san = [{ type: 'dns' as const, value: idOf('emojivoto', 'emoji') }];
      const subject = `/CN=${idOf('emojivoto', 'emoji')}`;
      const dns = `DNS:${idOf('emojivoto', 'emoji')}`;

      it('an Ed25519 key', async () => {
        const r = await certify((await peculiarCsr({ key: 'Ed25519', san })).der);
        assert.notEqual(r, 'issued');
        assert.equal((r as { code: number }).code, 9); // FAILED_PRECONDITION
        assert.match(
          (r as { details: string }).details,
          /^FIPS mode refused the CSR: its key is Ed25519/,
        );
      });

      it('an RSA-1024 key', async () => {
        const key = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey;
        const r = await certify(opensslCsr({ key, subject, san: dns }));
        assert.match(
          (r as { details: string }).details,
          /^FIPS mode refused the CSR: its key is RSA 1024-bit/,
        );
      });

      it('a P-521 key', async () => {
        const key = generateKeyPairSync('ec', { namedCurve: 'P-521' }).privateKey;
        const r = await certify(opensslCsr({ key, subject, san: dns }));
        assert.match(
          (r as { details: string }).details,
          /^FIPS mode refused the CSR: its key is EC P-521/,
        );
      });

      it('while a FIPS key that meshid does not issue for (RSA-2048) meets the usual rule, not FIPS', async () => {
        const rsa = await certify((await peculiarCsr({ key: 'RSA', san })).der);
        assert.match((rsa as { details: string }).details, /^CSR key must be ECDSA P-256, got RSA/);
      });

      it('and a P-256 CSR is issued by the same CA', async () => {
        const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
        const id = idOf('emojivoto', 'emoji');
        assert.equal(
          await certify(createCsr({ privateKey, commonName: id, dnsNames: [id] })).then((r) =>
            r === 'issued' ? 'issued' : r.details,
          ),
          'issued',
        );
      });
    });
  });

  describe("the CA's other TLS clients (a JWKS URL)", () => {
    let jwksServerFor: (ecdhCurve: string) => Promise<{ url: string; close: () => void }>;
    let serverCaFile: string;
    before(async () => {
      serverCaFile = join(state.dir, 'jwks-server.pem');
      const keyFile = join(state.dir, 'jwks-server.key');
      execFileSync(
        'openssl',
        ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes']
          .concat(['-keyout', keyFile, '-out', serverCaFile, '-subj', '/CN=jwks', '-days', '1'])
          .concat(['-addext', 'subjectAltName=IP:127.0.0.1']),
        { stdio: 'ignore' },
      );
      const jwks = await readFile(state.jwksFile);
      const key = await readFile(keyFile);
      const cert = await readFile(serverCaFile);
      jwksServerFor = async (ecdhCurve) => {
        const server = createHttpsServer({ key, cert, ecdhCurve }, (_req, res) => {
          res.writeHead(200, { 'content-type': 'application/jwk-set+json' }).end(jwks);
        });
        server.listen(0, '127.0.0.1');
        await once(server, 'listening');
        return {
          url: `https://127.0.0.1:${(server.address() as AddressInfo).port}/openid/v1/jwks`,
          close: () => server.close(),
        };
      };
    });

    const startWithJwks = (url: string): Promise<CaProcess> =>
      startCaProcess(
        ['--fips', '--workers', '1', '--trust-anchors', state.anchorsFile]
          .concat(['--issuer-dir', state.issuerDir, '--jwks', url, '--jwks-ca', serverCaFile])
          .concat(['--token-issuer', TOKEN_ISSUER]),
        provider.env,
      );

    it('fetch over TLS with P-256, and refuse a server that offers only X25519', async () => {
      const p256 = await jwksServerFor('P-256');
      const x25519 = await jwksServerFor('X25519');
      const good = await startWithJwks(p256.url);
      const bad = await startWithJwks(x25519.url);
      try {
        const issued = await certificateFromCa(state, good.address, 'emojivoto', 'web');
        assert.match(issued.chainPem, /BEGIN CERTIFICATE/);
        const refused = await certificateFromCa(state, bad.address, 'emojivoto', 'web').then(
          () => 'issued',
          (err: { code?: number }) => err.code,
        );
        assert.equal(refused, 14); // UNAVAILABLE: the keys could not be fetched
        assert.match(bad.lines.join('\n'), /JWKS could not be fetched/);
      } finally {
        await Promise.all([good.stop(), bad.stop()]);
        p256.close();
        x25519.close();
      }
    });
  });

  describe('the proxies', () => {
    /** A client with `cert` gets no answer from the FIPS web proxy, and the app sees nothing. */
    const assertInboundRefuses = async (
      cert: WorkloadCertificate,
      extra?: ConnectionOptions,
    ): Promise<void> => {
      const before = appSaw.length;
      const answer = await connectTls(web.inbound!.port, {
        servername: WEB,
        anchorsPem,
        cert,
        ...(extra === undefined ? {} : { extra }),
      })
        .then(httpOver)
        .catch((err: unknown) => `error: ${String(err)}`);
      assert.doesNotMatch(answer, /HTTP\/1\.1 200/);
      assert.equal(appSaw.length, before, 'nothing reached the app');
    };

    it('carry traffic over mTLS in FIPS mode, with certificates from the FIPS CA', async () => {
      const r = await httpGet(voting.outbound[0]!, '/');
      assert.equal(r.status, 200);
      assert.equal(r.body, `web says hi to ${VOTING}\n`);
    });

    it('report fips_enabled 1 on their admin endpoints (0 on the proxy without FIPS mode)', async () => {
      for (const p of [web, voting]) {
        assert.equal(metricValue((await adminGet(p.admin, '/metrics')).body, 'fips_enabled'), 1);
      }
      assert.equal(
        metricValue((await adminGet(plainWeb.admin, '/metrics')).body, 'fips_enabled'),
        0,
      );
    });

    it('negotiate a FIPS suite and group on the live inbound connection', async () => {
      const cert = await certificateFromCa(state, ca.address, 'emojivoto', 'voting');
      const socket = await connectTls(web.inbound!.port, {
        servername: WEB,
        anchorsPem,
        cert: { keyPem: cert.keyPem, certChainPem: cert.chainPem } as WorkloadCertificate,
      });
      const cipher = socket.getCipher();
      const group = socket.getEphemeralKeyInfo() as { name?: string };
      assert.equal(socket.getProtocol(), 'TLSv1.3');
      assert.ok(FIPS_SUITES.includes(cipher.standardName), cipher.standardName);
      assert.ok(FIPS_GROUPS.includes(group.name ?? ''), JSON.stringify(group));
      assert.match(await httpOver(socket), /^HTTP\/1\.1 200[\s\S]*web says hi to voting\./);
    });

    it('negotiate a FIPS suite and group with an openssl s_client peer holding a workload certificate', async () => {
      const cert = await certificateFromCa(state, ca.address, 'emojivoto', 'voting');
      const keyFile = join(state.dir, 'voting-key.pem');
      const certFile = join(state.dir, 'voting-chain.pem');
      await writeFile(keyFile, cert.keyPem);
      await writeFile(certFile, cert.chainPem);
      const r = sClient(web.inbound!, ['-servername', WEB, '-cert', certFile, '-key', keyFile]);
      assert.ok(r.connected, r.output);
      assert.ok(FIPS_SUITES.includes(r.cipher ?? ''), r.output);
      assert.ok(FIPS_GROUPS.includes(r.group ?? ''), r.output);
    });

    it('refuse X25519-only, ChaCha20-only and Ed25519-only clients at the handshake', () => {
      for (const args of [
        ['-groups', 'X25519'],
        ['-ciphersuites', 'TLS_CHACHA20_POLY1305_SHA256'],
        ['-sigalgs', 'ed25519'],
      ]) {
        const r = sClient(web.inbound!, ['-servername', WEB, ...args]);
        assert.equal(r.connected, false, `${args.join(' ')}:\n${r.output}`);
      }
      // The same ChaCha20-only client is served by the proxy outside FIPS mode.
      const plain = sClient(plainWeb.inbound!, [
        '-servername',
        WEB,
        '-ciphersuites',
        'TLS_CHACHA20_POLY1305_SHA256',
      ]);
      assert.equal(plain.cipher, 'TLS_CHACHA20_POLY1305_SHA256', plain.output);
    });

    it('refuse a peer whose certificate has an Ed25519 key (accepted outside FIPS mode)', async () => {
      // A valid workload certificate for voting, chained to the anchor through the issuer, but
      // with an Ed25519 key: only FIPS mode tells it apart.
      const edCert = await issuerSignedLeaf(state, ['-algorithm', 'ED25519'], VOTING);
      await assertInboundRefuses(edCert);
      const accepted = await httpOver(
        await connectTls(plainWeb.inbound!.port, { servername: WEB, anchorsPem, cert: edCert }),
      );
      assert.match(accepted, /^HTTP\/1\.1 200[\s\S]*web says hi to voting\./);
    });

    it('refuse a peer whose certificate has an RSA-1024 key in the handshake (OpenSSL security level 2)', async () => {
      const rsaCert = await issuerSignedLeaf(
        state,
        ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:1024'],
        VOTING,
      );
      // The hostile client lowers its own security level so that it can present the weak key at
      // all (OpenSSL ≥ 3.2 refuses to load it at the default level 2). The proxy's OpenSSL 3.5
      // refuses the key while verifying the chain, before meshid's own FIPS check after the
      // handshake (which the Ed25519 case above exercises).
      const before = appSaw.length;
      const failure = await connectTls(web.inbound!.port, {
        servername: WEB,
        anchorsPem,
        cert: rsaCert,
        extra: { ciphers: 'DEFAULT:@SECLEVEL=0' },
      })
        .then(httpOver)
        .then(
          (answer) => `answered: ${answer}`,
          (err: unknown) => `refused: ${String(err)}`,
        );
      assert.match(failure, /^refused: |^answered: (?!HTTP\/1\.1 200)/);
      assert.doesNotMatch(failure, /HTTP\/1\.1 200/);
      assert.equal(appSaw.length, before, 'nothing reached the app');
    });

    it('refuse, outbound, a server whose certificate is outside the policy', async () => {
      const rsaCert = await issuerSignedLeaf(
        state,
        ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:1024'],
        WEB,
      );
      let served = 0;
      const server = createTlsServer(
        // Security level 0: OpenSSL ≥ 3.2 refuses to load a 1024-bit key at the default level 2.
        { key: rsaCert.keyPem, cert: rsaCert.certChainPem, ciphers: 'DEFAULT:@SECLEVEL=0' },
        (s) => {
          served++;
          s.end('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi');
        },
      );
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
      const fake = await startProxyProcess({
        state,
        ca: formatAddress(ca.address),
        sa: 'voting',
        args: [
          '--fips',
          '--route',
          `127.0.0.1:0=127.0.0.1:${(server.address() as AddressInfo).port}@${WEB}`,
        ],
        env: provider.env,
      });
      try {
        const r = await httpGet(fake.outbound[0]!, '/').catch((err: unknown) => ({
          status: 0,
          body: String(err),
        }));
        assert.notEqual(r.status, 200, r.body);
        assert.equal(served, 0, 'no request reached the server');
        // Refused in the handshake by OpenSSL's security level (its key is too small), or after
        // it by meshid's FIPS check: either way the log says why.
        await waitFor('the refusal in the log', () => {
          const text = fake.lines.join('\n');
          return /EE certificate key too (?:weak|small)|FIPS mode refused the peer's certificate[^\n]*its key is RSA 1024-bit/.test(
            text,
          )
            ? text
            : undefined;
        });
      } finally {
        await fake.stop();
        server.close();
      }
    });

    it('refuse to start on an anchor bundle with an anchor outside the policy', async () => {
      const edRoot = join(state.dir, 'ed-root.pem');
      execFileSync(
        'openssl',
        [
          'req',
          '-x509',
          '-newkey',
          'ed25519',
          '-nodes',
          '-keyout',
          join(state.dir, 'ed-root.key'),
          '-subj',
          '/CN=ed25519 root',
          '-days',
          '1',
          '-addext',
          'basicConstraints=critical,CA:TRUE',
          '-out',
          edRoot,
        ],
        { stdio: 'ignore' },
      );
      const bundle = join(state.dir, 'mixed-anchors.pem');
      await writeFile(bundle, anchorsPem + (await readFile(edRoot, 'utf8')));
      const tokenFile = join(state.dir, 'web-token');
      const proxy = await runMeshid(
        [
          'proxy',
          '--fips',
          '--identity-addr',
          formatAddress(ca.address),
          '--identity-name',
          CA_IDENTITY,
          '--trust-anchors',
          bundle,
          '--token-file',
          tokenFile,
          '--local-identity',
          WEB,
          '--admin',
          '127.0.0.1:0',
        ],
        provider.env,
      );
      assert.equal(proxy.code, 1, proxy.stderr);
      assert.match(
        proxy.stderr,
        /FIPS mode refused trust anchor #2 "CN=ed25519 root": its key is Ed25519.*\[ERR_FIPS_MATERIAL_REFUSED\]/,
      );
      const caRun = await runMeshid(
        [
          'ca',
          '--fips',
          '--workers',
          '1',
          ...state.caArgs.map((a) => (a === state.anchorsFile ? bundle : a)),
          '--listen',
          '127.0.0.1:0',
          '--admin',
          '127.0.0.1:0',
        ],
        provider.env,
      );
      assert.equal(caRun.code, 1, caRun.stderr);
      assert.match(
        caRun.stderr,
        /FIPS mode refused trust anchor #2 "CN=ed25519 root": its key is Ed25519.*\[ERR_FIPS_MATERIAL_REFUSED\]/,
      );
    });
  });
});
