/**
 * Transparent outbound, end to end in network namespaces with real iptables: both pods' nat
 * rules written by `meshid proxy-init`, both proxies `meshid proxy --transparent` as UID 2102,
 * a real `meshid destination` (its own mesh certificate, reading the Kubernetes API test
 * double) and a real `meshid ca` on the lab's host address. An unmodified curl in the client
 * pod dials the server pod's IP and app port: the client proxy asks the destination service,
 * sends mTLS to the server's identity, and the server app sees the client's verified identity.
 * A destination the service does not know is passed through as plain TCP, and so is a pod the
 * service knows as unmeshed (no proxy-init, no proxy), which still answers a meshed client. A
 * tcpdump on the client pod's eth0 shows the request body in the clear to the unmeshed pod and
 * never to the meshed one. A pod whose spec names one ServiceAccount but whose port presents
 * another's mesh-valid certificate (`openssl s_server` with a leaf the mesh's issuer signed) is
 * refused before any request byte.
 *
 * A Service "emoji" has a ClusterIP and three meshed endpoint pods serving gRPC: an unmodified
 * grpc-js client (plaintext h2c to the ClusterIP) reaches all three with mTLS, and a pod removed
 * from the EndpointSlice gets no request from a second after the update on. Nothing stands in
 * for kube-proxy: the client pod's default route (via the host address) takes the connect to
 * the ClusterIP past routing to its nat OUTPUT chain, which redirects it to the outbound proxy;
 * the proxy learns the endpoints of the ClusterIP from the destination service. Nothing here
 * reaches a ClusterIP with the mesh off, which would need kube-proxy's DNAT.
 */
import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { adminGet, waitFor } from '../support/ca-process.js';
import { endpointSlice, pod, service } from '../support/destination-objects.js';
import { mintLeaf } from '../support/outbound-pki.js';
import type { KubeApiServer, KubeObject } from '../support/kube-api-server/index.js';
import type { NetnsLab, NetnsPod } from '../support/netns.js';
import { idOf } from '../support/state.js';
import type { TestState } from '../support/state.js';
import { TransparentMesh, WHO_APP } from '../support/transparent-mesh.js';
import type { Seen } from '../support/transparent-mesh.js';

/**
 * A gRPC server (grpc-js, generic bytes codec) on 8090 whose one method answers the pod's name
 * and the l5d-client-id its proxy added.
 */
const GRPC_APP = `
const grpc = require('@grpc/grpc-js');
const id = (x) => x;
const server = new grpc.Server();
server.addService(
  { Who: { path: '/test.Who/Who', requestStream: false, responseStream: false,
    requestSerialize: id, requestDeserialize: id, responseSerialize: id, responseDeserialize: id } },
  { Who: (call, cb) => cb(null, Buffer.from(process.env.POD_NAME + ' ' + call.metadata.get('l5d-client-id'))) },
);
server.bindAsync('0.0.0.0:8090', grpc.ServerCredentials.createInsecure(), (err) => {
  if (err) throw err;
  console.log('up');
});
`;

/**
 * An unmodified grpc-js client: one channel, plaintext h2c to argv[1]. Makes unary calls until it
 * has seen argv[2] distinct answers or made argv[3] calls; with argv[4] (epoch ms) it first calls
 * until that time and keeps only the answers after it. Prints the answers as JSON.
 */
const GRPC_CLIENT = `
const grpc = require('@grpc/grpc-js');
const id = (x) => x;
const Who = grpc.makeGenericClientConstructor({ Who: { path: '/test.Who/Who', requestStream: false,
  responseStream: false, requestSerialize: id, requestDeserialize: id, responseSerialize: id, responseDeserialize: id } });
const c = new Who(process.argv[1], grpc.credentials.createInsecure());
const call = () => new Promise((res, rej) =>
  c.Who(Buffer.alloc(0), { deadline: Date.now() + 10000 }, (e, r) => (e ? rej(e) : res(r.toString()))));
(async () => {
  const after = Number(process.argv[4] ?? 0);
  while (Date.now() <= after) await call();
  const seen = [];
  while (new Set(seen).size < Number(process.argv[2]) && seen.length < Number(process.argv[3])) seen.push(await call());
  console.log(JSON.stringify(seen));
  c.close();
})().catch((e) => { console.error(e.message); process.exit(1); });
`;

describe('transparent outbound in network namespaces (proxy-init, meshid destination, mTLS to the identity)', function () {
  this.timeout(180_000);
  let mesh: TransparentMesh;
  let lab: NetnsLab;
  let state: TestState;
  let api: KubeApiServer;
  let server: NetnsPod;
  let client: NetnsPod;
  let plain: NetnsPod;
  let impostor: NetnsPod;
  const emoji: NetnsPod[] = [];
  const CLUSTER_IP = '10.96.0.10';
  let outside: Server;
  let impostorTls: { out: () => string };
  let dir: string;
  const clientId = idOf('emojivoto', 'voting');
  const logs = (): string => mesh.logs();
  const curl = (url: string, body?: string): Promise<Seen> =>
    mesh.curl(client, url, body === undefined ? {} : { body });

  /**
   * In the impostor pod (no proxy-init): `openssl s_server` on the app port presenting a
   * certificate the mesh's issuer really signed, for "web", whatever name the client asks for,
   * and asking for the client's certificate as a proxy would. Resolves once it accepts.
   */
  async function startImpostor(): Promise<{ out: () => string }> {
    const cert = mintLeaf(state.issuer, idOf('emojivoto', 'web'));
    const [leaf = '', ...chain] =
      cert.certChainPem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----\n?/g) ??
      [];
    await writeFile(join(dir, 'impostor.crt'), leaf);
    await writeFile(join(dir, 'impostor-chain.crt'), chain.join(''));
    await writeFile(join(dir, 'impostor.key'), cert.keyPem, { mode: 0o600 });
    const s = impostor.spawn(
      'openssl',
      [
        ...['s_server', '-accept', '8080', '-cert', join(dir, 'impostor.crt')],
        ...['-cert_chain', join(dir, 'impostor-chain.crt'), '-key', join(dir, 'impostor.key')],
        ...['-verify', '1', '-CAfile', join(dir, 'anchors.pem')],
      ],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    let out = '';
    s.stdout!.on('data', (d: Buffer) => (out += d.toString('latin1')));
    s.stderr!.on('data', (d: Buffer) => (out += d.toString('latin1')));
    await waitFor('the impostor listening', () => (out.includes('ACCEPT') ? true : undefined));
    return { out: () => out };
  }

  before(async () => {
    mesh = await TransparentMesh.start({ tag: 'tout', family: 4 });
    ({ lab, state, api, dir } = mesh);
    server = await lab.addPod('server');
    client = await lab.addPod('client');
    plain = await lab.addPod('plain');
    impostor = await lab.addPod('impostor');
    for (let i = 0; i < 3; i++) emoji.push(await lab.addPod(`emoji${i}`));

    mesh.createPod(pod('emojivoto', 'web-0', server.ip, { meshed: true, sa: 'web' }));
    mesh.createPod(pod('emojivoto', 'voting-0', client.ip, { meshed: true, sa: 'voting' }));
    mesh.createPod(pod('emojivoto', 'legacy-0', plain.ip, { sa: 'legacy' }));
    // Its spec names ServiceAccount "billing"; what answers on its port presents "web"'s certificate.
    mesh.createPod(pod('emojivoto', 'billing-0', impostor.ip, { meshed: true, sa: 'billing' }));
    emoji.forEach((p, i) =>
      mesh.createPod(pod('emojivoto', `emoji-${i}`, p.ip, { meshed: true, sa: 'emoji' })),
    );
    api.create(
      service('emojivoto', 'emoji', CLUSTER_IP, [{ name: 'grpc', port: 8090 }]) as KubeObject,
    );
    api.create(
      endpointSlice(
        'emojivoto',
        'emoji-abc',
        'emoji',
        emoji.map((p, i) => ({ ip: p.ip, pod: `emoji-${i}`, ready: true })),
        [{ name: 'grpc', port: 8090 }],
      ) as KubeObject,
    );

    const app = server.spawn(process.execPath, ['-e', WHO_APP], { uid: 1000 });
    const plainApp = plain.spawn(process.execPath, ['-e', WHO_APP], { uid: 1000 });
    await Promise.all([once(app.stdout!, 'data'), once(plainApp.stdout!, 'data')]);
    // Something outside the mesh, on the host: the destination service knows nothing of it.
    outside = createServer((req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ remote: req.socket.remoteAddress, clientId: null }));
    });
    outside.listen(0, lab.hostIp);
    await once(outside, 'listening');

    await mesh.startPodProxy(server, 'web');
    await mesh.startPodProxy(client, 'voting');
    impostorTls = await startImpostor();
    for (const [i, p] of emoji.entries()) {
      const a = p.spawn(process.execPath, ['-e', GRPC_APP], {
        uid: 1000,
        env: { ...process.env, POD_NAME: `emoji-${i}` },
      });
      await once(a.stdout!, 'data');
    }
    await Promise.all(emoji.map((p) => mesh.startPodProxy(p, 'emoji')));
  });

  after(async () => {
    outside?.close();
    await mesh?.stop();
  });

  it("an unmodified curl to the server pod's IP:port reaches the app through both proxies, which sees the client's verified identity", async () => {
    const seen = await curl(`http://${server.ip}:8080/`);
    assert.equal(seen.clientId, clientId, logs());
    assert.equal(seen.remote, '127.0.0.1', "the server's proxy connected to the app on loopback");
  });

  it('passes a destination the destination service does not know through as plain TCP', async () => {
    const { port } = outside.address() as AddressInfo;
    const seen = await curl(`http://${lab.hostIp}:${port}/`);
    // The client pod's own address: the connection left as plain TCP, not through a server proxy.
    assert.equal(seen.remote, client.ip);
  });

  it("counts the meshed request with the server's identity and the passed-through connection, in the client proxy's metrics", async () => {
    const { port } = outside.address() as AddressInfo;
    const metrics = (await adminGet(mesh.admin(client), '/metrics')).body;
    const meshed = metrics
      .split('\n')
      .find(
        (l) =>
          l.startsWith('meshid_proxy_outbound_requests_total{') &&
          l.includes(`dst="${server.ip}:8080"`),
      );
    assert.ok(meshed, metrics);
    assert.match(
      meshed,
      new RegExp(`server_id="${idOf('emojivoto', 'web').replace(/\./g, '\\.')}"`),
    );
    assert.match(meshed, /tls="true"/);
    assert.match(meshed, /classification="success"/);
    assert.match(
      metrics,
      new RegExp(
        `meshid_proxy_outbound_plaintext_connections_total\\{dst="${lab.hostIp.replace(/\./g, '\\.')}:${port}",tls="false",reason="unknown"\\} 1`,
      ),
      metrics,
    );
  });

  it('an unmeshed server pod (no proxy-init, no proxy) still answers a meshed client, as plain TCP', async () => {
    const seen = await curl(`http://${plain.ip}:8080/`);
    assert.equal(seen.remote, client.ip, 'the connection came straight from the client pod');
    assert.equal(seen.clientId, null);
  });

  it("a capture on the client pod's link never holds the request body sent to a meshed pod, but holds it to an unmeshed one", async () => {
    const meshedMarker = `meshed-secret-${randomBytes(8).toString('hex')}`;
    const plainMarker = `plain-secret-${randomBytes(8).toString('hex')}`;
    const { bytes, summary } = await mesh.capture(client, async () => {
      assert.equal((await curl(`http://${server.ip}:8080/`, meshedMarker)).clientId, clientId);
      assert.equal((await curl(`http://${plain.ip}:8080/`, plainMarker)).clientId, null);
    });
    // The meshed request did cross this link (as TLS, to the server pod's port 8080)...
    assert.match(
      summary,
      new RegExp(
        `${client.ip.replace(/\./g, '\\.')}\\.\\d+ > ${server.ip.replace(/\./g, '\\.')}\\.8080: Flags \\[P\\.\\]`,
      ),
    );
    // ...and its body never did in the clear, while the unmeshed one's did.
    assert.equal(bytes.includes(meshedMarker), false, 'the meshed body is in the capture');
    assert.equal(bytes.includes(plainMarker), true, 'the capture missed the plain body');
  });

  it('refuses an endpoint presenting another identity than the destination service names for it', async () => {
    const r = await client.run(
      'curl',
      ['-sS', '--max-time', '10', '-w', '\n%{http_code}', `http://${impostor.ip}:8080/`],
      { uid: 1000 },
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(
      r.stdout,
      `server identity "${idOf('emojivoto', 'web')}" is not the expected identity "${idOf('emojivoto', 'billing')}"\n\n502`,
      logs(),
    );
    // The handshake was cut before any request byte: the impostor never saw the request.
    assert.match(impostorTls.out(), /ACCEPT/);
    assert.doesNotMatch(impostorTls.out(), /GET \//);
  });

  /** The answers of {@link GRPC_CLIENT} run in the client pod as the app would (UID 1000). */
  async function grpcCalls(args: readonly string[]): Promise<string[]> {
    const r = await client.run(
      process.execPath,
      ['-e', GRPC_CLIENT, `${CLUSTER_IP}:8090`, ...args],
      {
        uid: 1000,
      },
    );
    assert.equal(r.code, 0, `grpc client: ${r.stderr}\n${logs()}`);
    return JSON.parse(r.stdout) as string[];
  }

  it('gRPC calls from an unmodified grpc-js client to a ClusterIP reach all three meshed endpoints, with mTLS', async () => {
    // Stops once all three answered (the balancer favours the fastest, so not evenly).
    const seen = await grpcCalls(['3', '300']);
    assert.deepEqual(
      [...new Set(seen)].sort(),
      ['emoji-0', 'emoji-1', 'emoji-2'].map((p) => `${p} ${clientId}`),
    );
  });

  it('sends no new request to a pod removed from its EndpointSlice within a second of the update', async () => {
    const kept = endpointSlice(
      'emojivoto',
      'emoji-abc',
      'emoji',
      emoji.slice(0, 2).map((p, i) => ({ ip: p.ip, pod: `emoji-${i}`, ready: true })),
      [{ name: 'grpc', port: 8090 }],
    ) as KubeObject;
    api.apply(kept);
    // Calls keep flowing through the second after the update; the 100 after it are counted.
    const seen = await grpcCalls(['3', '100', String(Date.now() + 1000)]);
    assert.equal(seen.length, 100);
    assert.deepEqual(
      seen.filter((s) => s !== `emoji-0 ${clientId}` && s !== `emoji-1 ${clientId}`),
      [],
    );
  });
});
