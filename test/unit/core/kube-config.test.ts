/**
 * core/kube/config.ts findKubeconfig: the kubeconfig found as kubectl finds it (`--kubeconfig`,
 * else the KUBECONFIG list merged, else ~/.kube/config, else none) and `--context`.
 */
import { strict as assert } from 'node:assert';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { isMeshidError } from '../../../core/index.js';
import { findKubeconfig } from '../../../core/kube/config.js';

/** A kubeconfig with one cluster/user/context per name, each cluster at https://<name>.example:6443. */
function kubeconfig(names: string[], current?: string): string {
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: names.map((n) => ({ name: n, cluster: { server: `https://${n}.example:6443` } })),
    users: names.map((n) => ({ name: n, user: { token: `token-${n}` } })),
    contexts: names.map((n) => ({ name: n, context: { cluster: n, user: n } })),
    ...(current === undefined ? {} : { 'current-context': current }),
  });
}

function assertConfigError(fn: () => unknown, message: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(isMeshidError(err));
    assert.equal(err.code, 'ERR_CONFIG_INVALID');
    assert.match(err.message, message);
    return true;
  });
}

describe('core/kube/config findKubeconfig (as kubectl finds its cluster)', () => {
  let dir: string;
  let a: string;
  let b: string;
  let home: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshid-kubeconfig-'));
    a = join(dir, 'a.yaml');
    b = join(dir, 'b.yaml');
    home = join(dir, 'home');
    // Both name a context "shared"; a.yaml's must win. a.yaml sets no current-context.
    await writeFile(a, kubeconfig(['alpha', 'shared']));
    await writeFile(
      b,
      kubeconfig(['beta', 'shared'], 'beta').replaceAll('shared.example', 'b-shared.example'),
    );
    await mkdir(join(home, '.kube'), { recursive: true });
    await writeFile(join(home, '.kube', 'config'), kubeconfig(['home'], 'home'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('uses ~/.kube/config at its current context when nothing else is given', () => {
    const found = findKubeconfig({ env: { HOME: home } });
    assert.equal(found?.context, 'home');
    assert.equal(found?.server, 'https://home.example:6443');
    assert.equal(found?.source, `~/.kube/config (${join(home, '.kube', 'config')})`);
  });

  it('finds none without KUBECONFIG, --kubeconfig or ~/.kube/config (no fallback cluster)', () => {
    assert.equal(findKubeconfig({ env: { HOME: join(dir, 'nowhere') } }), undefined);
    assert.equal(findKubeconfig({ env: {} }), undefined);
  });

  it('merges the KUBECONFIG list: the first file to name an entry wins, and the first current-context', () => {
    const found = findKubeconfig({
      env: { HOME: home, KUBECONFIG: `${a}:${join(dir, 'missing.yaml')}:${b}` },
    });
    assert.equal(found?.context, 'beta', 'a.yaml sets no current-context, b.yaml does');
    assert.equal(found?.source, `KUBECONFIG=${a}:${join(dir, 'missing.yaml')}:${b}`);
    const shared = findKubeconfig({ context: 'shared', env: { KUBECONFIG: `${a}:${b}` } });
    assert.equal(shared?.server, 'https://shared.example:6443', "a.yaml's 'shared' wins");
    const alpha = findKubeconfig({ context: 'alpha', env: { KUBECONFIG: `${a}:${b}` } });
    assert.equal(alpha?.server, 'https://alpha.example:6443');
  });

  it('--kubeconfig wins over KUBECONFIG and ~/.kube/config; --context picks a context', () => {
    const found = findKubeconfig({
      kubeconfig: b,
      context: 'shared',
      env: { HOME: home, KUBECONFIG: a },
    });
    assert.equal(found?.source, `--kubeconfig ${b}`);
    assert.equal(found?.context, 'shared');
    assert.equal(found?.server, 'https://b-shared.example:6443');
  });

  it('refuses an unknown --context, naming the contexts there are', () => {
    assertConfigError(
      () => findKubeconfig({ context: 'prod', env: { HOME: home } }),
      /^--context prod: no such context in ~\/\.kube\/config \(.*\) \(its contexts: home\)$/,
    );
  });

  it('refuses a kubeconfig without a current context, saying how to pick one', () => {
    assertConfigError(
      () => findKubeconfig({ kubeconfig: a, env: {} }),
      /^--kubeconfig \S+a\.yaml: no current context with a cluster .*pass --context NAME or run kubectl config use-context NAME$/,
    );
  });

  it('refuses a KUBECONFIG whose files are all missing, and an unreadable file, naming them', () => {
    assertConfigError(
      () => findKubeconfig({ env: { KUBECONFIG: join(dir, 'x.yaml'), HOME: home } }),
      /^KUBECONFIG=\S+x\.yaml: none of its files exists; fix KUBECONFIG, or unset it to use ~\/\.kube\/config$/,
    );
    assertConfigError(
      () => findKubeconfig({ kubeconfig: join(dir, 'nope.yaml'), env: {} }),
      /^--kubeconfig \S+nope\.yaml cannot be loaded: /,
    );
  });

  it('refuses --context with --kubeconfig in-cluster', () => {
    assertConfigError(
      () => findKubeconfig({ kubeconfig: 'in-cluster', context: 'x', env: {} }),
      /^--context x: a context needs a kubeconfig file, not --kubeconfig in-cluster$/,
    );
  });
});
