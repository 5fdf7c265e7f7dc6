/**
 * `meshid check --dir` on the state folder itself (issue 22, item 7): a folder that is not there
 * is said so and nothing is asked; `token-signing/` is checked; an issuer key that is not a key
 * is named by its file, never an OpenSSL decoder string. Real `meshid` processes on real folders
 * written by `meshid init`; the CA is a port nothing listens on (these rows do not need it), or a
 * TCP listener that counts who connects.
 */
import { strict as assert } from 'node:assert';
import { generateKeyPairSync } from 'node:crypto';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import type { Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseCertificates } from '../../core/index.js';
import { runMeshid } from '../support/ca-process.js';
import { freePort } from '../support/proxy-process.js';
import { assertReportShape, byId } from '../support/check-report.js';
import type { Report } from '../support/check-report.js';

describe('meshid check --dir: the state folder, token-signing/ and the issuer key', function () {
  // Each case runs `meshid check` once; a loaded machine takes tens of seconds for one.
  this.timeout(300_000);
  let base: string;
  let dir: string;
  let closedPort: number;

  before(async () => {
    base = await mkdtemp(join(tmpdir(), 'meshid-check-dir-'));
    dir = join(base, 'state');
    const r = await runMeshid(['init', '--dir', dir]);
    assert.equal(r.code, 0, r.stderr);
    closedPort = await freePort();
  });
  after(async () => {
    await rm(base, { recursive: true, force: true });
  });

  const check = async (
    d: string,
    extra: string[] = [],
  ): Promise<{ code: number; report: Report; stderr: string }> => {
    const r = await runMeshid([
      'check',
      '--dir',
      d,
      '--ca-address',
      `127.0.0.1:${closedPort}`,
      '--ca-admin',
      `127.0.0.1:${closedPort}`,
      '--timeout',
      '2s',
      '--output',
      'json',
      ...extra,
    ]);
    assert.ok(r.stdout.startsWith('{'), `not JSON: ${r.stdout}\n${r.stderr}`);
    const report = JSON.parse(r.stdout) as Report;
    assertReportShape(report);
    return { code: r.code, report, stderr: r.stderr };
  };

  /** Replaces a file for the duration of `fn`, then puts the original back. */
  const withFile = async (
    path: string,
    content: string | Buffer,
    fn: () => Promise<void>,
    mode = 0o600,
  ): Promise<void> => {
    const original = await readFile(path);
    await writeFile(path, content, { mode });
    await chmod(path, mode);
    try {
      await fn();
    } finally {
      await writeFile(path, original);
      await chmod(path, 0o600);
    }
  };

  it('a fresh meshid init folder: ✓ state-dir and ✓ token-signing (RSA 2048, 0600, the JWKS first key)', async () => {
    const { report } = await check(dir);
    assert.equal(byId(report, 'state-dir').status, 'ok');
    const t = byId(report, 'token-signing');
    assert.equal(t.status, 'ok', t.message);
    assert.match(
      t.message,
      new RegExp(
        `^${join(dir, 'token-signing', 'key.pem')}: RSA 2048, mode 0600, the first key of ${join(dir, 'token-signing', 'jwks.json')} \\(kid [A-Za-z0-9_-]{43}\\)$`,
      ),
    );
  });

  it('a folder that does not exist: one × state-dir naming --dir, the path and meshid init; nothing is asked (exit 1)', async () => {
    // Something listens where the CA, its admin and a proxy would be: nothing may connect to it.
    let connections = 0;
    const server: Server = createServer((s) => {
      connections++;
      s.destroy();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    const missing = join(base, 'no-such-folder');
    try {
      const r = await runMeshid([
        'check',
        '--dir',
        missing,
        '--ca-address',
        `127.0.0.1:${port}`,
        '--ca-admin',
        `127.0.0.1:${port}`,
        '--proxy-admin',
        `127.0.0.1:${port}`,
        '--output',
        'json',
      ]);
      assert.equal(r.code, 1, r.stderr);
      const report = JSON.parse(r.stdout) as Report;
      assertReportShape(report);
      assert.deepEqual(
        report.checks.map((c) => `${c.id} ${c.status}`),
        ['state-dir error'],
      );
      const c = byId(report, 'state-dir');
      assert.equal(
        c.message,
        `the state folder ${missing} (--dir) does not exist; nothing else was checked or asked`,
      );
      assert.match(c.fix ?? '', new RegExp(`^write it with "meshid init --dir ${missing}"`));
      assert.equal(connections, 0, 'check connected to the CA or a proxy without a state folder');

      const text = await runMeshid([
        'check',
        '--dir',
        missing,
        '--ca-address',
        `127.0.0.1:${port}`,
      ]);
      assert.equal(text.code, 1);
      assert.match(
        text.stdout,
        /^State folder\n {2}× state-dir: the state folder .* does not exist/m,
      );
      assert.match(
        text.stdout,
        new RegExp(`^ {6}fix: write it with "meshid init --dir ${missing}"`, 'm'),
      );
      assert.equal(connections, 0);
    } finally {
      server.close();
    }
  });

  it('a file given as --dir: × state-dir "is not a folder"', async () => {
    const { code, report } = await check(join(dir, 'trust-anchors.pem'));
    assert.equal(code, 1);
    assert.deepEqual(
      report.checks.map((c) => c.id),
      ['state-dir'],
    );
    assert.match(byId(report, 'state-dir').message, /trust-anchors\.pem \(--dir\) is not a folder/);
  });

  describe('token-signing/key.pem: × token-signing naming the file', () => {
    const key = (): string => join(dir, 'token-signing', 'key.pem');
    const jwks = (): string => join(dir, 'token-signing', 'jwks.json');

    it('garbage: not a PEM private key, fixed by meshid init --force', async () => {
      await withFile(key(), 'not a key\n', async () => {
        const { code, report } = await check(dir);
        assert.equal(code, 1);
        const t = byId(report, 'token-signing');
        assert.equal(t.status, 'error');
        assert.equal(t.message, `${key()} is not a PEM private key`);
        assert.match(t.fix ?? '', /meshid init --force --dir /);
      });
    });

    it('readable by others: chmod 600 (and the folder rule says it too)', async () => {
      await withFile(
        key(),
        await readFile(key()),
        async () => {
          const { report } = await check(dir);
          const t = byId(report, 'token-signing');
          assert.equal(t.status, 'error');
          assert.match(t.message, /is readable by others \(mode 0644\)/);
          assert.equal(t.fix, `run: chmod 600 ${key()}`);
          assert.equal(byId(report, 'state-dir').status, 'error');
        },
        0o644,
      );
    });

    it('another RSA key: not in the JWKS the CA uses', async () => {
      const otherRsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
        .privateKey.export({ type: 'pkcs8', format: 'pem' })
        .toString();
      await withFile(key(), otherRsa, async () => {
        const t = byId((await check(dir)).report, 'token-signing');
        assert.equal(t.status, 'error');
        assert.equal(
          t.message,
          `${key()} is not the key of any of the 1 keys in ${jwks()}: the CA (meshid ca --dir ${dir}) refuses every token it signs`,
        );
      });
    });

    it('an EC key: not the RSA key meshid token signs RS256 with', async () => {
      const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' })
        .privateKey.export({ type: 'pkcs8', format: 'pem' })
        .toString();
      await withFile(key(), ec, async () => {
        assert.match(
          byId((await check(dir)).report, 'token-signing').message,
          /is EC, not an RSA key of at least 2048 bits \(meshid token signs RS256\)$/,
        );
      });
    });

    it('missing: meshid token cannot sign', async () => {
      const saved = await readFile(key());
      await rm(key());
      try {
        const t = byId((await check(dir)).report, 'token-signing');
        assert.equal(t.status, 'error');
        assert.equal(
          t.message,
          `${key()} does not exist: "meshid token" cannot sign development tokens`,
        );
      } finally {
        await writeFile(key(), saved, { mode: 0o600 });
      }
    });
  });

  describe('issuer tls.key: × naming the file, never an OpenSSL decoder string', () => {
    const keyFile = (): string => join(dir, 'issuer', 'tls.key');
    const crtFile = (): string => join(dir, 'issuer', 'tls.crt');
    const refused = async (
      what: string,
      content: string,
      id: string,
      expected: () => Promise<RegExp> | RegExp,
    ): Promise<void> => {
      await withFile(keyFile(), content, async () => {
        const { code, report, stderr } = await check(dir);
        assert.equal(code, 1, what);
        const c = byId(report, id);
        assert.equal(c.status, 'error', what);
        assert.match(c.message, await expected(), what);
        if (id === 'issuer-valid') assert.ok(c.message.startsWith(keyFile()), c.message);
        assert.doesNotMatch(JSON.stringify(report) + stderr, /DECODER|error:[0-9A-F]{8}/, what);
      });
    };

    it('garbage: not a PEM private key', () =>
      refused(
        'garbage',
        'garbage\n',
        'issuer-valid',
        () => /tls\.key is not a PEM private key \(line 1: /,
      ));

    it('a certificate where the key should be: not a PEM private key, saying what it holds', async () =>
      refused(
        'a certificate',
        await readFile(crtFile(), 'utf8'),
        'issuer-valid',
        () => /tls\.key is not a PEM private key \(it holds "CERTIFICATE"\)$/,
      ));

    it('a P-384 key: not the ECDSA P-256 key the CA signs with', () =>
      refused(
        'P-384',
        generateKeyPairSync('ec', { namedCurve: 'P-384' })
          .privateKey.export({ type: 'pkcs8', format: 'pem' })
          .toString(),
        'issuer-valid',
        () => /tls\.key is not a usable issuer key: .*ECDSA P-384.*must be ECDSA P-256/,
      ));

    it('another P-256 key: does not match the issuer certificate, named by file and fingerprint', () =>
      refused(
        'another P-256 key',
        generateKeyPairSync('ec', { namedCurve: 'P-256' })
          .privateKey.export({ type: 'pkcs8', format: 'pem' })
          .toString(),
        'issuer-key',
        async () => {
          const crt = parseCertificates(
            await readFile(crtFile(), 'utf8'),
            'ERR_INSPECT_TARGET',
          )[0]!;
          return new RegExp(
            `^${keyFile()} does not match the issuer certificate ${crtFile()} \\(identity\\.linkerd\\.cluster\\.local, sha256 ${crt.fingerprint}\\)$`,
          );
        },
      ));
  });
});
