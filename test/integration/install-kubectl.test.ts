/**
 * docs/install.md's kubectl commands, run exactly as the page writes them (each `sh` block through
 * bash) with the machine's real `kubectl` (Debian's, v1.32) against the Kubernetes API **test
 * double** (test/support/kube-api-server; not a cluster): apply of the rendered install (its
 * validation asks the double's OpenAPI v3 documents), a second apply that changes nothing, `wait`
 * for the Certificates (the cert-manager simulator issues them), `rollout status` and `wait
 * --for=condition=Available` of the Deployments (the test stands in for the kubelet: it marks them
 * rolled out once kubectl is waiting), `create token` without `--duration` (kubectl sends
 * `expirationSeconds: null`) for `auth can-i` as the CA, and the uninstall with `delete -f`.
 */
import { strict as assert } from 'node:assert';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { systemClock } from '../../core/index.js';
import { CertManagerSimulator } from '../support/cert-manager-sim.js';
import { runMeshid } from '../support/ca-process.js';
import { children } from '../support/children.js';
import { assertLinesInOrder, shellSteps } from '../support/docs.js';
import type { DocStep } from '../support/docs.js';
import { startKubeApiServer } from '../support/kube-api-server/index.js';
import type { KubeApiServer } from '../support/kube-api-server/index.js';

const PAGE = new URL('../../docs/install.md', import.meta.url);
const NS = 'linkerd';

/** A shell command running; `output()` so far, `exited` its status. */
interface Shell {
  readonly exited: Promise<number | null>;
  output(): string;
  /** Resolves once the output matches (rejects if the command exits first). */
  until(re: RegExp): Promise<void>;
}

describe("docs/install.md's kubectl steps, with the real kubectl (Kubernetes API test double)", function () {
  this.timeout(180_000);
  let dir: string;
  let api: KubeApiServer;
  let sim: CertManagerSimulator;
  let steps: DocStep[];
  let kubeconfig: string;

  // A kubectl still waiting when an assertion fails is ended with the test.
  const procs = children();
  afterEach(() => procs.killAll());
  const shell = (code: string): Shell => {
    const child = procs.spawn('bash', ['-euo', 'pipefail', '-c', code], {
      cwd: dir,
      env: { PATH: process.env['PATH'] ?? '', HOME: dir, KUBECONFIG: kubeconfig },
    });
    let out = '';
    const waiters = new Set<() => void>();
    const onData = (d: Buffer): void => {
      out += d.toString();
      for (const w of [...waiters]) w();
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    return {
      exited,
      output: () => out,
      until: (re) =>
        new Promise<void>((resolve, reject) => {
          const check = (): void => {
            if (re.test(out)) {
              waiters.delete(check);
              resolve();
            }
          };
          waiters.add(check);
          check();
          void exited.then((code) => {
            if (!re.test(out)) reject(new Error(`exited ${String(code)} before ${re}:\n${out}`));
          });
        }),
    };
  };
  const run = async (code: string): Promise<{ code: number | null; out: string }> => {
    const s = shell(code);
    return { code: await s.exited, out: s.output() };
  };
  const step = (includes: string): DocStep => {
    const found = steps.find((s) => s.code.includes(includes));
    assert.ok(found, `docs/install.md has no step with "${includes}"`);
    return found;
  };
  const deployments = (): string[] =>
    api.list('apps/v1', 'Deployment', NS).map((d) => d.metadata.name!);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshid-install-kubectl-'));
    steps = shellSteps(await readFile(PAGE, 'utf8'));
    api = await startKubeApiServer();
    kubeconfig = join(dir, 'kubeconfig');
    await api.writeKubeconfig(kubeconfig);
    sim = new CertManagerSimulator({ api, clock: systemClock });
  });
  after(async () => {
    await api?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('step 1: meshid install renders meshid.yaml', async () => {
    const render = step('--cert-manager --webhooks > meshid.yaml');
    const args = /npx meshid (install [^>\n]+?)\s*>/.exec(render.code)?.[1]?.split(/\s+/);
    assert.ok(args !== undefined, `cannot read the command of ${render.code}`);
    const r = await runMeshid(args);
    assert.equal(r.code, 0, r.stderr);
    await writeFile(join(dir, 'meshid.yaml'), r.stdout);
  });

  it('step 2: kubectl apply -f creates every object (validated through OpenAPI v3); again, changes nothing', async () => {
    const apply = step('kubectl apply -f meshid.yaml');
    const first = await run(apply.code);
    assert.equal(first.code, 0, first.out);
    assert.doesNotMatch(first.out, /error|warning/i);
    const created = first.out.split('\n').filter((l) => / created$/.test(l));
    assert.equal(created[0], 'namespace/linkerd created');
    assert.ok(created.includes('deployment.apps/linkerd-identity created'), first.out);
    assert.ok(
      created.includes('certificate.cert-manager.io/linkerd-identity-issuer created'),
      first.out,
    );
    assert.equal(
      created.at(-1),
      'validatingwebhookconfiguration.admissionregistration.k8s.io/meshid-trust-guard created',
    );
    // kubectl left validation to the server, which it found supports it.
    const posts = api.requests.filter((r) => r.method === 'POST' && r.verb === 'create');
    assert.ok(posts.length >= created.length);
    // ... with strict field validation: the server found no field it does not know.
    for (const p of posts) assert.equal(p.query['fieldValidation'], 'Strict', p.path);
    assert.ok(api.requests.some((r) => r.path === '/openapi/v3' && r.status === 200));
    const rv = api.resourceVersion;
    const second = await run(apply.code);
    assert.equal(second.code, 0, second.out);
    const lines = second.out.trim().split('\n');
    assert.equal(lines.length, created.length, second.out);
    // A PodDisruptionBudget's selector has the patch strategy "replace", so kubectl always sends
    // it and says "configured", on a cluster too; the server stores nothing new for it.
    for (const l of lines)
      assert.match(l, /^(poddisruptionbudget\.policy\/\S+ configured|\S+ unchanged)$/);
    assert.equal(api.resourceVersion, rv, 'the second apply wrote something');
  });

  it('step 3: kubectl wait sees the Certificates Ready, rollout status the Deployments rolled out', async () => {
    const waitStep = step('kubectl -n linkerd wait --for=condition=Ready certificate --all');
    const kubectl = shell(waitStep.code);
    // cert-manager (the simulator) issues while kubectl watches: each Issuer needs the one before.
    for (let pass = 0; pass < 10 && (await sim.reconcile()).length > 0; pass++);
    await kubectl.until(/certificate\.cert-manager\.io\/linkerd-identity-issuer condition met/);
    // Then rollout status waits for Deployments that no controller has observed yet...
    await kubectl.until(/Waiting for deployment spec update to be observed/);
    assert.deepEqual(deployments().sort(), [
      'linkerd-destination',
      'linkerd-identity',
      'meshid-trust',
      'meshid-webhooks',
    ]);
    // ... until the kubelet (this test) has their pods ready.
    for (const name of deployments()) api.rollOut(NS, name);
    assert.equal(await kubectl.exited, 0, kubectl.output());
    for (const name of [
      'meshid-trust',
      'linkerd-identity',
      'meshid-webhooks',
      'linkerd-destination',
    ])
      assert.match(kubectl.output(), new RegExp(`deployment "${name}" successfully rolled out`));
    const available = await run(
      `kubectl -n ${NS} wait --for=condition=Available deploy --all --timeout=30s`,
    );
    assert.equal(available.code, 0, available.out);
    assert.equal(available.out.match(/condition met/g)?.length, 4, available.out);
  });

  it('step 3: kubectl create token (no --duration) lets kubectl auth can-i ask as the CA', async () => {
    const mayReview = step('auth can-i create tokenreviews');
    const yes = await run(mayReview.code);
    assert.equal(yes.code, mayReview.exit, yes.out);
    assertLinesInOrder(yes.out, mayReview.expect ?? '', 'can-i create tokenreviews');
    const mayList = step('auth can-i list secrets');
    const no = await run(mayList.code);
    assert.equal(no.code, mayList.exit, no.out);
    assert.equal(mayList.exit, 1);
    assertLinesInOrder(no.out, mayList.expect ?? '', 'can-i list secrets');
    // kubectl sent `expirationSeconds: null`: the double defaulted it to an hour, as the API does.
    const token = await run(`kubectl -n ${NS} create token linkerd-identity`);
    assert.equal(token.code, 0, token.out);
    const claims = JSON.parse(
      Buffer.from(token.out.trim().split('.')[1]!, 'base64url').toString(),
    ) as { iat: number; exp: number; sub: string };
    assert.equal(claims.exp - claims.iat, 3600);
    assert.equal(claims.sub, 'system:serviceaccount:linkerd:linkerd-identity');
  });

  it('uninstall: kubectl delete -f removes every object and exits 0', async () => {
    const uninstall = step('kubectl delete --ignore-not-found -f meshid.yaml');
    const r = await run(uninstall.code);
    assert.equal(r.code, 0, r.out);
    assert.doesNotMatch(r.out, /error/i);
    assert.match(r.out, /^namespace "linkerd" deleted$/m);
    assert.match(
      r.out,
      /^clusterrole\.rbac\.authorization\.k8s\.io "meshid-identity-linkerd" deleted$/m,
    );
    assert.equal(api.get({ apiVersion: 'v1', kind: 'Namespace', name: NS }), undefined);
    for (const [apiVersion, kind] of [
      ['rbac.authorization.k8s.io/v1', 'ClusterRole'],
      ['rbac.authorization.k8s.io/v1', 'ClusterRoleBinding'],
      ['admissionregistration.k8s.io/v1', 'MutatingWebhookConfiguration'],
      ['admissionregistration.k8s.io/v1', 'ValidatingWebhookConfiguration'],
    ] as const) {
      const left = api
        .list(apiVersion, kind)
        .map((o) => o.metadata.name!)
        .filter((n) => n.startsWith('meshid'));
      assert.deepEqual(left, [], kind);
    }
  });

  it('a typo in a manifest: kubectl apply is refused as a cluster refuses it; --validate=warn warns and drops the field', async () => {
    await writeFile(
      join(dir, 'typo.yaml'),
      [
        'apiVersion: v1',
        'kind: Namespace',
        'metadata:',
        '  name: typo',
        '---',
        'apiVersion: v1',
        'kind: ConfigMap',
        'metadata:',
        '  name: settings',
        '  namespace: typo',
        'dta:',
        '  level: debug',
        '',
      ].join('\n'),
    );
    const strict = await run('kubectl apply -f typo.yaml');
    assert.equal(strict.code, 1, strict.out);
    assert.match(strict.out, /^namespace\/typo created$/m);
    assert.match(
      strict.out,
      /^Error from server \(BadRequest\): error when creating "typo\.yaml": ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: unknown field "dta"$/m,
    );
    assert.equal(
      api.get({ apiVersion: 'v1', kind: 'ConfigMap', namespace: 'typo', name: 'settings' }),
      undefined,
    );
    const warn = await run('kubectl apply --validate=warn -f typo.yaml');
    assert.equal(warn.code, 0, warn.out);
    assert.match(warn.out, /^Warning: unknown field "dta"$/m);
    assert.match(warn.out, /^configmap\/settings created$/m);
    const stored = api.get({
      apiVersion: 'v1',
      kind: 'ConfigMap',
      namespace: 'typo',
      name: 'settings',
    });
    assert.ok(stored !== undefined);
    assert.equal(stored['dta'], undefined);
  });
});
