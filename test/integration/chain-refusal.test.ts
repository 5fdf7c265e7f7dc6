/**
 * A chain refused for another mesh's anchors says which files and which certificates (issue 22,
 * item 6): every state folder names its certificates alike (`root.linkerd.cluster.local`,
 * `identity.linkerd.cluster.local`), so a refusal by names alone reads as a contradiction. A
 * real proxy process given the anchors of another folder than its CA's logs OpenSSL's verdict
 * with the anchors file and the SHA-256 fingerprints of the CA's certificate, its issuer and the
 * anchors it was checked against.
 */
import { strict as assert } from 'node:assert';
import { formatAddress, parseCertificates } from '../../core/index.js';
import { startCaProcess, waitFor } from '../support/ca-process.js';
import type { CaProcess } from '../support/ca-process.js';
import { startProxyProcess } from '../support/proxy-process.js';
import type { ProxyProcess } from '../support/proxy-process.js';
import { makeTestState } from '../support/state.js';
import type { TestState } from '../support/state.js';

const fingerprintOf = (pem: string): string =>
  parseCertificates(pem, 'ERR_INSPECT_TARGET')[0]!.fingerprint;

describe('chain refusals name files and fingerprints (real CA and proxy processes)', function () {
  this.timeout(300_000);
  let state: TestState;
  let other: TestState;
  let ca: CaProcess | undefined;
  let proxy: ProxyProcess | undefined;

  before(async () => {
    [state, other] = await Promise.all([makeTestState(), makeTestState()]);
    ca = await startCaProcess([...state.caArgs, '--workers', '1']);
  });
  after(async () => {
    await Promise.all([proxy?.stop(), ca?.stop()]);
    await Promise.all([state?.cleanup(), other?.cleanup()]);
  });

  it("a proxy with another folder's anchors: the refusal names the anchors file and the fingerprints of the CA's issuer and of those anchors", async () => {
    proxy = await startProxyProcess({
      state,
      ca: formatAddress(ca!.address),
      sa: 'web',
      anchorsFile: other.anchorsFile,
      ready: false,
    });
    const line = await waitFor(
      'the proxy to report the refused CA chain',
      () => proxy!.lines.find((l) => l.includes('certificate refresh failed')),
      120_000,
    );
    const record = JSON.parse(line) as { err: string; hasCertificate: boolean };
    assert.equal(record.hasCertificate, false);
    const issuerFp = fingerprintOf(state.issuer.certificatePem);
    const otherAnchorFp = fingerprintOf(other.root.certificatePem);
    // OpenSSL's verdict first, then what tells the look-alike names apart.
    assert.match(record.err, /unable to get local issuer certificate/);
    assert.ok(
      record.err.includes(
        `: the CA's chain does not verify against the trust anchors in ${other.anchorsFile} (the CA at ${formatAddress(ca!.address)} serves: linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local sha256 `,
      ),
      record.err,
    );
    assert.ok(
      record.err.endsWith(
        `, issued by identity.linkerd.cluster.local sha256 ${issuerFp}; ${other.anchorsFile}: root.linkerd.cluster.local sha256 ${otherAnchorFp})`,
      ),
      record.err,
    );
    // The anchors it was NOT checked against (the CA's own) do not appear as checked.
    assert.ok(!record.err.includes(fingerprintOf(state.root.certificatePem)), record.err);
  });
});
