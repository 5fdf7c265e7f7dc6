import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAnchors, systemClock } from '../../../core/index.js';
import { silentLogger } from '../../../core/logger.js';
import { createIntermediateCa, createRootCa } from '../../../core/pki.js';
import type { GeneratedCa } from '../../../core/pki.js';
import { AnchorSource } from '../../../proxy/index.js';

const HOUR = 3_600_000;

describe('proxy/anchors: the trust-anchor bundle', () => {
  let rootA: GeneratedCa;
  let rootB: GeneratedCa;
  let notCa: GeneratedCa;
  let dir: string;
  let file: string;
  before(async () => {
    const now = Date.now();
    rootA = await createRootCa({
      commonName: 'root-a',
      notBefore: now - HOUR,
      notAfter: now + 10 * HOUR,
    });
    rootB = await createRootCa({
      commonName: 'root-b',
      notBefore: now - HOUR,
      notAfter: now + 20 * HOUR,
    });
    notCa = await createIntermediateCa({
      issuer: rootA,
      commonName: 'leafish',
      notBefore: now - HOUR,
      notAfter: now + HOUR,
      isCa: false,
    });
  });
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshid-anchors-'));
    file = join(dir, 'ca-bundle.crt');
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it("parses a bundle with whitespace between certificates, fingerprinting its text as Linkerd's annotation does", () => {
    const text = `\n${rootA.certificatePem}\n\n${rootB.certificatePem}\n`;
    const b = parseAnchors(text, { now: Date.now() });
    assert.deepEqual(
      b.anchors.map((a) => a.subject),
      ['CN=root-a', 'CN=root-b'],
    );
    assert.match(b.fingerprint, /^[0-9a-f]{64}$/);
    assert.equal(b.earliestNotAfter, Date.parse(new X509Certificate(rootA.certificatePem).validTo));
  });

  it('refuses an empty bundle', () => {
    assert.throws(() => parseAnchors('\n', { now: Date.now() }), /no certificate/);
  });

  it('refuses a bundle with content that is not PEM', () => {
    assert.throws(() => parseAnchors(`${rootA.certificatePem}hello\n`, { now: Date.now() }), /.+/);
  });

  it('refuses a bundle holding a certificate that is not a CA', () => {
    assert.throws(
      () => parseAnchors(rootA.certificatePem + notCa.certificatePem, { now: Date.now() }),
      /"CN=leafish" is not a CA certificate/,
    );
  });

  it('picks up a new bundle written by rename, and keeps the last good one when the next is broken', async () => {
    await writeFile(file, rootA.certificatePem);
    const source = await AnchorSource.open(file, { clock: systemClock, logger: silentLogger() });
    try {
      assert.deepEqual(
        source.current().anchors.map((a) => a.subject),
        ['CN=root-a'],
      );
      const updated = once(source, 'updated');
      await writeFile(`${file}.tmp`, rootA.certificatePem + rootB.certificatePem);
      await rename(`${file}.tmp`, file);
      await updated;
      assert.deepEqual(
        source.current().anchors.map((a) => a.subject),
        ['CN=root-a', 'CN=root-b'],
      );
      const rejected = once(source, 'rejected');
      await writeFile(`${file}.tmp`, 'not a bundle');
      await rename(`${file}.tmp`, file);
      await rejected;
      assert.deepEqual(
        source.current().anchors.map((a) => a.subject),
        ['CN=root-a', 'CN=root-b'],
        'the last good bundle stays',
      );
      assert.equal(source.stats.rejected, 1);
    } finally {
      source.close();
    }
  });

  it('refuses to start on an invalid first bundle, naming the file', async () => {
    await writeFile(file, 'nothing');
    await assert.rejects(
      AnchorSource.open(file, { clock: systemClock, logger: silentLogger() }),
      new RegExp(file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')),
    );
  });
});
