import { strict as assert } from 'node:assert';
import { Registry, createLogger } from '../../../core/index.js';
import type { Address } from '../../../core/index.js';
import { DestinationServer, EndpointIndex } from '../../../destination/index.js';
import { DestinationClient } from '../../../proxy/index.js';
import type { EndpointSet, EndpointWatch } from '../../../proxy/destination-client.js';
import { endpointSlice, pod, service } from '../../support/destination-objects.js';
import { NAMING, createWorkloadPki, workloadId } from '../../support/proxy-pki.js';
import type { WorkloadPki } from '../../support/proxy-pki.js';

const DST = workloadId('linkerd', 'linkerd-destination');

/** Resolves when `watch` has an answer for which `pred` holds. */
function until(
  watch: EndpointWatch,
  what: string,
  pred: (s: EndpointSet) => boolean,
  ms = 10_000,
): Promise<EndpointSet> {
  return new Promise((resolve, reject) => {
    const now = watch.current();
    if (now !== undefined && pred(now)) return resolve(now);
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`timed out waiting for ${what}; have ${JSON.stringify(watch.current())}`));
    }, ms);
    const stop = watch.onChange((s) => {
      if (!pred(s)) return;
      clearTimeout(timer);
      stop();
      resolve(s);
    });
  });
}

const keys = (s: EndpointSet | undefined): string[] =>
  s?.kind === 'endpoints' ? [...s.endpoints.keys()].sort() : [];

describe('proxy/destination-client: resolving through the destination service', function () {
  this.timeout(30_000);
  let pki: WorkloadPki;
  let index: EndpointIndex;
  let server: DestinationServer | undefined;
  let address: Address;
  let client: DestinationClient;
  let registry: Registry;
  let logs: { level: number; msg: string }[];

  const startServer = async (port = 0, identity = DST): Promise<void> => {
    const leaf = pki.workload(identity);
    server = new DestinationServer({
      index,
      clusterDomain: 'cluster.local',
      logger: createLogger({ level: 'silent' }),
      credentials: {
        keyPem: leaf.keyPem,
        certChainPem: leaf.certChainPem,
        anchorsPem: pki.anchorsPem,
      },
    });
    address = await server.listen({ host: '127.0.0.1', port });
  };

  before(async () => {
    pki = await createWorkloadPki();
  });
  beforeEach(async () => {
    index = new EndpointIndex({ naming: NAMING, clusterDomain: 'cluster.local' });
    index.apply(
      'Service',
      'ADDED',
      service('shop', 'web', '10.96.0.10', [{ name: 'http', port: 80 }]),
    );
    index.apply(
      'Service',
      'ADDED',
      service('shop', 'db', '10.96.0.30', [{ name: 'pg', port: 5432 }], { opaquePorts: '5432' }),
    );
    for (const i of [1, 2, 3])
      index.apply(
        'Pod',
        'ADDED',
        pod('shop', `web-${i}`, `10.0.0.${i}`, { meshed: true, sa: 'web' }),
      );
    index.apply('Pod', 'ADDED', pod('shop', 'db-0', '10.0.2.1', { meshed: true, sa: 'db' }));
    index.apply(
      'EndpointSlice',
      'ADDED',
      endpointSlice(
        'shop',
        'web-a',
        'web',
        [1, 2, 3].map((i) => ({ ip: `10.0.0.${i}`, pod: `web-${i}` })),
        [{ name: 'http', port: 8080 }],
      ),
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
    for (const kind of ['Service', 'EndpointSlice', 'Pod'] as const) index.markSynced(kind);
    await startServer();
    registry = new Registry();
    logs = [];
    const me = pki.workload(workloadId('shop', 'client'));
    client = new DestinationClient({
      address,
      serverName: DST,
      anchorsPem: () => pki.anchorsPem,
      certificate: () => me,
      logger: createLogger({
        level: 'info',
        destination: {
          write: (line: string) =>
            void logs.push(JSON.parse(line) as { level: number; msg: string }),
        },
      }),
      registry,
      backoffMs: { min: 50, max: 200 },
      idleMs: 50,
    });
  });
  afterEach(async () => {
    client.close();
    await server?.close(100);
    server = undefined;
  });

  it('resolves a ClusterIP:port to its endpoints with identity and hints, and follows a removal', async () => {
    const watch = client.resolve({ ip: '10.96.0.10', port: 80 });
    const set = await watch.answer(5000);
    assert.equal(set.kind, 'endpoints');
    assert.deepEqual(keys(set), ['10.0.0.1:8080', '10.0.0.2:8080', '10.0.0.3:8080']);
    const ep = set.kind === 'endpoints' ? set.endpoints.get('10.0.0.1:8080')! : undefined;
    assert.deepEqual(ep, {
      ip: '10.0.0.1',
      port: 8080,
      weight: 10_000,
      identity: workloadId('shop', 'web'),
      protocol: 'h2',
      labels: { namespace: 'shop', service: 'web', pod: 'web-1', serviceaccount: 'web' },
    });
    index.apply(
      'EndpointSlice',
      'MODIFIED',
      endpointSlice(
        'shop',
        'web-a',
        'web',
        [1, 3].map((i) => ({ ip: `10.0.0.${i}`, pod: `web-${i}` })),
        [{ name: 'http', port: 8080 }],
      ),
    );
    await until(watch, 'web-2 gone', (s) => keys(s).length === 2);
    assert.deepEqual(keys(watch.current()), ['10.0.0.1:8080', '10.0.0.3:8080']);
    watch.close();
  });

  it('gives an opaque endpoint its transport port, an unknown address pass-through, a Service name the same set as its IP', async () => {
    const db = await client.resolve({ ip: '10.96.0.30', port: 5432 }).answer(5000);
    assert.ok(db.kind === 'endpoints');
    assert.equal(db.endpoints.get('10.0.2.1:5432')!.protocol, 'opaque');
    assert.equal(db.endpoints.get('10.0.2.1:5432')!.opaqueTransportPort, 4143);
    assert.deepEqual(await client.resolve({ ip: '192.0.2.1', port: 80 }).answer(5000), {
      kind: 'pass-through',
      reason: 'unknown',
    });
    assert.deepEqual(
      keys(await client.resolve({ name: 'web.shop.svc.cluster.local', port: 80 }).answer(5000)),
      ['10.0.0.1:8080', '10.0.0.2:8080', '10.0.0.3:8080'],
    );
    assert.deepEqual(await client.resolve({ name: 'bad_name', port: 80 }).answer(5000), {
      kind: 'pass-through',
      reason: 'invalid',
    });
  });

  it('resolves an IPv6 ClusterIP of a dual-stack Service to its IPv6 endpoints, and an IPv6 pod address to its pod (ip6 on the wire)', async () => {
    index.apply(
      'Service',
      'ADDED',
      service('shop', 'api', ['fd00:96::20', '10.96.0.20'], [{ name: 'http', port: 80 }]),
    );
    index.apply(
      'Pod',
      'ADDED',
      pod('shop', 'api-1', ['fd00::3:1', '10.0.3.1'], { meshed: true, sa: 'api' }),
    );
    for (const [name, ip, family] of [
      ['api-v6', 'fd00::3:1', 'IPv6'],
      ['api-v4', '10.0.3.1', 'IPv4'],
    ] as const)
      index.apply(
        'EndpointSlice',
        'ADDED',
        endpointSlice(
          'shop',
          name,
          'api',
          [{ ip, pod: 'api-1' }],
          [{ name: 'http', port: 8080 }],
          family,
        ),
      );
    const v6 = await client.resolve({ ip: 'fd00:96::20', port: 80 }).answer(5000);
    assert.deepEqual(keys(v6), ['[fd00::3:1]:8080']);
    const ep = v6.kind === 'endpoints' ? v6.endpoints.get('[fd00::3:1]:8080') : undefined;
    assert.equal(ep?.ip, 'fd00::3:1');
    assert.equal(ep?.identity, workloadId('shop', 'api'));
    assert.deepEqual(keys(await client.resolve({ ip: '10.96.0.20', port: 80 }).answer(5000)), [
      '10.0.3.1:8080',
    ]);
    const byPod = await client.resolve({ ip: 'fd00::3:1', port: 8080 }).answer(5000);
    assert.deepEqual(keys(byPod), ['[fd00::3:1]:8080']);
  });

  it('shares one stream between watches of one target', async () => {
    const a = client.resolve({ ip: '10.96.0.10', port: 80 });
    const b = client.resolve({ ip: '10.96.0.10', port: 80 });
    await Promise.all([a.answer(5000), b.answer(5000)]);
    assert.equal(index.stats.subscriptions, 1);
    assert.equal(client.targets, 1);
  });

  it('survives an outage: keeps its last answers (stale), passes unknown targets through at once, logs once, and recovers', async () => {
    const web = client.resolve({ ip: '10.96.0.10', port: 80 });
    await web.answer(5000);
    const port = address.port;
    await server!.close(100);
    server = undefined;
    const stale = await until(
      web,
      'the answer marked stale',
      (s) => s.kind === 'endpoints' && s.stale,
    );
    assert.deepEqual(keys(stale), ['10.0.0.1:8080', '10.0.0.2:8080', '10.0.0.3:8080']);
    assert.equal(client.available, false);
    // A target never asked before: answered at once, not after the answer timeout.
    const started = performance.now();
    assert.deepEqual(await client.resolve({ ip: '10.96.0.10', port: 81 }).answer(60_000), {
      kind: 'pass-through',
      reason: 'unavailable',
    });
    assert.ok(performance.now() - started < 1000);
    // Retries fail meanwhile (every 50-200 ms): the warning below is still one.
    for (;;) {
      const m = /destination_client_reconnects_total (\d+)/.exec(await registry.metrics());
      if (Number(m?.[1] ?? 0) >= 3) break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const text = await registry.metrics();
    assert.match(text, /destination_client_outages_total 1/);
    assert.match(text, /destination_client_pass_through_total\{reason="unavailable"\} 1/);
    // The service comes back on the same address with a change made meanwhile.
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
    await startServer(port);
    const fresh = await until(web, 'a fresh answer', (s) => s.kind === 'endpoints' && !s.stale);
    assert.deepEqual(keys(fresh), ['10.0.0.1:8080']);
    assert.equal(client.available, true);
    const warnings = logs.filter((l) => /unreachable/.test(l.msg));
    assert.equal(warnings.length, 1, JSON.stringify(logs));
    assert.equal(logs.filter((l) => /reachable again/.test(l.msg)).length, 1);
    assert.match(await registry.metrics(), /destination_client_available 1/);
  });

  it('refuses a destination service presenting another identity, and passes through meanwhile', async () => {
    await server!.close(100);
    await startServer(0, workloadId('shop', 'impostor'));
    const me = pki.workload(workloadId('shop', 'client'));
    const c = new DestinationClient({
      address,
      serverName: DST,
      anchorsPem: () => pki.anchorsPem,
      certificate: () => me,
      logger: createLogger({
        level: 'info',
        destination: {
          write: (line: string) =>
            void logs.push(JSON.parse(line) as { level: number; msg: string }),
        },
      }),
      backoffMs: { min: 50, max: 200 },
    });
    try {
      assert.deepEqual(await c.resolve({ ip: '10.96.0.10', port: 80 }).answer(5000), {
        kind: 'pass-through',
        reason: 'unavailable',
      });
      assert.equal(index.stats.subscriptions, 0);
      const warning = logs.find((l) => /unreachable/.test(l.msg)) as
        { reason?: string } | undefined;
      assert.match(String(warning?.reason), /presented .*impostor.*, not linkerd-destination/);
    } finally {
      c.close();
    }
  });

  it('forgets a target nobody uses after idleMs, closing its stream', async () => {
    const w = client.resolve({ ip: '10.96.0.10', port: 80 });
    await w.answer(5000);
    w.close();
    await new Promise<void>((resolve) => {
      const poll = setInterval(() => {
        if (client.targets !== 0 || index.stats.subscriptions !== 0) return;
        clearInterval(poll);
        resolve();
      }, 10);
    });
    assert.equal(client.targets, 0);
  });
});
