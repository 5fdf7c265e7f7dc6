/**
 * Admission control of Certify on an injected clock: token buckets per source and per identity,
 * the bounded queue, first issuance before renewal, the retry hints, callers that leave.
 */
import { strict as assert } from 'node:assert';
import { RetryLaterError } from '../../../core/index.js';
import { ManualClock } from '../../../core/clock.js';
import { Admission } from '../../../identity-ca/server/admission.js';
import type { AdmissionRefusal, AdmissionSettings } from '../../../identity-ca/server/admission.js';

const OFF: AdmissionSettings = {
  maxInFlight: 0,
  maxQueue: 0,
  sourceBurst: 0,
  sourcePerSecond: 1,
  identityBurst: 0,
  identityPerSecond: 1,
};

function admission(
  overrides: Partial<AdmissionSettings>,
  clock = new ManualClock(1_000_000),
): { a: Admission; clock: ManualClock; refused: AdmissionRefusal[] } {
  const refused: AdmissionRefusal[] = [];
  return {
    a: new Admission({ ...OFF, ...overrides }, clock, (w) => refused.push(w)),
    clock,
    refused,
  };
}

const call = (identity = 'web', source = '10.0.0.1', renewal = false) => ({
  identity,
  source,
  renewal,
});

async function refusal(p: Promise<unknown>): Promise<RetryLaterError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof RetryLaterError, String(err));
    return err;
  }
  assert.fail('admitted, expected a refusal');
}

/** Settles pending promise callbacks (no timers involved). */
const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('Certify admission control', () => {
  it('admits everything at once with every limit off', async () => {
    const { a } = admission({});
    const releases = await Promise.all(Array.from({ length: 1000 }, () => a.admit(call())));
    assert.equal(a.load.inFlight, 1000);
    releases.forEach((r) => r());
    assert.equal(a.load.inFlight, 0);
  });

  it('refuses a source over its burst with RESOURCE_EXHAUSTED-class code and a hint of when a token is back', async () => {
    const { a, clock, refused } = admission({ sourceBurst: 3, sourcePerSecond: 2 });
    for (let i = 0; i < 3; i++) (await a.admit(call('web', '10.0.0.1')))();
    const err = await refusal(a.admit(call('web', '10.0.0.1')));
    assert.equal(err.code, 'ERR_CERTIFY_RATE_LIMITED');
    assert.equal(err.info.grpc, 'RESOURCE_EXHAUSTED');
    assert.equal(err.retryAfterMs, 500, 'one token at 2/s is 500 ms away');
    assert.match(err.message, /too many Certify calls from 10\.0\.0\.1; retry after 500 ms/);
    assert.deepEqual(refused, ['source-rate']);
    // Another source is not affected.
    (await a.admit(call('web', '10.0.0.2')))();
    // Not yet: 499 ms refill 0.998 tokens.
    clock.advance(499);
    assert.equal((await refusal(a.admit(call('web', '10.0.0.1')))).retryAfterMs, 2);
    clock.advance(1);
    // The refused call above took nothing, so at 500 ms the source has its token back.
    (await a.admit(call('web', '10.0.0.1')))();
  });

  it('refuses an identity over its burst whatever the source, and refills at its rate', async () => {
    const { a, clock, refused } = admission({ identityBurst: 2, identityPerSecond: 10 });
    (await a.admit(call('web', 'a')))();
    (await a.admit(call('web', 'b')))();
    const err = await refusal(a.admit(call('web', 'c')));
    assert.equal(err.code, 'ERR_CERTIFY_RATE_LIMITED');
    assert.match(err.message, /for this identity; retry after 100 ms/);
    (await a.admit(call('api', 'c')))();
    clock.advance(100);
    (await a.admit(call('web', 'c')))();
    assert.deepEqual(refused, ['identity-rate']);
  });

  it('refills no tokens when the clock jumps back, and at most the burst when it jumps forward', async () => {
    const { a, clock } = admission({ sourceBurst: 2, sourcePerSecond: 1 });
    (await a.admit(call()))();
    (await a.admit(call()))();
    clock.advance(-3_600_000);
    await refusal(a.admit(call()));
    clock.advance(7_200_000);
    (await a.admit(call()))();
    (await a.admit(call()))();
    await refusal(a.admit(call()));
  });

  it('queues beyond maxInFlight and runs the queue in order as slots free', async () => {
    const { a } = admission({ maxInFlight: 2, maxQueue: 10 });
    const r1 = await a.admit(call());
    const r2 = await a.admit(call());
    const order: number[] = [];
    const waiting = [3, 4, 5].map((n) => a.admit(call()).then((r) => (order.push(n), r)));
    await settle();
    assert.deepEqual(a.load, { inFlight: 2, queued: 3 });
    r1();
    await settle();
    assert.deepEqual(order, [3]);
    r2();
    r2(); // a second release of the same slot is ignored
    await settle();
    assert.deepEqual(order, [3, 4]);
    assert.deepEqual(a.load, { inFlight: 2, queued: 1 });
    for (const r of await Promise.all(waiting.slice(0, 2))) r();
    await settle();
    assert.deepEqual(order, [3, 4, 5]);
    (await waiting[2]!)();
    assert.deepEqual(a.load, { inFlight: 0, queued: 0 });
  });

  it('runs a waiting first issuance before renewals that waited longer', async () => {
    const { a } = admission({ maxInFlight: 1, maxQueue: 10 });
    const first = await a.admit(call());
    const order: string[] = [];
    const track = (name: string, renewal: boolean) =>
      a.admit(call(name, name, renewal)).then((r) => {
        order.push(name);
        r();
      });
    const all = [track('renew-1', true), track('renew-2', true), track('new-1', false)];
    await settle();
    first();
    await Promise.all(all);
    assert.deepEqual(order, ['new-1', 'renew-1', 'renew-2']);
  });

  it('refuses with a drain hint when the queue is full, and a first issuance displaces the newest renewal', async () => {
    const clock = new ManualClock(0);
    const { a, refused } = admission({ maxInFlight: 1, maxQueue: 2 }, clock);
    // Teach it that a call takes 100 ms.
    for (let i = 0; i < 40; i++) {
      const r = await a.admit(call());
      clock.advance(100);
      r();
    }
    const running = await a.admit(call());
    const renewA = a.admit(call('a', 'a', true));
    const renewB = a.admit(call('b', 'b', true));
    await settle();
    const full = await refusal(a.admit(call('c', 'c', true)));
    assert.equal(full.code, 'ERR_CERTIFY_OVERLOADED');
    assert.match(full.message, /the CA is overloaded; retry after \d+ ms/);
    // 1 running + 2 queued, one slot, ~100 ms each.
    assert.ok(full.retryAfterMs >= 280 && full.retryAfterMs <= 300, String(full.retryAfterMs));
    const fresh = a.admit(call('d', 'd', false));
    const displaced = await refusal(renewB);
    assert.equal(displaced.code, 'ERR_CERTIFY_OVERLOADED');
    assert.match(displaced.message, /first issuance before renewal/);
    assert.deepEqual(refused, ['queue-full', 'displaced']);
    running();
    (await fresh)();
    (await renewA)();
    assert.deepEqual(a.load, { inFlight: 0, queued: 0 });
  });

  it('drops a waiting call whose caller left, and never runs it', async () => {
    const { a } = admission({ maxInFlight: 1, maxQueue: 10 });
    const running = await a.admit(call());
    const gone = new AbortController();
    const leaving = a.admit({ ...call(), signal: gone.signal });
    const staying = a.admit(call());
    await settle();
    gone.abort();
    await assert.rejects(leaving, /left while waiting/);
    assert.deepEqual(a.load, { inFlight: 1, queued: 1 });
    running();
    (await staying)();
    assert.deepEqual(a.load, { inFlight: 0, queued: 0 });
    // A caller already gone when a slot would wait is refused at once, never queued.
    const blocker = await a.admit(call());
    const already = new AbortController();
    already.abort();
    await assert.rejects(a.admit({ ...call(), signal: already.signal }), /left while waiting/);
    assert.deepEqual(a.load, { inFlight: 1, queued: 0 });
    blocker();
  });

  it('drops a waiting call whose deadline passed when its turn comes, never runs it, and runs the next', async () => {
    const dropped: string[] = [];
    const clock = new ManualClock(0);
    const a = new Admission(
      { ...OFF, maxInFlight: 1, maxQueue: 10 },
      clock,
      undefined,
      (why, stage) => dropped.push(`${why}/${stage}`),
    );
    // The deadline of each call, on the injected clock (as the server's call state reads it).
    const until = (deadlineAt: number) => ({
      ...call(),
      abandoned: () => (clock.now() >= deadlineAt ? ('deadline' as const) : undefined),
    });
    const running = await a.admit(call());
    let ran = 0;
    const short = a.admit(until(100)).then((r) => (ran++, r));
    const long = a.admit(until(10_000));
    await settle();
    assert.deepEqual(a.load, { inFlight: 1, queued: 2 });
    clock.advance(500); // the short call's deadline passes while it waits; no timer tells it
    running();
    await assert.rejects(short, (err: unknown) => {
      assert.equal((err as { code?: string }).code, 'ERR_CERTIFY_DEADLINE_EXCEEDED');
      assert.match((err as Error).message, /deadline passed while waiting for admission/);
      return true;
    });
    assert.equal(ran, 0, 'the expired call never ran');
    (await long)();
    assert.deepEqual(dropped, ['deadline/queue']);
    assert.deepEqual(a.load, { inFlight: 0, queued: 0 });
    // Already past its deadline on arrival: dropped at once, before any bucket is touched.
    const b = new Admission(
      { ...OFF, sourceBurst: 1, sourcePerSecond: 1 },
      clock,
      undefined,
      (w, s) => dropped.push(`${w}/${s}`),
    );
    await assert.rejects(b.admit(until(0)), /deadline passed/);
    (await b.admit(call()))(); // the source's one token is still there
    assert.deepEqual(dropped, ['deadline/queue', 'deadline/queue']);
  });

  it('caps the queue-full hint at 30 s however slow calls are', async () => {
    const clock = new ManualClock(0);
    const { a } = admission({ maxInFlight: 1, maxQueue: 0 }, clock);
    for (let i = 0; i < 40; i++) {
      const r = await a.admit(call());
      clock.advance(100_000);
      r();
    }
    const running = await a.admit(call());
    assert.equal((await refusal(a.admit(call()))).retryAfterMs, 30_000);
    running();
  });
});
