/**
 * Service-account tokens on the test server: TokenRequest claims verified against the JWKS found
 * through OIDC discovery, TokenReview audience rules, expiry on the injected clock, bound-object
 * invalidation, tokens as API credentials, and signing-key rotation.
 */
import { strict as assert } from 'node:assert';
import { AuthenticationV1Api, CoreV1Api } from '@kubernetes/client-node';
import type { V1TokenReviewStatus } from '@kubernetes/client-node';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import type { JSONWebKeySet } from 'jose';
import { startKubeApiServer } from '../../support/kube-api-server/index.js';
import type { KubeApiServer } from '../../support/kube-api-server/index.js';
import { raw, statusOf } from './helpers.js';

const AUD = 'identity.l5d.io';
const ISSUER = 'https://kubernetes.default.svc.cluster.local';

describe('kube-api-server: service-account tokens', () => {
  let api: KubeApiServer;
  let now = Date.UTC(2030, 0, 1);
  let core: CoreV1Api;
  let authn: AuthenticationV1Api;

  // One server for the suite (RSA key generation is slow on a busy machine); each test starts
  // from a fresh namespace and the same clock reading.
  before(async () => {
    api = await startKubeApiServer({ now: () => now });
    core = api.kubeConfig().makeApiClient(CoreV1Api);
    authn = api.kubeConfig().makeApiClient(AuthenticationV1Api);
  });
  beforeEach(() => {
    now = Date.UTC(2030, 0, 1);
    if (api.get({ apiVersion: 'v1', kind: 'Namespace', name: 'emojivoto' }) !== undefined)
      api.delete({ apiVersion: 'v1', kind: 'Namespace', name: 'emojivoto' });
    api.createNamespace('emojivoto');
  });
  after(async () => {
    await api.stop();
  });

  async function review(token: string, audiences?: string[]): Promise<V1TokenReviewStatus> {
    const r = await authn.createTokenReview({
      body: { spec: { token, ...(audiences !== undefined ? { audiences } : {}) } },
    });
    return r.status!;
  }

  async function servedJwks(): Promise<{ issuer: string; jwks: JSONWebKeySet }> {
    const oidc = JSON.parse(
      (await raw(api.url, api.caPem, { path: '/.well-known/openid-configuration' })).text,
    ) as {
      issuer: string;
      jwks_uri: string;
      response_types_supported: string[];
      subject_types_supported: string[];
      id_token_signing_alg_values_supported: string[];
    };
    assert.equal(oidc.jwks_uri, `${api.url}/openid/v1/jwks`);
    assert.deepEqual(oidc.response_types_supported, ['id_token']);
    assert.deepEqual(oidc.subject_types_supported, ['public']);
    assert.deepEqual(oidc.id_token_signing_alg_values_supported, ['RS256']);
    const jwks = JSON.parse(
      (await raw(api.url, api.caPem, { path: new URL(oidc.jwks_uri).pathname })).text,
    ) as JSONWebKeySet;
    return { issuer: oidc.issuer, jwks };
  }

  it('issues a TokenRequest whose JWT verifies against the JWKS from OIDC discovery, with projected-token claims', async () => {
    await core.createNamespacedServiceAccount({
      namespace: 'emojivoto',
      body: { metadata: { name: 'web' } },
    });
    const pod = await core.createNamespacedPod({
      namespace: 'emojivoto',
      body: {
        metadata: { name: 'web-0' },
        spec: { serviceAccountName: 'web', containers: [{ name: 'web', image: 'web:1' }] },
      },
    });
    const sa = await core.readNamespacedServiceAccount({ namespace: 'emojivoto', name: 'web' });
    const tr = await core.createNamespacedServiceAccountToken({
      namespace: 'emojivoto',
      name: 'web',
      body: {
        spec: {
          audiences: [AUD],
          expirationSeconds: 3600,
          boundObjectRef: { kind: 'Pod', apiVersion: 'v1', name: 'web-0', uid: pod.metadata!.uid! },
        },
      },
    });
    const token = tr.status!.token!;
    assert.equal(tr.status!.expirationTimestamp!.getTime(), now + 3600_000);

    const { issuer, jwks } = await servedJwks();
    assert.equal(issuer, ISSUER);
    const header = decodeProtectedHeader(token);
    assert.equal(header.alg, 'RS256');
    assert.ok(jwks.keys.some((k) => k.kid === header.kid && k.use === 'sig' && k.alg === 'RS256'));
    const { payload } = await jwtVerify(token, createLocalJWKSet(jwks), {
      issuer: ISSUER,
      audience: AUD,
      currentDate: new Date(now),
    });
    assert.equal(payload.sub, 'system:serviceaccount:emojivoto:web');
    assert.deepEqual(payload.aud, [AUD]);
    assert.equal(payload.iat, now / 1000);
    assert.equal(payload.nbf, now / 1000);
    assert.equal(payload.exp, now / 1000 + 3600);
    assert.equal(typeof payload.jti, 'string');
    assert.deepEqual(payload['kubernetes.io'], {
      namespace: 'emojivoto',
      serviceaccount: { name: 'web', uid: sa.metadata!.uid },
      pod: { name: 'web-0', uid: pod.metadata!.uid },
    });
  });

  it('refuses TokenRequests for a missing ServiceAccount, a short expiry, a missing or replaced pod', async () => {
    const missing = await statusOf(
      core.createNamespacedServiceAccountToken({
        namespace: 'emojivoto',
        name: 'ghost',
        body: { spec: { audiences: [AUD] } },
      }),
    );
    assert.equal(missing.code, 404);
    assert.equal(missing.body['message'], 'serviceaccounts "ghost" not found');
    api.createServiceAccount('emojivoto', 'web');
    const short = await statusOf(
      core.createNamespacedServiceAccountToken({
        namespace: 'emojivoto',
        name: 'web',
        body: { spec: { audiences: [AUD], expirationSeconds: 599 } },
      }),
    );
    assert.equal(short.code, 422);
    assert.match(
      String(short.body['message']),
      /spec\.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes/,
    );
    const noPod = await statusOf(
      core.createNamespacedServiceAccountToken({
        namespace: 'emojivoto',
        name: 'web',
        body: {
          spec: {
            audiences: [AUD],
            boundObjectRef: { kind: 'Pod', apiVersion: 'v1', name: 'web-0' },
          },
        },
      }),
    );
    assert.equal(noPod.code, 404);
    assert.equal(noPod.body['message'], 'pods "web-0" not found');
    api.createPod('emojivoto', 'web-0', { serviceAccount: 'web' });
    const wrongUid = await statusOf(
      core.createNamespacedServiceAccountToken({
        namespace: 'emojivoto',
        name: 'web',
        body: {
          spec: {
            audiences: [AUD],
            boundObjectRef: { kind: 'Pod', apiVersion: 'v1', name: 'web-0', uid: 'not-the-uid' },
          },
        },
      }),
    );
    assert.equal(wrongUid.code, 409);
  });

  it('lets a test server allow shorter tokens (minTokenExpirationSeconds)', async () => {
    const short = await startKubeApiServer({ now: () => now, minTokenExpirationSeconds: 1 });
    try {
      const c = short.kubeConfig().makeApiClient(CoreV1Api);
      short.createServiceAccount('default', 'short');
      const tr = await c.createNamespacedServiceAccountToken({
        namespace: 'default',
        name: 'short',
        body: { spec: { audiences: [], expirationSeconds: 5 } },
      });
      assert.equal(tr.status!.expirationTimestamp!.getTime(), now + 5000);
      assert.deepEqual(tr.spec!.audiences, [ISSUER], 'audiences default to the API audiences');
    } finally {
      await short.stop();
    }
  });

  it('authenticates a token for its audience and reports the intersection of audiences', async () => {
    const { token, claims } = await api.mintToken({
      namespace: 'emojivoto',
      serviceAccount: 'web',
      pod: 'web-0',
      audiences: [AUD, 'other'],
    });
    const s = await review(token, [AUD, 'unrelated']);
    assert.equal(s.authenticated, true);
    assert.deepEqual(s.audiences, [AUD]);
    assert.equal(s.user?.username, 'system:serviceaccount:emojivoto:web');
    assert.equal(s.user?.uid, claims['kubernetes.io'].serviceaccount.uid);
    assert.deepEqual(s.user?.groups, [
      'system:serviceaccounts',
      'system:serviceaccounts:emojivoto',
      'system:authenticated',
    ]);
    assert.deepEqual(s.user?.extra?.['authentication.kubernetes.io/pod-name'], ['web-0']);
    assert.deepEqual(s.user?.extra?.['authentication.kubernetes.io/pod-uid'], [
      claims['kubernetes.io'].pod!.uid,
    ]);
  });

  it('refuses a token for another audience, and a no-audience review of an audience-bound token', async () => {
    const { token } = await api.mintToken({
      namespace: 'emojivoto',
      serviceAccount: 'web',
      audiences: [AUD],
    });
    const wrong = await review(token, ['vault']);
    assert.notEqual(wrong.authenticated, true);
    assert.match(wrong.error ?? '', /invalid bearer token/);
    const noAud = await review(token);
    assert.notEqual(
      noAud.authenticated,
      true,
      'a review without audiences checks the API audience, not identity.l5d.io',
    );
    // A token for the API audience passes a no-audience review.
    const { token: apiToken } = await api.mintToken({
      namespace: 'emojivoto',
      serviceAccount: 'web',
    });
    const ok = await review(apiToken);
    assert.equal(ok.authenticated, true);
    assert.deepEqual(ok.audiences, [ISSUER]);
  });

  it('stops authenticating a token once the injected clock passes its expiry', async () => {
    const { token } = await api.mintToken({
      namespace: 'emojivoto',
      serviceAccount: 'web',
      audiences: [AUD],
      expirationSeconds: 600,
    });
    assert.equal((await review(token, [AUD])).authenticated, true);
    now += 599_000;
    assert.equal((await review(token, [AUD])).authenticated, true);
    now += 1_000;
    const s = await review(token, [AUD]);
    assert.notEqual(s.authenticated, true);
    assert.match(s.error ?? '', /expired/);
  });

  it('stops authenticating a token whose bound pod was deleted', async () => {
    const { token } = await api.mintToken({
      namespace: 'emojivoto',
      serviceAccount: 'web',
      pod: 'web-0',
      audiences: [AUD],
    });
    assert.equal((await review(token, [AUD])).authenticated, true);
    await core.deleteNamespacedPod({ namespace: 'emojivoto', name: 'web-0' });
    const s = await review(token, [AUD]);
    assert.notEqual(s.authenticated, true);
    assert.match(s.error ?? '', /invalidated/);
    // A new pod with the same name has a new uid: the old token stays invalid.
    api.createPod('emojivoto', 'web-0', { serviceAccount: 'web' });
    assert.notEqual((await review(token, [AUD])).authenticated, true);
  });

  it('stops authenticating a token whose ServiceAccount was deleted or recreated', async () => {
    const { token } = await api.mintToken({
      namespace: 'emojivoto',
      serviceAccount: 'web',
      audiences: [AUD],
    });
    await core.deleteNamespacedServiceAccount({ namespace: 'emojivoto', name: 'web' });
    assert.notEqual((await review(token, [AUD])).authenticated, true);
    api.createServiceAccount('emojivoto', 'web');
    assert.notEqual(
      (await review(token, [AUD])).authenticated,
      true,
      'a recreated account has a new uid',
    );
    const { token: fresh } = await api.mintToken({
      namespace: 'emojivoto',
      serviceAccount: 'web',
      audiences: [AUD],
    });
    assert.equal((await review(fresh, [AUD])).authenticated, true);
  });

  it('accepts service-account tokens as API credentials (and only for the API audience)', async () => {
    const { token } = await api.mintToken({ namespace: 'emojivoto', serviceAccount: 'web' });
    const me = await api
      .kubeConfig({ token })
      .makeApiClient(AuthenticationV1Api)
      .createSelfSubjectReview({ body: {} });
    assert.equal(me.status?.userInfo?.username, 'system:serviceaccount:emojivoto:web');
    const { token: meshToken } = await api.mintToken({
      namespace: 'emojivoto',
      serviceAccount: 'web',
      audiences: [AUD],
    });
    const refused = await statusOf(
      api
        .kubeConfig({ token: meshToken })
        .makeApiClient(AuthenticationV1Api)
        .createSelfSubjectReview({ body: {} }),
    );
    assert.equal(refused.code, 401);
    const cannotReview = await statusOf(
      api
        .kubeConfig({ token })
        .makeApiClient(AuthenticationV1Api)
        .createTokenReview({ body: { spec: { token } } }),
    );
    assert.equal(cannotReview.code, 403, 'TokenReview needs RBAC (system:auth-delegator)');
  });

  it('rotates signing keys: new kid in the JWKS, chosen signer, old tokens valid until their key is removed', async () => {
    const { token: old } = await api.mintToken({
      namespace: 'emojivoto',
      serviceAccount: 'web',
      audiences: [AUD],
    });
    const oldKid = api.signingKeys.active;
    const kid = await api.signingKeys.add();
    assert.notEqual(kid, oldKid);
    assert.deepEqual(
      (await servedJwks()).jwks.keys.map((k) => k.kid),
      [oldKid, kid],
    );
    api.signingKeys.use(kid);
    const { token: fresh } = await api.mintToken({
      namespace: 'emojivoto',
      serviceAccount: 'web',
      audiences: [AUD],
    });
    assert.equal(decodeProtectedHeader(fresh).kid, kid);
    assert.equal((await review(old, [AUD])).authenticated, true);
    api.signingKeys.remove(oldKid);
    assert.deepEqual(
      (await servedJwks()).jwks.keys.map((k) => k.kid),
      [kid],
    );
    assert.notEqual((await review(old, [AUD])).authenticated, true);
    assert.equal((await review(fresh, [AUD])).authenticated, true);
  });

  it('counts TokenReviews in the request log', async () => {
    const { token } = await api.mintToken({
      namespace: 'emojivoto',
      serviceAccount: 'web',
      audiences: [AUD],
    });
    api.clearRequests();
    await review(token, [AUD]);
    await review(token, [AUD]);
    const reviews = api.requests.filter(
      (r) => r.resource === 'tokenreviews' && r.verb === 'create',
    );
    assert.equal(reviews.length, 2);
    assert.equal(reviews[0]!.user, 'kubernetes-admin');
    assert.equal(reviews[0]!.status, 201);
  });
});
