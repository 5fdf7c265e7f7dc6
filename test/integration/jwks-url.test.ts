/**
 * `meshid ca --jwks https://… --jwks-ca FILE`: the token keys served over HTTPS (as a cluster's
 * /openid/v1/jwks is), trusted through the given CA only. Without that CA the keys cannot be
 * fetched, and Certify answers UNAVAILABLE: never a certificate.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:https';
import type { Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { CertifyClient, createCsr } from '../../core/index.js';
import type { CertifyCallError } from '../../core/certify-client.js';
import { startCaProcess } from '../support/ca-process.js';
import type { CaProcess } from '../support/ca-process.js';
import { CA_IDENTITY, TOKEN_ISSUER, idOf, makeTestState } from '../support/state.js';
import type { TestState } from '../support/state.js';

const WEB = idOf('emojivoto', 'web');

describe('meshid ca with a JWKS URL over HTTPS (real processes)', function () {
  this.timeout(60_000);
  let state: TestState;
  let server: Server;
  let url: string;
  let serverCaFile: string;
  let fetches = 0;

  before(async () => {
    state = await makeTestState();
    serverCaFile = join(state.dir, 'jwks-server.pem');
    const keyFile = join(state.dir, 'jwks-server.key');
    // The JWKS server's certificate, self-signed by the openssl CLI, for 127.0.0.1.
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-keyout',
        keyFile,
        '-out',
        serverCaFile,
        '-subj',
        '/CN=jwks-test',
        '-days',
        '1',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
      ],
      { stdio: 'ignore' },
    );
    const jwks = await readFile(state.jwksFile);
    server = createServer(
      { key: await readFile(keyFile), cert: await readFile(serverCaFile) },
      (req, res) => {
        fetches++;
        if (req.url !== '/openid/v1/jwks') {
          res.writeHead(404).end();
          return;
        }
        res.writeHead(200, { 'content-type': 'application/jwk-set+json' }).end(jwks);
      },
    );
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    url = `https://127.0.0.1:${(server.address() as AddressInfo).port}/openid/v1/jwks`;
  });
  after(async () => {
    server?.close();
    await state?.cleanup();
  });

  const args = (): string[] => [
    '--trust-anchors',
    state.anchorsFile,
    '--issuer-dir',
    state.issuerDir,
    '--jwks',
    url,
    '--token-issuer',
    TOKEN_ISSUER,
    '--workers',
    '1',
  ];

  async function certify(ca: CaProcess): Promise<unknown> {
    const client = new CertifyClient({
      address: ca.address,
      serverName: CA_IDENTITY,
      anchorsPem: await readFile(state.anchorsFile, 'utf8'),
    });
    try {
      const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      return await client.certify({
        identity: WEB,
        token: Buffer.from(await state.token('emojivoto', 'web')),
        certificateSigningRequest: createCsr({ privateKey, dnsNames: [WEB] }),
      });
    } finally {
      client.close();
    }
  }

  it('fetches the keys through the given CA and issues', async () => {
    const ca = await startCaProcess([...args(), '--jwks-ca', serverCaFile]);
    try {
      const res = (await certify(ca)) as { leafCertificate: Uint8Array };
      assert.ok(res.leafCertificate.length > 0);
      assert.ok(fetches >= 1, 'the JWKS was fetched from the server');
    } finally {
      assert.equal(await ca.stop(), 0);
    }
  });

  it('answers UNAVAILABLE, and issues nothing, when the JWKS server is not trusted', async () => {
    const ca = await startCaProcess(args());
    try {
      const err = (await certify(ca).then(
        () => assert.fail('a certificate was issued without verified keys'),
        (e: unknown) => e,
      )) as CertifyCallError;
      assert.equal(err.code, 14, err.details);
      assert.match(err.details, /JWKS|keys|unavailable/i);
      assert.match(ca.lines.join('\n'), /JWKS could not be fetched/);
    } finally {
      await ca.stop();
    }
  });
});
