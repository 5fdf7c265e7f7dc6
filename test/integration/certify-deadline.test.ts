/**
 * No work for a caller that has gone, end to end: a real `meshid ca` (TokenReview against the
 * Kubernetes API test server, a test double reached through @kubernetes/client-node) with one
 * call decided at a time. The first call's TokenReview is stalled at the API server, so it holds
 * the slot; a second call with a short deadline waits in the admission queue behind it. Its
 * deadline passes there: it is answered DEADLINE_EXCEEDED, its token is never reviewed, nothing
 * is signed for it, and the issued counter and the Events count only the first. And a call whose
 * deadline passes while its own review is stalled is dropped before signing (before, the CA
 * signed it, recorded an Event, and nobody received the certificate).
 */
import { strict as assert } from 'node:assert';
import { adminGet, metricValue, waitFor } from '../support/ca-process.js';
import type { CaProcess } from '../support/ca-process.js';
import { certifyOnce } from '../support/fault-load.js';
import { KubeBench } from '../support/fault-cases/kube.js';
import { idOf } from '../support/state.js';
import type { KubeObject } from '../support/kube-api-server/index.js';

const DEADLINE_EXCEEDED = 4;

describe('Certify: a call whose deadline passed in the admission queue is not signed (real meshid ca, real gRPC)', function () {
  this.timeout(90_000);
  const bench = new KubeBench();
  let ca: CaProcess;
  before(async () => {
    await bench.start();
    ca = await bench.startCa('tokenreview', ['--certify-max-in-flight', '1']);
  });
  after(() => bench.stop());

  const metric = async (name: string, labels: Record<string, string> = {}): Promise<number> => {
    const v = metricValue((await adminGet(ca.admin, '/metrics')).body, name, labels);
    return Number.isNaN(v) ? 0 : v;
  };
  const issuedEvents = (): number =>
    bench.api
      .list<KubeObject & { reason?: string; count?: number }>('v1', 'Event')
      .filter((e) => e.reason === 'IssuedLeafCertificate')
      .reduce((n, e) => n + (e.count ?? 1), 0);

  it('answers DEADLINE_EXCEEDED, never reviews its token, signs nothing for it, and records no Event for it', async () => {
    const [first, second] = [await bench.podToken(), await bench.podToken()];
    const issuedBefore = await metric('meshid_certify_requests_total', { outcome: 'issued' });
    let reviews = 0;
    const unsubscribe = bench.api.onRequest((e) => {
      if (e.resource === 'tokenreviews') reviews++;
    });
    try {
      // The first call's review is stalled 2.5 s at the API server: it holds the one slot.
      bench.api.failNext({ path: /tokenreviews/, delayMs: 2500 });
      const holding = bench.certifyOnce(ca, first);
      await waitFor('the first call to hold the slot', async () =>
        (await metric('meshid_certify_in_flight')) === 1 ? true : undefined,
      );
      // The second waits behind it in the queue, with 500 ms to live (grpc-timeout 500m).
      const late = await certifyOnce({
        ca: ca.address,
        anchorsPem: bench.root.certificatePem,
        identity: idOf('emojivoto', 'web'),
        token: second,
        deadlineMs: 500,
      });
      assert.equal(late.code, DEADLINE_EXCEEDED, late.details);
      const held = await holding;
      assert.equal(held.code, 0, held.details);
      assert.ok(held.ms >= 2000, `the first call waited for its stalled review (${held.ms} ms)`);
      await waitFor('the drop to be counted', async () =>
        (await metric('meshid_certify_dropped_total', { stage: 'queue' })) === 1 ? true : undefined,
      );
      assert.equal(
        (await metric('meshid_certify_requests_total', { outcome: 'issued' })) - issuedBefore,
        1,
        'one certificate issued: the first call only',
      );
      assert.equal(reviews, 1, "the second call's token was never reviewed");
      await waitFor('the first Event', () => (issuedEvents() >= 1 ? true : undefined));
      // Events are written asynchronously: a second one would have been written by now (the
      // drop is counted after the first call's Event was queued).
      const another = await bench.certifyOnce(ca, await bench.podToken());
      assert.equal(another.code, 0, another.details);
      await waitFor('the Event of the third call', () => (issuedEvents() >= 2 ? true : undefined));
      assert.equal(issuedEvents(), 2, 'Events for the first and third calls only');
    } finally {
      unsubscribe();
    }
  });

  it('signs nothing for a call whose deadline passed while its token was reviewed (the review answered late)', async () => {
    const token = await bench.podToken();
    const issuedBefore = await metric('meshid_certify_requests_total', { outcome: 'issued' });
    const eventsBefore = issuedEvents();
    // The review takes 2.5 s; the caller gives the call 1 s.
    bench.api.failNext({ path: /tokenreviews/, delayMs: 2500 });
    const late = await certifyOnce({
      ca: ca.address,
      anchorsPem: bench.root.certificatePem,
      identity: idOf('emojivoto', 'web'),
      token,
      deadlineMs: 1000,
    });
    assert.equal(late.code, DEADLINE_EXCEEDED, late.details);
    // The review ends at 2.5 s; the call is dropped then, before signing.
    await waitFor('the drop before signing to be counted', async () =>
      (await metric('meshid_certify_dropped_total', { reason: 'deadline', stage: 'sign' })) === 1
        ? true
        : undefined,
    );
    assert.equal(
      (await metric('meshid_certify_requests_total', { outcome: 'issued' })) - issuedBefore,
      0,
      'nothing issued',
    );
    // An Event would be queued at signing, before the drop was counted; a later issuance's
    // Event proves the writer has caught up.
    const after = await bench.certifyOnce(ca, await bench.podToken());
    assert.equal(after.code, 0, after.details);
    await waitFor('the next Event', () => (issuedEvents() > eventsBefore ? true : undefined));
    assert.equal(issuedEvents(), eventsBefore + 1, 'an Event for the later call only');
  });
});
