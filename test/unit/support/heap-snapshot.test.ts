import { strict as assert } from 'node:assert';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import {
  diffHeaps,
  summarizeHeap,
  summarizeHeapFile,
  totalBytes,
} from '../../support/heap-snapshot.js';

const execFileP = promisify(execFile);

describe('heap snapshot summaries and diffs', function () {
  this.timeout(120_000);
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshid-heap-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('finds the objects a process kept between two real snapshots, by constructor', async () => {
    // A small child process, as the soak snapshots other processes: its heap is a few MB, so the
    // two snapshots take milliseconds rather than seconds of this test runner's heap.
    const early = join(dir, 'early.heapsnapshot');
    const late = join(dir, 'late.heapsnapshot');
    const script = `
      const { writeHeapSnapshot } = require('node:v8');
      class HeapDiffProbe { constructor(n) { this.n = n; } }
      writeHeapSnapshot(${JSON.stringify(early)});
      const kept = [];
      for (let i = 0; i < 5000; i++) kept.push(new HeapDiffProbe(i));
      writeHeapSnapshot(${JSON.stringify(late)});
      process.stdout.write(String(kept.length));
    `;
    const { stdout } = await execFileP(process.execPath, ['-e', script]);
    assert.equal(stdout, '5000');
    const [before, after] = await Promise.all([summarizeHeapFile(early), summarizeHeapFile(late)]);
    const probe = diffHeaps(before, after).find((g) => g.key === 'object:HeapDiffProbe');
    assert.ok(probe, 'the probe class is in the diff');
    assert.equal(probe.count, 5000);
    assert.ok(probe.selfBytes >= 5000 * 16, `${probe.selfBytes} bytes for 5000 objects`);
    assert.ok(totalBytes(after) > totalBytes(before));
  });

  it('groups by type and name, strings by type alone, and refuses what is not a snapshot', () => {
    const json = {
      snapshot: {
        meta: { node_fields: ['type', 'name', 'self_size'], node_types: [['object', 'string']] },
      },
      nodes: [0, 0, 10, 0, 0, 20, 1, 1, 7, 1, 2, 9],
      strings: ['Map', 'abc', 'def'],
    };
    const g = summarizeHeap(json);
    assert.deepEqual(g.get('object:Map'), { key: 'object:Map', count: 2, selfBytes: 30 });
    assert.deepEqual(g.get('string:'), { key: 'string:', count: 2, selfBytes: 16 });
    assert.throws(
      () =>
        summarizeHeap({
          snapshot: { meta: { node_fields: ['id'], node_types: [[]] } },
          nodes: [],
          strings: [],
        }),
      /not a V8 heap snapshot/,
    );
  });
});
