/**
 * The inbound HTTP/1.1 relay through a real InboundProxy, driven by raw TLS sockets presenting a
 * CA-issued client certificate: what reaches the app byte for byte, and what the proxy refuses.
 * Every refusal that guards against request smuggling has a case here: the client gets 400 (431
 * for an oversize head), the connection closes, and the app receives no request.
 */
import { strict as assert } from 'node:assert';
import { EventEmitter } from 'node:events';
import { createServer as createHttpServer } from 'node:http';
import type { IncomingHttpHeaders, Server as HttpServer } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import type { AddressInfo, Server as NetServer, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { silentLogger } from '../../../core/logger.js';
import type { Address } from '../../../core/index.js';
import { InboundProxy } from '../../../proxy/inbound.js';
import type { InboundOptions } from '../../../proxy/inbound.js';
import type { InboundEvent } from '../../../proxy/inbound-events.js';
import { InboundPolicy } from '../../../proxy/policy.js';
import type { WorkloadCertificate } from '../../../proxy/index.js';
import { connectTls, createWorkloadPki, readAll, workloadId } from '../../support/proxy-pki.js';
import type { WorkloadPki } from '../../support/proxy-pki.js';

const SERVER_ID = workloadId('emojivoto', 'web');
const CLIENT_ID = workloadId('emojivoto', 'voting');
const LOOPBACK = '127.0.0.1';

interface Seen {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly rawHeaders: readonly string[];
  readonly trailers: readonly string[];
  readonly body: string;
}

/** An HTTP/1.1 app recording each request, and every byte that reached it. */
class App {
  readonly seen: Seen[] = [];
  readonly arrived = new EventEmitter();
  bytes = 0;
  connections = 0;
  readonly server: HttpServer;
  address: Address = { host: LOOPBACK, port: 0 };
  constructor() {
    this.server = createHttpServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (d: Buffer) => chunks.push(d));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('latin1');
        this.seen.push({
          method: req.method ?? '',
          url: req.url ?? '',
          headers: req.headers,
          rawHeaders: req.rawHeaders,
          trailers: req.rawTrailers,
          body,
        });
        this.arrived.emit('request');
        const url = req.url ?? '';
        if (url === '/empty') {
          res.writeHead(204).end();
        } else if (url === '/not-modified') {
          res.writeHead(304, { etag: '"x"' }).end();
        } else if (url === '/chunked') {
          res.writeHead(200, { 'content-type': 'text/plain' });
          res.write('part one, ');
          res.addTrailers({ 'x-sum': '42' });
          res.end('part two');
        } else {
          const text = `${req.method} ${url} ${body.length} ${body.slice(0, 40)}`;
          res.writeHead(200, { 'content-type': 'text/plain', 'content-length': text.length });
          res.end(req.method === 'HEAD' ? undefined : text);
        }
      });
    });
    this.server.on('connection', (s: Socket) => {
      this.connections++;
      s.on('data', (d: Buffer) => (this.bytes += d.length));
    });
  }
  clientIds(i: number): string[] {
    const raw = this.seen[i]?.rawHeaders ?? [];
    const out: string[] = [];
    for (let j = 0; j + 1 < raw.length; j += 2)
      if (raw[j]!.toLowerCase() === 'l5d-client-id') out.push(raw[j + 1]!);
    return out;
  }
}

describe('proxy inbound HTTP/1.1 relay', function () {
  this.timeout(20_000);
  let pki: WorkloadPki;
  let serverCert: WorkloadCertificate;
  let clientCert: WorkloadCertificate;
  const cleanups: (() => Promise<void> | void)[] = [];

  before(async () => {
    pki = await createWorkloadPki();
    serverCert = pki.workload(SERVER_ID);
    clientCert = pki.workload(CLIENT_ID);
  });

  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  async function listen(server: HttpServer | NetServer): Promise<Address> {
    await new Promise<void>((resolve) => server.listen(0, LOOPBACK, resolve));
    cleanups.push(
      () =>
        new Promise<void>((resolve) => {
          if ('closeAllConnections' in server) server.closeAllConnections();
          server.close(() => resolve());
        }),
    );
    return { host: LOOPBACK, port: (server.address() as AddressInfo).port };
  }

  async function startApp(): Promise<App> {
    const app = new App();
    app.address = await listen(app.server);
    return app;
  }

  async function startProxy(
    app: Address,
    o: Partial<InboundOptions> = {},
  ): Promise<{ proxy: InboundProxy; port: number; events: InboundEvent[] }> {
    const events: InboundEvent[] = [];
    const proxy = new InboundProxy({
      listen: { host: LOOPBACK, port: 0 },
      app,
      certificate: () => serverCert,
      anchorsPem: () => pki.anchorsPem,
      policy: new InboundPolicy(),
      logger: silentLogger(),
      observe: (e) => events.push(e),
      // The relay's own rules are under test: the app is declared HTTP/1.1 (no probe bytes).
      appPorts: new Map([[app.port, 'http1']]),
      ...o,
    });
    const bound = await proxy.listen();
    cleanups.push(() => proxy.close(100));
    return { proxy, port: bound.port, events };
  }

  async function client(port: number): Promise<TLSSocket> {
    const socket = await connectTls(port, {
      servername: SERVER_ID,
      anchorsPem: pki.anchorsPem,
      cert: clientCert,
    });
    cleanups.push(() => void socket.destroy());
    return socket;
  }

  /** Reads until `done` says the text so far is complete. */
  function readUntil(socket: Socket, done: (text: string) => boolean): Promise<string> {
    return new Promise((resolve, reject) => {
      let text = '';
      const onData = (d: Buffer): void => {
        text += d.toString('latin1');
        if (done(text)) {
          socket.off('data', onData);
          resolve(text);
        }
      };
      socket.on('data', onData);
      socket.once('close', () => reject(new Error(`closed after: ${JSON.stringify(text)}`)));
    });
  }

  const responses = (text: string): number => (text.match(/HTTP\/1\.1 \d\d\d /g) ?? []).length;

  /** Sends `raw` on a fresh connection; returns everything the proxy answered before closing. */
  async function exchange(port: number, raw: string | Buffer): Promise<string> {
    const socket = await client(port);
    const answer = readAll(socket);
    socket.write(raw);
    return answer;
  }

  describe('refuses what could be read two ways, with 400 and a close, and the app sees nothing', () => {
    const H = 'POST /x HTTP/1.1\r\nHost: web\r\n';
    const cases: [string, string | (() => string), number][] = [
      [
        'Content-Length together with Transfer-Encoding',
        `${H}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: web\r\n\r\n`,
        400,
      ],
      [
        'Transfer-Encoding before Content-Length',
        `${H}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n`,
        400,
      ],
      [
        'two differing Content-Length headers',
        `${H}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!`,
        400,
      ],
      [
        'two equal Content-Length headers',
        `${H}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello`,
        400,
      ],
      ['a Content-Length list', `${H}Content-Length: 5, 5\r\n\r\nhello`, 400],
      ['a signed Content-Length', `${H}Content-Length: +5\r\n\r\nhello`, 400],
      ['an empty Content-Length', `${H}Content-Length:\r\n\r\n`, 400],
      ['Transfer-Encoding gzip', `${H}Transfer-Encoding: gzip\r\n\r\nabc`, 400],
      [
        'Transfer-Encoding whose last coding is not chunked',
        `${H}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n`,
        400,
      ],
      ['chunked applied twice', `${H}Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n`, 400],
      [
        'two Transfer-Encoding headers',
        `${H}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
        400,
      ],
      ['a misspelt chunked', `${H}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n`, 400],
      [
        'Transfer-Encoding in an HTTP/1.0 request',
        'POST /x HTTP/1.0\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
        400,
      ],
      ['a folded header line (obs-fold)', `${H}X-A: one\r\n two\r\nContent-Length: 0\r\n\r\n`, 400],
      [
        'a folded line carrying a spoofed identity',
        `GET / HTTP/1.1\r\nHost: web\r\nX-A: a\r\n\tl5d-client-id: spoofed\r\n\r\n`,
        400,
      ],
      ['whitespace before a colon', `${H}Content-Length : 5\r\n\r\nhello`, 400],
      ['a tab before a colon', `${H}Transfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n`, 400],
      ['a bare LF ending a header line', `${H}X-A: 1\nContent-Length: 0\r\n\r\n`, 400],
      ['a bare LF ending the request line', 'GET / HTTP/1.1\nHost: web\r\n\r\n', 400],
      ['a bare LF ending the head', `GET / HTTP/1.1\r\nHost: web\r\n\n`, 400],
      ['a bare CR inside a value', `${H}X-A: 1\rContent-Length: 5\r\n\r\nhello`, 400],
      ['a NUL in a value', `${H}X-A: a\u0000b\r\nContent-Length: 0\r\n\r\n`, 400],
      ['a space inside a header name', `${H}Content Length: 5\r\n\r\nhello`, 400],
      ['a non-token character in a header name', `${H}X(A): 1\r\nContent-Length: 0\r\n\r\n`, 400],
      ['a line without a colon', `${H}Content-Length 5\r\n\r\nhello`, 400],
      [
        'a head over 64 KiB',
        () => `GET / HTTP/1.1\r\nHost: web\r\nX-Big: ${'a'.repeat(70_000)}\r\n\r\n`,
        431,
      ],
      [
        'an invalid chunk size',
        `${H}Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n`,
        400,
      ],
      [
        'a negative chunk size',
        `${H}Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n`,
        400,
      ],
      [
        'a chunk size too large to represent',
        `${H}Transfer-Encoding: chunked\r\n\r\n10000000000000000\r\nhello\r\n0\r\n\r\n`,
        400,
      ],
      ['an empty chunk size', `${H}Transfer-Encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n`, 400],
      [
        'a chunk size line ended by a bare LF',
        `${H}Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n`,
        400,
      ],
      [
        'chunk data longer than its size',
        `${H}Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n`,
        400,
      ],
      ['a request without Host', 'GET / HTTP/1.1\r\n\r\n', 400],
      ['a request with two Host headers', 'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n', 400],
      ['CONNECT', 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n', 405],
      ['two spaces in the request line', 'GET  / HTTP/1.1\r\nHost: web\r\n\r\n', 400],
      ['an unknown HTTP version', 'GET / HTTP/1.2\r\nHost: web\r\n\r\n', 400],
    ];
    for (const [name, raw, status] of cases) {
      it(`refuses ${name}`, async () => {
        const app = await startApp();
        const { port, events } = await startProxy(app.address);
        const answer = await exchange(port, typeof raw === 'function' ? raw() : raw);
        assert.match(answer, new RegExp(`^HTTP/1\\.1 ${status} `));
        assert.match(answer, /\r\nconnection: close\r\n/);
        assert.match(answer, /\r\nl5d-proxy-error: /);
        assert.equal(responses(answer), 1, answer);
        assert.equal(app.seen.length, 0);
        assert.equal(app.bytes, 0, 'no byte of a refused request reaches the app');
        assert.equal(events.filter((e) => e.type === 'http-request').length, 0);
      });
    }

    it('answers the requests before a refused one first, then refuses it', async () => {
      const app = await startApp();
      const { port } = await startProxy(app.address);
      const answer = await exchange(
        port,
        'GET /one HTTP/1.1\r\nHost: web\r\n\r\n' +
          'POST /two HTTP/1.1\r\nHost: web\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
      );
      assert.match(answer, /^HTTP\/1\.1 200 [\s\S]*GET \/one 0 [\s\S]*HTTP\/1\.1 400 /);
      assert.deepEqual(
        app.seen.map((s) => s.url),
        ['/one'],
      );
    });

    it('refuses a bad chunk in a body that arrives after its head, and the app never gets a request', async () => {
      const app = await startApp();
      const { port } = await startProxy(app.address);
      const socket = await client(port);
      const answer = readAll(socket);
      socket.write(
        'POST /slow HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n',
      );
      await new Promise((r) => setTimeout(r, 50));
      socket.write('nope\r\n');
      assert.match(await answer, /^HTTP\/1\.1 400 /);
      assert.equal(app.seen.length, 0);
    });
  });

  describe('forwards', () => {
    it('never lets a spoofed l5d-client-id through on any of three pipelined requests', async () => {
      const app = await startApp();
      const { port, events } = await startProxy(app.address);
      const socket = await client(port);
      const answer = readUntil(socket, (t) => responses(t) === 3 && t.endsWith('chunked-body'));
      socket.write(
        'GET /one HTTP/1.1\r\nHost: web\r\n\r\n' +
          'POST /two HTTP/1.1\r\nHost: web\r\nl5d-client-id: spoofed-2\r\nContent-Length: 4\r\nL5D-CLIENT-ID: spoofed-2b\r\n\r\nbody' +
          'POST /three HTTP/1.1\r\nhost: web\r\nTransfer-Encoding: chunked\r\nL5d-Client-Id: spoofed-3\r\nl5d-client-id:spoofed-3b\r\n\r\n' +
          '7\r\nchunked\r\n5;ext=1\r\n-body\r\n0\r\nl5d-client-id: spoofed-trailer\r\nx-t: kept\r\n\r\n',
      );
      const text = await answer;
      assert.match(
        text,
        /GET \/one 0 [\s\S]*POST \/two 4 body[\s\S]*POST \/three 12 chunked-body$/,
      );
      assert.equal(app.seen.length, 3);
      for (const i of [0, 1, 2]) assert.deepEqual(app.clientIds(i), [CLIENT_ID]);
      assert.doesNotMatch(JSON.stringify(app.seen), /spoofed/);
      assert.deepEqual(app.seen[2]?.trailers, ['x-t', 'kept']);
      assert.equal(app.connections, 1);
      const requests = events.filter((e) => e.type === 'http-request');
      assert.deepEqual(
        requests.map((e) => [e.method, e.status, e.peer]),
        [
          ['GET', 200, CLIENT_ID],
          ['POST', 200, CLIENT_ID],
          ['POST', 200, CLIENT_ID],
        ],
      );
    });

    it('strips spoofed copies from a head that arrives one byte at a time', async () => {
      const app = await startApp();
      const { port } = await startProxy(app.address);
      const socket = await client(port);
      const answer = readUntil(socket, (t) => /GET \/slow 0 $/.test(t));
      const head = 'GET /slow HTTP/1.1\r\nHost: web\r\nl5d-client-id: spoofed\r\n\r\n';
      for (const ch of head) {
        socket.write(ch);
        await new Promise((r) => setImmediate(r));
      }
      await answer;
      assert.deepEqual(app.clientIds(0), [CLIENT_ID]);
    });

    it('drops hop-by-hop fields and the names Connection lists (an h2c Upgrade too), keeping close and keep-alive', async () => {
      const app = await startApp();
      const { port } = await startProxy(app.address);
      const socket = await client(port);
      const answer = readUntil(socket, (t) => responses(t) === 1 && t.includes('GET /hop'));
      socket.write(
        'GET /hop HTTP/1.1\r\nHost: web\r\nConnection: keep-alive, X-Secret, Upgrade, l5d-client-id\r\nX-Secret: 1\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nX-Kept: yes\r\n\r\n',
      );
      await answer;
      const seen = app.seen[0]!;
      assert.equal(seen.headers['x-secret'], undefined);
      assert.equal(seen.headers['upgrade'], undefined);
      assert.equal(seen.headers['http2-settings'], undefined);
      assert.equal(seen.headers['keep-alive'], undefined);
      assert.equal(seen.headers['te'], undefined);
      assert.equal(seen.headers['connection'], 'keep-alive');
      assert.equal(seen.headers['x-kept'], 'yes');
      assert.deepEqual(app.clientIds(0), [CLIENT_ID]);
    });

    it('keeps the connection usable after HEAD, 204 and 304 answers (no body to wait for)', async () => {
      const app = await startApp();
      const { port } = await startProxy(app.address);
      const socket = await client(port);
      const answer = readUntil(socket, (t) => responses(t) === 4 && t.endsWith('GET /last 0 '));
      socket.write(
        'HEAD /head HTTP/1.1\r\nHost: web\r\n\r\n' +
          'GET /empty HTTP/1.1\r\nHost: web\r\n\r\n' +
          'GET /not-modified HTTP/1.1\r\nHost: web\r\n\r\n' +
          'GET /last HTTP/1.1\r\nHost: web\r\n\r\n',
      );
      const text = await answer;
      assert.match(
        text,
        /^HTTP\/1\.1 200 [\s\S]*HTTP\/1\.1 204 [\s\S]*HTTP\/1\.1 304 [\s\S]*HTTP\/1\.1 200 /,
      );
    });

    it('carries a chunked response with its trailers, then the next exchange', async () => {
      const app = await startApp();
      const { port } = await startProxy(app.address);
      const socket = await client(port);
      const answer = readUntil(socket, (t) => responses(t) === 2 && t.endsWith('GET /after 0 '));
      socket.write(
        'GET /chunked HTTP/1.1\r\nHost: web\r\n\r\nGET /after HTTP/1.1\r\nHost: web\r\n\r\n',
      );
      const text = await answer;
      assert.match(text, /transfer-encoding: chunked/i);
      assert.match(text, /part one, [\s\S]*part two[\s\S]*x-sum: 42/);
    });

    it('passes 100 Continue on, then the final answer', async () => {
      const app = await startApp();
      const { port } = await startProxy(app.address);
      const socket = await client(port);
      const cont = readUntil(socket, (t) => t.includes('100 Continue'));
      socket.write(
        'POST /expect HTTP/1.1\r\nHost: web\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n',
      );
      await cont;
      const final = readUntil(socket, (t) => t.includes('POST /expect 5 hello'));
      socket.write('hello');
      await final;
    });

    it('relays a large body both ways', async () => {
      const app = await startApp();
      const { port } = await startProxy(app.address);
      const socket = await client(port);
      const body = Buffer.alloc(4 * 1024 * 1024, 'x');
      const answer = readUntil(socket, (t) => t.includes(`POST /big ${body.length} xxx`));
      socket.write(`POST /big HTTP/1.1\r\nHost: web\r\nContent-Length: ${body.length}\r\n\r\n`);
      socket.write(body);
      await answer;
      assert.equal(app.seen[0]?.body.length, body.length);
    });

    it('reads a response delimited by the close of the connection', async () => {
      // An app that answers like an HTTP/1.0 server: no length, the body ends with the connection.
      const seen: string[] = [];
      const raw = createNetServer((s) => {
        s.on('data', (d: Buffer) => {
          seen.push(d.toString('latin1'));
          s.end('HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil close');
        });
      });
      const address = await listen(raw);
      const { port, events } = await startProxy(address);
      const answer = await exchange(
        port,
        'GET /old HTTP/1.1\r\nHost: web\r\nl5d-client-id: x\r\n\r\n',
      );
      assert.match(answer, /^HTTP\/1\.0 200 OK[\s\S]*\r\n\r\nuntil close$/);
      assert.equal(
        seen.join(''),
        `GET /old HTTP/1.1\r\nHost: web\r\nl5d-client-id: ${CLIENT_ID}\r\n\r\n`,
      );
      const done = events.find((e) => e.type === 'http-request');
      assert.equal(done?.type === 'http-request' ? done.status : -1, 200);
    });

    it('answers 502 naming the refused connection when the app is not listening', async () => {
      const gone = createNetServer();
      const address = await listen(gone);
      await new Promise<void>((resolve) => gone.close(() => resolve()));
      const { port, events } = await startProxy(address);
      const answer = await exchange(port, 'GET / HTTP/1.1\r\nHost: web\r\n\r\n');
      assert.match(answer, /^HTTP\/1\.1 502 [\s\S]*l5d-proxy-error: app refused connection/);
      assert.match(answer, /refused the connection \(ECONNREFUSED\): is it listening\?\n$/);
      const done = events.find((e) => e.type === 'http-request');
      assert.equal(done?.type === 'http-request' ? done.status : -1, 502);
    });

    it('closes after a request that asks to, ignoring what follows it', async () => {
      const app = await startApp();
      const { port } = await startProxy(app.address);
      const answer = await exchange(
        port,
        'GET /bye HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\nGET /ignored HTTP/1.1\r\nHost: web\r\n\r\n',
      );
      assert.equal(responses(answer), 1);
      assert.deepEqual(
        app.seen.map((s) => s.url),
        ['/bye'],
      );
    });
  });
});
