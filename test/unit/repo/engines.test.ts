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

  it('pins kubernetes-models and its cert-manager models to majors that declare node >=14', () => {
    for (const name of ['kubernetes-models', '@kubernetes-models/cert-manager']) {
      const engines = lock.packages[`node_modules/${name}`]?.engines as { node?: string };
      assert.equal(engines.node, '>=14', name);
    }
  });
});
