/**
 * A resumed TLS session must not outlive the client certificate it was made with (issue 20,
 * case 2): the inbound of a real `meshid proxy` is tried by a real TLS 1.3 client that keeps the
 * session tickets it was given and offers them again once its certificate has expired, and once
 * its trust anchor has been removed from the proxy's bundle. Both must be refused, as a full
 * handshake with the same certificate is.
 */
import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { formatAddress } from '../../core/index.js';
import { createIntermediateCa, createRootCa } from '../../core/pki.js';
import { adminGet, startCaProcess, waitFor } from '../support/ca-process.js';
import type { CaProcess } from '../support/ca-process.js';
import { startProxyProcess } from '../support/proxy-process.js';
import type { ProxyProcess } from '../support/proxy-process.js';
import { workloadSigner } from '../support/proxy-pki.js';
import type { WorkloadCertificate } from '../../proxy/index.js';
import { DAY, idOf, makeTestState } from '../support/state.js';
import type { TestState } from '../support/state.js';

const CLIENT_ID = 'l5d-client-id';

/** What one connection to the inbound got. */
interface Attempt {
  /** Whether the server resumed the offered session. */
  readonly reused: boolean;
  /** The app's answer: the identity it was told, or undefined when refused. */
  readonly clientId: string | undefined;
  /** The last session ticket the server gave (to offer next time). */
  readonly ticket: Buffer | undefined;
}

/** One HTTP/1.1 GET over TLS 1.3 with `cert`, offering `session` when given. */
async function attempt(
  port: number,
  o: { anchorsPem: string; servername: string; cert: WorkloadCertificate; session?: Buffer },
): Promise<Attempt> {
  const socket = tlsConnect({
    host: '127.0.0.1',
    port,
    servername: o.servername,
    ca: o.anchorsPem,
    key: o.cert.keyPem,
    cert: o.cert.certChainPem,
    ALPNProtocols: ['http/1.1'],
    ...(o.session === undefined ? {} : { session: o.session }),
  });
  let ticket: Buffer | undefined;
  socket.on('session', (s: Buffer) => (ticket = s));
  const chunks: Buffer[] = [];
  socket.on('data', (d: Buffer) => chunks.push(d));
  socket.on('error', () => undefined);
  let reused = false;
  socket.once('secureConnect', () => {
    reused = socket.isSessionReused();
    socket.write('GET / HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n');
  });
  const timer = setTimeout(() => socket.destroy(), 10_000);
  await once(socket, 'close');
  clearTimeout(timer);
  const text = Buffer.concat(chunks).toString('latin1');
  const m = /\r\n\r\n(.*)$/s.exec(text);
  return {
    reused,
    clientId: text.startsWith('HTTP/1.1 200') && m !== null ? m[1] : undefined,
    ticket,
  };
}

describe('meshid proxy: TLS resumption does not outlive a certificate (real processes)', function () {
  this.timeout(90_000);
  let state: TestState;
  let ca: CaProcess;
  let app: Server;
  let proxy: ProxyProcess;
  let anchorsFile: string;
  let meshAnchors: string;
  let otherRoot: Awaited<ReturnType<typeof createRootCa>>;
  let otherIssuer: Awaited<ReturnType<typeof createIntermediateCa>>;
  const VOTING = idOf('emojivoto', 'voting');

  before(async () => {
    state = await makeTestState();
    ca = await startCaProcess([...state.caArgs, '--workers', '1', '--cert-lifetime', '1h']);
    app = createServer((req, res) => res.end(String(req.headers[CLIENT_ID] ?? '')));
    app.listen(0, '127.0.0.1');
    await once(app, 'listening');
    const now = Date.now();
    otherRoot = await createRootCa({
      commonName: 'other-root.linkerd.cluster.local',
      notBefore: now - DAY,
      notAfter: now + 30 * DAY,
    });
    otherIssuer = await createIntermediateCa({
      issuer: otherRoot,
      commonName: 'other-identity.linkerd.cluster.local',
      notBefore: now - DAY,
      notAfter: now + 10 * DAY,
    });
    meshAnchors = await readFile(state.anchorsFile, 'utf8');
    anchorsFile = join(state.dir, 'proxy-anchors.pem');
    await writeFile(anchorsFile, meshAnchors + otherRoot.certificatePem);
    proxy = await startProxyProcess({
      state,
      ca: formatAddress(ca.address),
      sa: 'web',
      anchorsFile,
      args: [
        ...['--inbound', '127.0.0.1:0'],
        ...['--app', `127.0.0.1:${(app.address() as AddressInfo).port}`, '--app-protocol', 'http1'],
      ],
    });
  });
  after(async () => {
    await proxy?.stop();
    app?.close();
    await ca?.stop();
    await state?.cleanup();
  });

  it('refuses a client whose certificate expired, resumed or not', async () => {
    const cert = workloadSigner(state.issuer)(VOTING, { notAfter: Date.now() + 5000 });
    const base = {
      anchorsPem: meshAnchors,
      servername: proxy.identity,
      cert,
    };
    const first = await attempt(proxy.inbound!.port, base);
    assert.equal(first.clientId, VOTING, 'served while the certificate is valid');
    // The real clock decides validity in every TLS stack here: wait until it has passed.
    await waitFor('the certificate to expire', () =>
      Date.now() > cert.notAfter + 1500 ? true : undefined,
    );
    const full = await attempt(proxy.inbound!.port, base);
    assert.equal(full.clientId, undefined, 'a full handshake with an expired certificate');
    if (first.ticket !== undefined) {
      const resumed = await attempt(proxy.inbound!.port, { ...base, session: first.ticket });
      assert.equal(resumed.reused, false, 'the proxy resumed a session');
      assert.equal(resumed.clientId, undefined, 'served by resuming after expiry');
    }
  });

  it('refuses a client whose anchor was removed from the bundle, resumed or not', async () => {
    const cert = workloadSigner(otherIssuer)(VOTING);
    const base = { anchorsPem: meshAnchors, servername: proxy.identity, cert };
    const first = await attempt(proxy.inbound!.port, base);
    assert.equal(first.clientId, VOTING, 'served while its anchor is in the bundle');

    const before = JSON.parse((await adminGet(proxy.admin, '/identity')).body) as {
      trustAnchors: { fingerprint: string };
    };
    await writeFile(anchorsFile, meshAnchors);
    await waitFor('the proxy to reload its anchors', async () => {
      const now = JSON.parse((await adminGet(proxy.admin, '/identity')).body) as {
        trustAnchors: { fingerprint: string };
      };
      return now.trustAnchors.fingerprint !== before.trustAnchors.fingerprint ? true : undefined;
    });
    const full = await attempt(proxy.inbound!.port, base);
    assert.equal(full.clientId, undefined, 'a full handshake after the anchor was removed');
    if (first.ticket !== undefined) {
      const resumed = await attempt(proxy.inbound!.port, { ...base, session: first.ticket });
      assert.equal(resumed.reused, false, 'the proxy resumed a session');
      assert.equal(resumed.clientId, undefined, 'served by resuming after the anchor was removed');
    }
  });
});
