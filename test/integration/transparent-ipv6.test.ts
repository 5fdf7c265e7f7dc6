/**
 * Transparent mTLS for IPv6 and dual-stack pods, end to end in network namespaces with real
 * ip6tables (the shared {@link TransparentMesh}, as the IPv4 test in
 * transparent-outbound.test.ts): every pod has an IPv6 and an IPv4 address on its veth, the
 * Kubernetes API test double lists them IPv6 first (`status.podIPs`), and the control plane (the
 * CA, `meshid destination`) and the proxies' admin listen on IPv6 only, so nothing here leans on
 * IPv4 unless a test says so. Each pod runs `meshid proxy-init` as its init container would (both
 * families' rules) and `meshid proxy --transparent` as UID 2102.
 *
 * The client pod's app connects to IPv6 addresses; ip6tables' REDIRECT sends the connection to
 * the proxy's outbound listener on `[::1]:4140`, which reads the original destination
 * (IP6T_SO_ORIGINAL_DST through the addon), asks the destination service for `[addr]:port`
 * (the Destination API's `ip6` TcpAddress in the answer), and meshes to the endpoint's IPv6
 * address, where the server pod's ip6tables rules hand it to the proxy's `[::]:4143`. The
 * Service "web" is dual-stack: an IPv6 and an IPv4 ClusterIP, an EndpointSlice per family. A
 * last pod has IPv6 disabled on its loopback: its proxy serves IPv4 alone and says so.
 */
import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { MESHID_BIN, adminGet } from '../support/ca-process.js';
import { endpointSlice, pod, service } from '../support/destination-objects.js';
import type { KubeObject } from '../support/kube-api-server/index.js';
import type { NetnsPod } from '../support/netns.js';
import { idOf } from '../support/state.js';
import { TransparentMesh, WHO_APP } from '../support/transparent-mesh.js';

/** A TCP app on 9000 that speaks after the client: answers `echo <what it got>`, then closes. */
const ECHO_APP = `
require('node:net').createServer({ allowHalfOpen: true }, (s) => {
  let got = '';
  s.on('data', (d) => (got += d));
  s.on('end', () => s.end('echo ' + got));
}).listen(9000, '0.0.0.0', () => console.log('up'));
`;

/** A raw TCP client: sends argv[3], half-closes, prints the answer (or the error code, exit 3). */
const RAW_CLIENT = `
const c = require('node:net').connect(Number(process.argv[2]), process.argv[1]);
let out = '';
c.on('connect', () => c.end(process.argv[3]));
c.on('data', (d) => (out += d));
c.on('close', () => process.stdout.write(out));
c.on('error', (e) => { console.error(e.code); process.exit(3); });
`;

/** A Service ClusterIP per family (neither is any pod's: only the destination service knows them). */
const CLUSTER_IP6 = 'fd00:96::10';
const CLUSTER_IP4 = '10.96.0.20';

/** ip6tables' nat table without comments and counters. */
async function ip6Nat(p: NetnsPod): Promise<string> {
  const r = await p.run('ip6tables-save', ['-t', 'nat']);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .map((l) => l.replace(/\[\d+:\d+\]/, '[0:0]'))
    .join('\n');
}

const re = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

describe('transparent mTLS for IPv6 and dual-stack pods in network namespaces (ip6tables, [::1]:4140, the destination service over IPv6)', function () {
  this.timeout(180_000);
  let mesh: TransparentMesh;
  let server: NetnsPod;
  let client: NetnsPod;
  let plain: NetnsPod;
  const clientId = idOf('emojivoto', 'voting');

  before(async () => {
    mesh = await TransparentMesh.start({ tag: 'tout6', family: 6 });
    const { lab, api } = mesh;
    server = await lab.addPod('server');
    client = await lab.addPod('client');
    plain = await lab.addPod('plain');
    const ips = (p: NetnsPod): string[] => [p.ip6, p.ip];
    mesh.createPod(pod('emojivoto', 'web-0', ips(server), { meshed: true, sa: 'web' }));
    mesh.createPod(pod('emojivoto', 'voting-0', ips(client), { meshed: true, sa: 'voting' }));
    mesh.createPod(pod('emojivoto', 'legacy-0', ips(plain), { sa: 'legacy' }));
    const ports = [
      { name: 'http', port: 80, targetPort: 8080 },
      { name: 'tcp', port: 9000 },
    ];
    const slicePorts = [
      { name: 'http', port: 8080 },
      { name: 'tcp', port: 9000 },
    ];
    api.create(service('emojivoto', 'web', [CLUSTER_IP6, CLUSTER_IP4], ports) as KubeObject);
    api.create(
      endpointSlice(
        'emojivoto',
        'web-v6',
        'web',
        [{ ip: server.ip6, pod: 'web-0', ready: true }],
        slicePorts,
        'IPv6',
      ) as KubeObject,
    );
    api.create(
      endpointSlice(
        'emojivoto',
        'web-v4',
        'web',
        [{ ip: server.ip, pod: 'web-0', ready: true }],
        slicePorts,
        'IPv4',
      ) as KubeObject,
    );
    // The meshed server's apps listen on IPv4 (its proxy reaches them on 127.0.0.1); the
    // unmeshed one's on both families, as most apps do.
    const apps = [
      server.spawn(process.execPath, ['-e', WHO_APP], { uid: 1000 }),
      server.spawn(process.execPath, ['-e', ECHO_APP], { uid: 1000 }),
      plain.spawn(process.execPath, ['-e', WHO_APP, '::'], { uid: 1000 }),
    ];
    await Promise.all(apps.map((a) => once(a.stdout!, 'data')));
    await mesh.startPodProxy(server, 'web');
    await mesh.startPodProxy(client, 'voting');
  });

  after(async () => {
    await mesh?.stop();
  });

  it("an unmodified curl -6 to the server pod's IPv6 address reaches the app through both proxies, which sees the client's verified identity", async () => {
    const seen = await mesh.curl(client, `http://[${server.ip6}]:8080/`, { args: ['-6'] });
    assert.equal(seen.clientId, clientId, mesh.logs());
    assert.equal(seen.remote, '127.0.0.1', "the server's proxy connected to the app on loopback");
  });

  it("curl to the dual-stack Service's IPv6 ClusterIP and to its IPv4 one: both meshed to the server's identity, counted per destination", async () => {
    const v6 = await mesh.curl(client, `http://[${CLUSTER_IP6}]:80/`);
    assert.equal(v6.clientId, clientId, mesh.logs());
    const v4 = await mesh.curl(client, `http://${CLUSTER_IP4}:80/`);
    assert.equal(v4.clientId, clientId, mesh.logs());
    const metrics = (await adminGet(mesh.admin(client), '/metrics')).body;
    for (const dst of [`[${CLUSTER_IP6}]:80`, `${CLUSTER_IP4}:80`]) {
      const line = metrics
        .split('\n')
        .find(
          (l) =>
            l.startsWith('meshid_proxy_outbound_requests_total{') && l.includes(`dst="${dst}"`),
        );
      assert.ok(line, `no request counted for ${dst}:\n${metrics}`);
      assert.match(line, new RegExp(`server_id="${re(idOf('emojivoto', 'web'))}"`));
      assert.match(line, /tls="true"/);
    }
  });

  it('a raw TCP client (not HTTP) to the IPv6 ClusterIP is carried over mTLS to the app port', async () => {
    const marker = `raw:${randomBytes(6).toString('hex')}`; // not an HTTP method token: opaque at once
    const r = await client.run(process.execPath, ['-e', RAW_CLIENT, CLUSTER_IP6, '9000', marker], {
      uid: 1000,
    });
    assert.equal(r.code, 0, `${r.stderr}\n${mesh.logs()}`);
    assert.equal(r.stdout, `echo ${marker}`);
    const metrics = (await adminGet(mesh.admin(client), '/metrics')).body;
    assert.doesNotMatch(
      metrics,
      new RegExp(
        `meshid_proxy_outbound_plaintext_connections_total\\{dst="${re(`[${CLUSTER_IP6}]:9000`)}"`,
      ),
      'the raw connection was passed through in plaintext',
    );
    // The server's proxy took it on 9000 as mTLS from the client's identity.
    const inbound = (await adminGet(mesh.admin(server), '/metrics')).body;
    assert.match(
      inbound,
      /meshid_proxy_inbound_transparent_connections_total\{port="9000",kind="mtls",policy="all-unauthenticated",tls="true",result="allowed"\} 1/,
      inbound,
    );
  });

  it('an unmeshed IPv6 server pod (no proxy-init, no proxy) still answers, passed through as plain TCP', async () => {
    const seen = await mesh.curl(client, `http://[${plain.ip6}]:8080/`);
    assert.equal(seen.remote, client.ip6, 'the connection came straight from the client pod');
    assert.equal(seen.clientId, null);
    const metrics = (await adminGet(mesh.admin(client), '/metrics')).body;
    assert.match(
      metrics,
      new RegExp(
        `meshid_proxy_outbound_plaintext_connections_total\\{dst="${re(`[${plain.ip6}]:8080`)}",tls="false",reason="unmeshed"\\} 1`,
      ),
      metrics,
    );
  });

  it("a capture on the client pod's link never holds the body sent over IPv6 to a meshed pod, but holds it to an unmeshed one", async () => {
    const meshedMarker = `meshed6-secret-${randomBytes(8).toString('hex')}`;
    const plainMarker = `plain6-secret-${randomBytes(8).toString('hex')}`;
    const { bytes, summary } = await mesh.capture(client, async () => {
      const a = await mesh.curl(client, `http://[${server.ip6}]:8080/`, { body: meshedMarker });
      assert.equal(a.clientId, clientId);
      const b = await mesh.curl(client, `http://[${plain.ip6}]:8080/`, { body: plainMarker });
      assert.equal(b.clientId, null);
    });
    // The meshed request did cross this link over IPv6 (as TLS, to the server pod's 8080)...
    assert.match(
      summary,
      new RegExp(`${re(client.ip6)}\\.\\d+ > ${re(server.ip6)}\\.8080: Flags \\[P\\.\\]`),
    );
    // ...and its body never did in the clear, while the unmeshed one's did.
    assert.equal(bytes.includes(meshedMarker), false, 'the meshed body is in the capture');
    assert.equal(bytes.includes(plainMarker), true, 'the capture missed the plain body');
  });

  it("a pod whose loopback has no IPv6: the proxy's outbound says it is IPv4 only, and IPv4 traffic is still meshed", async () => {
    const v4lo = await mesh.lab.addPod('v4lo');
    // Loopback without ::1 (eth0 keeps its IPv6 address, so the control plane stays reachable).
    const off = await v4lo.run('sh', ['-c', 'echo 1 > /proc/sys/net/ipv6/conf/lo/disable_ipv6']);
    assert.equal(off.code, 0, off.stderr);
    mesh.createPod(pod('emojivoto', 'books-0', [v4lo.ip6, v4lo.ip], { meshed: true, sa: 'books' }));
    const proxy = await mesh.startPodProxy(v4lo, 'books');
    const line = proxy.lines.find((l) => l.includes('no IPv6 on this host; IPv4 only'));
    assert.ok(line, proxy.lines.join('\n'));
    assert.equal((JSON.parse(line) as { err?: string }).err, 'EADDRNOTAVAIL');
    const seen = await mesh.curl(v4lo, `http://${server.ip}:8080/`);
    assert.equal(seen.clientId, idOf('emojivoto', 'books'), mesh.logs());
  });

  it('proxy-init run again in the running pod (a restarted init container) leaves identical ip6tables rules, and traffic still flows', async () => {
    const before = await ip6Nat(client);
    assert.match(before, /^-A OUTPUT -p tcp .*-j MESHID_PROXY_INIT_OUTPUT$/m);
    assert.match(before, /^-A MESHID_PROXY_INIT_OUTPUT -o lo .*-j RETURN$/m);
    assert.match(before, /^-A MESHID_PROXY_INIT_OUTPUT -m owner --uid-owner 2102 .*-j RETURN$/m);
    assert.match(before, /REDIRECT --to-ports 4140$/m);
    const again = await client.run(process.execPath, [
      MESHID_BIN,
      'proxy-init',
      '--proxy-uid',
      '2102',
    ]);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(await ip6Nat(client), before);
    const seen = await mesh.curl(client, `http://[${server.ip6}]:8080/`);
    assert.equal(seen.clientId, clientId);
  });
});
