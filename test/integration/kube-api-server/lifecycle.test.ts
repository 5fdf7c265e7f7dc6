/**
 * Lifecycle of the test server: kubeconfig files, pause/resume on the same port with the same
 * state and keys, stop ending watches, fault injection, the request log, and the standalone entry.
 */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import {
  AuthenticationV1Api,
  CoreV1Api,
  KubeConfig,
  VersionApi,
  Watch,
} from '@kubernetes/client-node';
import { parse } from 'yaml';
import { startKubeApiServer } from '../../support/kube-api-server/index.js';
import type { KubeApiServer } from '../../support/kube-api-server/index.js';
import { statusOf, waitFor } from './helpers.js';

describe('kube-api-server: lifecycle', () => {
  let api: KubeApiServer;
  let dir: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kube-api-'));
  });
  beforeEach(async () => {
    api = await startKubeApiServer({ namespaces: ['linkerd'] });
  });
  afterEach(async () => {
    await api.stop();
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('writes a kubeconfig that KubeConfig.loadFromFile uses, with the CA data and a chosen token', async () => {
    const path = join(dir, 'kubeconfig');
    const { token } = await api.mintToken({
      namespace: 'linkerd',
      serviceAccount: 'linkerd-identity',
    });
    await api.writeKubeconfig(path, { token, namespace: 'linkerd' });
    const doc = parse(await readFile(path, 'utf8')) as {
      clusters: { cluster: { server: string; 'certificate-authority-data': string } }[];
      contexts: { context: { namespace: string } }[];
    };
    assert.equal(doc.clusters[0]!.cluster.server, api.url);
    assert.equal(
      Buffer.from(doc.clusters[0]!.cluster['certificate-authority-data'], 'base64').toString(),
      api.caPem,
    );
    assert.equal(doc.contexts[0]!.context.namespace, 'linkerd');
    const kc = new KubeConfig();
    kc.loadFromFile(path);
    const me = await kc.makeApiClient(AuthenticationV1Api).createSelfSubjectReview({ body: {} });
    assert.equal(me.status?.userInfo?.username, 'system:serviceaccount:linkerd:linkerd-identity');
    const v = await kc.makeApiClient(VersionApi).getCode();
    assert.equal(v.major, '1');
  });

  it('pauses and resumes on the same port with the same objects and signing keys', async () => {
    const core = api.kubeConfig().makeApiClient(CoreV1Api);
    await core.createNamespacedConfigMap({
      namespace: 'linkerd',
      body: { metadata: { name: 'kept' }, data: { a: '1' } },
    });
    const { token } = await api.mintToken({
      namespace: 'linkerd',
      serviceAccount: 'web',
      audiences: ['identity.l5d.io'],
    });
    const port = api.port;
    await api.pause();
    const down = await core.readNamespacedConfigMap({ namespace: 'linkerd', name: 'kept' }).then(
      () => undefined,
      (e: Error & { code?: string }) => e,
    );
    assert.ok(down instanceof Error, 'requests fail while paused');
    await api.resume();
    assert.equal(api.port, port);
    const cm = await core.readNamespacedConfigMap({ namespace: 'linkerd', name: 'kept' });
    assert.equal(cm.data?.['a'], '1');
    const review = await api
      .kubeConfig()
      .makeApiClient(AuthenticationV1Api)
      .createTokenReview({
        body: { spec: { token, audiences: ['identity.l5d.io'] } },
      });
    assert.equal(review.status?.authenticated, true, 'tokens minted before the pause still verify');
  });

  it('ends open watch streams on pause so clients see the connection close', async () => {
    let ended = false;
    const c = await new Watch(api.kubeConfig()).watch(
      '/api/v1/namespaces/linkerd/configmaps',
      {},
      () => undefined,
      () => {
        ended = true;
      },
    );
    try {
      await waitFor(() => api.openWatches === 1, 'the watch');
      await api.pause();
      await waitFor(() => ended, 'the client to see the watch end');
      assert.equal(api.openWatches, 0);
      await api.resume();
    } finally {
      c.abort();
    }
  });

  it('injects faults: N failures with a Status, a delay, a cut connection', async () => {
    const core = api.kubeConfig().makeApiClient(CoreV1Api);
    api.failNext({
      method: 'GET',
      path: '/api/v1/namespaces/linkerd/configmaps/kube-root-ca.crt',
      status: 503,
      times: 2,
    });
    for (let i = 0; i < 2; i++) {
      const { code, body } = await statusOf(
        core.readNamespacedConfigMap({ namespace: 'linkerd', name: 'kube-root-ca.crt' }),
      );
      assert.equal(code, 503);
      assert.equal(body['reason'], 'ServiceUnavailable');
    }
    await core.readNamespacedConfigMap({ namespace: 'linkerd', name: 'kube-root-ca.crt' });

    api.failNext({ path: /tokenreviews$/, delayMs: 200 });
    // A request on another path does not consume the fault: the TokenReview below is still delayed.
    await api.kubeConfig().makeApiClient(AuthenticationV1Api).createSelfSubjectReview({ body: {} });
    const { token } = await api.mintToken({ namespace: 'linkerd', serviceAccount: 'x' });
    const t0 = Date.now();
    await api
      .kubeConfig()
      .makeApiClient(AuthenticationV1Api)
      .createTokenReview({ body: { spec: { token } } });
    assert.ok(Date.now() - t0 >= 190, 'the matching request was delayed');

    api.failNext({ path: '/api/v1/namespaces/linkerd/configmaps', reset: true });
    const cut = await core.listNamespacedConfigMap({ namespace: 'linkerd' }).then(
      () => undefined,
      (e: Error) => e,
    );
    assert.ok(cut instanceof Error);
    await core.listNamespacedConfigMap({ namespace: 'linkerd' });
  });

  it('logs every request with method, path, user, verb, resource and status, and notifies listeners', async () => {
    const seen: string[] = [];
    const off = api.onRequest((e) => seen.push(`${e.verb} ${e.resource} ${e.status}`));
    const core = api.kubeConfig().makeApiClient(CoreV1Api);
    await core.readNamespacedConfigMap({ namespace: 'linkerd', name: 'kube-root-ca.crt' });
    await statusOf(core.readNamespacedConfigMap({ namespace: 'linkerd', name: 'absent' }));
    off();
    await core.listNamespacedConfigMap({ namespace: 'linkerd' });
    assert.deepEqual(seen, ['get configmaps 200', 'get configmaps 404']);
    const last = api.requests[api.requests.length - 1]!;
    assert.equal(last.method, 'GET');
    assert.equal(last.path, '/api/v1/namespaces/linkerd/configmaps');
    assert.equal(last.user, 'kubernetes-admin');
    assert.equal(last.verb, 'list');
  });

  it('runs standalone: writes the kubeconfig, prints one listening line, exits on SIGTERM', async function () {
    this.timeout(30_000);
    const kubeconfig = join(dir, 'standalone.yaml');
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        'test/support/kube-api-server/main.ts',
        '--port',
        '0',
        '--kubeconfig',
        kubeconfig,
        '--namespace',
        'linkerd',
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    try {
      const line = await new Promise<string>((resolve, reject) => {
        createInterface(child.stdout).once('line', resolve);
        child.once('exit', (code) => reject(new Error(`exited with ${String(code)}`)));
      });
      const msg = JSON.parse(line) as { msg: string; url: string };
      assert.equal(msg.msg, 'listening');
      const kc = new KubeConfig();
      kc.loadFromFile(kubeconfig);
      assert.equal(kc.getCurrentCluster()?.server, msg.url);
      const ns = await kc.makeApiClient(CoreV1Api).readNamespace({ name: 'linkerd' });
      assert.equal(ns.status?.phase, 'Active');
      const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      assert.equal(await exited, 0);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });
});
