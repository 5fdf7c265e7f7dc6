/**
 * The test server's storage semantics through @kubernetes/client-node: CRUD, the Status body of
 * each error, optimistic concurrency, patches, selectors, Secrets, generateName, namespaces,
 * discovery and typed objects through KubernetesObjectApi.
 */
import { strict as assert } from 'node:assert';
import {
  AppsV1Api,
  CoreV1Api,
  CustomObjectsApi,
  EventsV1Api,
  KubernetesObjectApi,
  PatchStrategy,
  setHeaderOptions,
} from '@kubernetes/client-node';
import type { KubernetesObject, V1Deployment } from '@kubernetes/client-node';
import { startKubeApiServer } from '../../support/kube-api-server/index.js';
import type { KubeApiServer } from '../../support/kube-api-server/index.js';
import { raw, statusOf } from './helpers.js';

describe('kube-api-server: storage semantics', () => {
  let api: KubeApiServer;
  let core: CoreV1Api;

  before(async () => {
    api = await startKubeApiServer({ namespaces: ['linkerd'] });
    core = api.kubeConfig().makeApiClient(CoreV1Api);
  });
  after(async () => {
    await api.stop();
  });

  it('creates, reads, lists, updates and deletes a ConfigMap with server-owned metadata', async () => {
    const created = await core.createNamespacedConfigMap({
      namespace: 'linkerd',
      body: { metadata: { name: 'crud', labels: { app: 'x' } }, data: { a: '1' } },
    });
    assert.equal(created.metadata?.namespace, 'linkerd');
    assert.match(created.metadata?.uid ?? '', /^[0-9a-f-]{36}$/);
    assert.ok(created.metadata?.creationTimestamp instanceof Date);
    const rv1 = Number(created.metadata?.resourceVersion);
    assert.ok(rv1 > 0);

    const read = await core.readNamespacedConfigMap({ namespace: 'linkerd', name: 'crud' });
    assert.deepEqual(read.data, { a: '1' });

    read.data = { a: '2' };
    const updated = await core.replaceNamespacedConfigMap({
      namespace: 'linkerd',
      name: 'crud',
      body: read,
    });
    assert.equal(updated.data?.['a'], '2');
    assert.ok(
      Number(updated.metadata?.resourceVersion) > rv1,
      'every write bumps the global resourceVersion',
    );
    assert.equal(updated.metadata?.uid, created.metadata?.uid);

    const list = await core.listNamespacedConfigMap({ namespace: 'linkerd' });
    assert.ok(list.items.some((i) => i.metadata?.name === 'crud'));
    assert.equal(list.metadata?.resourceVersion, api.resourceVersion);

    await core.deleteNamespacedConfigMap({ namespace: 'linkerd', name: 'crud' });
    const gone = await statusOf(
      core.readNamespacedConfigMap({ namespace: 'linkerd', name: 'crud' }),
    );
    assert.equal(gone.code, 404);
  });

  it('answers a missing object with a NotFound Status shaped like the real API', async () => {
    const { code, body } = await statusOf(
      core.readNamespacedConfigMap({ namespace: 'linkerd', name: 'nope' }),
    );
    assert.equal(code, 404);
    assert.deepEqual(body, {
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: 'configmaps "nope" not found',
      reason: 'NotFound',
      details: { name: 'nope', kind: 'configmaps' },
      code: 404,
    });
    const apps = api.kubeConfig().makeApiClient(AppsV1Api);
    const d = await statusOf(apps.readNamespacedDeployment({ namespace: 'linkerd', name: 'nope' }));
    assert.equal(d.body['message'], 'deployments.apps "nope" not found');
    assert.deepEqual(d.body['details'], { name: 'nope', group: 'apps', kind: 'deployments' });
  });

  it('refuses a duplicate create with 409 AlreadyExists', async () => {
    await core.createNamespacedConfigMap({
      namespace: 'linkerd',
      body: { metadata: { name: 'dup' } },
    });
    const { code, body } = await statusOf(
      core.createNamespacedConfigMap({ namespace: 'linkerd', body: { metadata: { name: 'dup' } } }),
    );
    assert.equal(code, 409);
    assert.equal(body['reason'], 'AlreadyExists');
    assert.equal(body['message'], 'configmaps "dup" already exists');
  });

  it('refuses an update with a stale resourceVersion with 409 Conflict and the real wording', async () => {
    const first = await core.createNamespacedConfigMap({
      namespace: 'linkerd',
      body: { metadata: { name: 'cas' }, data: { n: '0' } },
    });
    const stale = structuredClone(first);
    first.data = { n: '1' };
    await core.replaceNamespacedConfigMap({ namespace: 'linkerd', name: 'cas', body: first });
    stale.data = { n: 'stale' };
    const { code, body } = await statusOf(
      core.replaceNamespacedConfigMap({ namespace: 'linkerd', name: 'cas', body: stale }),
    );
    assert.equal(code, 409);
    assert.equal(body['reason'], 'Conflict');
    assert.equal(
      body['message'],
      'Operation cannot be fulfilled on configmaps "cas": the object has been modified; please apply your changes to the latest version and try again',
    );
    const now = await core.readNamespacedConfigMap({ namespace: 'linkerd', name: 'cas' });
    assert.equal(now.data?.['n'], '1', 'the stale write changed nothing');
    // Without a resourceVersion the update is unconditional, as on a real server.
    const blind = await core.replaceNamespacedConfigMap({
      namespace: 'linkerd',
      name: 'cas',
      body: { metadata: { name: 'cas' }, data: { n: 'blind' } },
    });
    assert.equal(blind.data?.['n'], 'blind');
  });

  it('validates names (DNS-1123) and requires a name or generateName with 422 Invalid', async () => {
    const bad = await statusOf(
      core.createNamespacedConfigMap({
        namespace: 'linkerd',
        body: { metadata: { name: 'Bad_Name' } },
      }),
    );
    assert.equal(bad.code, 422);
    assert.equal(bad.body['reason'], 'Invalid');
    assert.match(
      String(bad.body['message']),
      /^ConfigMap "Bad_Name" is invalid: metadata\.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain/,
    );
    const details = bad.body['details'] as {
      kind: string;
      causes: { field: string; reason: string }[];
    };
    assert.equal(details.kind, 'ConfigMap');
    assert.deepEqual(
      details.causes.map((c) => [c.field, c.reason]),
      [['metadata.name', 'FieldValueInvalid']],
    );

    const none = await statusOf(
      core.createNamespacedConfigMap({ namespace: 'linkerd', body: { metadata: {} } }),
    );
    assert.equal(none.code, 422);
    assert.match(
      String(none.body['message']),
      /metadata\.name: Required value: name or generateName is required/,
    );

    const ns = await statusOf(core.createNamespace({ body: { metadata: { name: 'a.b' } } }));
    assert.equal(ns.code, 422, 'namespaces are DNS-1123 labels, no dots');
  });

  it('refuses a body whose namespace or kind does not match the request with 400 BadRequest', async () => {
    const ns = await statusOf(
      core.createNamespacedConfigMap({
        namespace: 'linkerd',
        body: { metadata: { name: 'm', namespace: 'default' } },
      }),
    );
    assert.equal(ns.code, 400);
    assert.equal(ns.body['reason'], 'BadRequest');
    assert.equal(
      ns.body['message'],
      'the namespace of the provided object does not match the namespace sent on the request',
    );
    const kind = await raw(api.url, api.caPem, {
      method: 'POST',
      path: '/api/v1/namespaces/linkerd/configmaps',
      token: api.adminToken,
      body: JSON.stringify({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'k' } }),
    });
    assert.equal(kind.status, 400);
    const version = await raw(api.url, api.caPem, {
      method: 'POST',
      path: '/api/v1/namespaces/linkerd/configmaps',
      token: api.adminToken,
      body: JSON.stringify({ apiVersion: 'apps/v1', kind: 'ConfigMap', metadata: { name: 'k' } }),
    });
    assert.equal(version.status, 400);
    assert.match(
      version.text,
      /the API version in the data \(apps\/v1\) does not match the expected API version \(v1\)/,
    );
  });

  it('requires the namespace to exist (404 namespaces "x" not found)', async () => {
    const { code, body } = await statusOf(
      core.createNamespacedConfigMap({ namespace: 'ghost', body: { metadata: { name: 'a' } } }),
    );
    assert.equal(code, 404);
    assert.equal(body['message'], 'namespaces "ghost" not found');
    assert.deepEqual(body['details'], { name: 'ghost', kind: 'namespaces' });
  });

  it('seeds a new namespace with its default ServiceAccount and kube-root-ca.crt, and deleting it removes its contents', async () => {
    await core.createNamespace({ body: { metadata: { name: 'scratch' } } });
    const sa = await core.readNamespacedServiceAccount({ namespace: 'scratch', name: 'default' });
    assert.ok(sa.metadata?.uid);
    const root = await core.readNamespacedConfigMap({
      namespace: 'scratch',
      name: 'kube-root-ca.crt',
    });
    assert.equal(root.data?.['ca.crt'], api.caPem);
    await core.createNamespacedConfigMap({
      namespace: 'scratch',
      body: { metadata: { name: 'c' } },
    });
    await core.deleteNamespace({ name: 'scratch' });
    assert.equal(
      (await statusOf(core.readNamespacedConfigMap({ namespace: 'scratch', name: 'c' }))).code,
      404,
    );
  });

  it('applies merge patches, JSON patches and strategic merge patches (as merge)', async () => {
    await core.createNamespacedConfigMap({
      namespace: 'linkerd',
      body: { metadata: { name: 'p' }, data: { a: '1', b: '2' } },
    });
    const merged = await core.patchNamespacedConfigMap(
      {
        namespace: 'linkerd',
        name: 'p',
        body: { data: { a: null, c: '3' }, metadata: { labels: { x: 'y' } } },
      },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    assert.deepEqual(merged.data, { b: '2', c: '3' });
    assert.deepEqual(merged.metadata?.labels, { x: 'y' });
    // client-node's default patch content type is JSON patch.
    const jp = await core.patchNamespacedConfigMap({
      namespace: 'linkerd',
      name: 'p',
      body: [
        { op: 'test', path: '/data/b', value: '2' },
        { op: 'replace', path: '/data/b', value: '20' },
        { op: 'add', path: '/data/d', value: '4' },
      ],
    });
    assert.deepEqual(jp.data, { b: '20', c: '3', d: '4' });
    const failedTest = await statusOf(
      core.patchNamespacedConfigMap({
        namespace: 'linkerd',
        name: 'p',
        body: [{ op: 'test', path: '/data/b', value: 'nope' }],
      }),
    );
    assert.equal(failedTest.code, 422);
    const sm = await core.patchNamespacedConfigMap(
      { namespace: 'linkerd', name: 'p', body: { data: { e: '5' } } },
      setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
    );
    assert.equal(sm.data?.['e'], '5');
    // A patch carrying a stale resourceVersion is a precondition, as on a real server.
    const conflict = await statusOf(
      core.patchNamespacedConfigMap(
        {
          namespace: 'linkerd',
          name: 'p',
          body: { metadata: { resourceVersion: '1' }, data: { f: '6' } },
        },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      ),
    );
    assert.equal(conflict.code, 409);
    const missing = await statusOf(
      core.patchNamespacedConfigMap(
        { namespace: 'linkerd', name: 'absent', body: { data: {} } },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      ),
    );
    assert.equal(missing.code, 404);
  });

  it('selects by label (=, ==, !=, in, notin, exists, !key) and by metadata.name/namespace fields', async () => {
    await core.createNamespace({ body: { metadata: { name: 'sel' } } });
    const mk = (name: string, labels: Record<string, string>) =>
      core.createNamespacedConfigMap({ namespace: 'sel', body: { metadata: { name, labels } } });
    await mk('a', { tier: 'web', env: 'prod' });
    await mk('b', { tier: 'db', env: 'prod' });
    await mk('c', { tier: 'web' });
    const names = async (labelSelector?: string, fieldSelector?: string) =>
      (
        await core.listNamespacedConfigMap({
          namespace: 'sel',
          ...(labelSelector !== undefined ? { labelSelector } : {}),
          ...(fieldSelector !== undefined ? { fieldSelector } : {}),
        })
      ).items.map((i) => i.metadata?.name);
    assert.deepEqual(await names('tier=web'), ['a', 'c']);
    assert.deepEqual(await names('tier==web,env=prod'), ['a']);
    assert.deepEqual(await names('tier!=web'), ['b', 'kube-root-ca.crt']);
    assert.deepEqual(await names('tier in (db, web),env'), ['a', 'b']);
    assert.deepEqual(await names('tier notin (web)'), ['b', 'kube-root-ca.crt']);
    assert.deepEqual(await names('!env'), ['c', 'kube-root-ca.crt']);
    assert.deepEqual(await names(undefined, 'metadata.name=b'), ['b']);
    assert.deepEqual(await names(undefined, 'metadata.name!=b,metadata.namespace=sel'), [
      'a',
      'c',
      'kube-root-ca.crt',
    ]);
    const unsupported = await statusOf(
      core.listNamespacedConfigMap({ namespace: 'sel', fieldSelector: 'data.x=1' }),
    );
    assert.equal(unsupported.code, 400);
    assert.match(String(unsupported.body['message']), /field label not supported: data\.x/);
    const all = await core.listConfigMapForAllNamespaces({
      fieldSelector: 'metadata.namespace=sel',
    });
    assert.equal(all.items.length, 4);
  });

  it('pages a list with limit and continue', async () => {
    const first = await core.listNamespacedConfigMap({ namespace: 'sel', limit: 2 });
    assert.equal(first.items.length, 2);
    assert.equal(first.metadata?.remainingItemCount, 2);
    const second = await core.listNamespacedConfigMap({
      namespace: 'sel',
      limit: 2,
      _continue: first.metadata!._continue!,
    });
    assert.deepEqual(
      second.items.map((i) => i.metadata?.name),
      ['c', 'kube-root-ca.crt'],
    );
    assert.equal(second.metadata?._continue, undefined);
  });

  it('merges Secret stringData into base64 data on create and update, and defaults the type', async () => {
    const s = await core.createNamespacedSecret({
      namespace: 'linkerd',
      body: {
        metadata: { name: 's' },
        data: { a: Buffer.from('x').toString('base64') },
        stringData: { b: 'hello' },
      },
    });
    assert.equal(s.type, 'Opaque');
    assert.equal(s.stringData, undefined);
    assert.deepEqual(s.data, { a: 'eA==', b: Buffer.from('hello').toString('base64') });
    s.stringData = { a: 'replaced' };
    const u = await core.replaceNamespacedSecret({ namespace: 'linkerd', name: 's', body: s });
    assert.equal(Buffer.from(u.data!['a']!, 'base64').toString(), 'replaced');
    const tls = await statusOf(
      core.createNamespacedSecret({
        namespace: 'linkerd',
        body: {
          metadata: { name: 't' },
          type: 'kubernetes.io/tls',
          stringData: { 'tls.crt': 'x' },
        },
      }),
    );
    assert.equal(tls.code, 422);
    assert.match(String(tls.body['message']), /data\[tls\.key\]: Required value/);
  });

  it('generates names from generateName', async () => {
    const a = await core.createNamespacedConfigMap({
      namespace: 'linkerd',
      body: { metadata: { generateName: 'gen-' } },
    });
    const b = await core.createNamespacedConfigMap({
      namespace: 'linkerd',
      body: { metadata: { generateName: 'gen-' } },
    });
    assert.match(a.metadata?.name ?? '', /^gen-[bcdfghjklmnpqrstvwxz2456789]{5}$/);
    assert.notEqual(a.metadata?.name, b.metadata?.name);
  });

  it('serves discovery so KubernetesObjectApi can create, read, patch and delete a Deployment', async () => {
    const objects = KubernetesObjectApi.makeApiClient(api.kubeConfig());
    const spec: V1Deployment = {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'web', namespace: 'linkerd' },
      spec: {
        replicas: 1,
        selector: { matchLabels: { app: 'web' } },
        template: {
          metadata: { labels: { app: 'web' } },
          spec: { containers: [{ name: 'web', image: 'web:1' }] },
        },
      },
      status: { replicas: 99 },
    };
    const created = await objects.create(spec);
    assert.equal(created.metadata?.generation, 1);
    assert.equal(
      created.status,
      undefined,
      'status is dropped on create when there is a status subresource',
    );
    const read = await objects.read<V1Deployment>({
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'web', namespace: 'linkerd' },
    });
    assert.equal(read.spec?.replicas, 1);
    const patched = await objects.patch<V1Deployment>(
      {
        apiVersion: 'apps/v1',
        kind: 'Deployment',
        metadata: { name: 'web', namespace: 'linkerd' },
        spec: { replicas: 3 },
      } as V1Deployment,
      undefined,
      undefined,
      undefined,
      undefined,
      PatchStrategy.MergePatch,
    );
    assert.equal(patched.spec?.replicas, 3);
    assert.equal(patched.metadata?.generation, 2, 'a spec change bumps generation');
    const labelled = await objects.patch<V1Deployment>(
      {
        apiVersion: 'apps/v1',
        kind: 'Deployment',
        metadata: { name: 'web', namespace: 'linkerd', labels: { a: 'b' } },
      } as V1Deployment,
      undefined,
      undefined,
      undefined,
      undefined,
      PatchStrategy.MergePatch,
    );
    assert.equal(labelled.metadata?.generation, 2, 'a metadata change does not');
    await objects.delete({
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'web', namespace: 'linkerd' },
    });
    const apps = api.kubeConfig().makeApiClient(AppsV1Api);
    assert.equal(
      (await statusOf(apps.readNamespacedDeployment({ namespace: 'linkerd', name: 'web' }))).code,
      404,
    );
  });

  it('serves cert-manager resources as custom resources, with a status subresource', async () => {
    const kc = api.kubeConfig();
    const objects = KubernetesObjectApi.makeApiClient(kc);
    const cert: KubernetesObject & { spec: Record<string, unknown> } = {
      apiVersion: 'cert-manager.io/v1',
      kind: 'Certificate',
      metadata: { name: 'linkerd-identity-issuer', namespace: 'linkerd' },
      spec: {
        secretName: 'linkerd-identity-issuer',
        isCA: true,
        issuerRef: { name: 'root', kind: 'ClusterIssuer' },
      },
    };
    await objects.create(cert);
    const custom = kc.makeApiClient(CustomObjectsApi);
    const got = (await custom.getNamespacedCustomObject({
      group: 'cert-manager.io',
      version: 'v1',
      namespace: 'linkerd',
      plural: 'certificates',
      name: 'linkerd-identity-issuer',
    })) as { spec: { isCA: boolean }; metadata: { resourceVersion: string } };
    assert.equal(got.spec.isCA, true);
    const withStatus = (await custom.replaceNamespacedCustomObjectStatus({
      group: 'cert-manager.io',
      version: 'v1',
      namespace: 'linkerd',
      plural: 'certificates',
      name: 'linkerd-identity-issuer',
      body: {
        ...got,
        spec: { changed: 'ignored' },
        status: { conditions: [{ type: 'Ready', status: 'True' }] },
      },
    })) as { spec: { isCA: boolean }; status: { conditions: unknown[] } };
    assert.equal(withStatus.spec.isCA, true, 'a status update leaves the spec alone');
    assert.equal(withStatus.status.conditions.length, 1);
    const bundles = await custom.listClusterCustomObject({
      group: 'trust.cert-manager.io',
      version: 'v1alpha1',
      plural: 'bundles',
    });
    assert.equal((bundles as { kind: string }).kind, 'BundleList');
    const patched = await objects.patch(
      { ...cert, spec: { duration: '48h' } },
      undefined,
      undefined,
      undefined,
      undefined,
      PatchStrategy.MergePatch,
    );
    assert.equal((patched as typeof cert).spec['duration'], '48h');
    await objects.delete(cert);
  });

  it('parses metav1.MicroTime as strictly as the real API (Date.toISOString is refused)', async () => {
    const events = api.kubeConfig().makeApiClient(EventsV1Api);
    const base = {
      metadata: { generateName: 'ev-' },
      reportingController: 'meshid.io/identity',
      reportingInstance: 'identity-0',
      action: 'Issue',
      reason: 'IssuerRotated',
      type: 'Normal',
      regarding: { kind: 'Secret', namespace: 'linkerd', name: 'linkerd-identity-issuer' },
      note: 'rotated',
    };
    const ms = await statusOf(
      events.createNamespacedEvent({
        namespace: 'linkerd',
        body: { ...base, eventTime: new Date('2024-01-02T03:04:05.123Z') },
      }),
    );
    assert.equal(ms.code, 400);
    assert.match(String(ms.body['message']), /cannot parse "\.123Z" as "\.000000"/);
    const ok = await events.createNamespacedEvent({
      namespace: 'linkerd',
      body: { ...base, eventTime: '2024-01-02T03:04:05.123000Z' as unknown as Date },
    });
    assert.equal(ok.reason, 'IssuerRotated');
    const missing = await statusOf(
      events.createNamespacedEvent({
        namespace: 'linkerd',
        body: {
          metadata: { name: 'bare' },
          eventTime: '2024-01-02T03:04:05.123000Z' as unknown as Date,
        },
      }),
    );
    assert.equal(missing.code, 422);
    assert.match(String(missing.body['message']), /reportingController: Required value/);
  });

  it('completes a deletion only when the last finalizer is removed', async () => {
    await core.createNamespacedConfigMap({
      namespace: 'linkerd',
      body: { metadata: { name: 'fin', finalizers: ['meshid.io/hold'] } },
    });
    await core.deleteNamespacedConfigMap({ namespace: 'linkerd', name: 'fin' });
    const held = await core.readNamespacedConfigMap({ namespace: 'linkerd', name: 'fin' });
    assert.ok(held.metadata?.deletionTimestamp instanceof Date);
    await core.patchNamespacedConfigMap(
      { namespace: 'linkerd', name: 'fin', body: { metadata: { finalizers: null } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    assert.equal(
      (await statusOf(core.readNamespacedConfigMap({ namespace: 'linkerd', name: 'fin' }))).code,
      404,
    );
  });

  it('answers 401 with an Unauthorized Status without a token or with an unknown one', async () => {
    for (const token of [undefined, 'not-a-token']) {
      const r = await raw(api.url, api.caPem, {
        path: '/api/v1/namespaces/linkerd/configmaps',
        ...(token !== undefined ? { token } : {}),
      });
      assert.equal(r.status, 401);
      assert.deepEqual(JSON.parse(r.text), {
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Failure',
        message: 'Unauthorized',
        reason: 'Unauthorized',
        code: 401,
      });
    }
    const health = await raw(api.url, api.caPem, { path: '/healthz' });
    assert.equal(health.status, 200, 'public endpoints are served anonymously');
    const version = await raw(api.url, api.caPem, { path: '/version', token: 'not-a-token' });
    assert.equal(
      version.status,
      401,
      'a bad token is refused even where anonymous access is allowed',
    );
  });

  it('serves /api, /apis and group discovery documents', async () => {
    const apis = JSON.parse(
      (await raw(api.url, api.caPem, { path: '/apis', token: api.adminToken })).text,
    ) as {
      kind: string;
      groups: { name: string; preferredVersion: { groupVersion: string } }[];
    };
    assert.equal(apis.kind, 'APIGroupList');
    for (const g of [
      'apps',
      'rbac.authorization.k8s.io',
      'cert-manager.io',
      'trust.cert-manager.io',
      'admissionregistration.k8s.io',
      'events.k8s.io',
      'policy',
    ])
      assert.ok(
        apis.groups.some((x) => x.name === g),
        g,
      );
    const v1 = JSON.parse(
      (await raw(api.url, api.caPem, { path: '/api/v1', token: api.adminToken })).text,
    ) as {
      groupVersion: string;
      resources: { name: string; kind: string; namespaced: boolean; verbs: string[] }[];
    };
    assert.equal(v1.groupVersion, 'v1');
    const token = v1.resources.find((r) => r.name === 'serviceaccounts/token');
    assert.equal(token?.kind, 'TokenRequest');
    assert.deepEqual(token?.verbs, ['create']);
    assert.equal(v1.resources.find((r) => r.name === 'namespaces')?.namespaced, false);
  });
});
