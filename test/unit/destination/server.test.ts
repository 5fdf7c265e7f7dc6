import { strict as assert } from 'node:assert';
import { connect as http2Connect } from 'node:http2';
import { Registry } from '../../../core/index.js';
import { silentLogger } from '../../../core/logger.js';
import type { Address, DestinationUpdate } from '../../../core/index.js';
import { DestinationServer, EndpointIndex } from '../../../destination/index.js';
import { destinationTestClient } from '../../support/destination-grpc.js';
import { endpointSlice, pod, service } from '../../support/destination-objects.js';
import { NAMING, createWorkloadPki, workloadId } from '../../support/proxy-pki.js';
import type { WorkloadPki } from '../../support/proxy-pki.js';

const DST = workloadId('linkerd', 'linkerd-destination');

describe('destination/server: Get and GetProfile over gRPC on mutual TLS', function () {
  this.timeout(20_000);
  let pki: WorkloadPki;
  let other: WorkloadPki;
  let index: EndpointIndex;
  let server: DestinationServer;
  let address: Address;
  let registry: Registry;
  const clients: { close(): void }[] = [];

  before(async () => {
    [pki, other] = await Promise.all([createWorkloadPki(), createWorkloadPki('other-root')]);
  });
  beforeEach(async () => {
    index = new EndpointIndex({ naming: NAMING, clusterDomain: 'cluster.local' });
    index.apply(
      'Service',
      'ADDED',
      service('shop', 'web', '10.96.0.10', [{ name: 'http', port: 80 }]),
    );
    for (const i of [1, 2])
      index.apply(
        'Pod',
        'ADDED',
        pod('shop', `web-${i}`, `10.0.0.${i}`, { meshed: true, sa: 'web' }),
      );
    index.apply(
      'EndpointSlice',
      'ADDED',
      endpointSlice(
        'shop',
        'web-a',
        'web',
        [1, 2].map((i) => ({ ip: `10.0.0.${i}`, pod: `web-${i}` })),
        [{ name: 'http', port: 8080 }],
      ),
    );
    for (const kind of ['Service', 'EndpointSlice', 'Pod'] as const) index.markSynced(kind);
    registry = new Registry();
    const leaf = pki.workload(DST);
    server = new DestinationServer({
      index,
      clusterDomain: 'cluster.local',
      logger: silentLogger(),
      credentials: {
        keyPem: leaf.keyPem,
        certChainPem: leaf.certChainPem,
        anchorsPem: pki.anchorsPem,
      },
      registry,
    });
    address = await server.listen({ host: '127.0.0.1', port: 0 });
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    await server.close(100);
  });

  const client = (cert = pki.workload(workloadId('shop', 'client'))) => {
    const c = destinationTestClient(address, { serverName: DST, anchorsPem: pki.anchorsPem, cert });
    clients.push(c);
    return c;
  };

  it('streams the endpoints of a ClusterIP:port, then the change when a pod leaves the slice', async () => {
    const stream = client().get('10.96.0.10:80');
    await stream.until('the first add', (m) => m.length >= 1);
    const first = stream.messages[0]!;
    assert.ok('add' in first);
    assert.deepEqual(first.add.addrs.map((a) => `${a.addr.ip}:${a.addr.port}`).sort(), [
      '10.0.0.1:8080',
      '10.0.0.2:8080',
    ]);
    assert.equal(first.add.addrs[0]!.tlsIdentity, workloadId('shop', 'web'));
    index.apply(
      'EndpointSlice',
      'MODIFIED',
      endpointSlice(
        'shop',
        'web-a',
        'web',
        [{ ip: '10.0.0.1', pod: 'web-1' }],
        [{ name: 'http', port: 8080 }],
      ),
    );
    await stream.until('the remove', (m) => m.length >= 2);
    assert.deepEqual(stream.messages[1], {
      remove: { addrs: [{ ip: '10.0.0.2', port: 8080 }] },
    } satisfies DestinationUpdate);
    assert.match(await registry.metrics(), /destination_streams\{method="Get"\} 1/);
  });

  it('answers GetProfile with the Service name, and no_endpoints{exists: false} for an unknown address', async () => {
    const c = client();
    const profile = c.getProfile('10.96.0.10:80');
    await profile.until('a profile', (m) => m.length >= 1);
    assert.equal(profile.messages[0]!.fullyQualifiedName, 'web.shop.svc.cluster.local');
    const unknown = c.get('192.0.2.7:443');
    await unknown.until('no_endpoints', (m) => m.length >= 1);
    assert.deepEqual(unknown.messages, [{ noEndpoints: { exists: false } }]);
  });

  it('refuses a malformed target with INVALID_ARGUMENT naming what is wrong', async () => {
    const status = await client().get('fd00::1').ended;
    assert.equal(status.code, 3);
    assert.match(status.details, /IPv6 address must be in brackets/);
  });

  it('refuses a caller without a client certificate, and one whose certificate another root signed', async () => {
    for (const cert of [undefined, other.workload(workloadId('shop', 'client'))]) {
      const c = destinationTestClient(address, {
        serverName: DST,
        anchorsPem: pki.anchorsPem,
        ...(cert === undefined ? {} : { cert }),
      });
      clients.push(c);
      const status = await c.get('10.96.0.10:80').ended;
      assert.equal(status.code, 14, `expected UNAVAILABLE, got ${status.code} ${status.details}`);
    }
    assert.equal(server.openStreams, 0);
  });

  it('answers UNIMPLEMENTED for another method, and accepts a client that offers no ALPN (a Linkerd proxy)', async () => {
    const cert = pki.workload(workloadId('shop', 'client'));
    const session = http2Connect(`https://127.0.0.1:${address.port}`, {
      ca: pki.anchorsPem,
      key: cert.keyPem,
      cert: cert.certChainPem,
      servername: DST,
      ALPNProtocols: [],
    });
    try {
      const headers = await new Promise<Record<string, unknown>>((resolve, reject) => {
        const s = session.request({
          ':method': 'POST',
          ':path': '/io.linkerd.proxy.destination.Destination/Nope',
          'content-type': 'application/grpc',
          te: 'trailers',
        });
        s.on('response', resolve);
        s.on('error', reject);
        s.end();
      });
      assert.equal(headers['grpc-status'], '12');
    } finally {
      session.close();
    }
  });

  it('ends open streams with UNAVAILABLE when it shuts down, and forgets their subscriptions', async () => {
    const stream = client().get('10.96.0.10:80');
    await stream.until('the first add', (m) => m.length >= 1);
    assert.equal(index.stats.subscriptions, 1);
    await server.close(100);
    const status = await stream.ended;
    assert.equal(status.code, 14);
    assert.match(status.details, /shutting down/);
    assert.equal(index.stats.subscriptions, 0);
    server = new DestinationServer({
      index,
      clusterDomain: 'cluster.local',
      logger: silentLogger(),
      credentials: { ...pki.workload(DST), anchorsPem: pki.anchorsPem },
    });
  });

  it('closes the subscription when the caller cancels', async () => {
    const stream = client().get('web.shop.svc.cluster.local:80');
    await stream.until('the first add', (m) => m.length >= 1);
    stream.cancel();
    await stream.ended;
    const deadline = Date.now() + 5000;
    while (index.stats.subscriptions !== 0 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 20));
    assert.equal(index.stats.subscriptions, 0);
  });
});
