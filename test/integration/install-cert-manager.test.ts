/**
 * docs/install.md's step-by-step install with cert-manager, on the Kubernetes API **test
 * double** (test/support/kube-api-server; not a cluster): the real `meshid install --cert-manager
 * --webhooks` process, its output created object by object with client-node as `kubectl apply`
 * would, the cert-manager simulator (a test double of cert-manager's controller and cainjector)
 * issuing the root, the issuer and the webhooks' certificates and filling the caBundles, `meshid
 * trust sync --once` as its installed ServiceAccount filling the anchors ConfigMap, then `meshid
 * ca` and `meshid webhooks` as real processes under the installed RBAC with what the kubelet
 * would mount, and `meshid check --kubeconfig` all green, printing what the page promises.
 *
 * What is not a cluster here: no kubelet or Deployments running (the test starts the two
 * processes the Deployments would), no cluster DNS (the check gets --ca-address, --ca-admin and
 * --webhooks-address, as the page says to do through `kubectl port-forward`), no real cert-manager.
 */
import { strict as assert } from 'node:assert';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubernetesObjectApi } from '@kubernetes/client-node';
import type { KubernetesObject } from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';
import { formatAddress, systemClock } from '../../core/index.js';
import { runMeshid, startCaProcess } from '../support/ca-process.js';
import type { CaProcess } from '../support/ca-process.js';
import { CertManagerSimulator } from '../support/cert-manager-sim.js';
import { assertReportShape } from '../support/check-report.js';
import type { Report } from '../support/check-report.js';
import { assertLinesInOrder, shellSteps } from '../support/docs.js';
import { serviceAccountKubeconfig } from '../support/kubeconfig.js';
import { startKubeApiServer } from '../support/kube-api-server/index.js';
import type { KubeApiServer, KubeObject } from '../support/kube-api-server/index.js';
import { writeIssuerDir } from '../support/state.js';
import { startWebhooksProcess } from '../support/webhooks.js';
import type { WebhooksProcess } from '../support/webhooks.js';

const NS = 'linkerd';
const PAGE = new URL('../../docs/install.md', import.meta.url);

describe('docs/install.md with cert-manager: install, cert-manager issues, meshid check is green (API test double)', function () {
  this.timeout(180_000);
  let dir: string;
  let api: KubeApiServer;
  let sim: CertManagerSimulator;
  let kubeconfig: string;
  let ca: CaProcess;
  let hooks: WebhooksProcess;
  let page: string;

  const secretData = (name: string): Record<string, string> => {
    const s = api.get({ apiVersion: 'v1', kind: 'Secret', namespace: NS, name });
    const data = (s?.['data'] ?? {}) as Record<string, string>;
    return Object.fromEntries(
      Object.entries(data).map(([k, v]) => [k, Buffer.from(v, 'base64').toString()]),
    );
  };
  const kubeconfigFor = (sa: string): Promise<string> => serviceAccountKubeconfig(api, dir, NS, sa);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshid-install-cm-'));
    page = await readFile(PAGE, 'utf8');
    api = await startKubeApiServer({ namespaces: ['emojivoto'], minTokenExpirationSeconds: 60 });
    kubeconfig = join(dir, 'kubeconfig');
    await api.writeKubeconfig(kubeconfig);
    sim = new CertManagerSimulator({ api, clock: systemClock });
  });
  after(async () => {
    await hooks?.stop().catch(() => undefined);
    await ca?.stop().catch(() => undefined);
    await api?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('the install command of the page renders, and every object is created in order with client-node', async () => {
    const install = shellSteps(page).find((s) => s.code.includes('--cert-manager --webhooks'));
    assert.ok(install, 'the page has no "meshid install --cert-manager --webhooks" step');
    const args = /npx meshid (install [^>\n]+?)\s*>/.exec(install.code)?.[1]?.split(/\s+/);
    assert.ok(args !== undefined, `cannot read the command of ${install.code}`);
    const r = await runMeshid(args);
    assert.equal(r.code, 0, r.stderr);
    const objects = parseAllDocuments(r.stdout)
      .map((d) => d.toJS() as KubernetesObject | null)
      .filter((o): o is KubernetesObject => o !== null);
    const client = KubernetesObjectApi.makeApiClient(api.kubeConfig());
    for (const o of objects) await client.create(o);
    const kinds = objects.map((o) => o.kind);
    assert.equal(kinds[0], 'Namespace');
    assert.equal(kinds.at(-1), 'ValidatingWebhookConfiguration');
    assert.equal(kinds.filter((k) => k === 'Certificate').length, 4, kinds.join(' '));
  });

  it('cert-manager issues the root, the issuer and the webhooks certificates; cainjector fills the caBundles', async () => {
    // Passes until nothing is left to issue: each Issuer needs the Secret of the one before it.
    for (let pass = 0; pass < 10 && (await sim.reconcile()).length > 0; pass++);
    assert.deepEqual(sim.issued.map((i) => i.certificate).sort(), [
      'linkerd-identity-issuer',
      'linkerd-trust-anchor',
      'meshid-webhooks',
      'meshid-webhooks-ca',
    ]);
    const serving = secretData('meshid-webhooks-tls');
    assert.match(serving['tls.crt'] ?? '', /BEGIN CERTIFICATE/);
    const mutating = api.get<KubeObject & { webhooks: { clientConfig: { caBundle?: string } }[] }>({
      apiVersion: 'admissionregistration.k8s.io/v1',
      kind: 'MutatingWebhookConfiguration',
      name: 'meshid-proxy-injector',
    });
    assert.equal(
      Buffer.from(mutating?.webhooks[0]?.clientConfig.caBundle ?? '', 'base64').toString(),
      serving['ca.crt'],
    );
  });

  it('the webhooks start before the anchors exist (their anchors volume is optional), and the API server calls them', async () => {
    const tlsDir = join(dir, 'webhooks-tls');
    const serving = secretData('meshid-webhooks-tls');
    await writeIssuerDir(tlsDir, {
      'tls.crt': serving['tls.crt']!,
      'tls.key': serving['tls.key']!,
    });
    hooks = await startWebhooksProcess([
      ...['--tls-dir', tlsDir, '--kubeconfig', await kubeconfigFor('meshid-webhooks')],
      ...['--trust-anchors', join(dir, 'trust-anchors', 'ca-bundle.crt'), '--log-level', 'debug'],
    ]);
    api.setWebhookServiceResolver((svc) =>
      svc.namespace === NS && svc.name === 'meshid-webhooks' && svc.port === 443
        ? { host: '127.0.0.1', port: hooks.address.port }
        : undefined,
    );
  });

  it('meshid trust sync, as its installed ServiceAccount, fills the anchors ConfigMap (admitted by the trust guard)', async () => {
    const r = await runMeshid([
      ...['trust', 'sync', '--kubeconfig', await kubeconfigFor('meshid-trust'), '--once'],
      ...['--log-level', 'warn'],
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'sync: written\n');
    const reviews = hooks.lines
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter(
        (l) => l['msg'] === 'review answered' && l['name'] === 'linkerd-identity-trust-roots',
      );
    assert.deepEqual(
      reviews.map((l) => [l['path'], l['operation'], l['allowed']]),
      [['/validate', 'CREATE', true]],
      'the trust guard judged the ConfigMap',
    );
  });

  it('the CA runs under the installed RBAC and becomes ready', async () => {
    ca = await startCaProcess([
      ...['--kubeconfig', await kubeconfigFor('linkerd-identity'), '--namespace', NS],
      ...['--issuer-secret', 'linkerd-identity-issuer'],
      ...['--trust-anchors-config-map', 'linkerd-identity-trust-roots', '--workers', '1'],
    ]);
  });

  it('meshid check --kubeconfig: every check ✓, exit 0, and the lines the page shows', async () => {
    const args = [
      ...['check', '--kubeconfig', kubeconfig],
      ...['--ca-address', formatAddress(ca.address), '--ca-admin', formatAddress(ca.admin)],
      ...['--webhooks-address', formatAddress(hooks.address)],
    ];
    const json = await runMeshid([...args, '--output', 'json']);
    const report = JSON.parse(json.stdout) as Report;
    assertReportShape(report);
    assert.deepEqual(
      report.checks.filter((c) => c.status !== 'ok').map((c) => `${c.id}: ${c.message}`),
      [],
    );
    assert.equal(json.code, 0);
    assert.equal(report.checks.length, 25, 'every check of the catalog ran');

    const text = await runMeshid(args);
    assert.equal(text.code, 0, text.stderr);
    const step = shellSteps(page).find((s) => s.code.includes('meshid check --kubeconfig'));
    assert.ok(step?.expect !== undefined, 'the page shows no output of meshid check --kubeconfig');
    // The page's addresses are port-forwards; here they are the processes' own.
    assertLinesInOrder(
      text.stdout,
      step.expect
        .replaceAll('127.0.0.1:8443', formatAddress(hooks.address))
        .replaceAll('127.0.0.1:8080', formatAddress(ca.address))
        .replaceAll('127.0.0.1:9990', formatAddress(ca.admin)),
      'meshid check --kubeconfig',
    );
  });

  it('a pod that opts in by itself, in a namespace that does not, is injected and labelled, and trust sync gives its namespace a copy of the anchors', async () => {
    const client = KubernetesObjectApi.makeApiClient(api.kubeConfig());
    const namespace = api.get({ apiVersion: 'v1', kind: 'Namespace', name: 'emojivoto' });
    assert.equal(namespace?.metadata.annotations?.['meshid.io/inject'], undefined);
    const pod = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name: 'web',
        namespace: 'emojivoto',
        annotations: { 'meshid.io/inject': 'enabled' },
      },
      spec: {
        serviceAccountName: 'web',
        containers: [{ name: 'web', image: 'web:1', ports: [{ containerPort: 8080 }] }],
      },
    };
    // Through the API server over HTTP, so its admission calls the injector.
    await client.create(pod);
    const stored = api.get({ apiVersion: 'v1', kind: 'Pod', namespace: 'emojivoto', name: 'web' });
    assert.equal(stored?.metadata.labels?.['linkerd.io/control-plane-ns'], NS);
    assert.ok(stored?.metadata.annotations?.['meshid.io/proxy-version'] !== undefined, 'injected');
    const cm = { apiVersion: 'v1', kind: 'ConfigMap', name: 'linkerd-identity-trust-roots' };
    assert.equal(api.get({ ...cm, namespace: 'emojivoto' }), undefined);

    const trustKubeconfig = await kubeconfigFor('meshid-trust');
    const sync = [
      'trust',
      'sync',
      '--kubeconfig',
      trustKubeconfig,
      '--once',
      '--log-level',
      'warn',
    ];
    const r = await runMeshid(sync);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'sync: unchanged; anchors copies created in emojivoto\n');
    const copy = api.get({ ...cm, namespace: 'emojivoto' });
    const source = api.get({ ...cm, namespace: NS });
    assert.equal(copy?.metadata.labels?.['meshid.io/anchors-copy-of'], NS);
    assert.deepEqual(copy?.['data'], source?.['data']);

    // Its last injected pod gone (and the namespace not opted in), the copy goes too.
    await client.delete({ ...pod, metadata: { name: 'web', namespace: 'emojivoto' } });
    const after = await runMeshid(sync);
    assert.equal(after.code, 0, after.stderr);
    assert.equal(after.stdout, 'sync: unchanged; anchors copies deleted in emojivoto\n');
    assert.equal(api.get({ ...cm, namespace: 'emojivoto' }), undefined);
  });
});
