/**
 * The admission webhooks' HTTPS server against one misbehaving peer (issue 20): a request head,
 * or a body, sent one byte at a time is cut off with a 408 while an honest client is served; a
 * peer that opens more connections than its share is refused before its TLS handshake while
 * another peer is served, and the total is bounded. Real TLS clients from several loopback
 * addresses against a real AdmissionServer.
 */
import { strict as assert } from 'node:assert';
import { mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LISTENER_LIMITS, createLogger } from '../../../core/index.js';
import type { Address, HttpListenerLimits } from '../../../core/index.js';
import { AdmissionServer } from '../../../webhooks/index.js';
import { perPeerCapScenario, slowHead } from '../../support/hostile-clients.js';
import type { TlsClient } from '../../support/hostile-clients.js';
import { WEBHOOKS_DNS, mountServingPair, opensslServingPair } from '../../support/webhooks.js';

describe('webhooks server: bounded against one misbehaving peer', function () {
  this.timeout(60_000);
  let dir: string;
  let ca: string;
  let server: AdmissionServer | undefined;
  const logs: { msg: string; hit?: string; address?: string }[] = [];
  const logger = createLogger({
    level: 'warn',
    destination: { write: (line: string) => void logs.push(JSON.parse(line) as never) },
  });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshid-webhooks-limits-'));
    const pair = await opensslServingPair();
    ca = pair.certPem;
    await mountServingPair(dir, pair);
  });
  after(() => rm(dir, { recursive: true, force: true }));
  afterEach(() => {
    logs.length = 0;
    // Closing is the server's own business (stop watching, close the listener).
    return server?.close().then(() => (server = undefined));
  });

  const start = async (limits: HttpListenerLimits): Promise<AdmissionServer> => {
    server = await AdmissionServer.start({
      listen: { host: '127.0.0.1', port: 0 },
      tlsDir: dir,
      handlers: { '/validate': () => Promise.resolve({ allowed: true }) },
      logger,
      limits,
    });
    return server;
  };
  const tls = (): TlsClient => ({ ca, servername: WEBHOOKS_DNS });

  /** GET /ready over a connection of its own from `from`. */
  const ready = (to: Address, from: string): Promise<number> =>
    new Promise((resolve, reject) => {
      const req = request(
        {
          ...tls(),
          host: to.host,
          port: to.port,
          path: '/ready',
          localAddress: from,
          agent: false,
        },
        (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        },
      );
      req.on('error', reject);
      req.end();
    });

  it('answers 408 to a head, and to a body, sent one byte at a time; an honest client is served meanwhile', async () => {
    const s = await start({
      connections: { total: 64, perPeer: 8 },
      http: { headersTimeoutMs: 500, requestTimeoutMs: 1000, keepAliveTimeoutMs: 5000 },
    });
    const slowHeadRun = slowHead(
      s.address,
      `POST /validate HTTP/1.1\r\nhost: w\r\nx-slow: ${'a'.repeat(1000)}\r\n\r\n`,
      { intervalMs: 20, from: '127.0.0.2', tls: tls() },
    );
    const body = '{"kind":"AdmissionReview",' + ' '.repeat(1000) + '}';
    const slowBodyRun = slowHead(s.address, body, {
      // The head at once, then the body a byte every 10 ms (10 s for all of it).
      prefix: `POST /validate HTTP/1.1\r\nhost: w\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n`,
      intervalMs: 10,
      from: '127.0.0.3',
      tls: tls(),
    });
    assert.equal(await ready(s.address, '127.0.0.4'), 200);
    const [h, b] = await Promise.all([slowHeadRun, slowBodyRun]);
    assert.match(h.response, /^HTTP\/1\.1 408 Request Timeout\r\n/);
    assert.equal(h.finished, false, 'the server waited for the whole dribbled head');
    assert.match(b.response, /^HTTP\/1\.1 408 Request Timeout\r\n/);
    assert.equal(b.finished, false, 'the server waited for the whole dribbled body');
  });

  it('refuses a peer its connection beyond its share before the handshake, and any beyond the total', async () => {
    const limits = { total: 6, perPeer: 2 };
    const s = await start({
      connections: limits,
      http: { headersTimeoutMs: 60_000, requestTimeoutMs: 60_000, keepAliveTimeoutMs: 60_000 },
    });
    const r = await perPeerCapScenario(s.address, limits, s.connections, {
      tls: tls(),
      honest: async () => assert.equal(await ready(s.address, '127.0.0.5'), 200),
    });
    assert.deepEqual(r, { beyondShare: 'reset', beyondTotal: 'reset', readmitted: true });
    assert.deepEqual(
      logs.map((l) => [l.msg, l.address, l.hit]),
      [
        ['webhooks refusing connections: limit reached', '127.0.0.2', 'per-peer'],
        ['webhooks refusing connections: limit reached', '127.0.0.4', 'total'],
      ],
    );
  });

  it('has fixed defaults: 128 connections per peer, 1024 in all, 10 s for a head, 30 s for a request', () => {
    assert.deepEqual(LISTENER_LIMITS.webhooks, {
      connections: { total: 1024, perPeer: 128 },
      http: { headersTimeoutMs: 10_000, requestTimeoutMs: 30_000, keepAliveTimeoutMs: 5_000 },
    });
  });
});
