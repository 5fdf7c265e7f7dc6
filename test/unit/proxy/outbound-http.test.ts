/**
 * The outbound HTTP listener (Linkerd's 4140): an HTTP/1.1 forward proxy that routes each
 * request by its authority through a DestinationResolver to a meshed HTTPS peer, and opens
 * opaque tunnels for CONNECT. The peers are node HTTPS servers that require and check the
 * client certificate against the anchors.
 */
import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import { connect as http2Connect } from 'node:http2';
import { connect as netConnect } from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Server as HttpsServer } from 'node:https';
import { LISTENER_LIMITS } from '../../../core/index.js';
import { silentLogger } from '../../../core/logger.js';
import type { Address } from '../../../core/index.js';
import { PROXY_TLS, verifiedPeerIdentity } from '../../../proxy/tls.js';
import type { WorkloadCertificate } from '../../../proxy/index.js';
import { OutboundProxy } from '../../../proxy/outbound.js';
import type { OutboundOptions } from '../../../proxy/outbound.js';
import type { OutboundEvent } from '../../../proxy/outbound-events.js';
import { StaticDestinationResolver, parseRoute } from '../../../proxy/routes.js';
import { perPeerCapScenario, slowHead } from '../../support/hostile-clients.js';
import { makeTrustDomain, workloadId } from '../../support/outbound-pki.js';
import { h2Answer } from '../../support/protocol-apps.js';
import type { TrustDomain } from '../../support/outbound-pki.js';

const WEB = workloadId('emojivoto', 'web');
const EMOJI = workloadId('emojivoto', 'emoji');
const VOTE = workloadId('emojivoto', 'voting');

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
  reused: boolean;
}

describe('OutboundProxy HTTP listener', function () {
  let mesh: TrustDomain;
  let clientCert: WorkloadCertificate;
  let web: { address: Address; seen: { id: string | undefined; url: string; host: string }[] };
  let emoji: { address: Address; seen: { id: string | undefined; url: string; host: string }[] };
  const servers: HttpsServer[] = [];
  const cleanups: (() => Promise<void>)[] = [];

  async function peer(name: string, identity: string): Promise<typeof web> {
    const seen: (typeof web)['seen'] = [];
    const cert = mesh.leaf(identity);
    const server = createHttpsServer(
      {
        ...PROXY_TLS,
        key: cert.keyPem,
        cert: cert.certChainPem,
        ca: mesh.anchorsPem,
        requestCert: true,
        rejectUnauthorized: true,
      },
      (req, res) => {
        seen.push({
          id: verifiedPeerIdentity(req.socket as TLSSocket),
          url: req.url ?? '',
          host: req.headers.host ?? '',
        });
        const chunks: Buffer[] = [];
        req.on('data', (b: Buffer) => chunks.push(b));
        req.on('end', () => {
          res.setHeader('x-served-by', name);
          res.end(
            `${name}:${req.method ?? ''} ${req.url ?? ''} ${Buffer.concat(chunks).toString()}`,
          );
        });
      },
    );
    server.on('connect', (_req, s: Socket) => s.end());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    servers.push(server);
    return { address: { host: '127.0.0.1', port: (server.address() as AddressInfo).port }, seen };
  }

  before(async function () {
    mesh = await makeTrustDomain();
    clientCert = mesh.leaf(VOTE);
    web = await peer('web', WEB);
    emoji = await peer('emoji', EMOJI);
  });

  afterEach(async function () {
    for (const c of cleanups.splice(0).reverse()) await c();
    web.seen.length = 0;
    emoji.seen.length = 0;
  });

  after(async function () {
    for (const s of servers) {
      s.closeAllConnections();
      await new Promise<void>((resolve) => s.close(() => resolve()));
    }
  });

  async function start(
    extra: Partial<OutboundOptions> = {},
  ): Promise<{ address: Address; events: OutboundEvent[]; agent: HttpAgent }> {
    const events: OutboundEvent[] = [];
    const resolver = new StaticDestinationResolver([
      { authority: 'web.emojivoto.svc.cluster.local:80', target: web.address, identity: WEB },
      {
        authority: 'emoji.emojivoto.svc.cluster.local:8080',
        target: emoji.address,
        identity: EMOJI,
      },
      // A destination whose endpoint is not who it should be: web answers at emoji's name.
      {
        authority: 'impostor.emojivoto.svc.cluster.local:80',
        target: web.address,
        identity: EMOJI,
      },
    ]);
    const p = new OutboundProxy({
      routes: [],
      http: { listen: { host: '127.0.0.1', port: 0 }, resolver },
      certificate: () => clientCert,
      anchorsPem: () => mesh.anchorsPem,
      logger: silentLogger(),
      observe: (e) => events.push(e),
      ...extra,
    });
    const [address] = await p.listen();
    const agent = new HttpAgent({ keepAlive: true, maxSockets: 1 });
    cleanups.push(async () => {
      agent.destroy();
      await p.close(0);
    });
    return { address: address!, events, agent };
  }

  function ask(
    proxy: Address,
    agent: HttpAgent,
    opts: { path: string; headers?: OutgoingHttpHeaders; method?: string; body?: string },
  ): Promise<Answer> {
    return new Promise((resolve, reject) => {
      const req = httpRequest(
        {
          agent,
          host: proxy.host,
          port: proxy.port,
          path: opts.path,
          method: opts.method ?? 'GET',
          headers: opts.headers ?? {},
        },
        (res) => {
          let body = '';
          res.on('data', (b: Buffer) => (body += b.toString()));
          res.on('end', () =>
            resolve({
              status: res.statusCode ?? 0,
              headers: res.headers,
              body,
              reused: req.reusedSocket,
            }),
          );
        },
      );
      req.on('error', reject);
      req.end(opts.body);
    });
  }

  it('routes each request on one app connection by its Host header, over mTLS', async function () {
    const { address, agent, events } = await start();
    const a = await ask(address, agent, {
      path: '/leaderboard',
      headers: { host: 'web.emojivoto.svc.cluster.local' },
    });
    const b = await ask(address, agent, {
      path: '/emojis',
      method: 'POST',
      body: 'vote=🍩',
      headers: { host: 'EMOJI.emojivoto.svc.cluster.local:8080' },
    });
    assert.equal(a.status, 200);
    assert.equal(a.body, 'web:GET /leaderboard ');
    assert.equal(b.body, 'emoji:POST /emojis vote=🍩');
    assert.equal(b.reused, true, 'both requests went over one app connection');
    assert.deepEqual(web.seen, [
      { id: VOTE, url: '/leaderboard', host: 'web.emojivoto.svc.cluster.local' },
    ]);
    assert.deepEqual(
      emoji.seen.map((s) => s.id),
      [VOTE],
    );
    const handshakes = events.filter((e) => e.type === 'handshake' && e.ok);
    assert.deepEqual(
      handshakes.map((e) => (e.type === 'handshake' && e.ok ? e.peerIdentity : '')),
      [WEB, EMOJI],
    );
  });

  it('answers an h2c app whose destination is not a meshid proxy with a 502 saying so', async function () {
    const { address } = await start();
    const session = http2Connect(`http://${address.host}:${address.port}`);
    try {
      const req = session.request({
        ':path': '/leaderboard',
        ':authority': 'web.emojivoto.svc.cluster.local',
      });
      const { headers, body } = await h2Answer(req);
      assert.equal(headers[':status'], 502);
      assert.equal(headers['l5d-proxy-error'], 'peer-not-http2');
      assert.match(body, /not a meshid proxy.*send HTTP\/1\.1 to this listener, or use a route/);
      // The peer was reached (over mTLS, HTTP/1.1 chosen) but got no request.
      assert.deepEqual(web.seen, []);
    } finally {
      session.destroy();
    }
  });

  it('refuses CONNECT over HTTP/2 on the HTTP listener with a 405 naming HTTP/1.1 CONNECT', async function () {
    const { address } = await start();
    const session = http2Connect(`http://${address.host}:${address.port}`);
    try {
      const req = session.request({
        ':method': 'CONNECT',
        ':authority': 'web.emojivoto.svc.cluster.local:80',
      });
      const { headers, body } = await h2Answer(req);
      assert.equal(headers[':status'], 405);
      assert.equal(headers['l5d-proxy-error'], 'connect-over-http2');
      assert.match(body, /use HTTP\/1\.1 CONNECT/);
      assert.deepEqual(web.seen, []);
    } finally {
      session.destroy();
    }
  });

  it('reuses the pooled mTLS connection for the next request to the same destination', async function () {
    const { address, agent, events } = await start();
    for (const path of ['/one', '/two', '/three']) {
      const r = await ask(address, agent, {
        path,
        headers: { host: 'web.emojivoto.svc.cluster.local' },
      });
      assert.equal(r.status, 200);
    }
    assert.equal(events.filter((e) => e.type === 'handshake').length, 1);
  });

  it('accepts the absolute form a client configured with an HTTP proxy sends', async function () {
    const { address, agent } = await start();
    const r = await ask(address, agent, {
      path: 'http://web.emojivoto.svc.cluster.local/api/list?x=1',
      headers: { host: 'web.emojivoto.svc.cluster.local' },
    });
    assert.equal(r.body, 'web:GET /api/list?x=1 ');
  });

  it('answers 502 no-route for an authority the resolver does not know, and keeps the connection', async function () {
    const { address, agent } = await start();
    const r = await ask(address, agent, { path: '/', headers: { host: 'unknown.example:80' } });
    assert.equal(r.status, 502);
    assert.equal(r.headers['l5d-proxy-error'], 'no-route');
    const next = await ask(address, agent, {
      path: '/',
      headers: { host: 'web.emojivoto.svc.cluster.local' },
    });
    assert.equal(next.status, 200);
    assert.equal(next.reused, true);
  });

  it('answers 502 no-route on its other paths too: an HTTP/2 stream, an Upgrade, a CONNECT', async function () {
    const { address } = await start();
    const session = http2Connect(`http://${address.host}:${address.port}`);
    try {
      const req = session.request({ ':path': '/', ':authority': 'unknown.example:80' });
      const { headers, body } = await h2Answer(req);
      assert.equal(headers[':status'], 502);
      assert.equal(headers['l5d-proxy-error'], 'no-route');
      assert.match(body, /no meshed destination for unknown\.example:80/);
    } finally {
      session.destroy();
    }
    /** Sends `head` on a new connection and reads everything until the proxy closes it. */
    const exchange = async (head: string): Promise<string> => {
      const app = netConnect({ host: address.host, port: address.port });
      let got = '';
      app.on('data', (b: Buffer) => (got += b.toString()));
      app.write(head);
      await once(app, 'close');
      return got;
    };
    const upgrade = await exchange(
      'GET /ws HTTP/1.1\r\nHost: unknown.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n',
    );
    assert.match(upgrade, /^HTTP\/1\.1 502 Bad Gateway\r\n/);
    assert.match(upgrade, /\r\nl5d-proxy-error: no-route\r\n/);
    assert.match(
      upgrade,
      /\r\nconnection: close\r\n\r\nno meshed destination for unknown\.example\n$/,
    );
    const tunnel = await exchange(
      'CONNECT unknown.example:443 HTTP/1.1\r\nHost: unknown.example:443\r\n\r\n',
    );
    assert.equal(
      tunnel,
      'HTTP/1.1 502 Bad Gateway\r\nl5d-proxy-error: no-route\r\ncontent-length: 0\r\nconnection: close\r\n\r\n',
    );
    assert.deepEqual(web.seen, []);
  });

  it('answers 502 identity-mismatch when the endpoint is not the identity the destination requires', async function () {
    const { address, agent, events } = await start();
    const r = await ask(address, agent, {
      path: '/',
      headers: { host: 'impostor.emojivoto.svc.cluster.local' },
    });
    assert.equal(r.status, 502);
    assert.equal(r.headers['l5d-proxy-error'], 'identity-mismatch');
    assert.equal(web.seen.length, 0, 'the request never reached the wrong server');
    assert.ok(
      events.some((e) => e.type === 'handshake' && !e.ok && e.reason === 'identity-mismatch'),
    );
  });

  it('insists on the identity in l5d-require-id and does not forward that header', async function () {
    const { address, agent } = await start();
    const refused = await ask(address, agent, {
      path: '/',
      headers: { host: 'web.emojivoto.svc.cluster.local', 'l5d-require-id': EMOJI },
    });
    assert.equal(refused.headers['l5d-proxy-error'], 'identity-mismatch');
    const ok = await ask(address, agent, {
      path: '/',
      headers: { host: 'web.emojivoto.svc.cluster.local', 'l5d-require-id': WEB },
    });
    assert.equal(ok.status, 200);
  });

  it('answers 503 no-certificate before the identity client has a certificate', async function () {
    const { address, agent } = await start({ certificate: () => undefined });
    const r = await ask(address, agent, {
      path: '/',
      headers: { host: 'web.emojivoto.svc.cluster.local' },
    });
    assert.equal(r.status, 503);
    assert.equal(r.headers['l5d-proxy-error'], 'no-certificate');
    assert.equal(web.seen.length, 0);
  });

  it('opens an opaque mTLS tunnel for CONNECT', async function () {
    const { address } = await start();
    const app = netConnect({ host: address.host, port: address.port });
    cleanups.push(async () => {
      app.destroy();
    });
    app.write(
      'CONNECT web.emojivoto.svc.cluster.local:80 HTTP/1.1\r\nHost: web.emojivoto.svc.cluster.local:80\r\n\r\n',
    );
    let got = '';
    const until = (text: string): Promise<void> =>
      new Promise((resolve, reject) => {
        const check = (): void => {
          if (got.includes(text)) {
            app.off('data', onData);
            resolve();
          }
        };
        const onData = (b: Buffer): void => {
          got += b.toString();
          check();
        };
        app.on('data', onData);
        app.once('close', () => reject(new Error(`closed before ${text}: ${got}`)));
        check();
      });
    await until('\r\n\r\n');
    assert.match(got, /^HTTP\/1\.1 200 /);
    // Inside the tunnel: plain HTTP/1.1 to the meshed server, which sees the client identity.
    got = '';
    app.write('GET /inside HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n');
    await until('web:GET /inside');
    assert.deepEqual(
      web.seen.map((s) => s.id),
      [VOTE],
    );
  });
  describe('bounded against a misbehaving app (issue 20)', function () {
    this.timeout(30_000);

    it('answers 408 to a request head sent one byte at a time, and serves another request meanwhile', async function () {
      const { address, agent } = await start({
        limits: { http: { headersTimeoutMs: 500, requestTimeoutMs: 0, keepAliveTimeoutMs: 5000 } },
      });
      // 1,000 bytes at one every 20 ms would take 20 s: the listener must not wait for them.
      const head = `GET / HTTP/1.1\r\nhost: web.emojivoto.svc.cluster.local\r\nx-slow: ${'a'.repeat(1000)}\r\n\r\n`;
      const slow = slowHead(address, head, { intervalMs: 20, from: '127.0.0.2' });
      const honest = await ask(address, agent, {
        path: '/',
        headers: { host: 'web.emojivoto.svc.cluster.local' },
      });
      assert.equal(honest.status, 200);
      const r = await slow;
      assert.match(r.response, /^HTTP\/1\.1 408 Request Timeout\r\n/);
      assert.equal(r.finished, false, 'the listener waited for the whole dribbled head');
    });

    it('advertises at most 100 concurrent HTTP/2 streams to an h2c app', async function () {
      const { address } = await start();
      const session = http2Connect(`http://127.0.0.1:${address.port}`);
      session.on('error', () => undefined);
      const [settings] = (await once(session, 'remoteSettings')) as [
        { maxConcurrentStreams?: number },
      ];
      session.destroy();
      assert.equal(settings.maxConcurrentStreams, 100);
    });

    it('refuses a route listener connection beyond the limits, serves another, and takes one again once one closes', async function () {
      const limits = { total: 6, perPeer: 2 };
      const p = new OutboundProxy({
        routes: [parseRoute(`127.0.0.1:0=127.0.0.1:${web.address.port}@${WEB}`)],
        certificate: () => clientCert,
        anchorsPem: () => mesh.anchorsPem,
        logger: silentLogger(),
        limits: { connections: limits },
      });
      const [route] = await p.listen();
      cleanups.push(() => p.close(0));
      const r = await perPeerCapScenario(route!, limits, p.connections[0]!, {
        honest: async () => {
          const agent = new HttpAgent({ keepAlive: false });
          const a = await ask(route!, agent, { path: '/', headers: { host: 'web' } });
          agent.destroy();
          assert.equal(a.status, 200);
        },
      });
      assert.deepEqual(r, { beyondShare: 'reset', beyondTotal: 'reset', readmitted: true });
    });

    it('has fixed defaults: 4096 connections a listener, 10 s for a head, 100 streams', function () {
      assert.deepEqual(LISTENER_LIMITS.outbound, {
        connections: { total: 4096, perPeer: 4096 },
        http: { headersTimeoutMs: 10_000, requestTimeoutMs: 0, keepAliveTimeoutMs: 5_000 },
        maxStreams: 100,
      });
    });
  });
});
