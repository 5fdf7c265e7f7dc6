/**
 * One meshed peer must not exhaust a proxy (issue 20, case 1). A real `meshid proxy` in front of
 * an HTTP/1.1 app; a hostile peer with a valid mesh certificate opens two mTLS connections and on
 * each 10,000 HTTP/2 request streams with unfinished bodies, ignoring the advertised stream
 * limit. Meanwhile an honest peer of another identity is served with bounded latency, the admin
 * port answers /ready, the app sees at most the per-peer bound of connections, and the proxy's
 * RSS stays far under the 256Mi limit the injector sets.
 */
import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { connect as http2Connect } from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { TLSSocket } from 'node:tls';
import { formatAddress } from '../../core/index.js';
import { adminGet, startCaProcess, waitFor } from '../support/ca-process.js';
import type { CaProcess } from '../support/ca-process.js';
import { rssMb } from '../support/proc.js';
import { certificateFromCa, startProxyProcess } from '../support/proxy-process.js';
import type { ProxyProcess } from '../support/proxy-process.js';
import { rawH2Flood } from '../support/raw-h2.js';
import type { FloodView } from '../support/raw-h2.js';
import { makeTestState } from '../support/state.js';
import type { TestState } from '../support/state.js';

const STREAMS_PER_CONNECTION = 10_000;
/** The proxy's default per-peer bound of app exchanges (inboundMaxAppConnectionsPerPeer). */
const PER_PEER = 128;
/** The advertised SETTINGS_MAX_CONCURRENT_STREAMS (inboundMaxStreams). */
const MAX_STREAMS = 100;
/** The injected proxy's memory limit is 256Mi; the proxy must stay well under it. */
const RSS_BOUND_MB = 200;
const HONEST_LATENCY_BOUND_MS = 3000;

describe('meshid proxy: one peer cannot exhaust the inbound (real processes)', function () {
  this.timeout(120_000);
  let state: TestState;
  let ca: CaProcess;
  let app: Server;
  let proxy: ProxyProcess;
  let anchorsPem: string;
  let open = 0;
  let maxOpen = 0;
  const appSockets = new Set<Socket>();

  before(async () => {
    state = await makeTestState();
    anchorsPem = await readFile(state.anchorsFile, 'utf8');
    ca = await startCaProcess([...state.caArgs, '--workers', '1', '--cert-lifetime', '1h']);
    // GET is answered at once; an upload is held until its body ends (which it never does).
    app = createServer((req, res) => {
      if (req.method === 'GET') res.end(`hello ${String(req.headers['l5d-client-id'])}\n`);
    });
    app.on('connection', (s: Socket) => {
      appSockets.add(s);
      open++;
      maxOpen = Math.max(maxOpen, open);
      s.once('close', () => {
        open--;
        appSockets.delete(s);
      });
    });
    app.listen(0, '127.0.0.1');
    await once(app, 'listening');
    proxy = await startProxyProcess({
      state,
      ca: formatAddress(ca.address),
      sa: 'web',
      args: [
        ...['--inbound', '127.0.0.1:0', '--app-protocol', 'http1'],
        ...['--app', `127.0.0.1:${(app.address() as AddressInfo).port}`],
      ],
    });
  });
  after(async () => {
    await proxy?.stop();
    for (const s of appSockets) s.destroy();
    app?.close();
    await ca?.stop();
    await state?.cleanup();
  });

  it('bounds streams and app connections per peer and keeps serving others and /ready', async () => {
    const attacker = await certificateFromCa(state, ca.address, 'emojivoto', 'voting');
    const honest = await certificateFromCa(state, ca.address, 'emojivoto', 'vote-bot');
    const floods: { socket: TLSSocket; view: FloodView }[] = [];
    const client = http2Connect(`https://127.0.0.1:${proxy.inbound!.port}`, {
      ca: anchorsPem,
      key: honest.keyPem,
      cert: honest.chainPem,
      servername: proxy.identity,
    });
    client.on('error', () => undefined);
    const honestGet = async (): Promise<{ ms: number; body: string }> => {
      const started = Date.now();
      const req = client.request({ ':path': '/', ':authority': 'web' });
      req.setEncoding('utf8');
      let body = '';
      req.on('data', (d: string) => (body += d));
      await once(req, 'end');
      return { ms: Date.now() - started, body };
    };
    try {
      assert.match((await honestGet()).body, /hello vote-bot\./);
      // Two connections ignore the stream limit (10,000 streams each); three more keep to it
      // (100 each, 300 in all: more than the peer's share of app connections).
      for (const streams of [STREAMS_PER_CONNECTION, STREAMS_PER_CONNECTION, 100, 100, 100]) {
        const socket = tlsConnect({
          host: '127.0.0.1',
          port: proxy.inbound!.port,
          servername: proxy.identity,
          ca: anchorsPem,
          key: attacker.keyPem,
          cert: attacker.chainPem,
          ALPNProtocols: ['h2'],
        });
        socket.on('error', () => undefined);
        await once(socket, 'secureConnect');
        const view = rawH2Flood(
          socket,
          [
            [':method', 'POST'],
            [':scheme', 'https'],
            [':path', '/upload'],
            [':authority', 'web'],
            ['content-type', 'application/octet-stream'],
          ],
          { streams, body: 'x' },
        );
        floods.push({ socket, view });
      }
      // The proxy has read every frame once it answers the PING sent after them (or closed).
      await Promise.all(floods.map((f) => f.view.allRead));
      await waitFor('the attack to reach the app', () => (open >= PER_PEER ? true : undefined));

      // During the attack: another identity is served in bounded time, /ready answers.
      for (let i = 0; i < 5; i++) {
        const got = await honestGet();
        assert.match(got.body, /hello vote-bot\./);
        assert.ok(got.ms < HONEST_LATENCY_BOUND_MS, `honest request took ${got.ms} ms`);
      }
      const started = Date.now();
      assert.equal((await adminGet(proxy.admin, '/ready')).status, 200);
      assert.ok(Date.now() - started < HONEST_LATENCY_BOUND_MS, '/ready was slow');

      for (const f of floods) {
        assert.equal(f.view.maxConcurrentStreams, MAX_STREAMS, 'advertised stream limit');
      }
      // The streams beyond the peer's share of app connections were refused (REFUSED_STREAM,
      // safe to retry); the connections that ignored the stream limit were refused streams
      // until node's HTTP/2 server closed them (more than 100 rejected streams).
      const limited = floods.slice(2);
      const refused = limited.reduce((n, f) => n + (f.view.resets.get(7) ?? 0), 0);
      assert.ok(refused >= 300 - PER_PEER, `refused ${refused} of the 300 within the limit`);
      for (const f of floods.slice(0, 2)) {
        assert.ok((f.view.resets.get(7) ?? 0) > 0 || f.socket.closed, 'a flood was let through');
      }
      // The honest client's connection (kept alive) is the one beyond the attacker's bound.
      assert.ok(maxOpen <= PER_PEER + 1, `the app saw ${maxOpen} connections at once`);
      const rss = rssMb(proxy.proc.pid!);
      assert.ok(rss < RSS_BOUND_MB, `proxy RSS ${rss} MB`);
    } finally {
      client.close();
      for (const f of floods) f.socket.destroy();
    }
  });
});
