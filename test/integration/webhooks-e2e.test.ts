/**
 * End to end, from admission to identity, against the Kubernetes API test server (a test double,
 * test/support/kube-api-server) with its webhook admission: everything `meshid install
 * --cert-manager --webhooks` renders is applied, with the configurations' caBundle filled as
 * cert-manager's CA injector would; `meshid ca` and `meshid webhooks` run as real processes
 * under the installed RBAC. A pod created through the API in an opted-in namespace comes out
 * injected; its proxy, run locally the way the kubelet would start the injected container (its
 * args and env, its token from TokenRequest as the projected volume asks, its anchors from the
 * ConfigMap volume), obtains its certificate from the CA. A broken trust-configuration edit is
 * refused with the reason.
 *
 * What is not a cluster here: no kubelet (the test plays it for the one container), no cluster
 * DNS (the CA's Service address in the proxy's env is replaced by the CA process's address, the
 * trust guard is pointed at it with --ca-address, and the webhooks' Service is their process's
 * address), no cert-manager (the test fills caBundle).
 */
import { strict as assert } from 'node:assert';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ApiException, CoreV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import type { V1Container, V1Pod } from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';
import { bundleFingerprint, systemClock } from '../../core/index.js';
import { createIntermediateCa, createRootCa } from '../../core/pki.js';
import type { GeneratedCa } from '../../core/pki.js';
import { renderInstall } from '../../cli/install.js';
import { adminGet, startCaProcess, startMeshid, waitFor } from '../support/ca-process.js';
import type { CaProcess, MeshidProcess } from '../support/ca-process.js';
import { issuerSecret } from '../support/issuer-secret.js';
import { serviceAccountKubeconfig } from '../support/kubeconfig.js';
import { startKubeApiServer } from '../support/kube-api-server/index.js';
import type { KubeApiServer, KubeObject } from '../support/kube-api-server/index.js';
import { DAY, HOUR, writeAnchorsFile } from '../support/state.js';
import { mountServingPair, opensslServingPair, startWebhooksProcess } from '../support/webhooks.js';
import type { WebhooksProcess } from '../support/webhooks.js';
import { emojivotoWeb } from '../unit/webhooks/fixtures/pods.js';

const NS = 'linkerd';
const ANCHORS = 'linkerd-identity-trust-roots';
const WEB = 'web.emojivoto.serviceaccount.identity.linkerd.cluster.local';

/** The API server's refusal of a write: its status code and message. */
async function refusal(p: Promise<unknown>): Promise<{ code: number; message: string }> {
  try {
    await p;
  } catch (err) {
    if (err instanceof ApiException) {
      const body = JSON.parse(String(err.body)) as { message: string };
      return { code: err.code, message: body.message };
    }
    throw err;
  }
  throw new Error('the write was accepted');
}

describe('webhooks end to end: admission through the API server, then identity from the CA', function () {
  this.timeout(120_000);
  let dir: string;
  let api: KubeApiServer;
  let root: GeneratedCa;
  let otherRoot: GeneratedCa;
  let ca: CaProcess;
  let hooks: WebhooksProcess;
  let proxy: MeshidProcess | undefined;
  let core: CoreV1Api;

  before(async () => {
    const anchors = await writeAnchorsFile('meshid-webhooks-e2e-');
    ({ dir, root } = anchors);
    const now = systemClock.now();
    otherRoot = await createRootCa({
      commonName: 'other-root.linkerd.cluster.local',
      notBefore: now - HOUR,
      notAfter: now + 365 * DAY,
    });
    const issuer = await createIntermediateCa({
      issuer: root,
      commonName: 'identity.linkerd.cluster.local',
      notBefore: now - HOUR,
      notAfter: now + 30 * DAY,
      pathLength: 0,
    });
    api = await startKubeApiServer({
      namespaces: ['emojivoto', 'plain'],
      minTokenExpirationSeconds: 60,
    });
    core = api.kubeConfig().makeApiClient(CoreV1Api);

    // The install as kubectl applies it, then what cert-manager would do: the issuer Secret,
    // the webhooks' serving Secret (mounted below as a folder) and caBundle on both configurations.
    const yaml = renderInstall({
      argv: ['--trust-anchors', anchors.file, '--cert-manager', '--webhooks'],
      env: {},
      now,
    });
    const serving = await opensslServingPair();
    const caBundle = Buffer.from(serving.certPem).toString('base64');
    for (const doc of parseAllDocuments(yaml)) {
      const obj = doc.toJS() as
        (KubeObject & { webhooks?: { clientConfig: { caBundle?: string } }[] }) | null;
      if (obj === null) continue;
      for (const w of obj.webhooks ?? []) w.clientConfig.caBundle = caBundle;
      api.create(obj);
    }
    api.create(issuerSecret({ namespace: NS, name: 'linkerd-identity-issuer' }, issuer, root));
    // The anchors in the workload namespace, as a trust-manager Bundle target puts them there.
    api.create({
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: ANCHORS, namespace: 'emojivoto' },
      data: { 'ca-bundle.crt': root.certificatePem },
    } as KubeObject);
    api.createServiceAccount('emojivoto', 'web');

    const kubeconfigFor = (sa: string): Promise<string> =>
      serviceAccountKubeconfig(api, dir, NS, sa);
    ca = await startCaProcess([
      '--kubeconfig',
      await kubeconfigFor('linkerd-identity'),
      '--issuer-secret',
      'linkerd-identity-issuer',
      '--trust-anchors-config-map',
      ANCHORS,
      '--namespace',
      NS,
      '--workers',
      '1',
    ]);
    const tlsDir = join(dir, 'webhooks-tls');
    await mountServingPair(tlsDir, serving);
    hooks = await startWebhooksProcess([
      '--tls-dir',
      tlsDir,
      '--kubeconfig',
      await kubeconfigFor('meshid-webhooks'),
      '--trust-anchors',
      join(dir, 'anchors.pem'),
      // No cluster DNS: the guard reads the live issuer chain from the CA process itself.
      '--ca-address',
      `127.0.0.1:${ca.address.port}`,
      '--proxy-image',
      'registry.example.com/meshid:v0.1.0',
      // Each review's line carries the key exchange of its connection.
      '--log-level',
      'debug',
    ]);
    api.setWebhookServiceResolver((svc) =>
      svc.namespace === NS && svc.name === 'meshid-webhooks' && svc.port === 443
        ? { host: '127.0.0.1', port: hooks.address.port }
        : undefined,
    );
    const ns = api.get({ apiVersion: 'v1', kind: 'Namespace', name: 'emojivoto' })!;
    api.update({
      ...ns,
      metadata: { ...ns.metadata, annotations: { 'meshid.io/inject': 'enabled' } },
    });
  });

  after(async () => {
    await proxy?.stop().catch(() => undefined);
    await hooks?.stop().catch(() => undefined);
    ca?.proc.kill('SIGTERM');
    await api?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  /** The emojivoto web pod as its ReplicaSet sends it, without a pod-level opt-in. */
  function webPod(namespace: string, annotations: Record<string, string> = {}): V1Pod {
    const pod = emojivotoWeb() as unknown as V1Pod & { status?: unknown };
    delete pod.status;
    pod.metadata = { ...pod.metadata, namespace, annotations };
    delete pod.metadata.ownerReferences;
    return pod;
  }

  let injected: V1Pod;

  it('injects a pod created through the API in a namespace that opted in', async () => {
    injected = await core.createNamespacedPod({
      namespace: 'emojivoto',
      body: webPod('emojivoto'),
    });
    const spec = injected.spec!;
    assert.deepEqual(
      spec.containers.map((c) => c.name),
      ['web-svc', 'meshid-proxy'],
    );
    assert.deepEqual(
      spec.volumes!.map((v) => v.name),
      [
        'kube-api-access-x7k2q',
        'meshid-identity-token',
        'meshid-trust-anchors',
        'meshid-proxy-init-xtables-lock',
      ],
    );
    // Transparent mode, the default: proxy-init writes the pod's nat rules first.
    assert.deepEqual(
      spec.initContainers?.map((c) => c.name),
      ['meshid-init'],
    );
    assert.deepEqual(injected.metadata!.annotations, {
      'meshid.io/proxy-version': 'v0.1.0',
      'meshid.io/proxy-image': 'registry.example.com/meshid:v0.1.0',
      'meshid.io/created-by': 'meshid/proxy-injector v0.1.0',
      'meshid.io/trust-root-sha256': bundleFingerprint(root.certificatePem),
    });
    // What is stored is what was returned.
    const stored = await core.readNamespacedPod({
      namespace: 'emojivoto',
      name: injected.metadata!.name!,
    });
    assert.deepEqual(
      stored.spec!.containers.map((c) => c.name),
      ['web-svc', 'meshid-proxy'],
    );
    // The injector read the namespace under its own ServiceAccount (the installed ClusterRole).
    const reads = api.requests.filter((r) => r.resource === 'namespaces' && r.verb === 'get');
    assert.ok(
      reads.some(
        (r) => r.user === 'system:serviceaccount:linkerd:meshid-webhooks' && r.status === 200,
      ),
    );
  });

  it('the API server reaches the webhooks over the post-quantum hybrid X25519MLKEM768, and both ends report it', () => {
    // The client's end: the test double's own TLS connection (node's defaults, as Go's
    // kube-apiserver offers the hybrid first since Go 1.24).
    const calls = api.webhookConnections.filter((c) => c.webhook === 'proxy-injector.meshid.io');
    assert.ok(calls.length >= 1, JSON.stringify(api.webhookConnections));
    for (const c of calls) {
      assert.equal(c.group, 'X25519MLKEM768');
      assert.equal(c.protocol, 'TLSv1.3');
      assert.match(c.cipher, /^TLS_(AES_(128|256)_GCM_SHA(256|384)|CHACHA20_POLY1305_SHA256)$/);
    }
    // The server's end: the webhooks' own "review answered" line for that review.
    const answered = hooks.lines
      .map((l) => JSON.parse(l) as { msg?: string; path?: string; tls?: { group?: string } })
      .filter((r) => r.msg === 'review answered' && r.path === '/inject');
    assert.ok(answered.length >= 1, hooks.lines.join('\n'));
    for (const r of answered) assert.equal(r.tls?.group, 'X25519MLKEM768');
  });

  it('runs the injected proxy as the kubelet would, and it obtains its certificate from the CA', async () => {
    const container = injected.spec!.containers.find((c) => c.name === 'meshid-proxy')!;
    const env = await kubeletEnvironment(injected, container);
    assert.deepEqual(container.args, ['proxy']);
    proxy = await startMeshid(container.args![0]!, container.args!.slice(1), env);
    const admin = {
      host: '127.0.0.1',
      port: Number(String(proxy.listening['admin']).split(':').pop()),
    };
    await waitFor(
      'the injected proxy to be ready',
      async () => ((await adminGet(admin, '/ready')).status === 200 ? true : undefined),
      30_000,
    );
    const id = JSON.parse((await adminGet(admin, '/identity')).body) as {
      identity: string;
      certificate?: { serial: string };
      trustAnchors: { fingerprint: string };
    };
    assert.equal(id.identity, WEB);
    assert.match(id.certificate!.serial, /^[0-9a-f]+$/);
    // The bundle the proxy loaded is the one the injector recorded on the pod.
    assert.equal(
      id.trustAnchors.fingerprint,
      injected.metadata!.annotations!['meshid.io/trust-root-sha256'],
    );
    assert.ok(
      ca.lines.some((l) => l.includes(WEB)),
      'the CA logged the issuance',
    );
    // Its token was checked with TokenReview by the CA.
    assert.ok(api.requests.some((r) => r.resource === 'tokenreviews' && r.status === 201));
  });

  it('leaves alone a pod in a namespace that did not opt in, and a control-plane pod that asks', async () => {
    const plain = await core.createNamespacedPod({ namespace: 'plain', body: webPod('plain') });
    assert.deepEqual(
      plain.spec!.containers.map((c) => c.name),
      ['web-svc'],
    );
    const before = hooks.lines.length;
    const cp = await core.createNamespacedPod({
      namespace: NS,
      body: webPod(NS, { 'meshid.io/inject': 'enabled' }),
    });
    assert.deepEqual(
      cp.spec!.containers.map((c) => c.name),
      ['web-svc'],
    );
    // Not even sent: the namespaceSelector excludes the control plane.
    assert.equal(
      hooks.lines.slice(before).filter((l) => l.includes('"namespace":"linkerd"')).length,
      0,
    );
  });

  it('refuses an anchors edit that drops the anchor the issuer chains to, with the reason, and keeps the ConfigMap', async () => {
    const current = await core.readNamespacedConfigMap({ namespace: NS, name: ANCHORS });
    const r = await refusal(
      core.replaceNamespacedConfigMap({
        namespace: NS,
        name: ANCHORS,
        body: { ...current, data: { 'ca-bundle.crt': otherRoot.certificatePem } },
      }),
    );
    assert.equal(r.code, 422);
    assert.match(r.message, /^admission webhook "trust-guard\.meshid\.io" denied the request: /);
    assert.match(r.message, /drops the anchor the current issuer chains to/);
    assert.match(r.message, /It removes "CN=root\.linkerd\.cluster\.local"/);
    const after = await core.readNamespacedConfigMap({ namespace: NS, name: ANCHORS });
    assert.equal(after.data!['ca-bundle.crt'], root.certificatePem);
    assert.equal(after.metadata!.resourceVersion, current.metadata!.resourceVersion);

    const garbled = await refusal(
      core.patchNamespacedConfigMap({
        namespace: NS,
        name: ANCHORS,
        body: [{ op: 'replace', path: '/data/ca-bundle.crt', value: 'not PEM' }],
      }),
    );
    assert.equal(garbled.code, 422);
    assert.match(garbled.message, /trust anchor bundle: /);
  });

  it('accepts staging a second anchor beside the current one', async () => {
    const current = await core.readNamespacedConfigMap({ namespace: NS, name: ANCHORS });
    const both = root.certificatePem + otherRoot.certificatePem;
    const updated = await core.replaceNamespacedConfigMap({
      namespace: NS,
      name: ANCHORS,
      body: { ...current, data: { 'ca-bundle.crt': both } },
    });
    assert.equal(updated.data!['ca-bundle.crt'], both);
  });

  it('refuses an issuer Certificate with an RSA key, with the reason', async () => {
    const custom = api.kubeConfig().makeApiClient(CustomObjectsApi);
    const r = await refusal(
      custom.createNamespacedCustomObject({
        group: 'cert-manager.io',
        version: 'v1',
        namespace: NS,
        plural: 'certificates',
        body: {
          apiVersion: 'cert-manager.io/v1',
          kind: 'Certificate',
          metadata: { name: 'linkerd-identity-issuer-rsa', namespace: NS },
          spec: {
            secretName: 'linkerd-identity-issuer',
            isCA: true,
            commonName: 'identity.linkerd.cluster.local',
            privateKey: { algorithm: 'RSA', size: 2048 },
            issuerRef: { name: 'linkerd-trust-anchor', kind: 'Issuer' },
          },
        },
      }),
    );
    assert.equal(r.code, 422);
    assert.match(
      r.message,
      /denied the request: .*spec\.privateKey\.algorithm must be ECDSA, got "RSA"/,
    );
  });

  /**
   * What the kubelet gives the injected container: each volume materialised in a folder (the
   * projected token by TokenRequest, with the volume's audience, expiry and the pod binding; the
   * ConfigMap's items), the env with mount paths mapped to those folders; then the two addresses
   * a cluster would resolve or bind: the CA's Service name (no cluster DNS here) and the
   * listeners (127.0.0.1:0, since every test shares one network).
   */
  async function kubeletEnvironment(
    pod: V1Pod,
    container: V1Container,
  ): Promise<Record<string, string>> {
    const mounts = new Map<string, string>();
    for (const m of container.volumeMounts ?? []) {
      const volume = pod.spec!.volumes!.find((v) => v.name === m.name)!;
      const local = join(dir, 'pod', m.name);
      await mkdir(local, { recursive: true });
      for (const source of volume.projected?.sources ?? []) {
        const sat = source.serviceAccountToken;
        if (sat === undefined) continue;
        const tr = await core.createNamespacedServiceAccountToken({
          namespace: pod.metadata!.namespace!,
          name: pod.spec!.serviceAccountName!,
          body: {
            spec: {
              audiences: [sat.audience!],
              expirationSeconds: sat.expirationSeconds!,
              boundObjectRef: {
                apiVersion: 'v1',
                kind: 'Pod',
                name: pod.metadata!.name!,
                uid: pod.metadata!.uid!,
              },
            },
          },
        });
        await writeFile(join(local, sat.path), tr.status!.token!);
      }
      if (volume.configMap !== undefined) {
        const cm = await core.readNamespacedConfigMap({
          namespace: pod.metadata!.namespace!,
          name: volume.configMap.name!,
        });
        for (const item of volume.configMap.items ?? [])
          await writeFile(join(local, item.path), cm.data![item.key]!);
      }
      mounts.set(m.mountPath, local);
    }
    const env: Record<string, string> = {};
    for (const e of container.env ?? []) {
      let value = e.value ?? '';
      for (const [mountPath, local] of mounts)
        if (value.startsWith(`${mountPath}/`)) value = local + value.slice(mountPath.length);
      env[e.name] = value;
    }
    assert.equal(env['MESHID_IDENTITY_ADDR'], 'linkerd-identity.linkerd.svc:8080');
    env['MESHID_IDENTITY_ADDR'] = `127.0.0.1:${ca.address.port}`;
    env['MESHID_ADMIN'] = '127.0.0.1:0';
    env['MESHID_INBOUND'] = '127.0.0.1:0';
    assert.equal(await readFile(env['MESHID_TRUST_ANCHORS']!, 'utf8'), root.certificatePem);
    return env;
  }
});
