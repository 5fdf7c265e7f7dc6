/**
 * The handshake gate on an injected clock, without sockets: how many handshakes run at once,
 * first come first served, connections that waited too long closed (by the sweep and when their
 * turn comes), a full waiting room, and the gate turned off.
 */
import { strict as assert } from 'node:assert';
import { ManualClock } from '../../../core/clock.js';
import { HandshakeGate } from '../../../identity-ca/server/handshake-gate.js';
import type { HandshakeGateSettings } from '../../../identity-ca/server/handshake-gate.js';

function gate(settings: Partial<HandshakeGateSettings> = {}) {
  const clock = new ManualClock(0);
  const started: { conn: string; waitedMs: number }[] = [];
  const refused: string[] = [];
  const g = new HandshakeGate<string>(
    { maxHandshakes: 2, maxWaitMs: 1000, maxWaiting: 3, ...settings },
    clock,
    {
      start: (conn, waitedMs) => started.push({ conn, waitedMs }),
      refuse: (conn, why) => refused.push(`${conn}:${why}`),
      source: (conn) => conn.split('/')[0]!,
    },
  );
  return { g, clock, started, refused, names: () => started.map((s) => s.conn) };
}

describe('identity-ca/server/handshake-gate', () => {
  it('runs at most maxHandshakes at once and gives each freed slot to the longest-waiting connection', () => {
    const { g, clock, started, names } = gate();
    for (const c of ['a', 'b', 'c', 'd']) g.offer(c);
    assert.deepEqual(names(), ['a', 'b']);
    assert.deepEqual(g.load, { handshaking: 2, waiting: 2 });
    clock.advance(300);
    g.done('b');
    assert.deepEqual(names(), ['a', 'b', 'c']);
    assert.equal(started[2]!.waitedMs, 300, 'how long it waited, for the histogram');
    g.done('b'); // twice: nothing more
    assert.deepEqual(g.load, { handshaking: 2, waiting: 1 });
    g.done('a');
    g.done('c');
    g.done('d');
    assert.deepEqual(names(), ['a', 'b', 'c', 'd']);
    assert.deepEqual(g.load, { handshaking: 0, waiting: 0 });
  });

  it('a newcomer waits while every slot is taken, and starts when one frees', () => {
    const { g, names } = gate({ maxHandshakes: 1 });
    g.offer('a');
    g.offer('b');
    g.done('a'); // b starts
    g.offer('c');
    assert.deepEqual(names(), ['a', 'b']);
    g.done('b');
    assert.deepEqual(names(), ['a', 'b', 'c']);
  });

  it('closes a connection that waited longer than maxWaitMs, by the sweep or when its turn comes, instead of handshaking it late', () => {
    const { g, clock, refused, names } = gate({ maxHandshakes: 1, maxWaitMs: 1000 });
    g.offer('a');
    g.offer('b');
    clock.advance(600);
    g.offer('c');
    clock.advance(500); // b has waited 1100 ms, c 500 ms
    g.sweep();
    assert.deepEqual(refused, ['b:wait-timeout']);
    assert.deepEqual(g.load, { handshaking: 1, waiting: 1 });
    clock.advance(600); // c: 1100 ms, no sweep ran; its turn comes now
    g.offer('d');
    assert.deepEqual(refused, ['b:wait-timeout', 'c:wait-timeout'], 'offer sweeps first');
    g.done('a');
    assert.deepEqual(names(), ['a', 'd']);
    // Without a sweep between: the turn itself checks the wait.
    g.offer('e');
    clock.advance(1001);
    g.done('d');
    assert.deepEqual(refused, ['b:wait-timeout', 'c:wait-timeout', 'e:wait-timeout']);
    assert.deepEqual(g.load, { handshaking: 0, waiting: 0 });
  });

  it('lets a source hold at most maxPerSource slots: its next connection waits while other sources go ahead, in order', () => {
    const { g, names } = gate({ maxHandshakes: 3, maxPerSource: 2, maxWaiting: 10 });
    for (const c of ['x/1', 'x/2', 'x/3', 'x/4', 'y/1', 'y/2']) g.offer(c);
    assert.deepEqual(names(), ['x/1', 'x/2', 'y/1'], 'x at its share; y passes the waiting x/3');
    assert.deepEqual(g.load, { handshaking: 3, waiting: 3 });
    g.done('y/1'); // a y slot frees: y/2 (x is still at its share)
    assert.deepEqual(names(), ['x/1', 'x/2', 'y/1', 'y/2']);
    g.done('x/1'); // an x slot frees: the longest-waiting x
    assert.deepEqual(names(), ['x/1', 'x/2', 'y/1', 'y/2', 'x/3']);
    for (const c of ['x/2', 'y/2', 'x/3']) g.done(c);
    assert.deepEqual(names(), ['x/1', 'x/2', 'y/1', 'y/2', 'x/3', 'x/4']);
    g.done('x/4');
    assert.deepEqual(g.load, { handshaking: 0, waiting: 0 });
  });

  it('without maxPerSource, one source may take every slot', () => {
    const { g, names } = gate({ maxHandshakes: 2 });
    for (const c of ['x/1', 'x/2', 'y/1']) g.offer(c);
    assert.deepEqual(names(), ['x/1', 'x/2']);
  });

  it('closes a newcomer at once when maxWaiting connections already wait', () => {
    const { g, refused, names } = gate({ maxHandshakes: 1, maxWaiting: 2 });
    for (const c of ['a', 'b', 'c', 'd', 'e']) g.offer(c);
    assert.deepEqual(names(), ['a']);
    assert.deepEqual(refused, ['d:queue-full', 'e:queue-full']);
    assert.deepEqual(g.load, { handshaking: 1, waiting: 2 });
  });

  it('starts every connection at once with maxHandshakes 0 (off)', () => {
    const { g, names, refused } = gate({ maxHandshakes: 0, maxWaiting: 0 });
    for (let i = 0; i < 100; i++) g.offer(`c${i}`);
    assert.equal(names().length, 100);
    assert.deepEqual(refused, []);
    assert.deepEqual(g.load, { handshaking: 0, waiting: 0 });
  });

  it('keeps first-come-first-served order through thousands of connections (the queue is compacted, not shifted)', () => {
    const { g, names } = gate({ maxHandshakes: 3, maxWaiting: 10_000, maxWaitMs: 60_000 });
    for (let i = 0; i < 5000; i++) g.offer(i.toString());
    for (let i = 0; i < 5000; i++) g.done(i.toString());
    assert.deepEqual(
      names(),
      Array.from({ length: 5000 }, (_, i) => i.toString()),
    );
    assert.deepEqual(g.load, { handshaking: 0, waiting: 0 });
  });
});
