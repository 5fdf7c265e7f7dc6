/**
 * A pod opted into pod certificates runs its proxy with no token, end to end, on the Kubernetes
 * API test double (a test double of kube-apiserver serving PodCertificateRequests as 1.36 does,
 * and ClusterTrustBundles) with the cert-manager simulator:
 *
 * - everything `meshid install --cert-manager --webhooks --pod-certificates` renders is applied;
 *   `meshid trust sync` (as its installed ServiceAccount) publishes the anchors ConfigMap and the
 *   live/canary ClusterTrustBundles, `meshid ca --pod-certificates` and `meshid webhooks` run as
 *   real processes under the installed RBAC;
 * - a pod annotated `meshid.io/identity-source: pod-certificate` is created through the API and
 *   comes out of the real injector (the API server's call to the webhook) with its patch applied;
 * - the kubelet simulator reads the injected projected volume from that stored spec (signer,
 *   key type, lifetime, paths, the trust bundle's selector), creates the PodCertificateRequest as
 *   the node, the signer issues, and it writes the credential bundle and the trust bundle file;
 * - the proxy runs with exactly the injected container's args and env (only mount paths mapped
 *   to the simulator's folders and the listeners moved to 127.0.0.1:0, since every test shares
 *   one network), serves mTLS with the pod's identity: curl with a Certify-issued client
 *   certificate reaches the app through it, and the app sees the client's identity.
 *
 * No ServiceAccount token exists for the pod: none is mounted, none is requested from the API
 * (no TokenRequest, no TokenReview) until the test's own Certify client asks for one at the end.
 * The app side of a pod with pod certificates (openssl s_server/s_client with the mounted files)
 * is pod-certificates-mtls.test.ts.
 */
import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CoreV1Api } from '@kubernetes/client-node';
import type { V1Container, V1Pod } from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';
import { CertifyClient, createCsr, parseAnchors, systemClock, toPem } from '../../core/index.js';
import { renderInstall } from '../../cli/install.js';
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
import type { KubeletSim, MountedVolume } from '../support/kubelet-sim.js';
import { CA_IDENTITY, writeIssuerDir } from '../support/state.js';
import { startWebhooksProcess } from '../support/webhooks.js';
import type { WebhooksProcess } from '../support/webhooks.js';
import { emojivotoWeb } from '../unit/webhooks/fixtures/pods.js';

const execFileAsync = promisify(execFile);
/** A client-node model object as the plain JSON it was read from. */
const plain = (v: unknown): unknown => JSON.parse(JSON.stringify(v));
const NS = 'linkerd';
const SIGNER = 'meshid.io/workload-identity';
const WEB = 'web.emojivoto.serviceaccount.identity.linkerd.cluster.local';
const BOT = 'vote-bot.emojivoto.serviceaccount.identity.linkerd.cluster.local';

describe('pod certificates end to end: injected, mounted by the kubelet, the proxy serves with no token', function () {
  this.timeout(180_000);
  let dir: string;
  let api: KubeApiServer;
  let sim: CertManagerSimulator;
  let ca: CaProcess;
  let hooks: WebhooksProcess;
  let kubelet: KubeletSim;
  let proxy: MeshidProcess | undefined;
  let app: Server;
  let appPort: number;
  let core: CoreV1Api;
  let rootPem: string;
  let injected: V1Pod;
  let volumes: MountedVolume[];
  let proxyEnv: Record<string, string>;

  const kubeconfigFor = (sa: string): Promise<string> => serviceAccountKubeconfig(api, dir, NS, sa);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshid-podcert-inject-'));
    api = await startKubeApiServer({
      namespaces: ['emojivoto'],
      podCertificates: '1.36',
      resources: [CLUSTER_TRUST_BUNDLE_RESOURCE],
      minTokenExpirationSeconds: 60,
    });
    core = api.kubeConfig().makeApiClient(CoreV1Api);
    sim = new CertManagerSimulator({ api, clock: systemClock, intervalMs: 50 });
    sim.start();

    // The install as kubectl applies it, the webhook configurations once the webhooks run (the
    // trust guard must not judge the anchors before the CA it asks exists); the simulator issues
    // the webhooks' serving certificate and fills the configurations' caBundle (cainjector).
    const configurations: KubeObject[] = [];
    const yaml = renderInstall({
      argv: ['--cert-manager', '--webhooks', '--pod-certificates'],
      env: {},
      now: Date.now(),
    });
    for (const doc of parseAllDocuments(yaml)) {
      const obj = doc.toJS() as (KubeObject & { webhooks?: unknown[] }) | null;
      if (obj === null) continue;
      if (obj.webhooks === undefined) api.create(obj);
      else configurations.push(obj);
    }
    const secret = (name: string): Record<string, string> | undefined =>
      api.get({ apiVersion: 'v1', kind: 'Secret', namespace: NS, name })?.['data'] as
        Record<string, string> | undefined;
    await waitFor('cert-manager to issue the issuer and the webhooks certificate', () =>
      secret('linkerd-identity-issuer') !== undefined && secret('meshid-webhooks-tls') !== undefined
        ? true
        : undefined,
    );
    api.createServiceAccount('emojivoto', 'web');
    api.createServiceAccount('emojivoto', 'vote-bot');

    // The anchors ConfigMap and the ClusterTrustBundles, by the installed sync controller.
    const sync = await runMeshid([
      ...['trust', 'sync', '--once', '--kubeconfig', await kubeconfigFor('meshid-trust')],
      ...['--log-level', 'warn'],
    ]);
    assert.equal(sync.code, 0, sync.stderr);
    rootPem = (
      api.get({
        apiVersion: 'v1',
        kind: 'ConfigMap',
        namespace: NS,
        name: 'linkerd-identity-trust-roots',
      }) as KubeObject & { data: Record<string, string> }
    ).data['ca-bundle.crt']!;
    const anchorsFile = join(dir, 'anchors.pem');
    await writeFile(anchorsFile, rootPem);

    ca = await startCaProcess([
      ...['--kubeconfig', await kubeconfigFor('linkerd-identity'), '--namespace', NS],
      ...['--issuer-secret', 'linkerd-identity-issuer'],
      ...['--trust-anchors-config-map', 'linkerd-identity-trust-roots', '--workers', '1'],
      '--pod-certificates',
    ]);
    const tlsDir = join(dir, 'webhooks-tls');
    const serving = secret('meshid-webhooks-tls')!;
    await writeIssuerDir(tlsDir, {
      'tls.crt': Buffer.from(serving['tls.crt']!, 'base64').toString(),
      'tls.key': Buffer.from(serving['tls.key']!, 'base64').toString(),
    });
    hooks = await startWebhooksProcess([
      ...['--tls-dir', tlsDir, '--kubeconfig', await kubeconfigFor('meshid-webhooks')],
      ...['--trust-anchors', anchorsFile, '--ca-address', `127.0.0.1:${ca.address.port}`],
      ...['--proxy-image', 'registry.example.com/meshid:v0.1.0'],
    ]);
    api.setWebhookServiceResolver((svc) =>
      svc.namespace === NS && svc.name === 'meshid-webhooks' && svc.port === 443
        ? { host: '127.0.0.1', port: hooks.address.port }
        : undefined,
    );
    for (const c of configurations) api.create(c);
    await waitFor('cainjector to fill the caBundle of the injector', () =>
      (
        api.get({
          apiVersion: 'admissionregistration.k8s.io/v1',
          kind: 'MutatingWebhookConfiguration',
          name: 'meshid-proxy-injector',
        })?.['webhooks'] as { clientConfig: { caBundle?: string } }[] | undefined
      )?.[0]?.clientConfig.caBundle
        ? true
        : undefined,
    );

    kubelet = startKubeletSim({
      api,
      nodeName: 'node-a',
      version: '1.36',
      dir: join(dir, 'kubelet'),
    });

    app = createServer((req, res) => {
      res.end(`hello ${String(req.headers['l5d-client-id'])}`);
    });
    app.listen(0, '127.0.0.1');
    await once(app, 'listening');
    appPort = (app.address() as AddressInfo).port;
  });

  after(async () => {
    await proxy?.stop().catch(() => undefined);
    kubelet?.close();
    await hooks?.stop().catch(() => undefined);
    await ca?.stop().catch(() => undefined);
    app?.close();
    await sim?.stop();
    await api?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  /** The requests that would mean a ServiceAccount token was minted or presented. */
  const tokenTraffic = (): string[] =>
    api.requests
      .filter(
        (r) => r.resource === 'tokenreviews' || /\/serviceaccounts\/[^/]+\/token$/.test(r.path),
      )
      .map((r) => `${r.method} ${r.path} by ${r.user ?? '?'}`);

  it('injects one projected volume with podCertificate and clusterTrustBundle sources, and no token anywhere in the pod', async () => {
    // The emojivoto web pod as its ReplicaSet sends it, scheduled on node-a, opted in to the
    // mesh and to pod certificates, with no API token of its own (the app needs none).
    const pod = emojivotoWeb() as unknown as V1Pod & { status?: unknown };
    delete pod.status;
    delete pod.metadata!.ownerReferences;
    pod.metadata!.namespace = 'emojivoto';
    pod.metadata!.annotations = {
      'meshid.io/inject': 'enabled',
      'meshid.io/identity-source': 'pod-certificate',
      'meshid.io/transparent': 'disabled',
      'meshid.io/inbound-port': String(appPort),
    };
    pod.spec!.nodeName = 'node-a';
    pod.spec!.automountServiceAccountToken = false;
    pod.spec!.volumes = [];
    pod.spec!.containers[0]!.volumeMounts = [];
    injected = await core.createNamespacedPod({ namespace: 'emojivoto', body: pod });

    const spec = injected.spec!;
    assert.deepEqual(
      spec.containers.map((c) => c.name),
      ['web-svc', 'meshid-proxy'],
    );
    assert.deepEqual(
      spec.volumes!.map((v) => v.name),
      ['meshid-pod-certificate'],
    );
    assert.deepEqual(plain(spec.volumes![0]!.projected!.sources), [
      {
        podCertificate: {
          signerName: SIGNER,
          keyType: 'ECDSAP256',
          maxExpirationSeconds: 86400,
          credentialBundlePath: 'credentialbundle.pem',
        },
      },
      {
        clusterTrustBundle: {
          signerName: SIGNER,
          labelSelector: { matchLabels: { 'meshid.io/trust-bundle': 'live' } },
          path: 'ca-bundle.crt',
        },
      },
    ]);
    const proxyContainer = spec.containers.find((c) => c.name === 'meshid-proxy')!;
    assert.deepEqual(plain(proxyContainer.volumeMounts), [
      {
        name: 'meshid-pod-certificate',
        mountPath: '/var/run/meshid/pod-certificate',
        readOnly: true,
      },
    ]);
    // No token volume of any kind, for any container, and no setting that points at one.
    for (const v of spec.volumes!) {
      assert.equal(v.secret, undefined, v.name);
      for (const s of v.projected?.sources ?? []) assert.equal(s.serviceAccountToken, undefined);
    }
    const env = Object.fromEntries((proxyContainer.env ?? []).map((e) => [e.name, e.value]));
    assert.equal(env['MESHID_IDENTITY_SOURCE'], 'pod-certificate');
    for (const name of ['MESHID_TOKEN_FILE', 'MESHID_IDENTITY_ADDR', 'MESHID_IDENTITY_NAME'])
      assert.equal(env[name], undefined, name);
    assert.doesNotMatch(JSON.stringify([proxyContainer.args, proxyContainer.env]), /token/i);
    assert.deepEqual(tokenTraffic(), []);
  });

  it('the kubelet mounts the volume as the injected spec says: the request carries its signer and lifetime, the files land where the proxy looks', async () => {
    const stored = (await core.readNamespacedPod({
      namespace: 'emojivoto',
      name: injected.metadata!.name!,
    })) as unknown as KubeObject;
    volumes = await kubelet.mountPod(stored);
    await kubelet.settled();
    assert.deepEqual(
      volumes.map((v) => [v.name, Object.keys(v.files).sort()]),
      [['meshid-pod-certificate', ['ca-bundle.crt', 'credentialbundle.pem']]],
    );
    const pcrs = api.list<KubeObject & { spec: Record<string, unknown> }>(
      'certificates.k8s.io/v1beta1',
      'PodCertificateRequest',
    );
    assert.equal(pcrs.length, 1);
    const pcr = pcrs[0]!;
    assert.equal(pcr.spec['signerName'], SIGNER);
    assert.equal(pcr.spec['maxExpirationSeconds'], 86400);
    assert.equal(pcr.spec['podName'], injected.metadata!.name);
    assert.equal(pcr.spec['podUID'], injected.metadata!.uid);
    assert.equal(pcr.spec['serviceAccountName'], 'web');
    assert.equal(pcr.spec['nodeName'], 'node-a');
    assert.ok(typeof pcr.spec['stubPKCS10Request'] === 'string', 'the 1.36 shape');
    // The files as read through the mount: the key first, then the leaf for web's identity,
    // chained to the anchors of the live ClusterTrustBundle.
    const dir = volumes[0]!.dir;
    const bundle = await readFile(join(dir, 'credentialbundle.pem'), 'utf8');
    assert.match(bundle, /^-----BEGIN PRIVATE KEY-----/);
    const leaf = new X509Certificate(bundle.slice(bundle.indexOf('-----BEGIN CERTIFICATE-----')));
    assert.match(leaf.subjectAltName ?? '', new RegExp(`^DNS:${WEB.replace(/\./g, '\\.')}`));
    const trust = await readFile(join(dir, 'ca-bundle.crt'), 'utf8');
    assert.deepEqual(
      parseAnchors(trust, { now: Date.now() }).anchors.map((a) => a.fingerprint),
      parseAnchors(rootPem, { now: Date.now() }).anchors.map((a) => a.fingerprint),
    );
  });

  it('runs the proxy with exactly the injected args and env; it serves with the pod certificate and never asks for a token', async () => {
    const container = injected.spec!.containers.find((c) => c.name === 'meshid-proxy')!;
    proxyEnv = mappedEnv(container, volumes);
    assert.deepEqual(container.args, ['proxy']);
    proxy = await startMeshid(container.args![0]!, container.args!.slice(1), proxyEnv);
    const admin = {
      host: '127.0.0.1',
      port: Number(String(proxy.listening['admin']).split(':').pop()),
    };
    await waitFor(
      'the injected proxy to be ready',
      async () => ((await adminGet(admin, '/identity')).status === 200 ? true : undefined),
      30_000,
    );
    await waitFor('the proxy to hold its certificate', async () =>
      (await adminGet(admin, '/ready')).status === 200 ? true : undefined,
    );
    const id = JSON.parse((await adminGet(admin, '/identity')).body) as {
      identity: string;
      certificate: { serial: string; chainPem: string };
    };
    assert.equal(id.identity, WEB);
    // The certificate it holds is the one the kubelet wrote, the one the signer put in the PCR.
    const pcr = api.list<KubeObject & { status: { certificateChain: string } }>(
      'certificates.k8s.io/v1beta1',
      'PodCertificateRequest',
    )[0]!;
    const pcrLeaf = new X509Certificate(pcr.status.certificateChain);
    assert.equal(id.certificate.serial, pcrLeaf.serialNumber.toLowerCase());
    assert.ok(
      proxy.lines.some((l) => l.includes('pod certificate loaded from the credential bundle')),
    );
    // Nothing about a token in what the process was given, and none was minted or reviewed.
    assert.doesNotMatch(JSON.stringify([container.args, proxyEnv]), /token/i);
    assert.deepEqual(tokenTraffic(), []);
  });

  it('curl with a Certify-issued client certificate reaches the app through the proxy, which tells the app who called (a forged l5d-client-id removed)', async () => {
    // The client: another workload's certificate, from the same CA over Certify (its own token).
    const { token } = await api.mintToken({
      namespace: 'emojivoto',
      serviceAccount: 'vote-bot',
      audiences: ['identity.l5d.io'],
    });
    const client = new CertifyClient({
      address: ca.address,
      serverName: CA_IDENTITY,
      anchorsPem: rootPem,
    });
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    let res;
    try {
      res = await client.certify({
        identity: BOT,
        token: Buffer.from(token),
        certificateSigningRequest: createCsr({
          privateKey,
          commonName: BOT,
          dnsNames: [BOT],
        }),
      });
    } finally {
      client.close();
    }
    const files = {
      key: join(dir, 'bot.key'),
      cert: join(dir, 'bot.crt'),
      anchors: join(dir, 'anchors.pem'),
    };
    await writeFile(files.key, privateKey.export({ type: 'pkcs8', format: 'pem' }), {
      mode: 0o600,
    });
    await writeFile(
      files.cert,
      [res.leafCertificate, ...res.intermediateCertificates]
        .map((d) => toPem(d, 'CERTIFICATE'))
        .join(''),
    );
    const inboundPort = String(proxy!.listening['inbound']).split(':').pop()!;
    const { stdout } = await execFileAsync('curl', [
      ...['-sS', '--max-time', '20', '--http1.1'],
      ...['--resolve', `${WEB}:${inboundPort}:127.0.0.1`],
      ...['--cacert', files.anchors, '--cert', files.cert, '--key', files.key],
      ...['-H', 'l5d-client-id: forged.example'],
      `https://${WEB}:${inboundPort}/`,
    ]);
    assert.equal(stdout, `hello ${BOT}`);
  });

  /**
   * The injected container's env as the kubelet gives it: mount paths mapped to the simulator's
   * folders, the listeners on 127.0.0.1:0 (every test shares one network). Nothing else changes.
   */
  function mappedEnv(container: V1Container, mounted: MountedVolume[]): Record<string, string> {
    const mounts = new Map<string, string>();
    for (const m of container.volumeMounts ?? []) {
      const v = mounted.find((x) => x.name === m.name);
      assert.ok(v, `volume ${m.name} was mounted`);
      mounts.set(m.mountPath, v.dir);
    }
    const env: Record<string, string> = {};
    for (const e of container.env ?? []) {
      let value = e.value ?? '';
      for (const [mountPath, local] of mounts)
        if (value.startsWith(`${mountPath}/`)) value = local + value.slice(mountPath.length);
      env[e.name] = value;
    }
    assert.equal(env['MESHID_ADMIN'], '[::]:4191');
    assert.equal(env['MESHID_INBOUND'], '[::]:4143');
    assert.equal(env['MESHID_APP'], `127.0.0.1:${appPort}`);
    env['MESHID_ADMIN'] = '127.0.0.1:0';
    env['MESHID_INBOUND'] = '127.0.0.1:0';
    return env;
  }
});
