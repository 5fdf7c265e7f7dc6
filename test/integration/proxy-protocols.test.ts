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
import type { IncomingMessage } from 'node:http';
import { join } from 'node:path';
import { credentials, Metadata } from '@grpc/grpc-js';
import type { ServiceError } from '@grpc/grpc-js';
import WebSocket from 'ws';
import { formatAddress } from '../../core/index.js';
import type { Address } from '../../core/index.js';
import { adminGet, metricValue, startCaProcess } from '../support/ca-process.js';
import type { CaProcess } from '../support/ca-process.js';
import { certificateFromCa, startProxyProcess } from '../support/proxy-process.js';
import type { ProxyProcess } from '../support/proxy-process.js';
import { EchoClient, TestApp } from '../support/protocol-apps.js';
import type { AppKind } from '../support/protocol-apps.js';
import { idOf, makeTestState } from '../support/state.js';
import type { TestState } from '../support/state.js';

const WEB = idOf('emojivoto', 'web');
const VOTING = idOf('emojivoto', 'voting');
const KINDS = ['http1', 'h2', 'dual', 'grpc'] as const;
const HTTP_KINDS = ['http1', 'h2', 'dual'] as const;
const SPOOF = ['-H', 'l5d-client-id: spoofed-1', '-H', 'L5D-Client-Id: spoofed-2'];

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
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(input);
  });
}

describe('the protocol matrix through two meshid proxies (real processes)', function () {
  this.timeout(120_000);
  let state: TestState;
  let ca: CaProcess;
  const apps = new Map<AppKind, TestApp>();
  const webs = new Map<AppKind, ProxyProcess>();
  let voting: ProxyProcess;
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
    for (const kind of KINDS) {
      const app = await TestApp.start(kind);
      apps.set(kind, app);
      webs.set(
        kind,
        await startProxyProcess({
          state,
          ca: formatAddress(ca.address),
          sa: 'web',
          args: ['--inbound', '127.0.0.1:0', '--app', formatAddress(app.address)],
        }),
      );
    }
    const args: string[] = [];
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
        if (f.args[0] === '--http2-prior-knowledge') continue;
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
});
