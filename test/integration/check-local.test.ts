/**
 * `meshid check --dir` against a real local setup: a state folder, a real `meshid ca` process on
 * it and real proxy processes; each check is broken on purpose, one at a time, and the test
 * asserts the line (text and JSON) and the exit status.
 */
import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import { createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { cp, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { formatAddress, parseCertificates, systemClock } from '../../core/index.js';
import { createIntermediateCa, createRootCa } from '../../core/pki.js';
import { MESHID_BIN, runMeshid, startCaProcess } from '../support/ca-process.js';
import type { CaProcess } from '../support/ca-process.js';
import { freePort, startProxyProcess } from '../support/proxy-process.js';
import type { ProxyProcess } from '../support/proxy-process.js';
import { DAY, HOUR, makeTestState } from '../support/state.js';
import type { TestState } from '../support/state.js';
import { assertReportShape, byId, rotationStateJson } from '../support/check-report.js';
import type { Report } from '../support/check-report.js';

const execFileAsync = promisify(execFile);

describe('meshid check --dir (real CA and proxy processes)', function () {
  // A test runs meshid check up to four times; on a loaded machine one run takes tens of seconds.
  this.timeout(300_000);
  let state: TestState;
  let ca: CaProcess;
  let proxy: ProxyProcess;
  // A second, unrelated mesh: its proxy holds a certificate from other anchors.
  let otherState: TestState;
  let otherCa: CaProcess;
  let strayProxy: ProxyProcess;

  before(async () => {
    state = await makeTestState({ plainFiles: true });
    otherState = await makeTestState();
    [ca, otherCa] = await Promise.all([
      startCaProcess([...state.caArgs, '--workers', '1']),
      startCaProcess([...otherState.caArgs, '--workers', '1']),
    ]);
    [proxy, strayProxy] = await Promise.all([
      startProxyProcess({ state, ca: formatAddress(ca.address), sa: 'web' }),
      startProxyProcess({ state: otherState, ca: formatAddress(otherCa.address), sa: 'stray' }),
    ]);
  });
  after(async () => {
    await Promise.all([proxy, strayProxy, ca, otherCa].map((p) => p?.stop()));
    await Promise.all([state?.cleanup(), otherState?.cleanup()]);
  });

  const base = (): string[] => [
    'check',
    '--dir',
    state.dir,
    '--ca-address',
    formatAddress(ca.address),
    '--ca-admin',
    formatAddress(ca.admin),
    '--proxy-admin',
    formatAddress(proxy.admin),
  ];
  const check = async (
    extra: string[] = [],
    env: Record<string, string> = {},
  ): Promise<{ code: number; report: Report }> => {
    const r = await runMeshid([...base(), ...extra, '--output', 'json'], env);
    assert.ok(r.stdout.startsWith('{'), `not JSON: ${r.stdout}\n${r.stderr}`);
    const report = JSON.parse(r.stdout) as Report;
    assertReportShape(report);
    return { code: r.code, report };
  };
  const text = (extra: string[] = [], env: Record<string, string> = {}) =>
    runMeshid([...base(), ...extra], env);
  /** Installs a broken issuer for the duration of `fn`, then the good one again. */
  const withIssuer = async (
    install: () => Promise<void>,
    fn: () => Promise<void>,
  ): Promise<void> => {
    await install();
    try {
      await fn();
    } finally {
      await state.installIssuer(state.issuer);
    }
  };

  it('all green: every check ✓, exit 0, and the text is a grouped checklist without colour on a pipe', async () => {
    const { code, report } = await check();
    assert.equal(code, 0, JSON.stringify(report, null, 2));
    assert.equal(report.mode, 'local');
    assert.equal(report.success, true);
    assert.deepEqual(
      report.checks.filter((c) => c.status !== 'ok').map((c) => `${c.id}: ${c.message}`),
      [],
    );
    assert.deepEqual(
      report.checks.map((c) => c.id),
      [
        'state-dir',
        'token-signing',
        'anchors-valid',
        'anchors-expiry',
        'issuer-valid',
        'issuer-is-ca',
        'issuer-key',
        'issuer-chain',
        'issuer-expiry',
        'ca-reachable',
        'ca-certificate',
        'ca-ready',
        'proxies-certificates',
        'proxies-key-exchange',
        'rotation-state',
        'fips-status',
      ],
    );
    assert.match(byId(report, 'proxies-certificates').message, /^1 proxies hold certificates/);
    assert.match(byId(report, 'rotation-state').message, /no rotation in progress/);
    // The CA's fips_enabled gauge (issue 10) read from its /metrics.
    assert.match(
      byId(report, 'fips-status').message,
      /^FIPS mode: CA off; this client off \(OpenSSL /,
    );

    const t = await text();
    assert.equal(t.code, 0);
    assert.match(t.stdout, /^Trust anchors\n {2}✓ anchors-valid: 1 anchor in /m);
    assert.match(t.stdout, /^Identity CA\n {2}✓ ca-reachable: TLS handshake with /m);
    assert.match(t.stdout, /^Status: all checks passed \(16 ✓, 0 ‼, 0 ×\)/m);
    assert.ok(!(t.stdout + t.stderr).includes('\u001b['), 'no escape codes on a pipe');
  });

  it('expired issuer: × issuer-expiry with a fix line, exit 1', async () => {
    const now = systemClock.now();
    const expired = await createIntermediateCa({
      issuer: state.root,
      commonName: 'identity.linkerd.cluster.local',
      notBefore: now - 2 * DAY,
      notAfter: now - HOUR,
      pathLength: 0,
    });
    await withIssuer(
      () => state.installIssuer(expired),
      async () => {
        const { code, report } = await check();
        assert.equal(code, 1);
        const c = byId(report, 'issuer-expiry');
        assert.equal(c.status, 'error');
        assert.match(c.message, /^identity\.linkerd\.cluster\.local expired 1h ago \(NotAfter /);
        assert.match(c.fix ?? '', /replace the issuer now/);
        // The renewal under the same anchor first, a new root only as the other way.
        assert.match(
          c.fix ?? '',
          new RegExp(
            `^replace the issuer now: renew it under the same trust anchor: meshid init --renew-issuer --dir ${state.dir} `,
          ),
        );
        // The signature chain is still right: only the expiry is wrong.
        assert.equal(byId(report, 'issuer-chain').status, 'ok');
        const t = await text();
        assert.equal(t.code, 1);
        assert.match(t.stdout, /^ {2}× issuer-expiry: identity\.linkerd\.cluster\.local expired /m);
        assert.match(t.stdout, /^ {6}fix: replace the issuer now/m);
        assert.match(t.stdout, /^Status: 1 failed /m);
      },
    );
  });

  it('issuer not yet valid: × issuer-expiry', async () => {
    const now = systemClock.now();
    const future = await createIntermediateCa({
      issuer: state.root,
      commonName: 'identity.linkerd.cluster.local',
      notBefore: now + 2 * HOUR,
      notAfter: now + 10 * DAY,
      pathLength: 0,
    });
    await withIssuer(
      () => state.installIssuer(future),
      async () => {
        const { code, report } = await check();
        assert.equal(code, 1);
        assert.match(
          byId(report, 'issuer-expiry').message,
          /not valid for another 1h 59m|not valid for another 2h/,
        );
      },
    );
  });

  it('issuer close to expiry past a third of its life: ‼ issuer-expiry, exit 0', async () => {
    const now = systemClock.now();
    const soon = await createIntermediateCa({
      issuer: state.root,
      commonName: 'identity.linkerd.cluster.local',
      notBefore: now - 10 * HOUR,
      notAfter: now + HOUR,
      pathLength: 0,
    });
    await withIssuer(
      () => state.installIssuer(soon),
      async () => {
        const { code, report } = await check();
        assert.equal(code, 0, 'a warning is not a failure');
        const c = byId(report, 'issuer-expiry');
        assert.equal(c.status, 'warn');
        assert.match(c.message, /valid for 59m|valid for 1h/);
        assert.equal(report.summary.warn, 1);
      },
    );
  });

  it('anchor mismatch: an issuer from another root is × issuer-chain', async () => {
    const now = systemClock.now();
    const otherRoot = await createRootCa({
      commonName: 'other-root.example',
      notBefore: now - HOUR,
      notAfter: now + DAY,
    });
    const foreign = await state.newIssuer({ root: otherRoot });
    await withIssuer(
      () => state.installIssuer(foreign, { root: otherRoot }),
      async () => {
        const { code, report } = await check();
        assert.equal(code, 1);
        const c = byId(report, 'issuer-chain');
        assert.equal(c.status, 'error');
        assert.match(
          c.message,
          /does not chain to the current trust anchors: .*issued by other-root\.example/,
        );
        // Both folders name their certificates alike: the files and fingerprints tell them apart.
        const [fi, fr] = [foreign, otherRoot].map(
          (x) => parseCertificates(x.certificatePem, 'ERR_INSPECT_TARGET')[0]!.fingerprint,
        );
        const anchor = parseCertificates(state.root.certificatePem, 'ERR_INSPECT_TARGET')[0]!;
        assert.ok(
          c.message.endsWith(
            `(${join(state.issuerDir, 'tls.crt')}: identity.linkerd.cluster.local sha256 ${fi}, issued by other-root.example sha256 ${fr}; ${state.anchorsFile}: root.linkerd.cluster.local sha256 ${anchor.fingerprint})`,
          ),
          c.message,
        );
      },
    );
  });

  it('an issuer that is not a CA: × issuer-is-ca; a key that is not its own: × issuer-key', async () => {
    const notCa = await createIntermediateCa({
      issuer: state.root,
      commonName: 'identity.linkerd.cluster.local',
      notBefore: systemClock.now() - HOUR,
      notAfter: systemClock.now() + DAY,
      isCa: false,
    });
    await withIssuer(
      () => state.installIssuer(notCa),
      async () => {
        const { code, report } = await check();
        assert.equal(code, 1);
        assert.equal(byId(report, 'issuer-is-ca').status, 'error');
        assert.match(byId(report, 'issuer-is-ca').message, /is not a CA certificate/);
      },
    );
    const otherKey = generateKeyPairSync('ec', { namedCurve: 'P-256' })
      .privateKey.export({ type: 'pkcs8', format: 'pem' })
      .toString();
    assert.ok(createPrivateKey(otherKey));
    await withIssuer(
      () => state.installIssuer(state.issuer, { key: otherKey }),
      async () => {
        const { code, report } = await check();
        assert.equal(code, 1);
        assert.equal(byId(report, 'issuer-key').status, 'error');
        // The files by their paths and the certificate by its fingerprint (issue 22, item 7).
        const fp = parseCertificates(state.issuer.certificatePem, 'ERR_INSPECT_TARGET')[0]!;
        assert.equal(
          byId(report, 'issuer-key').message,
          `${join(state.issuerDir, 'tls.key')} does not match the issuer certificate ${join(state.issuerDir, 'tls.crt')} (identity.linkerd.cluster.local, sha256 ${fp.fingerprint})`,
        );
      },
    );
  });

  it('anchors that do not parse: × anchors-valid, and the issuer cannot chain', async () => {
    const anchorsFile = join(await mkdtemp(join(tmpdir(), 'meshid-check-')), 'bad.pem');
    const dir = join(anchorsFile, '..');
    await writeFile(join(dir, 'trust-anchors.pem'), 'not a certificate\n');
    try {
      const r = await runMeshid([
        'check',
        '--dir',
        dir,
        '--output',
        'json',
        '--ca-address',
        formatAddress(ca.address),
        '--ca-admin',
        formatAddress(ca.admin),
      ]);
      assert.equal(r.code, 1);
      const report = JSON.parse(r.stdout) as Report;
      assertReportShape(report);
      assert.equal(byId(report, 'anchors-valid').status, 'error');
      assert.match(byId(report, 'anchors-valid').message, /trust-anchors\.pem: /);
      assert.match(
        byId(report, 'issuer-valid').message,
        /cannot read .*issuer: tls\.crt: no such file/,
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('unreachable CA: × ca-reachable and × ca-ready with how to start it', async () => {
    const port = await freePort();
    const { code, report } = await check([
      '--ca-address',
      `127.0.0.1:${port}`,
      '--ca-admin',
      `127.0.0.1:${port}`,
    ]);
    assert.equal(code, 1);
    const c = byId(report, 'ca-reachable');
    assert.equal(c.status, 'error');
    assert.equal(c.message, `cannot reach the CA at 127.0.0.1:${port}: connection refused`);
    assert.match(c.fix ?? '', /meshid ca --dir/);
    assert.equal(byId(report, 'ca-ready').status, 'error');
    assert.equal(
      report.checks.find((x) => x.id === 'ca-certificate'),
      undefined,
      'not checked without a connection',
    );
  });

  it('a CA that serves another name: × ca-certificate', async () => {
    const { code, report } = await check([
      '--identity-name',
      'linkerd-identity.other.serviceaccount.identity.other.cluster.local',
    ]);
    assert.equal(code, 1);
    assert.match(
      byId(report, 'ca-certificate').message,
      /serves a certificate for linkerd-identity\.linkerd\..*, not linkerd-identity\.other\./,
    );
  });

  it('a proxy with a certificate from other anchors: × proxies-certificates naming it', async () => {
    const { code, report } = await check(['--proxy-admin', formatAddress(strayProxy.admin)]);
    assert.equal(code, 1);
    const c = byId(report, 'proxies-certificates');
    assert.equal(c.status, 'error');
    assert.match(
      c.message,
      /^1 of 2 proxies hold no certificate that chains to the current anchors: 127\.0\.0\.1:\d+ \(stray\.emojivoto\.serviceaccount\.identity\.linkerd\.cluster\.local: identity\.linkerd\.cluster\.local \(issued by root\.linkerd\.cluster\.local\) is not signed by any current anchor/,
    );
    assert.match(c.fix ?? '', /restart those pods/);
  });

  it('rotation state: in progress is ‼ with its phase and wait, overdue or failing is ×, unreadable is ×', async () => {
    const file = join(state.dir, 'rotation.json');
    try {
      await writeFile(
        file,
        rotationStateJson({
          waitingFor: { description: 'proxies to load the staged bundle', done: 1, total: 2 },
        }),
      );
      let r = await check();
      assert.equal(r.code, 0);
      assert.equal(byId(r.report, 'rotation-state').status, 'warn');
      assert.equal(
        byId(r.report, 'rotation-state').message,
        'rotation r1 in phase propagate since 2026-01-01T00:00:00.000Z; waiting for proxies to load the staged bundle (1/2)',
      );
      await writeFile(
        file,
        rotationStateJson({ lastError: 'the issuer does not chain to the new root' }),
      );
      r = await check();
      assert.equal(r.code, 1);
      assert.match(
        byId(r.report, 'rotation-state').message,
        /: the issuer does not chain to the new root$/,
      );
      await writeFile(file, rotationStateJson({ phase: 'done' }));
      r = await check();
      assert.equal(r.code, 0);
      assert.match(
        byId(r.report, 'rotation-state').message,
        /^no rotation in progress \(the last one, r1, ended done at /,
      );
      await writeFile(file, '{ not json');
      r = await check();
      assert.equal(r.code, 1);
      assert.match(
        byId(r.report, 'rotation-state').message,
        /cannot be read: rotation state is not valid JSON/,
      );
    } finally {
      await rm(file, { force: true });
    }
  });

  it('anchors: an expired anchor beside the live one is × anchors-expiry, one near its end is ‼ (exit 0)', async () => {
    const now = systemClock.now();
    const withAnchor = async (extra: { notBefore: number; notAfter: number }) => {
      const dir = await mkdtemp(join(tmpdir(), 'meshid-check-anchors-'));
      try {
        const other = await createRootCa({
          commonName: 'old-root.linkerd.cluster.local',
          ...extra,
        });
        await writeFile(
          join(dir, 'trust-anchors.pem'),
          state.root.certificatePem + other.certificatePem,
        );
        await cp(state.issuerDir, join(dir, 'issuer'), { recursive: true, dereference: true });
        await cp(join(state.dir, 'token-signing'), join(dir, 'token-signing'), {
          recursive: true,
        });
        return await runMeshid(
          [...base().map((a) => (a === state.dir ? dir : a)), '--output', 'json'],
          {},
        );
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    };
    const expired = await withAnchor({ notBefore: now - 30 * DAY, notAfter: now - DAY });
    assert.equal(expired.code, 1);
    const e = JSON.parse(expired.stdout) as Report;
    assertReportShape(e);
    const ex = byId(e, 'anchors-expiry');
    assert.equal(ex.status, 'error');
    assert.match(
      ex.message,
      /^old-root\.linkerd\.cluster\.local expired 1d(?: \d+h)? ago \(NotAfter .*\) \(1 of 2 anchors still valid\)$/,
    );
    assert.match(ex.fix ?? '', /^rotate the trust anchor now \(docs\/rotation\.md\)/);
    assert.equal(byId(e, 'issuer-chain').status, 'ok', 'the live anchor still anchors the issuer');

    const soon = await withAnchor({ notBefore: now - 90 * DAY, notAfter: now + 10 * DAY });
    assert.equal(soon.code, 0);
    const w = JSON.parse(soon.stdout) as Report;
    const sw = byId(w, 'anchors-expiry');
    assert.equal(sw.status, 'warn');
    assert.match(sw.message, /^old-root\.linkerd\.cluster\.local valid for (9d 23h|10d) more/);
    assert.match(sw.fix ?? '', /^plan the trust-anchor rotation before it expires/);
  });

  it('on a real terminal (a pty from script(1)): colour and a progress line; NO_COLOR and TERM=dumb: neither colour nor escapes', async () => {
    const onPty = async (env: Record<string, string>): Promise<string> => {
      const cmd = [process.execPath, MESHID_BIN, ...base()].map((a) => `'${a}'`).join(' ');
      const { stdout } = await execFileAsync('script', ['-q', '-e', '-c', cmd, '/dev/null'], {
        env: { PATH: process.env['PATH'] ?? '', ...env },
        timeout: 60_000,
      });
      return stdout;
    };
    const ESC = '\u001b';
    const tty = await onPty({ TERM: 'xterm' });
    assert.ok(
      tty.includes(`${ESC}[32m✓${ESC}[39m anchors-valid`),
      `no green ✓ on a terminal:\n${tty}`,
    );
    assert.ok(tty.includes(`${ESC}[1mTrust anchors${ESC}[22m`), 'group headings in bold');
    assert.match(tty, new RegExp(`\r${ESC}\\[K. reading the trust anchors and the issuer…`));
    assert.ok(
      tty.includes(`\r${ESC}[K${ESC}[1mmeshid check`),
      'the progress line is cleared first',
    );
    const noColor = await onPty({ TERM: 'xterm', NO_COLOR: '1' });
    assert.match(noColor, /✓ anchors-valid/);
    assert.ok(
      !new RegExp(`${ESC}\\[[0-9;]*m`).test(noColor),
      `colour despite NO_COLOR:\n${noColor}`,
    );
    const dumb = await onPty({ TERM: 'dumb' });
    assert.match(dumb, /✓ anchors-valid/);
    assert.ok(!dumb.includes(ESC), `escape codes on TERM=dumb:\n${dumb}`);
  });

  it('colour only on request of a terminal: NO_COLOR and pipes get none, bad flags are exit 2', async () => {
    const t = await text([], { NO_COLOR: '1' });
    assert.ok(!t.stdout.includes('\u001b['));
    const bad = await runMeshid(['check', '--dir', state.dir, '--output', 'yaml']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /output \(--output, MESHID_OUTPUT\): Invalid option/);
  });
});
