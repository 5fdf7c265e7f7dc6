/**
 * The anchors as ClusterTrustBundles, against the Kubernetes API test server (a test double
 * written to the published API, not a cluster) through @kubernetes/client-node, as the installed
 * `meshid-trust` ServiceAccount, so the rendered RBAC (attest on the signer included) is what
 * allows or refuses every call: the API's own rules for the kind, publishing live and canary,
 * following the ConfigMap, a rotation's propagate step, someone else's bundle, a cluster that does
 * not serve the API, and `meshid trust sync --once`.
 */
import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeApiError, openKubeClient, parseAnchors } from '../../core/index.js';
import type { KubeClient } from '../../core/index.js';
import type { ManualClock } from '../../core/clock.js';
import { clusterTrustBundles } from '../../cli/trust-kube.js';
import {
  ClusterTrustBundleController,
  ROTATION_ANNOTATION,
  TRUST_BUNDLE_ROLE_LABEL,
  clusterTrustBundleCopiesOf,
  trustKubeApi,
} from '../../trust-bundle/index.js';
import type { TrustKubeApi } from '../../trust-bundle/index.js';
import { applyCertManagerInstall } from '../support/cert-manager-install.js';
import {
  CLUSTER_TRUST_BUNDLE_RESOURCE,
  startKubeApiServer,
} from '../support/kube-api-server/index.js';
import type { KubeApiServer, KubeObject } from '../support/kube-api-server/index.js';
import {
  KEY,
  NAME,
  NS,
  stagedRotation,
  startTrustCluster,
  trustConfig,
} from '../support/trust-cluster.js';
import type { ConfigMap, TrustCluster } from '../support/trust-cluster.js';
import { createRootCa } from '../../core/pki.js';

const SIGNER = 'meshid.io/workload-identity';
const LIVE = 'meshid.io:workload-identity:live';
const CANARY = 'meshid.io:workload-identity:canary';
const CTB = 'certificates.k8s.io/v1beta1';
const ctbSettings = {
  signerName: SIGNER,
  namespace: NS,
  trustAnchorsConfigMap: NAME,
  trustAnchorsKey: KEY,
};

type Ctb = KubeObject & { spec: { signerName?: string; trustBundle: string } };

/** A fresh self-signed certificate: a CA (an anchor) unless `isCa` is false. */
async function cert(isCa = true): Promise<string> {
  const now = Date.now();
  return (
    await createRootCa({
      commonName: isCa ? 'another.root' : 'not.a.ca',
      notBefore: now - 60_000,
      notAfter: now + 86_400_000,
      isCa,
      ...(isCa ? {} : { keyUsage: ['digitalSignature'] as const }),
    })
  ).certificatePem;
}

/** The API's refusal of `write`: its HTTP status and message. */
async function refusal(write: Promise<unknown>): Promise<{ status: number; message: string }> {
  try {
    await write;
  } catch (err) {
    assert.ok(err instanceof KubeApiError, String(err));
    return { status: err.status, message: err.message };
  }
  assert.fail('the API accepted the write');
}

describe('anchors as ClusterTrustBundles (Kubernetes API test server, installed RBAC)', function () {
  this.timeout(60_000);
  let t: TrustCluster;
  let server: KubeApiServer;
  let kube: KubeClient;
  let api: TrustKubeApi;
  let clock: ManualClock;
  let log: TrustCluster['log'];

  const ctb = (name: string): Ctb | undefined =>
    server.get<Ctb>({ apiVersion: CTB, kind: 'ClusterTrustBundle', name });
  const configMap = (): ConfigMap =>
    server.get<ConfigMap>({ apiVersion: 'v1', kind: 'ConfigMap', namespace: NS, name: NAME })!;
  const source = (): string => configMap().data![KEY]!;
  const fingerprints = (pem: string): string[] =>
    parseAnchors(pem, { now: clock.now() })
      .anchors.map((a) => a.fingerprint)
      .sort();
  const controller = (): ClusterTrustBundleController =>
    new ClusterTrustBundleController({
      api,
      settings: ctbSettings,
      logger: log.logger,
      now: () => clock.now(),
    });

  beforeEach(async () => {
    t = await startTrustCluster({ resources: [CLUSTER_TRUST_BUNDLE_RESOURCE] });
    ({ server, kube, api, clock, log } = t);
  });
  afterEach(() => t.stop());

  describe('the API rules the test double keeps', () => {
    const bundle = (name: string, trustBundle: string, signerName: string | null = SIGNER) => ({
      apiVersion: CTB,
      kind: 'ClusterTrustBundle',
      metadata: { name },
      spec: { ...(signerName === null ? {} : { signerName }), trustBundle },
    });

    it('refuses a name without the signer prefix, a non-CA certificate, a duplicate, a header, an empty bundle (422)', async () => {
      const root = source();
      const leaf = await cert(false);
      const cases: [string, ReturnType<typeof bundle>, string][] = [
        [
          'prefix',
          bundle('meshid-live', root),
          `must be named with prefix meshid.io:workload-identity:`,
        ],
        ['no signer, colon', bundle('a:b', root, null), 'must not have ":" in its name'],
        ['non-CA', bundle(`${LIVE}x`, leaf), 'entry 0 does not have the CA bit set'],
        ['duplicate', bundle(`${LIVE}x`, root + root), 'duplicate trust anchor (indices [0 1])'],
        [
          'header',
          bundle(`${LIVE}x`, root.replace('-----\n', '-----\nProc-Type: 4,ENCRYPTED\n\n')),
          'entry 0 has PEM block headers',
        ],
        ['empty', bundle(`${LIVE}x`, 'not pem'), 'at least one trust anchor must be provided'],
      ];
      // As cluster-admin: only the validation decides.
      const admin = await openKubeClient(server.kubeConfig());
      try {
        for (const [what, obj, words] of cases) {
          const r = await refusal(admin.create(obj));
          assert.equal(r.status, 422, what);
          assert.match(r.message, new RegExp(words.replace(/[[\]().*+?]/g, '\\$&')), what);
        }
        assert.equal(ctb(`${LIVE}x`), undefined);
      } finally {
        admin.close();
      }
    });

    it('refuses a bundle for a signer the writer may not attest (403), and a signerName change (422)', async () => {
      // meshid-trust may attest meshid.io/workload-identity only.
      const other = await refusal(
        kube.create(bundle('example.com:other:live', source(), 'example.com/other')),
      );
      assert.equal(other.status, 403);
      assert.match(other.message, /not permitted to attest for signerName "example.com\/other"/);
      // A ServiceAccount without attest (the CA's) cannot publish meshid's anchors either.
      const { token } = await server.mintToken({
        namespace: NS,
        serviceAccount: 'linkerd-identity',
        expirationSeconds: 3600,
      });
      const ca = await openKubeClient(server.kubeConfig({ token }));
      try {
        assert.equal((await refusal(ca.create(bundle(LIVE, source())))).status, 403);
      } finally {
        ca.close();
      }
      await controller().converge();
      const live = ctb(LIVE)!;
      const moved = await refusal(
        kube.replace({
          ...live,
          apiVersion: CTB,
          kind: 'ClusterTrustBundle',
          metadata: { ...live.metadata, name: LIVE },
          spec: { ...live.spec, signerName: 'meshid.io/other' },
        }),
      );
      assert.equal(moved.status, 422);
      assert.match(moved.message, /field is immutable/);
    });
  });

  it('publishes live and canary with the anchors of the ConfigMap, labelled, and follows it', async () => {
    const c = controller();
    assert.deepEqual(await c.converge(), {
      created: ['live', 'canary'],
      updated: [],
      foreign: [],
      conflicted: false,
      sourceFound: true,
    });
    for (const [name, role] of [
      [LIVE, 'live'],
      [CANARY, 'canary'],
    ] as const) {
      const o = ctb(name)!;
      assert.equal(o.spec.signerName, SIGNER);
      assert.equal(o.metadata.labels?.[TRUST_BUNDLE_ROLE_LABEL], role);
      assert.deepEqual(fingerprints(o.spec.trustBundle), fingerprints(source()));
    }
    // Nothing to do on a second pass.
    const again = await c.converge();
    assert.deepEqual([again.created, again.updated], [[], []]);
    // A new anchor in the ConfigMap reaches both bundles on the next pass.
    const extra = await cert();
    const cm = configMap();
    server.update({ ...cm, data: { [KEY]: source() + extra } } as KubeObject);
    assert.deepEqual((await c.converge()).updated, ['live', 'canary']);
    assert.equal(fingerprints(ctb(LIVE)!.spec.trustBundle).length, 2);
    // An edit of a bundle by hand is undone.
    const live = ctb(LIVE)!;
    server.update({ ...live, spec: { ...live.spec, trustBundle: extra } } as KubeObject);
    assert.deepEqual((await c.converge()).updated, ['live']);
    assert.deepEqual(fingerprints(ctb(LIVE)!.spec.trustBundle), fingerprints(source()));
  });

  it('publishes nothing from an invalid anchors text, and keeps what the bundles hold', async () => {
    const c = controller();
    await c.converge();
    const before = ctb(LIVE)!.spec.trustBundle;
    const cm = configMap();
    server.update({
      ...cm,
      data: { [KEY]: await cert(false) },
    } as KubeObject);
    const r = await c.converge();
    assert.equal(r.sourceFound, false);
    assert.equal(ctb(LIVE)!.spec.trustBundle, before);
    assert.ok(
      log.lines.some((l) =>
        String(l['msg']).includes('the anchors ConfigMap does not hold a valid bundle'),
      ),
    );
  });

  it("leaves a bundle of meshid's name that is not meshid's alone, and says so once", async () => {
    const admin = await openKubeClient(server.kubeConfig());
    try {
      await admin.create({
        apiVersion: CTB,
        kind: 'ClusterTrustBundle',
        metadata: { name: CANARY },
        spec: { signerName: SIGNER, trustBundle: await cert() },
      });
    } finally {
      admin.close();
    }
    const theirs = ctb(CANARY)!.spec.trustBundle;
    const c = controller();
    assert.deepEqual((await c.converge()).foreign, ['canary']);
    assert.deepEqual((await c.converge()).foreign, ['canary']);
    assert.equal(ctb(CANARY)!.spec.trustBundle, theirs);
    const warnings = log.lines.filter((l) => String(l['msg']).includes('left alone'));
    assert.equal(warnings.length, 1);
    assert.match(String(warnings[0]!['msg']), /meshid\.io:workload-identity:canary/);
  });

  it('a rotation holds in propagate until the live bundle holds the staged anchors; the canary holds the new root only', async () => {
    const c = controller();
    await c.converge();
    const rotation = await stagedRotation(t, clusterTrustBundleCopiesOf(c));
    // The live bundle cannot be written for now (an API server failing these requests).
    server.failNext({
      method: 'PUT',
      path: /^\/apis\/certificates\.k8s\.io\/v1beta1\/clustertrustbundles\/meshid\.io/,
      times: 1000,
      status: 500,
    });
    let r = await rotation.step();
    assert.equal(r.state?.phase, 'propagate', 'staged');
    r = await rotation.step();
    assert.equal(
      r.advanced,
      false,
      JSON.stringify(server.requests.filter((q) => q.resource === 'clustertrustbundles')),
    );
    assert.equal(r.state?.phase, 'propagate', 'holding while live is behind');
    assert.match(
      r.state?.waitingFor?.description ?? '',
      /^0 of 1 ClusterTrustBundles hold the staged bundle \(waiting for ClusterTrustBundle meshid\.io:workload-identity:live/,
    );
    server.clearFaults();
    r = await rotation.step();
    assert.equal(r.state?.phase, 'switch', JSON.stringify(r.state?.waitingFor));
    const staged = source();
    assert.equal(fingerprints(staged).length, 2);
    assert.deepEqual(fingerprints(ctb(LIVE)!.spec.trustBundle), fingerprints(staged));
    const state = JSON.parse(configMap().metadata.annotations![ROTATION_ANNOTATION]!) as {
      newRoot: { fingerprint: string };
    };
    assert.deepEqual(fingerprints(ctb(CANARY)!.spec.trustBundle), [state.newRoot.fingerprint]);
  });

  it('auto: a cluster that does not serve ClusterTrustBundles gets none, with one line saying why; on: required', async () => {
    const plain = await startKubeApiServer({});
    const plainSim = await applyCertManagerInstall(plain, clock);
    const { token } = await plain.mintToken({
      namespace: NS,
      serviceAccount: 'meshid-trust',
      expirationSeconds: 3600,
    });
    const plainKube = await openKubeClient(plain.kubeConfig({ token }));
    try {
      const plainApi = trustKubeApi(plainKube);
      const made = await clusterTrustBundles(trustConfig, plainApi, {
        logger: log.logger,
        clock,
      });
      assert.equal(made, undefined);
      assert.ok(
        log.lines.some((l) =>
          String(l['msg']).startsWith('ClusterTrustBundles are not served by this cluster'),
        ),
      );
      // Served: a controller.
      assert.ok(
        (await clusterTrustBundles(trustConfig, api, { logger: log.logger, clock })) !== undefined,
      );
      const off = { ...trustConfig, clusterTrustBundles: 'off' as const };
      assert.equal(await clusterTrustBundles(off, api, { logger: log.logger, clock }), undefined);
    } finally {
      plainKube.close();
      await plainSim.stop();
      await plain.stop();
    }
  });

  it('`meshid trust sync --once` publishes them, as the installed Deployment runs it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshid-ctb-'));
    try {
      const kubeconfig = join(dir, 'kubeconfig');
      writeFileSync(kubeconfig, server.kubeconfigYaml());
      const child = spawn(
        process.execPath,
        ['bin/meshid.js', 'trust', 'sync', '--once', '--kubeconfig', kubeconfig, '--namespace', NS],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
      assert.equal(code, 0, stderr);
      assert.match(stdout, /ClusterTrustBundles created live, canary/);
      assert.deepEqual(fingerprints(ctb(LIVE)!.spec.trustBundle), fingerprints(source()));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
