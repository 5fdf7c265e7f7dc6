/**
 * The settings tables of core/config/: each setting declared once, with a description, its kind
 * matching its schema, and its default a named constant of core/defaults.ts; and the paths of a
 * `--config` file relative to the file's folder.
 */
import { strict as assert } from 'node:assert';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { z } from 'zod';
import {
  COMMAND_SETTINGS,
  DEFAULTS,
  describeSettings,
  loadConfig,
  TRANSPARENT_DEFAULTS,
} from '../../../core/index.js';
import { duration, positiveMs } from '../../../core/config/setting.js';
import type { Setting, Settings } from '../../../core/config/setting.js';

const tables = Object.entries(COMMAND_SETTINGS) as [string, Settings][];

/** Every value in core/defaults.ts, nested objects and their members included. */
function defaultsValues(): Set<unknown> {
  const out = new Set<unknown>();
  const walk = (v: unknown): void => {
    out.add(v);
    if (v !== null && typeof v === 'object') Object.values(v).forEach(walk);
  };
  walk(DEFAULTS);
  walk(TRANSPARENT_DEFAULTS);
  return out;
}

/**
 * The constant defaults that are not named in core/defaults.ts. Literal by design: `false` (a
 * switch is off) and `[]` (nothing listed). Derived defaults are functions of other settings.
 */
function literalDefaults(table: Settings): string[] {
  const known = defaultsValues();
  return Object.entries(table)
    .filter(([, s]) => s.default !== undefined && typeof s.default !== 'function')
    .filter(([, s]) => s.default !== false && !(Array.isArray(s.default) && s.default.length === 0))
    .filter(([, s]) => !known.has(s.default))
    .map(([key, s]) => `${key}: ${JSON.stringify(s.default)}`);
}

/** The zod type under `.optional()`, and what kinds of setting it can be. */
function kindsOf(schema: z.ZodType): string[] {
  let t: z.ZodType = schema;
  while (t instanceof z.ZodOptional) t = t.unwrap() as z.ZodType;
  if (t instanceof z.ZodBoolean) return ['boolean'];
  if (t instanceof z.ZodNumber) return ['integer', 'duration'];
  if (t instanceof z.ZodArray) return ['list'];
  if (t instanceof z.ZodObject) return ['address'];
  if (t instanceof z.ZodString || t instanceof z.ZodEnum) return ['string', 'path'];
  return [t.constructor.name];
}

describe('config: the settings tables', () => {
  it('give every setting of every command a description and a kind its schema parses', () => {
    const problems: string[] = [];
    for (const [command, table] of tables) {
      for (const [key, s] of Object.entries(table)) {
        if (s.help.trim().length < 8) problems.push(`${command}.${key}: no description`);
        if (!kindsOf(s.schema).includes(s.kind))
          problems.push(`${command}.${key}: kind ${s.kind}, schema ${kindsOf(s.schema).join('|')}`);
      }
    }
    assert.deepEqual(problems, []);
  });

  it('declare a setting that means the same in several commands once (no copies)', () => {
    const seen = new Map<string, { command: string; s: Setting }>();
    const copies: string[] = [];
    for (const [command, table] of tables) {
      for (const [key, s] of Object.entries(table)) {
        const id = `${key}\n${s.help}`;
        const first = seen.get(id);
        if (first === undefined) seen.set(id, { command, s });
        // The same declaration, or the one schema with a default of this command's own.
        else if (
          first.s !== s &&
          !(first.s.schema === s.schema && first.s.kind === s.kind && first.s.default !== s.default)
        )
          copies.push(`${command}.${key} copies ${first.command}.${key}`);
      }
    }
    assert.deepEqual(copies, []);
  });

  it('take every default from core/defaults.ts (literal only for off switches and empty lists)', () => {
    const literal = tables.flatMap(([command, table]) =>
      literalDefaults(table).map((l) => `${command}.${l}`),
    );
    assert.deepEqual(literal, []);
  });

  it('notice a default written in a table instead of core/defaults.ts', () => {
    const table = {
      retry: duration(positiveMs, 45_000).describe('how long to wait'),
      lifetime: duration(positiveMs, DEFAULTS.certLifetimeMs).describe('how long to live'),
    };
    assert.deepEqual(literalDefaults(table), ['retry: 45000']);
  });

  it('describe each setting with its default as written on a command line, for --help and the docs', () => {
    const ca = describeSettings('ca');
    assert.equal(ca.find((s) => s.key === 'certLifetime')?.default, '24h');
    assert.equal(ca.find((s) => s.key === 'listen')?.default, '127.0.0.1:8080');
    assert.equal(ca.find((s) => s.key === 'jwksCa')?.default, undefined);
    assert.deepEqual(ca.find((s) => s.key === 'tokenValidator')?.choices, ['jwks', 'tokenreview']);
  });
});

describe('config: paths in a --config file', () => {
  const files: Record<string, string> = {};
  const readFile = (p: string): string => {
    const f = files[p];
    if (f === undefined) throw new Error(`ENOENT: ${p}`);
    return f;
  };
  const proxyFlags = [
    '--identity-addr',
    '127.0.0.1:8080',
    '--identity-name',
    'linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local',
    '--local-identity',
    'web.emojivoto.serviceaccount.identity.linkerd.cluster.local',
  ];

  it("are relative to the file's folder, not the working directory", () => {
    files['/etc/mesh-a/proxy.yaml'] = 'trustAnchors: anchors.pem\ntokenFile: ../tokens/web\n';
    const { config } = loadConfig('proxy', {
      argv: ['--config', '/etc/mesh-a/proxy.yaml', ...proxyFlags],
      env: {},
      readFile,
    });
    assert.equal(config.trustAnchors, '/etc/mesh-a/anchors.pem');
    assert.equal(config.tokenFile, '/etc/tokens/web');
  });

  it('stay as written when absolute, and on the command line and in the environment', () => {
    files['/etc/mesh-b/proxy.yaml'] = 'trustAnchors: /srv/anchors.pem\n';
    const fromFile = loadConfig('proxy', {
      argv: ['--config', '/etc/mesh-b/proxy.yaml', '--token-file', 'token', ...proxyFlags],
      env: {},
      readFile,
    }).config;
    assert.equal(fromFile.trustAnchors, '/srv/anchors.pem');
    assert.equal(fromFile.tokenFile, 'token');
    const fromEnv = loadConfig('proxy', {
      argv: ['--config', '/etc/mesh-b/proxy.yaml', ...proxyFlags],
      env: { MESHID_TRUST_ANCHORS: 'here.pem', MESHID_TOKEN_FILE: 't' },
      readFile,
    }).config;
    assert.equal(fromEnv.trustAnchors, 'here.pem');
  });

  it('leave URLs and the keywords in-cluster and kubernetes alone; a state folder carries over', () => {
    files['/etc/ca/url.yaml'] =
      'jwks: https://kube.example/openid/v1/jwks\ntokenIssuer: https://kube.example\nissuerDir: issuer\ntrustAnchors: a.pem\nkubeconfig: in-cluster\n';
    const url = loadConfig('ca', { argv: ['--config', '/etc/ca/url.yaml'], env: {}, readFile });
    assert.equal(url.config.jwks, 'https://kube.example/openid/v1/jwks');
    assert.equal(url.config.kubeconfig, 'in-cluster');
    assert.equal(url.config.issuerDir, '/etc/ca/issuer');
    files['/etc/ca/kube.yaml'] = 'jwks: kubernetes\nissuerDir: issuer\ntrustAnchors: a.pem\n';
    const kube = loadConfig('ca', { argv: ['--config', '/etc/ca/kube.yaml'], env: {}, readFile });
    assert.equal(kube.config.jwks, 'kubernetes');
    files['/etc/ca/dir.yaml'] = 'dir: state\n';
    const dir = loadConfig('ca', { argv: ['--config', '/etc/ca/dir.yaml'], env: {}, readFile });
    assert.equal(dir.config.dir, '/etc/ca/state');
    assert.equal(dir.config.issuerDir, '/etc/ca/state/issuer');
    assert.equal(dir.config.jwks, '/etc/ca/state/token-signing/jwks.json');
  });

  it('resolve against a real file found by a relative --config path', () => {
    const root = mkdtempSync(join(tmpdir(), 'meshid-config-'));
    try {
      mkdirSync(join(root, 'mesh-a'));
      writeFileSync(join(root, 'mesh-a', 'identity.yaml'), 'file: leaf.pem\ndir: state\n');
      const { config } = loadConfig('identity', {
        argv: ['--config', relative(process.cwd(), join(root, 'mesh-a', 'identity.yaml'))],
        env: {},
      });
      assert.equal(config.file, join(root, 'mesh-a', 'leaf.pem'));
      assert.equal(config.dir, join(root, 'mesh-a', 'state'));
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
