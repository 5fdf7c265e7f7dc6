/**
 * FIPS mode without a FIPS provider (the default suite has none): every command asked for FIPS
 * mode exits non-zero with a message saying why and how to run Node with a provider, and changes
 * nothing. Without FIPS mode the CA reports fips_enabled 0 and logs its crypto status. The FIPS
 * suite (`npm run test:fips`) runs the same commands on the real provider.
 */
import { strict as assert } from 'node:assert';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { adminGet, metricValue, runMeshid, startCaProcess } from '../support/ca-process.js';
import { CA_IDENTITY, makeTestState } from '../support/state.js';
import type { TestState } from '../support/state.js';

function assertExplains(r: { code: number; stderr: string }, command: string): void {
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, new RegExp(`^meshid ${command}: FIPS mode was requested`));
  assert.match(r.stderr, /cannot run its crypto on a FIPS provider: .*no FIPS provider is loaded/);
  assert.match(r.stderr, /does not fall back to non-FIPS crypto/);
  assert.match(r.stderr, /--openssl-config=<config> --enable-fips/);
  assert.match(r.stderr, /\[ERR_FIPS_UNAVAILABLE\]\n$/);
}

describe('FIPS mode requested without a FIPS provider', function () {
  this.timeout(60_000);
  let state: TestState;
  before(async () => {
    state = await makeTestState();
  });
  after(async () => state?.cleanup());

  it('meshid ca --fips exits non-zero, explaining, and never listens', async () => {
    const r = await runMeshid([
      'ca',
      ...state.caArgs,
      '--fips',
      '--listen',
      '127.0.0.1:0',
      '--admin',
      '127.0.0.1:0',
    ]);
    assertExplains(r, 'ca');
    assert.doesNotMatch(r.stdout, /"msg":"listening"/);
  });

  it('MESHID_FIPS=1 meshid proxy exits non-zero, explaining', async () => {
    const r = await runMeshid(
      ['proxy', '--identity-addr', '127.0.0.1:1', '--identity-name', CA_IDENTITY]
        .concat(['--trust-anchors', state.anchorsFile, '--token-file', join(state.dir, 'none')])
        .concat([
          '--local-identity',
          'web.emojivoto.serviceaccount.identity.linkerd.cluster.local',
        ]),
      { MESHID_FIPS: '1' },
    );
    assertExplains(r, 'proxy');
  });

  it('meshid init --fips exits non-zero and writes nothing', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'meshid-fips-'));
    try {
      const r = await runMeshid(['init', '--fips', '--dir', dir]);
      assertExplains(r, 'init');
      assert.deepEqual(await readdir(dir), []);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('meshid install --fips and meshid token --fips exit non-zero and print nothing', async () => {
    const install = await runMeshid(['install', '--fips']);
    assertExplains(install, 'install');
    assert.equal(install.stdout, '');
    const token = await runMeshid([
      'token',
      '--fips',
      '--dir',
      state.dir,
      '--ns',
      'a',
      '--sa',
      'b',
    ]);
    assertExplains(token, 'token');
    assert.equal(token.stdout, '');
  });

  it('without FIPS mode the CA starts as before, logs its crypto status and reports fips_enabled 0', async () => {
    const ca = await startCaProcess([...state.caArgs, '--workers', '1']);
    try {
      const status = ca.lines
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .find((r) => r['fipsRequested'] === false);
      assert.equal(status?.['fips'], false);
      assert.equal(status?.['openssl'], process.versions.openssl);
      assert.match(String(status?.['msg']), /^crypto: FIPS mode is off/);
      assert.equal(metricValue((await adminGet(ca.admin, '/metrics')).body, 'fips_enabled'), 0);
    } finally {
      await ca.stop();
    }
  });
});
