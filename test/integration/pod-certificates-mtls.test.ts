/**
 * A pod with no sidecar gets a meshid certificate for its ServiceAccount through a
 * `podCertificate` volume (the simulated kubelet and the real `meshid ca --pod-certificates`, on
 * the Kubernetes API test double), and an app in it, `openssl s_client` / `openssl s_server`
 * reading the mounted credential bundle, does mTLS with a real `meshid proxy` (certified over
 * Certify by the same CA, with a token from the double's TokenRequest) both ways.
 */
import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { adminGet, startMeshid, waitFor } from '../support/ca-process.js';
import type { CaProcess, MeshidProcess } from '../support/ca-process.js';
import { startKubeletSim } from '../support/kubelet-sim.js';
import { SIGNER, startPodCertCluster } from '../support/podcert-cluster.js';
import type { PodCertCluster } from '../support/podcert-cluster.js';
import { freePort } from '../support/proxy-process.js';
import { CA_IDENTITY } from '../support/state.js';

const APP_ID = 'pcapp.emojivoto.serviceaccount.identity.linkerd.cluster.local';
const WEB_ID = 'web.emojivoto.serviceaccount.identity.linkerd.cluster.local';

function run(
  cmd: string,
  args: readonly string[],
  input: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(input);
  });
}

describe('pod certificates: an app with a podCertificate volume and a meshid proxy, mTLS both ways', function () {
  this.timeout(180_000);
  let cluster: PodCertCluster;
  let ca: CaProcess;
  let proxy: MeshidProcess;
  let app: Server;
  let sServer: ChildProcess | undefined;
  let sServerPort: number;
  let routePort: number;
  let files: { bundle: string; leaf: string; issuer: string; anchors: string };

  before(async () => {
    cluster = await startPodCertCluster({ mode: '1.36' });
    ca = await cluster.startCa();

    // The pod with no sidecar: its kubelet mounts a podCertificate volume.
    const kubelet = startKubeletSim({
      api: cluster.api,
      nodeName: 'node-a',
      version: '1.36',
      dir: join(cluster.dir, 'volumes'),
    });
    const pod = kubelet.createPod('emojivoto', 'pcapp-0', 'pcapp');
    const mounted = await kubelet.mount(pod, { signerName: SIGNER, keyType: 'ECDSAP256' });
    kubelet.close();
    // What the app's start script does with the one file: openssl wants the leaf and its chain apart.
    const bundle = await readFile(mounted.bundlePath, 'utf8');
    const [leaf, ...issuers] = [
      ...bundle.matchAll(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----\n/g),
    ].map((m) => m[0]);
    files = {
      bundle: mounted.bundlePath,
      leaf: join(cluster.dir, 'leaf.pem'),
      issuer: join(cluster.dir, 'issuer.pem'),
      anchors: join(cluster.dir, 'anchors.pem'),
    };
    await writeFile(files.leaf, leaf ?? '');
    await writeFile(files.issuer, issuers.join(''));

    // The meshed side: an HTTP app behind a meshid proxy for emojivoto/web.
    app = createServer((req, res) => {
      res.end(`hello ${String(req.headers['l5d-client-id'])}`);
    });
    app.listen(0, '127.0.0.1');
    await once(app, 'listening');
    const { token } = await cluster.api.mintToken({
      namespace: 'emojivoto',
      serviceAccount: 'web',
      pod: 'web-0',
      audiences: ['identity.l5d.io'],
    });
    const tokenFile = join(cluster.dir, 'web-token');
    await writeFile(tokenFile, token);
    sServerPort = await freePort();
    routePort = await freePort();
    proxy = await startMeshid('proxy', [
      ...['--identity-addr', `127.0.0.1:${ca.address.port}`, '--identity-name', CA_IDENTITY],
      ...['--trust-anchors', files.anchors, '--token-file', tokenFile],
      ...['--local-identity', WEB_ID, '--admin', '127.0.0.1:0'],
      ...['--inbound', '127.0.0.1:0', '--app', `127.0.0.1:${(app.address() as AddressInfo).port}`],
      ...['--route', `127.0.0.1:${routePort}=127.0.0.1:${sServerPort}@${APP_ID}`],
    ]);
    const admin = String(proxy.listening['admin']);
    const [host, port] = [
      admin.slice(0, admin.lastIndexOf(':')),
      Number(admin.slice(admin.lastIndexOf(':') + 1)),
    ];
    await waitFor('the proxy to be ready', async () =>
      (await adminGet({ host, port }, '/ready')).status === 200 ? true : undefined,
    );
  });
  after(async () => {
    sServer?.kill('SIGKILL');
    await proxy?.stop();
    app?.close();
    await cluster?.close();
  });

  it('the app (openssl s_client with the mounted files) reaches the meshed app, which sees its identity', async () => {
    const inbound = String(proxy.listening['inbound']);
    const r = await run(
      'openssl',
      [
        ...['s_client', '-connect', inbound, '-servername', WEB_ID, '-quiet'],
        ...['-CAfile', files.anchors, '-verify_return_error', '-ign_eof', '-tls1_3'],
        ...['-cert', files.leaf, '-cert_chain', files.issuer, '-key', files.bundle],
      ],
      'GET / HTTP/1.1\r\nHost: web\r\nl5d-client-id: spoofed\r\nConnection: close\r\n\r\n',
    );
    assert.match(r.stdout, /^HTTP\/1\.1 200 /, r.stderr);
    assert.match(r.stdout, new RegExp(`hello ${APP_ID.replace(/\./g, '\\.')}$`));
  });

  it('the meshed app reaches the app (openssl s_server with the mounted files, client certificates required) through the proxy', async () => {
    sServer = spawn(
      'openssl',
      [
        ...['s_server', '-accept', `127.0.0.1:${sServerPort}`, '-naccept', '1', '-rev', '-tls1_3'],
        ...['-cert', files.leaf, '-cert_chain', files.issuer, '-key', files.bundle],
        ...['-CAfile', files.anchors, '-Verify', '1', '-verify_return_error'],
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    sServer.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    sServer.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    await waitFor('openssl s_server to listen', () => (out.includes('ACCEPT') ? true : undefined));
    const socket = connect(routePort, '127.0.0.1');
    await once(socket, 'connect');
    socket.write('hello from the mesh\n');
    let echoed = '';
    socket.on('data', (d: Buffer) => (echoed += d.toString()));
    await waitFor('the reversed line', () =>
      echoed.includes('hsem eht morf olleh') ? true : undefined,
    );
    socket.destroy();
    // s_server verified the proxy's client certificate against the anchors (-Verify with
    // -verify_return_error refuses a handshake without one); the proxy verified the app's
    // certificate is APP_ID's (the route's expected identity).
    assert.match(out, /verify depth is 1, must return a certificate/);
  });
});
