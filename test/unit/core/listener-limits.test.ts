import { strict as assert } from 'node:assert';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { PeerBudget, RefusalReports, limitConnections } from '../../../core/listener-limits.js';
import { waitFor } from '../../support/ca-process.js';
import { openFrom } from '../../support/hostile-clients.js';

describe('PeerBudget', () => {
  it('gives one peer at most its share, and leaves the rest of the total to others', () => {
    const b = new PeerBudget({ total: 5, perPeer: 3 });
    assert.deepEqual(
      [1, 2, 3, 4].map(() => b.acquire('attacker')),
      [true, true, true, false],
    );
    assert.equal(b.acquire('honest'), true);
    assert.equal(b.acquire('honest'), true);
    assert.equal(b.acquire('third'), false, 'the total is reached');
    assert.equal(b.inUse, 5);
    assert.equal(b.refused, 2);
  });

  it('frees a unit on release, and ignores a release of nothing held', () => {
    const b = new PeerBudget({ total: 2, perPeer: 1 });
    assert.equal(b.acquire('a'), true);
    assert.equal(b.acquire('a'), false);
    b.release('a');
    b.release('a');
    b.release('never');
    assert.equal(b.inUse, 0);
    assert.equal(b.heldBy('a'), 0);
    assert.equal(b.acquire('a'), true);
  });
});

describe('RefusalReports', () => {
  it('reports the first refusal of a key, then at most one per interval with the count since', () => {
    let now = 0;
    const r = new RefusalReports({ intervalMs: 10_000, now: () => now });
    assert.equal(r.refused('10.0.0.1'), 1);
    assert.equal(r.refused('10.0.0.1'), undefined);
    assert.equal(r.refused('10.0.0.1'), undefined);
    assert.equal(r.refused('10.0.0.2'), 1, 'another key is reported on its own');
    now = 9_999;
    assert.equal(r.refused('10.0.0.1'), undefined);
    now = 10_000;
    assert.equal(r.refused('10.0.0.1'), 4, 'three held back, and this one');
    assert.equal(r.refused('10.0.0.1'), undefined);
  });

  it('stays bounded when refusals come from ever new addresses, reporting each at most once per interval', () => {
    let now = 0;
    const r = new RefusalReports({ intervalMs: 10_000, now: () => now });
    let reported = 0;
    for (let i = 0; i < 5000; i++)
      if (r.refused(`10.1.${i >> 8}.${i & 255}`) !== undefined) reported++;
    assert.equal(reported, 5000);
    assert.ok(r.size <= 1024, `${r.size} keys remembered`);
    now = 20_000;
    assert.equal(r.refused('10.1.0.0'), 1, 'a key quiet for an interval starts again');
  });
});

describe('limitConnections', () => {
  it('counts every refusal, logs one line per key and interval, and calls a full listener total', async () => {
    const server = createServer((s) => s.resume());
    let now = 0;
    const counted: string[] = [];
    const reported: unknown[][] = [];
    const budget = limitConnections(
      server,
      { total: 2, perPeer: 2 },
      (...args) => reported.push(args),
      { count: (_peer, hit) => counted.push(hit), now: () => now },
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const to = { host: '127.0.0.1', port: (server.address() as AddressInfo).port };
    try {
      const held = [await openFrom(to, '127.0.0.2'), await openFrom(to, '127.0.0.2')];
      await waitFor('two held', () => (budget.inUse === 2 ? true : undefined));
      for (let i = 0; i < 3; i++)
        assert.equal(await (await openFrom(to, '127.0.0.2')).closed, 'reset');
      now = 10_000;
      assert.equal(await (await openFrom(to, '127.0.0.3')).closed, 'reset');
      assert.deepEqual(counted, ['total', 'total', 'total', 'total']);
      assert.deepEqual(reported, [
        ['127.0.0.2', 'total', 2, 1],
        ['127.0.0.3', 'total', 2, 3],
      ]);
      for (const h of held) h.socket.destroy();
      await waitFor('all given back', () => (budget.inUse === 0 ? true : undefined));
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
