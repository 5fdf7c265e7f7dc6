/**
 * What the test double does for kubectl (test/integration/install-kubectl.test.ts runs kubectl
 * itself): OpenAPI v3 discovery with `fieldValidation` on the write operations, `null` members of
 * a body read as absent (TokenRequest's `expirationSeconds: null` → one hour), and the
 * rolled-out Deployment status `rollOut` writes.
 */
import { strict as assert } from 'node:assert';
import { startKubeApiServer } from '../../support/kube-api-server/index.js';
import type { KubeApiServer } from '../../support/kube-api-server/index.js';
import { raw } from './helpers.js';

interface Operation {
  parameters: { name: string; in: string }[];
  'x-kubernetes-action': string;
  'x-kubernetes-group-version-kind': { group: string; version: string; kind: string };
}

describe('kube-api-server: what kubectl needs (OpenAPI v3, null fields, Deployment status)', () => {
  let api: KubeApiServer;
  const get = async (path: string): Promise<{ status: number; json: unknown }> => {
    const r = await raw(api.url, api.caPem, { path, token: api.adminToken });
    return { status: r.status, json: JSON.parse(r.text) as unknown };
  };

  before(async () => {
    api = await startKubeApiServer({ namespaces: ['linkerd'] });
  });
  after(async () => {
    await api.stop();
  });

  it('GET /openapi/v3 lists a document per group-version, each URL with a content hash', async () => {
    const { status, json } = await get('/openapi/v3');
    assert.equal(status, 200);
    const paths = (json as { paths: Record<string, { serverRelativeURL: string }> }).paths;
    for (const gv of ['api/v1', 'apis/apps/v1', 'apis/cert-manager.io/v1', 'apis/policy/v1'])
      assert.match(
        paths[gv]?.serverRelativeURL ?? '',
        new RegExp(`^/openapi/v3/${gv}\\?hash=[0-9A-F]{128}$`),
        gv,
      );
    assert.equal(paths['apis/apps/v1beta1'], undefined);
  });

  it("a group-version's document has each kind's operations, with fieldValidation on create, update and patch", async () => {
    const root = (await get('/openapi/v3')).json as {
      paths: Record<string, { serverRelativeURL: string }>;
    };
    const { status, json } = await get(root.paths['apis/apps/v1']!.serverRelativeURL);
    assert.equal(status, 200);
    const doc = json as { openapi: string; paths: Record<string, Record<string, Operation>> };
    assert.equal(doc.openapi, '3.0.0');
    const item = doc.paths['/apis/apps/v1/namespaces/{namespace}/deployments/{name}'];
    const collection = doc.paths['/apis/apps/v1/namespaces/{namespace}/deployments'];
    assert.ok(item !== undefined && collection !== undefined, Object.keys(doc.paths).join(' '));
    for (const [op, action] of [
      [item['patch'], 'patch'],
      [item['put'], 'put'],
      [collection['post'], 'post'],
    ] as const) {
      assert.equal(op?.['x-kubernetes-action'], action);
      assert.deepEqual(op?.['x-kubernetes-group-version-kind'], {
        group: 'apps',
        version: 'v1',
        kind: 'Deployment',
      });
      assert.ok(op?.parameters.some((p) => p.name === 'fieldValidation' && p.in === 'query'));
    }
    assert.equal(
      item['get']?.parameters.some((p) => p.name === 'fieldValidation'),
      false,
    );
    assert.ok(doc.paths['/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status']);
    assert.equal((await get('/openapi/v3/apis/apps/v2')).status, 404);
  });

  it('reads null members of a body as absent: a TokenRequest with expirationSeconds null lasts an hour', async () => {
    api.createServiceAccount('linkerd', 'linkerd-identity');
    const request = (expirationSeconds: unknown): ReturnType<typeof raw> =>
      raw(api.url, api.caPem, {
        method: 'POST',
        path: '/api/v1/namespaces/linkerd/serviceaccounts/linkerd-identity/token',
        token: api.adminToken,
        body: JSON.stringify({
          kind: 'TokenRequest',
          apiVersion: 'authentication.k8s.io/v1',
          metadata: { creationTimestamp: null },
          spec: { audiences: null, expirationSeconds, boundObjectRef: null },
          status: { token: '', expirationTimestamp: null },
        }),
      });
    const ok = await request(null);
    assert.equal(ok.status, 201, ok.text);
    const body = JSON.parse(ok.text) as {
      spec: { expirationSeconds: number; audiences: string[] };
    };
    assert.equal(body.spec.expirationSeconds, 3600);
    assert.deepEqual(body.spec.audiences, api.apiAudiences);
    // A real zero is still refused, as the API does.
    const zero = await request(0);
    assert.equal(zero.status, 422);
    assert.match(
      zero.text,
      /spec\.expirationSeconds: Invalid value: 0: may not specify a duration less than 10 minutes/,
    );
  });

  it('rollOut writes the status kubectl reads: the generation observed, every replica available', async () => {
    api.create({
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'linkerd-identity', namespace: 'linkerd' },
      spec: {
        replicas: 2,
        selector: { matchLabels: { app: 'ca' } },
        template: {
          metadata: { labels: { app: 'ca' } },
          spec: { containers: [{ name: 'ca', image: 'registry.example.com/meshid:v0.1.0' }] },
        },
      },
    });
    const ref = {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      namespace: 'linkerd',
      name: 'linkerd-identity',
    };
    assert.equal(api.get(ref)?.['status'], undefined, 'no controller has observed it yet');
    api.rollOut('linkerd', 'linkerd-identity');
    const d = api.get(ref)!;
    const status = d['status'] as {
      observedGeneration: number;
      replicas: number;
      updatedReplicas: number;
      readyReplicas: number;
      availableReplicas: number;
      conditions: { type: string; status: string; reason: string }[];
    };
    assert.equal(status.observedGeneration, d.metadata.generation);
    assert.deepEqual(
      [status.replicas, status.updatedReplicas, status.readyReplicas, status.availableReplicas],
      [2, 2, 2, 2],
    );
    assert.deepEqual(
      status.conditions.map((c) => [c.type, c.status, c.reason]),
      [
        ['Available', 'True', 'MinimumReplicasAvailable'],
        ['Progressing', 'True', 'NewReplicaSetAvailable'],
      ],
    );
    assert.throws(() => api.rollOut('linkerd', 'missing'), /deployments\.apps "missing" not found/);
  });
});
