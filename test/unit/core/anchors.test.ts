import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  bundleFingerprint,
  bundleOfAnchors,
  isMeshidError,
  parseAnchors,
  parseCertificates,
  reachAnchor,
  readIdentityReport,
} from '../../../core/index.js';
import type { ProxyIdentityReport } from '../../../core/index.js';
import { createIntermediateCa, createRootCa } from '../../../core/pki.js';

const DAY = 86_400_000;
const NOW = Date.parse('2026-06-01T00:00:00Z');

type Ca = Awaited<ReturnType<typeof createRootCa>>;

function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(isMeshidError(err, 'ERR_ANCHORS_INVALID'), String(err));
    return err.message;
  }
  assert.fail('expected ERR_ANCHORS_INVALID');
}

/** A self-signed certificate made by the real openssl CLI (for key types core/pki cannot make). */
function opensslRoot(keyArgs: string[], cn: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'meshid-bundle-'));
  try {
    execFileSync('openssl', [
      'req',
      '-x509',
      ...keyArgs,
      '-nodes',
      '-keyout',
      join(dir, 'key.pem'),
      '-out',
      join(dir, 'cert.pem'),
      '-subj',
      `/CN=${cn}`,
      '-days',
      '36500',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
    ]);
    return readFileSync(join(dir, 'cert.pem'), 'utf8');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('core/anchors: the trust-anchor bundle', () => {
  let rootA: Ca;
  let rootB: Ca;
  let p384: Ca;
  let rsa2048: Ca;
  let expired: Ca;
  let future: Ca;
  let leaf: Ca;
  let intermediate: Ca;
  let rsa1024Pem: string;
  let ed25519Pem: string;

  before(async function () {
    this.timeout(60_000);
    const valid = { notBefore: NOW - DAY, notAfter: NOW + 365 * DAY };
    rootA = await createRootCa({ commonName: 'root-a.linkerd.cluster.local', ...valid });
    rootB = await createRootCa({
      commonName: 'root-b.linkerd.cluster.local',
      notBefore: NOW - DAY / 2,
      notAfter: NOW + 365 * DAY,
    });
    p384 = await createRootCa({ commonName: 'p384', keyAlgorithm: 'ecdsa-p384', ...valid });
    rsa2048 = await createRootCa({ commonName: 'rsa2048', keyAlgorithm: 'rsa-2048', ...valid });
    expired = await createRootCa({
      commonName: 'old-root',
      notBefore: NOW - 10 * DAY,
      notAfter: NOW - DAY,
    });
    future = await createRootCa({
      commonName: 'future-root',
      notBefore: NOW + DAY,
      notAfter: NOW + 10 * DAY,
    });
    leaf = await createRootCa({ commonName: 'not-a-ca', isCa: false, ...valid });
    intermediate = await createIntermediateCa({
      issuer: rootA,
      commonName: 'identity.linkerd.cluster.local',
      ...valid,
    });
    rsa1024Pem = opensslRoot(['-newkey', 'rsa:1024'], 'weak-rsa');
    ed25519Pem = opensslRoot(['-newkey', 'ed25519'], 'ed-root');
  });

  it('parses a good bundle of P-256, P-384 and RSA-2048 roots', () => {
    const text = rootA.certificatePem + p384.certificatePem + rsa2048.certificatePem;
    const b = parseAnchors(text, { now: NOW });
    assert.deepEqual(b.anchors.map((a) => a.keyType).sort(), [
      'ecdsa-p256',
      'ecdsa-p384',
      'rsa-2048',
    ]);
    assert.deepEqual(b.warnings, []);
    assert.equal(b.fingerprint, bundleFingerprint(text));
  });

  it('renders the same bytes whatever the input order and layout', () => {
    const one = parseAnchors(rootA.certificatePem + rootB.certificatePem, { now: NOW });
    const messy = `\n\n  ${rootB.certificatePem.replace(/\n/g, '\r\n')}\n\n${rootA.certificatePem}   \n`;
    const two = parseAnchors(messy, { now: NOW });
    assert.equal(two.pem, one.pem);
    assert.notEqual(two.fingerprint, one.fingerprint, 'the fingerprint is of the text as read');
    // Stable order: earliest notBefore first (root A was made valid earlier than root B).
    assert.deepEqual(
      one.anchors.map((a) => a.subject),
      ['CN=root-a.linkerd.cluster.local', 'CN=root-b.linkerd.cluster.local'],
    );
    assert.equal(one.pem, rootA.certificatePem + rootB.certificatePem);
  });

  it('keeps an expired root beside a valid one, naming it in a warning', () => {
    const b = parseAnchors(rootA.certificatePem + expired.certificatePem, { now: NOW });
    assert.equal(b.anchors.length, 2);
    assert.match(
      b.warnings.join('\n'),
      /trust anchor #2 "CN=old-root" has expired \(notAfter 2026-05-31T00:00:00.*\): kept, but no chain reaches it/,
    );
  });

  it('refuses a root that is not yet valid', () => {
    const msg = refusal(() => parseAnchors(future.certificatePem, { now: NOW }));
    assert.match(msg, /trust anchor #1 "CN=future-root" is not yet valid \(notBefore 2026-06-02/);
  });

  it('refuses an RSA-1024 root (made by openssl)', () => {
    const msg = refusal(() => parseAnchors(rsa1024Pem, { now: Date.now() }));
    assert.match(
      msg,
      /trust anchor #1 "CN=weak-rsa" has an unsupported key \(RSA 1024 bits; RSA keys must have at least 2048\)/,
    );
  });

  it('accepts an Ed25519 root (FIPS mode refuses it: docs/fips.md)', () => {
    assert.deepEqual(
      parseAnchors(ed25519Pem, { now: Date.now() }).anchors.map((a) => a.keyType),
      ['ed25519'],
    );
    assert.throws(
      () => parseAnchors(ed25519Pem, { now: Date.now(), fips: true }),
      (err) => isMeshidError(err, 'ERR_FIPS_MATERIAL_REFUSED'),
    );
  });

  it('refuses a certificate that is not a CA', () => {
    const msg = refusal(() => parseAnchors(leaf.certificatePem, { now: NOW }));
    assert.match(
      msg,
      /trust anchor #1 "CN=not-a-ca" is not a CA certificate \(basicConstraints cA is absent or false\)/,
    );
  });

  it('refuses an intermediate where a root is expected', () => {
    const msg = refusal(() =>
      parseAnchors(rootA.certificatePem + intermediate.certificatePem, { now: NOW }),
    );
    assert.match(
      msg,
      /trust anchor #2 "CN=identity.linkerd.cluster.local" is not self-signed \(issued by "CN=root-a.linkerd.cluster.local"\)/,
    );
  });

  it('names every bad certificate at once', () => {
    const msg = refusal(() =>
      parseAnchors(leaf.certificatePem + rootA.certificatePem + intermediate.certificatePem, {
        now: NOW,
      }),
    );
    assert.match(msg, /^trust anchor bundle refused \(2 bad certificates\):/);
    assert.match(msg, /#1 "CN=not-a-ca"/);
    assert.match(msg, /#3 "CN=identity.linkerd.cluster.local"/);
    assert.doesNotMatch(msg, /#2/);
  });

  it('refuses garbage between PEM blocks, with its line', () => {
    const text = `${rootA.certificatePem}this is not PEM\n${rootB.certificatePem}`;
    const msg = refusal(() => parseAnchors(text, { now: NOW }));
    const line = rootA.certificatePem.split('\n').length;
    assert.equal(
      msg,
      `trust anchor bundle: line ${line}: unexpected content outside a PEM block: "this is not PEM"`,
    );
  });

  it('refuses a block that is not a CERTIFICATE', () => {
    const msg = refusal(() => parseAnchors(rootA.privateKeyPem, { now: NOW }));
    assert.equal(
      msg,
      'trust anchor bundle: line 1: expected a "CERTIFICATE" PEM block, found "PRIVATE KEY"',
    );
  });

  it('refuses a CERTIFICATE block whose bytes are not a certificate', () => {
    const msg = refusal(() =>
      parseAnchors('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n', { now: NOW }),
    );
    assert.match(
      msg,
      /certificate #1 of the trust anchor bundle is not a parseable X\.509 certificate/,
    );
  });

  it('refuses an empty bundle (and whitespace only)', () => {
    for (const text of ['', '\n\n  \n']) {
      assert.equal(
        refusal(() => parseAnchors(text, { now: NOW })),
        'trust anchor bundle is empty: it holds no certificate',
      );
    }
  });

  it('keeps a duplicated root once and says so', () => {
    const b = parseAnchors(rootA.certificatePem + rootB.certificatePem + rootA.certificatePem, {
      now: NOW,
    });
    assert.equal(b.anchors.length, 2);
    assert.deepEqual(b.warnings, [
      'trust anchor #3 "CN=root-a.linkerd.cluster.local" duplicates trust anchor #1; kept once',
    ]);
    assert.equal(b.pem, rootA.certificatePem + rootB.certificatePem);
  });

  it('reports the earliest expiry and warns inside the window', () => {
    const b = parseAnchors(rootA.certificatePem, { now: NOW, warnWithin: 400 * DAY });
    assert.equal(b.earliestNotAfter, b.anchors[0]!.notAfter);
    assert.equal(b.warnings.length, 1);
    assert.match(
      b.warnings[0]!,
      /anchor "CN=root-a\.linkerd\.cluster\.local" expires at .* within 400 days/,
    );
    assert.deepEqual(parseAnchors(rootA.certificatePem, { now: NOW }).warnings, []);
  });

  it('builds a bundle from anchors: the union, deduplicated and ordered', () => {
    const a = parseAnchors(rootA.certificatePem, { now: NOW }).anchors[0]!;
    const b = parseAnchors(rootB.certificatePem, { now: NOW }).anchors[0]!;
    const both = bundleOfAnchors([b, a, b]);
    assert.equal(both.pem, rootA.certificatePem + rootB.certificatePem);
  });

  it('finds which anchor a chain leads to', () => {
    const anchors = parseAnchors(rootA.certificatePem + rootB.certificatePem, { now: NOW }).anchors;
    const chain = parseCertificates(intermediate.certificatePem, 'ERR_ISSUER_INVALID');
    const found = reachAnchor(chain, anchors, NOW);
    assert.equal(found.anchor?.subject, 'CN=root-a.linkerd.cluster.local');
    assert.equal(found.anchor && found.notAfter, NOW + 365 * DAY, 'until the earliest notAfter');
    assert.equal(reachAnchor(chain, anchors.slice(1), NOW).anchor, undefined);
    assert.throws(() => parseCertificates('garbage', 'ERR_ISSUER_INVALID'), /outside a PEM block/);
  });

  it("reads a proxy's /identity as written, and keeps only well-typed fields of a hostile one", () => {
    const written: ProxyIdentityReport = {
      identity: 'web.emojivoto.serviceaccount.identity.linkerd.cluster.local',
      ready: true,
      certificate: { serial: '0a', notBefore: 'a', notAfter: 'b', chainPem: rootA.certificatePem },
      trustAnchors: { fingerprint: 'f'.repeat(64), subjects: ['CN=x'], loadedAt: 'c' },
      refreshes: { ok: 1, failed: 0 },
    };
    const read = readIdentityReport(JSON.stringify(written));
    assert.equal(read.identity, written.identity);
    assert.equal(read.certificate.chainPem, rootA.certificatePem);
    assert.equal(read.trustAnchors.fingerprint, 'f'.repeat(64));
    const hostile = readIdentityReport(
      JSON.stringify({ identity: 7, certificate: { chainPem: ['x'] }, trustAnchors: null }),
    );
    assert.deepEqual(hostile, { certificate: {}, trustAnchors: {} });
    assert.deepEqual(readIdentityReport('null'), { certificate: {}, trustAnchors: {} });
    assert.throws(() => readIdentityReport('<html>'), SyntaxError);
  });
});
