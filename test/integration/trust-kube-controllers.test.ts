/**
 * The trust controllers in process against the Kubernetes API test server (a test double) and
 * the cert-manager simulator (a test double): conflicts between replicas, the automatic rotation
 * after cert-manager renews the root in place, refusals, and the pod observer.
 */
import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { isMeshidError, openKubeClient, parseAnchors, systemRandom } from '../../core/index.js';
import { ManualClock } from '../../core/clock.js';
import { silentLogger } from '../../core/logger.js';
import { kubeTrustSettings } from '../../cli/trust-kube.js';
import { loadConfig } from '../../core/index.js';
import {
  KubeRotationBackend,
  RotationController,
  SyncController,
  trustKubeApi,
  podObserver,
  rotationStateFromAnnotations,
} from '../../trust-bundle/index.js';
import { anchorOfChain } from '../../trust-bundle/lineage.js';
import { issuerChain } from '../../trust-bundle/kube.js';
import type { ProxyObserver, TrustKubeApi } from '../../trust-bundle/index.js';
import { applyCertManagerInstall } from '../support/cert-manager-install.js';
import { CertManagerSimulator } from '../support/cert-manager-sim.js';
import { startKubeApiServer } from '../support/kube-api-server/index.js';
import type { KubeApiServer, KubeObject } from '../support/kube-api-server/index.js';

const NS = 'linkerd';
const settings = kubeTrustSettings(
  loadConfig('trust', { argv: ['--cert-lifetime', '10s', '--clock-skew', '1s'], env: {} }).config,
);
const none: ProxyObserver = { description: 'none', observe: () => Promise.resolve([]) };

describe('trust controllers on the Kubernetes API test server', function () {
  this.timeout(60_000);
  let server: KubeApiServer;
  let api: TrustKubeApi;
  let sim: CertManagerSimulator;
  let clock: ManualClock;

  const cm = (): (KubeObject & { data?: Record<string, string> }) | undefined =>
    server.get({
      apiVersion: 'v1',
      kind: 'ConfigMap',
      namespace: NS,
      name: 'linkerd-identity-trust-roots',
    });
  const anchors = (): number =>
    parseAnchors(cm()!.data!['ca-bundle.crt']!, { now: Date.now() }).anchors.length;
  const controller = (holder: string): RotationController =>
    new RotationController({
      backend: new KubeRotationBackend(api, settings, clock),
      observer: none,
      clock,
      random: systemRandom,
      logger: silentLogger(),
      leafLifetime: 10_000,
      clockSkew: 1000,
      waitTimeout: 3_600_000,
      holder,
    });
  const sync = (rotation?: RotationController): SyncController =>
    new SyncController({
      api,
      settings,
      clock,
      logger: silentLogger(),
      ...(rotation === undefined ? {} : { rotation }),
    });

  beforeEach(async () => {
    server = await startKubeApiServer();
    clock = new ManualClock(Date.now());
    sim = await applyCertManagerInstall(server, clock);
    api = trustKubeApi(await openKubeClient(server.kubeConfig()));
    assert.equal(await sync().reconcile(), 'written');
  });
  afterEach(async () => {
    await sim.stop();
    await server.stop();
  });

  it('two replicas stepping at once: one wins each step, the other re-reads (resourceVersion)', async () => {
    await controller('a').start();
    const results = await Promise.all([controller('a').step(), controller('b').step()]);
    assert.deepEqual(
      results.map((r) => r.state?.lastError),
      [undefined, undefined],
    );
    const state = rotationStateFromAnnotations(cm()!.metadata.annotations);
    // Both may find the new root Secret missing and wait, or one stages; never twice.
    assert.ok(state?.phase === 'stage' || state?.phase === 'propagate');
    assert.equal(
      server
        .list('cert-manager.io/v1', 'Certificate', NS)
        .filter((c) => /-r[0-9a-f]{8}$/.test(c.metadata.name!)).length,
      1,
      'one new root Certificate',
    );
    await sim.reconcile();
    const again = await Promise.all([controller('a').step(), controller('b').step()]);
    assert.deepEqual(
      again.map((r) => r.state?.lastError),
      [undefined, undefined],
    );
    const staged = rotationStateFromAnnotations(cm()!.metadata.annotations)!;
    assert.equal(staged.phase, 'propagate');
    assert.deepEqual(
      staged.history.map((h) => h.phase),
      ['stage', 'propagate'],
    );
    assert.equal(anchors(), 2);
  });

  it('a stale write is a conflict, never a lost update', async () => {
    const backend = new KubeRotationBackend(api, settings, clock);
    const snap = await backend.read();
    const rc = controller('x');
    await rc.start();
    await assert.rejects(
      backend.write(snap.version, snap.bundlePem, (await backend.read()).state!),
      (e) => isMeshidError(e, 'ERR_ROTATION_CONFLICT'),
    );
  });

  it('cert-manager renews the root in place: sync keeps the live root, starts a rotation, and the issuer follows only after staging', async () => {
    const root = server.get({
      apiVersion: 'cert-manager.io/v1',
      kind: 'Certificate',
      namespace: NS,
      name: 'linkerd-trust-anchor',
    })!;
    server.updateStatus({
      ...root,
      status: { ...(root['status'] as object), conditions: [{ type: 'Issuing', status: 'True' }] },
    });
    await sim.reconcile();
    const rotation = controller('sync');
    const s = sync(rotation);
    assert.equal(await s.reconcile(), 'written', 'the renewed root joins the live one');
    assert.equal(anchors(), 2, "the live issuer's root is never dropped");
    let state = rotationStateFromAnnotations(cm()!.metadata.annotations)!;
    assert.equal(state.plannedRoot, 'linkerd-trust-anchor', 'in place');
    for (let i = 0; i < 20 && state.phase !== 'drain'; i++) {
      await s.reconcile();
      await sim.reconcile();
      state = rotationStateFromAnnotations(cm()!.metadata.annotations)!;
    }
    assert.equal(state.phase, 'drain');
    const chain = await issuerChain(api, NS, 'linkerd-identity-issuer');
    const bundle = parseAnchors(cm()!.data!['ca-bundle.crt']!, { now: Date.now() });
    assert.equal(anchorOfChain(chain, bundle.anchors)?.fingerprint, state.newRoot!.fingerprint);
    clock.advance(13_000);
    for (let i = 0; i < 5 && state.phase !== 'done'; i++) {
      await s.reconcile();
      state = rotationStateFromAnnotations(cm()!.metadata.annotations)!;
    }
    assert.equal(state.phase, 'done');
    assert.equal(anchors(), 1);
    assert.ok(
      server.get({ apiVersion: 'v1', kind: 'Secret', namespace: NS, name: 'linkerd-trust-anchor' }),
      'in place: the root Secret stays',
    );
    assert.equal(await s.reconcile(), 'unchanged');
  });

  it("sync refuses a bundle that would drop the live issuer's anchor, and writes nothing", async () => {
    // The issuer Secret is replaced by one from an unrelated CA (no anchor known for it).
    const other = new CertManagerSimulator({ api: server, clock });
    server.create({
      apiVersion: 'cert-manager.io/v1',
      kind: 'Issuer',
      metadata: { name: 'rogue-ss', namespace: NS },
      spec: { selfSigned: {} },
    });
    server.create({
      apiVersion: 'cert-manager.io/v1',
      kind: 'Certificate',
      metadata: { name: 'rogue', namespace: NS },
      spec: {
        secretName: 'linkerd-identity-issuer',
        isCA: true,
        commonName: 'rogue',
        issuerRef: { name: 'rogue-ss', kind: 'Issuer' },
      },
    });
    await other.reconcile();
    const before = cm()!.metadata.resourceVersion;
    await assert.rejects(
      sync().reconcile(),
      (e) =>
        isMeshidError(e, 'ERR_ROTATION_REFUSED') &&
        /live issuer chains neither to the current root/.test(e.message),
    );
    assert.equal(cm()!.metadata.resourceVersion, before);
  });

  it('observes meshed pods through their admin /identity at the pod IP', async () => {
    const admin = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' }).end(
        JSON.stringify({
          trustAnchors: { fingerprint: 'f'.repeat(64) },
          certificate: { notBefore: '2026-01-01T00:00:00Z' },
        }),
      );
    });
    admin.listen(0, '127.0.0.1');
    await once(admin, 'listening');
    try {
      const port = (admin.address() as AddressInfo).port;
      server.createNamespace('emojivoto');
      for (const [name, phase, ip] of [
        ['web-0', 'Running', '127.0.0.1'],
        ['web-1', 'Pending', ''],
        ['web-2', 'Running', ''],
      ] as const) {
        const pod = server.createPod('emojivoto', name, { labels: { 'meshid.io/proxy': 'true' } });
        server.updateStatus({ ...pod, status: { phase, ...(ip === '' ? {} : { podIP: ip }) } });
      }
      server.createPod('emojivoto', 'unmeshed');
      const seen = await podObserver(api, 'meshid.io/proxy=true', port).observe(
        new AbortController().signal,
      );
      assert.deepEqual(
        seen.map((o) => [o.name, o.bundleFingerprint, o.error]),
        [
          ['emojivoto/web-0', 'f'.repeat(64), undefined],
          ['emojivoto/web-2', undefined, 'no pod IP'],
        ],
      );
    } finally {
      admin.close();
    }
  });
});
