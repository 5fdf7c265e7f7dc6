/**
 * The outbound proxy against real, independent TLS peers: `openssl s_server` (requiring and
 * printing the client certificate) and node's own TLS, HTTPS and HTTP/2 servers. Certificates
 * come from meshid's own PKI code (root → issuer → LeafSigner leaves), two trust domains so that
 * "another anchor" is a real other anchor.
 */
import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { connect as netConnect, createServer as createNetServer } from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import type { Server as TlsServer, TLSSocket } from 'node:tls';
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import type { IncomingMessage } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Server as HttpsServer } from 'node:https';
import { connect as h2Connect, createSecureServer } from 'node:http2';
import type { Http2SecureServer, IncomingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import { rm } from 'node:fs/promises';
import { silentLogger } from '../../../core/logger.js';
import type { Address } from '../../../core/index.js';
import { PROXY_TLS, verifiedPeerIdentity } from '../../../proxy/tls.js';
import type { WorkloadCertificate } from '../../../proxy/index.js';
import { OutboundProxy } from '../../../proxy/outbound.js';
import type { OutboundOptions } from '../../../proxy/outbound.js';
import type { OutboundEvent } from '../../../proxy/outbound-events.js';
import type { Route } from '../../../proxy/routes.js';
import {
  freePort,
  leafPemOf,
  makeTrustDomain,
  startOpensslServer,
  tempDir,
  workloadId,
} from '../../support/outbound-pki.js';
import type { OpensslServer, TrustDomain } from '../../support/outbound-pki.js';

const WEB = workloadId('emojivoto', 'web');
const EMOJI = workloadId('emojivoto', 'emoji');
const VOTE = workloadId('emojivoto', 'voting');
const LOOPBACK: Address = { host: '127.0.0.1', port: 0 };

/** Collects events and lets a test wait for one (no polling, no sleeps). */
class Events {
  readonly all: OutboundEvent[] = [];
  readonly #waiters = new Set<() => void>();
  readonly observe = (e: OutboundEvent): void => {
    this.all.push(e);
    for (const w of [...this.#waiters]) w();
  };
  next<T extends OutboundEvent>(match: (e: OutboundEvent) => e is T): Promise<T>;
  next(match: (e: OutboundEvent) => boolean): Promise<OutboundEvent>;
  next(match: (e: OutboundEvent) => boolean): Promise<OutboundEvent> {
    return new Promise((resolve) => {
      const check = (): void => {
        const hit = this.all.find(match);
        if (hit !== undefined) {
          this.#waiters.delete(check);
          resolve(hit);
        }
      };
      this.#waiters.add(check);
      check();
    });
  }
}

type Failed = Extract<OutboundEvent, { type: 'handshake'; ok: false }>;
type Succeeded = Extract<OutboundEvent, { type: 'handshake'; ok: true }>;
type Closed = Extract<OutboundEvent, { type: 'closed' }>;
const failed = (e: OutboundEvent): e is Failed => e.type === 'handshake' && !e.ok;
const succeeded = (e: OutboundEvent): e is Succeeded => e.type === 'handshake' && e.ok;
const closed = (e: OutboundEvent): e is Closed => e.type === 'closed';

function connectTo(a: Address): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = netConnect({ host: a.host, port: a.port }, () => resolve(s));
    s.once('error', reject);
  });
}

/** Reads from `s` until the text has arrived; resolves with everything read. */
function readUntil(s: Socket, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const onData = (b: Buffer): void => {
      got += b.toString('latin1');
      if (got.includes(text)) {
        s.off('data', onData);
        resolve(got);
      }
    };
    s.on('data', onData);
    s.once('close', () => reject(new Error(`closed before "${text}"; got "${got}"`)));
  });
}

/** Resolves when the app's connection is closed by the proxy, with how it ended. */
function closedByProxy(s: Socket): Promise<{ error: string | undefined; data: string }> {
  return new Promise((resolve) => {
    let error: string | undefined;
    let data = '';
    s.on('data', (b: Buffer) => (data += b.toString('latin1')));
    s.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
    s.once('close', () => resolve({ error, data }));
  });
}

function listening<S extends TlsServer | HttpsServer | Http2SecureServer>(
  server: S,
): Promise<Address> {
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve({ host: '127.0.0.1', port: (server.address() as AddressInfo).port });
    });
  });
}

/** Server-side TLS options of a meshed peer: its leaf, client certificates required. */
function peerTls(cert: WorkloadCertificate, anchorsPem: string) {
  return {
    ...PROXY_TLS,
    key: cert.keyPem,
    cert: cert.certChainPem,
    ca: anchorsPem,
    requestCert: true,
    rejectUnauthorized: true,
  };
}

describe('OutboundProxy', function () {
  let dir: string;
  let mesh: TrustDomain;
  let other: TrustDomain;
  let clientCert: WorkloadCertificate;
  const cleanups: (() => Promise<void>)[] = [];

  before(async function () {
    dir = await tempDir();
    mesh = await makeTrustDomain('root.linkerd.cluster.local');
    other = await makeTrustDomain('root.elsewhere.example');
    clientCert = mesh.leaf(VOTE);
  });

  afterEach(async function () {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  after(async function () {
    await rm(dir, { recursive: true, force: true });
  });

  async function proxy(
    routes: readonly Route[],
    extra: Partial<OutboundOptions> = {},
  ): Promise<{ addresses: Address[]; events: Events; proxy: OutboundProxy }> {
    const events = new Events();
    const p = new OutboundProxy({
      routes,
      certificate: () => clientCert,
      anchorsPem: () => mesh.anchorsPem,
      logger: silentLogger(),
      observe: events.observe,
      ...extra,
    });
    const addresses = await p.listen();
    cleanups.push(() => p.close(0));
    return { addresses, events, proxy: p };
  }

  async function openssl(
    name: string,
    cert: WorkloadCertificate,
    args?: readonly string[],
  ): Promise<OpensslServer> {
    const s = await startOpensslServer(dir, name, cert, mesh.anchorsPem, args);
    cleanups.push(() => s.stop());
    return s;
  }

  function route(target: Address, identity: string): Route {
    return { listen: LOOPBACK, target, identity };
  }

  function track<S extends { close(cb?: () => void): unknown }>(server: S): S {
    cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    return server;
  }

  describe('against openssl s_server', function () {
    it('carries data both ways to the expected identity and presents the workload certificate', async function () {
      const server = await openssl('web', mesh.leaf(WEB));
      const { addresses, events } = await proxy([
        route({ host: '127.0.0.1', port: server.port }, WEB),
      ]);
      const app = await connectTo(addresses[0]!);
      app.write('ping from the app\n');
      await server.waitFor('ping from the app');
      // s_server verified (-verify_return_error) and printed the client certificate it got.
      assert.ok(server.output().includes(leafPemOf(clientCert.certChainPem).trim()));
      // TLS 1.3 suites are the only ones named TLS_*.
      assert.match(
        server.output(),
        /CIPHER is TLS_(AES_128_GCM_SHA256|AES_256_GCM_SHA384|CHACHA20_POLY1305_SHA256)\b/,
      );
      server.send('pong from the server\n');
      await readUntil(app, 'pong from the server');
      const ok = await events.next(succeeded);
      assert.equal(ok.peerIdentity, WEB);
      assert.equal(ok.expectedIdentity, WEB);
      app.end();
      const done = await events.next(closed);
      assert.equal(done.peerIdentity, WEB);
      assert.equal(done.bytesSent, 'ping from the app\n'.length);
      assert.equal(done.bytesReceived, 'pong from the server\n'.length);
    });

    it('refuses a server whose certificate names another identity, naming both', async function () {
      const server = await openssl('emoji', mesh.leaf(EMOJI));
      const { addresses, events } = await proxy([
        route({ host: '127.0.0.1', port: server.port }, WEB),
      ]);
      const app = await connectTo(addresses[0]!);
      const ended = closedByProxy(app);
      app.write('not for emoji\n');
      const f = await events.next(failed);
      assert.equal(f.reason, 'identity-mismatch');
      assert.match(f.message, new RegExp(EMOJI.replaceAll('.', '\\.')));
      assert.match(f.message, new RegExp(WEB.replaceAll('.', '\\.')));
      const how = await ended;
      assert.equal(how.data, '');
      assert.ok(!server.output().includes('not for emoji'));
      assert.ok(!events.all.some((e) => e.type === 'opened'));
    });

    it('refuses a server whose chain leads to another trust anchor', async function () {
      const server = await openssl('foreign-web', other.leaf(WEB));
      const { addresses, events } = await proxy([
        route({ host: '127.0.0.1', port: server.port }, WEB),
      ]);
      const app = await connectTo(addresses[0]!);
      const ended = closedByProxy(app);
      const f = await events.next(failed);
      assert.equal(f.reason, 'untrusted');
      await ended;
    });

    it('refuses a server that speaks only TLS 1.2', async function () {
      const server = await openssl('web12', mesh.leaf(WEB), ['-tls1_2']);
      const { addresses, events } = await proxy([
        route({ host: '127.0.0.1', port: server.port }, WEB),
      ]);
      const app = await connectTo(addresses[0]!);
      const ended = closedByProxy(app);
      const f = await events.next(failed);
      assert.equal(f.reason, 'tls-failed');
      assert.match(f.message, /version|protocol/i);
      await ended;
    });

    it('uses a renewed certificate for the next connection', async function () {
      const server = await openssl('web-renew', mesh.leaf(WEB));
      const first = clientCert;
      let current = first;
      const { addresses, events } = await proxy(
        [route({ host: '127.0.0.1', port: server.port }, WEB)],
        { certificate: () => current },
      );
      const a = await connectTo(addresses[0]!);
      a.write('first connection\n');
      await server.waitFor('first connection');
      a.end();
      await events.next(closed);
      const renewed = mesh.leaf(VOTE);
      current = renewed;
      const b = await connectTo(addresses[0]!);
      b.write('second connection\n');
      await server.waitFor('second connection');
      const out = server.output();
      const firstAt = out.indexOf(leafPemOf(first.certChainPem).trim());
      const renewedAt = out.indexOf(leafPemOf(renewed.certChainPem).trim());
      assert.ok(firstAt >= 0, 'first certificate presented');
      assert.ok(renewedAt > firstAt, 'renewed certificate presented on the second connection');
      b.end();
    });
  });

  describe('without a usable upstream', function () {
    it('closes the app connection while there is no certificate yet, and reports it', async function () {
      const target = { host: '127.0.0.1', port: await freePort() };
      const { addresses, events } = await proxy([route(target, WEB)], {
        certificate: () => undefined,
      });
      const app = await connectTo(addresses[0]!);
      const how = await closedByProxy(app);
      assert.equal(how.error, 'ECONNRESET');
      const f = await events.next(failed);
      assert.equal(f.reason, 'no-certificate');
    });

    it('reports connect-failed when nothing listens at the target', async function () {
      const target = { host: '127.0.0.1', port: await freePort() };
      const { addresses, events } = await proxy([route(target, WEB)]);
      const app = await connectTo(addresses[0]!);
      app.write('hello?');
      await closedByProxy(app);
      const f = await events.next(failed);
      assert.equal(f.reason, 'connect-failed');
    });

    it('gives up with timeout on a target that accepts TCP but never answers TLS', async function () {
      const silent = track(createNetServer(() => undefined));
      const silentSockets: Socket[] = [];
      silent.on('connection', (s: Socket) => silentSockets.push(s));
      await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
      cleanups.push(async () => {
        for (const s of silentSockets.splice(0)) s.destroy();
      });
      const target = { host: '127.0.0.1', port: (silent.address() as AddressInfo).port };
      const { addresses, events } = await proxy([route(target, WEB)], { connectTimeoutMs: 100 });
      const app = await connectTo(addresses[0]!);
      const how = await closedByProxy(app);
      assert.equal(how.error, 'ECONNRESET');
      const f = await events.next(failed);
      assert.equal(f.reason, 'timeout');
    });

    it('cancels the upstream attempt when the app leaves before the handshake', async function () {
      const silent = track(createNetServer(() => undefined));
      const silentSockets: Socket[] = [];
      silent.on('connection', (s: Socket) => silentSockets.push(s));
      await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
      cleanups.push(async () => {
        for (const s of silentSockets.splice(0)) s.destroy();
      });
      const target = { host: '127.0.0.1', port: (silent.address() as AddressInfo).port };
      const { addresses, events } = await proxy([route(target, WEB)], {
        protocolDetectTimeoutMs: 0,
      });
      const reached = new Promise<void>((resolve) => silent.once('connection', () => resolve()));
      const app = await connectTo(addresses[0]!);
      // Leave (a reset: a FIN alone is a half-close, which is carried) once the proxy's
      // upstream TCP connection has reached the silent server.
      await reached;
      app.resetAndDestroy();
      const f = await events.next(failed);
      assert.equal(f.reason, 'cancelled');
    });

    /** A meshed HTTP peer whose first `resets` TCP connections are reset before TLS begins. */
    async function flakyPeer(resets: number): Promise<{ target: Address; accepted: () => number }> {
      let accepted = 0;
      const tls = track(
        createTlsServer(peerTls(mesh.leaf(WEB), mesh.anchorsPem), (s: TLSSocket) => {
          s.on('error', () => undefined);
          void readUntil(s, '\r\n\r\n').then(
            () => s.end('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok'),
            () => undefined,
          );
        }),
      );
      tls.on('tlsClientError', () => undefined);
      // Registered after the TLS server's own listener: the raw socket is reset under it, as
      // a peer proxy closing (or a kernel resetting) just as the connection arrives.
      tls.on('connection', (raw: Socket) => {
        accepted++;
        if (accepted <= resets) raw.resetAndDestroy();
      });
      return { target: await listening(tls), accepted: () => accepted };
    }

    /** One HTTP/1.1 GET on a new connection: status, l5d-proxy-error and body, or the error code. */
    function getOnce(a: Address): Promise<{ status: number; reason: unknown; body: string }> {
      return new Promise((resolve, reject) => {
        const req = httpRequest({ host: a.host, port: a.port, path: '/', agent: false }, (res) => {
          let body = '';
          res.on('data', (d: Buffer) => (body += d.toString()));
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, reason: res.headers['l5d-proxy-error'], body }),
          );
        });
        req.on('error', reject);
        req.end();
      });
    }

    it('tries the upstream again when it was reset before anything was sent, and the app gets its answer', async function () {
      const peer = await flakyPeer(2);
      const { addresses, events } = await proxy([route(peer.target, WEB)]);
      // Before the fix the first reset reached the app as ECONNRESET.
      const got = await getOnce(addresses[0]!);
      assert.equal(got.status, 200);
      assert.equal(got.body, 'ok');
      assert.equal(peer.accepted(), 3);
      await events.next(succeeded);
      const failures = events.all.filter(failed);
      assert.equal(failures.length, 2);
      for (const f of failures) assert.match(f.reason, /^(tls|connect)-failed$/);
    });

    it('answers an HTTP app 502 naming the cause when every attempt was reset, never a bare reset', async function () {
      const peer = await flakyPeer(Number.POSITIVE_INFINITY);
      const { addresses, events } = await proxy([route(peer.target, WEB)]);
      const got = await getOnce(addresses[0]!);
      assert.equal(got.status, 502);
      assert.match(String(got.reason), /^(tls|connect)-failed$/);
      assert.match(got.body, /(TLS handshake|connect) failed: /);
      assert.equal(peer.accepted(), 3);
      assert.equal(events.all.filter(failed).length, 3);
    });

    it('resets an app that is not HTTP when every attempt was reset', async function () {
      const peer = await flakyPeer(Number.POSITIVE_INFINITY);
      const { addresses } = await proxy([route(peer.target, WEB)]);
      const app = await connectTo(addresses[0]!);
      app.write('\x00binary hello');
      const how = await closedByProxy(app);
      assert.equal(how.error, 'ECONNRESET');
      assert.equal(how.data, '');
      assert.equal(peer.accepted(), 3);
    });

    it('does not try an untrusted peer again, and tells an HTTP app why', async function () {
      const tls = track(
        createTlsServer(peerTls(other.leaf(WEB), other.anchorsPem), () => undefined),
      );
      let accepted = 0;
      tls.on('connection', () => accepted++);
      tls.on('tlsClientError', () => undefined);
      const target = await listening(tls);
      const { addresses } = await proxy([route(target, WEB)]);
      const got = await getOnce(addresses[0]!);
      assert.equal(got.status, 502);
      assert.equal(got.reason, 'untrusted');
      assert.match(got.body, /server certificate not trusted/);
      assert.equal(accepted, 1);
    });

    it('checks the server against the anchors in force when the connection opens', async function () {
      const tls = track(
        createTlsServer(peerTls(mesh.leaf(WEB), mesh.anchorsPem), (s) => s.end('hi\n')),
      );
      const target = await listening(tls);
      let anchors = other.anchorsPem;
      const { addresses, events } = await proxy([route(target, WEB)], {
        anchorsPem: () => anchors,
      });
      const a = await connectTo(addresses[0]!);
      await closedByProxy(a);
      assert.equal((await events.next(failed)).reason, 'untrusted');
      anchors = `${other.anchorsPem}${mesh.anchorsPem}`;
      const b = await connectTo(addresses[0]!);
      assert.ok((await readUntil(b, 'hi\n')).includes('hi'));
      b.end();
    });
  });

  describe('carrying application protocols unchanged', function () {
    it('carries an opaque echo with a half-close in each direction', async function () {
      let sawClient: string | undefined;
      const echo = track(
        createTlsServer(peerTls(mesh.leaf(WEB), mesh.anchorsPem), (s: TLSSocket) => {
          sawClient = verifiedPeerIdentity(s);
          const chunks: Buffer[] = [];
          s.on('data', (b: Buffer) => chunks.push(b));
          // Answer only after the client's FIN: the reply travels on a half-closed connection.
          s.on('end', () => s.end(Buffer.concat(chunks).reverse()));
        }),
      );
      echo.on('secureConnection', () => undefined);
      const target = await listening(echo);
      const { addresses, events } = await proxy([route(target, WEB)]);
      const app = await connectTo(addresses[0]!);
      const payload = Buffer.from(Array.from({ length: 70_000 }, (_, i) => i % 251));
      app.end(payload);
      const received: Buffer[] = [];
      app.on('data', (b: Buffer) => received.push(b));
      await new Promise<void>((resolve) => app.once('end', resolve));
      assert.deepEqual(Buffer.concat(received), Buffer.from(payload).reverse());
      assert.equal(sawClient, VOTE);
      const done = await events.next(closed);
      assert.equal(done.bytesSent, payload.length);
      assert.equal(done.bytesReceived, payload.length);
      assert.equal(done.error, undefined);
    });

    it('passes on a half-close the app sends before the handshake has finished', async function () {
      const server = track(
        createTlsServer(peerTls(mesh.leaf(WEB), mesh.anchorsPem), (s: TLSSocket) => {
          let got = '';
          s.on('data', (b: Buffer) => (got += b.toString()));
          s.on('end', () => s.end(`bye after "${got}"`));
        }),
      );
      const target = await listening(server);
      const { addresses } = await proxy([route(target, WEB)]);
      const app = await connectTo(addresses[0]!);
      // "PRI" could still be the HTTP/2 preface, so the FIN arrives while the proxy is deciding.
      app.end('PRI');
      let answer = '';
      app.on('data', (b: Buffer) => (answer += b.toString()));
      await new Promise<void>((resolve) => app.once('end', resolve));
      assert.equal(answer, 'bye after "PRI"');
    });

    it('carries HTTP/1.1 keep-alive: two requests on one app connection, one mTLS connection', async function () {
      let tlsConnections = 0;
      const clients: (string | undefined)[] = [];
      const https = track(
        createHttpsServer(peerTls(mesh.leaf(WEB), mesh.anchorsPem), (req, res) => {
          clients.push(verifiedPeerIdentity(req.socket as TLSSocket));
          res.end(`you asked for ${req.url ?? ''}`);
        }),
      );
      https.on('secureConnection', () => tlsConnections++);
      const target = await listening(https);
      const { addresses } = await proxy([route(target, WEB)]);
      const agent = new HttpAgent({ keepAlive: true, maxSockets: 1 });
      cleanups.push(async () => agent.destroy());
      const get = (path: string): Promise<{ body: string; reused: boolean }> =>
        new Promise((resolve, reject) => {
          const req = httpRequest(
            { agent, host: addresses[0]!.host, port: addresses[0]!.port, path },
            (res: IncomingMessage) => {
              let body = '';
              res.on('data', (b: Buffer) => (body += b.toString()));
              res.on('end', () => resolve({ body, reused: req.reusedSocket }));
            },
          );
          req.on('error', reject);
          req.end();
        });
      const one = await get('/one');
      const two = await get('/two');
      assert.equal(one.body, 'you asked for /one');
      assert.equal(two.body, 'you asked for /two');
      assert.equal(two.reused, true);
      assert.equal(tlsConnections, 1);
      assert.deepEqual(clients, [VOTE, VOTE]);
    });

    it('carries HTTP/2 to a server that requires the client certificate, offering ALPN h2 and SNI', async function () {
      let sni: string | false | null | undefined;
      let alpn: string | false | null | undefined;
      let client: string | undefined;
      const h2 = track(
        createSecureServer({ ...peerTls(mesh.leaf(WEB), mesh.anchorsPem), allowHTTP1: false }),
      );
      h2.on('secureConnection', (s: TLSSocket) => {
        sni = s.servername;
        alpn = s.alpnProtocol;
        client = verifiedPeerIdentity(s);
      });
      h2.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
        stream.respond({ ':status': 200, 'content-type': 'text/plain' });
        stream.end(`h2 ${String(headers[':path'])}`);
      });
      const target = await listening(h2);
      const { addresses } = await proxy([route(target, WEB)]);
      const session = h2Connect(`http://${addresses[0]!.host}:${addresses[0]!.port}`);
      cleanups.push(async () => {
        session.destroy();
      });
      const ask = (path: string): Promise<string> =>
        new Promise((resolve, reject) => {
          const req = session.request({ ':path': path });
          let body = '';
          req.on('data', (b: Buffer) => (body += b.toString()));
          req.on('end', () => resolve(body));
          req.on('error', reject);
          req.end();
        });
      assert.deepEqual(await Promise.all([ask('/a'), ask('/b')]), ['h2 /a', 'h2 /b']);
      assert.equal(sni, WEB);
      assert.equal(alpn, 'h2');
      assert.equal(client, VOTE);
    });
  });

  describe('protocols where the server speaks first', function () {
    it('carries a server greeting once the app has been silent for the detect window', async function () {
      const greeter = track(
        createTlsServer(peerTls(mesh.leaf(WEB), mesh.anchorsPem), (s) => {
          s.write('220 ready\n');
          s.on('data', (b: Buffer) => s.end(`got ${b.toString()}`));
        }),
      );
      const target = await listening(greeter);
      const { addresses } = await proxy([route(target, WEB)], { protocolDetectTimeoutMs: 50 });
      const app = await connectTo(addresses[0]!);
      await readUntil(app, '220 ready\n');
      app.write('HELO');
      await readUntil(app, 'got HELO');
    });
  });

  describe('closing', function () {
    it('stops accepting, lets an open connection finish within the grace, then resolves', async function () {
      const echo = track(
        createTlsServer(peerTls(mesh.leaf(WEB), mesh.anchorsPem), (s) => s.pipe(s)),
      );
      const target = await listening(echo);
      const { addresses, events, proxy: p } = await proxy([route(target, WEB)]);
      const app = await connectTo(addresses[0]!);
      app.write('before close\n');
      await readUntil(app, 'before close');
      const closing = p.close(60_000);
      // A new connection is refused once close() has begun.
      await assert.rejects(connectTo(addresses[0]!), /ECONNREFUSED/);
      // The open one still carries data.
      app.write('during grace\n');
      await readUntil(app, 'during grace');
      app.end();
      await closing;
      const done = await events.next(closed);
      assert.equal(done.error, undefined);
    });

    it('destroys connections still open when the grace runs out', async function () {
      const echo = track(
        createTlsServer(peerTls(mesh.leaf(WEB), mesh.anchorsPem), (s) => s.pipe(s)),
      );
      const target = await listening(echo);
      const { addresses, proxy: p } = await proxy([route(target, WEB)]);
      const app = await connectTo(addresses[0]!);
      app.write('x');
      await readUntil(app, 'x');
      const ended = closedByProxy(app);
      await p.close(50);
      await ended;
      assert.equal(app.destroyed, true);
    });
  });
});
