/**
 * The HTTP/2 carriage between proxies, end to end in one process: an app's HTTP/1.1 requests to
 * the outbound's HTTP listener (its fast path, outbound-http1.ts), one multiplexed HTTP/2 mTLS
 * session to a real meshid inbound, and the inbound's own pooled HTTP/1.1 connections to the app
 * (h2-to-http1.ts). Raw sockets on both ends, so that framing, ordering and connection reuse are
 * what the test sees, byte for byte.
 */
import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import { createServer as createHttpServer } from 'node:http';
import type { Server as HttpServer } from 'node:http';
import { Socket, connect as netConnect, createServer as createNetServer } from 'node:net';
import type { AddressInfo, Server as NetServer } from 'node:net';
import { silentLogger } from '../../../core/logger.js';
import type { Address } from '../../../core/index.js';
import { InboundPolicy, InboundProxy, OutboundProxy } from '../../../proxy/index.js';
import { StaticDestinationResolver } from '../../../proxy/routes.js';
import { makeTrustDomain, workloadId } from '../../support/outbound-pki.js';
import type { TrustDomain } from '../../support/outbound-pki.js';

const WEB = workloadId('emojivoto', 'web');
const VOTE = workloadId('emojivoto', 'voting');
const HOST = 'web.emojivoto.svc.cluster.local:80';

/** Sends `bytes` on a new connection and reads until the proxy closes it. */
async function exchange(proxy: Address, bytes: string): Promise<string> {
  const s = netConnect(proxy.port, proxy.host);
  const chunks: Buffer[] = [];
  s.on('data', (b: Buffer) => chunks.push(b));
  s.write(bytes);
  await once(s, 'close');
  return Buffer.concat(chunks).toString('latin1');
}

/** Splits a stream of HTTP/1.1 responses (Content-Length or chunked bodies) into [head, body]. */
function responses(raw: string): { head: string; body: string }[] {
  const out: { head: string; body: string }[] = [];
  let rest = raw;
  while (rest.length > 0) {
    const end = rest.indexOf('\r\n\r\n');
    assert.notEqual(end, -1, `no complete head in ${JSON.stringify(rest)}`);
    const head = rest.slice(0, end + 2);
    rest = rest.slice(end + 4);
    const length = /\r\ncontent-length: (\d+)\r\n/i.exec(head);
    let body = '';
    if (length !== null) {
      body = rest.slice(0, Number(length[1]));
      rest = rest.slice(Number(length[1]));
    } else if (/\r\ntransfer-encoding: chunked\r\n/i.test(head)) {
      for (;;) {
        const lineEnd = rest.indexOf('\r\n');
        const size = parseInt(rest.slice(0, lineEnd), 16);
        rest = rest.slice(lineEnd + 2);
        if (size === 0) {
          rest = rest.slice(rest.indexOf('\r\n') + 2);
          break;
        }
        body += rest.slice(0, size);
        rest = rest.slice(size + 2);
      }
    }
    out.push({ head, body });
  }
  return out;
}

describe('the HTTP/2 carriage between proxies (outbound fast path → HTTP/2 → inbound → HTTP/1.1 app)', function () {
  this.timeout(20_000);
  let mesh: TrustDomain;
  const closers: (() => Promise<void>)[] = [];
  /** Per app: the requests it saw and the connections it accepted. */
  let seen: { method: string; url: string; clientId: string; body: string; conn: Socket }[];
  /** The app connections that carried requests (the inbound's protocol probe carries none). */
  const appConnections = (): number => new Set(seen.map((s) => s.conn)).size;

  async function listen(server: HttpServer | NetServer): Promise<Address> {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    closers.push(async () => {
      if ('closeAllConnections' in server) server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    });
    return { host: '127.0.0.1', port: (server.address() as AddressInfo).port };
  }

  /** The app: echoes method, path and body; `/close` answers with `connection: close`. */
  async function echoApp(): Promise<Address> {
    const server = createHttpServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (b: Buffer) => chunks.push(b));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString();
        seen.push({
          method: req.method ?? '',
          url: req.url ?? '',
          clientId: String(req.headers['l5d-client-id']),
          body,
          conn: req.socket,
        });
        if (req.url === '/close') res.setHeader('connection', 'close');
        if (req.url === '/stream') {
          // No length: node frames it chunked.
          res.write('part one, ');
          res.end('part two');
          return;
        }
        if (req.url === '/empty') {
          res.statusCode = 204;
          res.end();
          return;
        }
        res.end(`${req.method ?? ''} ${req.url ?? ''} ${body}`);
      });
    });
    return listen(server);
  }

  async function pair(app: Address): Promise<Address> {
    const cert = mesh.leaf(WEB);
    const inbound = new InboundProxy({
      listen: { host: '127.0.0.1', port: 0 },
      app,
      certificate: () => cert,
      anchorsPem: () => mesh.anchorsPem,
      policy: new InboundPolicy(),
      logger: silentLogger(),
    });
    const inboundAddress = await inbound.listen();
    closers.push(() => inbound.close(0));
    const clientCert = mesh.leaf(VOTE);
    const outbound = new OutboundProxy({
      routes: [],
      http: {
        listen: { host: '127.0.0.1', port: 0 },
        resolver: new StaticDestinationResolver([
          { authority: HOST, target: inboundAddress, identity: WEB },
        ]),
      },
      certificate: () => clientCert,
      anchorsPem: () => mesh.anchorsPem,
      logger: silentLogger(),
    });
    const [listener] = await outbound.listen();
    closers.push(() => outbound.close(0));
    return listener!;
  }

  before(async function () {
    mesh = await makeTrustDomain();
  });

  beforeEach(() => {
    seen = [];
  });

  afterEach(async function () {
    for (const c of closers.splice(0).reverse()) await c();
  });

  it('answers pipelined requests in order, bodies included, each with the verified identity, on one app connection', async () => {
    const proxy = await pair(await echoApp());
    const raw = await exchange(
      proxy,
      `GET /one HTTP/1.1\r\nhost: ${HOST}\r\nl5d-client-id: forged\r\n\r\n` +
        `POST /two HTTP/1.1\r\nhost: ${HOST}\r\ncontent-length: 5\r\n\r\nhello` +
        `GET /three HTTP/1.1\r\nhost: ${HOST}\r\nconnection: close\r\n\r\n`,
    );
    const rs = responses(raw);
    assert.deepEqual(
      rs.map((r) => r.body),
      ['GET /one ', 'POST /two hello', 'GET /three '],
    );
    for (const r of rs) assert.match(r.head, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(rs[2]!.head, /\r\nconnection: close\r\n/);
    // The fast path's answers: node's HTTP/1 server would have added its keep-alive header.
    for (const r of rs) assert.doesNotMatch(r.head, /keep-alive: timeout/i);
    assert.deepEqual(
      seen.map((s) => s.clientId),
      [VOTE, VOTE, VOTE],
    );
    assert.equal(appConnections(), 1);
  });

  it('writes each answer, head and body, to the app in one write (not the head alone first)', async () => {
    const proxy = await pair(await echoApp());
    const client = netConnect(proxy.port, proxy.host);
    await once(client, 'connect');
    // The writes the proxy's socket to this client hands to the kernel, counted where node's
    // stream gives them to the socket (one per write or writev system call).
    const writes: number[] = [];
    const proto = Socket.prototype as unknown as Record<
      '_write' | '_writev',
      (this: Socket, ...args: unknown[]) => unknown
    >;
    const original = { _write: proto._write, _writev: proto._writev };
    const mine = (socket: Socket): boolean => socket.remotePort === client.localPort;
    proto._write = function (this: Socket, ...args: unknown[]) {
      if (mine(this)) writes.push(1);
      return original._write.apply(this, args);
    };
    proto._writev = function (this: Socket, ...args: unknown[]) {
      if (mine(this)) writes.push((args[0] as unknown[]).length);
      return original._writev.apply(this, args);
    };
    try {
      const chunks: Buffer[] = [];
      client.on('data', (b: Buffer) => chunks.push(b));
      const answered = async (n: number): Promise<void> => {
        while (
          (
            Buffer.concat(chunks)
              .toString('latin1')
              .match(/GET \/\w+ $/gm) ?? []
          ).length < n
        )
          await once(client, 'data');
      };
      client.write(`GET /one HTTP/1.1\r\nhost: ${HOST}\r\n\r\n`);
      await answered(1);
      client.write(`GET /two HTTP/1.1\r\nhost: ${HOST}\r\nconnection: close\r\n\r\n`);
      await once(client, 'close');
      const rs = responses(Buffer.concat(chunks).toString('latin1'));
      assert.deepEqual(
        rs.map((r) => r.body),
        ['GET /one ', 'GET /two '],
      );
      // One write per answer, each carrying the head and the body together.
      assert.deepEqual(writes, [2, 2]);
    } finally {
      proto._write = original._write;
      proto._writev = original._writev;
      client.destroy();
    }
  });

  it('re-frames an answer without a length as chunked, carries a 204 bodiless, and keeps the connection', async () => {
    const proxy = await pair(await echoApp());
    const raw = await exchange(
      proxy,
      `GET /stream HTTP/1.1\r\nhost: ${HOST}\r\n\r\n` +
        `GET /empty HTTP/1.1\r\nhost: ${HOST}\r\n\r\n` +
        `HEAD /head HTTP/1.1\r\nhost: ${HOST}\r\n\r\n` +
        `GET /last HTTP/1.1\r\nhost: ${HOST}\r\nconnection: close\r\n\r\n`,
    );
    // HEAD's answer carries a length but no body: split it off by hand before parsing the rest.
    const headAt = raw.indexOf('HTTP/1.1 200', raw.indexOf('HTTP/1.1 204'));
    const headEnd = raw.indexOf('\r\n\r\n', headAt) + 4;
    const rs = [...responses(raw.slice(0, headAt)), ...responses(raw.slice(headEnd))];
    assert.equal(rs[0]!.body, 'part one, part two');
    assert.match(rs[1]!.head, /^HTTP\/1\.1 204 No Content\r\n/);
    assert.equal(rs[1]!.body, '');
    assert.match(raw.slice(headAt, headEnd), /^HTTP\/1\.1 200 OK\r\n/);
    assert.equal(rs[2]!.body, 'GET /last ');
    assert.deepEqual(
      seen.map((s) => `${s.method} ${s.url}`),
      ['GET /stream', 'GET /empty', 'HEAD /head', 'GET /last'],
    );
  });

  it('hands what it does not take (a chunked upload) to node’s server, which carries it whole', async () => {
    const proxy = await pair(await echoApp());
    const raw = await exchange(
      proxy,
      `POST /upload HTTP/1.1\r\nhost: ${HOST}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n` +
        `5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n`,
    );
    const [r] = responses(raw);
    assert.equal(r!.body, 'POST /upload hello world');
    assert.equal(seen[0]!.clientId, VOTE);
  });

  it('opens a new app connection when the app closes its own after an answer, and loses no request', async () => {
    const proxy = await pair(await echoApp());
    const raw = await exchange(
      proxy,
      `GET /close HTTP/1.1\r\nhost: ${HOST}\r\n\r\n`.repeat(3) +
        `GET /after HTTP/1.1\r\nhost: ${HOST}\r\nconnection: close\r\n\r\n`,
    );
    assert.deepEqual(
      responses(raw).map((r) => r.body),
      ['GET /close ', 'GET /close ', 'GET /close ', 'GET /after '],
    );
    assert.equal(appConnections(), 4);
  });

  it('carries an answer delimited by the app closing its connection', async () => {
    const server = createNetServer((s: Socket) => {
      s.once('data', () =>
        s.end('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end'),
      );
    });
    const proxy = await pair(await listen(server));
    const [r] = responses(
      await exchange(proxy, `GET / HTTP/1.1\r\nhost: ${HOST}\r\nconnection: close\r\n\r\n`),
    );
    assert.equal(r!.body, 'until the end');
  });

  it('answers 502 naming the cause when the app closes without answering', async () => {
    const server = createNetServer((s: Socket) => s.once('data', () => s.destroy()));
    const proxy = await pair(await listen(server));
    const [r] = responses(
      await exchange(proxy, `GET / HTTP/1.1\r\nhost: ${HOST}\r\nconnection: close\r\n\r\n`),
    );
    assert.match(r!.head, /^HTTP\/1\.1 502 Bad Gateway\r\n/);
    assert.match(r!.body, /the application at 127\.0\.0\.1:\d+ (closed|reset) the connection/);
  });

  it('answers 502 naming a response the strict parser refuses (two Content-Lengths)', async () => {
    const server = createNetServer((s: Socket) => {
      s.once('data', () =>
        s.end('HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nabc'),
      );
    });
    const proxy = await pair(await listen(server));
    const [r] = responses(
      await exchange(proxy, `GET / HTTP/1.1\r\nhost: ${HOST}\r\nconnection: close\r\n\r\n`),
    );
    assert.match(r!.head, /^HTTP\/1\.1 502 Bad Gateway\r\n/);
    assert.match(r!.head, /\r\nl5d-proxy-error: app protocol error\r\n/);
  });
});
