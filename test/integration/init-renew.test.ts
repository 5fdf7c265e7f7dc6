/**
 * `meshid init --renew-issuer` (issue 22): a new issuer under the trust anchor a state folder
 * already has, signed with the anchor's key `meshid init` keeps in `root/tls.key`. A running
 * `meshid ca --dir` serves leaves from the new issuer without a restart; `meshid check` offers
 * the renewal for an expired issuer, and the fix works as printed. Every refusal names its file
 * and changes nothing. Real processes, real folders.
 */
import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CertifyClient,
  createCsr,
  parseCertificates,
  systemClock,
  toPem,
} from '../../core/index.js';
import { createIntermediateCa, createRootCa } from '../../core/pki.js';
import { runMeshid, startCaProcess, waitFor } from '../support/ca-process.js';
import type { CaProcess } from '../support/ca-process.js';
import { assertReportShape, byId, rotationStateJson } from '../support/check-report.js';
import type { Report } from '../support/check-report.js';
import { CA_IDENTITY, DAY, HOUR, idOf } from '../support/state.js';

const WEB = idOf('emojivoto', 'web');

/** The SHA-256 (hex of the DER) of the first certificate of a PEM text. */
const fingerprintOf = (pem: string): string =>
  parseCertificates(pem, 'ERR_INSPECT_TARGET')[0]!.fingerprint;

/** Every file of a folder with its bytes, for "nothing changed". */
async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else out[p] = (await readFile(p)).toString('base64');
    }
  };
  await walk(dir);
  return out;
}

describe('meshid init --renew-issuer', function () {
  this.timeout(300_000);
  let base: string;

  before(async () => {
    base = await mkdtemp(join(tmpdir(), 'meshid-renew-'));
  });
  after(async () => {
    await rm(base, { recursive: true, force: true });
  });

  /** A fresh folder written by `meshid init`. */
  let n = 0;
  const initFolder = async (): Promise<string> => {
    const dir = join(base, `state-${n++}`);
    const r = await runMeshid(['init', '--dir', dir]);
    assert.equal(r.code, 0, r.stderr);
    return dir;
  };

  it('init keeps the anchor key in root/tls.key (0600) and says what it is for', async () => {
    const dir = join(base, 'fresh');
    const r = await runMeshid(['init', '--dir', dir]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^ {2}${join(dir, 'root', 'tls.key')}$`, 'm'));
    assert.match(r.stdout, new RegExp(`meshid init --renew-issuer --dir ${dir}\\)$`, 'm'));
    assert.equal((await stat(join(dir, 'root', 'tls.key'))).mode & 0o777, 0o600);
    assert.equal((await stat(join(dir, 'root'))).mode & 0o777, 0o700);
  });

  it('a running meshid ca --dir serves leaves from the renewed issuer without a restart; the anchor stays', async () => {
    const dir = await initFolder();
    const ca: CaProcess = await startCaProcess(['--dir', dir, '--workers', '1']);
    try {
      const tok = await runMeshid(['token', '--dir', dir, '--ns', 'emojivoto', '--sa', 'web']);
      assert.equal(tok.code, 0, tok.stderr);
      const token = Buffer.from(tok.stdout.trim());
      const anchorsBefore = await readFile(join(dir, 'trust-anchors.pem'), 'utf8');
      const client = new CertifyClient({
        address: ca.address,
        serverName: CA_IDENTITY,
        anchorsPem: anchorsBefore,
      });
      const leafIssuer = async (): Promise<string> => {
        const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
        const res = await client.certify({
          identity: WEB,
          token,
          certificateSigningRequest: createCsr({ privateKey, dnsNames: [WEB] }),
        });
        return fingerprintOf(toPem(res.intermediateCertificates[0]!, 'CERTIFICATE'));
      };
      try {
        const oldFp = fingerprintOf(await readFile(join(dir, 'issuer', 'tls.crt'), 'utf8'));
        assert.equal(await leafIssuer(), oldFp);

        const r = await runMeshid(['init', '--renew-issuer', '--dir', dir]);
        assert.equal(r.code, 0, r.stderr);
        const newFp = fingerprintOf(await readFile(join(dir, 'issuer', 'tls.crt'), 'utf8'));
        assert.notEqual(newFp, oldFp);
        const anchorFp = fingerprintOf(anchorsBefore);
        assert.match(
          r.stdout,
          new RegExp(
            `^meshid init: renewed the issuer in ${dir} under the trust anchor root\\.linkerd\\.cluster\\.local \\(sha256 ${anchorFp}, kept\\)$`,
            'm',
          ),
        );
        assert.match(
          r.stdout,
          new RegExp(
            `^ {2}old issuer: identity\\.linkerd\\.cluster\\.local {2}sha256 ${oldFp} {2}valid \\S+Z to \\S+Z$`,
            'm',
          ),
        );
        assert.match(
          r.stdout,
          new RegExp(
            `^ {2}new issuer: identity\\.linkerd\\.cluster\\.local {2}sha256 ${newFp} {2}valid \\S+Z to \\S+Z$`,
            'm',
          ),
        );
        // The anchor is untouched; the key private; the new issuer chains to the same anchor.
        assert.equal(await readFile(join(dir, 'trust-anchors.pem'), 'utf8'), anchorsBefore);
        assert.equal((await stat(join(dir, 'issuer', 'tls.key'))).mode & 0o077, 0);
        assert.equal(
          fingerprintOf(await readFile(join(dir, 'issuer', 'ca.crt'), 'utf8')),
          anchorFp,
        );

        // The same CA process (no restart) issues from the new issuer once its watch has seen it.
        await waitFor('the running CA to issue from the renewed issuer', async () =>
          (await leafIssuer()) === newFp ? true : undefined,
        );
        assert.equal(ca.proc.exitCode, null, 'the CA kept running');
        assert.ok(
          ca.lines.some((l) => l.includes('"updated identity issuer"') && l.includes(newFp)),
          'the CA logged the new issuer by its fingerprint',
        );
      } finally {
        client.close();
      }
    } finally {
      await ca.stop();
    }
  });

  it('meshid check offers the renewal for an expired issuer, and the fix as printed makes it ✓', async () => {
    const dir = await initFolder();
    const now = systemClock.now();
    const anchorPem = await readFile(join(dir, 'trust-anchors.pem'), 'utf8');
    const rootKey = createPrivateKey(await readFile(join(dir, 'root', 'tls.key'), 'utf8'));
    const expired = await createIntermediateCa({
      issuer: {
        certificateDer: parseCertificates(anchorPem, 'ERR_INSPECT_TARGET')[0]!.der,
        privateKey: rootKey,
      },
      commonName: 'identity.linkerd.cluster.local',
      notBefore: now - 2 * DAY,
      notAfter: now - HOUR,
      pathLength: 0,
    });
    await writeFile(join(dir, 'issuer', 'tls.key'), expired.privateKeyPem, { mode: 0o600 });
    await writeFile(join(dir, 'issuer', 'tls.crt'), expired.certificatePem);
    const check = async (): Promise<{ code: number; report: Report }> => {
      const r = await runMeshid([
        'check',
        '--dir',
        dir,
        '--ca-address',
        '127.0.0.1:1',
        '--ca-admin',
        '127.0.0.1:1',
        '--timeout',
        '2s',
        '--output',
        'json',
      ]);
      const report = JSON.parse(r.stdout) as Report;
      assertReportShape(report);
      return { code: r.code, report };
    };
    const before = byId((await check()).report, 'issuer-expiry');
    assert.equal(before.status, 'error');
    const fix = /meshid init --renew-issuer --dir \S+/.exec(before.fix ?? '')?.[0];
    assert.equal(fix, `meshid init --renew-issuer --dir ${dir}`, before.fix);
    // The fix as printed.
    const r = await runMeshid(fix.split(' ').slice(1));
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      new RegExp(
        `old issuer: identity\\.linkerd\\.cluster\\.local {2}sha256 ${fingerprintOf(expired.certificatePem)} `,
      ),
    );
    const { report } = await check();
    for (const id of ['issuer-valid', 'issuer-key', 'issuer-chain', 'issuer-expiry'])
      assert.equal(byId(report, id).status, 'ok', `${id}: ${byId(report, id).message}`);
  });

  it('refuses, naming the file and changing nothing: no state, no anchor key, a key of no anchor, an expired anchor, a rotation in progress, an unsafe folder', async () => {
    // No state at all: the folder is not even made.
    const missing = join(base, 'missing');
    let r = await runMeshid(['init', '--renew-issuer', '--dir', missing]);
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr,
      `meshid init: no local state to renew in ${missing}: ${missing}/trust-anchors.pem does not exist. --renew-issuer renews the issuer of a folder "meshid init" wrote; write one first: meshid init --dir ${missing} [ERR_LOCAL_STATE]\n`,
    );
    await assert.rejects(stat(missing), { code: 'ENOENT' });

    const dir = await initFolder();
    const keyFile = join(dir, 'root', 'tls.key');
    const rootKey = await readFile(keyFile);
    const anchorFp = fingerprintOf(await readFile(join(dir, 'trust-anchors.pem'), 'utf8'));
    const unchanged = async (what: string, fn: () => Promise<void>): Promise<void> => {
      const before = await snapshot(dir);
      await fn();
      assert.deepEqual(await snapshot(dir), before, `${what}: the folder changed`);
    };

    // The anchor's key is not there.
    await rm(keyFile);
    await unchanged('no key', async () => {
      r = await runMeshid(['init', '--renew-issuer', '--dir', dir]);
      assert.equal(r.code, 1);
      assert.match(
        r.stderr,
        new RegExp(
          `^meshid init: the trust anchor's private key ${keyFile} is not there, so no issuer can be signed under root\\.linkerd\\.cluster\\.local \\(sha256 ${anchorFp}\\) in ${dir}/trust-anchors\\.pem .*meshid init --force --dir ${dir} .*\\[ERR_LOCAL_STATE\\]$`,
          'm',
        ),
      );
    });

    // A key, but of no anchor of the bundle.
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' })
      .privateKey.export({ type: 'pkcs8', format: 'pem' })
      .toString();
    await writeFile(keyFile, other, { mode: 0o600 });
    await unchanged('foreign key', async () => {
      r = await runMeshid(['init', '--renew-issuer', '--dir', dir]);
      assert.equal(r.code, 1);
      assert.match(
        r.stderr,
        new RegExp(
          `${keyFile} is the key of none of the trust anchors in ${dir}/trust-anchors\\.pem \\(root\\.linkerd\\.cluster\\.local \\(sha256 ${anchorFp}\\)\\)`,
        ),
      );
    });
    await writeFile(keyFile, 'garbage\n', { mode: 0o600 });
    await unchanged('garbage key', async () => {
      r = await runMeshid(['init', '--renew-issuer', '--dir', dir]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, new RegExp(`^meshid init: ${keyFile} is not a PEM private key; `));
    });
    await writeFile(keyFile, rootKey, { mode: 0o600 });

    // A rotation in progress moves the issuer itself.
    await writeFile(join(dir, 'rotation.json'), rotationStateJson());
    await unchanged('rotation', async () => {
      r = await runMeshid(['init', '--renew-issuer', '--dir', dir]);
      assert.equal(r.code, 1);
      assert.match(
        r.stderr,
        /a trust-anchor rotation \(\S+, phase \S+\) is in progress in .*Let it finish/,
      );
    });
    await rm(join(dir, 'rotation.json'));

    // A folder others could write is refused before anything is read from it.
    await chmod(dir, 0o777);
    await unchanged('unsafe', async () => {
      r = await runMeshid(['init', '--renew-issuer', '--dir', dir]);
      assert.equal(r.code, 1);
      assert.match(
        r.stderr,
        new RegExp(`the state folder ${dir} is writable by anyone .*chmod go-w ${dir}`),
      );
    });
    await chmod(dir, 0o700);

    // An expired anchor: an issuer under it would verify nowhere.
    const old = join(base, 'expired-anchor');
    await mkdir(join(old, 'root'), { recursive: true, mode: 0o700 });
    const now = systemClock.now();
    const root = await createRootCa({
      commonName: 'root.linkerd.cluster.local',
      notBefore: now - 3 * DAY,
      notAfter: now - DAY,
    });
    await writeFile(join(old, 'trust-anchors.pem'), root.certificatePem);
    await writeFile(join(old, 'root', 'tls.key'), root.privateKeyPem, { mode: 0o600 });
    const before = await snapshot(old);
    r = await runMeshid(['init', '--renew-issuer', '--dir', old]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      new RegExp(
        `the trust anchor root\\.linkerd\\.cluster\\.local \\(sha256 ${fingerprintOf(root.certificatePem)}\\) in ${old}/trust-anchors\\.pem expired at \\S+Z: .*meshid init --force --dir ${old}`,
      ),
    );
    assert.deepEqual(await snapshot(old), before);
  });

  it('refuses flags it contradicts with exit 2: --force (a new anchor), --trust-domain', async () => {
    const dir = await initFolder();
    const before = await snapshot(dir);
    let r = await runMeshid(['init', '--renew-issuer', '--force', '--dir', dir]);
    assert.equal(r.code, 2);
    assert.match(
      r.stderr,
      /^meshid init: --renew-issuer keeps the trust anchor and the issuer's name, so it cannot be combined with --force: /,
    );
    assert.match(r.stderr, /\[ERR_CONFIG_INVALID\]$/m);
    r = await runMeshid(['init', '--renew-issuer', '--trust-domain', 'example.org', '--dir', dir]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /cannot be combined with --trust-domain/);
    assert.deepEqual(await snapshot(dir), before);
  });
});
