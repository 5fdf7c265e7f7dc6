/**
 * Two workloads through their proxies, every part a real process: `meshid ca`, a `web` proxy in
 * front of an HTTP app, and a `voting` proxy whose outbound route points at web's inbound.
 * voting's requests reach the app over TLS 1.3 mTLS with voting's verified identity; a route that
 * expects another identity than web's is refused before any byte reaches the app.
 */
import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { IncomingHttpHeaders, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { formatAddress } from '../../core/index.js';
import type { Address } from '../../core/index.js';
import { adminGet, metricValue, startCaProcess } from '../support/ca-process.js';
import type { CaProcess } from '../support/ca-process.js';
import { httpGet, startProxyProcess } from '../support/proxy-process.js';
import type { ProxyProcess } from '../support/proxy-process.js';
import { idOf, makeTestState } from '../support/state.js';
import type { TestState } from '../support/state.js';

const WEB = idOf('emojivoto', 'web');
const VOTING = idOf('emojivoto', 'voting');
const EMOJI = idOf('emojivoto', 'emoji');

describe('two workloads through meshid proxies (real processes)', function () {
  this.timeout(60_000);
  let state: TestState;
  let ca: CaProcess;
  let web: ProxyProcess;
  let voting: ProxyProcess;
  let app: Server;
  const seen: IncomingHttpHeaders[] = [];

  before(async () => {
    state = await makeTestState();
    ca = await startCaProcess([...state.caArgs, '--workers', '1']);
    app = createServer((req, res) => {
      seen.push(req.headers);
      res.end(`web says hi to ${String(req.headers['l5d-client-id'])}\n`);
    });
    app.listen(0, '127.0.0.1');
    await once(app, 'listening');
    const proxy = (sa: string, args: string[]): Promise<ProxyProcess> =>
      startProxyProcess({ state, ca: formatAddress(ca.address), sa, args });
    web = await proxy('web', [
      '--inbound',
      '127.0.0.1:0',
      '--app',
      `127.0.0.1:${(app.address() as AddressInfo).port}`,
    ]);
    const webInbound = formatAddress(web.inbound!);
    voting = await proxy('voting', [
      '--route',
      `127.0.0.1:0=${webInbound}@${WEB}`,
      '--route',
      `127.0.0.1:0=${webInbound}@${EMOJI}`,
    ]);
  });
  after(async () => {
    for (const p of [voting, web]) await p?.stop();
    await ca?.stop();
    app?.close();
    await state?.cleanup();
  });

  const routes = (): readonly Address[] => voting.outbound;

  it("carries voting's requests to web's app with voting's verified identity", async () => {
    seen.length = 0;
    for (let i = 0; i < 5; i++) {
      const r = await httpGet(routes()[0]!, `/vote/${i}`);
      assert.equal(r.status, 200);
      assert.equal(r.body, `web says hi to ${VOTING}\n`);
    }
    assert.equal(seen.length, 5);
    const admin = web.admin;
    const metrics = (await adminGet(admin, '/metrics')).body;
    assert.ok(
      metricValue(metrics, 'meshid_proxy_connections_total', {
        direction: 'inbound',
        peer: VOTING,
      }) >= 1,
    );
  });

  it('negotiates the post-quantum hybrid X25519MLKEM768 on every hop, and both ends report it', async () => {
    const r = await httpGet(routes()[0]!, '/pq');
    assert.equal(r.status, 200);
    const hybrid = { group: 'X25519MLKEM768', result: 'ok' };
    // proxy ↔ proxy: voting's outbound and web's inbound, each from its own end of the handshake.
    const votingMetrics = (await adminGet(voting.admin, '/metrics')).body;
    const webMetrics = (await adminGet(web.admin, '/metrics')).body;
    assert.ok(
      metricValue(votingMetrics, 'meshid_proxy_tls_handshakes_total', {
        direction: 'outbound',
        ...hybrid,
      }) >= 1,
      votingMetrics,
    );
    assert.ok(
      metricValue(webMetrics, 'meshid_proxy_tls_handshakes_total', {
        direction: 'inbound',
        ...hybrid,
      }) >= 1,
      webMetrics,
    );
    assert.ok(
      !/meshid_proxy_tls_handshakes_total\{[^}]*result="ok"[^}]*group="(X25519|P-256|P-384)"/.test(
        votingMetrics + webMetrics,
      ),
    );
    // CA ↔ proxy: the proxy's side in /identity, the CA's in its metrics.
    for (const p of [web, voting]) {
      const report = JSON.parse((await adminGet(p.admin, '/identity')).body) as {
        tls: { mode: string; groups: string; ca: { group: string; cipher: string } };
      };
      assert.equal(report.tls.mode, 'hybrid-preferred');
      assert.equal(report.tls.groups, 'X25519MLKEM768/X25519:P-256:P-384');
      assert.equal(report.tls.ca.group, 'X25519MLKEM768');
      assert.match(report.tls.ca.cipher, /^TLS_AES_(128|256)_GCM_SHA(256|384)$|^TLS_CHACHA20/);
    }
    const caMetrics = (await adminGet(ca.admin, '/metrics')).body;
    assert.ok(
      metricValue(caMetrics, 'meshid_certify_tls_handshakes_total', { group: 'X25519MLKEM768' }) >=
        2,
      caMetrics,
    );
  });

  it('refuses a route whose server is not the identity it expects, before the app sees anything', async () => {
    seen.length = 0;
    // The route listener answers the HTTP request itself, naming why (no bare reset).
    const r = await httpGet(routes()[1]!, '/should-not-arrive');
    assert.equal(r.status, 502);
    assert.match(r.body, /is not the expected identity/);
    assert.equal(seen.length, 0);
    const admin = voting.admin;
    const metrics = (await adminGet(admin, '/metrics')).body;
    assert.ok(
      metricValue(metrics, 'meshid_proxy_tls_handshakes_total', {
        direction: 'outbound',
        result: 'failed',
        reason: 'identity-mismatch',
      }) >= 1,
    );
  });

  it('prints no deprecation warning on stderr, in the CA (Certify, CSR key import) or either proxy', async () => {
    // Both proxies became ready with a certificate from the CA, so Certify ran end to end (CSR
    // parse, key import, signature check, signing) and the proxies made their keys and CSRs.
    // Node 26 prints DEP0204 when a non-extractable CryptoKey goes through KeyObject.from, as
    // the CA's CSR key import once did; any deprecation is a runtime problem waiting to happen.
    for (const [name, p] of [
      ['ca', ca],
      ['web', web],
      ['voting', voting],
    ] as const) {
      assert.doesNotMatch(p.stderr(), /DeprecationWarning|DEP0\d{3}/, `${name}'s stderr`);
    }
  });
});
