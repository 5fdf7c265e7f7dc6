/**
 * Certificates that live six seconds, renewed under traffic: thousands of requests flow from
 * voting to web through both proxies across several renewals of both, with no failure. With the
 * CA stopped, the proxies keep serving until their certificates expire, then report not ready;
 * they recover when the CA comes back. All real processes on 127.0.0.1.
 */
import { strict as assert } from 'node:assert';
import type { ProxyIdentityReport } from '../../core/index.js';
import { once } from 'node:events';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { Agent, createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { formatAddress } from '../../core/index.js';
import { createRootCa } from '../../core/pki.js';
import type { Address } from '../../core/index.js';
import { adminGet, metricValue, startCaProcess, waitFor } from '../support/ca-process.js';
import type { CaProcess } from '../support/ca-process.js';
import { freePort, getStatus, startProxyProcess } from '../support/proxy-process.js';
import type { ProxyProcess } from '../support/proxy-process.js';
import { HOUR, idOf, makeTestState } from '../support/state.js';
import type { TestState } from '../support/state.js';

const WEB = idOf('emojivoto', 'web');
const VOTING = idOf('emojivoto', 'voting');

describe('renewal under traffic, and the CA going away (real processes)', function () {
  this.timeout(120_000);
  let state: TestState;
  let ca: CaProcess;
  let caAddress: string;
  let web: ProxyProcess;
  let voting: ProxyProcess;
  let app: Server;
  const agent = new Agent({ keepAlive: true, maxSockets: 4 });
  const CA_ARGS = (): string[] => [
    ...state.caArgs,
    '--workers',
    '1',
    '--cert-lifetime',
    '6s',
    '--clock-skew',
    '1s',
    '--listen',
    caAddress,
  ];

  const get = (address: Address, fresh: boolean): Promise<number> =>
    getStatus(address, fresh ? false : agent);

  const startProxy = (sa: string, args: string[]): Promise<ProxyProcess> =>
    startProxyProcess({
      state,
      ca: caAddress,
      sa,
      anchorsFile: join(state.dir, 'proxy-anchors.pem'),
      args: ['--identity-retry-max', '1s', ...args],
    });

  const ready = async (p: ProxyProcess): Promise<boolean> =>
    (await adminGet(p.admin, '/ready')).status === 200;
  const refreshes = async (p: ProxyProcess): Promise<number> =>
    metricValue(
      (await adminGet(p.admin, '/metrics')).body,
      'control_identity_cert_refreshes_total',
      {
        result: 'ok',
      },
    );
  const route = (): Address => voting.outbound[0]!;

  before(async () => {
    state = await makeTestState();
    caAddress = `127.0.0.1:${await freePort()}`;
    await writeFile(join(state.dir, 'proxy-anchors.pem'), await readFile(state.anchorsFile));
    ca = await startCaProcess(CA_ARGS());
    app = createServer((req, res) => {
      res.statusCode = req.headers['l5d-client-id'] === VOTING ? 200 : 500;
      res.end('ok');
    });
    app.listen(0, '127.0.0.1');
    await once(app, 'listening');
    web = await startProxy('web', [
      '--inbound',
      '127.0.0.1:0',
      '--app',
      `127.0.0.1:${(app.address() as AddressInfo).port}`,
    ]);
    voting = await startProxy('voting', [
      '--route',
      `127.0.0.1:0=${formatAddress(web.inbound!)}@${WEB}`,
    ]);
  });
  after(async () => {
    agent.destroy();
    for (const p of [voting, web]) await p?.stop();
    await ca?.stop();
    app?.close();
    await state?.cleanup();
  });

  it('carries thousands of requests across several renewals of both proxies with zero failures', async () => {
    const start = { web: await refreshes(web), voting: await refreshes(voting) };
    let ok = 0;
    const failures: string[] = [];
    let stop = false;
    // Four keep-alive callers (existing connections outlive the certificates they began with)
    // and one that opens a new connection each time (it always meets the newest certificate).
    const callers = Array.from({ length: 5 }, async (_, i) => {
      while (!stop) {
        try {
          const status = await get(route(), i === 4);
          if (status === 200) ok++;
          else failures.push(`status ${status}`);
        } catch (err) {
          failures.push((err as Error).message);
        }
      }
    });
    await waitFor(
      'three renewals of each proxy under traffic',
      async () =>
        (await refreshes(web)) >= start.web + 3 &&
        (await refreshes(voting)) >= start.voting + 3 &&
        ok >= 2000
          ? true
          : undefined,
      60_000,
    );
    stop = true;
    await Promise.all(callers);
    assert.deepEqual(failures.slice(0, 5), [], `${failures.length} failures`);
    assert.ok(ok >= 2000, `${ok} requests`);
  });

  it('picks up a new anchor bundle under traffic without failing a request', async () => {
    const now = Date.now();
    const extra = await createRootCa({
      commonName: 'root-extra',
      notBefore: now - HOUR,
      notAfter: now + HOUR,
    });
    const file = join(state.dir, 'proxy-anchors.pem');
    const text = (await readFile(file, 'utf8')) + extra.certificatePem;
    let ok = 0;
    const failures: string[] = [];
    let stop = false;
    const caller = (async () => {
      while (!stop) {
        try {
          if ((await get(route(), true)) === 200) ok++;
          else failures.push('status');
        } catch (err) {
          failures.push((err as Error).message);
        }
      }
    })();
    await writeFile(`${file}.tmp`, text);
    await rename(`${file}.tmp`, file);
    for (const p of [web, voting]) {
      await waitFor('the new bundle in use', async () => {
        const id = JSON.parse((await adminGet(p.admin, '/identity')).body) as ProxyIdentityReport;
        return id.trustAnchors.subjects.includes('CN=root-extra') ? true : undefined;
      });
    }
    const after = ok;
    await waitFor('traffic after the reload', () => (ok > after + 50 ? true : undefined));
    stop = true;
    await caller;
    assert.deepEqual(failures.slice(0, 5), []);
  });

  it('keeps serving with the CA down until the certificates expire, then is not ready, and recovers', async () => {
    await ca.stop();
    // Still ready and serving right after the CA goes.
    assert.equal(await ready(voting), true);
    assert.equal(await get(route(), true), 200);
    await waitFor(
      'both proxies to report not ready once their certificates expire',
      async () => (!(await ready(web)) && !(await ready(voting)) ? true : undefined),
      20_000,
    );
    // No new connection without valid certificates: the route listener answers the HTTP
    // request itself with 503 (l5d-proxy-error: no-certificate) rather than a bare reset.
    assert.equal(await get(route(), true), 503);
    ca = await startCaProcess(CA_ARGS());
    for (const p of [web, voting]) {
      await waitFor(
        'recovery once the CA is back',
        async () => ((await ready(p)) ? true : undefined),
        20_000,
      );
    }
    await waitFor('traffic again', async () =>
      (await get(route(), true).catch(() => 0)) === 200 ? true : undefined,
    );
  });
});
