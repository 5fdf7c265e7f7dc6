import { strict as assert } from 'node:assert';
import type { DestinationUpdate } from '../../../core/index.js';
import { EndpointIndex } from '../../../destination/index.js';
import { UpdateStream, profileOf } from '../../../destination/updates.js';
import { parseTarget } from '../../../destination/target.js';
import type { Resolution } from '../../../destination/endpoint-index.js';
import type { Target } from '../../../destination/target.js';
import { endpointSlice, pod, service } from '../../support/destination-objects.js';

const naming = { trustDomain: 'cluster.local', controlPlaneNamespace: 'linkerd' };
const idOf = (sa: string, ns = 'shop'): string =>
  `${sa}.${ns}.serviceaccount.identity.linkerd.cluster.local`;

function synced(): EndpointIndex {
  const index = new EndpointIndex({ naming, clusterDomain: 'cluster.local' });
  for (const kind of ['Service', 'EndpointSlice', 'Pod'] as const) index.markSynced(kind);
  return index;
}

/** Subscribes and records every answer and the Update messages a Get stream would carry. */
function watch(index: EndpointIndex, target: Target | string) {
  const t = typeof target === 'string' ? parseTarget(target, 'cluster.local') : target;
  const answers: Resolution[] = [];
  const updates: DestinationUpdate[] = [];
  const stream = new UpdateStream();
  const sub = index.subscribe(t, (r) => {
    answers.push(r);
    updates.push(...stream.next(r));
  });
  return { answers, updates, sub, last: () => answers[answers.length - 1]! };
}

/** A web Service 10.96.0.10:80 → targetPort 8080 with three meshed pods. */
function webWithThree(index: EndpointIndex): void {
  index.apply(
    'Service',
    'ADDED',
    service('shop', 'web', '10.96.0.10', [{ name: 'http', port: 80 }]),
  );
  for (const i of [1, 2, 3])
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
      'web-abc',
      'web',
      [1, 2, 3].map((i) => ({ ip: `10.0.0.${i}`, pod: `web-${i}` })),
      [{ name: 'http', port: 8080 }],
    ),
  );
}

describe('destination/endpoint-index: answers from Services, EndpointSlices and Pods', () => {
  it('resolves a ClusterIP:port to the three endpoints on the targetPort, each with identity and an h2 hint', () => {
    const index = synced();
    webWithThree(index);
    const w = watch(index, '10.96.0.10:80');
    assert.equal(w.answers.length, 1);
    const r = w.last();
    assert.equal(r.exists, true);
    assert.equal(r.fullyQualifiedName, 'web.shop.svc.cluster.local');
    assert.deepEqual([...r.endpoints.keys()].sort(), [
      '10.0.0.1:8080',
      '10.0.0.2:8080',
      '10.0.0.3:8080',
    ]);
    for (const ep of r.endpoints.values()) {
      assert.equal(ep.tlsIdentity, idOf('web'));
      assert.deepEqual(ep.protocolHint, { protocol: 'h2' });
      assert.equal(ep.weight, 10_000);
    }
    // The stream opens with the whole set in one add.
    assert.equal(w.updates.length, 1);
    assert.ok('add' in w.updates[0]! && w.updates[0].add.addrs.length === 3);
    assert.deepEqual('add' in w.updates[0]! && w.updates[0].add.metricLabels, {
      namespace: 'shop',
      service: 'web',
    });
  });

  it('answers the same set for the Service name as for its ClusterIP', () => {
    const index = synced();
    webWithThree(index);
    const byName = index.resolve(parseTarget('web.shop.svc.cluster.local:80', 'cluster.local'));
    const byIp = index.resolve(parseTarget('10.96.0.10:80', 'cluster.local'));
    assert.deepEqual([...byName.endpoints.entries()], [...byIp.endpoints.entries()]);
    assert.equal(byName.endpoints.size, 3);
  });

  it('streams a remove when a pod leaves the EndpointSlice, and nothing else', () => {
    const index = synced();
    webWithThree(index);
    const w = watch(index, '10.96.0.10:80');
    index.apply(
      'EndpointSlice',
      'MODIFIED',
      endpointSlice(
        'shop',
        'web-abc',
        'web',
        [1, 3].map((i) => ({ ip: `10.0.0.${i}`, pod: `web-${i}` })),
        [{ name: 'http', port: 8080 }],
      ),
    );
    assert.deepEqual(w.updates.slice(1), [{ remove: { addrs: [{ ip: '10.0.0.2', port: 8080 }] } }]);
    assert.deepEqual([...w.last().endpoints.keys()].sort(), ['10.0.0.1:8080', '10.0.0.3:8080']);
  });

  it('drops an endpoint that turns not ready, and counts one without conditions as ready', () => {
    const index = synced();
    webWithThree(index);
    const w = watch(index, 'web.shop.svc.cluster.local:80');
    index.apply(
      'EndpointSlice',
      'MODIFIED',
      endpointSlice(
        'shop',
        'web-abc',
        'web',
        [
          { ip: '10.0.0.1', pod: 'web-1' },
          { ip: '10.0.0.2', pod: 'web-2', ready: false },
          { ip: '10.0.0.3', pod: 'web-3', ready: true },
        ],
        [{ name: 'http', port: 8080 }],
      ),
    );
    assert.deepEqual([...w.last().endpoints.keys()].sort(), ['10.0.0.1:8080', '10.0.0.3:8080']);
  });

  it('sends no_endpoints{exists: true} when the last endpoint goes, then an add when one comes back', () => {
    const index = synced();
    webWithThree(index);
    const w = watch(index, '10.96.0.10:80');
    index.apply('EndpointSlice', 'DELETED', endpointSlice('shop', 'web-abc', 'web', [], []));
    assert.deepEqual(w.updates[1], { noEndpoints: { exists: true } });
    index.apply(
      'EndpointSlice',
      'ADDED',
      endpointSlice(
        'shop',
        'web-x',
        'web',
        [{ ip: '10.0.0.1', pod: 'web-1' }],
        [{ name: 'http', port: 8080 }],
      ),
    );
    assert.ok('add' in w.updates[2]! && w.updates[2].add.addrs[0]!.addr.ip === '10.0.0.1');
  });

  it('maps each Service port to its own targetPort, by port name across several slices (named targetPorts)', () => {
    const index = synced();
    index.apply(
      'Service',
      'ADDED',
      service('shop', 'api', '10.96.0.20', [
        { name: 'http', port: 80 },
        { name: 'grpc', port: 9090 },
      ]),
    );
    // A named targetPort resolves per pod: two slices with different numbers for "http".
    index.apply(
      'EndpointSlice',
      'ADDED',
      endpointSlice(
        'shop',
        'api-1',
        'api',
        [{ ip: '10.0.1.1' }],
        [
          { name: 'http', port: 8080 },
          { name: 'grpc', port: 50051 },
        ],
      ),
    );
    index.apply(
      'EndpointSlice',
      'ADDED',
      endpointSlice(
        'shop',
        'api-2',
        'api',
        [{ ip: '10.0.1.2' }],
        [
          { name: 'http', port: 8081 },
          { name: 'grpc', port: 50051 },
        ],
      ),
    );
    assert.deepEqual(
      [...index.resolve(parseTarget('10.96.0.20:80', 'cluster.local')).endpoints.keys()].sort(),
      ['10.0.1.1:8080', '10.0.1.2:8081'],
    );
    assert.deepEqual(
      [...index.resolve(parseTarget('10.96.0.20:9090', 'cluster.local')).endpoints.keys()].sort(),
      ['10.0.1.1:50051', '10.0.1.2:50051'],
    );
    // A port the Service does not declare: the Service exists, with no endpoints there.
    const other = index.resolve(parseTarget('10.96.0.20:81', 'cluster.local'));
    assert.equal(other.exists, true);
    assert.equal(other.endpoints.size, 0);
  });

  it('describes an unmeshed pod without identity or hint, and a pod of another control plane as unmeshed', () => {
    const index = synced();
    index.apply(
      'Service',
      'ADDED',
      service('shop', 'db', '10.96.0.30', [{ name: '', port: 5432 }]),
    );
    index.apply('Pod', 'ADDED', pod('shop', 'db-0', '10.0.2.1', { sa: 'db' }));
    index.apply(
      'Pod',
      'ADDED',
      pod('shop', 'db-1', '10.0.2.2', { meshed: true, sa: 'db', controlPlane: 'other' }),
    );
    index.apply(
      'EndpointSlice',
      'ADDED',
      endpointSlice(
        'shop',
        'db-a',
        'db',
        [
          { ip: '10.0.2.1', pod: 'db-0' },
          { ip: '10.0.2.2', pod: 'db-1' },
        ],
        [{ name: '', port: 5432 }],
      ),
    );
    const r = index.resolve(parseTarget('db.shop.svc.cluster.local:5432', 'cluster.local'));
    for (const ep of r.endpoints.values()) {
      assert.equal(ep.tlsIdentity, undefined);
      assert.equal(ep.protocolHint, undefined);
    }
    assert.equal(r.endpoints.get('10.0.2.1:5432')!.metricLabels['pod'], 'db-0');
  });

  it('gives an opaque port an opaque hint with the inbound port, from the pod or the Service annotation', () => {
    const index = synced();
    index.apply(
      'Service',
      'ADDED',
      service('shop', 'db', '10.96.0.30', [{ name: 'pg', port: 5432 }], { opaquePorts: '5432' }),
    );
    index.apply(
      'Service',
      'ADDED',
      service('shop', 'cache', '10.96.0.31', [{ name: 'redis', port: 6379 }]),
    );
    index.apply(
      'Pod',
      'ADDED',
      pod('shop', 'db-0', '10.0.2.1', { meshed: true, sa: 'db', inboundPort: 4143 }),
    );
    index.apply(
      'Pod',
      'ADDED',
      pod('shop', 'cache-0', '10.0.2.5', { meshed: true, sa: 'cache', opaquePorts: '6000-6999' }),
    );
    index.apply(
      'EndpointSlice',
      'ADDED',
      endpointSlice(
        'shop',
        'db-a',
        'db',
        [{ ip: '10.0.2.1', pod: 'db-0' }],
        [{ name: 'pg', port: 5432 }],
      ),
    );
    index.apply(
      'EndpointSlice',
      'ADDED',
      endpointSlice(
        'shop',
        'cache-a',
        'cache',
        [{ ip: '10.0.2.5', pod: 'cache-0' }],
        [{ name: 'redis', port: 6379 }],
      ),
    );
    const db = index.resolve(parseTarget('10.96.0.30:5432', 'cluster.local'));
    assert.deepEqual(db.endpoints.get('10.0.2.1:5432')!.protocolHint, {
      protocol: 'opaque',
      opaqueTransport: { inboundPort: 4143 },
    });
    assert.equal(profileOf(db).opaqueProtocol, true);
    const cache = index.resolve(parseTarget('10.96.0.31:6379', 'cluster.local'));
    assert.deepEqual(cache.endpoints.get('10.0.2.5:6379')!.protocolHint, {
      protocol: 'opaque',
      opaqueTransport: { inboundPort: 4143 },
    });
    // Through the pod address, the pod's own annotation decides.
    assert.equal(index.resolve(parseTarget('10.0.2.5:6379', 'cluster.local')).opaque, true);
    assert.equal(index.resolve(parseTarget('10.0.2.5:7000', 'cluster.local')).opaque, false);
  });

  it('resolves a pod IP:port to that one endpoint, with a profile naming it', () => {
    const index = synced();
    index.apply('Pod', 'ADDED', pod('shop', 'web-1', '10.0.0.1', { meshed: true, sa: 'web' }));
    const r = index.resolve(parseTarget('10.0.0.1:3000', 'cluster.local'));
    assert.deepEqual([...r.endpoints.keys()], ['10.0.0.1:3000']);
    const profile = profileOf(r);
    assert.equal(profile.fullyQualifiedName, '');
    assert.equal(profile.endpoint?.tlsIdentity, idOf('web'));
  });

  it('answers an unknown address, an unknown Service and a name outside the cluster as not existing', () => {
    const index = synced();
    webWithThree(index);
    for (const path of ['192.0.2.1:80', 'nope.shop.svc.cluster.local:80', 'example.com:443']) {
      const w = watch(index, path);
      assert.equal(w.last().exists, false, path);
      assert.deepEqual(w.updates, [{ noEndpoints: { exists: false } }], path);
    }
  });

  it('tells a subscriber nothing before every kind is synced, then the answer', () => {
    const index = new EndpointIndex({ naming, clusterDomain: 'cluster.local' });
    webWithThree(index);
    const w = watch(index, '10.96.0.10:80');
    index.markSynced('Service');
    index.markSynced('EndpointSlice');
    assert.equal(w.answers.length, 0);
    index.markSynced('Pod');
    assert.equal(w.answers.length, 1);
    assert.equal(w.last().endpoints.size, 3);
  });

  it('updates an endpoint when its pod is injected later (same address re-sent as an add)', () => {
    const index = synced();
    index.apply(
      'Service',
      'ADDED',
      service('shop', 'web', '10.96.0.10', [{ name: 'http', port: 80 }]),
    );
    index.apply(
      'EndpointSlice',
      'ADDED',
      endpointSlice(
        'shop',
        'web-a',
        'web',
        [{ ip: '10.0.0.1', pod: 'web-1' }],
        [{ name: 'http', port: 8080 }],
      ),
    );
    const w = watch(index, '10.96.0.10:80');
    assert.equal(w.last().endpoints.get('10.0.0.1:8080')!.tlsIdentity, undefined);
    index.apply('Pod', 'ADDED', pod('shop', 'web-1', '10.0.0.1', { meshed: true, sa: 'web' }));
    assert.equal(w.updates.length, 2);
    const add = w.updates[1]!;
    assert.ok(
      'add' in add && add.add.addrs.length === 1 && add.add.addrs[0]!.tlsIdentity === idOf('web'),
    );
    // A pod change that alters nothing the answer says is not sent.
    index.apply(
      'Pod',
      'MODIFIED',
      pod('shop', 'web-1', '10.0.0.1', { meshed: true, sa: 'web', extraLabel: 'x' }),
    );
    assert.equal(w.updates.length, 2);
  });

  it('follows a ClusterIP that moves to another Service, and a Service deleted (exists: false)', () => {
    const index = synced();
    webWithThree(index);
    const w = watch(index, '10.96.0.10:80');
    index.apply('Service', 'DELETED', service('shop', 'web', '10.96.0.10', []));
    assert.deepEqual(w.updates[1], { noEndpoints: { exists: false } });
    index.apply(
      'Service',
      'ADDED',
      service('shop', 'web2', '10.96.0.10', [{ name: 'http', port: 80 }]),
    );
    index.apply(
      'EndpointSlice',
      'ADDED',
      endpointSlice('shop', 'web2-a', 'web2', [{ ip: '10.0.0.9' }], [{ name: 'http', port: 8080 }]),
    );
    assert.deepEqual([...w.last().endpoints.keys()], ['10.0.0.9:8080']);
    assert.equal(w.last().fullyQualifiedName, 'web2.shop.svc.cluster.local');
  });

  it('answers a dual-stack Service per family: IPv6 ClusterIP → IPv6 slice, name → primary family', () => {
    const index = synced();
    index.apply(
      'Service',
      'ADDED',
      service('shop', 'web', ['fd00:10::a', '10.96.0.10'], [{ name: 'http', port: 80 }], {
        families: ['IPv6', 'IPv4'],
      }),
    );
    index.apply(
      'Pod',
      'ADDED',
      pod('shop', 'web-1', ['10.0.0.1', 'fd00::1'], { meshed: true, sa: 'web' }),
    );
    index.apply(
      'EndpointSlice',
      'ADDED',
      endpointSlice(
        'shop',
        'web-v4',
        'web',
        [{ ip: '10.0.0.1', pod: 'web-1' }],
        [{ name: 'http', port: 8080 }],
      ),
    );
    index.apply(
      'EndpointSlice',
      'ADDED',
      endpointSlice(
        'shop',
        'web-v6',
        'web',
        [{ ip: 'FD00:0::1', pod: 'web-1' }],
        [{ name: 'http', port: 8080 }],
        'IPv6',
      ),
    );
    assert.deepEqual(
      [...index.resolve(parseTarget('[fd00:10::a]:80', 'cluster.local')).endpoints.keys()],
      ['[fd00::1]:8080'],
    );
    assert.deepEqual(
      [...index.resolve(parseTarget('10.96.0.10:80', 'cluster.local')).endpoints.keys()],
      ['10.0.0.1:8080'],
    );
    assert.deepEqual(
      [
        ...index
          .resolve(parseTarget('web.shop.svc.cluster.local:80', 'cluster.local'))
          .endpoints.keys(),
      ],
      ['[fd00::1]:8080'],
    );
    // Either pod IP finds the pod.
    assert.equal(
      index.resolve(parseTarget('[fd00::1]:8080', 'cluster.local')).podEndpoint?.tlsIdentity,
      idOf('web'),
    );
  });

  it('forgets a finished or host-network pod, and an address reused by a new pod is the new pod', () => {
    const index = synced();
    index.apply('Pod', 'ADDED', pod('shop', 'job-1', '10.0.3.1', { meshed: true, sa: 'job' }));
    const w = watch(index, '10.0.3.1:80');
    index.apply(
      'Pod',
      'MODIFIED',
      pod('shop', 'job-1', '10.0.3.1', { meshed: true, sa: 'job', phase: 'Succeeded' }),
    );
    assert.equal(w.last().exists, false);
    index.apply('Pod', 'ADDED', pod('shop', 'web-9', '10.0.3.1', { meshed: true, sa: 'web' }));
    assert.equal(w.last().podEndpoint?.tlsIdentity, idOf('web'));
    index.apply(
      'Pod',
      'ADDED',
      pod('kube-system', 'node-agent', '10.0.3.2', { hostNetwork: true }),
    );
    assert.equal(index.resolve(parseTarget('10.0.3.2:80', 'cluster.local')).exists, false);
  });

  it('replaceAll deletes what a fresh list no longer holds', () => {
    const index = synced();
    webWithThree(index);
    const w = watch(index, '10.96.0.10:80');
    index.replaceAll('EndpointSlice', [
      endpointSlice(
        'shop',
        'web-new',
        'web',
        [{ ip: '10.0.0.3', pod: 'web-3' }],
        [{ name: 'http', port: 8080 }],
      ),
    ]);
    assert.deepEqual([...w.last().endpoints.keys()], ['10.0.0.3:8080']);
    assert.equal(index.stats.slices, 1);
  });

  it('keeps nothing of a closed subscription, and refuses one beyond its bound', () => {
    const index = new EndpointIndex({
      naming,
      clusterDomain: 'cluster.local',
      maxSubscriptions: 2,
    });
    for (const kind of ['Service', 'EndpointSlice', 'Pod'] as const) index.markSynced(kind);
    webWithThree(index);
    const a = watch(index, '10.96.0.10:80');
    const b = watch(index, 'web.shop.svc.cluster.local:80');
    assert.throws(() => watch(index, '10.0.0.1:80'), RangeError);
    a.sub.close();
    b.sub.close();
    assert.equal(index.stats.subscriptions, 0);
    index.apply('EndpointSlice', 'DELETED', endpointSlice('shop', 'web-abc', 'web', [], []));
    assert.equal(a.answers.length, 1);
  });
});

describe('destination/target: reading a GetDestination path', () => {
  it('reads addresses, Service names (with a default port and a trailing dot) and other names', () => {
    assert.deepEqual(parseTarget('10.0.0.1:80', 'cluster.local'), {
      kind: 'address',
      ip: '10.0.0.1',
      port: 80,
    });
    assert.deepEqual(parseTarget('[FD00::1]:443', 'cluster.local'), {
      kind: 'address',
      ip: 'fd00::1',
      port: 443,
    });
    assert.deepEqual(parseTarget('Web.Shop.svc.cluster.local.', 'cluster.local'), {
      kind: 'service',
      service: 'web',
      namespace: 'shop',
      port: 80,
    });
    assert.deepEqual(parseTarget('web.shop.svc.example.org:80', 'example.org').kind, 'service');
    assert.deepEqual(
      parseTarget('web-0.web.shop.svc.cluster.local:80', 'cluster.local').kind,
      'external',
    );
  });

  it('refuses an empty path, a bad port, an IPv6 address without brackets and a host that is no name', () => {
    for (const [path, words] of [
      ['', /empty/],
      ['10.0.0.1:0', /port must be 1-65535/],
      ['10.0.0.1:99999', /port must be 1-65535/],
      ['fd00::1', /brackets/],
      ['[web]:80', /not an IPv6 address/],
      ['a_b.c:80', /neither an IP address nor a DNS name/],
      ['x'.repeat(400), /longer than 300/],
    ] as const) {
      assert.throws(
        () => parseTarget(path, 'cluster.local'),
        (err: Error & { code?: string }) =>
          err.code === 'ERR_REQUEST_INVALID' && words.test(err.message),
        path,
      );
    }
  });
});
