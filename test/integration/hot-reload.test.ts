/**
 * Issuer hot reload in a running `meshid ca` (two workers): a valid new issuer under the same
 * anchor is picked up without a restart while Certify calls keep flowing, none failing; a broken
 * one is refused and the previous issuer keeps issuing; anchor rotation in two steps ends on the
 * new root.
 */
import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import { connect as tlsConnect } from 'node:tls';
import { readFile, writeFile } from 'node:fs/promises';
import * as x509 from '@peculiar/x509';
import { createCsr, systemClock, CertifyClient } from '../../core/index.js';
import { createRootCa } from '../../core/pki.js';
import {
  NO_RATE_LIMITS,
  adminGet,
  metricValue,
  startCaProcess,
  waitFor,
} from '../support/ca-process.js';
import type { CaProcess } from '../support/ca-process.js';
import { CA_IDENTITY, DAY, HOUR, idOf, makeTestState } from '../support/state.js';
import type { Ca, TestState } from '../support/state.js';

const WEB = idOf('emojivoto', 'web');

describe('meshid ca: issuer and anchors hot reload (real process, two workers)', function () {
  this.timeout(90_000);
  let state: TestState;
  let ca: CaProcess;
  let token: Buffer;

  before(async () => {
    state = await makeTestState();
    // Eight callers from one address for one identity: a load, not what the rate limits are for.
    ca = await startCaProcess([...state.caArgs, '--workers', '2', ...NO_RATE_LIMITS]);
    token = Buffer.from(await state.token('emojivoto', 'web'));
  });
  after(async () => {
    await ca?.stop();
    await state?.cleanup();
  });

  function newClient(): Promise<CertifyClient> {
    return readFile(state.anchorsFile, 'utf8').then(
      (anchorsPem) =>
        new CertifyClient({ address: ca.address, serverName: CA_IDENTITY, anchorsPem }),
    );
  }

  async function issuerOfNewLeaf(client: CertifyClient): Promise<string> {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const res = await client.certify({
      identity: WEB,
      token,
      certificateSigningRequest: createCsr({ privateKey, dnsNames: [WEB] }),
    });
    return Buffer.from(res.intermediateCertificates[0]!).toString('hex');
  }

  async function rejectedCount(): Promise<number> {
    const v = metricValue(
      (await adminGet(ca.admin, '/metrics')).body,
      'meshid_issuer_updates_total',
      { result: 'rejected' },
    );
    return Number.isNaN(v) ? 0 : v;
  }

  const hex = (c: Ca): string => Buffer.from(c.certificateDer).toString('hex');

  /** The issuer of the certificate the CA presents on a new TLS connection. */
  async function servingCertIssuer(): Promise<string> {
    const socket = tlsConnect({
      host: '127.0.0.1',
      port: ca.address.port,
      servername: CA_IDENTITY,
      rejectUnauthorized: false,
      ALPNProtocols: ['h2'],
    });
    await once(socket, 'secureConnect');
    const cert = socket.getPeerX509Certificate();
    socket.destroy();
    return cert!.issuer;
  }

  it('picks up a valid new issuer without a restart, failing no Certify in flight', async () => {
    const client = await newClient();
    try {
      assert.equal(await issuerOfNewLeaf(client), hex(state.issuer));
      const next = await state.newIssuer({ commonName: 'identity-2.linkerd.cluster.local' });
      let stop = false;
      let ok = 0;
      const failures: string[] = [];
      const seen = new Set<string>();
      // Eight concurrent callers issue continuously across the swap.
      const load = Array.from({ length: 8 }, async () => {
        while (!stop) {
          try {
            seen.add(await issuerOfNewLeaf(client));
            ok++;
          } catch (err) {
            failures.push((err as Error).message);
          }
        }
      });
      await waitFor('load to start', () => (ok > 20 ? true : undefined));
      await state.installIssuer(next);
      await waitFor('the new issuer to be used by both workers', async () => {
        // Fresh connections, which the primary hands to the workers in turn.
        const issuers = new Set<string>();
        for (let i = 0; i < 4; i++) {
          const fresh = await newClient();
          try {
            issuers.add(await issuerOfNewLeaf(fresh));
          } finally {
            fresh.close();
          }
        }
        return issuers.size === 1 && issuers.has(hex(next)) ? true : undefined;
      });
      stop = true;
      await Promise.all(load);
      assert.deepEqual(failures, [], 'no Certify failed during the reload');
      assert.ok(
        seen.has(hex(state.issuer)) && seen.has(hex(next)),
        'calls were served by both issuers',
      );
      assert.equal(ca.proc.exitCode, null, 'no restart');
      // The CA's own serving certificate follows the issuer, so it still verifies for clients
      // once the old issuer is gone.
      const nextSubject = new X509Certificate(next.certificateDer).subject;
      await waitFor('every worker to serve a certificate from the new issuer', async () => {
        for (let i = 0; i < 4; i++)
          if ((await servingCertIssuer()) !== nextSubject) return undefined;
        return true;
      });
    } finally {
      client.close();
    }
  });

  it('refuses a broken issuer (key of another issuer) and keeps issuing with the last good one', async () => {
    const client = await newClient();
    try {
      const current = await issuerOfNewLeaf(client);
      const before = await rejectedCount();
      const broken = await state.newIssuer({ commonName: 'identity-broken.linkerd.cluster.local' });
      const stranger = await state.newIssuer();
      await state.installIssuer(broken, { key: stranger.privateKeyPem });
      await waitFor('both workers to refuse the broken issuer', async () =>
        (await rejectedCount()) >= before + 2 ? true : undefined,
      );
      assert.equal(await issuerOfNewLeaf(client), current);
      assert.match(ca.lines.join('\n'), /private key does not match/);
      assert.equal((await adminGet(ca.admin, '/ready')).status, 200);
    } finally {
      client.close();
    }
  });

  it('refuses an issuer that does not chain to the anchors', async () => {
    const client = await newClient();
    try {
      const current = await issuerOfNewLeaf(client);
      const before = await rejectedCount();
      const now = systemClock.now();
      const otherRoot = await createRootCa({
        commonName: 'evil-root',
        notBefore: now - HOUR,
        notAfter: now + DAY,
      });
      const foreign = await state.newIssuer({ root: otherRoot });
      await state.installIssuer(foreign, { root: otherRoot });
      await waitFor('the foreign issuer to be refused', async () =>
        (await rejectedCount()) >= before + 2 ? true : undefined,
      );
      assert.equal(await issuerOfNewLeaf(client), current);
      assert.match(ca.lines.join('\n'), /does not chain to any trust anchor/);
    } finally {
      client.close();
    }
  });

  it('rotates to a new root: anchors old+new first, then an issuer under the new root', async () => {
    const now = systemClock.now();
    const newRoot = await createRootCa({
      commonName: 'root-2.linkerd.cluster.local',
      notBefore: now - HOUR,
      notAfter: now + 365 * DAY,
    });
    const oldAnchors = await readFile(state.anchorsFile, 'utf8');
    await writeFile(`${state.anchorsFile}.tmp`, oldAnchors + '\n\n' + newRoot.certificatePem);
    const { rename } = await import('node:fs/promises');
    await rename(`${state.anchorsFile}.tmp`, state.anchorsFile);
    const issuer = await state.newIssuer({
      root: newRoot,
      commonName: 'identity-3.linkerd.cluster.local',
    });
    await state.installIssuer(issuer, { root: newRoot });
    const client = await newClient();
    try {
      await waitFor('the issuer under the new root', async () =>
        (await issuerOfNewLeaf(client)) === hex(issuer) ? true : undefined,
      );
      const metrics = (await adminGet(ca.admin, '/metrics')).body;
      assert.equal(
        metricValue(metrics, 'meshid_trust_anchors_earliest_not_after_timestamp_seconds'),
        Math.floor(
          Math.min(
            new x509.X509Certificate(state.root.certificateDer).notAfter.getTime(),
            new x509.X509Certificate(newRoot.certificateDer).notAfter.getTime(),
          ) / 1000,
        ),
      );
    } finally {
      client.close();
    }
  });
});
