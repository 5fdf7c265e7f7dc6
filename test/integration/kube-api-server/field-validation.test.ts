/**
 * Server-side field validation (`?fieldValidation=Strict|Warn|Ignore`, KEP-2885) on create,
 * update, the three JSON patches and server-side apply: the statuses, messages and Warning
 * headers of kube-apiserver, and unknown fields never stored. kubectl's side of it (the real
 * binary sends `fieldValidation=Strict`) is in install-kubectl.test.ts and first-hour.test.ts.
 */
import { strict as assert } from 'node:assert';
import { startKubeApiServer } from '../../support/kube-api-server/index.js';
import type { KubeApiServer } from '../../support/kube-api-server/index.js';
import { raw } from './helpers.js';

const NS = 'fv';
const DEPLOYMENTS = `/apis/apps/v1/namespaces/${NS}/deployments`;

/** A Deployment with one of each problem: a repeated known field, unknown fields, one repeated. */
function sloppy(name: string): string {
  return `{
  "apiVersion": "apps/v1",
  "kind": "Deployment",
  "metadata": { "name": "first", "name": "${name}", "labels": { "app": "web" }, "lables": {} },
  "spec": {
    "replica": 2,
    "typo": 1,
    "typo": 2,
    "paused": false,
    "paused": true,
    "selector": { "matchLabels": { "app": "web" } },
    "template": {
      "metadata": { "labels": { "app": "web" } },
      "spec": {
        "containers": [
          { "name": "web", "image": "web:1", "imagePullPolicy": "Always", "imagePullPolicy": "Never", "port": 80 }
        ]
      }
    }
  }
}`;
}

const SLOPPY_PROBLEMS = [
  'duplicate field "metadata.name"',
  'unknown field "metadata.lables"',
  'unknown field "spec.replica"',
  'unknown field "spec.typo"',
  'duplicate field "spec.paused"',
  'duplicate field "spec.template.spec.containers[0].imagePullPolicy"',
  'unknown field "spec.template.spec.containers[0].port"',
];

function clean(name: string, replicas = 1): string {
  return JSON.stringify({
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name },
    spec: {
      replicas,
      selector: { matchLabels: { app: 'web' } },
      template: {
        metadata: { labels: { app: 'web' } },
        spec: { containers: [{ name: 'web', image: 'web:1' }] },
      },
    },
  });
}

/** The texts of `Warning: 299 - "…"` headers. */
function warnings(headers: Record<string, string | string[] | undefined>): string[] {
  const h = headers['warning'];
  const all = Array.isArray(h) ? h.join(', ') : (h ?? '');
  return [...all.matchAll(/299 - ("(?:[^"\\]|\\.)*")/g)].map((m) => JSON.parse(m[1]!) as string);
}

describe('kube-api-server: server-side field validation (fieldValidation)', () => {
  let api: KubeApiServer;
  const call = async (
    method: string,
    path: string,
    body: string,
    contentType = 'application/json',
  ): Promise<{
    status: number;
    json: Record<string, unknown>;
    warnings: string[];
  }> => {
    const r = await raw(api.url, api.caPem, {
      method,
      path,
      body,
      contentType,
      token: api.adminToken,
    });
    return {
      status: r.status,
      json: JSON.parse(r.text) as Record<string, unknown>,
      warnings: warnings(r.headers),
    };
  };
  const stored = (name: string): Record<string, unknown> =>
    api.get({
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      namespace: NS,
      name,
    }) as unknown as Record<string, unknown>;

  before(async () => {
    api = await startKubeApiServer({ namespaces: [NS] });
  });
  after(async () => {
    await api.stop();
  });

  it('Strict create: 400 BadRequest naming every problem in the order of the body, nothing stored', async () => {
    const r = await call('POST', `${DEPLOYMENTS}?fieldValidation=Strict`, sloppy('strict'));
    assert.equal(r.status, 400);
    assert.equal(r.json['reason'], 'BadRequest');
    assert.equal(
      r.json['message'],
      `Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: ${SLOPPY_PROBLEMS.join(', ')}`,
    );
    assert.equal(api.list('apps/v1', 'Deployment', NS).length, 0);
  });

  for (const [label, query] of [
    ['Warn', '?fieldValidation=Warn'],
    ['no fieldValidation (the server default, Warn)', ''],
  ] as const)
    it(`${label} create: stored without the unknown fields, the last of a repeated one, one Warning each`, async () => {
      const name = `warn${query === '' ? '-default' : ''}`;
      const r = await call('POST', `${DEPLOYMENTS}${query}`, sloppy(name));
      assert.equal(r.status, 201, JSON.stringify(r.json));
      assert.deepEqual(r.warnings, SLOPPY_PROBLEMS);
      const d = stored(name) as {
        metadata: Record<string, unknown>;
        spec: Record<string, unknown> & {
          template: { spec: { containers: Record<string, unknown>[] } };
        };
      };
      assert.equal(d.metadata['lables'], undefined);
      assert.equal(d.spec['replica'], undefined);
      assert.equal(d.spec['typo'], undefined);
      assert.equal(d.spec['paused'], true);
      assert.equal(d.spec.template.spec.containers[0]!['imagePullPolicy'], 'Never');
      assert.equal(d.spec.template.spec.containers[0]!['port'], undefined);
    });

  it('Ignore create: stored without the unknown fields, and nothing said', async () => {
    const r = await call('POST', `${DEPLOYMENTS}?fieldValidation=Ignore`, sloppy('ignore'));
    assert.equal(r.status, 201);
    assert.deepEqual(r.warnings, []);
    assert.equal((stored('ignore')['spec'] as Record<string, unknown>)['typo'], undefined);
  });

  it('Strict update (PUT): the same 400, the object unchanged', async () => {
    assert.equal((await call('POST', DEPLOYMENTS, clean('put'))).status, 201);
    const rv = (stored('put')['metadata'] as { resourceVersion: string }).resourceVersion;
    const r = await call('PUT', `${DEPLOYMENTS}/put?fieldValidation=Strict`, sloppy('put'));
    assert.equal(r.status, 400);
    assert.match(
      String(r.json['message']),
      /strict decoding error: duplicate field "metadata\.name", unknown field "metadata\.lables"/,
    );
    assert.equal((stored('put')['metadata'] as { resourceVersion: string }).resourceVersion, rv);
  });

  it('Strict merge patch: 422 Invalid on `patch`, the repeated keys first, then the unknown fields in key order', async () => {
    assert.equal((await call('POST', DEPLOYMENTS, clean('merge'))).status, 201);
    const patch =
      '{"spec":{"zeta":1,"replicas":2,"replicas":3,"template":{"spec":{"alpha":true}}}}';
    const r = await call(
      'PATCH',
      `${DEPLOYMENTS}/merge?fieldValidation=Strict`,
      patch,
      'application/merge-patch+json',
    );
    assert.equal(r.status, 422);
    assert.equal(r.json['reason'], 'Invalid');
    const message = String(r.json['message']);
    assert.match(
      message,
      /^ "" is invalid: patch: Invalid value: "\{.*\}": strict decoding error: /,
    );
    assert.ok(
      message.endsWith(
        'strict decoding error: duplicate field "spec.replicas", unknown field "spec.template.spec.alpha", unknown field "spec.zeta"',
      ),
      message,
    );
    assert.equal((stored('merge')['spec'] as { replicas: number }).replicas, 1);
  });

  it('Warn strategic merge patch (kubectl apply of a changed object): applied, unknown fields dropped, warned', async () => {
    assert.equal((await call('POST', DEPLOYMENTS, clean('smp'))).status, 201);
    const r = await call(
      'PATCH',
      `${DEPLOYMENTS}/smp?fieldValidation=Warn`,
      '{"spec":{"replicas":4,"replics":5}}',
      'application/strategic-merge-patch+json',
    );
    assert.equal(r.status, 200);
    assert.deepEqual(r.warnings, ['unknown field "spec.replics"']);
    const spec = stored('smp')['spec'] as Record<string, unknown>;
    assert.equal(spec['replicas'], 4);
    assert.equal(spec['replics'], undefined);
  });

  it('Strict strategic merge patch: the Invalid value is the patch as Go prints a map', async () => {
    const r = await call(
      'PATCH',
      `${DEPLOYMENTS}/smp?fieldValidation=Strict`,
      '{"spec":{"replics":5}}',
      'application/strategic-merge-patch+json',
    );
    assert.equal(r.status, 422);
    assert.equal(
      r.json['message'],
      ' "" is invalid: patch: Invalid value: "map[spec:map[replics:5]]": strict decoding error: unknown field "spec.replics"',
    );
  });

  it("Strict JSON patch: the operations' own unknown and repeated members, then the unknown fields", async () => {
    assert.equal((await call('POST', DEPLOYMENTS, clean('jsonpatch'))).status, 201);
    const r = await call(
      'PATCH',
      `${DEPLOYMENTS}/jsonpatch?fieldValidation=Strict`,
      '[{"op":"add","path":"/spec/extra","value":1,"note":"x"},{"op":"replace","path":"/spec/replicas","path":"/spec/replicas","value":2}]',
      'application/json-patch+json',
    );
    assert.equal(r.status, 422);
    assert.ok(
      String(r.json['message']).endsWith(
        'strict decoding error: json patch unknown field "[0].note", json patch duplicate field "[1].path", unknown field "spec.extra"',
      ),
      String(r.json['message']),
    );
  });

  it('server-side apply: an unknown field fails the typed conversion (500) whatever the directive', async () => {
    for (const query of ['?fieldValidation=Ignore', '?fieldValidation=Strict']) {
      const r = await call(
        'PATCH',
        `${DEPLOYMENTS}/ssa?fieldManager=test${query === '' ? '' : `&${query.slice(1)}`}`,
        JSON.stringify({
          apiVersion: 'apps/v1',
          kind: 'Deployment',
          metadata: { name: 'ssa' },
          spec: { template: { spec: { containers: [{ name: 'web', image: 'web:1', port: 80 }] } } },
        }),
        'application/apply-patch+yaml',
      );
      assert.equal(r.status, 500);
      assert.equal(r.json['reason'], undefined);
      assert.equal(
        r.json['message'],
        'failed to create typed patch object (fv/ssa; apps/v1, Kind=Deployment): .spec.template.spec.containers[name="web"].port: field not declared in schema',
      );
    }
    assert.equal(
      api.list('apps/v1', 'Deployment', NS).filter((d) => d.metadata.name === 'ssa').length,
      0,
    );
  });

  it('server-side apply: repeated keys named by line, refused (Strict) or warned about (Warn)', async () => {
    const body = [
      'apiVersion: v1',
      'kind: ConfigMap',
      'metadata:',
      '  name: ssa-cm',
      'data:',
      '  a: "1"',
      '  a: "2"',
      '',
    ].join('\n');
    const path = `/api/v1/namespaces/${NS}/configmaps/ssa-cm?fieldManager=test`;
    const strict = await call(
      'PATCH',
      `${path}&fieldValidation=Strict`,
      body,
      'application/apply-patch+yaml',
    );
    assert.equal(strict.status, 400);
    assert.equal(
      strict.json['message'],
      'error strict decoding YAML: error converting YAML to JSON: yaml: unmarshal errors:\n  line 7: key "a" already set in map',
    );
    const warn = await call('PATCH', path, body, 'application/apply-patch+yaml');
    assert.equal(warn.status, 201);
    assert.deepEqual(warn.warnings, ['line 7: key "a" already set in map']);
    assert.deepEqual(
      api.get({ apiVersion: 'v1', kind: 'ConfigMap', namespace: NS, name: 'ssa-cm' })?.['data'],
      { a: '2' },
    );
  });

  it('a YAML body: repeated keys by line, then the unknown fields in key order', async () => {
    const body = [
      'apiVersion: v1',
      'kind: ConfigMap',
      'metadata:',
      '  name: yaml-cm',
      'dta: {}',
      'data:',
      '  a: "1"',
      'binaryData: {}',
      'data: {}',
      '',
    ].join('\n');
    const r = await call(
      'POST',
      `/api/v1/namespaces/${NS}/configmaps?fieldValidation=Strict`,
      body,
      'application/yaml',
    );
    assert.equal(r.status, 400);
    assert.equal(
      r.json['message'],
      'ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: yaml: unmarshal errors:\n  line 9: key "data" already set in map, unknown field "dta"',
    );
  });

  it('an unsupported fieldValidation value is refused as the options validation does (422)', async () => {
    const r = await call('POST', `${DEPLOYMENTS}?fieldValidation=strict`, clean('lower'));
    assert.equal(r.status, 422);
    assert.equal(
      r.json['message'],
      'CreateOptions.meta.k8s.io "" is invalid: fieldValidation: Unsupported value: "strict": supported values: "", "Ignore", "Strict", "Warn"',
    );
  });

  it('every field a built-in kind has passes Strict: metadata, status, nested lists and maps', async () => {
    const r = await call(
      'POST',
      `/api/v1/namespaces/${NS}/secrets?fieldValidation=Strict`,
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: {
          name: 's',
          labels: { a: 'b' },
          annotations: { c: 'd' },
          ownerReferences: [{ apiVersion: 'v1', kind: 'ConfigMap', name: 'x', uid: 'u' }],
        },
        type: 'Opaque',
        immutable: false,
        stringData: { k: 'v' },
        data: { l: 'dg==' },
      }),
    );
    assert.equal(r.status, 201, JSON.stringify(r.json));
    assert.deepEqual(r.warnings, []);
  });
});
