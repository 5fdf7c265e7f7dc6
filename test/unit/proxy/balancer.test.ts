import { strict as assert } from 'node:assert';
import { PeakEwmaBalancer } from '../../../proxy/balancer.js';

/** A balancer over names with an injected clock and a scripted random sequence. */
function balancer(randoms: number[] = []) {
  let t = 0;
  const clock = { advance: (ms: number) => (t += ms) };
  let i = 0;
  const lb = new PeakEwmaBalancer((s: string) => s, {
    now: () => t,
    random: () => (randoms.length > 0 ? randoms[i++ % randoms.length]! : Math.random()),
  });
  return { lb, clock };
}

describe('PeakEwmaBalancer (power of two choices over peak-EWMA)', function () {
  it('picks nothing from an empty set and the only endpoint of a set of one', function () {
    const { lb } = balancer();
    assert.equal(lb.pick(), undefined);
    lb.update(['a']);
    assert.equal(lb.pick()?.endpoint, 'a');
  });

  it('of the two it draws, takes the one with fewer requests in flight', function () {
    // Draws a (index 0) then b (index 0 of the others, i.e. 1), every time.
    const { lb } = balancer([0, 0]);
    lb.update(['a', 'b']);
    const first = lb.pick()!;
    assert.equal(first.endpoint, 'a');
    assert.equal(lb.pick()!.endpoint, 'b');
  });

  it('avoids an endpoint that answered slowly (its estimate jumps to the peak at once)', function () {
    const { lb, clock } = balancer([0, 0]);
    lb.update(['slow', 'fast']);
    const s = lb.pick()!;
    assert.equal(s.endpoint, 'slow');
    clock.advance(500);
    s.done();
    for (let i = 0; i < 5; i++) {
      const p = lb.pick()!;
      assert.equal(p.endpoint, 'fast');
      clock.advance(10);
      p.done();
    }
    // Idle estimates decay toward zero at the same rate, so a quiet minute keeps their order.
    clock.advance(60_000);
    const again = lb.pick()!;
    assert.equal(again.endpoint, 'fast');
    again.done();
  });

  it('never picks an endpoint after an update removed it, and keeps the load of those that stay', function () {
    const { lb } = balancer();
    lb.update(['a', 'b', 'c']);
    const held = lb.pick()!;
    lb.update(['a', 'b']);
    for (let i = 0; i < 200; i++) {
      const p = lb.pick()!;
      assert.notEqual(p.endpoint, 'c');
      p.done();
    }
    held.done();
    assert.deepEqual(lb.endpoints(), ['a', 'b']);
  });

  it('reaches every endpoint of a set of three over many picks', function () {
    const { lb } = balancer();
    lb.update(['a', 'b', 'c']);
    const seen = new Set<string>();
    for (let i = 0; i < 100; i++) {
      const p = lb.pick()!;
      seen.add(p.endpoint);
      p.done();
    }
    assert.deepEqual([...seen].sort(), ['a', 'b', 'c']);
  });
});
