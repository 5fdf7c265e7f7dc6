/**
 * The pod certificate signer sharing requests with other replicas (identity-ca/podcert/signer.ts
 * with a WorkShare), over a fake API and hand-fired timers: it answers only the requests it owns,
 * nothing before the replicas are known, another replica's request only once that replica
 * answered nothing for the takeover time, and at once when ownership moves to it. The requests
 * ask for a lifetime under an hour, so every answer is a Denied (no issuer needed): what is
 * tested is who answers, and when.
 */
import { strict as assert } from 'node:assert';
import type { KubeResource, WatchListEvent } from '../../../core/index.js';
import { systemRandom } from '../../../core/index.js';
import { silentLogger } from '../../../core/logger.js';
import type { PodCertOutcome, WorkShare } from '../../../identity-ca/podcert/signer.js';
import { PodCertificateSigner } from '../../../identity-ca/podcert/signer.js';
import { ManualTimers } from '../../support/manual-timers.js';

const SIGNER = 'meshid.io/workload-identity';
const TAKEOVER = 30_000;

function pcr(i: number, answered = false): KubeResource {
  return {
    apiVersion: 'certificates.k8s.io/v1beta1',
    kind: 'PodCertificateRequest',
    metadata: {
      name: `web-${i}`,
      namespace: 'emojivoto',
      uid: `uid-${i}`,
      resourceVersion: `${10 + i}`,
    },
    spec: {
      signerName: SIGNER,
      podName: `web-${i}`,
      podUID: `pod-${i}`,
      serviceAccountName: 'web',
      nodeName: 'node-a',
      maxExpirationSeconds: 1800,
    },
    ...(answered
      ? { status: { conditions: [{ type: 'Denied', status: 'True', reason: 'X', message: '' }] } }
      : {}),
  };
}

/** A share where uid-<even> belongs to A and uid-<odd> to B, until `all` moves them. */
class FakeShare implements WorkShare {
  readonly self = 'A';
  synced = true;
  all: string | undefined;
  readonly #listeners = new Set<() => void>();
  ownerOf(uid: string): string {
    return this.all ?? (Number(uid.split('-')[1]) % 2 === 0 ? 'A' : 'B');
  }
  onChange(l: () => void): () => void {
    this.#listeners.add(l);
    return () => this.#listeners.delete(l);
  }
  changed(): void {
    for (const l of this.#listeners) l();
  }
}

const flush = async (): Promise<void> => {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
};

function setUp(share?: FakeShare) {
  const timers = new ManualTimers();
  let onEvent: ((e: WatchListEvent<KubeResource>) => void) | undefined;
  const written: string[] = [];
  const outcomes: PodCertOutcome[] = [];
  const signer = new PodCertificateSigner({
    api: {
      watchList: (o) => {
        onEvent = o.onEvent;
        return new Promise<void>((r) => o.signal.addEventListener('abort', () => r()));
      },
      get: () => Promise.reject(new Error('not called: the lifetime is refused first')),
      replaceStatus: (o) => {
        written.push(o.metadata.name);
        return Promise.resolve();
      },
    },
    signerName: SIGNER,
    apiVersion: 'certificates.k8s.io/v1beta1',
    // Never reached (every request is refused before signing); only "an issuer is loaded".
    currentIssuer: () => ({}) as never,
    signers: {} as never,
    naming: { trustDomain: 'cluster.local', controlPlaneNamespace: 'linkerd' },
    certLifetimeMs: 86_400_000,
    clockSkewMs: 20_000,
    clock: timers.clock,
    random: systemRandom,
    logger: silentLogger(),
    onOutcome: (o) => outcomes.push(o),
    timers,
    takeoverAfterMs: TAKEOVER,
    ...(share === undefined ? {} : { share }),
  });
  signer.start();
  return {
    timers,
    signer,
    written,
    outcomes,
    emit: (e: WatchListEvent<KubeResource>) => onEvent!(e),
  };
}

const names = (xs: string[]): string[] => [...xs].sort();

describe('pod certificate signer: sharing requests among replicas', () => {
  it('answers every request without a share (one replica)', async () => {
    const t = setUp();
    t.emit({ type: 'SYNC', items: [0, 1, 2, 3].map((i) => pcr(i)) });
    await flush();
    assert.deepEqual(names(t.written), ['web-0', 'web-1', 'web-2', 'web-3']);
    await t.signer.close();
  });

  it('answers only the requests it owns', async () => {
    const t = setUp(new FakeShare());
    t.emit({ type: 'SYNC', items: [0, 1, 2, 3, 4, 5].map((i) => pcr(i)) });
    t.emit({ type: 'ADDED', object: pcr(6) });
    t.emit({ type: 'ADDED', object: pcr(7) });
    await flush();
    assert.deepEqual(names(t.written), ['web-0', 'web-2', 'web-4', 'web-6']);
    assert.equal(t.signer.pending, 4, "the other replica's four wait here");
    assert.ok(!t.outcomes.includes('takeover'));
    await t.signer.close();
  });

  it('answers nothing until the replicas are known', async () => {
    const share = new FakeShare();
    share.synced = false;
    const t = setUp(share);
    t.emit({ type: 'SYNC', items: [0, 1, 2].map((i) => pcr(i)) });
    await flush();
    assert.deepEqual(t.written, []);
    share.synced = true;
    share.changed();
    await flush();
    assert.deepEqual(names(t.written), ['web-0', 'web-2']);
    await t.signer.close();
  });

  it("takes over another replica's requests once it answered nothing for the takeover time", async () => {
    const t = setUp(new FakeShare());
    t.emit({ type: 'SYNC', items: [0, 1, 2, 3].map((i) => pcr(i)) });
    await flush();
    t.written.length = 0;
    t.timers.advance(TAKEOVER - 1);
    await flush();
    assert.deepEqual(t.written, [], 'not before the takeover time');
    t.timers.advance(1);
    await flush();
    assert.deepEqual(names(t.written), ['web-1', 'web-3']);
    assert.equal(t.outcomes.filter((o) => o === 'takeover').length, 2);
    await t.signer.close();
  });

  it('waits on while the owner keeps answering (a busy replica is not a dead one)', async () => {
    const t = setUp(new FakeShare());
    t.emit({ type: 'SYNC', items: [1, 3, 5].map((i) => pcr(i)) });
    await flush();
    t.timers.advance(TAKEOVER - 10_000);
    // B answers one of its own: it is alive and working through its share.
    t.emit({ type: 'MODIFIED', object: pcr(1, true) });
    t.timers.advance(10_000);
    await flush();
    assert.deepEqual(t.written, [], 'B answered 10 s ago: its requests are not taken over');
    t.timers.advance(TAKEOVER - 10_000 - 1);
    await flush();
    assert.deepEqual(t.written, []);
    t.timers.advance(1);
    await flush();
    assert.deepEqual(names(t.written), ['web-3', 'web-5'], 'B silent for the takeover time');
    await t.signer.close();
  });

  it('answers at once the requests that become its own (a replica left)', async () => {
    const share = new FakeShare();
    const t = setUp(share);
    t.emit({ type: 'SYNC', items: [0, 1, 2, 3].map((i) => pcr(i)) });
    await flush();
    assert.deepEqual(names(t.written), ['web-0', 'web-2']);
    share.all = 'A';
    share.changed();
    await flush();
    assert.deepEqual(names(t.written), ['web-0', 'web-1', 'web-2', 'web-3']);
    assert.ok(!t.outcomes.includes('takeover'), 'its own now, not a takeover');
    await t.signer.close();
  });

  it('forgets a request another replica answered, and one deleted', async () => {
    const t = setUp(new FakeShare());
    t.emit({ type: 'SYNC', items: [1, 3].map((i) => pcr(i)) });
    t.emit({ type: 'MODIFIED', object: pcr(1, true) });
    t.emit({ type: 'DELETED', object: pcr(3) });
    assert.equal(t.signer.pending, 0);
    await t.signer.idle();
    t.timers.advance(TAKEOVER * 2);
    await flush();
    assert.deepEqual(t.written, []);
    await t.signer.close();
  });
});
