/**
 * docs/first-hour.md, run as the page writes it: each `sh` block through bash, in order, with the
 * real `meshid` CLI (`npx meshid ` becomes `node <repo>/bin/meshid.js `, the folder not being the
 * repository) and Debian's real `kubectl`, both reaching the Kubernetes API **test double**
 * through `KUBECONFIG` (its current context), as a user's tools reach their cluster: `meshid check
 * --pre`, `meshid install | kubectl apply -f -` (kubectl sends `fieldValidation=Strict`), a
 * manifest with a typo refused, and `meshid check` after the install, where nothing runs the
 * pods. Each command's exit status is the page's (`exit=N`), and every line of the `text` block
 * after it must be in its output (stdout, then stderr), in order, `…` matching anything within a
 * line.
 */
import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { MESHID_BIN } from '../support/ca-process.js';
import { children } from '../support/children.js';
import { assertLinesInOrder, shellSteps } from '../support/docs.js';
import type { DocStep } from '../support/docs.js';
import { startKubeApiServer } from '../support/kube-api-server/index.js';
import type { KubeApiServer } from '../support/kube-api-server/index.js';

const PAGE = new URL('../../docs/first-hour.md', import.meta.url);

describe('docs/first-hour.md: check --pre, install | kubectl apply, check (real kubectl, Kubernetes API test double)', function () {
  this.timeout(240_000);
  let dir: string;
  let api: KubeApiServer;
  let steps: DocStep[];
  const procs = children();
  afterEach(() => procs.killAll());

  /** Runs one step as the page writes it; its exit status and output (stdout, then stderr). */
  const run = async (step: DocStep): Promise<{ code: number | null; out: string }> => {
    const code = step.code.replaceAll('npx meshid ', `node ${MESHID_BIN} `);
    const child = procs.spawn('bash', ['-euo', 'pipefail', '-c', code], {
      cwd: dir,
      env: {
        // The Node.js that runs the tests (26) first, as `npx` puts the repository's.
        PATH: `${dirname(process.execPath)}:${process.env['PATH'] ?? ''}`,
        HOME: dir,
        KUBECONFIG: join(dir, 'kubeconfig'),
      },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const [status] = (await once(child, 'exit')) as [number | null];
    return { code: status, out: `${stdout}\n${stderr}` };
  };
  const step = (includes: string): DocStep => {
    const found = steps.find((s) => s.code.includes(includes));
    assert.ok(found, `docs/first-hour.md has no step with "${includes}"`);
    return found;
  };
  const runAsPromised = async (s: DocStep): Promise<string> => {
    const r = await run(s);
    assert.equal(r.code, s.exit, `${s.code}\nexited ${String(r.code)}:\n${r.out}`);
    assert.ok(s.expect !== undefined, `the page shows no output for ${s.code}`);
    assertLinesInOrder(r.out, s.expect, s.code);
    return r.out;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshid-first-hour-'));
    steps = shellSteps(await readFile(PAGE, 'utf8'));
    api = await startKubeApiServer();
    await api.writeKubeconfig(join(dir, 'kubeconfig'));
  });
  after(async () => {
    await api?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('walks check --pre, install piped to kubectl apply, a typo refused, check: in that order', () => {
    const order = ['meshid check --pre', '| kubectl apply -f -', 'dta:', 'npx meshid check\n'];
    const at = order.map((w) => steps.findIndex((s) => `${s.code}\n`.includes(w)));
    assert.ok(
      at.every((i, n) => i >= 0 && (n === 0 || i > at[n - 1]!)),
      `steps out of order: ${String(at)}`,
    );
    assert.equal(steps.length, order.length, 'a step this test does not know');
  });

  it('1. meshid check --pre: the current context, four ✓, exit 0', async () => {
    const out = await runAsPromised(step('meshid check --pre'));
    assert.ok(
      out.startsWith(`meshid check: before install, cluster context meshid-test at ${api.url} `),
      out,
    );
  });

  it('2. meshid install | kubectl apply -f -: every object created under fieldValidation=Strict', async () => {
    const before = api.requests.length;
    const out = await runAsPromised(step('| kubectl apply -f -'));
    assert.doesNotMatch(out, /error|warning: unknown/i);
    const posts = api.requests
      .slice(before)
      .filter((r) => r.method === 'POST' && r.verb === 'create');
    assert.equal(posts.length, out.split('\n').filter((l) => / created$/.test(l)).length);
    for (const p of posts) {
      assert.equal(p.query['fieldValidation'], 'Strict', p.path);
      assert.equal(p.status, 201, p.path);
    }
    assert.deepEqual(
      api
        .list('apps/v1', 'Deployment', 'linkerd')
        .map((d) => d.metadata.name)
        .sort(),
      ['linkerd-destination', 'linkerd-identity', 'meshid-trust', 'meshid-webhooks'],
    );
  });

  it("2. a typo in a manifest is refused with the cluster's error, nothing created", async () => {
    await runAsPromised(step('dta:'));
    assert.equal(
      api.get({ apiVersion: 'v1', kind: 'ConfigMap', namespace: 'linkerd', name: 'settings' }),
      undefined,
    );
  });

  it('3. meshid check: what the apply made true passes, what controllers and pods do next is named, exit 1', async () => {
    await runAsPromised(steps.find((s) => s.code.trim() === 'npx meshid check')!);
  });
});
