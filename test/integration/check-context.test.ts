/**
 * Which cluster or folder `meshid check` checks, said on its first line, found as kubectl finds
 * its cluster: `--kubeconfig`/`--context`, else `KUBECONFIG` or `~/.kube/config` at the current
 * context, and the local `.meshid` only when there is no kubeconfig at all (the real process,
 * against the Kubernetes API test double; nothing is installed there, so the checks fail: the
 * first line is what is asserted).
 */
import { strict as assert } from 'node:assert';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { runMeshid } from '../support/ca-process.js';
import { startKubeApiServer } from '../support/kube-api-server/index.js';
import type { KubeApiServer } from '../support/kube-api-server/index.js';

describe('meshid check: the cluster of the current kube context, or the folder, on the first line', function () {
  this.timeout(90_000);
  let dir: string;
  let api: KubeApiServer;
  let home: string;
  let twoContexts: string;

  const firstLine = (stdout: string): string => stdout.split('\n')[0] ?? '';
  const check = (args: string[], env: Record<string, string>) =>
    runMeshid(['check', '--timeout', '1s', ...args], { NO_COLOR: '1', ...env }, dir);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshid-check-context-'));
    api = await startKubeApiServer();
    home = join(dir, 'home');
    await mkdir(join(home, '.kube'), { recursive: true });
    await api.writeKubeconfig(join(home, '.kube', 'config'));
    // The double's kubeconfig with a second context, "staging", current, on the same server.
    const doc = parse(api.kubeconfigYaml()) as {
      contexts: { name: string; context: Record<string, string> }[];
      'current-context': string;
    };
    doc.contexts.push({ name: 'staging', context: { ...doc.contexts[0]!.context } });
    doc['current-context'] = 'staging';
    twoContexts = join(dir, 'two-contexts.yaml');
    await writeFile(twoContexts, stringify(doc));
  });
  after(async () => {
    await api?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('with ~/.kube/config and no flags: its current context, not the local folder', async () => {
    const r = await check([], { HOME: home });
    assert.equal(r.code, 1, r.stderr);
    assert.equal(
      firstLine(r.stdout),
      `meshid check: cluster context meshid-test at ${api.url} (namespace linkerd)`,
    );
  });

  it('with KUBECONFIG: its current context; --context picks another', async () => {
    const current = await check([], { HOME: home, KUBECONFIG: twoContexts });
    assert.equal(
      firstLine(current.stdout),
      `meshid check: cluster context staging at ${api.url} (namespace linkerd)`,
    );
    const picked = await check(['--context', 'meshid-test', '--namespace', 'meshid'], {
      HOME: home,
      KUBECONFIG: twoContexts,
    });
    assert.equal(
      firstLine(picked.stdout),
      `meshid check: cluster context meshid-test at ${api.url} (namespace meshid)`,
    );
  });

  it('refuses an unknown --context (exit 2), naming the contexts there are', async () => {
    const r = await check(['--context', 'prod'], { HOME: home, KUBECONFIG: twoContexts });
    assert.equal(r.code, 2);
    assert.equal(r.stdout, '');
    assert.match(
      r.stderr,
      new RegExp(
        `--context prod: no such context in KUBECONFIG=${twoContexts} \\(its contexts: meshid-test, staging\\) \\[ERR_CONFIG_INVALID\\]`,
      ),
    );
  });

  it('--dir checks that folder even with a kubeconfig; with none, the local .meshid says why', async () => {
    const local = await check(['--dir', 'state'], { HOME: home });
    assert.equal(firstLine(local.stdout), 'meshid check: local state state');
    const none = await check([], { HOME: join(dir, 'nobody') });
    assert.equal(
      firstLine(none.stdout),
      'meshid check: local state .meshid (no kubeconfig: --kubeconfig, KUBECONFIG or ~/.kube/config checks a cluster)',
    );
  });
});
