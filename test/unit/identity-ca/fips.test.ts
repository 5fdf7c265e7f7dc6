import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseCsr } from '../../../core/index.js';
import { ManualClock } from '../../../core/clock.js';
import { silentLogger } from '../../../core/logger.js';
import type { GeneratedCa } from '../../../core/pki.js';
import { IssuerStore } from '../../../identity-ca/issuer/store.js';
import { inTempDir, opensslCsr, peculiarCsr } from '../core/fixtures/csr-makers.js';
import { NOW, assertRefused, bundle, ca, material, root } from './fixtures/pki.js';
import { checkFipsCsr } from '../../../identity-ca/issuer/csr-policy.js';
import { probeX509Crypto } from '../../../identity-ca/issuer/fips-probe.js';

/** A self-signed Ed25519 CA certificate made by the openssl CLI. */
function ed25519Root(): string {
  return inTempDir((dir) => {
    const out = join(dir, 'root.pem');
    execFileSync(
      'openssl',
      ['req', '-x509', '-newkey', 'ed25519', '-nodes', '-keyout', join(dir, 'k.pem')]
        .concat(['-subj', '/CN=ed25519 root', '-days', '3650'])
        .concat(['-addext', 'basicConstraints=critical,CA:TRUE', '-out', out]),
      { stdio: 'ignore' },
    );
    return readFileSync(out, 'utf8');
  });
}

describe('FIPS mode in the CA: anchors and issuers', () => {
  let p256Root: GeneratedCa;
  let rsaRoot: GeneratedCa;
  let issuer: GeneratedCa;
  let issuerUnderRsa: GeneratedCa;
  let edRoot: string;
  const store = (fips: boolean): IssuerStore =>
    new IssuerStore({ clock: new ManualClock(NOW), logger: silentLogger(), fips });

  before(async () => {
    p256Root = await root('root-p256.test');
    rsaRoot = await root('root-rsa.test', { keyAlgorithm: 'rsa-2048' });
    issuer = await ca(p256Root, 'issuer.test');
    issuerUnderRsa = await ca(rsaRoot, 'issuer-rsa.test');
    edRoot = ed25519Root();
  });

  it('accepts P-256 and RSA-2048 anchors and the issuers under them', async () => {
    assert.equal(
      (await store(true).apply(material(issuer), bundle(p256Root), 't')).status,
      'updated',
    );
    const rsa = await store(true).apply(material(issuerUnderRsa), bundle(rsaRoot), 't');
    assert.equal(rsa.status, 'updated');
  });

  it('refuses a bundle holding an Ed25519 anchor, saying FIPS mode refused it', async () => {
    const s = store(true);
    const result = await s.apply(material(issuer), bundle(p256Root) + edRoot, 't');
    assert.equal(result.status, 'rejected');
    assert.equal(s.current(), undefined);
    await assertRefused(
      store(true)
        .apply(material(issuer), bundle(p256Root) + edRoot, 't')
        .then((r) => {
          if (r.status === 'rejected') throw r.error;
        }),
      'ERR_FIPS_MATERIAL_REFUSED',
      /^FIPS mode refused trust anchor #2 "CN=ed25519 root": its key is Ed25519/,
    );
  });

  it('accepts the same bundle outside FIPS mode (behaviour unchanged)', async () => {
    const result = await store(false).apply(material(issuer), bundle(p256Root) + edRoot, 't');
    assert.equal(result.status, 'updated');
  });
});

describe('FIPS mode in the CA: CSRs', () => {
  const id = 'web.emojivoto.serviceaccount.identity.linkerd.cluster.local';
  const san = [{ type: 'dns' as const, value: id }];

  it('passes P-256 and P-384 ECDSA and RSA-2048 CSRs on to the issuance rules', async () => {
    for (const key of ['P-256', 'P-384', 'RSA'] as const) {
      checkFipsCsr(parseCsr((await peculiarCsr({ key, san })).der));
    }
  });

  it('refuses an Ed25519 key, an RSA-1024 key and a SHA-512 signature, saying FIPS mode refused them', async () => {
    await assertRefused(
      peculiarCsr({ key: 'Ed25519', san }).then((r) => checkFipsCsr(parseCsr(r.der))),
      'ERR_FIPS_CSR_REFUSED',
      /^FIPS mode refused the CSR: its key is Ed25519/,
    );
    const rsa1024 = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey;
    await assertRefused(
      () => checkFipsCsr(parseCsr(opensslCsr({ key: rsa1024, subject: `/CN=${id}` }))),
      'ERR_FIPS_CSR_REFUSED',
      /its key is RSA 1024-bit/,
    );
    const sha512 = inTempDir((dir) => {
      const key = join(dir, 'k.pem');
      const out = join(dir, 'c.der');
      const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      writeFileSync(key, privateKey.export({ type: 'pkcs8', format: 'pem' }));
      execFileSync(
        'openssl',
        ['req', '-new', '-key', key, '-subj', `/CN=${id}`, '-sha512'].concat([
          '-outform',
          'DER',
          '-out',
          out,
        ]),
        { stdio: 'ignore' },
      );
      return readFileSync(out);
    });
    await assertRefused(
      () => checkFipsCsr(parseCsr(sha512)),
      'ERR_FIPS_CSR_REFUSED',
      /signed with algorithm 1\.2\.840\.10045\.4\.3\.4, not ECDSA or RSA with SHA-256\/384/,
    );
  });
});

describe('FIPS mode in the CA: the x509 crypto probe', () => {
  it('sees RSA-1024 allowed in this process, which runs on the default provider', async () => {
    // The FIPS suite runs the same probe inside a CA on the FIPS provider, where it is refused;
    // here it shows the probe tells the two apart.
    const probe = await probeX509Crypto(Date.now());
    assert.equal(probe.approvedWorks, true, probe.approvedError);
    assert.equal(probe.nonApprovedRefused, false);
  });
});
