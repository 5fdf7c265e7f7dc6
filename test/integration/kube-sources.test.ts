/**
 * The CA's Kubernetes sources in-process against the Kubernetes API test server (a test double):
 * the issuer watch through a 410 Gone and a dropped connection, a deleted and re-created Secret,
 * the Linkerd `linkerd.io/tls` scheme, and the cluster JWKS following a signing-key rotation.
 */
import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { systemClock } from '../../core/index.js';
import { silentLogger } from '../../core/logger.js';
import { createIntermediateCa, createRootCa } from '../../core/pki.js';
import { IssuerStore } from '../../identity-ca/issuer/store.js';
import { KubeIssuerSource } from '../../identity-ca/issuer/kube-source.js';
import { clientNodeKubeClient } from '../../core/kube/client-node.js';
import type { KubeApi } from '../../identity-ca/kube/api.js';
import { kubernetesJwksValidator } from '../../identity-ca/token/kube-jwks.js';
import { waitFor } from '../support/ca-process.js';
import { issuerSecret, putIssuerSecret } from '../support/issuer-secret.js';
import { startKubeApiServer } from '../support/kube-api-server/index.js';
import type { KubeApiServer, KubeObject } from '../support/kube-api-server/index.js';
import { DAY, HOUR } from '../support/state.js';

type Ca = Awaited<ReturnType<typeof createRootCa>>;
const NS = 'linkerd';

describe('identity-ca Kubernetes sources (in-process, Kubernetes API test server)', function () {
  this.timeout(30_000);
  let server: KubeApiServer;
  let api: KubeApi;
  let root: Ca;
  const now = systemClock.now();

  const intermediate = (cn: string, r: Ca = root): Promise<Ca> =>
    createIntermediateCa({
      issuer: r,
      commonName: cn,
      notBefore: now - HOUR,
      notAfter: now + 30 * DAY,
      pathLength: 0,
    });

  const REF = { namespace: NS, name: 'issuer' };
  const secret = (i: Ca, type?: string): KubeObject => issuerSecret(REF, i, root, type);
  const replaceSecret = (i: Ca, type?: string): void => putIssuerSecret(server, REF, i, root, type);

  function newSource(more: Partial<ConstructorParameters<typeof KubeIssuerSource>[0]> = {}): {
    store: IssuerStore;
    source: KubeIssuerSource;
  } {
    const store = new IssuerStore({ clock: systemClock, logger: silentLogger() });
    const source = new KubeIssuerSource({
      api,
      namespace: NS,
      secretName: 'issuer',
      configMapName: 'anchors',
      anchorsKey: 'ca-bundle.crt',
      store,
      logger: silentLogger(),
      backoffMs: { min: 50, max: 200 },
      ...more,
    });
    return { store, source };
  }

  async function startSource(
    more: Partial<ConstructorParameters<typeof KubeIssuerSource>[0]> = {},
  ): Promise<{ store: IssuerStore; source: KubeIssuerSource }> {
    const started = newSource(more);
    await started.source.start();
    return started;
  }

  before(async () => {
    root = await createRootCa({
      commonName: 'root.linkerd.cluster.local',
      notBefore: now - HOUR,
      notAfter: now + 365 * DAY,
    });
    server = await startKubeApiServer({ namespaces: [NS] });
    api = clientNodeKubeClient(server.kubeConfig());
    server.create({
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: 'anchors', namespace: NS },
      data: { 'ca-bundle.crt': root.certificatePem },
    } as KubeObject);
    server.create(secret(await intermediate('issuer-1')));
  });

  after(async () => {
    api?.close();
    await server?.stop();
  });

  it('follows the Secret across a dropped watch and a 410 Gone, relisting to catch up', async () => {
    const { store, source } = await startSource();
    try {
      assert.match(store.current()!.subject, /issuer-1/);
      // The server cuts the watch; the source resumes from its last version, but that request is
      // held up while the Secret changes and the server forgets its history: the resume is
      // refused with 410 Gone, and the source must list again to catch up.
      server.failNext({ method: 'GET', path: `/api/v1/namespaces/${NS}/secrets`, delayMs: 400 });
      server.clearRequests();
      server.closeWatches();
      replaceSecret(await intermediate('issuer-2'));
      server.compactWatchHistory();
      await waitFor('issuer-2 after the relist', () =>
        /issuer-2/.test(store.current()!.subject) ? true : undefined,
      );
      await waitFor('a watch again', () => (server.openWatches >= 2 ? true : undefined));
      const secretCalls = server.requests.filter((r) => r.resource === 'secrets');
      assert.deepEqual(
        secretCalls.slice(0, 3).map((r) => r.verb),
        ['watch', 'list', 'watch'],
        'resume refused (410), then a list, then a new watch',
      );
      replaceSecret(await intermediate('issuer-3'));
      await waitFor('issuer-3 by the new watch', () =>
        /issuer-3/.test(store.current()!.subject) ? true : undefined,
      );
    } finally {
      await source.close();
    }
    await waitFor('close() to end the watches', () =>
      server.openWatches === 0 ? true : undefined,
    );
  });

  it('keeps the last good issuer when the Secret is deleted, and takes the re-created one', async () => {
    const deleted: string[] = [];
    const { store, source } = await startSource({
      onDeleted: (kind, name) => deleted.push(`${kind}/${name}`),
    });
    try {
      const before = store.current()!.fingerprint;
      server.delete({ apiVersion: 'v1', kind: 'Secret', namespace: NS, name: 'issuer' });
      await waitFor('the deletion', () => (deleted.length > 0 ? true : undefined));
      assert.deepEqual(deleted, ['secrets/issuer']);
      assert.equal(store.current()!.fingerprint, before, 'still the last good issuer');
      replaceSecret(await intermediate('issuer-linkerd-scheme'), 'linkerd.io/tls');
      await waitFor('the linkerd.io/tls issuer', () =>
        /issuer-linkerd-scheme/.test(store.current()!.subject) ? true : undefined,
      );
    } finally {
      await source.close();
    }
  });

  it('refuses a Secret that lost its key as a rejected update, keeping the last good issuer', async () => {
    const { store, source } = await startSource();
    const rejected: string[] = [];
    store.on('rejected', (err) => rejected.push(err.message));
    try {
      const before = store.current()!.fingerprint;
      // The API itself refuses a kubernetes.io/tls Secret without tls.key, so an Opaque one
      // (a type cannot change in place: delete, then create) carries the certificate alone.
      const broken = secret(await intermediate('issuer-broken'), 'Opaque');
      delete (broken as unknown as { data: Record<string, string> }).data['tls.key'];
      server.delete({ apiVersion: 'v1', kind: 'Secret', namespace: NS, name: 'issuer' });
      server.create(broken);
      await waitFor('the refusal', () => (rejected.length > 0 ? true : undefined));
      assert.match(rejected[0]!, /Secret linkerd\/issuer \(type Opaque\) lacks tls.key/);
      assert.equal(store.current()!.fingerprint, before);
    } finally {
      await source.close();
      server.delete({ apiVersion: 'v1', kind: 'Secret', namespace: NS, name: 'issuer' });
      server.create(secret(await intermediate('issuer-restored')));
    }
  });

  it('refuses to start when the ConfigMap lacks the bundle key, naming it', async () => {
    const { source } = newSource({ anchorsKey: 'roots.pem' });
    await assert.rejects(source.start(), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ERR_ANCHORS_INVALID');
      assert.match(err.message, /ConfigMap linkerd\/anchors has no "roots.pem" key/);
      return true;
    });
    assert.equal(server.openWatches, 0);
  });

  it('takes the cluster JWKS from OIDC discovery and follows a signing-key rotation (unknown kid)', async () => {
    const tokens = await kubernetesJwksValidator({
      api,
      audience: 'identity.l5d.io',
      clockSkewMs: 20_000,
      clock: systemClock,
      logger: silentLogger(),
      cooldownMs: 0,
    });
    try {
      const mint = async (): Promise<Uint8Array> =>
        Buffer.from(
          (
            await server.mintToken({
              namespace: 'default',
              serviceAccount: 'default',
              audiences: ['identity.l5d.io'],
            })
          ).token,
        );
      assert.deepEqual(await tokens.validate(await mint()), {
        namespace: 'default',
        serviceAccount: 'default',
      });
      server.signingKeys.use(await server.signingKeys.add());
      assert.deepEqual(await tokens.validate(await mint()), {
        namespace: 'default',
        serviceAccount: 'default',
      });
    } finally {
      await tokens.close();
    }
  });
});
