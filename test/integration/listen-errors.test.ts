/**
 * A busy port, as a user meets it: every listener's failure names the listener, its flag (with
 * its variable and config key), the address and the process found holding it, with no stack
 * trace, and the command exits 1 (it does not hang with its other listeners open).
 */
import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import type { AddressInfo, Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runMeshid } from '../support/ca-process.js';
import { strictJsonLine } from '../support/strict-json.js';

const CA_IDENTITY = 'linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local';
const WEB = 'web.emojivoto.serviceaccount.identity.linkerd.cluster.local';

describe('busy ports (real processes)', function () {
  this.timeout(120_000);
  let dir: string;
  let busy: Server;
  let busyAddress: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshid-listen-'));
    const init = await runMeshid(['init', '--dir', join(dir, 'state')]);
    assert.equal(init.code, 0, init.stderr);
    await writeFile(join(dir, 'token'), 'not-a-token\n');
    // This test process holds the port: the error must name it.
    busy = createServer().listen(0, '127.0.0.1');
    await once(busy, 'listening');
    busyAddress = `127.0.0.1:${(busy.address() as AddressInfo).port}`;
  });
  after(async () => {
    busy.close();
    await rm(dir, { recursive: true, force: true });
  });

  const expectExplained = (
    r: { code: number; stderr: string },
    command: string,
    what: RegExp,
    flag: string,
    env: string,
  ): void => {
    assert.equal(r.code, 1, r.stderr);
    const line = new RegExp(
      `^meshid ${command}: cannot listen on ${busyAddress.replace(/\./g, '\\.')} for the ${what.source} \\(EADDRINUSE\\): process ${process.pid} \\([^\\n]*\\) holds that port: stop it, or choose another address with ${flag} \\(${env}, or [a-zA-Z]+: in a --config file\\)`,
      'm',
    );
    assert.match(r.stderr, line);
    assert.match(r.stderr, /\[ERR_LISTEN_FAILED\]\n$/);
    assert.doesNotMatch(r.stderr, /^\s+at /m, 'a stack trace');
  };

  for (const workers of ['1', '2']) {
    it(`ca --listen on a busy port names --listen and the holder (${workers} worker${workers === '1' ? '' : 's'})`, async () => {
      const r = await runMeshid([
        'ca',
        '--dir',
        join(dir, 'state'),
        '--listen',
        busyAddress,
        '--admin',
        '127.0.0.1:0',
        '--workers',
        workers,
        '--log-level',
        'warn',
      ]);
      expectExplained(
        r,
        'ca',
        /identity CA's gRPC server \(Certify\)/,
        '--listen',
        'MESHID_LISTEN',
      );
    });

    it(`ca --admin on a busy port names --admin and exits (${workers} worker${workers === '1' ? '' : 's'})`, async () => {
      const r = await runMeshid([
        'ca',
        '--dir',
        join(dir, 'state'),
        '--listen',
        '127.0.0.1:0',
        '--admin',
        busyAddress,
        '--workers',
        workers,
        '--log-level',
        'warn',
      ]);
      expectExplained(r, 'ca', /identity CA's admin server/, '--admin', 'MESHID_ADMIN');
    });
  }

  it('local (npm start) names the busy port and says how to pass other ports to npm start', async () => {
    const r = await runMeshid([
      'local',
      '--dir',
      join(dir, 'state'),
      '--listen',
      '127.0.0.1:0',
      '--admin',
      busyAddress,
      '--workers',
      '1',
    ]);
    expectExplained(r, 'local', /identity CA's admin server/, '--admin', 'MESHID_ADMIN');
    assert.match(
      r.stderr,
      /with npm start, flags follow "--": npm start -- --listen \S+ --admin \S+/,
    );
  });

  const proxyArgs = (): string[] => [
    '--identity-addr',
    '127.0.0.1:1',
    '--identity-name',
    CA_IDENTITY,
    '--trust-anchors',
    join(dir, 'state', 'trust-anchors.pem'),
    '--token-file',
    join(dir, 'token'),
    '--local-identity',
    WEB,
    '--log-level',
    'silent',
  ];

  it('proxy --inbound on a busy port names --inbound; its log lines are strict JSON', async () => {
    const r = await runMeshid([
      'proxy',
      ...proxyArgs().slice(0, -2),
      '--log-level',
      'info',
      '--admin',
      '127.0.0.1:0',
      '--inbound',
      busyAddress,
      '--app',
      '127.0.0.1:9',
    ]);
    expectExplained(r, 'proxy', /inbound listener/, '--inbound', 'MESHID_INBOUND');
    // Piped, the log is JSON: every line parses strictly, each key once (the inbound's lines
    // carried "component" twice, once per logger child).
    const lines = r.stdout.split('\n').filter((l) => l !== '');
    const records = lines.map(strictJsonLine);
    assert.ok(
      records.some((x) => x['component'] === 'proxy-inbound'),
      `no inbound line in:\n${r.stdout}`,
    );
  });

  it('proxy --admin on a busy port names --admin', async () => {
    const r = await runMeshid(['proxy', ...proxyArgs(), '--admin', busyAddress]);
    expectExplained(r, 'proxy', /admin server/, '--admin', 'MESHID_ADMIN');
  });
});
