/**
 * The admin server (CA 9990, proxy 4191, webhooks and destination admin ports) against one
 * misbehaving peer (issue 20): a request head sent one byte at a time is cut off with a 408, a
 * peer that opens more connections than its share is refused while another peer is served, and
 * the total is bounded. Real sockets from several loopback addresses.
 */
import { strict as assert } from 'node:assert';
import { get } from 'node:http';
import { LISTENER_LIMITS, createLogger, startAdminServer } from '../../../core/index.js';
import type { Address, HttpListenerLimits } from '../../../core/index.js';
import { perPeerCapScenario, slowHead } from '../../support/hostile-clients.js';

/** GET `path` from `from` on a connection of its own; resolves with status and body. */
function getFrom(
  to: Address,
  path: string,
  from: string,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = get(
      { host: to.host, port: to.port, path, localAddress: from, agent: false },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
  });
}

describe('admin server: bounded against one misbehaving peer', function () {
  this.timeout(30_000);
  const logs: { msg: string; hit?: string; limit?: number; address?: string }[] = [];
  const logger = createLogger({
    level: 'warn',
    destination: { write: (line: string) => void logs.push(JSON.parse(line) as never) },
  });
  let admin: Awaited<ReturnType<typeof startAdminServer>> | undefined;
  const start = (limits: HttpListenerLimits): Promise<typeof admin> =>
    startAdminServer(
      { host: '127.0.0.1', port: 0 },
      {
        logger,
        limits,
        metrics: () => Promise.resolve({ contentType: 'text/plain', body: '' }),
        readiness: () => ({ ready: true, reason: 'test' }),
      },
    );
  afterEach(async () => {
    await admin?.close();
    admin = undefined;
    logs.length = 0;
  });

  it('answers 408 to a request head sent one byte at a time, and serves another peer meanwhile', async () => {
    admin = await start({
      connections: { total: 16, perPeer: 4 },
      http: { headersTimeoutMs: 500, requestTimeoutMs: 500, keepAliveTimeoutMs: 5000 },
    });
    // 1,000 bytes at one every 20 ms would take 20 s: the server must not wait for them.
    const head = `GET /live HTTP/1.1\r\nhost: admin\r\nx-slow: ${'a'.repeat(1000)}\r\n\r\n`;
    const slow = slowHead(admin!.address, head, { intervalMs: 20, from: '127.0.0.2' });
    const honest = await getFrom(admin!.address, '/live', '127.0.0.3');
    assert.deepEqual(honest, { status: 200, body: 'live\n' });
    const r = await slow;
    assert.match(r.response, /^HTTP\/1\.1 408 Request Timeout\r\n/);
    assert.equal(r.finished, false, 'the server waited for the whole dribbled head');
  });

  it('refuses a peer its connection beyond its share, and any beyond the total, while serving others', async () => {
    const limits = { total: 7, perPeer: 3 };
    admin = await start({
      connections: limits,
      http: { headersTimeoutMs: 60_000, requestTimeoutMs: 60_000, keepAliveTimeoutMs: 60_000 },
    });
    const address = admin!.address;
    const r = await perPeerCapScenario(address, limits, admin!.connections, {
      honest: async () => {
        assert.deepEqual(await getFrom(address, '/live', '127.0.0.5'), {
          status: 200,
          body: 'live\n',
        });
      },
    });
    assert.deepEqual(r, { beyondShare: 'reset', beyondTotal: 'reset', readmitted: true });
    assert.equal(admin!.connections.refused, 2);
    // One warning per episode, naming the address and the limit.
    assert.deepEqual(
      logs.map((l) => [l.msg, l.address, l.hit, l.limit]),
      [
        ['admin server refusing connections: limit reached', '127.0.0.2', 'per-peer', 3],
        ['admin server refusing connections: limit reached', '127.0.0.4', 'total', 7],
      ],
    );
  });

  it('has fixed defaults: 16 connections per peer, 128 in all, 10 s for a request', () => {
    // The bounds docs/security.md lists ("Admin servers").
    assert.deepEqual(LISTENER_LIMITS.admin, {
      connections: { total: 128, perPeer: 16 },
      http: { headersTimeoutMs: 10_000, requestTimeoutMs: 10_000, keepAliveTimeoutMs: 5_000 },
    });
  });
});
