/**
 * `npm install` warns EBADENGINE when an installed package declares a Node range that the running
 * Node does not satisfy. These tests read the lockfile (what a fresh install installs) and check
 * that every declared range admits both the Node running the tests and the lowest Node the project
 * itself declares, so neither a developer on the floor version nor CI sees an engine warning.
 */
import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import semver from 'semver';

interface LockPackage {
  readonly version?: string;
  readonly engines?: { readonly node?: string } | readonly string[];
}

const root = new URL('../../../', import.meta.url);
const lock = JSON.parse(readFileSync(new URL('package-lock.json', root), 'utf8')) as {
  packages: Record<string, LockPackage>;
};
const manifest = JSON.parse(readFileSync(new URL('package.json', root), 'utf8')) as {
  engines: { node: string };
};

/** Every installed package's declared Node range (the object form; the legacy array form has none). */
function nodeRanges(): [string, string][] {
  return Object.entries(lock.packages).flatMap(([path, pkg]) => {
    const engines = pkg.engines;
    if (path === '' || engines === undefined || Array.isArray(engines)) return [];
    const node = (engines as { node?: string }).node;
    return node === undefined ? [] : [[path, node]];
  });
}

describe('declared Node engines', () => {
  const floor = semver.minVersion(manifest.engines.node);

  it('declares a Node floor that is a real version range', () => {
    assert.ok(floor, manifest.engines.node);
    assert.ok(semver.satisfies(floor, manifest.engines.node));
  });

  it('installs no package whose engines exclude the running Node', () => {
    const bad = nodeRanges().filter(([, range]) => !semver.satisfies(process.versions.node, range));
    assert.deepEqual(bad, []);
  });

  it("installs no package whose engines exclude the project's own Node floor", () => {
    assert.ok(floor);
    const bad = nodeRanges().filter(([, range]) => !semver.satisfies(floor, range));
    assert.deepEqual(bad, []);
  });

  it('installs kubernetes-models and its cert-manager models at majors that declare node >=22', () => {
    for (const name of ['kubernetes-models', '@kubernetes-models/cert-manager']) {
      const engines = lock.packages[`node_modules/${name}`]?.engines as { node?: string };
      assert.equal(engines.node, '>=22', name);
    }
  });
});

describe('the pinned Node runtime', () => {
  const pinned = (manifest as { devDependencies?: Record<string, string> }).devDependencies?.[
    'node'
  ];

  it('pins an exact registry node that satisfies engines, and runs these tests on it', () => {
    assert.ok(pinned !== undefined && semver.valid(pinned), `devDependencies.node: ${pinned}`);
    assert.ok(semver.satisfies(pinned, manifest.engines.node), pinned);
    // npm run / npx put node_modules/.bin first on PATH: mocha (and every child it spawns with
    // process.execPath) must be that node, not the machine's.
    assert.equal(process.versions.node, pinned, process.execPath);
  });

  it("lets npm approve the node package's install script (it fetches the binary)", () => {
    const allow = (manifest as { allowScripts?: Record<string, boolean> }).allowScripts ?? {};
    assert.equal(allow['node'], true);
  });

  it('checks the same floor in bin/meshid.js before loading anything (a clear error on an old node)', () => {
    const bin = readFileSync(new URL('bin/meshid.js', root), 'utf8');
    const floorInBin = /const NODE_FLOOR = '([\d.]+)';/.exec(bin)?.[1];
    assert.equal(floorInBin, semver.minVersion(manifest.engines.node)?.version);
  });
});
