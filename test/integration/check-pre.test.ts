/**
 * `meshid check --pre` against the Kubernetes API test double: the API answers, the credentials'
 * SelfSubjectAccessReviews for what the install creates, cert-manager's API, and what already
 * runs in the namespace (nothing, Linkerd's control plane, meshid).
 */
import { strict as assert } from 'node:assert';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, systemClock } from '../../core/index.js';
import { runChecks } from '../../cli/check.js';
import type { CheckReport } from '../../cli/check/model.js';
import { runMeshid } from '../support/ca-process.js';
import { startKubeApiServer } from '../support/kube-api-server/index.js';
import type { KubeApiServer, KubeObject } from '../support/kube-api-server/index.js';

function deployment(name: string, labels: Record<string, string>): KubeObject {
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name, namespace: 'linkerd', labels },
    spec: {
      selector: { matchLabels: labels },
      template: {
        metadata: { labels },
        spec: { containers: [{ name: 'c', image: 'registry.example.com/x:v1' }] },
      },
    },
  };
}

describe('meshid check --pre: before an install (Kubernetes API test double)', function () {
  this.timeout(90_000);
  let dir: string;
  let api: KubeApiServer;
  let admin: string;

  const pre = async (kubeconfig: string): Promise<CheckReport> => {
    const { config } = loadConfig('check', {
      argv: ['--pre', '--kubeconfig', kubeconfig],
      env: {},
    });
    return runChecks(config, { clock: systemClock, progress: () => undefined, env: {} });
  };
  const byId = (
    report: CheckReport,
  ): Record<string, { status: string; message: string; fix?: string }> =>
    Object.fromEntries(report.checks.map((c) => [c.id, c]));

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshid-check-pre-'));
    api = await startKubeApiServer();
    admin = join(dir, 'admin.yaml');
    await api.writeKubeconfig(admin);
  });
  after(async () => {
    await api?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('a cluster admin on a fresh cluster: all four pass, and the install goes beside nothing', async () => {
    const report = await pre(admin);
    assert.equal(report.mode, 'pre');
    assert.equal(report.target, `context meshid-test at ${api.url} (namespace linkerd)`);
    assert.deepEqual(
      report.checks.map((c) => [c.id, c.status]),
      [
        ['pre-api', 'ok'],
        ['pre-rbac', 'ok'],
        ['pre-cert-manager', 'ok'],
        ['pre-existing', 'ok'],
      ],
    );
    assert.equal(
      byId(report)['pre-existing']?.message,
      'namespace linkerd does not exist: the install creates it and installs beside nothing',
    );
  });

  it('credentials that may not create the cluster-wide objects or read cert-manager: × naming each', async () => {
    const token = api.addUser({
      username: 'dev',
      rules: [
        {
          verbs: ['*'],
          apiGroups: ['', 'apps', 'policy', 'rbac.authorization.k8s.io'],
          resources: ['*'],
          namespaces: ['linkerd'],
        },
        { verbs: ['get'], apiGroups: [''], resources: ['namespaces'] },
      ],
    });
    const kubeconfig = join(dir, 'dev.yaml');
    await api.writeKubeconfig(kubeconfig, { token, user: 'dev' });
    const checks = byId(await pre(kubeconfig));
    assert.equal(checks['pre-api']?.status, 'ok');
    assert.equal(checks['pre-rbac']?.status, 'error');
    assert.equal(
      checks['pre-rbac']?.message,
      'may not create namespaces, clusterroles.rbac.authorization.k8s.io, clusterrolebindings.rbac.authorization.k8s.io, mutatingwebhookconfigurations.admissionregistration.k8s.io, validatingwebhookconfigurations.admissionregistration.k8s.io, issuers.cert-manager.io in linkerd, certificates.cert-manager.io in linkerd',
    );
    assert.match(checks['pre-rbac']?.fix ?? '', /credentials that may/);
    assert.equal(checks['pre-cert-manager']?.status, 'error');
    assert.match(
      checks['pre-cert-manager']?.message ?? '',
      /^cert-manager\.io\/v1 Certificates cannot be listed: HTTP 403/,
    );
    assert.match(checks['pre-cert-manager']?.fix ?? '', /install cert-manager/);
  });

  it("finds Linkerd's control plane in the namespace and says the install replaces its identity service (‼)", async () => {
    api.createNamespace('linkerd');
    for (const c of ['identity', 'destination', 'proxy-injector'])
      api.create(
        deployment(`linkerd-${c}`, {
          [`linkerd.io/control-plane-component`]: c,
          'linkerd.io/control-plane-ns': 'linkerd',
        }),
      );
    const checks = byId(await pre(admin));
    assert.equal(checks['pre-existing']?.status, 'warn');
    assert.equal(
      checks['pre-existing']?.message,
      "Linkerd's control plane runs in namespace linkerd (linkerd-destination, linkerd-identity, linkerd-proxy-injector): the install's Deployment, Services and ServiceAccount linkerd-identity replace Linkerd's identity service",
    );
    assert.match(
      checks['pre-existing']?.fix ?? '',
      /docs\/linkerd-compatibility\.md#replacing-linkerds-identity-service/,
    );
    assert.match(checks['pre-existing']?.fix ?? '', /--control-plane-namespace/);
  });

  it('finds meshid installed and says apply updates it; the CLI says so on its first line', async () => {
    api.delete({ apiVersion: 'v1', kind: 'Namespace', name: 'linkerd' });
    api.createNamespace('linkerd');
    api.create(
      deployment('linkerd-identity', {
        'app.kubernetes.io/name': 'meshid',
        'app.kubernetes.io/component': 'identity',
        'app.kubernetes.io/part-of': 'meshid',
        'app.kubernetes.io/version': 'v0.1.0',
      }),
    );
    const checks = byId(await pre(admin));
    assert.equal(checks['pre-existing']?.status, 'ok');
    assert.equal(
      checks['pre-existing']?.message,
      'meshid v0.1.0 is installed in namespace linkerd: kubectl apply updates it in place',
    );
    const r = await runMeshid(['check', '--pre'], { KUBECONFIG: admin, NO_COLOR: '1' });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(
      r.stdout.split('\n')[0],
      `meshid check: before install, cluster context meshid-test at ${api.url} (namespace linkerd)`,
    );
    assert.match(r.stdout, /^Before install$/m);
    assert.match(r.stdout, /Status: all checks passed \(4 ✓, 0 ‼, 0 ×\)/);
  });

  it('refuses --pre without a kubeconfig (exit 2), saying where one comes from', async () => {
    const r = await runMeshid(['check', '--pre']);
    assert.equal(r.code, 2);
    assert.match(
      r.stderr,
      /--pre checks a cluster before an install, and there is no kubeconfig: give --kubeconfig, set KUBECONFIG, or write ~\/\.kube\/config \[ERR_CONFIG_INVALID\]/,
    );
  });
});
