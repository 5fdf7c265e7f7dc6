/**
 * The anchors' copies in meshed namespaces, against the Kubernetes API test server (a test
 * double, not a cluster) through @kubernetes/client-node, as the installed `meshid-trust`
 * ServiceAccount (so the rendered RBAC is what allows or refuses every call): opt-in, anchors
 * changes, a rotation's propagate step, a foreign ConfigMap, opt-out, conflicts, watches that the
 * server ends or forgets, and a controller restarted after a pass that failed half-way.
 */
import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import type { Logger } from '../../core/index.js';
import {
  AnchorsCopyController,
  bundleCopiesOf,
  rotationStateFromAnnotations,
} from '../../trust-bundle/index.js';
import { ANCHORS_COPY_LABEL } from '../../trust-bundle/copies.js';
import type { TrustKubeApi } from '../../trust-bundle/index.js';
import { waitFor } from '../support/ca-process.js';
import type { KubeApiServer, KubeObject } from '../support/kube-api-server/index.js';
import { KEY, NAME, NS, stagedRotation, startTrustCluster } from '../support/trust-cluster.js';
import type { ConfigMap, TrustCluster } from '../support/trust-cluster.js';

const APPS = ['emojivoto', 'books', 'shop'];
const copySettings = { namespace: NS, trustAnchorsConfigMap: NAME, trustAnchorsKey: KEY };

describe('anchors copies in meshed namespaces (Kubernetes API test server, installed RBAC)', function () {
  this.timeout(60_000);
  let t: TrustCluster;
  let server: KubeApiServer;
  let api: TrustKubeApi;
  let log: TrustCluster['log'];
  let stop: AbortController;
  let running: Promise<void> | undefined;

  const get = (namespace: string): ConfigMap | undefined =>
    server.get<ConfigMap>({ apiVersion: 'v1', kind: 'ConfigMap', namespace, name: NAME });
  const source = (): string => get(NS)!.data![KEY]!;
  const optIn = (namespace: string, value: string | undefined): void => {
    const ns = server.get({ apiVersion: 'v1', kind: 'Namespace', name: namespace })!;
    const annotations = { ...ns.metadata.annotations };
    if (value === undefined) delete annotations['meshid.io/inject'];
    else annotations['meshid.io/inject'] = value;
    server.update({ ...ns, metadata: { ...ns.metadata, annotations } });
  };
  const setSource = (pem: string): void => {
    const cm = get(NS)!;
    server.update({ ...cm, data: { ...cm.data, [KEY]: pem } } as KubeObject);
  };
  const copies = (logger: Logger = log.logger): AnchorsCopyController =>
    new AnchorsCopyController({ api, settings: copySettings, logger });
  const start = (controller = copies()): void => {
    stop = new AbortController();
    running = controller.run(stop.signal, 200);
  };
  const copiesHold = (pem: string, namespaces = APPS) =>
    waitFor(`the copies in ${namespaces.join(', ')} to hold the bundle`, () =>
      namespaces.every((n) => get(n)?.data?.[KEY] === pem) ? true : undefined,
    );

  beforeEach(async () => {
    t = await startTrustCluster({ namespaces: [...APPS, 'plain'] });
    ({ server, api, log } = t);
    for (const n of APPS) optIn(n, 'enabled');
    running = undefined;
  });
  afterEach(async () => {
    stop?.abort();
    await running;
    await t.stop();
  });

  it('a namespace that opts in gets a labelled copy, by watch; kube-system, the control plane and others do not', async () => {
    start();
    await copiesHold(source());
    const copy = get('emojivoto')!;
    assert.equal(copy.metadata.labels?.[ANCHORS_COPY_LABEL], NS);
    assert.equal(copy.metadata.annotations?.['meshid.io/anchors-source'], `${NS}/${NAME}`);
    assert.deepEqual(Object.keys(copy.data!), [KEY]);
    assert.equal(get('plain'), undefined);
    assert.equal(get('kube-system'), undefined);
    // Opting in later is seen by the namespace watch, with no pass on a timer.
    optIn('plain', 'enabled');
    await copiesHold(source(), ['plain']);
    // A namespace created already opted in, too.
    server.create({
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: 'late', annotations: { 'meshid.io/inject': 'enabled' } },
    });
    await copiesHold(source(), ['late']);
    // Excluded whatever it says: the injector never sees its pods.
    server.create({
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: {
        name: 'no-webhooks',
        annotations: { 'meshid.io/inject': 'enabled' },
        labels: { 'config.linkerd.io/admission-webhooks': 'disabled' },
      },
    });
    optIn('kube-system', 'enabled');
    // Wait on a change made after those two, so that their events have been handled.
    optIn('books', 'disabled');
    await waitFor('the copy in books to go', () => (get('books') === undefined ? true : undefined));
    assert.equal(get('no-webhooks'), undefined);
    assert.equal(get('kube-system'), undefined);
  });

  it('a namespace that does not opt in gets a copy while it holds a pod the injector labelled, by the pod watch, and loses it with its last such pod', async () => {
    const pod = (namespace: string, name: string, controlPlane = NS): KubeObject => ({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { namespace, name, labels: { 'linkerd.io/control-plane-ns': controlPlane } },
      spec: { containers: [{ name: 'app', image: 'app:1' }] },
    });
    const gone = (namespace: string) =>
      waitFor(`the copy in ${namespace} to go`, () =>
        get(namespace) === undefined ? true : undefined,
      );
    start();
    await copiesHold(source());
    assert.equal(get('plain'), undefined);
    server.create(pod('plain', 'a'));
    await copiesHold(source(), ['plain']);
    assert.equal(get('plain')!.metadata.labels?.[ANCHORS_COPY_LABEL], NS);
    server.create(pod('plain', 'b'));
    // Pods of another mesh's control plane, and kube-system's, make no copy.
    server.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'other-mesh' } });
    server.create(pod('other-mesh', 'x', 'other-control-plane'));
    server.create(pod('kube-system', 'y'));
    server.delete({ apiVersion: 'v1', kind: 'Pod', namespace: 'plain', name: 'a' });
    // Wait on a change made after those, so that their events have been handled.
    optIn('books', 'disabled');
    await gone('books');
    assert.ok(get('plain') !== undefined, 'one injected pod is left in plain');
    assert.equal(get('other-mesh'), undefined);
    assert.equal(get('kube-system'), undefined);
    server.delete({ apiVersion: 'v1', kind: 'Pod', namespace: 'plain', name: 'b' });
    await gone('plain');
    // A namespace that opts in keeps its copy when its last injected pod goes.
    server.create(pod('shop', 'c'));
    server.delete({ apiVersion: 'v1', kind: 'Pod', namespace: 'shop', name: 'c' });
    optIn('emojivoto', 'disabled');
    await gone('emojivoto');
    assert.ok(get('shop') !== undefined);
  });

  it('an anchors change reaches every copy, also after the server ends the watches and forgets their history', async () => {
    start();
    await copiesHold(source());
    const before = source();
    setSource(`${before}\n`);
    await copiesHold(`${before}\n`);
    // Streams ended (as a server-side timeout does) and their resourceVersion expired: re-watch.
    await waitFor('both watches', () => (server.openWatches >= 2 ? true : undefined));
    server.compactWatchHistory();
    server.closeWatches();
    await waitFor('the watches to be back', () => (server.openWatches >= 2 ? true : undefined));
    setSource(before);
    await copiesHold(before);
    // Our copy edited by hand is put back.
    const copy = get('shop')!;
    server.update({ ...copy, data: { [KEY]: 'edited' } } as KubeObject);
    await copiesHold(before, ['shop']);
  });

  it('a rotation holds in propagate until every copy holds the staged bundle, then moves on', async () => {
    const copyController = copies();
    await copyController.converge();
    const rotation = await stagedRotation(t, bundleCopiesOf(copyController));
    // The copy in shop cannot be written for now (an API server failing these requests).
    server.failNext({
      method: 'PUT',
      path: `/api/v1/namespaces/shop/configmaps/${NAME}`,
      times: 1000,
      status: 500,
    });
    let r = await rotation.step();
    assert.equal(r.state?.phase, 'propagate', 'staged');
    const staged = source();
    r = await rotation.step();
    assert.equal(r.advanced, false);
    assert.equal(r.state?.phase, 'propagate');
    assert.equal(
      r.state?.waitingFor?.description,
      '2 of 3 namespace copies of the anchors hold the staged bundle (waiting for shop)',
    );
    assert.equal(get('emojivoto')!.data![KEY], staged);
    assert.notEqual(get('shop')!.data![KEY], staged);
    r = await rotation.step();
    assert.equal(r.state?.phase, 'propagate', 'still holding: nothing skips ahead');
    server.clearFaults();
    // Without the failure: emojivoto and books already hold it, shop now gets it.
    server.update({ ...get('books')!, data: { [KEY]: 'stale' } } as KubeObject);
    r = await rotation.step();
    assert.equal(r.state?.phase, 'switch', JSON.stringify(r.state?.waitingFor));
    for (const n of APPS) assert.equal(get(n)!.data![KEY], staged, n);
    assert.equal(rotationStateFromAnnotations(get(NS)!.metadata.annotations)?.phase, 'switch');
  });

  it('a rotation waits for an opted-in namespace whose copy cannot be made yet, naming it', async () => {
    const copyController = copies();
    await copyController.converge();
    const lagging = bundleCopiesOf(copyController);
    // A namespace where create is refused (for the test: the copy "cannot be made yet").
    optIn('plain', 'enabled');
    server.failNext({
      method: 'POST',
      path: '/api/v1/namespaces/plain/configmaps',
      times: 1000,
      status: 503,
    });
    assert.deepEqual(await lagging.sync(source()), { total: 4, behind: ['plain'], foreign: [] });
    const failed = log.lines.find(
      (l) => l['msg'] === 'anchors copy not written; retried on the next pass',
    );
    assert.equal(failed?.['namespace'], 'plain');
    assert.match(String(failed?.['err']), /^create ConfigMap linkerd-identity-trust-roots: /);
    server.clearFaults();
    assert.deepEqual(await lagging.sync(source()), { total: 4, behind: [], foreign: [] });
  });

  it('a ConfigMap of that name that is not ours is left alone (one warning), and kept when its namespace opts out', async () => {
    const foreign = {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: NAME, namespace: 'plain', labels: { team: 'payments' } },
      data: { [KEY]: 'their own anchors' },
    };
    server.create(foreign as KubeObject);
    optIn('plain', 'enabled');
    const controller = copies();
    let r = await controller.converge();
    assert.deepEqual(r.foreign, ['plain']);
    r = await controller.converge();
    assert.deepEqual(r.foreign, ['plain']);
    assert.equal(get('plain')!.data![KEY], 'their own anchors');
    assert.equal(get('plain')!.metadata.labels?.[ANCHORS_COPY_LABEL], undefined);
    const warnings = log.lines.filter((l) => l['namespace'] === 'plain' && l['level'] === 'warn');
    assert.equal(warnings.length, 1, 'reported once, not on every pass');
    assert.match(
      String(warnings[0]!['msg']),
      /^ConfigMap plain\/linkerd-identity-trust-roots exists and is not a copy made by meshid trust sync \(no meshid\.io\/anchors-copy-of label\): left alone/,
    );
    assert.deepEqual(await controller.lag(source()), {
      total: 4,
      behind: [],
      foreign: ['plain'],
    });
    optIn('plain', undefined);
    r = await controller.converge();
    assert.deepEqual(r.deleted, []);
    assert.equal(get('plain')!.data![KEY], 'their own anchors');
  });

  it('opting out removes our copy; a missing anchors ConfigMap removes nothing', async () => {
    const controller = copies();
    await controller.converge();
    optIn('books', 'disabled');
    optIn('shop', undefined);
    const r = await controller.converge();
    assert.deepEqual([...r.deleted].sort(), ['books', 'shop']);
    assert.equal(get('books'), undefined);
    assert.equal(get('shop'), undefined);
    assert.ok(get('emojivoto') !== undefined);
    server.delete({ apiVersion: 'v1', kind: 'ConfigMap', namespace: NS, name: NAME });
    const missing = await controller.converge();
    assert.equal(missing.sourceFound, false);
    assert.ok(get('emojivoto') !== undefined, 'pods keep the anchors they have');
  });

  it('a write that loses a race (the copy changed since the read) is passed again; a delete does not remove a ConfigMap put there since', async () => {
    await copies().converge();
    setSource(`${source()}\n`);
    // Someone edits the copy in books between the controller's read and its write.
    let edits = 1;
    const racing: TrustKubeApi = {
      ...api,
      async replace(obj) {
        if (obj.metadata.namespace === 'books' && edits-- > 0) {
          const now = get('books')!;
          server.update({ ...now, data: { [KEY]: 'edited meanwhile' } } as KubeObject);
        }
        return api.replace(obj);
      },
      async delete(apiVersion, kind, namespace, name, preconditions) {
        // Ours is gone and someone else's is there by the time the delete is sent.
        server.delete({ apiVersion: 'v1', kind: 'ConfigMap', namespace, name });
        server.create({
          apiVersion: 'v1',
          kind: 'ConfigMap',
          metadata: { name, namespace },
          data: { [KEY]: 'theirs' },
        } as KubeObject);
        return api.delete(apiVersion, kind, namespace, name, preconditions);
      },
    };
    const controller = new AnchorsCopyController({
      api: racing,
      settings: copySettings,
      logger: log.logger,
    });
    const first = await controller.reconcile();
    assert.equal(first.conflicted, true);
    assert.deepEqual(first.updated, ['emojivoto', 'shop']);
    assert.equal(get('books')!.data![KEY], 'edited meanwhile');
    const again = await controller.converge();
    assert.deepEqual(again.updated, ['books']);
    for (const n of APPS) assert.equal(get(n)!.data![KEY], source());
    optIn('shop', undefined);
    const raced = await controller.reconcile();
    assert.equal(raced.conflicted, true);
    assert.deepEqual(raced.deleted, []);
    assert.equal(get('shop')!.data![KEY], 'theirs');
  });

  it('a controller stopped after a pass that failed half-way converges when started again', async () => {
    const first = copies();
    await first.converge();
    const next = `${source()}\n`;
    setSource(next);
    // books and shop cannot be written: the pass gets emojivoto done and stops there.
    server.failNext({
      method: 'PUT',
      path: new RegExp(`^/api/v1/namespaces/(books|shop)/configmaps/${NAME}`),
      times: 100,
      status: 500,
    });
    const half = await first.converge();
    assert.deepEqual(half.updated, ['emojivoto']);
    assert.deepEqual(
      half.failed.map((f) => f.namespace),
      ['books', 'shop'],
    );
    assert.notEqual(get('shop')!.data![KEY], next);
    optIn('emojivoto', undefined);
    server.clearFaults();
    // A new process: nothing of the first one's memory, only what is in the API.
    start(copies());
    await copiesHold(next, ['books', 'shop']);
    await waitFor('the copy in emojivoto to go', () =>
      get('emojivoto') === undefined ? true : undefined,
    );
  });
});
