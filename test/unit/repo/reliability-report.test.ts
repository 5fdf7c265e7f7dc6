/**
 * The figures `npm run test:reliability` prints: records read back as written, a table row per
 * suite plus a total, and a run failed by any wrong issuance or failure where none may happen.
 */
import { strict as assert } from 'node:assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  readReliability,
  recordReliability,
  reliabilityProblems,
  reliabilityTable,
} from '../../support/reliability-report.js';

describe('test/support/reliability-report', () => {
  let dir: string;
  let saved: string | undefined;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'meshid-report-test-'));
    saved = process.env['MESHID_RELIABILITY_REPORT'];
  });
  afterEach(() => {
    if (saved === undefined) delete process.env['MESHID_RELIABILITY_REPORT'];
    else process.env['MESHID_RELIABILITY_REPORT'] = saved;
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads back what suites recorded, in order, and writes nothing without the variable', () => {
    const file = join(dir, 'r.jsonl');
    delete process.env['MESHID_RELIABILITY_REPORT'];
    recordReliability({ suite: 'ignored', requests: 1 });
    assert.deepEqual(readReliability(file), []);
    process.env['MESHID_RELIABILITY_REPORT'] = file;
    recordReliability({ suite: 'fuzz', cases: 10, requests: 11, wronglyIssued: 0 });
    recordReliability({ suite: 'faults', faults: 3, requests: 50, failedWhereNoneMay: 0 });
    assert.deepEqual(
      readReliability(file).map((r) => r.suite),
      ['fuzz', 'faults'],
    );
  });

  it('refuses a line that is not a record rather than dropping a suite', () => {
    const file = join(dir, 'r.jsonl');
    writeFileSync(file, '{"suite":"a","requests":1}\n{"suite":"b","requests":1,"faults":-1}\n');
    assert.throws(() => readReliability(file), /line 2 is not a record \(faults\)/);
    writeFileSync(file, '{"suite":"a","requests":1}\n{"suite":"b",\n');
    assert.throws(() => readReliability(file), /line 2 is not JSON/);
  });

  it('prints a row per suite and a total row; unmeasured figures are a dash and count 0', () => {
    const table = reliabilityTable([
      { suite: 'fuzz', cases: 120_000, requests: 120_001, wronglyIssued: 0 },
      { suite: 'soak | x', requests: 500, failedWhereNoneMay: 0, notes: 'RSS +0.1 MB/min' },
    ]);
    const lines = table.trim().split('\n');
    assert.equal(lines.length, 5, table);
    assert.match(lines[0]!, /^\| suite \| cases tried \| faults injected \| requests sent \|/);
    assert.equal(lines[2], '| fuzz | 120,000 | — | 120,001 | 0 | — |  |');
    assert.equal(lines[3], '| soak \\| x | — | — | 500 | — | 0 | RSS +0.1 MB/min |');
    assert.equal(lines[4], '| **total** | 120,000 | 0 | 120,501 | 0 | 0 | 2 suites |');
  });

  it('fails a run with no records, a wrong issuance, or a failure where none may happen', () => {
    assert.deepEqual(reliabilityProblems([{ suite: 'a', requests: 1, wronglyIssued: 0 }]), []);
    assert.deepEqual(reliabilityProblems([]), ['no suite recorded any figures']);
    assert.deepEqual(
      reliabilityProblems([
        { suite: 'a', requests: 1, wronglyIssued: 2 },
        { suite: 'b', requests: 1, failedWhereNoneMay: 1 },
      ]),
      ['a: 2 certificate(s) wrongly issued', 'b: 1 request(s) failed where none may'],
    );
  });
});
