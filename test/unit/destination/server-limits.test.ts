/**
 * The destination service's listener against one misbehaving peer (issue 20): a peer that opens
 * more connections than its share is refused before its TLS handshake while a proxy elsewhere is
 * served, the total is bounded, and no TLS session is resumed (a caller is verified on every
 * connection). Real mTLS clients from several loopback addresses.
 */
import { strict as assert } from 'node:assert';
import { LISTENER_LIMITS } from '../../../core/index.js';
import { silentLogger } from '../../../core/logger.js';
import type { Address } from '../../../core/index.js';
import { DestinationServer, EndpointIndex } from '../../../destination/index.js';
import { destinationTestClient } from '../../support/destination-grpc.js';
import { service } from '../../support/destination-objects.js';
import { perPeerCapScenario, tryResumption } from '../../support/hostile-clients.js';
import type { TlsClient } from '../../support/hostile-clients.js';
import { NAMING, createWorkloadPki, workloadId } from '../../support/proxy-pki.js';
import type { WorkloadPki } from '../../support/proxy-pki.js';

const DST = workloadId('linkerd', 'linkerd-destination');

describe('destination/server: bounded against one misbehaving peer', function () {
  this.timeout(30_000);
  const limits = { total: 6, perPeer: 2 };
  let pki: WorkloadPki;
  let server: DestinationServer;
  let address: Address;

  before(async () => {
    pki = await createWorkloadPki();
  });
  beforeEach(async () => {
    const index = new EndpointIndex({ naming: NAMING, clusterDomain: 'cluster.local' });
    index.apply(
      'Service',
      'ADDED',
      service('shop', 'web', '10.96.0.10', [{ name: 'http', port: 80 }]),
    );
    for (const kind of ['Service', 'EndpointSlice', 'Pod'] as const) index.markSynced(kind);
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
      connectionLimits: limits,
    });
    address = await server.listen({ host: '127.0.0.1', port: 0 });
  });
  afterEach(() => server.close(100));

  const mtls = (): TlsClient => {
    const me = pki.workload(workloadId('shop', 'client'));
    return {
      ca: pki.anchorsPem,
      servername: DST,
      key: me.keyPem,
      cert: me.certChainPem,
      ALPNProtocols: ['h2'],
    };
  };

  it('refuses a peer its connection beyond its share, and any beyond the total, while a proxy is served', async () => {
    const r = await perPeerCapScenario(address, limits, server.connections, {
      tls: mtls(),
      honest: async () => {
        const me = pki.workload(workloadId('shop', 'web'));
        const c = destinationTestClient(address, {
          serverName: DST,
          anchorsPem: pki.anchorsPem,
          cert: me,
        });
        try {
          const stream = c.getProfile('web.shop.svc.cluster.local:80');
          await stream.until('the profile', (m) => m.length >= 1);
          stream.cancel();
        } finally {
          c.close();
        }
      },
    });
    assert.deepEqual(r, { beyondShare: 'reset', beyondTotal: 'reset', readmitted: true });
    assert.equal(server.connections.refused, 2);
  });

  it('resumes no TLS session: every caller is verified now', async () => {
    assert.deepEqual(await tryResumption(address, mtls()), { offered: true, resumed: false });
  });

  it('has fixed defaults: 64 connections per peer address, 16,384 in all', () => {
    assert.deepEqual(LISTENER_LIMITS.destination, { connections: { total: 16_384, perPeer: 64 } });
  });
});
