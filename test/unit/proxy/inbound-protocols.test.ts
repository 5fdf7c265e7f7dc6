/**
 * The inbound between clients and apps that speak different HTTP versions, with real peers:
 * curl (default ALPN, --http1.1, --http2), `openssl s_client -alpn h2`, node's HTTP/2 client
 * (trailers, slow reading), grpc-js, and a WebSocket client (`ws`), against an HTTP/1.1-only
 * app, an h2c-only app, a dual app and a grpc-js app. Every test sends spoofed `l5d-client-id`
 * copies (repeated, mixed case, in trailers and gRPC metadata) and asserts the app saw exactly
 * the verified identity. Also: 502/504 texts, Linkerd's transport header, what `detect` learns.
 */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile, writeFile } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { connect as http2Connect } from 'node:http2';
import type { ClientHttp2Session, IncomingHttpHeaders as H2Headers } from 'node:http2';
import { createServer as createNetServer } from 'node:net';
import type { AddressInfo, Server as NetServer } from 'node:net';
import { credentials, Metadata } from '@grpc/grpc-js';
import type { ServiceError } from '@grpc/grpc-js';
import WebSocket from 'ws';
import { MeshidError } from '../../../core/index.js';
import { silentLogger } from '../../../core/logger.js';
import type { Address } from '../../../core/index.js';
import { InboundProxy } from '../../../proxy/inbound.js';
import { AppProtocolDetector, parseAppProtocols } from '../../../proxy/app-protocol.js';
import {
  TRANSPORT_HEADER_ALPN,
  TransportHeaderError,
  decodeTransportHeaderMessage,
  encodeTransportHeader,
} from '../../../proxy/l5d-transport.js';
import type { InboundOptions } from '../../../proxy/inbound.js';
import { InboundPolicy } from '../../../proxy/policy.js';
import { MESH_H2_ALPN } from '../../../proxy/tls.js';
import type { WorkloadCertificate } from '../../../proxy/index.js';
import {
  connectTls,
  createWorkloadPki,
  pemDir,
  readAll,
  workloadId,
} from '../../support/proxy-pki.js';
import type { PemDir, WorkloadFiles, WorkloadPki } from '../../support/proxy-pki.js';
import { EchoClient, TestApp, bigBody, digestOf, sha256 } from '../../support/protocol-apps.js';
import type { AppKind } from '../../support/protocol-apps.js';

const SERVER_ID = workloadId('emojivoto', 'web');
const CLIENT_ID = workloadId('emojivoto', 'voting');
const LOOPBACK = '127.0.0.1';
const SPOOF = ['-H', 'l5d-client-id: spoofed-1', '-H', 'L5D-Client-ID: spoofed-2'];

function run(
  cmd: string,
  args: readonly string[],
  input = '',
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('latin1');
    child.stdout.on('data', (d: string) => (stdout += d));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(input);
  });
}

describe('proxy inbound across HTTP versions (curl, openssl, grpc-js, ws)', function () {
  this.timeout(60_000);
  let pki: WorkloadPki;
  let serverCert: WorkloadCertificate;
  let clientCert: WorkloadCertificate;
  let pem: PemDir;
  let anchorsFile: string;
  let files: WorkloadFiles;
  const apps = new Map<AppKind, TestApp>();
  const cleanups: (() => Promise<void> | void)[] = [];

  before(async () => {
    pki = await createWorkloadPki();
    serverCert = pki.workload(SERVER_ID);
    clientCert = pki.workload(CLIENT_ID);
    pem = await pemDir();
    anchorsFile = await pem.writeText('anchors.pem', pki.anchorsPem);
    files = await pem.write('client', clientCert);
    for (const kind of ['http1', 'h2', 'dual', 'grpc'] as const) {
      apps.set(kind, await TestApp.start(kind));
    }
  });
  after(async () => {
    for (const a of apps.values()) await a.close();
    await pem.remove();
  });
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  function app(kind: AppKind): TestApp {
    return apps.get(kind)!;
  }

  async function startInbound(to: Address, o: Partial<InboundOptions> = {}): Promise<number> {
    const proxy = new InboundProxy({
      listen: { host: LOOPBACK, port: 0 },
      app: to,
      certificate: () => serverCert,
      anchorsPem: () => pki.anchorsPem,
      policy: new InboundPolicy(),
      logger: silentLogger(),
      ...o,
    });
    const bound = await proxy.listen();
    cleanups.push(() => proxy.close(100));
    return bound.port;
  }

  function curl(port: number, ...args: string[]) {
    return run('curl', [
      '--silent',
      '--show-error',
      '--max-time',
      '20',
      '--cacert',
      anchorsFile,
      '--cert',
      files.chainFile,
      '--key',
      files.keyFile,
      '--resolve',
      `${SERVER_ID}:${port}:${LOOPBACK}`,
      '-w',
      '\n%{http_version} %{http_code}',
      ...args,
    ]);
  }

  function h2Session(port: number): ClientHttp2Session {
    const session = http2Connect(`https://${LOOPBACK}:${port}`, {
      servername: SERVER_ID,
      ca: pki.anchorsPem,
      key: clientCert.keyPem,
      cert: clientCert.certChainPem,
    });
    session.on('error', () => undefined);
    cleanups.push(() => void session.destroy());
    return session;
  }

  /** The last request the app saw. */
  function last(kind: AppKind) {
    const seen = app(kind).seen;
    return seen[seen.length - 1]!;
  }

  describe('curl and openssl to each app', () => {
    const modes = [
      { flag: [] as string[], name: 'curl with its default ALPN (h2 first)', version: '2' },
      { flag: ['--http1.1'], name: 'curl --http1.1', version: '1.1' },
      { flag: ['--http2'], name: 'curl --http2', version: '2' },
    ];
    for (const kind of ['http1', 'h2', 'dual'] as const) {
      for (const m of modes) {
        it(`${m.name} reaches the ${kind} app with only the verified l5d-client-id`, async () => {
          const port = await startInbound(app(kind).address);
          const before = app(kind).seen.length;
          const r = await curl(port, ...m.flag, ...SPOOF, `https://${SERVER_ID}:${port}/hello?x=1`);
          assert.equal(r.code, 0, r.stderr);
          const speaks = kind === 'http1' ? 'http1' : 'h2';
          assert.equal(
            r.stdout,
            `hello from the ${kind} app over ${speaks}: GET /hello?x=1\n\n${m.version} 200`,
          );
          assert.equal(app(kind).seen.length, before + 1);
          assert.deepEqual(last(kind).clientIds, [CLIENT_ID]);
          assert.equal(last(kind).host, `${SERVER_ID}:${port}`);
        });
      }
      it(`openssl s_client -alpn h2 speaking HTTP/1.1 reaches the ${kind} app with only the verified l5d-client-id`, async () => {
        const port = await startInbound(app(kind).address);
        const r = await run(
          'openssl',
          [
            's_client',
            ...['-connect', `${LOOPBACK}:${port}`, '-servername', SERVER_ID],
            ...['-CAfile', anchorsFile, '-verify_return_error', '-ign_eof', '-quiet'],
            ...['-cert', files.leafFile, '-cert_chain', files.issuerFile, '-key', files.keyFile],
            ...['-alpn', 'h2'],
          ],
          'GET /via-openssl HTTP/1.1\r\nHost: web\r\nl5d-client-id: spoofed\r\nL5D-CLIENT-ID: spoofed\r\nConnection: close\r\n\r\n',
        );
        assert.match(r.stdout, /^HTTP\/1\.1 200 /, r.stderr);
        assert.match(r.stdout, new RegExp(`hello from the ${kind} app over`));
        assert.deepEqual(last(kind).clientIds, [CLIENT_ID]);
      });
    }
  });

  describe('bodies and trailers across translation', () => {
    const upload = bigBody(4 * 1024 * 1024);

    it('carries 4 MB both ways, HTTP/2 client to the HTTP/1.1 app, bytes identical', async () => {
      const port = await startInbound(app('http1').address);
      const out = `${pem.dir}/up.bin`;
      await writeFile(out, upload);
      const r = await run('curl', [
        ...['--silent', '--show-error', '--http2', '--cacert', anchorsFile],
        ...['--cert', files.chainFile, '--key', files.keyFile],
        ...['--resolve', `${SERVER_ID}:${port}:${LOOPBACK}`, '-o', `${out}.back`],
        ...['--data-binary', `@${out}`, '-w', '%{http_version} %{http_code} %{size_download}'],
        `https://${SERVER_ID}:${port}/echo`,
      ]);
      assert.equal(r.stdout, `2 200 ${upload.length}`, r.stderr);
      assert.equal(last('http1').bodyLength, upload.length);
      assert.equal(last('http1').bodySha256, sha256(upload));
      assert.equal(sha256(await readFile(`${out}.back`)), sha256(upload));
    });

    it('carries a 4 MB chunked upload and its echo, HTTP/1.1 client to the h2 app, bytes identical', async () => {
      const port = await startInbound(app('h2').address);
      const out = `${pem.dir}/up2.bin`;
      await writeFile(out, upload);
      const r = await run('curl', [
        ...['--silent', '--show-error', '--http1.1', '--cacert', anchorsFile],
        ...['--cert', files.chainFile, '--key', files.keyFile],
        ...['--resolve', `${SERVER_ID}:${port}:${LOOPBACK}`, '-o', `${out}.back`],
        ...['-H', 'Transfer-Encoding: chunked', '--data-binary', `@${out}`],
        ...['-w', '%{http_version} %{http_code} %{size_download}'],
        `https://${SERVER_ID}:${port}/echo`,
      ]);
      assert.equal(r.stdout, `1.1 200 ${upload.length}`, r.stderr);
      assert.equal(last('h2').bodySha256, sha256(upload));
      assert.equal(sha256(await readFile(`${out}.back`)), sha256(upload));
    });

    it('keeps memory bounded for a slow HTTP/2 reader of an HTTP/1.1 app, then delivers every byte', async () => {
      const port = await startInbound(app('http1').address);
      const total = 24 * 1024 * 1024;
      const req = h2Session(port).request({ ':path': `/big?bytes=${total}` });
      req.pause();
      // The app fills what the path can hold, then has to wait for the reader.
      const written = await app('http1').untilStalled();
      assert.ok(written < 12 * 1024 * 1024, `the proxy buffered without bound: ${written}`);
      assert.deepEqual(await digestOf(req), { bytes: total, sha256: sha256(bigBody(total)) });
    });

    it('keeps memory bounded for a slow HTTP/1.1 reader of an h2 app, then delivers every byte', async () => {
      const port = await startInbound(app('h2').address);
      const total = 24 * 1024 * 1024;
      const socket = await connectTls(port, {
        servername: SERVER_ID,
        anchorsPem: pki.anchorsPem,
        cert: clientCert,
      });
      cleanups.push(() => void socket.destroy());
      socket.pause();
      socket.write(`GET /big?bytes=${total} HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n`);
      const written = await app('h2').untilStalled();
      assert.ok(written < 12 * 1024 * 1024, `buffered: ${written}`);
      const reading = readAll(socket);
      socket.resume();
      const text = await reading;
      const bodyStart = text.indexOf('\r\n\r\n') + 4;
      assert.match(text.slice(0, bodyStart), /^HTTP\/1\.1 200 [\s\S]*transfer-encoding: chunked/i);
      // Undo the chunked framing.
      const body: Buffer[] = [];
      let at = bodyStart;
      for (;;) {
        const eol = text.indexOf('\r\n', at);
        const size = parseInt(text.slice(at, eol), 16);
        if (size === 0) break;
        body.push(Buffer.from(text.slice(eol + 2, eol + 2 + size), 'latin1'));
        at = eol + 2 + size + 2;
      }
      assert.equal(sha256(Buffer.concat(body)), sha256(bigBody(total)));
    });

    for (const kind of ['http1', 'h2'] as const) {
      it(`drops an l5d-client-id an HTTP/2 client puts in its trailers (to the ${kind} app)`, async () => {
        const port = await startInbound(app(kind).address);
        const req = h2Session(port).request(
          { ':method': 'POST', ':path': '/echo', 'l5d-client-id': 'spoofed-header' },
          { waitForTrailers: true },
        );
        req.on('wantTrailers', () =>
          req.sendTrailers({ 'l5d-client-id': 'spoofed-trailer', 'x-other': 'kept' }),
        );
        req.end('body with trailers');
        req.resume();
        await once(req, 'end');
        assert.deepEqual(last(kind).clientIds, [CLIENT_ID]);
        assert.deepEqual(last(kind).trailerIds, []);
        assert.equal(last(kind).bodyLength, 'body with trailers'.length);
      });
    }

    it('drops an l5d-client-id an HTTP/1.1 client puts in chunked trailers (to the h2 app)', async () => {
      const port = await startInbound(app('h2').address);
      const socket = await connectTls(port, {
        servername: SERVER_ID,
        anchorsPem: pki.anchorsPem,
        cert: clientCert,
      });
      cleanups.push(() => void socket.destroy());
      const answer = readAll(socket);
      socket.write(
        'POST /echo HTTP/1.1\r\nHost: web\r\nl5d-client-id: a\r\nL5d-Client-Id: b\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nl5d-client-id: spoofed-trailer\r\nX-Other: kept\r\n\r\n',
      );
      assert.match(await answer, /^HTTP\/1\.1 200 [\s\S]*hello/);
      assert.deepEqual(last('h2').clientIds, [CLIENT_ID]);
      assert.deepEqual(last('h2').trailerIds, []);
    });

    it('turns HTTP/1.1 chunked response trailers into HTTP/2 trailers', async () => {
      const port = await startInbound(app('http1').address);
      const req = h2Session(port).request({ ':path': '/trailers' });
      let trailers: H2Headers = {};
      req.on('trailers', (t) => (trailers = t));
      req.resume();
      await once(req, 'end');
      assert.equal(trailers['x-checksum'], 'abc123');
    });
  });

  describe('gRPC and WebSocket', () => {
    it('carries a grpc-js call to the gRPC app, the spoofed metadata replaced by the verified identity', async () => {
      const port = await startInbound(app('grpc').address);
      const client = new EchoClient(
        `${LOOPBACK}:${port}`,
        credentials.createSsl(
          Buffer.from(pki.anchorsPem),
          Buffer.from(clientCert.keyPem),
          Buffer.from(clientCert.certChainPem),
        ),
        { 'grpc.ssl_target_name_override': SERVER_ID, 'grpc.default_authority': SERVER_ID },
      );
      cleanups.push(() => client.close());
      const md = new Metadata();
      md.add('l5d-client-id', 'spoofed');
      const reply = await new Promise<Buffer>((resolve, reject) =>
        client.makeUnaryRequest(
          '/test.Echo/Say',
          (b: Buffer) => b,
          (b: Buffer) => b,
          Buffer.from('ping'),
          md,
          (err: ServiceError | null, value?: Buffer) =>
            err === null ? resolve(value!) : reject(err),
        ),
      );
      assert.equal(reply.toString(), `grpc app saw ${CLIENT_ID}: ping`);
      assert.deepEqual(last('grpc').clientIds, [CLIENT_ID]);
    });

    function wsConnect(port: number): WebSocket {
      const ws = new WebSocket(`wss://${LOOPBACK}:${port}/ws`, {
        // Passed on to tls.connect, which ws's types do not list.
        ...({ servername: SERVER_ID } as object),
        ca: pki.anchorsPem,
        key: clientCert.keyPem,
        cert: clientCert.certChainPem,
        headers: { 'l5d-client-id': 'spoofed', 'L5D-CLIENT-ID': 'spoofed-2' },
      });
      cleanups.push(() => ws.terminate());
      return ws;
    }

    for (const kind of ['http1', 'dual'] as const) {
      it(`forwards a WebSocket to the ${kind} app with the verified identity on the upgrade request`, async () => {
        const port = await startInbound(app(kind).address);
        const ws = wsConnect(port);
        await once(ws, 'open');
        ws.send('hi');
        const [data] = (await once(ws, 'message')) as [Buffer];
        assert.equal(data.toString(), 'echo: hi');
        const binary = Buffer.from([0, 1, 2, 255]);
        ws.send(binary);
        const [back] = (await once(ws, 'message')) as [Buffer];
        assert.deepEqual(back, binary);
        assert.equal(last(kind).protocol, 'websocket');
        assert.deepEqual(last(kind).clientIds, [CLIENT_ID]);
      });
    }

    it('answers a WebSocket to the h2-only app with a 502 that says it speaks only HTTP/2', async () => {
      const port = await startInbound(app('h2').address);
      const ws = wsConnect(port);
      ws.on('error', () => undefined);
      const [, res] = (await once(ws, 'unexpected-response')) as [unknown, IncomingMessage];
      assert.equal(res.statusCode, 502);
      assert.equal(res.headers['l5d-proxy-error'], 'upgrade not accepted');
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      await once(res, 'end');
      assert.match(body, /HTTP\/2/);
    });
  });

  describe('errors users can act on', () => {
    const paths = [
      { kind: 'http1' as const, flag: '--http1.1', path: 'HTTP/1.1 relay' },
      { kind: 'http1' as const, flag: '--http2', path: 'HTTP/2 to HTTP/1.1' },
      { kind: 'h2' as const, flag: '--http1.1', path: 'HTTP/1.1 to HTTP/2' },
      { kind: 'h2' as const, flag: '--http2', path: 'HTTP/2 to HTTP/2' },
    ];
    for (const p of paths) {
      it(`answers 504 naming the timeout when the app is slow (${p.path})`, async () => {
        const port = await startInbound(app(p.kind).address, { appTimeoutMs: 300 });
        const r = await curl(port, p.flag, '-i', `https://${SERVER_ID}:${port}/slow`);
        // A complete answer: no reset or early close after it (curl exits 0).
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /l5d-proxy-error: app timeout/i, r.stderr);
        assert.match(
          r.stdout,
          /gateway timeout: the application at 127\.0\.0\.1:\d+ did not start its answer within 300 ms\n/,
        );
        assert.match(r.stdout, / 504$/);
      });
      it(`answers 502 naming the reset when the app resets (${p.path})`, async () => {
        const port = await startInbound(app(p.kind).address);
        const r = await curl(port, p.flag, '-i', `https://${SERVER_ID}:${port}/reset`);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /l5d-proxy-error: app (reset|closed connection)/i, r.stderr);
        assert.match(r.stdout, /bad gateway: the application at 127\.0\.0\.1:\d+ (reset|closed)/);
        assert.match(r.stdout, / 502$/);
      });
    }
    for (const flag of ['--http1.1', '--http2']) {
      it(`answers 502 naming the refused connection when nothing listens (curl ${flag})`, async () => {
        const gone = createNetServer();
        await new Promise<void>((resolve) => gone.listen(0, LOOPBACK, resolve));
        const address = { host: LOOPBACK, port: (gone.address() as AddressInfo).port };
        await new Promise<void>((resolve) => gone.close(() => resolve()));
        const port = await startInbound(address);
        const r = await curl(port, flag, `https://${SERVER_ID}:${port}/`);
        assert.match(
          r.stdout,
          /refused the connection \(ECONNREFUSED\): is it listening\?\n\n[\d.]+ 502$/,
          r.stderr,
        );
      });
    }
  });

  describe("Linkerd's transport header (transport.l5d.io/v1)", () => {
    let tcp: NetServer;
    let tcpAddress: Address;
    before(async () => {
      tcp = createNetServer((s) => s.pipe(s));
      await new Promise<void>((resolve) => tcp.listen(0, LOOPBACK, resolve));
      tcpAddress = { host: LOOPBACK, port: (tcp.address() as AddressInfo).port };
    });
    after(() => new Promise<void>((resolve) => tcp.close(() => resolve())));

    /** A client built to the contract: ALPN transport.l5d.io/v1, SNI = the inbound's identity. */
    async function linkerdClient(port: number, target: number, protocol?: 'http1' | 'http2') {
      const socket = await connectTls(port, {
        servername: SERVER_ID,
        anchorsPem: pki.anchorsPem,
        cert: clientCert,
        extra: { ALPNProtocols: [TRANSPORT_HEADER_ALPN] },
      });
      cleanups.push(() => void socket.destroy());
      assert.equal(socket.alpnProtocol, TRANSPORT_HEADER_ALPN);
      socket.write(encodeTransportHeader({ port: target, name: '', protocol }));
      return socket;
    }

    function appPorts(): Map<number, 'detect' | 'opaque'> {
      return new Map<number, 'detect' | 'opaque'>([
        [app('http1').address.port, 'detect'],
        [tcpAddress.port, 'opaque'],
      ]);
    }

    it('routes HTTP after the header to the port it names, with the verified identity', async () => {
      const port = await startInbound(app('http1').address, { appPorts: appPorts() });
      const socket = await linkerdClient(port, app('http1').address.port, 'http1');
      const answer = readAll(socket);
      socket.write(
        'GET /via-linkerd HTTP/1.1\r\nHost: web\r\nl5d-client-id: spoofed\r\nConnection: close\r\n\r\n',
      );
      assert.match(await answer, /^HTTP\/1\.1 200 [\s\S]*GET \/via-linkerd/);
      assert.deepEqual(last('http1').clientIds, [CLIENT_ID]);
    });

    it('pipes an opaque connection to the opaque app port the header names', async () => {
      const port = await startInbound(app('http1').address, { appPorts: appPorts() });
      const socket = await linkerdClient(port, tcpAddress.port);
      const answer = readAll(socket);
      socket.end('raw bytes \x00\x01 to an opaque port');
      assert.equal(await answer, 'raw bytes \x00\x01 to an opaque port');
    });

    it('closes a connection whose header names a port that is not one of the app ports', async () => {
      const port = await startInbound(app('http1').address, { appPorts: appPorts() });
      const before = app('http1').seen.length;
      const socket = await linkerdClient(port, 22);
      const answer = readAll(socket);
      socket.write('GET / HTTP/1.1\r\nHost: web\r\n\r\n');
      assert.equal(await answer, '');
      assert.equal(app('http1').seen.length, before);
    });

    it('closes a connection whose header is malformed', async () => {
      const port = await startInbound(app('http1').address, { appPorts: appPorts() });
      const socket = await connectTls(port, {
        servername: SERVER_ID,
        anchorsPem: pki.anchorsPem,
        cert: clientCert,
        extra: { ALPNProtocols: [TRANSPORT_HEADER_ALPN] },
      });
      cleanups.push(() => void socket.destroy());
      const answer = readAll(socket);
      socket.write('GET / HTTP/1.1\r\nHost: web\r\n\r\n');
      assert.equal(await answer, '');
    });

    it('decodes the protobuf as Linkerd encodes it and refuses bad ports', () => {
      assert.deepEqual(decodeTransportHeaderMessage(Buffer.from([0x08, 0x90, 0x3f])), {
        port: 8080,
        name: '',
        protocol: undefined,
      });
      const full = encodeTransportHeader({ port: 4040, name: 'web.svc', protocol: 'http2' });
      assert.deepEqual(decodeTransportHeaderMessage(full.subarray(25)), {
        port: 4040,
        name: 'web.svc',
        protocol: 'http2',
      });
      // int32 -1 is a 10-byte varint on the wire.
      const negative = Buffer.from([
        0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
      ]);
      assert.throws(() => decodeTransportHeaderMessage(negative), TransportHeaderError);
      assert.throws(
        () => decodeTransportHeaderMessage(Buffer.from([0x08, 0x80, 0x80, 0x04])),
        /invalid port 65536/,
      );
      assert.throws(
        () => decodeTransportHeaderMessage(Buffer.from([0x12, 0x05, 0x61])),
        /truncated/,
      );
    });
  });

  describe('what the app speaks', () => {
    it('learns http1, h2 and h2 for the HTTP/1.1, h2c and dual apps, once per port', async () => {
      const detector = new AppProtocolDetector({ timeoutMs: 5000 });
      assert.equal(await detector.resolve(app('http1').address, 'detect'), 'http1');
      assert.equal(await detector.resolve(app('h2').address, 'detect'), 'h2');
      assert.equal(await detector.resolve(app('dual').address, 'detect'), 'h2');
      assert.equal(await detector.resolve(app('grpc').address, 'detect'), 'h2');
      const first = detector.known(app('h2').address.port);
      await detector.resolve(app('h2').address, 'detect');
      assert.equal(detector.known(app('h2').address.port), first);
      assert.equal(detector.resolve(app('h2').address, 'http1'), 'http1');
    });

    it('does not cache a failed probe: the app may come up later', async () => {
      const s = createNetServer();
      await new Promise<void>((resolve) => s.listen(0, LOOPBACK, resolve));
      const address = { host: LOOPBACK, port: (s.address() as AddressInfo).port };
      await new Promise<void>((resolve) => s.close(() => resolve()));
      const detector = new AppProtocolDetector({ timeoutMs: 5000 });
      await assert.rejects(Promise.resolve(detector.resolve(address, 'detect')));
      assert.equal(detector.known(address.port), undefined);
    });

    it('parses --app-protocol per port and refuses bad entries by name', () => {
      assert.deepEqual(
        [...parseAppProtocols(8080, ['http1', '9090=h2', '7000=opaque'])],
        [
          [8080, 'http1'],
          [9090, 'h2'],
          [7000, 'opaque'],
        ],
      );
      assert.deepEqual([...parseAppProtocols(8080, [])], [[8080, 'detect']]);
      for (const bad of ['http3', '0=h2', '70000=h2', 'x=h2']) {
        assert.throws(
          () => parseAppProtocols(8080, [bad]),
          (e: unknown) =>
            e instanceof MeshidError && e.code === 'ERR_CONFIG_INVALID' && e.message.includes(bad),
        );
      }
      assert.throws(() => parseAppProtocols(8080, ['9090=h2', '9090=http1']), /given twice/);
    });

    it('serves an opaque app port without parsing HTTP (no l5d-client-id added)', async () => {
      const tcp = createNetServer((s) => s.pipe(s));
      await new Promise<void>((resolve) => tcp.listen(0, LOOPBACK, resolve));
      cleanups.push(() => new Promise<void>((resolve) => tcp.close(() => resolve())));
      const address = { host: LOOPBACK, port: (tcp.address() as AddressInfo).port };
      const port = await startInbound(address, { appPorts: new Map([[address.port, 'opaque']]) });
      const socket = await connectTls(port, {
        servername: SERVER_ID,
        anchorsPem: pki.anchorsPem,
        cert: clientCert,
      });
      cleanups.push(() => void socket.destroy());
      const answer = readAll(socket);
      socket.end('GET / HTTP/1.1\r\nHost: web\r\n\r\n');
      assert.equal(await answer, 'GET / HTTP/1.1\r\nHost: web\r\n\r\n');
    });

    it('selects the meshid proxy-to-proxy ALPN when offered', async () => {
      const port = await startInbound(app('http1').address);
      const socket = await connectTls(port, {
        servername: SERVER_ID,
        anchorsPem: pki.anchorsPem,
        cert: clientCert,
        extra: { ALPNProtocols: [MESH_H2_ALPN, 'http/1.1'] },
      });
      cleanups.push(() => void socket.destroy());
      assert.equal(socket.alpnProtocol, MESH_H2_ALPN);
    });
  });
});
