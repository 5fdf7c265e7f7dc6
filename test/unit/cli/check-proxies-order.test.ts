/**
 * `meshid check`'s proxies row against a proxy whose anchors file holds the current anchors in
 * another order (a kubelet writes a clusterTrustBundle file in its own order): the same bundle,
 * not an old one. A real HTTP server stands in for the proxy's admin `/identity`.
 */
import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { checkProxies } from '../../../cli/check/probes.js';
import { bundleFingerprint, parseAnchors, parseCertificates } from '../../../core/index.js';
import { createIntermediateCa, createRootCa } from '../../../core/pki.js';

const HOUR = 3_600_000;

describe('meshid check: proxies whose anchors are the current ones in another order', function () {
  this.timeout(30_000);
  let server: Server;
  let report: unknown;
  let port: number;
  let a: string;
  let b: string;
  let c: string;
  let chainPem: string;
  const now = Date.now();

  before(async () => {
    const root = (cn: string, offset: number) =>
      createRootCa({ commonName: cn, notBefore: now - HOUR - offset, notAfter: now + 100 * HOUR });
    const [ra, rb, rc] = await Promise.all([root('a', 0), root('b', 1000), root('c', 2000)]);
    a = ra.certificatePem;
    b = rb.certificatePem;
    c = rc.certificatePem;
    const issuer = await createIntermediateCa({
      issuer: ra,
      commonName: 'identity.linkerd.cluster.local',
      notBefore: now - HOUR,
      notAfter: now + 10 * HOUR,
      pathLength: 0,
    });
    chainPem = issuer.certificatePem + a;
    server = createServer((_req, res) => res.end(JSON.stringify(report)));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    port = (server.address() as AddressInfo).port;
  });
  after(() => server?.close());

  /** The row for a proxy that loaded `proxyText`, the ConfigMap holding `configMapText`. */
  async function rowFor(proxyText: string, configMapText: string) {
    report = {
      identity: 'web.emojivoto.serviceaccount.identity.linkerd.cluster.local',
      certificate: { chainPem },
      trustAnchors: {
        fingerprint: bundleFingerprint(proxyText),
        canonicalFingerprint: bundleFingerprint(parseAnchors(proxyText, { now }).pem),
        subjects: [],
        loadedAt: new Date(now).toISOString(),
      },
    };
    return checkProxies({
      targets: [{ name: 'web-0', admin: { host: '127.0.0.1', port } }],
      total: 1,
      anchors: parseCertificates(configMapText, 'ERR_ANCHORS_INVALID'),
      anchorsSource: 'ConfigMap linkerd/linkerd-identity-trust-roots',
      bundleFingerprint: bundleFingerprint(configMapText),
      now,
      timeoutMs: 5000,
      concurrency: 1,
    });
  }

  it('counts the same anchors in another order as the current bundle (ok)', async () => {
    const row = await rowFor(b + a, a + b);
    assert.equal(row.status, 'ok', JSON.stringify(row));
  });

  it('still warns for a proxy holding another set of anchors', async () => {
    const row = await rowFor(c + a, a + b);
    assert.equal(row.status, 'warn', JSON.stringify(row));
    assert.match(row.message, /1 load a different anchor bundle: web-0/);
  });
});
