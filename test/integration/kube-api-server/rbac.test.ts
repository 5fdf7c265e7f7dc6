/**
 * Authorization on the test server: RBAC from stored objects for service-account tokens, static
 * allow-lists of test users, the 403 wording, and access reviews decided by the same function.
 */
import { strict as assert } from 'node:assert';
import { AuthorizationV1Api, CoreV1Api, RbacAuthorizationV1Api } from '@kubernetes/client-node';
import { startKubeApiServer } from '../../support/kube-api-server/index.js';
import type { KubeApiServer } from '../../support/kube-api-server/index.js';
import { raw, statusOf } from './helpers.js';

const USER = 'system:serviceaccount:linkerd:linkerd-identity';

describe('kube-api-server: authorization', () => {
  let api: KubeApiServer;
  let saToken: string;

  before(async () => {
    api = await startKubeApiServer({ namespaces: ['linkerd', 'emojivoto'] });
    const rbac = api.kubeConfig().makeApiClient(RbacAuthorizationV1Api);
    const core = api.kubeConfig().makeApiClient(CoreV1Api);
    for (const name of ['linkerd-identity-issuer', 'other'])
      await core.createNamespacedSecret({
        namespace: 'linkerd',
        body: { metadata: { name }, stringData: { k: 'v' } },
      });
    await rbac.createNamespacedRole({
      namespace: 'linkerd',
      body: {
        metadata: { name: 'issuer-reader' },
        rules: [
          {
            apiGroups: [''],
            resources: ['secrets'],
            resourceNames: ['linkerd-identity-issuer'],
            verbs: ['get', 'watch'],
          },
        ],
      },
    });
    await rbac.createNamespacedRoleBinding({
      namespace: 'linkerd',
      body: {
        metadata: { name: 'issuer-reader' },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'issuer-reader' },
        subjects: [{ kind: 'ServiceAccount', name: 'linkerd-identity', namespace: 'linkerd' }],
      },
    });
    await rbac.createClusterRole({
      body: {
        metadata: { name: 'linkerd-identity:tokenreviews' },
        rules: [
          { apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] },
        ],
      },
    });
    await rbac.createClusterRoleBinding({
      body: {
        metadata: { name: 'linkerd-identity:tokenreviews' },
        roleRef: {
          apiGroup: 'rbac.authorization.k8s.io',
          kind: 'ClusterRole',
          name: 'linkerd-identity:tokenreviews',
        },
        subjects: [{ kind: 'ServiceAccount', name: 'linkerd-identity', namespace: 'linkerd' }],
      },
    });
    ({ token: saToken } = await api.mintToken({
      namespace: 'linkerd',
      serviceAccount: 'linkerd-identity',
    }));
  });
  after(async () => {
    await api.stop();
  });

  it('lets a ServiceAccount get the Secret its RoleBinding names, and nothing else', async () => {
    const core = api.kubeConfig({ token: saToken }).makeApiClient(CoreV1Api);
    const s = await core.readNamespacedSecret({
      namespace: 'linkerd',
      name: 'linkerd-identity-issuer',
    });
    assert.equal(s.metadata?.name, 'linkerd-identity-issuer');

    const other = await statusOf(
      core.readNamespacedSecret({ namespace: 'linkerd', name: 'other' }),
    );
    assert.equal(other.code, 403);
    assert.deepEqual(other.body, {
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: `secrets "other" is forbidden: User "${USER}" cannot get resource "secrets" in API group "" in the namespace "linkerd"`,
      reason: 'Forbidden',
      details: { name: 'other', kind: 'secrets' },
      code: 403,
    });

    const list = await statusOf(core.listNamespacedSecret({ namespace: 'linkerd' }));
    assert.equal(list.code, 403);
    assert.equal(
      list.body['message'],
      `secrets is forbidden: User "${USER}" cannot list resource "secrets" in API group "" in the namespace "linkerd"`,
    );
    const elsewhere = await statusOf(
      core.readNamespacedSecret({ namespace: 'emojivoto', name: 'linkerd-identity-issuer' }),
    );
    assert.equal(elsewhere.code, 403, 'a RoleBinding grants nothing outside its namespace');
    const cm = await statusOf(
      core.readNamespacedConfigMap({ namespace: 'linkerd', name: 'kube-root-ca.crt' }),
    );
    assert.equal(cm.code, 403);
    const nodes = await statusOf(core.listNamespace());
    assert.equal(
      nodes.body['message'],
      `namespaces is forbidden: User "${USER}" cannot list resource "namespaces" in API group "" at the cluster scope`,
    );
  });

  it('honours subresources, Group subjects and nonResourceURLs in RBAC', async () => {
    const rbac = api.kubeConfig().makeApiClient(RbacAuthorizationV1Api);
    await rbac.createClusterRole({
      body: {
        metadata: { name: 'token-minter' },
        rules: [
          { apiGroups: [''], resources: ['serviceaccounts/token'], verbs: ['create'] },
          { nonResourceURLs: ['/metrics'], verbs: ['get'] },
        ],
      },
    });
    await rbac.createNamespacedRoleBinding({
      namespace: 'emojivoto',
      body: {
        metadata: { name: 'all-sas-mint' },
        roleRef: {
          apiGroup: 'rbac.authorization.k8s.io',
          kind: 'ClusterRole',
          name: 'token-minter',
        },
        subjects: [
          { kind: 'Group', name: 'system:serviceaccounts', apiGroup: 'rbac.authorization.k8s.io' },
        ],
      },
    });
    const { token } = await api.mintToken({ namespace: 'emojivoto', serviceAccount: 'web' });
    const core = api.kubeConfig({ token }).makeApiClient(CoreV1Api);
    const tr = await core.createNamespacedServiceAccountToken({
      namespace: 'emojivoto',
      name: 'web',
      body: { spec: { audiences: ['identity.l5d.io'] } },
    });
    assert.ok(tr.status?.token);
    const sa = await statusOf(
      core.readNamespacedServiceAccount({ namespace: 'emojivoto', name: 'web' }),
    );
    assert.equal(sa.code, 403, 'serviceaccounts/token does not grant serviceaccounts');
    const metrics = await raw(api.url, api.caPem, { path: '/metrics', token });
    assert.equal(metrics.status, 403, 'nonResourceURLs only count in ClusterRoleBindings');
    const forbidden = JSON.parse(metrics.text) as { message: string };
    assert.equal(
      forbidden.message,
      'forbidden: User "system:serviceaccount:emojivoto:web" cannot get path "/metrics"',
    );
  });

  it('answers SelfSubjectAccessReviews of a ServiceAccount with the RBAC decision', async () => {
    const authz = api.kubeConfig({ token: saToken }).makeApiClient(AuthorizationV1Api);
    const ask = async (verb: string, name: string) =>
      (
        await authz.createSelfSubjectAccessReview({
          body: {
            spec: { resourceAttributes: { namespace: 'linkerd', verb, resource: 'secrets', name } },
          },
        })
      ).status!;
    const yes = await ask('get', 'linkerd-identity-issuer');
    assert.equal(yes.allowed, true);
    assert.match(yes.reason ?? '', /RoleBinding "issuer-reader\/linkerd"/);
    assert.equal((await ask('watch', 'linkerd-identity-issuer')).allowed, true);
    assert.equal((await ask('get', 'other')).allowed, false);
    assert.equal((await ask('delete', 'linkerd-identity-issuer')).allowed, false);
    const review = await authz.createSelfSubjectAccessReview({
      body: {
        spec: {
          resourceAttributes: {
            verb: 'create',
            group: 'authentication.k8s.io',
            resource: 'tokenreviews',
          },
        },
      },
    });
    assert.equal(review.status?.allowed, true);
  });

  it('enforces a static test user allow-list (verbs, groups, resources, names, namespaces) and SSAR agrees', async () => {
    const token = api.addUser({
      username: 'trust-bundle',
      rules: [
        {
          verbs: ['get', 'list', 'watch'],
          apiGroups: [''],
          resources: ['configmaps'],
          namespaces: ['linkerd'],
        },
        {
          verbs: ['update'],
          apiGroups: [''],
          resources: ['configmaps'],
          resourceNames: ['linkerd-identity-trust-roots'],
          namespaces: ['linkerd'],
        },
      ],
    });
    const core = api.kubeConfig({ token }).makeApiClient(CoreV1Api);
    await core.listNamespacedConfigMap({ namespace: 'linkerd' });
    const other = await statusOf(core.listNamespacedConfigMap({ namespace: 'emojivoto' }));
    assert.equal(other.code, 403);
    assert.equal(
      other.body['message'],
      'configmaps is forbidden: User "trust-bundle" cannot list resource "configmaps" in API group "" in the namespace "emojivoto"',
    );
    const create = await statusOf(
      core.createNamespacedConfigMap({
        namespace: 'linkerd',
        body: { metadata: { name: 'linkerd-identity-trust-roots' } },
      }),
    );
    assert.equal(create.code, 403);
    const authz = api.kubeConfig({ token }).makeApiClient(AuthorizationV1Api);
    const ssar = async (verb: string, namespace: string, name?: string) =>
      (
        await authz.createSelfSubjectAccessReview({
          body: {
            spec: {
              resourceAttributes: {
                namespace,
                verb,
                resource: 'configmaps',
                ...(name !== undefined ? { name } : {}),
              },
            },
          },
        })
      ).status!.allowed;
    assert.equal(await ssar('watch', 'linkerd'), true);
    assert.equal(await ssar('watch', 'emojivoto'), false);
    assert.equal(await ssar('update', 'linkerd', 'linkerd-identity-trust-roots'), true);
    assert.equal(await ssar('update', 'linkerd', 'something-else'), false);
    assert.equal(await ssar('create', 'linkerd'), false);
  });

  it('applies RBAC bindings to static users too, and answers SubjectAccessReviews for others', async () => {
    const rbac = api.kubeConfig().makeApiClient(RbacAuthorizationV1Api);
    await rbac.createClusterRoleBinding({
      body: {
        metadata: { name: 'viewers' },
        roleRef: {
          apiGroup: 'rbac.authorization.k8s.io',
          kind: 'ClusterRole',
          name: 'linkerd-identity:tokenreviews',
        },
        subjects: [{ kind: 'Group', name: 'reviewers', apiGroup: 'rbac.authorization.k8s.io' }],
      },
    });
    const token = api.addUser({ username: 'alice', groups: ['reviewers'] });
    const authz = api.kubeConfig().makeApiClient(AuthorizationV1Api);
    const sar = async (user: string, groups: string[]) =>
      (
        await authz.createSubjectAccessReview({
          body: {
            spec: {
              user,
              groups,
              resourceAttributes: {
                verb: 'create',
                group: 'authentication.k8s.io',
                resource: 'tokenreviews',
              },
            },
          },
        })
      ).status!.allowed;
    assert.equal(await sar('alice', ['reviewers']), true);
    assert.equal(await sar('bob', []), false);
    assert.equal(await sar(USER, []), true);
    const self = await api
      .kubeConfig({ token })
      .makeApiClient(AuthorizationV1Api)
      .createSelfSubjectAccessReview({
        body: {
          spec: {
            resourceAttributes: {
              verb: 'create',
              group: 'authentication.k8s.io',
              resource: 'tokenreviews',
            },
          },
        },
      });
    assert.equal(self.status?.allowed, true);
  });

  it('serves discovery and OIDC documents to any authenticated user, and OIDC anonymously', async () => {
    for (const path of ['/api', '/apis', '/api/v1', '/version', '/openid/v1/jwks']) {
      const r = await raw(api.url, api.caPem, { path, token: saToken });
      assert.equal(r.status, 200, path);
    }
    assert.equal((await raw(api.url, api.caPem, { path: '/openid/v1/jwks' })).status, 200);
    assert.equal(
      (await raw(api.url, api.caPem, { path: '/.well-known/openid-configuration' })).status,
      200,
    );
    assert.equal(
      (await raw(api.url, api.caPem, { path: '/apis' })).status,
      401,
      'discovery needs credentials',
    );
  });
});
