/**
 * Peers without post-quantum key exchange against real meshid processes: Debian's `openssl
 * s_client` and Python's `ssl` module, both on OpenSSL 3.0 (no ML-KEM). With the default
 * `tlsGroups: hybrid-preferred` they still connect, with a classic group, to a proxy's inbound
 * and to the CA, and both ends say so; with `hybrid-required` the proxy and the CA refuse their
 * handshake and the app sees nothing. `meshid check` turns what the proxies counted into ‼ (a
 * classic fallback) and × (the hybrid required and missing).
 */
import { strict as assert } from 'node:assert';
import { execFile, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { formatAddress } from '../../core/index.js';
import type { Address } from '../../core/index.js';
import { adminGet, metricValue, runMeshid, startCaProcess } from '../support/ca-process.js';
import type { CaProcess } from '../support/ca-process.js';
import { assertReportShape, byId } from '../support/check-report.js';
import type { Report } from '../support/check-report.js';
import { certificateFromCa, startProxyProcess } from '../support/proxy-process.js';
import type { ProxyProcess } from '../support/proxy-process.js';
import { CA_IDENTITY, idOf, makeTestState } from '../support/state.js';
import type { TestState } from '../support/state.js';

const execFileAsync = promisify(execFile);
const WEB = idOf('emojivoto', 'web');
const HYBRID = 'X25519MLKEM768';

/** Python's ssl as a client: prints `connected <version>` and the first response line, or `refused <reason>`. */
const PYTHON_CLIENT = `
import socket, ssl, sys
host, port, name, cafile, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
ctx = ssl.create_default_context(cafile=cafile)
if cert:
    ctx.load_cert_chain(cert, key)
print("openssl", ssl.OPENSSL_VERSION)
try:
    with socket.create_connection((host, port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as s:
            print("connected", s.version())
            if cert:
                s.sendall(b"GET /python HTTP/1.1\\r\\nHost: web\\r\\nConnection: close\\r\\n\\r\\n")
                print(s.recv(4096).decode().splitlines()[0])
except ssl.SSLError as e:
    print("refused", e.reason)
    sys.exit(3)
`;

describe('classic-only peers (openssl s_client and Python ssl on OpenSSL 3.0) against meshid', function () {
  this.timeout(120_000);
  let state: TestState;
  let caPreferred: CaProcess;
  let caRequired: CaProcess;
  let webPreferred: ProxyProcess;
  let webRequired: ProxyProcess;
  let app: Server;
  const seen: string[] = [];
  let files: { chain: string; leaf: string; issuers: string; key: string };

  before(async () => {
    // The peers this test stands for: OpenSSL 3.0, which has no ML-KEM.
    assert.match(spawnSync('openssl', ['version'], { encoding: 'utf8' }).stdout, /^OpenSSL 3\.0\./);
    // `meshid check --dir` below reads this folder: laid out as `meshid init` writes it (no links).
    state = await makeTestState({ plainFiles: true });
    [caPreferred, caRequired] = await Promise.all([
      startCaProcess([...state.caArgs, '--workers', '1']),
      startCaProcess([...state.caArgs, '--workers', '1', '--tls-groups', 'hybrid-required']),
    ]);
    app = createServer((req, res) => {
      seen.push(req.url ?? '');
      res.end(`hello ${String(req.headers['l5d-client-id'])}\n`);
    }).listen(0, '127.0.0.1');
    await once(app, 'listening');
    const appArgs = [
      '--inbound',
      '127.0.0.1:0',
      '--app',
      `127.0.0.1:${(app.address() as AddressInfo).port}`,
    ];
    webPreferred = await startProxyProcess({
      state,
      ca: formatAddress(caPreferred.address),
      sa: 'web',
      args: appArgs,
    });
    webRequired = await startProxyProcess({
      state,
      ca: formatAddress(caRequired.address),
      sa: 'web',
      args: [...appArgs, '--tls-groups', 'hybrid-required'],
    });
    // The clients' certificate: voting's, from the CA as a proxy would get it.
    const { keyPem, chainPem } = await certificateFromCa(
      state,
      caPreferred.address,
      'emojivoto',
      'voting',
    );
    const dir = join(state.dir, 'classic-client');
    await mkdir(dir);
    const [leaf, ...issuers] = chainPem.split(/(?<=-----END CERTIFICATE-----\n)/);
    files = {
      chain: join(dir, 'chain.pem'),
      leaf: join(dir, 'leaf.pem'),
      issuers: join(dir, 'issuers.pem'),
      key: join(dir, 'key.pem'),
    };
    await writeFile(files.chain, chainPem);
    await writeFile(files.leaf, leaf ?? '');
    await writeFile(files.issuers, issuers.join(''));
    await writeFile(files.key, keyPem, { mode: 0o600 });
  });
  after(async () => {
    await Promise.all([webPreferred, webRequired].map((p) => p?.stop()));
    await Promise.all([caPreferred, caRequired].map((p) => p?.stop()));
    app?.close();
    await state?.cleanup();
  });

  /**
   * `openssl s_client -brief` to `at`, with voting's certificate when `client`. With `input` (an
   * HTTP request) it waits for the server to close; without, it leaves after the handshake. Async:
   * the app it reaches runs in this process.
   */
  const sClient = (
    at: Address,
    name: string,
    client: boolean,
    input?: string,
  ): Promise<{ status: number | null; stdout: string; stderr: string }> =>
    new Promise((resolve, reject) => {
      const child = spawn('openssl', [
        ...['s_client', '-connect', formatAddress(at), '-servername', name, '-brief'],
        ...['-CAfile', state.anchorsFile, '-verify_return_error'],
        ...(input === undefined ? [] : ['-ign_eof']),
        ...(client ? ['-cert', files.leaf, '-cert_chain', files.issuers, '-key', files.key] : []),
      ]);
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      child.on('error', reject);
      child.on('close', (status) => {
        clearTimeout(timer);
        resolve({ status, stdout, stderr });
      });
      child.stdin.end(input ?? '');
    });

  const python = async (
    at: Address,
    name: string,
    client: boolean,
  ): Promise<{ code: number; out: string }> => {
    try {
      const { stdout } = await execFileAsync('python3', [
        '-c',
        PYTHON_CLIENT,
        at.host,
        String(at.port),
        name,
        state.anchorsFile,
        client ? files.chain : '',
        client ? files.key : '',
      ]);
      return { code: 0, out: stdout };
    } catch (err) {
      const e = err as { code?: number; stdout?: string };
      return { code: e.code ?? -1, out: e.stdout ?? '' };
    }
  };

  const inboundOk = async (p: ProxyProcess, group: string): Promise<number> => {
    const v = metricValue(
      (await adminGet(p.admin, '/metrics')).body,
      'meshid_proxy_tls_handshakes_total',
      {
        direction: 'inbound',
        result: 'ok',
        group,
      },
    );
    return Number.isNaN(v) ? 0 : v;
  };
  const inboundFailed = async (p: ProxyProcess): Promise<number> => {
    const v = metricValue(
      (await adminGet(p.admin, '/metrics')).body,
      'meshid_proxy_tls_handshakes_total',
      {
        direction: 'inbound',
        result: 'failed',
      },
    );
    return Number.isNaN(v) ? 0 : v;
  };
  const caGroup = async (ca: CaProcess, group: string): Promise<number> => {
    const v = metricValue(
      (await adminGet(ca.admin, '/metrics')).body,
      'meshid_certify_tls_handshakes_total',
      {
        group,
      },
    );
    return Number.isNaN(v) ? 0 : v;
  };

  it("openssl s_client connects to a hybrid-preferred proxy's inbound with X25519, and both ends say so", async () => {
    const before = await inboundOk(webPreferred, 'X25519');
    seen.length = 0;
    const r = await sClient(
      webPreferred.inbound!,
      WEB,
      true,
      'GET /openssl HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n',
    );
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /Protocol version: TLSv1\.3/);
    assert.match(r.stderr, /Server Temp Key: X25519, 253 bits/);
    assert.match(r.stdout, /^HTTP\/1\.1 200 /);
    assert.deepEqual(seen, ['/openssl']);
    assert.equal(await inboundOk(webPreferred, 'X25519'), before + 1);
  });

  it('openssl s_client connects to a hybrid-preferred CA with X25519, and the CA counts it', async () => {
    const before = await caGroup(caPreferred, 'X25519');
    const r = await sClient(caPreferred.address, CA_IDENTITY, false);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /Server Temp Key: X25519, 253 bits/);
    assert.equal(await caGroup(caPreferred, 'X25519'), before + 1);
  });

  it('openssl s_client is refused by a hybrid-required proxy inbound and CA; the app sees nothing', async () => {
    seen.length = 0;
    const failedBefore = await inboundFailed(webRequired);
    const r = await sClient(
      webRequired.inbound!,
      WEB,
      true,
      'GET /refused HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n',
    );
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /alert handshake failure|SSL alert number 40/);
    assert.equal(r.stdout, '');
    assert.deepEqual(seen, []);
    assert.equal(await inboundFailed(webRequired), failedBefore + 1);
    assert.equal(await inboundOk(webRequired, 'X25519'), 0);

    const ca = await sClient(caRequired.address, CA_IDENTITY, false);
    assert.notEqual(ca.status, 0);
    assert.match(ca.stderr, /alert handshake failure|SSL alert number 40/);
    assert.equal(await caGroup(caRequired, 'X25519'), 0);
  });

  it("Python's ssl (OpenSSL 3.0 defaults) connects with a classic group when the hybrid is preferred, and is refused when it is required", async () => {
    const before = await inboundOk(webPreferred, 'X25519');
    seen.length = 0;
    const ok = await python(webPreferred.inbound!, WEB, true);
    assert.equal(ok.code, 0, ok.out);
    assert.match(ok.out, /^openssl OpenSSL 3\.0\./m);
    assert.match(ok.out, /^connected TLSv1\.3$/m);
    assert.match(ok.out, /^HTTP\/1\.1 200 /m);
    assert.deepEqual(seen, ['/python']);
    // Python 3.11 cannot name the group; the proxy's end does: X25519 (Python's first share).
    assert.equal(await inboundOk(webPreferred, 'X25519'), before + 1);

    const refused = await python(webRequired.inbound!, WEB, true);
    assert.equal(refused.code, 3, refused.out);
    assert.match(refused.out, /^refused SSLV3_ALERT_HANDSHAKE_FAILURE$/m);
    const caOk = await python(caPreferred.address, CA_IDENTITY, false);
    assert.match(caOk.out, /^connected TLSv1\.3$/m);
    const caRefused = await python(caRequired.address, CA_IDENTITY, false);
    assert.equal(caRefused.code, 3, caRefused.out);
    assert.match(caRefused.out, /^refused SSLV3_ALERT_HANDSHAKE_FAILURE$/m);
    assert.deepEqual(seen, ['/python']);
  });

  describe('meshid check proxies-key-exchange', () => {
    const check = async (
      proxy: ProxyProcess,
      ca: CaProcess,
      extra: string[] = [],
    ): Promise<{ code: number; report: Report }> => {
      const r = await runMeshid([
        ...['check', '--dir', state.dir, '--output', 'json'],
        ...['--ca-address', formatAddress(ca.address), '--ca-admin', formatAddress(ca.admin)],
        ...['--proxy-admin', formatAddress(proxy.admin), ...extra],
      ]);
      assert.ok(r.stdout.startsWith('{'), `not JSON: ${r.stdout}\n${r.stderr}`);
      const report = JSON.parse(r.stdout) as Report;
      assertReportShape(report);
      return { code: r.code, report };
    };

    it('‼ for the hybrid-preferred proxy that classic clients reached, naming the groups', async () => {
      const r = await sClient(
        webPreferred.inbound!,
        WEB,
        true,
        'GET /check HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n',
      );
      assert.equal(r.status, 0, r.stderr);
      assert.ok((await inboundOk(webPreferred, 'X25519')) >= 1);
      const { code, report } = await check(webPreferred, caPreferred);
      assert.equal(code, 0);
      const c = byId(report, 'proxies-key-exchange');
      assert.equal(c.status, 'warn');
      assert.match(
        c.message,
        /^1 of 1 proxies fell back to a classic key-exchange group: 127\.0\.0\.1:\d+ \(inbound X25519 ×\d+\)$/,
      );
      assert.match(c.fix ?? '', /without X25519MLKEM768 .*hybrid-required/);
    });

    it('✓ for the hybrid-required proxy: the classic clients were refused, its CA connection is hybrid', async () => {
      const { code, report } = await check(webRequired, caRequired);
      assert.equal(code, 0, JSON.stringify(report.checks, null, 2));
      const c = byId(report, 'proxies-key-exchange');
      assert.equal(c.status, 'ok');
      assert.match(
        c.message,
        /^1 of 1 proxies used the post-quantum hybrid on every connection so far \(1 connections\)$/,
      );
      const identity = JSON.parse((await adminGet(webRequired.admin, '/identity')).body) as {
        tls: { mode: string; ca: { group: string } };
      };
      assert.equal(identity.tls.mode, 'hybrid-required');
      assert.equal(identity.tls.ca.group, HYBRID);
    });

    it('× when the check requires the hybrid (--tls-groups hybrid-required) and a proxy only prefers it', async () => {
      const { code, report } = await check(webPreferred, caPreferred, [
        '--tls-groups',
        'hybrid-required',
      ]);
      assert.equal(code, 1);
      const c = byId(report, 'proxies-key-exchange');
      assert.equal(c.status, 'error');
      assert.match(
        c.message,
        /^the post-quantum hybrid is required and missing on 1 of 1 proxies: 127\.0\.0\.1:\d+ \(tlsGroups hybrid-preferred, not hybrid-required; inbound X25519 ×\d+\)$/,
      );
      assert.match(c.fix ?? '', /--tls-groups/);
      // The hybrid-required proxy passes the same policy.
      const strict = await check(webRequired, caRequired, ['--tls-groups', 'hybrid-required']);
      assert.equal(byId(strict.report, 'proxies-key-exchange').status, 'ok');
    });
  });
});
