/**
 * End to end against the Kubernetes API test server (a test double of kube-apiserver) with the
 * cert-manager simulator (a test double of cert-manager): `meshid install --cert-manager`
 * applied, `meshid trust sync` filling the anchors ConfigMap, a real `meshid ca` reading the
 * issuer Secret and the ConfigMap through the API, Certify and mTLS load, and `meshid trust
 * rotate` taking root A to root B, its controller killed mid-rotation and restarted.
 */
import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { systemClock, parseAnchors } from '../../core/index.js';
import { renderInstall } from '../../cli/install.js';
import { rotationStateFromAnnotations } from '../../trust-bundle/index.js';
import type { RotationState } from '../../trust-bundle/index.js';
import { MESHID_BIN, runMeshid, startCaProcess, waitFor } from '../support/ca-process.js';
import type { CaProcess } from '../support/ca-process.js';
import { CertManagerSimulator } from '../support/cert-manager-sim.js';
import { startKubeApiServer } from '../support/kube-api-server/index.js';
import type { KubeApiServer, KubeObject } from '../support/kube-api-server/index.js';
import { finishLoad, startRotationLoad } from '../support/rotation-load.js';
import { idOf } from '../support/state.js';

const NS = 'linkerd';
const LIFETIME = ['--cert-lifetime', '6s', '--clock-skew', '1s'];

describe('meshid trust against the Kubernetes API test server and the cert-manager simulator', function () {
  // Bounded waits below (drain 120 s, the rest of the rotation, the load's finish 90 s); an idle
  // machine needs about a minute.
  this.timeout(420_000);
  let dir: string;
  let api: KubeApiServer;
  let sim: CertManagerSimulator;
  let ca: CaProcess | undefined;
  let admin: string;
  let syncKubeconfig: string;

  const configMap = (): (KubeObject & { data?: Record<string, string> }) | undefined =>
    api.get({
      apiVersion: 'v1',
      kind: 'ConfigMap',
      namespace: NS,
      name: 'linkerd-identity-trust-roots',
    });
  const bundleText = (): string => configMap()?.data?.['ca-bundle.crt'] ?? '';
  const rotation = (): RotationState | undefined =>
    rotationStateFromAnnotations(configMap()?.metadata.annotations);
  const get = (apiVersion: string, kind: string, name: string): KubeObject | undefined =>
    api.get({ apiVersion, kind, namespace: NS, name });

  const sync = (): Promise<{ code: number; stdout: string; stderr: string }> =>
    runMeshid(['trust', 'sync', '--kubeconfig', syncKubeconfig, '--once', '--log-level', 'warn']);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshid-rotate-kube-'));
    api = await startKubeApiServer({ namespaces: ['emojivoto'], minTokenExpirationSeconds: 60 });
    sim = new CertManagerSimulator({ api, clock: systemClock, intervalMs: 50 });
    sim.start();
    const yaml = renderInstall({ argv: ['--cert-manager', ...LIFETIME], env: {}, now: Date.now() });
    for (const doc of parseAllDocuments(yaml)) {
      const obj = doc.toJS() as KubeObject | null;
      if (obj !== null) api.create(obj);
    }
    await waitFor('cert-manager to issue the root and the issuer', () =>
      get('v1', 'Secret', 'linkerd-identity-issuer') !== undefined ? true : undefined,
    );
    admin = join(dir, 'admin-kubeconfig');
    await api.writeKubeconfig(admin);
    // The sync controller as installed: its own ServiceAccount, only the installed Role.
    const { token } = await api.mintToken({
      namespace: NS,
      serviceAccount: 'meshid-trust',
      expirationSeconds: 3600,
    });
    syncKubeconfig = join(dir, 'sync-kubeconfig');
    await api.writeKubeconfig(syncKubeconfig, { token });
  });
  after(async () => {
    await ca?.stop();
    await sim?.stop();
    await api?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('trust sync (as its installed ServiceAccount) fills the anchors ConfigMap from the root Secret, and writes nothing when nothing changed', async () => {
    assert.equal(configMap(), undefined);
    const first = await sync();
    assert.equal(first.code, 0, first.stderr);
    assert.equal(first.stdout, 'sync: written\n');
    const bundle = parseAnchors(bundleText(), { now: Date.now() });
    const rootPem = Buffer.from(
      (get('v1', 'Secret', 'linkerd-trust-anchor')!['data'] as Record<string, string>)['tls.crt']!,
      'base64',
    ).toString();
    assert.equal(bundle.pem, rootPem, 'the bundle is the root cert-manager issued');
    const version = configMap()!.metadata.resourceVersion;
    const second = await sync();
    assert.equal(second.stdout, 'sync: unchanged\n');
    assert.equal(configMap()!.metadata.resourceVersion, version, 'no write without a change');
  });

  it('rotates root A to B under Certify and mTLS load with zero failures, resumes after a controller kill, and retires A last', async () => {
    // The CA as installed: its own ServiceAccount, only the installed RBAC.
    const { token } = await api.mintToken({
      namespace: NS,
      serviceAccount: 'linkerd-identity',
      expirationSeconds: 3600,
    });
    const caKubeconfig = join(dir, 'ca-kubeconfig');
    await api.writeKubeconfig(caKubeconfig, { token });
    ca = await startCaProcess([
      ...['--kubeconfig', caKubeconfig, '--namespace', NS, '--workers', '1'],
      ...[
        '--issuer-secret',
        'linkerd-identity-issuer',
        '--trust-anchors-config-map',
        'linkerd-identity-trust-roots',
      ],
      ...['--token-review-cache-ttl', '0s', ...LIFETIME],
    ]);
    const rootA = parseAnchors(bundleText(), { now: Date.now() }).anchors[0]!;
    const load = await startRotationLoad({
      ca: ca.address,
      // As the kubelet shows a mounted ConfigMap: the current data, read with a lag.
      readBundle: () => Promise.resolve(bundleText()),
      token: async (ns, sa) =>
        (
          await api.mintToken({
            namespace: ns,
            serviceAccount: sa,
            pod: `${sa}-0`,
            audiences: ['identity.l5d.io'],
          })
        ).token,
      namespace: 'emojivoto',
      serviceAccounts: ['web', 'voting'],
      identityOf: idOf,
      renewMs: 1000,
      reloadMs: 250,
      connectMs: 20,
    });
    const rotateArgs = [
      ...[
        'trust',
        'rotate',
        // As the installed sync controller's ServiceAccount: its Role is enough for a rotation.
        '--kubeconfig',
        syncKubeconfig,
        ...LIFETIME,
        '--interval',
        '100ms',
        '--log-level',
        'warn',
      ],
      ...load.adminUrls.flatMap((u) => ['--proxy-admin', u]),
      ...['--ca-address', `127.0.0.1:${ca.address.port}`],
    ];
    try {
      const first = spawn(process.execPath, [MESHID_BIN, ...rotateArgs], { stdio: 'ignore' });
      const exited = once(first, 'exit');
      await waitFor(
        'the rotation to reach drain',
        () => (rotation()?.phase === 'drain' ? true : undefined),
        120_000,
      );
      first.kill('SIGKILL');
      await exited;
      const mid = rotation()!;
      assert.equal(mid.phase, 'drain');
      assert.equal(mid.mode, 'cert-manager');
      assert.equal(
        parseAnchors(bundleText(), { now: Date.now() }).anchors.length,
        2,
        'both roots while draining',
      );
      const planned = mid.plannedRoot!;
      assert.match(planned, /^linkerd-trust-anchor-r[0-9a-f]{8}$/);
      const issuerCert = get('cert-manager.io/v1', 'Certificate', 'linkerd-identity-issuer')!;
      assert.equal((issuerCert['spec'] as { issuerRef: { name: string } }).issuerRef.name, planned);
      assert.ok(get('v1', 'Secret', 'linkerd-trust-anchor'), 'the old root stays until retire');

      const status = await runMeshid(['trust', 'status', '--kubeconfig', admin]);
      assert.equal(status.code, 0, status.stderr);
      assert.match(status.stdout, /phase drain/);
      assert.match(status.stdout, /waiting for: /);

      // The drain waits for renewals, which a loaded machine slows: bounded at 150 s.
      const second = await runMeshid(rotateArgs, {}, undefined, 150_000);
      assert.equal(second.code, 0, second.stderr);
      assert.match(second.stdout, /continuing rotation r[0-9a-f]+ in phase drain/);
      assert.match(second.stdout, /done: old root retired/);
    } catch (err) {
      await load.stop();
      throw err;
    }
    const stats = await finishLoad(load);

    const state = rotation()!;
    assert.equal(state.phase, 'done');
    assert.deepEqual(
      state.history.map((h) => h.phase),
      ['stage', 'propagate', 'switch', 'drain', 'retire', 'done'],
    );
    assert.equal(stats.bundles.length, 3, 'A, then A+B, then B');
    const final = parseAnchors(bundleText(), { now: Date.now() });
    assert.deepEqual(
      final.anchors.map((a) => a.fingerprint),
      [state.newRoot!.fingerprint],
    );
    assert.notEqual(state.newRoot!.fingerprint, rootA.fingerprint);
    // The old root's objects are gone, its key with its Secret.
    assert.equal(get('v1', 'Secret', 'linkerd-trust-anchor'), undefined);
    assert.equal(get('cert-manager.io/v1', 'Certificate', 'linkerd-trust-anchor'), undefined);
    assert.equal(get('cert-manager.io/v1', 'Issuer', 'linkerd-trust-anchor'), undefined);
    // And sync agrees with the result: nothing to write.
    const last = await sync();
    assert.equal(last.stdout, 'sync: unchanged\n', last.stderr);
  });
});
