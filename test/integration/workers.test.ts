/**
 * The CA's worker processes: a worker that dies is replaced without a restart of the CA, the CA
 * keeps answering meanwhile, and readiness reflects the missing worker.
 */
import { strict as assert } from 'node:assert';
import { generateKeyPairSync } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { CertifyClient, createCsr } from '../../core/index.js';
import { adminGet, startCaProcess, waitFor, workerLogPids } from '../support/ca-process.js';
import type { CaProcess } from '../support/ca-process.js';
import { CA_IDENTITY, idOf, makeTestState } from '../support/state.js';
import type { TestState } from '../support/state.js';

const WEB = idOf('emojivoto', 'web');

describe('meshid ca: worker processes (real process)', function () {
  this.timeout(60_000);
  let state: TestState;
  let ca: CaProcess;
  before(async () => {
    state = await makeTestState();
    ca = await startCaProcess([...state.caArgs, '--workers', '2']);
  });
  after(async () => {
    assert.equal(await ca?.stop(), 0);
    await state?.cleanup();
  });

  it('replaces a worker that dies, and keeps issuing meanwhile', async () => {
    const before = workerLogPids(ca);
    assert.equal(before.size, 2, [...before].join(','));
    assert.ok(!before.has(ca.proc.pid!), 'workers are separate processes');
    const victim = [...before][0]!;
    process.kill(victim, 'SIGKILL');

    const anchorsPem = await readFile(state.anchorsFile, 'utf8');
    const token = Buffer.from(await state.token('emojivoto', 'web'));
    // New connections keep being served while the worker is replaced. A connection the primary
    // handed to the worker in the instant it died is lost with it, so each call may be retried
    // once, as a proxy retries; none may fail twice.
    const certifyOnce = async (): Promise<number> => {
      const client = new CertifyClient({
        address: ca.address,
        serverName: CA_IDENTITY,
        anchorsPem,
      });
      try {
        const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
        const res = await client.certify(
          {
            identity: WEB,
            token,
            certificateSigningRequest: createCsr({ privateKey, dnsNames: [WEB] }),
          },
          3000,
        );
        return res.leafCertificate.length;
      } finally {
        client.close();
      }
    };
    for (let i = 0; i < 6; i++) {
      const length = await certifyOnce().catch(() => certifyOnce());
      assert.ok(length > 0);
    }
    // The primary's own "worker died" line carries the dead worker's id too: a replacement is a
    // pid that is neither the primary nor one of the workers from before.
    // A replacement loads the whole CA before it logs: on a loaded machine that can take a while.
    await waitFor(
      'a replacement worker',
      () => {
        const fresh = [...workerLogPids(ca)].filter((p) => p !== ca.proc.pid && !before.has(p));
        return fresh.length === 1 ? fresh : undefined;
      },
      45_000,
    );
    await waitFor('readiness with all workers', async () =>
      (await adminGet(ca.admin, '/ready')).status === 200 ? true : undefined,
    );
    assert.match(ca.lines.join('\n'), /Certify worker died; starting a new one/);
    assert.equal(ca.proc.exitCode, null);
  });
});
