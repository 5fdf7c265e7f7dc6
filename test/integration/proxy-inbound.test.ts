/**
 * `meshid proxy --inbound … --app …` in front of an HTTP app, all real processes and curl: a
 * client holding a certificate from the same CA reaches the app with its verified identity in
 * `l5d-client-id` (a spoofed copy never arrives), a client without one never reaches it, and an
 * identity off the allow-list gets 403.
 */
import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { IncomingHttpHeaders, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { formatAddress } from '../../core/index.js';
import type { Address } from '../../core/index.js';
import { startCaProcess } from '../support/ca-process.js';
import type { CaProcess } from '../support/ca-process.js';
import { certificateFromCa, startProxyProcess } from '../support/proxy-process.js';
import type { ProxyProcess } from '../support/proxy-process.js';
import { idOf, makeTestState } from '../support/state.js';
import type { TestState } from '../support/state.js';

const run = promisify(execFile);
const WEB = idOf('emojivoto', 'web');
const VOTING = idOf('emojivoto', 'voting');

describe('meshid proxy inbound in front of an app (real processes, curl)', function () {
  this.timeout(60_000);
  let state: TestState;
  let ca: CaProcess;
  let proxy: ProxyProcess;
  let app: Server;
  let inbound: Address;
  const seen: IncomingHttpHeaders[] = [];
  const client: Record<string, { cert: string; key: string }> = {};

  /** A certificate for `sa` from the CA, as a proxy would get it; files for curl. */
  /** A certificate for `sa` from the CA, as a proxy would get it, in files for curl. */
  async function certificateFor(sa: string): Promise<{ cert: string; key: string }> {
    const { keyPem, chainPem } = await certificateFromCa(state, ca.address, 'emojivoto', sa);
    const dir = join(state.dir, `client-${sa}`);
    await mkdir(dir);
    const files = { cert: join(dir, 'tls.crt'), key: join(dir, 'tls.key') };
    await writeFile(files.cert, chainPem);
    await writeFile(files.key, keyPem, { mode: 0o600 });
    return files;
  }

  async function curl(extra: string[]): Promise<{ code: number; out: string }> {
    const url = `https://${WEB}:${inbound.port}/hello`;
    try {
      const { stdout } = await run('curl', [
        '-sS',
        '--http1.1',
        '--max-time',
        '10',
        '--cacert',
        state.anchorsFile,
        '--resolve',
        `${WEB}:${inbound.port}:127.0.0.1`,
        '-w',
        '\n%{http_code}',
        ...extra,
        url,
      ]);
      const lines = stdout.trimEnd().split('\n');
      return { code: Number(lines.pop()), out: lines.join('\n') };
    } catch (err) {
      return { code: -1, out: String((err as { stderr?: string }).stderr ?? err) };
    }
  }

  before(async () => {
    state = await makeTestState();
    ca = await startCaProcess([...state.caArgs, '--workers', '1']);
    app = createServer((req, res) => {
      seen.push(req.headers);
      res.end(`hello from the app\n`);
    });
    app.listen(0, '127.0.0.1');
    await once(app, 'listening');
    proxy = await startProxyProcess({
      state,
      ca: formatAddress(ca.address),
      sa: 'web',
      args: [
        ...[
          '--inbound',
          '127.0.0.1:0',
          '--app',
          `127.0.0.1:${(app.address() as AddressInfo).port}`,
        ],
        ...['--allow-service-account', 'emojivoto/voting'],
      ],
    });
    inbound = proxy.inbound!;
    client['voting'] = await certificateFor('voting');
    client['emoji'] = await certificateFor('emoji');
  });
  after(async () => {
    await proxy?.stop();
    await ca?.stop();
    app?.close();
    await state?.cleanup();
  });

  it('forwards an allowed client with its verified identity in l5d-client-id, and drops a spoofed one', async () => {
    seen.length = 0;
    const r = await curl([
      '--cert',
      client['voting']!.cert,
      '--key',
      client['voting']!.key,
      '-H',
      `l5d-client-id: ${WEB}`,
    ]);
    assert.equal(r.code, 200, r.out);
    assert.match(r.out, /hello from the app/);
    assert.equal(seen.length, 1);
    assert.equal(seen[0]!['l5d-client-id'], VOTING);
  });

  it('answers 403 to a meshed identity off the allow-list, and the app sees nothing', async () => {
    seen.length = 0;
    const r = await curl(['--cert', client['emoji']!.cert, '--key', client['emoji']!.key]);
    assert.equal(r.code, 403, r.out);
    assert.equal(seen.length, 0);
  });

  it('never lets a client without a certificate reach the app', async () => {
    seen.length = 0;
    const r = await curl([]);
    assert.notEqual(r.code, 200);
    assert.equal(seen.length, 0);
  });
});
