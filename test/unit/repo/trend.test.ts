/** The soak's measuring helpers: the least-squares slope, and RSS and children from /proc. */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { childPids, rssBytes } from '../../support/proc.js';
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
    } finally {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
    assert.equal(rssBytes(child.pid!), undefined);
  });
});
