/**
 * Rendezvous hashing of PodCertificateRequest UIDs over signer replicas
 * (identity-ca/podcert/ownership.ts): the same owner from the same set whatever its order, an
 * even share for each replica, and only the requests a joining replica wins (or a leaving one
 * held) move.
 */
import { strict as assert } from 'node:assert';
import { randomUUID } from 'node:crypto';
import { ownerOf, rendezvousScore } from '../../../identity-ca/podcert/ownership.js';

const UIDS = Array.from({ length: 10_000 }, () => randomUUID());
const replicas = (n: number): string[] =>
  Array.from({ length: n }, (_, i) => `meshid-podcert-linkerd-identity-${i}-a1b2c3`);

function shares(uids: readonly string[], set: readonly string[]): Map<string, number> {
  const count = new Map(set.map((r) => [r, 0]));
  for (const u of uids) {
    const o = ownerOf(u, set)!;
    count.set(o, count.get(o)! + 1);
  }
  return count;
}

describe('pod certificate ownership (rendezvous hashing)', () => {
  it('gives the same owner for the same replicas, in any order, every time', () => {
    const set = replicas(3);
    const reversed = [...set].reverse();
    for (const u of UIDS.slice(0, 1000)) {
      const owner = ownerOf(u, set);
      assert.ok(owner !== undefined && set.includes(owner));
      assert.equal(ownerOf(u, reversed), owner);
      assert.equal(ownerOf(u, new Set(set)), owner);
    }
    // A known answer: the score is SHA-256 of "replica\0uid", its first 8 bytes big-endian.
    assert.equal(rendezvousScore('a', 'b'), 0x59b2_71ae_1bbc_b1d3n);
  });

  it('has no owner without replicas, and the only one otherwise', () => {
    assert.equal(ownerOf(UIDS[0]!, []), undefined);
    assert.equal(ownerOf(UIDS[0]!, ['solo']), 'solo');
  });

  for (const n of [2, 3, 5]) {
    it(`shares 10,000 UIDs evenly among ${n} replicas (each within 3 points of 1/${n})`, () => {
      const count = shares(UIDS, replicas(n));
      for (const [r, c] of count)
        assert.ok(
          Math.abs(c / UIDS.length - 1 / n) < 0.03,
          `${r} owns ${c} of ${UIDS.length} (expected about ${Math.round(UIDS.length / n)})`,
        );
    });
  }

  it('moves only what a joining replica wins, about 1/n of the requests, all to it', () => {
    const before = replicas(3);
    const after = [...before, 'meshid-podcert-linkerd-identity-new-d4e5f6'];
    let moved = 0;
    for (const u of UIDS) {
      const a = ownerOf(u, before);
      const b = ownerOf(u, after);
      if (a === b) continue;
      moved++;
      assert.equal(b, after[3], 'a request moves only to the replica that joined');
    }
    assert.ok(Math.abs(moved / UIDS.length - 1 / 4) < 0.03, `${moved} moved of ${UIDS.length}`);
  });

  it("moves only a leaving replica's requests, spread over those that stay", () => {
    const before = replicas(4);
    const gone = before[1]!;
    const after = before.filter((r) => r !== gone);
    const took = new Map(after.map((r) => [r, 0]));
    for (const u of UIDS) {
      const a = ownerOf(u, before)!;
      const b = ownerOf(u, after)!;
      if (a !== gone) assert.equal(b, a, 'a request of a replica that stays does not move');
      else took.set(b, took.get(b)! + 1);
    }
    const moved = [...took.values()].reduce((x, y) => x + y, 0);
    assert.ok(Math.abs(moved / UIDS.length - 1 / 4) < 0.03, `${moved} moved`);
    for (const [r, c] of took)
      assert.ok(Math.abs(c / moved - 1 / 3) < 0.06, `${r} took ${c} of the ${moved} moved`);
  });
});
