/**
 * Core's one Kubernetes list + watch loop, through the client adapter, against the Kubernetes API
 * test double: a dropped watch, 410 Gone and an API outage behave the same for every collection
 * meshid follows — the CA's issuer Secret and anchors ConfigMap (by name) and the anchors copies'
 * namespaces, ConfigMaps and injected pods (all namespaces, by field and label selector).
 */
import { strict as assert } from 'node:assert';
import { KubeApiError } from '../../core/index.js';
import { watchList } from '../../core/kube/watch-list.js';
import type { KubeClient, KubeResource, Random, WatchListEvent } from '../../core/index.js';
import type { KubeWatchListOptions } from '../../core/kube/api.js';
import { clientNodeKubeClient } from '../../core/kube/client-node.js';
import { backoffDelay } from '../../core/kube/watch-list.js';
import { waitFor } from '../support/ca-process.js';
import { startKubeApiServer } from '../support/kube-api-server/index.js';
import type { KubeApiServer, KubeObject } from '../support/kube-api-server/index.js';

const NS = 'linkerd';
const APP = 'emojivoto';
const MARK = 'meshid.io/test-mark';

/** One collection meshid follows: what the loop watches and how the test changes it. */
interface Row {
  readonly name: string;
  readonly follow: Pick<
    KubeWatchListOptions,
    'kind' | 'namespace' | 'fieldSelector' | 'labelSelector'
  >;
  /** The object the test changes. */
  readonly object: string;
  readonly touch: (server: KubeApiServer, mark: string) => void;
  readonly mark: (o: KubeResource) => string | undefined;
}

const annotate = (server: KubeApiServer, obj: KubeObject | undefined, mark: string): void => {
  const o = obj!;
  const metadata = { ...o.metadata, annotations: { ...o.metadata.annotations, [MARK]: mark } };
  delete metadata.resourceVersion;
  server.update({ ...o, metadata } as KubeObject);
};
const annotation = (o: KubeResource): string | undefined => o.metadata.annotations?.[MARK];

const ROWS: readonly Row[] = [
  {
    name: 'the issuer Secret',
    follow: { kind: 'Secret', namespace: NS, fieldSelector: 'metadata.name=issuer' },
    object: 'issuer',
    touch: (server, mark) =>
      server.apply({
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: { name: 'issuer', namespace: NS },
        type: 'kubernetes.io/tls',
        data: {
          'tls.crt': Buffer.from(mark).toString('base64'),
          'tls.key': Buffer.from('key').toString('base64'),
        },
      } as KubeObject),
    mark: (o) => {
      const v = (o['data'] as Record<string, string> | undefined)?.['tls.crt'];
      return v === undefined ? undefined : Buffer.from(v, 'base64').toString('utf8');
    },
  },
  {
    name: 'the anchors ConfigMap',
    follow: {
      kind: 'ConfigMap',
      namespace: NS,
      fieldSelector: 'metadata.name=linkerd-identity-trust-roots',
    },
    object: 'linkerd-identity-trust-roots',
    touch: (server, mark) =>
      server.apply({
        apiVersion: 'v1',
        kind: 'ConfigMap',
        metadata: { name: 'linkerd-identity-trust-roots', namespace: NS },
        data: { 'ca-bundle.crt': mark },
      } as KubeObject),
    mark: (o) => (o['data'] as Record<string, string> | undefined)?.['ca-bundle.crt'],
  },
  {
    name: 'the copies: namespaces',
    follow: { kind: 'Namespace' },
    object: APP,
    touch: (server, mark) =>
      annotate(server, server.get({ apiVersion: 'v1', kind: 'Namespace', name: APP }), mark),
    mark: annotation,
  },
  {
    name: 'the copies: ConfigMaps of the anchors name in every namespace',
    follow: { kind: 'ConfigMap', fieldSelector: 'metadata.name=linkerd-identity-trust-roots' },
    object: 'linkerd-identity-trust-roots',
    touch: (server, mark) =>
      server.apply({
        apiVersion: 'v1',
        kind: 'ConfigMap',
        metadata: { name: 'linkerd-identity-trust-roots', namespace: APP },
        data: { 'ca-bundle.crt': mark },
      } as KubeObject),
    mark: (o) =>
      o.metadata.namespace === APP
        ? (o['data'] as Record<string, string> | undefined)?.['ca-bundle.crt']
        : undefined,
  },
  {
    name: 'the copies: injected pods in every namespace',
    follow: { kind: 'Pod', labelSelector: 'linkerd.io/control-plane-ns=linkerd' },
    object: 'web',
    touch: (server, mark) =>
      annotate(
        server,
        server.get({ apiVersion: 'v1', kind: 'Pod', namespace: APP, name: 'web' }),
        mark,
      ),
    mark: annotation,
  },
];

/** The loop's view of a collection, as its caller keeps it. */
class Follower {
  readonly marks = new Map<string, string | undefined>();
  syncs = 0;
  readonly retries: Error[] = [];
  readonly #stop = new AbortController();
  readonly done: Promise<void>;

  constructor(kube: KubeClient, row: Row) {
    const onEvent = (e: WatchListEvent<KubeResource>): void => {
      if (e.type === 'SYNC') {
        this.syncs++;
        this.marks.clear();
        for (const o of e.items) this.#see(row, o);
      } else if (e.type === 'DELETED') this.marks.delete(e.object.metadata.name);
      else this.#see(row, e.object);
    };
    this.done = kube.watchList({
      ...row.follow,
      signal: this.#stop.signal,
      backoffMs: { min: 20, max: 200 },
      onEvent,
      onRetry: (err) => this.retries.push(err),
    });
  }

  #see(row: Row, o: KubeResource): void {
    if (o.metadata.name !== row.object) return;
    const mark = row.mark(o);
    if (mark !== undefined) this.marks.set(o.metadata.name, mark);
  }

  async stop(): Promise<void> {
    this.#stop.abort();
    await this.done;
  }
}

describe('core Kubernetes list + watch loop (Kubernetes API test server)', function () {
  this.timeout(60_000);
  let server: KubeApiServer;
  let kube: KubeClient;
  let bumps = 0;
  /** Moves the server's resourceVersion past every watch's (an unrelated write). */
  const bump = (): void => void server.createServiceAccount(NS, `bump-${bumps++}`);

  beforeEach(async () => {
    server = await startKubeApiServer({ namespaces: [NS, APP] });
    server.createPod(APP, 'web', { labels: { 'linkerd.io/control-plane-ns': NS } });
    kube = clientNodeKubeClient(server.kubeConfig());
  });
  afterEach(async () => {
    kube.close();
    await server.stop();
  });

  for (const row of ROWS) {
    describe(row.name, () => {
      const holds = (f: Follower, mark: string): Promise<true> =>
        waitFor(`${row.name} to hold ${mark}`, () =>
          f.marks.get(row.object) === mark ? true : undefined,
        );
      const watching = (): Promise<true> =>
        waitFor('the watch to be open', () => (server.openWatches >= 1 ? true : undefined));

      it('lists, then follows changes; a watch the server ends resumes without listing again', async () => {
        row.touch(server, 'one');
        const f = new Follower(kube, row);
        await holds(f, 'one');
        assert.equal(f.syncs, 1);
        await watching();
        row.touch(server, 'two');
        await holds(f, 'two');
        server.closeWatches();
        // Written while no watch is open: the resumed watch replays it from the history.
        row.touch(server, 'three');
        await holds(f, 'three');
        await watching();
        assert.equal(f.syncs, 1, 'resumed from the resourceVersion, not listed again');
        assert.deepEqual(f.retries, []);
        await f.stop();
      });

      it('410 Gone: lists again and catches up with what the lost history held', async () => {
        row.touch(server, 'one');
        const f = new Follower(kube, row);
        await holds(f, 'one');
        await watching();
        bump();
        server.compactWatchHistory();
        server.closeWatches();
        row.touch(server, 'two');
        await holds(f, 'two');
        assert.equal(f.syncs, 2, 'a second list after the 410');
        assert.deepEqual(f.retries, [], 'a 410 is not a failure');
        await watching();
        row.touch(server, 'three');
        await holds(f, 'three');
        await f.stop();
      });

      it('a dropped connection and an API outage: retried with backoff as KubeApiErrors, then caught up', async () => {
        row.touch(server, 'one');
        const f = new Follower(kube, row);
        await holds(f, 'one');
        await watching();
        // The connection of the next request is cut, and the watch ends: resume fails once.
        server.failNext({ method: 'GET', path: /./, reset: true });
        server.closeWatches();
        await waitFor('a retry', () => (f.retries.length >= 1 ? true : undefined));
        row.touch(server, 'two');
        await holds(f, 'two');
        // The API server away: every attempt fails until it is back.
        await server.pause();
        row.touch(server, 'three');
        await waitFor('retries while down', () => (f.retries.length >= 3 ? true : undefined));
        // Then answering 503 for a while.
        server.failNext({ method: 'GET', path: /./, status: 503, times: 2 });
        await server.resume();
        await holds(f, 'three');
        for (const err of f.retries) {
          assert.ok(err instanceof KubeApiError, String(err));
          assert.equal(typeof err.status, 'number');
          assert.equal((err as { code?: unknown }).code, undefined, 'no code to reach the wire');
        }
        assert.ok(f.retries.some((e) => (e as KubeApiError).status === 0));
        await watching();
        row.touch(server, 'four');
        await holds(f, 'four');
        await f.stop();
      });
    });
  }
});

describe('core watchList backoff', () => {
  const fixed = (fraction: number): Random => ({
    bytes: () => {
      const b = Buffer.alloc(4);
      b.writeUInt32BE(Math.floor(fraction * 2 ** 32));
      return b;
    },
  });

  it('doubles from min up to max, jittered over the upper half of each step', () => {
    assert.deepEqual(
      [1, 2, 3, 4, 5, 6, 30].map((n) => backoffDelay(n, 500, 30_000, fixed(0))),
      [250, 500, 1000, 2000, 4000, 8000, 15_000],
    );
    assert.equal(backoffDelay(3, 500, 30_000, fixed(0.999_999)), 2000);
    assert.equal(backoffDelay(30, 500, 30_000, fixed(0.5)), 22_500);
  });

  it('waits the backoff between failed lists, resets it after a success, and stops on abort', async () => {
    const waits: number[] = [];
    const stop = new AbortController();
    let lists = 0;
    const events: string[] = [];
    await watchList<string>({
      list: () => {
        lists++;
        if (lists <= 3 || lists === 5) return Promise.reject(new Error(`down ${lists}`));
        return Promise.resolve({ items: [`list ${lists}`], resourceVersion: String(lists) });
      },
      // Every watch is refused as too old: each success is followed by a new list.
      watch: (_version, onEvent) => {
        queueMicrotask(() => onEvent({ type: 'GONE' }));
        return Promise.resolve(() => undefined);
      },
      onEvent: (e) => {
        if (e.type === 'SYNC') events.push(...e.items);
        if (lists === 6) stop.abort();
      },
      onRetry: (err) => events.push(err.message),
      signal: stop.signal,
      backoff: { min: 100, max: 1000 },
      random: fixed(0),
      sleep: (ms) => {
        waits.push(ms);
        return Promise.resolve();
      },
    });
    assert.deepEqual(events, ['down 1', 'down 2', 'down 3', 'list 4', 'down 5', 'list 6']);
    assert.deepEqual(waits, [50, 100, 200, 50]);
  });
});
