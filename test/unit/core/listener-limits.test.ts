import { strict as assert } from 'node:assert';
import { PeerBudget } from '../../../core/listener-limits.js';

describe('PeerBudget', () => {
  it('gives one peer at most its share, and leaves the rest of the total to others', () => {
    const b = new PeerBudget({ total: 5, perPeer: 3 });
    assert.deepEqual(
      [1, 2, 3, 4].map(() => b.acquire('attacker')),
      [true, true, true, false],
    );
    assert.equal(b.acquire('honest'), true);
    assert.equal(b.acquire('honest'), true);
    assert.equal(b.acquire('third'), false, 'the total is reached');
    assert.equal(b.inUse, 5);
    assert.equal(b.refused, 2);
  });

  it('frees a unit on release, and ignores a release of nothing held', () => {
    const b = new PeerBudget({ total: 2, perPeer: 1 });
    assert.equal(b.acquire('a'), true);
    assert.equal(b.acquire('a'), false);
    b.release('a');
    b.release('a');
    b.release('never');
    assert.equal(b.inUse, 0);
    assert.equal(b.heldBy('a'), 0);
    assert.equal(b.acquire('a'), true);
  });
});
