/**
 * The documentation pages that must follow the code: the metrics reference lists exactly the
 * metrics the components register, the troubleshooting page has a section for every
 * `meshid check` id, and the index links every page while every relative link resolves.
 */
import { strict as assert } from 'node:assert';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CHECKS } from '../../../cli/check/model.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const DOCS = join(ROOT, 'docs');
const read = (p: string): string => readFileSync(join(ROOT, p), 'utf8');

/** Component source files (not tests, not the docs tooling). */
function sources(): string[] {
  const out: string[] = [];
  const walk = (dir: string): void => {
    if (!existsSync(dir)) return;
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ts')) out.push(p);
    }
  };
  for (const d of [
    'core',
    'identity-ca',
    'proxy',
    'trust-bundle',
    'webhooks',
    'destination',
    'cli',
  ])
    walk(join(ROOT, d));
  return out;
}

/**
 * Metric names the code registers: `name:` of prom-client constructors and any string literal
 * shaped like a Prometheus metric name with a unit or kind suffix (the proxy's latency histogram
 * takes the name as its first argument), and the name argument of the CA's gauge and counter
 * helpers and the first column of its gauge tables.
 */
function registeredMetrics(): Set<string> {
  const names = new Set<string>();
  for (const file of sources()) {
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(
      /new (?:Counter|Gauge|Histogram|Summary)\(\{\s*name: '([a-z_:][a-z0-9_:]*)'/g,
    ))
      names.add(m[1]!);
    for (const m of text.matchAll(
      /'([a-z][a-z0-9_]*_(?:total|seconds|enabled|bytes|ratio|count|info))'/g,
    ))
      names.add(m[1]!);
    // The CA's `gauge(registry, name, …)` and `counting(registry, name, …)` helpers, and the
    // `[name, help, …]` rows of its gauge tables.
    for (const m of text.matchAll(/\b(?:gauge|counting)\(\s*\w+,\s*'([a-z_:][a-z0-9_:]*)'/g))
      names.add(m[1]!);
    for (const m of text.matchAll(/\[\s*'(meshid_[a-z0-9_:]*)',/g)) names.add(m[1]!);
  }
  return names;
}

describe('docs that follow the code', () => {
  it('docs/metrics.md lists exactly the metrics the components register', () => {
    const page = read('docs/metrics.md');
    const documented = new Set(
      [...page.matchAll(/^\| `([a-z_:][a-z0-9_:]*)` \|/gm)].map((m) => m[1]!),
    );
    const code = registeredMetrics();
    assert.ok(code.size >= 15, `found only ${code.size} metrics in the code: the scan is broken`);
    const missing = [...code].filter((n) => !documented.has(n));
    const stale = [...documented].filter((n) => !code.has(n));
    assert.deepEqual(missing, [], 'registered but not in docs/metrics.md: add a row');
    assert.deepEqual(stale, [], 'in docs/metrics.md but not registered: remove the row');
  });

  it('docs/troubleshooting.md has a section for every meshid check id, and none for an unknown one', () => {
    const page = read('docs/troubleshooting.md');
    const sections = [...page.matchAll(/^### ([a-z-]+)$/gm)].map((m) => m[1]!);
    assert.deepEqual(
      sections,
      CHECKS.map((c) => c.id),
      'one section per check, in the catalog order',
    );
    for (const group of new Set(CHECKS.map((c) => c.group)))
      assert.match(page, new RegExp(`^## ${group}$`, 'm'), `no heading for the group ${group}`);
  });

  // Pages other issues write; until they land, a link to them is allowed to dangle.
  const PENDING = new Map([
    ['rotation.md', 'issue 8'],
    ['webhooks.md', 'issue 9'],
    ['fips.md', 'issue 10'],
  ]);

  it('docs/README.md links every page, README.md links the index, and every relative link resolves', () => {
    const index = read('docs/README.md');
    for (const page of readdirSync(DOCS).filter((f) => f.endsWith('.md') && f !== 'README.md'))
      assert.ok(index.includes(`](${page})`), `docs/README.md does not link ${page}`);
    assert.match(read('README.md'), /\]\(docs\/README\.md\)/);
    const pages = [
      'README.md',
      ...readdirSync(DOCS)
        .filter((f) => f.endsWith('.md'))
        .map((f) => `docs/${f}`),
    ];
    for (const page of pages) {
      const base = join(ROOT, page, '..');
      for (const m of read(page).matchAll(/\]\(([^)#\s]+)(?:#[^)]*)?\)/g)) {
        const target = m[1]!;
        if (/^[a-z]+:/.test(target)) continue;
        const file = join(base, target);
        const name = relative(DOCS, file);
        if (!existsSync(file) && PENDING.has(name)) continue;
        assert.ok(existsSync(file), `${page} links ${target}, which does not exist`);
      }
    }
  });
});
