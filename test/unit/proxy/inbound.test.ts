/**
 * The inbound proxy against independent peers: openssl s_client for the TLS 1.3 handshake rules,
 * curl for HTTP/1.1 and HTTP/2, node's http2 client for gRPC-style trailers, raw TLS sockets for
 * opaque traffic, and small apps on loopback that record what reached them. Certificates are
 * minted per run with core's PKI and identity-ca's LeafSigner.
 */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { EventEmitter, once } from 'node:events';
import { createServer as createHttpServer } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { IncomingHttpHeaders, Server as HttpServer } from 'node:http';
import {
  connect as http2Connect,
  constants as h2,
  createServer as createHttp2Server,
} from 'node:http2';
import type { Http2Server, IncomingHttpHeaders as H2Headers, ServerHttp2Stream } from 'node:http2';
import { connect as netConnect, createServer as createNetServer } from 'node:net';
import type { AddressInfo, Server as NetServer } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { ConnectionOptions, TLSSocket } from 'node:tls';
import { silentLogger } from '../../../core/logger.js';
import type { Address } from '../../../core/index.js';
import { InboundProxy } from '../../../proxy/inbound.js';
import type { InboundOptions } from '../../../proxy/inbound.js';
import type { InboundEvent } from '../../../proxy/inbound-events.js';
import { InboundPolicy } from '../../../proxy/policy.js';
import type { WorkloadCertificate } from '../../../proxy/index.js';
import {
  DAY,
  connectTls,
  createWorkloadPki,
  pemDir,
  readAll,
  workloadId,
} from '../../support/proxy-pki.js';
import type { PemDir, WorkloadFiles, WorkloadPki } from '../../support/proxy-pki.js';

const SERVER_ID = workloadId('emojivoto', 'web');
const CLIENT_ID = workloadId('emojivoto', 'voting');
const OTHER_ID = workloadId('emojivoto', 'emoji');
const LOOPBACK = '127.0.0.1';

// ---- small helpers ----

function portOf(server: NetServer | HttpServer | Http2Server): number {
  return (server.address() as AddressInfo).port;
}

async function listen<S extends NetServer | HttpServer | Http2Server>(server: S): Promise<Address> {
  await new Promise<void>((resolve) => server.listen(0, LOOPBACK, resolve));
  return { host: LOOPBACK, port: portOf(server) };
}

function closeServer(server: NetServer | HttpServer | Http2Server): Promise<void> {
  return new Promise((resolve) => {
    if ('closeAllConnections' in server) server.closeAllConnections();
    server.close(() => resolve());
  });
}

/** Runs a command with stdin; kills it after 15 s so that a hung peer fails the test. */
function run(
  cmd: string,
  args: readonly string[],
  input = '',
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(input);
  });
}

/** Events from a proxy, with a wait for one that matches (no sleeping). */
class Recorder {
  readonly events: InboundEvent[] = [];
  readonly #emitter = new EventEmitter();
  readonly observe = (e: InboundEvent): void => {
    this.events.push(e);
    this.#emitter.emit('event', e);
  };
  of<T extends InboundEvent['type']>(type: T): Extract<InboundEvent, { type: T }>[] {
    return this.events.filter((e): e is Extract<InboundEvent, { type: T }> => e.type === type);
  }
  async waitFor<T extends InboundEvent['type']>(
    type: T,
    accept: (e: Extract<InboundEvent, { type: T }>) => boolean = () => true,
  ): Promise<Extract<InboundEvent, { type: T }>> {
    const match = (e: InboundEvent): e is Extract<InboundEvent, { type: T }> =>
      e.type === type && accept(e as Extract<InboundEvent, { type: T }>);
    const seen = this.events.find(match);
    if (seen !== undefined) return seen;
    const signal = AbortSignal.timeout(10_000);
    for (;;) {
      const [e] = (await once(this.#emitter, 'event', { signal })) as [InboundEvent];
      if (match(e)) return e;
    }
  }
}

// ---- apps behind the proxy ----

interface SeenRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly rawHeaders: readonly string[];
  readonly body: string;
}

/** An HTTP/1.1 app that records requests and echoes bodies; `/hold` waits for `release()`. */
class Http1App {
  readonly seen: SeenRequest[] = [];
  readonly arrived = new EventEmitter();
  readonly server: HttpServer;
  #held: (() => void)[] = [];
  constructor() {
    this.server = createHttpServer((req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (d: string) => (body += d));
      req.on('end', () => {
        this.seen.push({
          method: req.method ?? '',
          url: req.url ?? '',
          headers: req.headers,
          rawHeaders: req.rawHeaders,
          body,
        });
        this.arrived.emit('request');
        const answer = (): void => {
          res.writeHead(201, { 'x-app': 'http1', 'content-type': 'text/plain' });
          res.end(`echo ${req.method} ${req.url} ${body}`);
        };
        if (req.url === '/hold') this.#held.push(answer);
        else answer();
      });
    });
  }
  release(): void {
    for (const a of this.#held.splice(0)) a();
  }
  clientIds(i: number): string[] {
    const raw = this.seen[i]?.rawHeaders ?? [];
    const out: string[] = [];
    for (let j = 0; j + 1 < raw.length; j += 2) {
      if (raw[j]!.toLowerCase() === 'l5d-client-id') out.push(raw[j + 1]!);
    }
    return out;
  }
}

/** An h2c app answering gRPC-style: data then trailers, or trailers-only for `/test.Svc/Fail`. */
class Http2App {
  readonly seen: { headers: H2Headers; body: Buffer }[] = [];
  readonly server: Http2Server;
  constructor() {
    this.server = createHttp2Server();
    this.server.on('stream', (stream: ServerHttp2Stream, headers: H2Headers) => {
      const chunks: Buffer[] = [];
      stream.on('data', (d: Buffer) => chunks.push(d));
      stream.on('end', () => {
        const body = Buffer.concat(chunks);
        this.seen.push({ headers, body });
        if (headers[':path'] === '/test.Svc/Fail') {
          stream.respond(
            {
              ':status': 200,
              'content-type': 'application/grpc',
              'grpc-status': '5',
              'grpc-message': 'not found',
            },
            { endStream: true },
          );
          return;
        }
        stream.respond(
          {
            ':status': 200,
            'content-type': headers['content-type'] ?? 'text/plain',
            'x-app': 'h2',
          },
          { waitForTrailers: true },
        );
        stream.on('wantTrailers', () =>
          stream.sendTrailers({ 'grpc-status': '0', 'x-trailer': 'tail' }),
        );
        stream.end(
          body.length > 0 ? body : Buffer.from(`h2 ${headers[':method']} ${headers[':path']}`),
        );
      });
    });
  }
}

/** A TCP app: echoes what it gets (half-closing after the client does), optionally greeting first. */
class TcpApp {
  connections = 0;
  readonly server: NetServer;
  constructor(greeting?: string) {
    this.server = createNetServer({ allowHalfOpen: true }, (s) => {
      this.connections++;
      s.on('error', () => undefined);
      if (greeting !== undefined) s.write(greeting);
      s.pipe(s);
    });
  }
}

// ---- fixture ----

interface Fixture {
  pki: WorkloadPki;
  otherPki: WorkloadPki;
  serverCert: WorkloadCertificate;
  clientCert: WorkloadCertificate;
  pem: PemDir;
  anchorsFile: string;
  client: WorkloadFiles;
  otherClient: WorkloadFiles;
  foreignClient: WorkloadFiles;
  expiredClient: WorkloadFiles;
}

describe('proxy inbound', function () {
  this.timeout(30_000);
  let f: Fixture;
  const cleanups: (() => Promise<void> | void)[] = [];

  before(async () => {
    const pki = await createWorkloadPki();
    const otherPki = await createWorkloadPki('other-root.example');
    const pem = await pemDir();
    const clientCert = pki.workload(CLIENT_ID);
    const now = Date.now();
    f = {
      pki,
      otherPki,
      serverCert: pki.workload(SERVER_ID),
      clientCert,
      pem,
      anchorsFile: await pem.writeText('anchors.pem', pki.anchorsPem),
      client: await pem.write('client', clientCert),
      otherClient: await pem.write('other', pki.workload(OTHER_ID)),
      foreignClient: await pem.write('foreign', otherPki.workload(CLIENT_ID)),
      expiredClient: await pem.write(
        'expired',
        pki.workload(CLIENT_ID, { notBefore: now - 2 * DAY, notAfter: now - DAY }),
      ),
    };
  });

  after(async () => {
    await f.pem.remove();
  });

  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  async function startApp<T extends { server: NetServer | HttpServer | Http2Server }>(
    app: T,
  ): Promise<T & { address: Address }> {
    const address = await listen(app.server);
    cleanups.push(() => closeServer(app.server));
    return Object.assign(app, { address });
  }

  async function startProxy(
    app: Address,
    o: Partial<InboundOptions> = {},
  ): Promise<{ proxy: InboundProxy; port: number; rec: Recorder }> {
    const rec = new Recorder();
    const proxy = new InboundProxy({
      listen: { host: LOOPBACK, port: 0 },
      app,
      certificate: () => f.serverCert,
      anchorsPem: () => f.pki.anchorsPem,
      policy: new InboundPolicy(),
      logger: silentLogger(),
      observe: rec.observe,
      ...o,
    });
    const bound = await proxy.listen();
    cleanups.push(() => proxy.close(100));
    return { proxy, port: bound.port, rec };
  }

  /** A node TLS client presenting `cert` (or none), trusting `anchors`. */
  async function tlsClient(
    port: number,
    cert: WorkloadCertificate | undefined,
    extra: ConnectionOptions = {},
  ): Promise<TLSSocket> {
    const socket = await connectTls(port, {
      servername: SERVER_ID,
      anchorsPem: f.pki.anchorsPem,
      cert,
      extra,
    });
    cleanups.push(() => void socket.destroy());
    return socket;
  }

  function sClient(port: number, files: WorkloadFiles | undefined, ...args: string[]) {
    const request = `GET /via-openssl HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n`;
    return run(
      'openssl',
      [
        's_client',
        '-connect',
        `${LOOPBACK}:${port}`,
        '-servername',
        SERVER_ID,
        '-CAfile',
        f.anchorsFile,
        '-verify_return_error',
        '-ign_eof',
        ...(files !== undefined
          ? ['-cert', files.leafFile, '-cert_chain', files.issuerFile, '-key', files.keyFile]
          : []),
        ...args,
      ],
      request,
    );
  }

  function curlArgs(port: number, files: WorkloadFiles, ...args: string[]): string[] {
    return [
      '--silent',
      '--show-error',
      '--cacert',
      f.anchorsFile,
      '--cert',
      files.chainFile,
      '--key',
      files.keyFile,
      '--resolve',
      `${SERVER_ID}:${port}:${LOOPBACK}`,
      ...args,
    ];
  }

  describe('TLS handshake (openssl s_client)', () => {
    it('completes a TLS 1.3 handshake with a CA-issued client certificate and reaches the app', async () => {
      const app = await startApp(new Http1App());
      const { port, rec } = await startProxy(app.address);
      const r = await sClient(port, f.client, '-tls1_3');
      assert.match(r.stdout, /TLSv1\.3/);
      assert.match(r.stdout, /HTTP\/1\.1 201/);
      assert.match(r.stdout, /echo GET \/via-openssl/);
      assert.deepEqual(app.clientIds(0), [CLIENT_ID]);
      // Debian's openssl (OpenSSL 3.0, no ML-KEM) is a classic-only peer: served with X25519 by
      // the default hybrid-preferred inbound, and both the group and the cipher are reported.
      assert.deepEqual(await rec.waitFor('handshake-succeeded'), {
        type: 'handshake-succeeded',
        peer: CLIENT_ID,
        tls: true,
        algorithms: { group: 'X25519', cipher: 'TLS_AES_128_GCM_SHA256' },
      });
    });

    const refusals: [string, () => WorkloadFiles | undefined, string, RegExp | undefined][] = [
      [
        'refuses a client that presents no certificate',
        () => undefined,
        'client-certificate-missing',
        undefined,
      ],
      [
        'refuses a client certificate from another trust anchor',
        () => f.foreignClient,
        'client-certificate-rejected',
        /ISSUER|VERIFY|SIGNATURE/,
      ],
      [
        'refuses an expired client certificate',
        () => f.expiredClient,
        'client-certificate-rejected',
        /CERT_HAS_EXPIRED/,
      ],
    ];
    for (const [name, files, reason, detail] of refusals) {
      it(name, async () => {
        const app = await startApp(new Http1App());
        const { port, rec } = await startProxy(app.address);
        const r = await sClient(port, files(), '-tls1_3');
        assert.doesNotMatch(r.stdout, /HTTP\/1\.1/);
        const e = await rec.waitFor('handshake-failed');
        assert.equal(e.reason, reason);
        if (detail !== undefined) assert.match(e.detail ?? '', detail);
        assert.equal(app.seen.length, 0);
        assert.equal(rec.of('handshake-succeeded').length, 0);
      });
    }

    it('refuses TLS 1.2', async () => {
      const app = await startApp(new Http1App());
      const { port, rec } = await startProxy(app.address);
      const r = await sClient(port, f.client, '-tls1_2');
      assert.notEqual(r.code, 0);
      assert.doesNotMatch(r.stdout, /HTTP\/1\.1/);
      assert.equal((await rec.waitFor('handshake-failed')).reason, 'tls-error');
      assert.equal(app.seen.length, 0);
    });

    it('refuses the handshake while the identity client has no certificate', async () => {
      const app = await startApp(new Http1App());
      const { port, rec } = await startProxy(app.address, { certificate: () => undefined });
      const r = await sClient(port, f.client, '-tls1_3');
      assert.notEqual(r.code, 0);
      assert.equal((await rec.waitFor('handshake-failed')).reason, 'no-certificate');
      assert.equal(app.seen.length, 0);
    });
  });

  describe('HTTP', () => {
    it('forwards HTTP/1.1 from curl with l5d-client-id set to the peer and every spoofed copy removed', async () => {
      const app = await startApp(new Http1App());
      const { port, rec } = await startProxy(app.address);
      const url = `https://${SERVER_ID}:${port}`;
      const r = await run(
        'curl',
        curlArgs(
          port,
          f.client,
          '--http1.1',
          '-H',
          'l5d-client-id: spoofed',
          '-H',
          'L5D-Client-Id: spoofed-again',
          '-H',
          'x-custom: kept',
          '--data-binary',
          'hello body',
          '-D',
          '-',
          `${url}/first?q=1`,
          '-H',
          'l5d-client-id: spoofed',
          `${url}/second`,
          '-w',
          '%{http_version}\\n',
        ),
      );
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /HTTP\/1\.1 201/);
      assert.match(r.stdout, /x-app: http1/i);
      assert.match(r.stdout, /echo POST \/first\?q=1 hello body/);
      assert.match(r.stdout, /echo POST \/second hello body/);
      assert.equal(app.seen.length, 2);
      for (const i of [0, 1]) assert.deepEqual(app.clientIds(i), [CLIENT_ID]);
      assert.equal(app.seen[0]?.headers['x-custom'], 'kept');
      assert.doesNotMatch(JSON.stringify(app.seen.map((s) => s.rawHeaders)), /spoofed/);
      // Both requests rode one keep-alive connection.
      assert.equal(rec.of('connection-opened').length, 1);
      assert.equal(rec.of('connection-opened')[0]?.protocol, 'http1');
      const requests = rec.of('http-request');
      assert.equal(requests.length, 2);
      assert.deepEqual(
        requests.map((q) => [q.protocol, q.method, q.status, q.peer]),
        [
          ['http1', 'POST', 201, CLIENT_ID],
          ['http1', 'POST', 201, CLIENT_ID],
        ],
      );
    });

    it('forwards HTTP/2 from curl to an h2c app with l5d-client-id set and the spoofed copy removed', async () => {
      const app = await startApp(new Http2App());
      const { port, rec } = await startProxy(app.address);
      const r = await run(
        'curl',
        curlArgs(
          port,
          f.client,
          '--http2',
          '-H',
          'l5d-client-id: spoofed',
          '-w',
          '\\n%{http_version} %{http_code}',
          `https://${SERVER_ID}:${port}/h2/path`,
        ),
      );
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /h2 GET \/h2\/path\n2 200$/);
      assert.equal(app.seen.length, 1);
      assert.equal(app.seen[0]?.headers['l5d-client-id'], CLIENT_ID);
      assert.equal(rec.of('connection-opened')[0]?.protocol, 'http2');
    });

    it('carries a gRPC-style HTTP/2 exchange with its trailers, and a trailers-only answer', async () => {
      const app = await startApp(new Http2App());
      const { port } = await startProxy(app.address);
      const session = http2Connect(`https://${LOOPBACK}:${port}`, {
        servername: SERVER_ID,
        ca: f.pki.anchorsPem,
        key: f.clientCert.keyPem,
        cert: f.clientCert.certChainPem,
      });
      cleanups.push(() => void session.destroy());
      const message = Buffer.from([0, 0, 0, 0, 3, 1, 2, 3]);
      const call = async (path: string) => {
        const req = session.request({
          ':method': 'POST',
          ':path': path,
          'content-type': 'application/grpc',
          te: 'trailers',
          'l5d-client-id': 'spoofed',
        });
        let headers: H2Headers = {};
        let trailers: H2Headers = {};
        const chunks: Buffer[] = [];
        req.on('response', (h) => (headers = h));
        req.on('trailers', (t) => (trailers = t));
        req.on('data', (d: Buffer) => chunks.push(d));
        req.end(message);
        await once(req, 'close');
        return { headers, trailers, body: Buffer.concat(chunks), rst: req.rstCode };
      };
      const ok = await call('/test.Svc/Echo');
      assert.equal(ok.headers[':status'], 200);
      assert.equal(ok.headers['content-type'], 'application/grpc');
      assert.deepEqual(ok.body, message);
      assert.equal(ok.trailers['grpc-status'], '0');
      assert.equal(ok.trailers['x-trailer'], 'tail');
      assert.equal(ok.rst, h2.NGHTTP2_NO_ERROR);
      assert.equal(app.seen[0]?.headers['l5d-client-id'], CLIENT_ID);
      assert.equal(app.seen[0]?.headers['te'], 'trailers');
      assert.deepEqual(app.seen[0]?.body, message);

      const fail = await call('/test.Svc/Fail');
      assert.equal(fail.headers['grpc-status'], '5');
      assert.equal(fail.headers['grpc-message'], 'not found');
      assert.equal(fail.body.length, 0);
    });

    it('answers 403 to an identity that is not on the allow-list, and the app sees nothing', async () => {
      const app = await startApp(new Http1App());
      const { port, rec } = await startProxy(app.address, {
        policy: new InboundPolicy({ serviceAccounts: ['emojivoto/voting'] }),
      });
      const r = await run(
        'curl',
        curlArgs(
          port,
          f.otherClient,
          '--http1.1',
          '-D',
          '-',
          `https://${SERVER_ID}:${port}/secret`,
        ),
      );
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /HTTP\/1\.1 403/);
      assert.match(r.stdout, /l5d-proxy-error: identity emoji\.emojivoto/i);
      assert.equal(app.seen.length, 0);
      assert.equal((await rec.waitFor('connection-closed')).authorized, false);

      // The allowed identity on the same listener goes through.
      const ok = await run(
        'curl',
        curlArgs(port, f.client, '--http1.1', `https://${SERVER_ID}:${port}/open`),
      );
      assert.match(ok.stdout, /echo GET \/open/);
      assert.equal(app.seen.length, 1);
    });

    it('answers a denied HTTP/2 request with 403 and a denied gRPC call with PERMISSION_DENIED', async () => {
      const app = await startApp(new Http2App());
      const { port } = await startProxy(app.address, {
        policy: new InboundPolicy({ identities: [OTHER_ID] }),
      });
      const ask = async (headers: Record<string, string>) => {
        const session = http2Connect(`https://${LOOPBACK}:${port}`, {
          servername: SERVER_ID,
          ca: f.pki.anchorsPem,
          key: f.clientCert.keyPem,
          cert: f.clientCert.certChainPem,
        });
        cleanups.push(() => void session.destroy());
        const req = session.request(headers);
        let got: H2Headers = {};
        req.on('response', (h) => (got = h));
        req.resume();
        req.end();
        await once(req, 'close');
        return got;
      };
      const plain = await ask({ ':path': '/x' });
      assert.equal(plain[':status'], 403);
      const grpc = await ask({
        ':method': 'POST',
        ':path': '/test.Svc/Echo',
        'content-type': 'application/grpc',
      });
      assert.equal(grpc['grpc-status'], '7');
      assert.equal(app.seen.length, 0);
    });
  });

  describe('opaque', () => {
    it('pipes opaque bytes to the app and back, and carries the half-close', async () => {
      const app = await startApp(new TcpApp());
      const { port, rec } = await startProxy(app.address);
      // No SNI: the default context must hold the current certificate too.
      const socket = await tlsClient(port, f.clientCert, {
        servername: '',
        checkServerIdentity: () => undefined,
      });
      const payload = Buffer.from([0, 1, 2, 3, 0xff, 0x16, 10, 13]);
      const received = readAll(socket);
      socket.end(payload);
      assert.equal(await received, payload.toString('latin1'));
      assert.equal(app.connections, 1);
      const closed = await rec.waitFor('connection-closed');
      assert.equal(closed.protocol, 'opaque');
      assert.equal(closed.peer, CLIENT_ID);
      assert.ok(closed.bytesIn > payload.length && closed.bytesOut > payload.length);
    });

    it('returns exactly the bytes sent, after the client half-closes', async () => {
      const app = await startApp(new TcpApp());
      const { port } = await startProxy(app.address);
      const socket = await tlsClient(port, f.clientCert);
      const payload = Buffer.from('\u0000binary opaque payload\u00ff', 'latin1');
      const chunks: Buffer[] = [];
      socket.on('data', (d: Buffer) => chunks.push(d));
      socket.end(payload);
      await once(socket, 'end');
      assert.deepEqual(Buffer.concat(chunks), payload);
    });

    it('connects a silent client to a server-speaks-first app after the detection timeout', async () => {
      const app = await startApp(new TcpApp('220 ready\r\n'));
      const { port, rec } = await startProxy(app.address, { detectTimeoutMs: 50 });
      const socket = await tlsClient(port, f.clientCert);
      socket.setEncoding('utf8');
      const [greeting] = (await once(socket, 'data')) as [string];
      assert.equal(greeting, '220 ready\r\n');
      assert.equal((await rec.waitFor('connection-opened')).protocol, 'opaque');
      socket.write('QUIT\r\n');
      const [echo] = (await once(socket, 'data')) as [string];
      assert.equal(echo, 'QUIT\r\n');
    });

    it('still parses HTTP from a client that waits out the detection timeout, so no header slips through', async () => {
      const app = await startApp(new Http1App());
      const { port, rec } = await startProxy(app.address, { detectTimeoutMs: 30 });
      const socket = await tlsClient(port, f.clientCert);
      await rec.waitFor('connection-opened', (e) => e.protocol === 'opaque');
      const response = readAll(socket);
      socket.write(
        'GET /late HTTP/1.1\r\nHost: web\r\nl5d-client-id: spoofed\r\nConnection: close\r\n\r\n',
      );
      assert.match(await response, /^HTTP\/1\.1 201[\s\S]*echo GET \/late/);
      assert.deepEqual(app.clientIds(0), [CLIENT_ID]);
    });

    it('closes a denied opaque connection without connecting to the app', async () => {
      const app = await startApp(new TcpApp());
      const { port, rec } = await startProxy(app.address, {
        policy: new InboundPolicy({ identities: [OTHER_ID] }),
      });
      const socket = await tlsClient(port, f.clientCert);
      const received = readAll(socket);
      socket.write(Buffer.from([1, 2, 3]));
      assert.equal(await received, '');
      const closed = await rec.waitFor('connection-closed');
      assert.equal(closed.authorized, false);
      assert.equal(app.connections, 0);
    });
  });

  describe('plaintext', () => {
    it('refuses plaintext by default', async () => {
      const app = await startApp(new Http1App());
      const { port, rec } = await startProxy(app.address);
      const socket = netConnect(port, LOOPBACK);
      cleanups.push(() => void socket.destroy());
      const received = readAll(socket);
      socket.write('GET / HTTP/1.1\r\nHost: web\r\n\r\n');
      assert.equal(await received, '');
      assert.equal((await rec.waitFor('handshake-failed')).reason, 'plaintext-refused');
      assert.equal(app.seen.length, 0);
    });

    it('serves plaintext when the policy allows unauthenticated peers, with no l5d-client-id', async () => {
      const app = await startApp(new Http1App());
      const { port, rec } = await startProxy(app.address, {
        policy: new InboundPolicy({ allowUnauthenticated: true }),
      });
      const r = await run('curl', [
        '--silent',
        '--show-error',
        '-H',
        'l5d-client-id: spoofed',
        `http://${LOOPBACK}:${port}/plain`,
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, 'echo GET /plain ');
      assert.deepEqual(app.clientIds(0), []);
      assert.deepEqual(await rec.waitFor('handshake-succeeded'), {
        type: 'handshake-succeeded',
        peer: undefined,
        tls: false,
      });
      // TLS on the same listener still requires a verified client certificate.
      const tls = await run(
        'curl',
        curlArgs(port, f.client, '--http1.1', `https://${SERVER_ID}:${port}/tls`),
      );
      assert.equal(tls.stdout, 'echo GET /tls ');
      assert.deepEqual(app.clientIds(1), [CLIENT_ID]);
    });

    it('serves h2c prior knowledge in plaintext mode', async () => {
      const app = await startApp(new Http2App());
      const { port } = await startProxy(app.address, {
        policy: new InboundPolicy({ allowUnauthenticated: true }),
      });
      const r = await run('curl', [
        '--silent',
        '--http2-prior-knowledge',
        '-H',
        'l5d-client-id: spoofed',
        `http://${LOOPBACK}:${port}/h2c`,
      ]);
      assert.equal(r.stdout, 'h2 GET /h2c');
      assert.equal(app.seen[0]?.headers['l5d-client-id'], undefined);
    });
  });

  describe('reloads', () => {
    it('presents a renewed certificate on new connections while existing ones keep working', async () => {
      const app = await startApp(new Http1App());
      let current = f.serverCert;
      const { port } = await startProxy(app.address, { certificate: () => current });
      const get = (path: string) =>
        new Promise<{ serial: string; body: string }>((resolve, reject) => {
          const req = httpsRequest(
            {
              host: LOOPBACK,
              port,
              path,
              servername: SERVER_ID,
              ca: f.pki.anchorsPem,
              key: f.clientCert.keyPem,
              cert: f.clientCert.certChainPem,
              agent: false,
            },
            (res) => {
              let body = '';
              res.setEncoding('utf8');
              res.on('data', (d: string) => (body += d));
              res.on('end', () =>
                resolve({
                  serial: (res.socket as TLSSocket).getPeerCertificate().serialNumber,
                  body,
                }),
              );
            },
          );
          req.on('error', reject);
          req.end();
        });
      // One kept-alive connection made before the renewal.
      const before = await new Promise<TLSSocket>((resolve, reject) => {
        const s = tlsConnect({
          host: LOOPBACK,
          port,
          servername: SERVER_ID,
          ca: f.pki.anchorsPem,
          key: f.clientCert.keyPem,
          cert: f.clientCert.certChainPem,
        });
        s.once('secureConnect', () => resolve(s));
        s.once('error', reject);
      });
      cleanups.push(() => void before.destroy());
      assert.equal(before.getPeerCertificate().serialNumber, f.serverCert.serialHex);

      current = f.pki.workload(SERVER_ID);
      const after = await get('/after');
      assert.equal(after.serial, current.serialHex);
      assert.notEqual(current.serialHex, f.serverCert.serialHex);

      const response = new Promise<string>((resolve) => {
        let out = '';
        before.setEncoding('utf8');
        before.on('data', (d: string) => {
          out += d;
          if (out.includes('echo GET /old')) resolve(out);
        });
      });
      before.write('GET /old HTTP/1.1\r\nHost: web\r\n\r\n');
      assert.match(await response, /HTTP\/1\.1 201/);
    });

    it('verifies new connections against a reloaded anchor bundle', async () => {
      const app = await startApp(new Http1App());
      let anchors = f.pki.anchorsPem;
      const { port, rec } = await startProxy(app.address, { anchorsPem: () => anchors });
      const foreign = f.otherPki.workload(CLIENT_ID);
      const refused = await tlsClient(port, foreign);
      await readAll(refused);
      assert.equal((await rec.waitFor('handshake-failed')).reason, 'client-certificate-rejected');

      anchors = f.pki.anchorsPem + f.otherPki.anchorsPem;
      const accepted = await tlsClient(port, foreign);
      const response = readAll(accepted);
      accepted.write('GET /foreign HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n');
      assert.match(await response, /echo GET \/foreign/);
      assert.deepEqual(app.clientIds(0), [CLIENT_ID]);
    });
  });

  describe('close', () => {
    it('stops accepting, lets an in-flight request finish, then resolves', async () => {
      const app = await startApp(new Http1App());
      const { proxy, port } = await startProxy(app.address);
      const socket = await tlsClient(port, f.clientCert);
      const response = readAll(socket);
      socket.write('GET /hold HTTP/1.1\r\nHost: web\r\n\r\n');
      await once(app.arrived, 'request');

      let closed = false;
      const closing = proxy.close(10_000).then(() => (closed = true));
      // New connections are refused while the old one drains.
      const refused = netConnect(port, LOOPBACK);
      const [err] = (await once(refused, 'error')) as [NodeJS.ErrnoException];
      assert.equal(err.code, 'ECONNREFUSED');
      assert.equal(closed, false);

      app.release();
      const text = await response;
      assert.match(text, /HTTP\/1\.1 201/);
      assert.match(text, /connection: close/i);
      await closing;
    });

    it('destroys connections still open when the grace period ends', async () => {
      const app = await startApp(new TcpApp());
      const { proxy, port, rec } = await startProxy(app.address);
      const socket = await tlsClient(port, f.clientCert);
      socket.write('hold the line');
      await once(socket, 'data');
      await rec.waitFor('connection-opened');
      const ended = once(socket, 'close');
      await proxy.close(20);
      await ended;
      assert.equal(rec.of('connection-closed').length, 1);
    });
  });
});
