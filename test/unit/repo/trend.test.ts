/** The soak's measuring helpers: the least-squares slope, and RSS and children from /proc. */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { childPids, rssBytes, rssSplitMb } from '../../support/proc.js';
import { leastSquaresSlope } from '../../support/trend.js';

describe('test/support/trend', () => {
  it('fits the slope of a line exactly and of noise around a line closely', () => {
    assert.equal(leastSquaresSlope([0, 1, 2, 3].map((t) => ({ t, v: 5 + 2 * t }))), 2);
    const noisy = Array.from({ length: 100 }, (_, i) => ({
      t: i / 10,
      v: 50 - 0.5 * (i / 10) + (i % 2 ? 1 : -1),
    }));
    assert.ok(Math.abs(leastSquaresSlope(noisy) + 0.5) < 0.05, String(leastSquaresSlope(noisy)));
    assert.ok(Number.isNaN(leastSquaresSlope([{ t: 1, v: 1 }])));
    assert.ok(
      Number.isNaN(
        leastSquaresSlope([
          { t: 1, v: 1 },
          { t: 1, v: 2 },
        ]),
      ),
    );
  });

  it('reads the RSS of a live process, finds it as a child, and nothing once it exits', async () => {
    const child = spawn(
      process.execPath,
      ['-e', 'process.stdout.write("up\\n"); setInterval(() => {}, 1000)'],
      { stdio: ['ignore', 'pipe', 'ignore'] },
    );
    // Measured once node runs the script, not while the fork is still becoming node.
    await once(child.stdout!, 'data');
    try {
      const rss = rssBytes(child.pid!);
      assert.ok(
        rss !== undefined && rss > 10 * 1024 * 1024,
        `a running node process has tens of MB (${rss})`,
      );
      assert.ok(childPids(process.pid).includes(child.pid!));
      // Private pages (the heap) and the node binary's pages, each several MB, adding up to
      // about the RSS read a moment before (RssShmem, the rest, is next to nothing here).
      const split = rssSplitMb(child.pid!);
      assert.ok(split.anon > 5 && split.file > 5, JSON.stringify(split));
      const mb = rss / (1024 * 1024);
      assert.ok(
        Math.abs(split.anon + split.file - mb) < 0.25 * mb,
        `${JSON.stringify(split)} vs ${mb}`,
      );
      const self = rssSplitMb('self');
      assert.ok(self.anon > 5 && self.file > 5, JSON.stringify(self));
    } finally {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
    assert.equal(rssBytes(child.pid!), undefined);
    assert.deepEqual(rssSplitMb(child.pid!), { anon: 0, file: 0 });
  });
});
