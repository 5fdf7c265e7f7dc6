/**
 * `meshid proxy` getting its identity from a real `meshid ca` (both real processes): ready once
 * it holds a certificate, `/identity` reports identity, serial, NotAfter and the anchors'
 * fingerprint, the anchors file is hot-reloaded, and the certificate keeps being served while
 * the CA is down.
 */
import { strict as assert } from 'node:assert';
import type { ProxyIdentityReport } from '../../core/index.js';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { formatAddress } from '../../core/index.js';
import { createRootCa } from '../../core/pki.js';
import type { Address } from '../../core/index.js';
import { adminGet, metricValue, startCaProcess, waitFor } from '../support/ca-process.js';
import type { CaProcess } from '../support/ca-process.js';
import { startProxyProcess } from '../support/proxy-process.js';
import type { ProxyProcess } from '../support/proxy-process.js';
import { HOUR, idOf, makeTestState } from '../support/state.js';
import type { TestState } from '../support/state.js';

const WEB = idOf('emojivoto', 'web');

type Identity = ProxyIdentityReport;

describe('meshid proxy: identity from the CA (real processes)', function () {
  this.timeout(60_000);
  let state: TestState;
  let ca: CaProcess;
  let proxy: ProxyProcess;
  let admin: Address;
  let proxyAnchors: string;

  before(async () => {
    state = await makeTestState();
    ca = await startCaProcess([...state.caArgs, '--workers', '1', '--cert-lifetime', '1h']);
    proxyAnchors = join(state.dir, 'proxy-anchors', 'ca-bundle.crt');
    await mkdir(join(state.dir, 'proxy-anchors'));
    await writeFile(proxyAnchors, await readFile(state.anchorsFile));
    // Not waiting for readiness here: becoming ready is the first test.
    proxy = await startProxyProcess({
      state,
      ca: formatAddress(ca.address),
      sa: 'web',
      anchorsFile: proxyAnchors,
      ready: false,
    });
    admin = proxy.admin;
  });
  after(async () => {
    await proxy?.stop();
    await ca?.stop();
    await state?.cleanup();
  });

  const identity = async (): Promise<Identity> =>
    JSON.parse((await adminGet(admin, '/identity')).body) as Identity;

  it('becomes ready with a certificate for its identity, and reports it on /identity', async () => {
    await waitFor('the proxy to be ready', async () =>
      (await adminGet(admin, '/ready')).status === 200 ? true : undefined,
    );
    const id = await identity();
    assert.equal(id.identity, WEB);
    assert.equal(id.ready, true);
    assert.match(id.certificate!.serial, /^[0-9a-f]+$/);
    const notAfter = Date.parse(id.certificate!.notAfter);
    assert.ok(
      notAfter > Date.now() + 55 * 60_000 && notAfter <= Date.now() + HOUR + 1000,
      id.certificate!.notAfter,
    );
    const text = await readFile(proxyAnchors, 'utf8');
    assert.equal(id.trustAnchors.fingerprint, createHash('sha256').update(text).digest('hex'));
    const metrics = (await adminGet(admin, '/metrics')).body;
    assert.equal(
      metricValue(metrics, 'control_identity_cert_expiration_timestamp_seconds'),
      notAfter / 1000,
    );
    assert.equal(
      metricValue(metrics, 'control_identity_cert_refreshes_total', { result: 'ok' }),
      1,
    );
  });

  it('hot-reloads its trust anchors without a restart', async () => {
    const now = Date.now();
    const next = await createRootCa({
      commonName: 'root-next',
      notBefore: now - HOUR,
      notAfter: now + HOUR,
    });
    const text = (await readFile(proxyAnchors, 'utf8')) + next.certificatePem;
    await writeFile(`${proxyAnchors}.tmp`, text);
    await rename(`${proxyAnchors}.tmp`, proxyAnchors);
    const expected = createHash('sha256').update(text).digest('hex');
    const id = await waitFor('the new bundle', async () => {
      const r = await identity();
      return r.trustAnchors.fingerprint === expected ? r : undefined;
    });
    assert.deepEqual(id.trustAnchors.subjects, [
      new X509Certificate(state.root.certificatePem).subject,
      'CN=root-next',
    ]);
    assert.equal(proxy.proc.exitCode, null);
  });

  it('keeps its certificate and stays ready while the CA is down', async () => {
    const before = await identity();
    await ca.stop();
    assert.equal((await adminGet(admin, '/ready')).status, 200);
    assert.equal((await identity()).certificate!.serial, before.certificate!.serial);
  });
});
