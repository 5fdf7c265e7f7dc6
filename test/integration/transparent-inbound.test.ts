/**
 * Transparent inbound, end to end in network namespaces with real iptables: the server pod's
 * nat rules written by `meshid proxy-init` as its init container runs it, its proxy running as
 * UID 2102 in transparent mode, its app listening on its own ports as with no mesh. Clients in
 * another pod dial the server pod's app port as they would with no mesh: a plain curl, and a
 * meshid proxy (mTLS). The CA runs in the test's namespace on the lab's host address.
 */
import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import { chmod, copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatAddress } from '../../core/index.js';
import {
  MESHID_BIN,
  adminGet,
  startCaProcess,
  startMeshid,
  waitFor,
} from '../support/ca-process.js';
import type { CaProcess, MeshidProcess } from '../support/ca-process.js';
import { NetnsLab } from '../support/netns.js';
import type { NetnsPod } from '../support/netns.js';
import { CA_IDENTITY, HOUR, idOf, makeTestState } from '../support/state.js';
import type { TestState } from '../support/state.js';

/** The app: answers every request with who it saw (peer address, l5d-client-id). */
const WHO_APP = `
const http = require('node:http');
for (const port of process.argv.slice(1)) {
  http.createServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ port, remote: req.socket.remoteAddress, clientId: req.headers['l5d-client-id'] ?? null }));
  }).listen(Number(port), '0.0.0.0', () => console.log('up ' + port));
}
`;

interface Seen {
  port: string;
  remote: string;
  clientId: string | null;
}

describe('transparent inbound in network namespaces (proxy-init, SO_ORIGINAL_DST, mTLS by SNI)', function () {
  this.timeout(180_000);
  let lab: NetnsLab;
  let state: TestState;
  let ca: CaProcess;
  let server: NetnsPod;
  let client: NetnsPod;
  let dir: string;
  const procs: MeshidProcess[] = [];
  const serverId = idOf('emojivoto', 'web');
  const clientId = idOf('emojivoto', 'voting');

  /** Files a proxy running as 2102 can read: the anchors and its token. */
  async function proxyFiles(sa: string): Promise<{ anchors: string; token: string }> {
    const token = join(dir, `${sa}-token`);
    await writeFile(token, await state.token('emojivoto', sa, { ttlMs: 2 * HOUR }));
    await chmod(token, 0o644);
    return { anchors: join(dir, 'anchors.pem'), token };
  }

  async function startPodProxy(
    pod: NetnsPod,
    sa: string,
    args: string[],
    uid?: number,
  ): Promise<MeshidProcess> {
    const files = await proxyFiles(sa);
    const p = await startMeshid(
      'proxy',
      [
        ...['--identity-addr', formatAddress(ca.address), '--identity-name', CA_IDENTITY],
        ...['--trust-anchors', files.anchors, '--token-file', files.token],
        ...['--local-identity', idOf('emojivoto', sa), '--admin', `${pod.ip}:4191`],
        ...args,
      ],
      {},
      { prefix: pod.prefix(uid) },
    );
    procs.push(p);
    await waitFor(`${sa}'s proxy ready`, async () => {
      const r = await adminGet({ host: pod.ip, port: 4191 }, '/ready');
      return r.status === 200 ? true : undefined;
    });
    return p;
  }

  async function curl(from: NetnsPod, url: string, headers: string[] = []): Promise<Seen> {
    const r = await from.run('curl', [
      '-sS',
      '--max-time',
      '10',
      ...headers.flatMap((h) => ['-H', h]),
      url,
    ]);
    assert.equal(r.code, 0, `curl ${url}: ${r.stderr}`);
    try {
      return JSON.parse(r.stdout) as Seen;
    } catch {
      throw new Error(
        `curl ${url}: not the app's answer: ${r.stdout}\n${procs.map((p) => p.lines.slice(-8).join('\n')).join('\n---\n')}`,
      );
    }
  }

  before(async () => {
    lab = await NetnsLab.create({ tag: 'tin' });
    state = await makeTestState();
    dir = await mkdtemp(join(tmpdir(), 'meshid-transparent-'));
    await chmod(dir, 0o755);
    await copyFile(state.anchorsFile, join(dir, 'anchors.pem'));
    await chmod(join(dir, 'anchors.pem'), 0o644);
    ca = await startCaProcess([
      ...state.caArgs,
      ...['--workers', '1', '--listen', `${lab.hostIp}:0`],
    ]);
    server = await lab.addPod('server');
    client = await lab.addPod('client');

    // The init container: root, NET_ADMIN and NET_RAW, the injector's arguments.
    const init = await server.run(process.execPath, [
      MESHID_BIN,
      'proxy-init',
      '--proxy-uid',
      '2102',
    ]);
    assert.equal(init.code, 0, init.stderr);
    const app = server.spawn(process.execPath, ['-e', WHO_APP, '8080', '8081'], { uid: 1000 });
    await once(app.stdout!, 'data');
    // An app that does its own TLS, with its own certificate, on 8443.
    const made = await server.run('openssl', [
      ...['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'],
      ...['-subj', '/CN=app.example', '-days', '1'],
      ...['-keyout', join(dir, 'app.key'), '-out', join(dir, 'app.crt')],
    ]);
    assert.equal(made.code, 0, made.stderr);
    const tlsApp = server.spawn('openssl', [
      ...['s_server', '-accept', '8443', '-www', '-quiet'],
      ...['-cert', join(dir, 'app.crt'), '-key', join(dir, 'app.key')],
    ]);
    tlsApp.stderr!.resume();
    await waitFor('the TLS app listening', async () => {
      const r = await server.run('ss', ['-ltn', 'sport = :8443']);
      return r.stdout.includes('8443') ? true : undefined;
    });
    await startPodProxy(
      server,
      'web',
      [
        '--transparent',
        // What the injector renders: one dual-stack socket for both families' redirections.
        '--inbound',
        '[::]:4143',
        '--inbound-port-policy',
        '8081=all-authenticated',
      ],
      2102,
    );
    // A meshed client: an explicit route (no redirection in the client pod) to the server
    // pod's app port, expecting the server's identity.
    await startPodProxy(client, 'voting', [
      '--route',
      `127.0.0.1:15000=${server.ip}:8080@${serverId}`,
      '--route',
      `127.0.0.1:15001=${server.ip}:8081@${serverId}`,
      '--route',
      `127.0.0.1:15002=[${server.ip6}]:8080@${serverId}`,
    ]);
  });

  after(async () => {
    for (const p of procs) await p.stop().catch(() => undefined);
    await ca?.stop();
    await lab?.destroy();
    await state?.cleanup();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it('a plain client dials the app port and the app sees the connection come through the proxy, unauthenticated', async () => {
    const seen = await curl(client, `http://${server.ip}:8080/`);
    assert.equal(seen.port, '8080');
    assert.equal(seen.remote, '127.0.0.1', 'the proxy connected to the app on loopback');
    assert.equal(seen.clientId, null);
  });

  it('removes an l5d-client-id a plaintext client sends', async () => {
    const seen = await curl(client, `http://${server.ip}:8080/`, [`l5d-client-id: ${clientId}`]);
    assert.equal(seen.clientId, null);
  });

  it('an mTLS client (a meshid proxy) reaches the same app port and the app gets its verified identity', async () => {
    const seen = await curl(client, 'http://127.0.0.1:15000/');
    assert.equal(seen.port, '8080');
    assert.equal(seen.clientId, clientId);
  });

  it("passes another TLS (not for the proxy's identity) through to the app unopened", async () => {
    const r = await client.run(
      'openssl',
      ['s_client', '-connect', `${server.ip}:8443`, '-servername', 'app.example', '-brief'],
      { input: 'GET / HTTP/1.0\r\n\r\n' },
    );
    assert.equal(r.code, 0, r.stderr);
    // The app's own certificate, not the proxy's.
    assert.match(r.stderr, /Peer certificate: CN ?= ?app\.example/);
  });

  it('refuses plaintext on a port whose policy is all-authenticated, and lets mTLS in', async () => {
    const r = await client.run('curl', ['-sS', '--max-time', '10', `http://${server.ip}:8081/`]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /Empty reply|Connection reset|Recv failure/);
    const seen = await curl(client, 'http://127.0.0.1:15001/');
    assert.equal(seen.port, '8081');
    assert.equal(seen.clientId, clientId);
    // The refusal is counted with the port and the policy that refused it; the mTLS one too.
    const metrics = (await adminGet({ host: server.ip, port: 4191 }, '/metrics')).body;
    const name = 'meshid_proxy_inbound_transparent_connections_total';
    assert.match(
      metrics,
      new RegExp(
        `^${name}\\{port="8081",kind="plaintext",policy="all-authenticated",tls="false",result="refused"\\} [1-9]`,
        'm',
      ),
    );
    assert.match(
      metrics,
      new RegExp(
        `^${name}\\{port="8081",kind="mtls",policy="all-authenticated",tls="true",result="allowed"\\} [1-9]`,
        'm',
      ),
    );
    assert.match(
      metrics,
      new RegExp(
        `^${name}\\{port="8080",kind="plaintext",policy="all-unauthenticated",tls="false",result="allowed"\\} [1-9]`,
        'm',
      ),
    );
  });

  it("serves IPv6 connections the ip6tables rules redirect: plaintext and mTLS to the app port of the pod's IPv6 address", async () => {
    const plain = await curl(client, `http://[${server.ip6}]:8080/`, []);
    assert.equal(plain.port, '8080');
    assert.equal(plain.remote, '127.0.0.1', 'the proxy connected to the app on loopback');
    assert.equal(plain.clientId, null);
    const meshed = await curl(client, 'http://127.0.0.1:15002/');
    assert.equal(meshed.port, '8080');
    assert.equal(meshed.clientId, clientId);
  });
});
