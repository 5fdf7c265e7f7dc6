/**
 * Watches on the test server: resumption from a resourceVersion, synthetic ADDED events, selector
 * transitions, timeoutSeconds, bookmarks, 410 Expired as an ERROR event, and a client-node
 * informer relisting after a 410.
 */
import { strict as assert } from 'node:assert';
import { CoreV1Api, makeInformer, Watch } from '@kubernetes/client-node';
import type { V1ConfigMap } from '@kubernetes/client-node';
import { startKubeApiServer } from '../../support/kube-api-server/index.js';
import type { KubeApiServer } from '../../support/kube-api-server/index.js';
import { rawWatch, waitFor } from './helpers.js';

interface Seen {
  type: string;
  name: string;
  rv: number;
  object: Record<string, unknown>;
}

describe('kube-api-server: watches', () => {
  let api: KubeApiServer;
  let core: CoreV1Api;
  const controllers: AbortController[] = [];

  /** Starts a client-node watch, collecting events; `done` records the end. */
  async function watch(
    path: string,
    params: Record<string, string | number | boolean | undefined>,
  ) {
    const seen: Seen[] = [];
    let done: unknown = undefined;
    let ended = false;
    const c = await new Watch(api.kubeConfig()).watch(
      path,
      params,
      (
        type,
        obj: { metadata?: { name?: string; resourceVersion?: string } } & Record<string, unknown>,
      ) =>
        seen.push({
          type,
          name: obj.metadata?.name ?? '',
          rv: Number(obj.metadata?.resourceVersion),
          object: obj,
        }),
      (err) => {
        done = err;
        ended = true;
      },
    );
    controllers.push(c);
    return { seen, ended: () => ended, err: () => done };
  }

  const cm = (name: string, labels?: Record<string, string>): V1ConfigMap => ({
    metadata: { name, ...(labels !== undefined ? { labels } : {}) },
    data: { v: '0' },
  });

  beforeEach(async () => {
    api = await startKubeApiServer({ namespaces: ['w'], watchHistory: 5 });
    core = api.kubeConfig().makeApiClient(CoreV1Api);
  });
  afterEach(async () => {
    for (const c of controllers.splice(0)) c.abort();
    await api.stop();
  });

  it('resumes from a resourceVersion with the events after it, in order', async () => {
    const a = await core.createNamespacedConfigMap({ namespace: 'w', body: cm('a') });
    const from = a.metadata!.resourceVersion!;
    await core.createNamespacedConfigMap({ namespace: 'w', body: cm('b') });
    await core.patchNamespacedConfigMap({
      namespace: 'w',
      name: 'a',
      body: [{ op: 'replace', path: '/data/v', value: '1' }],
    });
    await core.deleteNamespacedConfigMap({ namespace: 'w', name: 'b' });
    const w = await watch('/api/v1/namespaces/w/configmaps', { resourceVersion: from });
    await waitFor(() => w.seen.length >= 3, 'three events');
    assert.deepEqual(
      w.seen.map((e) => `${e.type} ${e.name}`),
      ['ADDED b', 'MODIFIED a', 'DELETED b'],
    );
    const rvs = w.seen.map((e) => e.rv);
    assert.deepEqual(
      rvs,
      [...rvs].sort((x, y) => x - y),
    );
    assert.equal(
      rvs[2],
      Number(api.resourceVersion),
      'a DELETED event carries the deletion resourceVersion',
    );
    // Live events follow the replay.
    await core.createNamespacedConfigMap({ namespace: 'w', body: cm('c') });
    await waitFor(() => w.seen.length === 4, 'the live event');
    assert.equal(w.seen[3]!.name, 'c');
    assert.equal(w.seen[3]!.object['kind'], 'ConfigMap', 'watch objects carry their kind');
  });

  it('starts a watch without a resourceVersion with synthetic ADDED events for what exists', async () => {
    await core.createNamespacedConfigMap({ namespace: 'w', body: cm('x') });
    const w = await watch('/api/v1/namespaces/w/configmaps', {});
    await waitFor(() => w.seen.length >= 2, 'initial events');
    assert.deepEqual(w.seen.map((e) => `${e.type} ${e.name}`).sort(), [
      'ADDED kube-root-ca.crt',
      'ADDED x',
    ]);
  });

  it('answers a resourceVersion older than the history window with an ERROR event carrying 410 Expired', async () => {
    const first = await core.createNamespacedConfigMap({ namespace: 'w', body: cm('old') });
    for (let i = 0; i < 6; i++)
      await core.patchNamespacedConfigMap({
        namespace: 'w',
        name: 'old',
        body: [{ op: 'replace', path: '/data/v', value: String(i + 1) }],
      });
    const w = await watch('/api/v1/namespaces/w/configmaps', {
      resourceVersion: first.metadata!.resourceVersion!,
    });
    await waitFor(() => w.ended(), 'the stream to end after the ERROR');
    assert.equal(w.seen.length, 1);
    assert.equal(w.seen[0]!.type, 'ERROR');
    const status = w.seen[0]!.object;
    assert.equal(status['kind'], 'Status');
    assert.equal(status['code'], 410);
    assert.equal(status['reason'], 'Expired');
    assert.match(
      String(status['message']),
      new RegExp(`^too old resource version: ${first.metadata!.resourceVersion} \\(\\d+\\)$`),
    );
  });

  it('turns objects entering and leaving a label selector into ADDED and DELETED', async () => {
    await core.createNamespacedConfigMap({ namespace: 'w', body: cm('s', { app: 'web' }) });
    const w = await watch('/api/v1/namespaces/w/configmaps', { labelSelector: 'app=web' });
    await waitFor(() => w.seen.length === 1, 'initial ADDED');
    const mergeLabels = (labels: Record<string, string | null>) =>
      core.patchNamespacedConfigMap({
        namespace: 'w',
        name: 's',
        body: [{ op: 'replace', path: '/metadata/labels', value: labels }],
      });
    await mergeLabels({ app: 'db' });
    await waitFor(() => w.seen.length === 2, 'DELETED on leaving');
    await core.createNamespacedConfigMap({ namespace: 'w', body: cm('other') });
    await mergeLabels({ app: 'web' });
    await waitFor(() => w.seen.length === 3, 'ADDED on entering');
    assert.deepEqual(
      w.seen.map((e) => `${e.type} ${e.name}`),
      ['ADDED s', 'DELETED s', 'ADDED s'],
    );
  });

  it('watches a single object by metadata.name and honours timeoutSeconds', async () => {
    await core.createNamespacedConfigMap({ namespace: 'w', body: cm('one') });
    await core.createNamespacedConfigMap({ namespace: 'w', body: cm('two') });
    const w = await watch('/api/v1/namespaces/w/configmaps', {
      fieldSelector: 'metadata.name=one',
      timeoutSeconds: 1,
    });
    await waitFor(() => w.seen.length === 1, 'the one object');
    assert.equal(w.seen[0]!.name, 'one');
    await waitFor(() => w.ended(), 'the server to end the watch after timeoutSeconds', 4000);
    assert.equal(w.err(), null, 'a timed-out watch ends cleanly');
  });

  it('sends the initial-events-end bookmark when asked (sendInitialEvents) and periodic bookmarks', async () => {
    await api.stop();
    api = await startKubeApiServer({ namespaces: ['w'], bookmarkIntervalMs: 50 });
    const w = rawWatch(
      api.url,
      api.caPem,
      '/api/v1/namespaces/w/configmaps?watch=1&allowWatchBookmarks=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan',
      api.adminToken,
    );
    try {
      await waitFor(() => w.events.filter((e) => e.type === 'BOOKMARK').length >= 2, 'bookmarks');
      assert.equal(w.events[0]!.type, 'ADDED');
      const first = w.events.find((e) => e.type === 'BOOKMARK')!;
      const meta = first.object['metadata'] as {
        resourceVersion: string;
        annotations?: Record<string, string>;
      };
      assert.equal(meta.annotations?.['k8s.io/initial-events-end'], 'true');
      assert.equal(meta.resourceVersion, api.resourceVersion);
    } finally {
      w.close();
    }
  });

  it('lets a client-node informer relist after its watch gets 410 Expired', async () => {
    await core.createNamespacedConfigMap({ namespace: 'w', body: cm('keep') });
    await core.createNamespacedConfigMap({ namespace: 'w', body: cm('doomed') });
    let lists = 0;
    const informer = makeInformer(api.kubeConfig(), '/api/v1/namespaces/w/configmaps', () => {
      lists++;
      return core.listNamespacedConfigMap({ namespace: 'w' });
    });
    const added: string[] = [];
    const deleted: string[] = [];
    const errors: unknown[] = [];
    informer.on('add', (o) => added.push(o.metadata!.name!));
    informer.on('delete', (o) => deleted.push(o.metadata!.name!));
    informer.on('error', (e) => errors.push(e));
    await informer.start();
    try {
      await waitFor(() => api.openWatches === 1, 'the informer watch');
      assert.equal(lists, 1);
      // In one tick: the watch ends, writes happen while nobody watches, and the history that
      // would let the informer resume is gone. Its re-watch must get 410 and relist.
      api.closeWatches();
      api.create({
        apiVersion: 'v1',
        kind: 'ConfigMap',
        metadata: { name: 'missed', namespace: 'w' },
      });
      api.delete({ apiVersion: 'v1', kind: 'ConfigMap', namespace: 'w', name: 'doomed' });
      api.compactWatchHistory();
      await waitFor(() => lists === 2 && api.openWatches === 1, 'the relist and a new watch');
      await waitFor(
        () => added.includes('missed') && deleted.includes('doomed'),
        'the relist to surface the missed changes',
      );
      assert.deepEqual(errors, []);
      const expired = api.requests.filter(
        (r) =>
          r.verb === 'watch' &&
          r.query['resourceVersion'] !== undefined &&
          r.query['resourceVersion'] !== '',
      );
      assert.ok(
        expired.length >= 2,
        'the informer re-watched from its resourceVersion before relisting',
      );
      // And it keeps watching after the relist.
      await core.createNamespacedConfigMap({ namespace: 'w', body: cm('after') });
      await waitFor(() => added.includes('after'), 'a live event after the relist');
      assert.deepEqual(
        informer
          .list('w')
          .map((o) => o.metadata!.name)
          .sort(),
        ['after', 'keep', 'kube-root-ca.crt', 'missed'],
      );
    } finally {
      await informer.stop();
    }
  });
});
