/**
 * `meshid proxy` ends when it should (issue 20, case 6): a listener that cannot bind ends the
 * process non-zero with the address and the flag to change named, whatever else had started; and
 * SIGTERM ends it within the shutdown grace period even with connections open on every listener.
 */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { connect as http2Connect } from 'node:http2';
import { connect as netConnect, createServer } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import { join } from 'node:path';
import { readFile, writeFile } from 'node:fs/promises';
import { formatAddress } from '../../core/index.js';
import { MESHID_BIN, startCaProcess, waitFor } from '../support/ca-process.js';
import type { CaProcess } from '../support/ca-process.js';
import { certificateFromCa, startProxyProcess } from '../support/proxy-process.js';
import { CA_IDENTITY, HOUR, idOf, makeTestState } from '../support/state.js';
import type { TestState } from '../support/state.js';

/** What the proxy's own shutdown may take beyond its 5 s grace period (process exit, load). */
const EXIT_SLACK_MS = 4000;
const GRACE_MS = 5000;

describe('meshid proxy: bind failures and SIGTERM end the process (real processes)', function () {
  this.timeout(90_000);
  let state: TestState;
  let ca: CaProcess;
  let app: Server;
  let appPort: number;
  const appSockets = new Set<Socket>();

  before(async () => {
    state = await makeTestState();
    ca = await startCaProcess([...state.caArgs, '--workers', '1', '--cert-lifetime', '1h']);
    // An app that accepts and never answers: every connection through the proxy stays open.
    app = createServer((s) => {
      appSockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => appSockets.delete(s));
    });
    app.listen(0, '127.0.0.1');
    await once(app, 'listening');
    appPort = (app.address() as AddressInfo).port;
  });
  after(async () => {
    for (const s of appSockets) s.destroy();
    app?.close();
    await ca?.stop();
    await state?.cleanup();
  });

  it('exits non-zero, naming the address and --admin, when the admin port is taken', async () => {
    const squatter = createServer();
    squatter.listen(0, '127.0.0.1');
    await once(squatter, 'listening');
    const busy = (squatter.address() as AddressInfo).port;
    const tokenFile = join(state.dir, 'web-token');
    await writeFile(tokenFile, await state.token('emojivoto', 'web', { ttlMs: 2 * HOUR }));
    const proc = spawn(
      process.execPath,
      [
        MESHID_BIN,
        'proxy',
        ...['--identity-addr', formatAddress(ca.address), '--identity-name', CA_IDENTITY],
        ...['--trust-anchors', state.anchorsFile, '--token-file', tokenFile],
        ...['--local-identity', idOf('emojivoto', 'web')],
        ...['--inbound', '127.0.0.1:0', '--app', `127.0.0.1:${appPort}`],
        ...['--admin', `127.0.0.1:${busy}`],
      ],
      { env: { PATH: process.env['PATH'] ?? '' }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    proc.stdout.resume();
    const exited = once(proc, 'exit') as Promise<[number | null, string | null]>;
    // Before issue 20 it never exited by itself. Generous: a loaded machine slows the start.
    const killer = setTimeout(() => proc.kill('SIGKILL'), 60_000);
    try {
      const [code, signal] = await exited;
      assert.equal(signal, null, `killed after 60 s: the proxy did not exit by itself\n${stderr}`);
      assert.equal(code, 1, stderr);
      assert.match(stderr, new RegExp(`127\\.0\\.0\\.1:${busy}`));
      assert.match(stderr, /--admin/);
      assert.match(stderr, /EADDRINUSE/);
      assert.match(stderr, /ERR_LISTEN_FAILED/);
    } finally {
      clearTimeout(killer);
      squatter.close();
    }
  });

  it('exits within the grace period on SIGTERM with connections open on every listener', async () => {
    const peer = await certificateFromCa(state, ca.address, 'emojivoto', 'voting');
    const proxy = await startProxyProcess({
      state,
      ca: formatAddress(ca.address),
      sa: 'web',
      args: [
        ...['--inbound', '127.0.0.1:0', '--app', `127.0.0.1:${appPort}`],
        ...['--app-protocol', 'http1', '--outbound', '127.0.0.1:0'],
      ],
    });
    const held: { destroy(): void }[] = [];
    try {
      // An HTTP/2 request with an unfinished body, through the inbound to the silent app.
      const h2 = http2Connect(`https://127.0.0.1:${proxy.inbound!.port}`, {
        ca: await readFile(state.anchorsFile, 'utf8'),
        key: peer.keyPem,
        cert: peer.chainPem,
        servername: proxy.identity,
      });
      h2.on('error', () => undefined);
      held.push(h2);
      const stream = h2.request({ ':method': 'POST', ':path': '/upload' });
      stream.on('error', () => undefined);
      stream.write('part of a body');
      await waitFor('the request to reach the app', () => (appSockets.size > 0 ? true : undefined));
      // A silent TCP connection on the outbound and a kept-alive one on the admin port.
      for (const port of [proxy.outbound[0]!.port, proxy.admin.port]) {
        const s = netConnect(port, '127.0.0.1');
        s.on('error', () => undefined);
        await once(s, 'connect');
        held.push(s);
      }
      const admin = netConnect(proxy.admin.port, '127.0.0.1');
      admin.on('error', () => undefined);
      admin.write('GET /live HTTP/1.1\r\nhost: x\r\n\r\n');
      await once(admin, 'data');
      held.push(admin);

      const started = Date.now();
      proxy.proc.kill('SIGTERM');
      const [code, signal] = (await once(proxy.proc, 'exit')) as [number | null, string | null];
      const took = Date.now() - started;
      assert.equal(signal, null);
      assert.equal(code, 0, proxy.stderr());
      assert.ok(took < GRACE_MS + EXIT_SLACK_MS, `exited after ${took} ms`);
    } finally {
      for (const h of held) h.destroy();
      if (proxy.proc.exitCode === null) proxy.proc.kill('SIGKILL');
    }
  });
});
