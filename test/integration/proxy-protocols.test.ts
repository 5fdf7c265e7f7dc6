/**
 * The protocol matrix through two meshid proxies, every proxy a real `meshid proxy` process:
 * a `voting` proxy (route listeners, and the HTTP listener that carries requests to the peer
 * over one multiplexed HTTP/2 mTLS connection) and one `web` proxy per app, in front of an
 * HTTP/1.1-only app, an h2c-only app, a dual app and a grpc-js app (each left at the default
 * `--app-protocol detect`). Clients: curl (default, --http1.1, --http2, --http2-prior-knowledge),
 * grpc-js and a WebSocket client through voting; curl with its default ALPN and
 * `openssl s_client -alpn h2` straight to web's inbound with voting's certificate, as a peer
 * proxy would connect. Every client sends spoofed `l5d-client-id` copies; every app must see
 * exactly voting's verified identity.
 */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import type { IncomingMessage } from 'node:http';
import { connect as http2Connect } from 'node:http2';
import { createServer as createNetServer } from 'node:net';
import type { AddressInfo, Server as NetServer } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { join } from 'node:path';
import { credentials, Metadata } from '@grpc/grpc-js';
import type { ServiceError } from '@grpc/grpc-js';
import WebSocket from 'ws';
import { formatAddress } from '../../core/index.js';
import type { Address } from '../../core/index.js';
import { TRANSPORT_HEADER_ALPN, encodeTransportHeader } from '../../proxy/l5d-transport.js';
import type { TransportHeader } from '../../proxy/l5d-transport.js';
import type { WorkloadCertificate } from '../../proxy/index.js';
import { adminGet, metricValue, startCaProcess, waitFor } from '../support/ca-process.js';
import type { CaProcess } from '../support/ca-process.js';
import { certificateFromCa, freePort, startProxyProcess } from '../support/proxy-process.js';
import type { ProxyProcess } from '../support/proxy-process.js';
import {
  EchoClient,
  TestApp,
  bigBody,
  digestOf,
  h2Answer,
  sha256,
} from '../support/protocol-apps.js';
import { connectTls, readAll } from '../support/proxy-pki.js';
import { rawH2Request } from '../support/raw-h2.js';
import type { AppKind } from '../support/protocol-apps.js';
import { idOf, makeTestState } from '../support/state.js';
import type { TestState } from '../support/state.js';

const WEB = idOf('emojivoto', 'web');
const VOTING = idOf('emojivoto', 'voting');
const KINDS = ['http1', 'h2', 'dual', 'grpc'] as const;
const HTTP_KINDS = ['http1', 'h2', 'dual'] as const;
const SPOOF = ['-H', 'l5d-client-id: spoofed-1', '-H', 'L5D-Client-Id: spoofed-2'];
/**
 * web's --app-timeout: the 504 tests wait this long. Every other test needs its app to start
 * answering within it: at 1.5 s, on a machine kept busy by another test run, the h2 app's `/big`
 * was answered with the proxy's 504 instead (92 bytes of "gateway timeout" where 48 MB were
 * expected; issue 20). 10 s is far beyond any honest start on loopback.
 */
const APP_TIMEOUT_MS = 10_000;

function run(
  cmd: string,
  args: readonly string[],
  input = '',
  env?: NodeJS.ProcessEnv,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], ...(env ? { env } : {}) });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
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

/** The resident set of a process, from /proc (bytes). */
async function rssOf(p: ProxyProcess): Promise<number> {
  const status = await readFile(`/proc/${p.proc.pid}/status`, 'utf8');
  const kb = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  assert.ok(kb, 'VmRSS in /proc status');
  return Number(kb[1]) * 1024;
}

describe('the protocol matrix through two meshid proxies (real processes)', function () {
  this.timeout(120_000);
  let state: TestState;
  let ca: CaProcess;
  const apps = new Map<AppKind, TestApp>();
  const webs = new Map<AppKind, ProxyProcess>();
  let voting: ProxyProcess;
  let l5dWeb: ProxyProcess;
  let anchorsPem: string;
  let tcpEcho: NetServer;
  let tcpEchoPort: number;
  let cert: {
    certFile: string;
    leafFile: string;
    issuerFile: string;
    keyFile: string;
    chainPem: string;
    keyPem: string;
  };

  before(async () => {
    state = await makeTestState();
    ca = await startCaProcess([...state.caArgs, '--workers', '1']);
    anchorsPem = await readFile(state.anchorsFile, 'utf8');
    for (const kind of KINDS) {
      const app = await TestApp.start(kind);
      apps.set(kind, app);
      webs.set(
        kind,
        await startProxyProcess({
          state,
          ca: formatAddress(ca.address),
          sa: 'web',
          args: [
            ...['--inbound', '127.0.0.1:0', '--app', formatAddress(app.address)],
            ...['--app-timeout', `${APP_TIMEOUT_MS}ms`],
          ],
        }),
      );
    }
    // A web proxy with more app ports, for Linkerd's transport header: the HTTP/1.1 app on the
    // main port (detect), the h2c app declared h2, and a TCP echo declared opaque.
    tcpEcho = createNetServer((sock) => sock.pipe(sock));
    await new Promise<void>((resolve) => tcpEcho.listen(0, '127.0.0.1', resolve));
    tcpEchoPort = (tcpEcho.address() as AddressInfo).port;
    l5dWeb = await startProxyProcess({
      state,
      ca: formatAddress(ca.address),
      sa: 'web',
      args: [
        ...['--inbound', '127.0.0.1:0', '--app', formatAddress(apps.get('http1')!.address)],
        ...['--app-protocol', `${apps.get('h2')!.address.port}=h2`],
        ...['--app-protocol', `${tcpEchoPort}=opaque`],
      ],
    });
    const args: string[] = ['--destination', `gone.web.svc=127.0.0.1:${await freePort()}@${WEB}`];
    for (const kind of KINDS) {
      const inbound = formatAddress(webs.get(kind)!.inbound!);
      args.push('--route', `127.0.0.1:0=${inbound}@${WEB}`);
      args.push('--destination', `${kind}.web.svc=${inbound}@${WEB}`);
    }
    voting = await startProxyProcess({
      state,
      ca: formatAddress(ca.address),
      sa: 'voting',
      args: [...args, '--outbound', '127.0.0.1:0'],
    });
    const { keyPem, chainPem } = await certificateFromCa(state, ca.address, 'emojivoto', 'voting');
    const dir = join(state.dir, 'client-voting');
    await mkdir(dir);
    cert = {
      certFile: join(dir, 'tls.crt'),
      leafFile: join(dir, 'leaf.crt'),
      issuerFile: join(dir, 'issuer.crt'),
      keyFile: join(dir, 'tls.key'),
      chainPem,
      keyPem,
    };
    // openssl s_client sends the chain only when given apart from the leaf.
    const [leaf, ...issuers] = chainPem.split(/(?<=-----END CERTIFICATE-----\n)/);
    await writeFile(cert.certFile, chainPem);
    await writeFile(cert.leafFile, leaf ?? '');
    await writeFile(cert.issuerFile, issuers.join(''));
    await writeFile(cert.keyFile, keyPem, { mode: 0o600 });
  });
  after(async () => {
    await l5dWeb?.stop();
    await new Promise<void>((resolve) => (tcpEcho ? tcpEcho.close(() => resolve()) : resolve()));
    await voting?.stop();
    for (const w of webs.values()) await w.stop();
    await ca?.stop();
    for (const a of apps.values()) await a.close();
    await state?.cleanup();
  });

  const route = (kind: AppKind): Address => voting.outbound[KINDS.indexOf(kind)]!;
  const httpListener = (): Address => voting.outbound[KINDS.length]!;

  function lastSeen(kind: AppKind) {
    const seen = apps.get(kind)!.seen;
    return seen[seen.length - 1]!;
  }

  /** A TLS connection to a web inbound as voting, as a peer proxy makes it. */
  function peerTls(port: number, alpn: string[] | undefined): Promise<TLSSocket> {
    return connectTls(port, {
      servername: WEB,
      anchorsPem,
      cert: { keyPem: cert.keyPem, certChainPem: cert.chainPem } as WorkloadCertificate,
      ...(alpn ? { extra: { ALPNProtocols: alpn } } : {}),
    });
  }

  /** The app answered its hello and saw exactly voting's identity. */
  function assertHello(kind: AppKind, stdout: string, path: string): void {
    const speaks = kind === 'http1' ? 'http1' : 'h2';
    assert.match(stdout, new RegExp(`hello from the ${kind} app over ${speaks}: GET ${path}\\n`));
    assert.equal(lastSeen(kind).path, path);
    assert.deepEqual(lastSeen(kind).clientIds, [VOTING]);
  }

  describe('curl through voting, plaintext on loopback', () => {
    const flags = [
      { name: 'default', args: [] as string[] },
      { name: '--http1.1', args: ['--http1.1'] },
      { name: '--http2 (an h2c upgrade, ignored)', args: ['--http2'] },
      { name: '--http2-prior-knowledge', args: ['--http2-prior-knowledge'] },
    ];
    for (const kind of HTTP_KINDS) {
      for (const f of flags) {
        it(`curl ${f.name} via a route reaches the ${kind} app as voting`, async () => {
          const path = `/route/${f.args.join('') || 'default'}`;
          const r = await run('curl', [
            ...['-sS', '--max-time', '20', ...f.args, ...SPOOF],
            `http://${formatAddress(route(kind))}${path}`,
          ]);
          assert.equal(r.code, 0, r.stderr);
          assertHello(kind, r.stdout, path);
        });
        it(`curl ${f.name} via the HTTP listener (HTTP/2 between the proxies) reaches the ${kind} app as voting`, async () => {
          const path = `/http/${f.args.join('') || 'default'}`;
          const r = await run('curl', [
            ...['-sS', '--max-time', '20', ...f.args, ...SPOOF, '-H', `Host: ${kind}.web.svc`],
            `http://${formatAddress(httpListener())}${path}`,
          ]);
          assert.equal(r.code, 0, r.stderr);
          assertHello(kind, r.stdout, path);
        });
      }
    }

    it('multiplexes the HTTP listener requests to one destination over one HTTP/2 connection', async () => {
      const before = metricValue(
        (await adminGet(webs.get('http1')!.admin, '/metrics')).body,
        'meshid_proxy_connections_total',
        { direction: 'inbound', protocol: 'http2' },
      );
      const requests = Array.from({ length: 8 }, (_, i) =>
        run('curl', [
          ...['-sS', '--max-time', '20', '-H', 'Host: http1.web.svc'],
          `http://${formatAddress(httpListener())}/many/${i}`,
        ]),
      );
      for (const r of await Promise.all(requests)) assert.equal(r.code, 0, r.stderr);
      const after = metricValue(
        (await adminGet(webs.get('http1')!.admin, '/metrics')).body,
        'meshid_proxy_connections_total',
        { direction: 'inbound', protocol: 'http2' },
      );
      // The session opened by the earlier tests carries all eight.
      assert.equal(after, before);
      assert.ok(after >= 1, 'web saw an HTTP/2 connection from voting');
    });

    it('answers 3,000 requests from 32 concurrent keep-alive clients of the HTTP listener, all 200, on the same HTTP/2 connection', async () => {
      // A reset voting sent after each complete answer made web's HTTP/2 server fail the whole
      // session now and then under load (GOAWAY INTERNAL_ERROR, ~1% of requests answered 502).
      const sessions = async (): Promise<number> =>
        metricValue(
          (await adminGet(webs.get('http1')!.admin, '/metrics')).body,
          'meshid_proxy_connections_total',
          { direction: 'inbound', protocol: 'http2' },
        );
      const before = await sessions();
      const agent = new HttpAgent({ keepAlive: true, maxSockets: 32 });
      const statuses = new Map<string, number>();
      let next = 0;
      const client = async (): Promise<void> => {
        while (next < 3000) {
          next++;
          const status = await new Promise<string>((resolve) => {
            const req = httpRequest(
              { ...httpListener(), path: '/load', agent, headers: { host: 'http1.web.svc' } },
              (res) => {
                res.resume();
                res.on('end', () =>
                  resolve(`${res.statusCode} ${String(res.headers['l5d-proxy-error'] ?? '')}`),
                );
              },
            );
            req.on('error', (err) => resolve(`error ${err.message}`));
            req.end();
          });
          statuses.set(status, (statuses.get(status) ?? 0) + 1);
        }
      };
      try {
        await Promise.all(Array.from({ length: 32 }, client));
      } finally {
        agent.destroy();
      }
      assert.deepEqual([...statuses], [['200 ', 3000]]);
      assert.equal(await sessions(), before);
    });
  });

  describe('straight to web as a peer proxy would (voting certificate)', () => {
    for (const kind of HTTP_KINDS) {
      it(`curl with its default ALPN (h2) reaches the ${kind} app as voting`, async () => {
        const port = webs.get(kind)!.inbound!.port;
        const r = await run('curl', [
          ...['-sS', '--max-time', '20', '--cacert', state.anchorsFile],
          ...['--cert', cert.certFile, '--key', cert.keyFile, ...SPOOF],
          ...['--resolve', `${WEB}:${port}:127.0.0.1`, '-w', '%{http_version}'],
          `https://${WEB}:${port}/direct`,
        ]);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /2$/);
        assertHello(kind, r.stdout, '/direct');
      });
      it(`openssl s_client -alpn h2 reaches the ${kind} app as voting`, async () => {
        const port = webs.get(kind)!.inbound!.port;
        const r = await run(
          'openssl',
          [
            ...['s_client', '-connect', `127.0.0.1:${port}`, '-servername', WEB, '-quiet'],
            ...['-CAfile', state.anchorsFile, '-verify_return_error', '-ign_eof'],
            ...['-cert', cert.leafFile, '-cert_chain', cert.issuerFile],
            ...['-key', cert.keyFile, '-alpn', 'h2'],
          ],
          'GET /openssl HTTP/1.1\r\nHost: web\r\nl5d-client-id: spoofed\r\nConnection: close\r\n\r\n',
        );
        assert.match(r.stdout, /^HTTP\/1\.1 200 /, r.stderr);
        assertHello(kind, r.stdout, '/openssl');
      });
    }
  });

  describe('gRPC', () => {
    async function say(client: InstanceType<typeof EchoClient>): Promise<string> {
      const md = new Metadata();
      md.add('l5d-client-id', 'spoofed');
      const reply = await new Promise<Buffer>((resolve, reject) =>
        client.makeUnaryRequest(
          '/test.Echo/Say',
          (b: Buffer) => b,
          (b: Buffer) => b,
          Buffer.from('vote'),
          md,
          (err: ServiceError | null, value?: Buffer) =>
            err === null ? resolve(value!) : reject(err),
        ),
      );
      return reply.toString();
    }

    it('grpc-js via a route reaches the gRPC app as voting', async () => {
      const client = new EchoClient(formatAddress(route('grpc')), credentials.createInsecure());
      try {
        assert.equal(await say(client), `grpc app saw ${VOTING}: vote`);
      } finally {
        client.close();
      }
    });

    it('grpc-js to the HTTP listener (its authority names the destination) reaches the gRPC app as voting', async () => {
      const client = new EchoClient(formatAddress(httpListener()), credentials.createInsecure(), {
        'grpc.default_authority': 'grpc.web.svc',
      });
      try {
        assert.equal(await say(client), `grpc app saw ${VOTING}: vote`);
      } finally {
        client.close();
      }
    });

    it('grpc-js over TLS straight to web reaches the gRPC app as voting', async () => {
      const client = new EchoClient(
        formatAddress(webs.get('grpc')!.inbound!),
        credentials.createSsl(
          await readFile(state.anchorsFile),
          Buffer.from(cert.keyPem),
          Buffer.from(cert.chainPem),
        ),
        { 'grpc.ssl_target_name_override': WEB, 'grpc.default_authority': WEB },
      );
      try {
        assert.equal(await say(client), `grpc app saw ${VOTING}: vote`);
      } finally {
        client.close();
      }
    });
  });

  describe('WebSocket', () => {
    async function echo(ws: WebSocket): Promise<string> {
      try {
        await once(ws, 'open');
        ws.send('ballot');
        const [data] = (await once(ws, 'message')) as [Buffer];
        return data.toString();
      } finally {
        ws.terminate();
      }
    }
    const spoof = { 'l5d-client-id': 'spoofed' };
    for (const kind of ['http1', 'dual'] as const) {
      it(`a WebSocket via a route reaches the ${kind} app as voting`, async () => {
        const ws = new WebSocket(`ws://${formatAddress(route(kind))}/ws`, { headers: spoof });
        assert.equal(await echo(ws), 'echo: ballot');
        assert.equal(lastSeen(kind).protocol, 'websocket');
        assert.deepEqual(lastSeen(kind).clientIds, [VOTING]);
      });
      it(`a WebSocket via the HTTP listener reaches the ${kind} app as voting`, async () => {
        const ws = new WebSocket(`ws://${formatAddress(httpListener())}/ws`, {
          headers: { ...spoof, host: `${kind}.web.svc` },
        });
        assert.equal(await echo(ws), 'echo: ballot');
        assert.deepEqual(lastSeen(kind).clientIds, [VOTING]);
      });
    }
    it('a WebSocket to the h2-only app gets a 502 saying the app speaks only HTTP/2', async () => {
      const ws = new WebSocket(`ws://${formatAddress(route('h2'))}/ws`, { headers: spoof });
      ws.on('error', () => undefined);
      const [, res] = (await once(ws, 'unexpected-response')) as [unknown, IncomingMessage];
      assert.equal(res.statusCode, 502);
      assert.equal(res.headers['l5d-proxy-error'], 'upgrade not accepted');
      ws.terminate();
    });
  });
  /** curl through voting's HTTP listener to `<kind>.web.svc` (HTTP/2 between the proxies). */
  function viaHttpListener(kind: string, path: string, ...args: string[]) {
    return run('curl', [
      ...['-sS', '--max-time', '30', '-H', `Host: ${kind}.web.svc`, ...args],
      `http://${formatAddress(httpListener())}${path}`,
    ]);
  }

  describe('bodies through two proxies', () => {
    const upload = bigBody(4 * 1024 * 1024);
    const cases = [
      { kind: 'http1' as const, how: 'via the HTTP listener', chunked: false },
      { kind: 'h2' as const, how: 'via the HTTP listener', chunked: true },
      { kind: 'http1' as const, how: 'via a route, HTTP/2 from curl', chunked: false },
      { kind: 'dual' as const, how: 'via the HTTP listener', chunked: true },
    ];
    for (const c of cases) {
      it(`carries a 4 MB ${c.chunked ? 'chunked ' : ''}upload and its echo ${c.how} to the ${c.kind} app, bytes identical`, async () => {
        const file = join(state.dir, `up-${c.kind}-${c.chunked}.bin`);
        await writeFile(file, upload);
        const body = [
          ...(c.chunked ? ['-H', 'Transfer-Encoding: chunked'] : []),
          ...['--data-binary', `@${file}`, '-o', `${file}.back`, '-w', '%{http_code}'],
        ];
        const r = c.how.startsWith('via a route')
          ? await run('curl', [
              ...['-sS', '--max-time', '30', '--http2-prior-knowledge', ...SPOOF, ...body],
              `http://${formatAddress(route(c.kind))}/echo`,
            ])
          : await viaHttpListener(c.kind, '/echo', ...SPOOF, ...body);
        assert.equal(r.stdout, '200', r.stderr);
        assert.equal(lastSeen(c.kind).bodyLength, upload.length);
        assert.equal(lastSeen(c.kind).bodySha256, sha256(upload));
        assert.deepEqual(lastSeen(c.kind).clientIds, [VOTING]);
        assert.equal(sha256(await readFile(`${file}.back`)), sha256(upload));
      });
    }

    for (const kind of ['http1', 'h2'] as const) {
      it(`holds back the ${kind} app for a reader that does not read (flow control through both proxies), then delivers every byte`, async () => {
        const total = 48 * 1024 * 1024;
        const rssBefore = [await rssOf(voting), await rssOf(webs.get(kind)!)];
        const res = await new Promise<IncomingMessage>((resolve, reject) => {
          const req = httpRequest({
            ...httpListener(),
            path: `/big?bytes=${total}`,
            headers: { host: `${kind}.web.svc` },
            agent: false,
          });
          req.on('response', resolve);
          req.on('error', reject);
          req.end();
        });
        res.pause();
        // Not the proxy's own answer (a 504 if the app was slow to start, say).
        assert.equal(
          res.statusCode,
          200,
          `${res.statusCode ?? 0} ${String(res.headers['l5d-proxy-error'])}`,
        );
        const written = await apps.get(kind)!.untilStalled();
        // Socket buffers and one HTTP/2 stream window per hop; an unbounded buffer would take all.
        assert.ok(written < 16 * 1024 * 1024, `the path buffered ${written} bytes`);
        const rssStalled = [await rssOf(voting), await rssOf(webs.get(kind)!)];
        for (const [i, name] of ['voting', 'web'].entries()) {
          const growth = rssStalled[i]! - rssBefore[i]!;
          assert.ok(growth < 32 * 1024 * 1024, `${name} grew by ${growth} bytes`);
        }
        assert.deepEqual(await digestOf(res), { bytes: total, sha256: sha256(bigBody(total)) });
      });
    }
  });

  describe('errors through two proxies', () => {
    for (const kind of ['http1', 'h2'] as const) {
      it(`answers 504 naming web's app timeout via the HTTP listener (${kind} app)`, async () => {
        const r = await viaHttpListener(kind, '/slow', '-i');
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /^HTTP\/1\.1 504 /);
        assert.match(r.stdout, /\r\nl5d-proxy-error: app timeout\r\n/i);
        assert.match(
          r.stdout,
          new RegExp(
            `gateway timeout: the application at 127\\.0\\.0\\.1:\\d+ did not start its answer within ${APP_TIMEOUT_MS} ms\\n$`,
          ),
        );
      });
      it(`answers 502 naming the app's reset via the HTTP listener (${kind} app)`, async () => {
        const r = await viaHttpListener(kind, '/reset', '-i');
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /^HTTP\/1\.1 502 /);
        assert.match(r.stdout, /\r\nl5d-proxy-error: app (reset|closed connection)\r\n/i);
        assert.match(r.stdout, /bad gateway: the application at 127\.0\.0\.1:\d+ (reset|closed)/);
      });
      it(`answers 502 naming the app's reset to an HTTP/2 client via a route (${kind} app)`, async () => {
        const r = await run('curl', [
          ...['-sS', '--max-time', '30', '--http2-prior-knowledge', '-i'],
          `http://${formatAddress(route(kind))}/reset`,
        ]);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /^HTTP\/2 502 /);
        assert.match(r.stdout, /\r\nl5d-proxy-error: app (reset|closed connection)\r\n/i);
      });
    }
    it('answers 502 naming the peer when the destination proxy is not listening', async () => {
      const r = await viaHttpListener('gone', '/', '-i');
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^HTTP\/1\.1 502 /);
      assert.match(r.stdout, /\r\nl5d-proxy-error: connect-failed\r\n/i);
      assert.match(r.stdout, /ECONNREFUSED|refused/);
    });
  });

  describe('upgrades and CONNECT', () => {
    it('refuses an h2c upgrade that carries a body to the h2-only app with a 400 that says how to fix it', async () => {
      const before = apps.get('h2')!.seen.length;
      const r = await run('curl', [
        ...['-sS', '--max-time', '30', '--http2', '-i', '--data-binary', 'x=1'],
        `http://${formatAddress(route('h2'))}/echo`,
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^HTTP\/1\.1 400 /);
      assert.match(r.stdout, /\r\nl5d-proxy-error: h2c upgrade refused\r\n/i);
      assert.match(r.stdout, /send the request without Upgrade: h2c\n$/);
      assert.equal(apps.get('h2')!.seen.length, before);
    });
    it('ignores an h2c upgrade with a body to the HTTP/1.1 app and answers over HTTP/1.1', async () => {
      const r = await run('curl', [
        ...['-sS', '--max-time', '30', '--http2', '--data-binary', 'x=1', ...SPOOF],
        `http://${formatAddress(route('http1'))}/echo`,
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, 'x=1');
      assert.deepEqual(lastSeen('http1').clientIds, [VOTING]);
    });
    it('answers a WebSocket to the h2-only app via the HTTP listener with a 502 saying the app speaks only HTTP/2', async () => {
      const ws = new WebSocket(`ws://${formatAddress(httpListener())}/ws`, {
        headers: { host: 'h2.web.svc', 'l5d-client-id': 'spoofed' },
      });
      ws.on('error', () => undefined);
      const [, res] = (await once(ws, 'unexpected-response')) as [unknown, IncomingMessage];
      assert.equal(res.statusCode, 502);
      assert.equal(res.headers['l5d-proxy-error'], 'upgrade not accepted');
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      await once(res, 'end');
      assert.match(body, /HTTP\/2/);
      ws.terminate();
    });

    for (const kind of HTTP_KINDS) {
      it(`refuses CONNECT over HTTP/2 to web's inbound with a 405 (${kind} app), the app sees nothing`, async () => {
        const before = apps.get(kind)!.seen.length;
        const session = http2Connect(`https://127.0.0.1:${webs.get(kind)!.inbound!.port}`, {
          servername: WEB,
          ca: await readFile(state.anchorsFile),
          key: cert.keyPem,
          cert: cert.chainPem,
        });
        try {
          const req = session.request({ ':method': 'CONNECT', ':authority': 'db.internal:5432' });
          const { headers, body } = await h2Answer(req);
          assert.equal(headers[':status'], 405);
          assert.equal(headers['l5d-proxy-error'], 'CONNECT is not supported');
          assert.match(body, /does not tunnel CONNECT.*--app-protocol PORT=opaque/);
          assert.equal(apps.get(kind)!.seen.length, before);
        } finally {
          session.destroy();
        }
      });
      it(`refuses CONNECT over HTTP/1.1 to web's inbound with a 405 (${kind} app), the app sees nothing`, async () => {
        const before = apps.get(kind)!.seen.length;
        const socket = await peerTls(webs.get(kind)!.inbound!.port, ['http/1.1']);
        const answer = readAll(socket);
        socket.write('CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n');
        const text = await answer;
        assert.match(text, /^HTTP\/1\.1 405 Method Not Allowed\r\n/);
        assert.match(text, /\r\nl5d-proxy-error: CONNECT is not supported\r\n/);
        assert.match(text, /does not tunnel CONNECT/);
        assert.equal(apps.get(kind)!.seen.length, before);
      });
    }

    it('carries grpc-js through the HTTP listener when grpc-js is told to use it as its proxy (CONNECT)', async () => {
      // grpc-js reads its proxy from the environment only, so the client runs as a process.
      const script = [
        "import { credentials, makeGenericClientConstructor, Metadata } from '@grpc/grpc-js';",
        'const id = (b) => b;',
        "const C = makeGenericClientConstructor({ say: { path: '/test.Echo/Say', requestStream: false, responseStream: false, requestSerialize: id, requestDeserialize: id, responseSerialize: id, responseDeserialize: id } }, 'test.Echo');",
        "const c = new C('grpc.web.svc:80', credentials.createInsecure());",
        "const md = new Metadata(); md.add('l5d-client-id', 'spoofed');",
        "c.say(Buffer.from('via proxy'), md, (err, v) => { if (err) { process.stdout.write('ERR ' + err.message); process.exitCode = 1; } else process.stdout.write(v.toString()); c.close(); });",
      ].join('\n');
      const r = await run(process.execPath, ['--input-type=module', '-e', script], '', {
        PATH: process.env['PATH'] ?? '',
        grpc_proxy: `http://${formatAddress(httpListener())}`,
      });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(r.stdout, `grpc app saw ${VOTING}: via proxy`);
    });
  });

  describe('spoofed identities in hand-framed HTTP/2 (what node and curl refuse to send)', () => {
    const base: [string, string][] = [
      [':method', 'POST'],
      [':scheme', 'https'],
      [':authority', 'web'],
    ];
    const cases: { name: string; fields: [string, string][]; trailers?: [string, string][] }[] = [
      {
        name: 'repeated lower-case copies',
        fields: [
          ['l5d-client-id', 'spoofed-1'],
          ['l5d-client-id', 'spoofed-2'],
        ],
      },
      { name: 'an upper-case name (illegal in HTTP/2)', fields: [['L5D-Client-Id', 'spoofed']] },
      { name: 'a pseudo-header named like it', fields: [[':l5d-client-id', 'spoofed']] },
      {
        name: 'a CR LF in another header value',
        fields: [['x-note', 'a\r\nl5d-client-id: spoofed']],
      },
      { name: 'a CR LF in :authority', fields: [[':authority', 'web\r\nl5d-client-id: spoofed']] },
      { name: 'a name with a trailing space', fields: [['l5d-client-id ', 'spoofed']] },
      { name: 'a NUL in the value', fields: [['l5d-client-id', 'spoofed\u0000']] },
      {
        name: 'copies in the trailers',
        fields: [['l5d-client-id', 'spoofed-header']],
        trailers: [
          ['l5d-client-id', 'spoofed-trailer'],
          ['L5D-CLIENT-ID', 'spoofed-upper'],
        ],
      },
    ];
    for (const kind of HTTP_KINDS) {
      for (const [i, c] of cases.entries()) {
        it(`${c.name}: refused or replaced by the verified id (${kind} app)`, async () => {
          const path = `/raw-${i}`;
          const app = apps.get(kind)!;
          const before = app.seen.length;
          const socket = await peerTls(webs.get(kind)!.inbound!.port, ['h2']);
          const inPath = c.name.includes(':path');
          const fields = [
            ...base.filter(([n]) => !c.fields.some(([m]) => m === n)),
            ...(inPath ? [] : [[':path', path] as [string, string]]),
            ...c.fields,
          ];
          const outcome = await rawH2Request(socket, fields, {
            body: 'ballot',
            ...(c.trailers ? { trailers: c.trailers } : {}),
          });
          socket.destroy();
          if (outcome.kind === 'response') {
            await app.waitForRequests(before + 1);
            const seen = app.seen.slice(before);
            assert.equal(seen.length, 1);
            assert.equal(seen[0]!.path, path);
            assert.deepEqual(seen[0]!.clientIds, [VOTING]);
            assert.deepEqual(seen[0]!.trailerIds, []);
          } else {
            // A malformed request is a stream error (RFC 9113 §8.1.1): nothing reaches the app.
            assert.deepEqual(outcome, { kind: 'reset', code: 1 }, JSON.stringify(outcome));
            assert.equal(app.seen.length, before);
          }
          for (const r of app.seen.slice(before)) {
            assert.ok(!r.clientIds.some((id) => id.includes('spoofed')));
          }
        });
      }
    }
    it('a space in :path is refused as malformed and nothing reaches the app', async () => {
      const before = apps.get('http1')!.seen.length;
      const socket = await peerTls(webs.get('http1')!.inbound!.port, ['h2']);
      const outcome = await rawH2Request(socket, [
        ...base,
        [':path', '/x HTTP/1.1\r\nl5d-client-id: spoofed\r\nx:'],
      ]);
      socket.destroy();
      assert.deepEqual(outcome, { kind: 'reset', code: 1 });
      assert.equal(apps.get('http1')!.seen.length, before);
    });
  });

  describe("Linkerd's proxy on the wire: a client built to the contract, to a real meshid inbound", () => {
    /** As a linkerd2-proxy outbound dials: SNI = web's identity, ALPN transport.l5d.io/v1. */
    async function linkerdDial(header: TransportHeader | Buffer): Promise<TLSSocket> {
      const socket = await peerTls(l5dWeb.inbound!.port, [TRANSPORT_HEADER_ALPN]);
      assert.equal(socket.alpnProtocol, TRANSPORT_HEADER_ALPN);
      // Written out before the socket is handed on (node's HTTP/2 session must own every write).
      await new Promise<void>((resolve, reject) =>
        socket.write(Buffer.isBuffer(header) ? header : encodeTransportHeader(header), (err) =>
          err ? reject(err) : resolve(),
        ),
      );
      return socket;
    }

    it('routes HTTP/1.1 to the app port the header names, with the verified identity', async () => {
      const app = apps.get('http1')!;
      const socket = await linkerdDial({ port: app.address.port, name: '', protocol: 'http1' });
      const answer = readAll(socket);
      socket.write(
        'GET /l5d-http1 HTTP/1.1\r\nHost: web\r\nl5d-client-id: spoofed\r\nConnection: close\r\n\r\n',
      );
      assert.match(await answer, /^HTTP\/1\.1 200 [\s\S]*hello from the http1 app over http1/);
      assert.equal(lastSeen('http1').path, '/l5d-http1');
      assert.deepEqual(lastSeen('http1').clientIds, [VOTING]);
    });

    it('routes HTTP/2 to the h2 app port the header names, with the verified identity', async () => {
      const app = apps.get('h2')!;
      const socket = await linkerdDial({ port: app.address.port, name: '', protocol: 'http2' });
      const session = http2Connect('http://web', { createConnection: () => socket });
      try {
        const req = session.request({ ':path': '/l5d-http2', 'l5d-client-id': 'spoofed' });
        let body = '';
        req.on('data', (d: Buffer) => (body += d.toString()));
        await once(req, 'end');
        assert.equal(body, 'hello from the h2 app over h2: GET /l5d-http2\n');
        assert.deepEqual(lastSeen('h2').clientIds, [VOTING]);
      } finally {
        session.destroy();
      }
    });

    it('pipes an opaque connection to the opaque port the header names', async () => {
      const socket = await linkerdDial({ port: tcpEchoPort, name: '', protocol: undefined });
      const answer = readAll(socket);
      socket.end('opaque \x00\x01 bytes');
      assert.equal(await answer, 'opaque \x00\x01 bytes');
    });

    it('closes a connection whose header names a port that is not an app port, and logs why', async () => {
      const before = apps.get('http1')!.seen.length;
      const socket = await linkerdDial({ port: 22, name: '', protocol: 'http1' });
      const answer = readAll(socket);
      socket.write('GET / HTTP/1.1\r\nHost: web\r\n\r\n');
      assert.equal(await answer, '');
      assert.equal(apps.get('http1')!.seen.length, before);
      await waitFor('the refusal in the log', () =>
        l5dWeb.lines.find((l) => l.includes('not one of the app ports') && l.includes('"port":22')),
      );
    });

    it('closes a connection whose header asks for gateway forwarding (a name), and logs why', async () => {
      const before = apps.get('http1')!.seen.length;
      const socket = await linkerdDial({
        port: apps.get('http1')!.address.port,
        name: 'web.other.svc.cluster.local',
        protocol: 'http1',
      });
      const answer = readAll(socket);
      socket.write('GET / HTTP/1.1\r\nHost: web\r\n\r\n');
      assert.equal(await answer, '');
      assert.equal(apps.get('http1')!.seen.length, before);
      await waitFor('the refusal in the log', () =>
        l5dWeb.lines.find(
          (l) => l.includes('gateway forwarding') && l.includes('web.other.svc.cluster.local'),
        ),
      );
    });

    it('closes a connection whose header is malformed, and logs why', async () => {
      const bad = Buffer.concat([
        Buffer.from(`${TRANSPORT_HEADER_ALPN}\r\n\r\n`, 'latin1'),
        Buffer.from([0, 0, 0, 3, 0x08, 0x80, 0x80]),
      ]);
      const socket = await linkerdDial(bad);
      const answer = readAll(socket);
      assert.equal(await answer, '');
      await waitFor('the refusal in the log', () =>
        l5dWeb.lines.find(
          (l) => l.includes('transport header refused') && l.includes('truncated varint'),
        ),
      );
    });

    it("serves HTTP/2 with Linkerd's l5d-orig-proto (no ALPN) to the HTTP/1.1 app, removing the mark", async () => {
      // Linkerd's outbound carries an app's HTTP/1.1 to a meshed peer as HTTP/2, marked so.
      const socket = await peerTls(l5dWeb.inbound!.port, undefined);
      assert.equal(socket.alpnProtocol, false);
      const session = http2Connect('http://web', { createConnection: () => socket });
      try {
        const req = session.request({
          ':path': '/orig-proto',
          'l5d-orig-proto': 'HTTP/1.1',
          'l5d-client-id': 'spoofed',
        });
        const { headers, body } = await h2Answer(req);
        assert.equal(headers[':status'], 200);
        assert.equal(body, 'hello from the http1 app over http1: GET /orig-proto\n');
        assert.deepEqual(lastSeen('http1').clientIds, [VOTING]);
        assert.ok(!lastSeen('http1').headerNames.includes('l5d-orig-proto'));
      } finally {
        session.destroy();
      }
    });
  });
});
