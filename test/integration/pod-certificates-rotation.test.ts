/**
 * Trust-anchor rotation end to end with ClusterTrustBundles and pod-certificate proxies, on the
 * Kubernetes API test double (PodCertificateRequests as 1.36 serves them, ClusterTrustBundles)
 * with the cert-manager simulator: `meshid install --cert-manager --pod-certificates` applied,
 * `meshid trust sync` publishing the anchors ConfigMap and the live/canary ClusterTrustBundles,
 * `meshid ca --pod-certificates`, and two pods on two simulated kubelets, each with the projected
 * volume the injector gives a `pod-certificate` proxy (the kubelet writes the credential bundle,
 * and the live bundle's anchors the way a kubelet does: shuffled, so one node's file lists them
 * in another order than the ConfigMap), each running a real `meshid proxy --identity-source
 * pod-certificate` in front of an HTTP app, calling the other's app through its route.
 *
 * While a client loop makes a new connection (so a new mTLS handshake between the proxies)
 * through one proxy or the other without pause, `meshid trust rotate` takes root A to root B:
 * stage (the live bundle gets B, the kubelets rewrite the trust file, the proxies reload it),
 * propagate, switch (the issuer moves to B), drain (the kubelets refresh the pods' certificates
 * at their beginRefreshAt, reached by moving the simulated kubelets' clock forward, and the new
 * leaves chain to B), retire (A leaves the bundles). Every handshake is counted, by the client and
 * by both proxies' own metrics; none fails.
 *
 * Short leaves (`--cert-lifetime 6s`) keep drain's wait short; the pod certificates themselves
 * live an hour (the API's floor), which is why their refresh is driven by the kubelets' clock.
 */
import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { bundleFingerprint, parseAnchors, systemClock } from '../../core/index.js';
import { renderInstall } from '../../cli/install.js';
import { rotationStateFromAnnotations } from '../../trust-bundle/index.js';
import type { RotationState } from '../../trust-bundle/index.js';
import { podCertificateVolume } from '../../webhooks/identity-source.js';
import {
  adminGet,
  runMeshid,
  startCaProcess,
  startMeshid,
  waitFor,
} from '../support/ca-process.js';
import type { CaProcess, MeshidProcess } from '../support/ca-process.js';
import { CertManagerSimulator } from '../support/cert-manager-sim.js';
import { serviceAccountKubeconfig } from '../support/kubeconfig.js';
import {
  CLUSTER_TRUST_BUNDLE_RESOURCE,
  startKubeApiServer,
} from '../support/kube-api-server/index.js';
import type { KubeApiServer, KubeObject } from '../support/kube-api-server/index.js';
import { startKubeletSim } from '../support/kubelet-sim.js';
import type { KubeletSim } from '../support/kubelet-sim.js';
import { freePort } from '../support/proxy-process.js';
import { idOf } from '../support/state.js';

const NS = 'linkerd';
const SIGNER = 'meshid.io/workload-identity';
const LIFETIME = ['--cert-lifetime', '6s', '--clock-skew', '1s'];
const HOUR = 3_600_000;

/** One pod: its kubelet, its volume, its app and its proxy. */
interface MeshedPod {
  readonly sa: string;
  readonly id: string;
  readonly kubelet: KubeletSim;
  readonly dir: string;
  readonly app: Server;
  /** Started once both pods' volumes are written (each routes to the other's inbound). */
  proxy?: MeshidProcess;
  admin: { host: string; port: number };
  inboundPort: number;
  routePort: number;
}

interface IdentityBody {
  identity: string;
  certificate?: { chainPem: string; notBefore: string };
  trustAnchors: { fingerprint: string; canonicalFingerprint?: string; subjects: string[] };
}

describe('pod certificates: trust-anchor rotation with ClusterTrustBundles and pod-certificate proxies, zero failed handshakes', function () {
  // Bounded waits below; an idle machine needs well under a minute.
  this.timeout(300_000);
  let dir: string;
  let api: KubeApiServer;
  let sim: CertManagerSimulator;
  let ca: CaProcess;
  let syncKubeconfig: string;
  /** How far the simulated kubelets' clock runs ahead of the wall clock. */
  let kubeletAhead = 0;
  const pods: MeshedPod[] = [];

  const configMap = (): (KubeObject & { data?: Record<string, string> }) | undefined =>
    api.get({
      apiVersion: 'v1',
      kind: 'ConfigMap',
      namespace: NS,
      name: 'linkerd-identity-trust-roots',
    });
  const rotation = (): RotationState | undefined =>
    rotationStateFromAnnotations(configMap()?.metadata.annotations);
  const ctb = (role: string): string =>
    (
      api.get({
        apiVersion: 'certificates.k8s.io/v1beta1',
        kind: 'ClusterTrustBundle',
        name: `meshid.io:workload-identity:${role}`,
      })?.['spec'] as { trustBundle: string }
    ).trustBundle;
  const identityOf = async (p: MeshedPod): Promise<IdentityBody> =>
    JSON.parse((await adminGet(p.admin, '/identity')).body) as IdentityBody;
  const fingerprints = (pem: string): string[] =>
    parseAnchors(pem, { now: Date.now() })
      .anchors.map((a) => a.fingerprint)
      .sort();

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshid-podcert-rotate-'));
    api = await startKubeApiServer({
      namespaces: ['emojivoto'],
      podCertificates: '1.36',
      resources: [CLUSTER_TRUST_BUNDLE_RESOURCE],
      minTokenExpirationSeconds: 60,
    });
    sim = new CertManagerSimulator({ api, clock: systemClock, intervalMs: 50 });
    sim.start();
    const yaml = renderInstall({
      argv: ['--cert-manager', '--pod-certificates', ...LIFETIME],
      env: {},
      now: Date.now(),
    });
    for (const doc of parseAllDocuments(yaml)) {
      const obj = doc.toJS() as KubeObject | null;
      if (obj !== null) api.create(obj);
    }
    await waitFor('cert-manager to issue the root and the issuer', () =>
      api.get({ apiVersion: 'v1', kind: 'Secret', namespace: NS, name: 'linkerd-identity-issuer' })
        ? true
        : undefined,
    );
    syncKubeconfig = await serviceAccountKubeconfig(api, dir, NS, 'meshid-trust');
    const sync = await runMeshid([
      ...['trust', 'sync', '--once', '--kubeconfig', syncKubeconfig, '--log-level', 'warn'],
    ]);
    assert.equal(sync.code, 0, sync.stderr);
    assert.deepEqual(fingerprints(ctb('live')), fingerprints(configMap()!.data!['ca-bundle.crt']!));
    ca = await startCaProcess([
      ...['--kubeconfig', await serviceAccountKubeconfig(api, dir, NS, 'linkerd-identity')],
      ...['--namespace', NS, '--issuer-secret', 'linkerd-identity-issuer'],
      ...['--trust-anchors-config-map', 'linkerd-identity-trust-roots', '--workers', '1'],
      ...['--pod-certificates', ...LIFETIME],
    ]);

    // Two nodes; their kubelets order a two-anchor file differently (the kubelet shuffles).
    const specs = [
      { sa: 'web', node: 'node-a', random: () => 0 },
      { sa: 'voting', node: 'node-b', random: () => 0.999 },
    ];
    const ports = await Promise.all(specs.flatMap(() => [freePort(), freePort()]));
    for (const [i, s] of specs.entries()) {
      const kubelet = startKubeletSim({
        api,
        nodeName: s.node,
        version: '1.36',
        dir: join(dir, s.node),
        now: () => Date.now() + kubeletAhead,
        random: s.random,
      });
      api.createServiceAccount('emojivoto', s.sa);
      const pod = api.create<KubeObject>({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { namespace: 'emojivoto', name: `${s.sa}-0` },
        spec: {
          nodeName: s.node,
          serviceAccountName: s.sa,
          automountServiceAccountToken: false,
          containers: [{ name: 'app', image: 'app:test' }],
          // What the injector gives a pod-certificate proxy.
          volumes: [podCertificateVolume('meshid-pod-certificate', SIGNER)],
        },
      });
      const [volume] = await kubelet.mountPod(pod);
      const app = createServer((req, res) =>
        res.end(`hello ${String(req.headers['l5d-client-id'])}`),
      );
      app.listen(0, '127.0.0.1');
      await once(app, 'listening');
      pods.push({
        sa: s.sa,
        id: idOf('emojivoto', s.sa),
        kubelet,
        dir: volume!.dir,
        app,
        admin: { host: '127.0.0.1', port: 0 },
        inboundPort: ports[2 * i]!,
        routePort: ports[2 * i + 1]!,
      });
    }
    await Promise.all(pods.map((p) => p.kubelet.settled()));
    for (const [i, p] of pods.entries()) {
      const peer = pods[1 - i]!;
      p.proxy = await startMeshid('proxy', [
        ...['--identity-source', 'pod-certificate'],
        ...['--credential-bundle', join(p.dir, 'credentialbundle.pem')],
        ...['--trust-anchors', join(p.dir, 'ca-bundle.crt'), '--local-identity', p.id],
        ...['--admin', '127.0.0.1:0', '--inbound', `127.0.0.1:${p.inboundPort}`],
        ...['--app', `127.0.0.1:${(p.app.address() as AddressInfo).port}`],
        ...['--route', `127.0.0.1:${p.routePort}=127.0.0.1:${peer.inboundPort}@${peer.id}`],
      ]);
      p.admin.port = Number(String(p.proxy.listening['admin']).split(':').pop());
    }
    for (const p of pods)
      await waitFor(`${p.sa}'s proxy to be ready`, async () =>
        (await adminGet(p.admin, '/ready')).status === 200 ? true : undefined,
      );
  });

  after(async () => {
    for (const p of pods) {
      await p.proxy?.stop().catch(() => undefined);
      p.kubelet.close();
      p.app.close();
    }
    await ca?.stop().catch(() => undefined);
    await sim?.stop();
    await api?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  /** One request from `from`'s app to the other's, through both proxies: a new handshake. */
  function call(from: MeshedPod): Promise<void> {
    return new Promise((resolve, reject) => {
      const socket = connect(from.routePort, '127.0.0.1');
      let text = '';
      socket.setTimeout(15_000, () => socket.destroy(new Error('timed out')));
      socket.on('connect', () =>
        socket.write('GET / HTTP/1.1\r\nHost: peer\r\nConnection: close\r\n\r\n'),
      );
      socket.on('data', (d: Buffer) => (text += d.toString()));
      socket.on('error', reject);
      socket.on('close', () => {
        if (/^HTTP\/1\.1 200 /.test(text) && text.endsWith(`hello ${from.id}`)) resolve();
        else reject(new Error(`unexpected answer: ${JSON.stringify(text.slice(0, 200))}`));
      });
    });
  }

  /** The proxies' own count of TLS handshakes by result. */
  async function handshakeCounts(): Promise<{ ok: number; failed: number }> {
    const out = { ok: 0, failed: 0 };
    for (const p of pods) {
      const text = (await adminGet(p.admin, '/metrics')).body;
      for (const m of text.matchAll(
        /^meshid_proxy_tls_handshakes_total\{[^}]*result="(ok|failed)"[^}]*\} (\d+)/gm,
      ))
        out[m[1] as 'ok' | 'failed'] += Number(m[2]);
    }
    return out;
  }

  it('rotates root A to B while the two proxies call each other without pause: every handshake succeeds, and both end on leaves from B with A gone from the bundles', async () => {
    const rootA = parseAnchors(configMap()!.data!['ca-bundle.crt']!, { now: Date.now() })
      .anchors[0]!;
    const before = await handshakeCounts();
    assert.equal(before.failed, 0);

    // The client loop: one new connection after another, alternating directions.
    let stop = false;
    const stats = { ok: 0, failed: [] as string[] };
    const loop = (async () => {
      for (let i = 0; !stop; i++) {
        const from = pods[i % 2]!;
        try {
          await call(from);
          stats.ok++;
        } catch (err) {
          stats.failed.push(`${from.sa}: ${(err as Error).message}`);
        }
      }
    })();

    const rotate = runMeshid(
      [
        ...['trust', 'rotate', '--kubeconfig', syncKubeconfig, ...LIFETIME],
        ...['--interval', '100ms', '--log-level', 'warn'],
        ...pods.flatMap((p) => ['--proxy-admin', `http://127.0.0.1:${p.admin.port}`]),
        ...['--ca-address', `127.0.0.1:${ca.address.port}`],
      ],
      {},
      undefined,
      180_000,
    );
    let exited: { code: number; stdout: string; stderr: string } | undefined;
    void rotate.then((r) => (exited = r));
    /** Waits for a phase; fails at once, with its output, if the rotation exits first. */
    const phase = (name: string, ms: number): Promise<true> =>
      waitFor(
        `the rotation to reach ${name}`,
        () => {
          if (rotation()?.phase === name) return true;
          if (exited !== undefined)
            throw new Error(
              `meshid trust rotate exited ${exited.code}: ${exited.stdout}${exited.stderr}`,
            );
          return undefined;
        },
        ms,
      );
    try {
      // Staged: the kubelets rewrite the trust file from the live bundle, in their own order.
      await phase('propagate', 60_000);
      await waitFor(
        'both kubelets to write the two-anchor live bundle',
        async () => {
          const files = await Promise.all(
            pods.map((p) => readFile(join(p.dir, 'ca-bundle.crt'), 'utf8')),
          );
          return files.every((f) => parseAnchors(f, { now: Date.now() }).anchors.length === 2)
            ? files
            : undefined;
        },
        60_000,
      ).then((files) =>
        assert.notEqual(files[0], files[1], 'the two kubelets list the anchors in another order'),
      );
      // Switched: the issuer chains to B. The pods' certificates are refreshed by their
      // kubelets at beginRefreshAt (between 30 and 48 minutes into their hour).
      await phase('drain', 120_000);
      const refreshAt = Math.max(
        ...pods.flatMap((p) => p.kubelet.mounts.map((m) => m.beginRefreshAt)),
      );
      assert.ok(
        refreshAt - Date.now() > HOUR / 3,
        'pod certificates are not due before 20 minutes',
      );
      kubeletAhead = refreshAt - Date.now() + 1000;
      for (const p of pods) assert.equal(await p.kubelet.refreshDue(), 1, p.sa);
      const done = await rotate;
      assert.equal(done.code, 0, done.stderr);
      assert.match(done.stdout, /done: old root retired/);
      // Retired: both kubelets rewrite the trust file with B alone, and both proxies load it.
      const finalText = configMap()!.data!['ca-bundle.crt']!;
      await waitFor(
        'both proxies to load the bundle without A',
        async () => {
          const ids = await Promise.all(pods.map(identityOf));
          if (ids.every((id) => id.trustAnchors.subjects.length === 1)) return true;
          throw new Error(
            `anchors held: ${JSON.stringify(ids.map((id) => id.trustAnchors))}; files: ${JSON.stringify(
              await Promise.all(
                pods.map(async (p) =>
                  fingerprints(await readFile(join(p.dir, 'ca-bundle.crt'), 'utf8')),
                ),
              ),
            )}; live: ${JSON.stringify(fingerprints(ctb('live')))}; proxy logs: ${pods
              .flatMap((p) =>
                (p.proxy?.lines ?? []).filter((l) => /anchor|bundle|refused/i.test(l)),
              )
              .join('\n')}`,
          );
        },
        60_000,
      );
      // A few more calls on the final state, then stop.
      const target = stats.ok + 10;
      await waitFor('more calls after the retire', () => (stats.ok >= target ? true : undefined));
      stop = true;
      await loop;

      const state = rotation()!;
      assert.equal(state.phase, 'done');
      assert.deepEqual(
        state.history.map((h) => h.phase),
        ['stage', 'propagate', 'switch', 'drain', 'retire', 'done'],
      );
      const rootB = parseAnchors(finalText, { now: Date.now() }).anchors;
      assert.deepEqual(
        rootB.map((a) => a.fingerprint),
        [state.newRoot!.fingerprint],
      );
      assert.notEqual(state.newRoot!.fingerprint, rootA.fingerprint);
      // A is gone from both ClusterTrustBundles and from both pods' trust files.
      for (const role of ['live', 'canary'])
        assert.deepEqual(fingerprints(ctb(role)), [state.newRoot!.fingerprint], role);
      for (const p of pods) {
        const file = await readFile(join(p.dir, 'ca-bundle.crt'), 'utf8');
        assert.deepEqual(fingerprints(file), [state.newRoot!.fingerprint], p.sa);
        // The proxy holds a leaf from the refreshed request, chained to B.
        const id = await identityOf(p);
        assert.equal(id.trustAnchors.fingerprint, bundleFingerprint(file));
        const [leaf, issuer] = [
          ...id.certificate!.chainPem.matchAll(
            /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g,
          ),
        ].map((m) => new X509Certificate(m[0]));
        const root = new X509Certificate(rootB[0]!.der);
        assert.ok(leaf!.verify(issuer!.publicKey), `${p.sa}: the leaf is the issuer's`);
        assert.ok(issuer!.verify(root.publicKey), `${p.sa}: the issuer chains to B`);
        assert.ok(!issuer!.verify(new X509Certificate(rootA.der).publicKey));
        assert.equal(p.kubelet.mounts[0]!.generation, 2, `${p.sa}: refreshed once`);
      }
    } finally {
      stop = true;
      await loop;
    }
    // Zero failures, by the client and by both proxies (each call is one handshake on each side).
    assert.deepEqual(stats.failed, []);
    assert.ok(stats.ok >= 20, `only ${stats.ok} calls`);
    const after = await handshakeCounts();
    assert.equal(after.failed, 0);
    assert.ok(after.ok - before.ok >= 2 * stats.ok, JSON.stringify({ before, after, stats }));
  });
});
