import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAddress, parseAnchors } from '../../core/index.js';
import { readRotationStateFile } from '../../trust-bundle/index.js';
import {
  MESHID_BIN,
  runMeshid,
  startCaProcess,
  startMeshid,
  waitFor,
} from '../support/ca-process.js';
import type { CaProcess, MeshidProcess } from '../support/ca-process.js';
import { finishLoad, startRotationLoad } from '../support/rotation-load.js';
import { CA_IDENTITY, idOf } from '../support/state.js';

const LIFETIME = ['--cert-lifetime', '6s', '--clock-skew', '1s'];

/** The last `n` warnings and errors a meshid process logged. */
function warnings(p: MeshidProcess | undefined, n = 8): string {
  const lines = (p?.lines ?? []).filter((l) => /"level":(40|50|60)/.test(l));
  return lines.length === 0 ? '(none)' : lines.slice(-n).join('\n');
}

describe('meshid trust rotate --dir: root A to root B under load (real CA, real proxy, real TLS)', function () {
  // Bounded waits below add up to about 5 minutes; an idle machine needs under a minute.
  this.timeout(420_000);
  let dir: string;
  let ca: CaProcess | undefined;
  let proxy: MeshidProcess | undefined;
  let app: Server | undefined;
  let controller: ChildProcess | undefined;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshid-rotate-local-'));
    const init = await runMeshid(['init', '--dir', dir]);
    assert.equal(init.code, 0, init.stderr);
    ca = await startCaProcess(['--dir', dir, '--workers', '1', ...LIFETIME]);
  });
  after(async () => {
    if (
      controller !== undefined &&
      controller.exitCode === null &&
      controller.signalCode === null
    ) {
      controller.kill('SIGKILL');
      await once(controller, 'exit');
    }
    await proxy?.stop();
    app?.close();
    await ca?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('rotates with zero failed Certify calls and handshakes, resumes after the controller is killed, and retires the old root last', async () => {
    const bundleFile = join(dir, 'trust-anchors.pem');
    const token = async (ns: string, sa: string): Promise<string> => {
      const r = await runMeshid(['token', '--dir', dir, '--ns', ns, '--sa', sa, '--ttl', '1h']);
      assert.equal(r.code, 0, r.stderr);
      return r.stdout.trim();
    };
    // A real proxy (identity from the CA, the bundle file watched) in front of an HTTP app.
    app = createServer((_req, res) => res.end('pong'));
    app.listen(0, '127.0.0.1');
    await once(app, 'listening');
    const tokenFile = join(dir, 'emoji-token');
    await writeFile(tokenFile, await token('emojivoto', 'emoji'));
    proxy = await startMeshid('proxy', [
      ...['--identity-addr', `127.0.0.1:${ca!.address.port}`, '--identity-name', CA_IDENTITY],
      ...['--trust-anchors', bundleFile, '--token-file', tokenFile],
      ...['--local-identity', idOf('emojivoto', 'emoji'), '--admin', '127.0.0.1:0'],
      ...['--inbound', '127.0.0.1:0', '--app', `127.0.0.1:${(app.address() as AddressInfo).port}`],
    ]);
    const proxyAdmin = `http://${String(proxy.listening['admin'])}`;
    const proxyInbound = parseAddress(String(proxy.listening['inbound']))!;
    await waitFor('the proxy to be ready', async () =>
      (await fetch(`${proxyAdmin}/ready`)).status === 200 ? true : undefined,
    );
    const rootA = parseAnchors(await readFile(bundleFile, 'utf8'), { now: Date.now() }).anchors[0]!;
    const load = await startRotationLoad({
      ca: ca!.address,
      readBundle: () => readFile(bundleFile, 'utf8'),
      token,
      namespace: 'emojivoto',
      serviceAccounts: ['web', 'voting'],
      identityOf: idOf,
      renewMs: 1000,
      reloadMs: 200,
      connectMs: 20,
      proxyInbound: { port: proxyInbound.port, identity: idOf('emojivoto', 'emoji') },
    });
    const rotateArgs = [
      'trust',
      'rotate',
      '--dir',
      dir,
      ...LIFETIME,
      '--interval',
      '100ms',
      '--log-level',
      'warn',
      ...[...load.adminUrls, proxyAdmin].flatMap((u) => ['--proxy-admin', u]),
      ...['--ca-address', `127.0.0.1:${ca!.address.port}`],
    ];
    try {
      // The first controller runs until the rotation is draining, then dies without warning.
      const first = spawn(process.execPath, [MESHID_BIN, ...rotateArgs], { stdio: 'ignore' });
      controller = first;
      const exited = once(first, 'exit');
      await waitFor(
        'the rotation to reach drain',
        async () => ((await readRotationStateFile(dir))?.phase === 'drain' ? true : undefined),
        120_000,
      ).catch(async (err: Error) => {
        const state = await readRotationStateFile(dir);
        throw new Error(
          `${err.message}; rotation in ${state?.phase ?? '?'} waiting for: ${JSON.stringify(state?.waitingFor ?? state?.lastError)}\n` +
            `proxy warnings:\n${warnings(proxy)}\nCA warnings:\n${warnings(ca)}`,
        );
      });
      first.kill('SIGKILL');
      await exited;
      const mid = await readRotationStateFile(dir);
      assert.equal(mid?.phase, 'drain', 'killed mid-rotation');
      assert.equal(
        parseAnchors(await readFile(bundleFile, 'utf8'), { now: Date.now() }).anchors.length,
        2,
        'both roots still trusted while draining',
      );

      // A new controller picks the rotation up where it stopped. Draining takes a leaf lifetime
      // plus twice the skew (8 s) once every proxy has renewed; a controller still running after
      // 150 s is stuck (however loaded the machine), and the failure says on what.
      controller = spawn(process.execPath, [MESHID_BIN, ...rotateArgs], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      controller.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      controller.stderr!.on('data', (d: Buffer) => (out += d.toString()));
      const exit = once(controller, 'exit') as Promise<[number | null, string | null]>;
      const bound = new Promise<undefined>((r) => setTimeout(r, 150_000, undefined).unref());
      const ended = await Promise.race([exit, bound]);
      if (ended === undefined || ended[0] !== 0) {
        const state = await readRotationStateFile(dir);
        assert.fail(
          `the second controller ${ended === undefined ? 'was still running after 150 s' : `exited with ${String(ended[0] ?? ended[1])}`}\n` +
            `rotation waiting for: ${JSON.stringify(state?.waitingFor ?? state?.lastError ?? state?.phase)}\n` +
            `its output (last 2,000 characters):\n${out.slice(-2000)}\n` +
            `proxy warnings:\n${warnings(proxy)}\nCA warnings:\n${warnings(ca)}`,
        );
      }
      assert.match(out, /continuing rotation r[0-9a-f]+ in phase drain/);
      assert.match(out, /done: old root retired/);
      // Let the workloads renew and reconnect under the final bundle too.
    } catch (err) {
      await load.stop();
      throw err;
    }
    const stats = await finishLoad(load);
    assert.equal(stats.proxyRequestsFailed, 0);
    assert.ok(stats.proxyRequestsOk >= 20, `requests through the proxy: ${stats.proxyRequestsOk}`);
    // The real proxy hot-reloaded the final bundle and renewed from the new issuer.
    const identity = (await (await fetch(`${proxyAdmin}/identity`)).json()) as {
      trustAnchors: { fingerprint: string };
    };

    const state = await readRotationStateFile(dir);
    assert.equal(state?.phase, 'done');
    assert.deepEqual(
      state?.history.map((h) => h.phase),
      ['stage', 'propagate', 'switch', 'drain', 'retire', 'done'],
    );
    // The workloads saw exactly three bundles: A, then A+B, then B (the old root left last).
    assert.equal(stats.bundles.length, 3, JSON.stringify(stats.bundles));
    const final = parseAnchors(await readFile(bundleFile, 'utf8'), { now: Date.now() });
    assert.deepEqual(
      final.anchors.map((a) => a.fingerprint),
      [state!.newRoot!.fingerprint],
    );
    assert.notEqual(state!.newRoot!.fingerprint, rootA.fingerprint);
    assert.equal(stats.bundles[2], final.fingerprint);
    assert.equal(identity.trustAnchors.fingerprint, final.fingerprint);
    assert.equal(stats.bundles[1], state!.stagedBundleFingerprint);

    const status = await runMeshid(['trust', 'status', '--dir', dir]);
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /rotation r[0-9a-f]+ \(local\): done/);
    assert.match(
      status.stdout,
      /\[x\] stage {2}\[x\] propagate {2}\[x\] switch {2}\[x\] drain {2}\[x\] retire/,
    );
  });
});
