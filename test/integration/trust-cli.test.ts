import { strict as assert } from 'node:assert';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createIntermediateCa, createRootCa } from '../../core/pki.js';
import { runMeshid } from '../support/ca-process.js';

const DAY = 86_400_000;

describe('meshid trust (the CLI as a process)', function () {
  this.timeout(60_000);
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshid-trust-cli-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('validate: exit 0 and a summary for a good bundle', async () => {
    const now = Date.now();
    const root = await createRootCa({
      commonName: 'root.linkerd.cluster.local',
      notBefore: now - DAY,
      notAfter: now + 365 * DAY,
    });
    await writeFile(join(dir, 'good.pem'), root.certificatePem);
    const r = await runMeshid(['trust', 'validate', join(dir, 'good.pem')]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /valid trust bundle, 1 anchor/);
  });

  it('validate: exit 1 naming each bad certificate, with the error code', async () => {
    const now = Date.now();
    const good = await createRootCa({
      commonName: 'good',
      notBefore: now - DAY,
      notAfter: now + DAY * 365,
    });
    const leaf = await createRootCa({
      commonName: 'leaf',
      isCa: false,
      notBefore: now - DAY,
      notAfter: now + DAY,
    });
    // An expired root beside a valid one is kept (docs/rotation.md); a non-root is refused.
    const old = await createIntermediateCa({
      issuer: good,
      commonName: 'old',
      notBefore: now - 3 * DAY,
      notAfter: now + DAY,
    });
    const file = join(dir, 'bad.pem');
    await writeFile(file, leaf.certificatePem + good.certificatePem + old.certificatePem);
    const r = await runMeshid(['trust', 'validate', file]);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /trust anchor bundle refused \(2 bad certificates\)/);
    assert.match(r.stderr, /trust anchor #1 "CN=leaf" is not a CA/);
    assert.match(r.stderr, /trust anchor #3 "CN=old" is not self-signed/);
    assert.match(r.stderr, /\[ERR_ANCHORS_INVALID\]/);
  });

  it('refuses a missing FILE, an unknown subcommand, and rotate without --dir or --kubeconfig', async () => {
    const noFile = await runMeshid(['trust', 'validate']);
    assert.equal(noFile.code, 2);
    assert.match(noFile.stderr, /exactly one FILE is required/);
    const unknown = await runMeshid(['trust', 'spin']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown subcommand "spin"/);
    const nowhere = await runMeshid(['trust', 'status']);
    assert.equal(nowhere.code, 2);
    assert.match(nowhere.stderr, /give exactly one of --dir D \(local files\) or --kubeconfig F/);
    const noState = await runMeshid(['trust', 'rotate', '--dir', join(dir, 'nothing-here')]);
    assert.equal(noState.code, 1);
    assert.match(noState.stderr, /cannot read.*run meshid init first.*\[ERR_LOCAL_STATE\]/);
  });
});
