/**
 * The signer replica set (identity-ca/podcert/replicas.ts) over a fake API and hand-fired
 * timers: its own Lease created and renewed every third of the duration, the others' followed
 * through the label-selected watch, a replica dropped when its Lease goes unrenewed for the
 * duration (counted on this replica's clock), a Lease left long ago deleted on its version, and
 * this replica's Lease deleted when it stops.
 */
import { strict as assert } from 'node:assert';
import type { KubeResource, WatchListEvent } from '../../../core/index.js';
import { KubeApiError, systemRandom } from '../../../core/index.js';
import { silentLogger } from '../../../core/logger.js';
import {
  replicaIdentity,
  SIGNER_LEASE_LABEL,
  SignerReplicas,
  signerLabelValue,
} from '../../../identity-ca/podcert/replicas.js';
import { ManualTimers } from '../../support/manual-timers.js';

const SIGNER = 'meshid.io/workload-identity';
const DURATION = 15_000;

interface Call {
  readonly verb: 'create' | 'replace' | 'delete';
  readonly name: string;
  readonly body?: KubeResource;
  readonly preconditions?: { uid?: string; resourceVersion?: string } | undefined;
}

function fakeApi() {
  let rv = 100;
  const calls: Call[] = [];
  let onEvent: ((e: WatchListEvent<KubeResource>) => void) | undefined;
  let selector: string | undefined;
  let fail: KubeApiError | undefined;
  const stamp = (o: KubeResource): KubeResource => ({
    ...o,
    metadata: {
      ...o.metadata,
      uid: o.metadata.uid ?? `uid-${o.metadata.name}`,
      resourceVersion: String(++rv),
    },
  });
  return {
    calls,
    get selector() {
      return selector;
    },
    failNext(err: KubeApiError) {
      fail = err;
    },
    emit(e: WatchListEvent<KubeResource>) {
      onEvent!(e);
    },
    api: {
      watchList(o: {
        labelSelector?: string;
        signal: AbortSignal;
        onEvent: (e: WatchListEvent<KubeResource>) => void;
      }) {
        selector = o.labelSelector;
        onEvent = o.onEvent;
        return new Promise<void>((r) => o.signal.addEventListener('abort', () => r()));
      },
      create(o: KubeResource) {
        calls.push({ verb: 'create', name: o.metadata.name, body: o });
        const f = fail;
        fail = undefined;
        return f === undefined ? Promise.resolve(stamp(o)) : Promise.reject(f);
      },
      replace(o: KubeResource) {
        calls.push({ verb: 'replace', name: o.metadata.name, body: o });
        const f = fail;
        fail = undefined;
        return f === undefined ? Promise.resolve(stamp(o)) : Promise.reject(f);
      },
      delete(
        _v: string,
        _k: string,
        _ns: string,
        name: string,
        preconditions?: { uid?: string; resourceVersion?: string },
      ) {
        calls.push({ verb: 'delete', name, preconditions });
        return Promise.resolve();
      },
    },
  };
}

function lease(
  holder: string,
  renewTime: number,
  seconds = DURATION / 1000,
  rv = '7',
): KubeResource {
  return {
    apiVersion: 'coordination.k8s.io/v1',
    kind: 'Lease',
    metadata: { name: holder, namespace: 'linkerd', uid: `uid-${holder}`, resourceVersion: rv },
    spec: {
      holderIdentity: holder,
      leaseDurationSeconds: seconds,
      renewTime: new Date(renewTime).toISOString().replace('Z', '000Z'),
    },
  };
}

const flush = () => new Promise((r) => setImmediate(r));

function setUp() {
  const timers = new ManualTimers();
  const fake = fakeApi();
  const replicas = new SignerReplicas({
    api: fake.api as never,
    namespace: 'linkerd',
    signerName: SIGNER,
    identity: 'meshid-podcert-ca-0-aaaaaa',
    leaseDurationMs: DURATION,
    clock: timers.clock,
    timers,
    logger: silentLogger(),
  });
  const changes: string[][] = [];
  replicas.onChange(() => changes.push([...replicas.live]));
  return { timers, fake, replicas, changes };
}

describe('pod certificate signer replicas (Leases)', () => {
  it('names a replica after its pod, as a DNS-1123 name with a random suffix', () => {
    const a = replicaIdentity('Linkerd_Identity-7d9f.X2K4P', systemRandom);
    assert.match(a, /^meshid-podcert-linkerd-identity-7d9f-x2k4p-[0-9a-f]{6}$/);
    assert.notEqual(replicaIdentity('ca-0', systemRandom), replicaIdentity('ca-0', systemRandom));
    assert.match(replicaIdentity('___', systemRandom), /^meshid-podcert-ca-[0-9a-f]{6}$/);
  });

  it('creates its labelled Lease, renews it every third of the duration, and follows only its signer’s Leases', async () => {
    const { timers, fake, replicas } = setUp();
    replicas.start();
    await flush();
    assert.equal(fake.selector, `${SIGNER_LEASE_LABEL}=${signerLabelValue(SIGNER)}`);
    const created = fake.calls[0]!;
    assert.equal(created.verb, 'create');
    assert.equal(created.name, 'meshid-podcert-ca-0-aaaaaa');
    const spec = created.body!['spec'] as Record<string, unknown>;
    assert.equal(spec['holderIdentity'], 'meshid-podcert-ca-0-aaaaaa');
    assert.equal(spec['leaseDurationSeconds'], 15);
    assert.match(String(spec['renewTime']), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    assert.equal(created.body!.metadata.labels?.[SIGNER_LEASE_LABEL], signerLabelValue(SIGNER));

    timers.advance(DURATION / 3 - 1);
    await flush();
    assert.equal(fake.calls.length, 1, 'not renewed before a third of the duration');
    timers.advance(1);
    await flush();
    const renewed = fake.calls[1]!;
    assert.equal(renewed.verb, 'replace');
    assert.equal(
      renewed.body!.metadata.resourceVersion,
      '101',
      'conditional on the version it wrote',
    );
    assert.equal(
      (renewed.body!['spec'] as Record<string, unknown>)['renewTime'],
      new Date(timers.clock.now()).toISOString().replace('Z', '000Z'),
    );
    await replicas.close();
  });

  it('knows only itself until the first list, then counts each Lease for a duration from first sight', async () => {
    const { timers, fake, replicas, changes } = setUp();
    replicas.start();
    assert.equal(replicas.synced, false);
    assert.deepEqual(replicas.live, ['meshid-podcert-ca-0-aaaaaa']);
    const now = timers.clock.now();
    fake.emit({
      type: 'SYNC',
      items: [
        lease('meshid-podcert-ca-1-bbbbbb', now - 2000),
        // Left by a replica that died a minute ago (or whose clock is a minute behind).
        lease('meshid-podcert-ca-2-cccccc', now - 60_000),
      ],
    });
    assert.equal(replicas.synced, true);
    assert.deepEqual(replicas.live, [
      'meshid-podcert-ca-0-aaaaaa',
      'meshid-podcert-ca-1-bbbbbb',
      'meshid-podcert-ca-2-cccccc',
    ]);
    assert.equal(changes.length, 1, 'told once, at the first list');
    timers.advance(DURATION / 2);
    fake.emit({
      type: 'MODIFIED',
      object: lease('meshid-podcert-ca-1-bbbbbb', now + 3000, 15, '8'),
    });
    timers.advance(DURATION / 2);
    assert.deepEqual(
      replicas.live,
      ['meshid-podcert-ca-0-aaaaaa', 'meshid-podcert-ca-1-bbbbbb'],
      'the one not renewed since it was first seen is gone a duration later',
    );
    assert.equal(changes.length, 2);
    await replicas.close();
  });

  it('drops a replica whose Lease went unrenewed for the duration, on its own clock, and takes back one that renews', async () => {
    const { timers, fake, replicas, changes } = setUp();
    replicas.start();
    // The other replica's clock is an hour behind: only changes of its renewTime count.
    const skewed = timers.clock.now() - 3_600_000;
    fake.emit({ type: 'SYNC', items: [lease('meshid-podcert-ca-1-bbbbbb', skewed)] });
    assert.equal(replicas.live.length, 2, 'an hour-old renewTime counts from first sight');
    timers.advance(DURATION / 2);
    fake.emit({
      type: 'MODIFIED',
      object: lease('meshid-podcert-ca-1-bbbbbb', skewed + 5000, 15, '8'),
    });
    assert.equal(replicas.live.length, 2, 'a renewal seen now counts from now');
    timers.advance(DURATION - 1);
    assert.equal(replicas.live.length, 2);
    fake.emit({
      type: 'MODIFIED',
      object: lease('meshid-podcert-ca-1-bbbbbb', skewed + 10_000, 15, '9'),
    });
    timers.advance(DURATION - 1);
    assert.equal(replicas.live.length, 2, 'renewed: counts again from the renewal');
    timers.advance(2);
    assert.deepEqual(replicas.live, ['meshid-podcert-ca-0-aaaaaa'], 'unrenewed for the duration');
    assert.deepEqual(changes.at(-1), ['meshid-podcert-ca-0-aaaaaa']);
    fake.emit({ type: 'DELETED', object: lease('meshid-podcert-ca-1-bbbbbb', skewed) });
    await replicas.close();
  });

  it('drops a replica at once when its Lease is deleted (it stopped)', async () => {
    const { timers, fake, replicas } = setUp();
    replicas.start();
    fake.emit({ type: 'SYNC', items: [lease('meshid-podcert-ca-1-bbbbbb', timers.clock.now())] });
    assert.equal(replicas.live.length, 2);
    fake.emit({ type: 'DELETED', object: lease('meshid-podcert-ca-1-bbbbbb', timers.clock.now()) });
    assert.deepEqual(replicas.live, ['meshid-podcert-ca-0-aaaaaa']);
    await replicas.close();
  });

  it('deletes a Lease seen unrenewed for eleven durations, only at the version it saw', async () => {
    const { timers, fake, replicas } = setUp();
    replicas.start();
    await flush();
    fake.emit({
      type: 'SYNC',
      items: [lease('meshid-podcert-ca-9-999999', timers.clock.now(), 15, '42')],
    });
    timers.advance(DURATION);
    assert.equal(replicas.live.length, 1);
    // Checked again whenever the set is computed: at the next event after ten more durations.
    timers.advance(10 * DURATION);
    fake.emit({ type: 'MODIFIED', object: lease('meshid-podcert-ca-1-bbbbbb', 0) });
    await flush();
    assert.equal(fake.calls.filter((c) => c.verb === 'delete').length, 1);
    const del = fake.calls.find((c) => c.verb === 'delete');
    assert.deepEqual(del, {
      verb: 'delete',
      name: 'meshid-podcert-ca-9-999999',
      preconditions: { uid: 'uid-meshid-podcert-ca-9-999999', resourceVersion: '42' },
    });
    await replicas.close();
  });

  it('creates its Lease again when it was deleted under it (404 on renewal)', async () => {
    const { timers, fake, replicas } = setUp();
    replicas.start();
    await flush();
    fake.failNext(new KubeApiError(404, 'NotFound', 'leases "x" not found'));
    timers.advance(DURATION / 3);
    await flush();
    assert.equal(fake.calls[1]!.verb, 'replace');
    timers.advance(DURATION / 3);
    await flush();
    assert.equal(fake.calls[2]!.verb, 'create', 'the next renewal creates it again');
    await replicas.close();
  });

  it('deletes its own Lease when it stops, on its uid, and renews no more', async () => {
    const { timers, fake, replicas } = setUp();
    replicas.start();
    await flush();
    await replicas.close();
    const del = fake.calls.at(-1)!;
    assert.deepEqual(del, {
      verb: 'delete',
      name: 'meshid-podcert-ca-0-aaaaaa',
      preconditions: { uid: 'uid-meshid-podcert-ca-0-aaaaaa' },
    });
    const n = fake.calls.length;
    timers.advance(DURATION * 3);
    await flush();
    assert.equal(fake.calls.length, n);
  });
});
