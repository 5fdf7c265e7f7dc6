/**
 * The CA in cluster mode, as a real `meshid ca` process against the Kubernetes API test server
 * (a test double, test/support/kube-api-server): installed with the RBAC that `meshid install`
 * renders and nothing more, authenticating as its own ServiceAccount through a kubeconfig,
 * validating tokens with TokenReview, reading its issuer from the Secret and its anchors from
 * the ConfigMap by watch, and recording Events.
 */
import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { CertifyClient, createCsr, systemClock } from '../../core/index.js';
import type { CertifyResponse } from '../../core/index.js';
import type { CertifyCallError } from '../../core/certify-client.js';
import { createIntermediateCa, createRootCa } from '../../core/pki.js';
import { renderInstall } from '../../cli/install.js';
import {
  adminGet,
  metricValue,
  runMeshid,
  START_LIMIT_MS,
  startCaProcess,
  waitFor,
} from '../support/ca-process.js';
import type { CaProcess } from '../support/ca-process.js';
import { issuerSecret, putIssuerSecret } from '../support/issuer-secret.js';
import { startKubeApiServer } from '../support/kube-api-server/index.js';
import type { KubeApiServer, KubeObject } from '../support/kube-api-server/index.js';
import { CA_IDENTITY, DAY, HOUR, idOf, writeAnchorsFile } from '../support/state.js';

const Status = { OK: 0, UNAUTHENTICATED_AS_PRECONDITION: 9, UNAVAILABLE: 14 } as const;
const NS = 'linkerd';
const ISSUER_SECRET = 'linkerd-identity-issuer';
const ISSUER_REF = { namespace: NS, name: ISSUER_SECRET };
const WEB = idOf('emojivoto', 'web');

type Ca = Awaited<ReturnType<typeof createRootCa>>;

describe('meshid ca in the cluster (real process, Kubernetes API test server)', function () {
  this.timeout(90_000);
  let api: KubeApiServer;
  let dir: string;
  let root: Ca;
  let issuer: Ca;
  let ca: CaProcess;
  let client: CertifyClient;
  let caArgs: string[];
  /** When the first CA started: its Event buckets (one per key) fill from their first use after it. */
  let caStartedAt: number;

  function csr(identity: string): Buffer {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    return createCsr({ privateKey, commonName: identity, dnsNames: [identity] });
  }

  async function certify(identity: string, token: string): Promise<CertifyResponse> {
    return client.certify({
      identity,
      token: Buffer.from(token),
      certificateSigningRequest: csr(identity),
    });
  }

  async function refused(p: Promise<unknown>, code: number, words: RegExp): Promise<void> {
    await assert.rejects(p, (err: CertifyCallError) => {
      assert.equal(err.code, code, `status ${err.code}: ${err.details}`);
      assert.match(err.details, words);
      return true;
    });
  }

  async function podToken(
    pod: string,
    sa = 'web',
    audiences: string[] = ['identity.l5d.io'],
  ): Promise<string> {
    api.createPod('emojivoto', pod, { serviceAccount: sa });
    return (await api.mintToken({ namespace: 'emojivoto', serviceAccount: sa, pod, audiences }))
      .token;
  }

  const issuedBy = (res: CertifyResponse): string =>
    new X509Certificate(res.leafCertificate).issuer;

  const events = (reason: string, kind?: string): KubeObject[] =>
    api
      .list<KubeObject & { reason?: string; count?: number; involvedObject?: { kind?: string } }>(
        'v1',
        'Event',
      )
      .filter(
        (e) => e.reason === reason && (kind === undefined || e.involvedObject?.kind === kind),
      );

  before(async () => {
    const anchors = await writeAnchorsFile('meshid-kube-');
    ({ dir, root } = anchors);
    const now = systemClock.now();
    issuer = await createIntermediateCa({
      issuer: root,
      commonName: 'identity.linkerd.cluster.local',
      notBefore: now - HOUR,
      notAfter: now + 30 * DAY,
      pathLength: 0,
    });
    api = await startKubeApiServer({ namespaces: ['emojivoto'], minTokenExpirationSeconds: 60 });

    // Everything `meshid install` renders, applied as kubectl would (the Namespace first).
    const yaml = renderInstall({ argv: ['--trust-anchors', anchors.file], env: {}, now });
    for (const doc of parseAllDocuments(yaml)) {
      const obj = doc.toJS() as KubeObject | null;
      if (obj !== null) api.create(obj);
    }
    api.create(issuerSecret(ISSUER_REF, issuer, root));

    // The CA authenticates as its own ServiceAccount: only the installed RBAC applies.
    const { token } = await api.mintToken({
      namespace: NS,
      serviceAccount: 'linkerd-identity',
      expirationSeconds: 3600,
    });
    const kubeconfig = join(dir, 'kubeconfig');
    await api.writeKubeconfig(kubeconfig, { token });
    caArgs = [
      '--kubeconfig',
      kubeconfig,
      '--issuer-secret',
      ISSUER_SECRET,
      '--trust-anchors-config-map',
      'linkerd-identity-trust-roots',
      '--namespace',
      NS,
      '--workers',
      '1',
    ];
    // Reviews are not cached here, so that a deleted pod's token is refused at once; the cache
    // has its own unit tests with a fake clock.
    caStartedAt = Date.now();
    ca = await startCaProcess([...caArgs, '--token-review-cache-ttl', '0s']);
    client = new CertifyClient({
      address: ca.address,
      serverName: CA_IDENTITY,
      anchorsPem: root.certificatePem,
    });
  });

  after(async () => {
    client?.close();
    ca?.proc.kill('SIGTERM');
    await api?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('issues a certificate for a token TokenRequest minted for a running pod, and records an Event on its ServiceAccount', async () => {
    const res = await certify(WEB, await podToken('web-0'));
    const leaf = new X509Certificate(res.leafCertificate);
    assert.equal(leaf.subjectAltName?.split(', ')[0], `DNS:${WEB}`);
    assert.match(issuedBy(res), /CN=identity\.linkerd\.cluster\.local/);
    const reviews = api.requests.filter((r) => r.resource === 'tokenreviews');
    assert.ok(reviews.length >= 1);
    assert.ok(reviews.every((r) => r.user === 'system:serviceaccount:linkerd:linkerd-identity'));
    const issued = await waitFor('IssuedLeafCertificate event', () => {
      const e = events('IssuedLeafCertificate', 'ServiceAccount') as (KubeObject & {
        message?: string;
        involvedObject?: { name?: string; namespace?: string };
      })[];
      return e.length > 0 ? e[0] : undefined;
    });
    assert.equal(issued.metadata.namespace, 'emojivoto');
    assert.deepEqual(
      [issued.involvedObject?.namespace, issued.involvedObject?.name],
      ['emojivoto', 'web'],
    );
    assert.match(
      issued.message ?? '',
      new RegExp(`Issued certificate for ${WEB} until .*: [0-9a-f]{64}`),
    );
  });

  it("refuses the same pod's token once the pod is deleted", async () => {
    const token = await podToken('web-1');
    await certify(WEB, token);
    api.delete({ apiVersion: 'v1', kind: 'Pod', namespace: 'emojivoto', name: 'web-1' });
    await refused(
      certify(WEB, token),
      Status.UNAUTHENTICATED_AS_PRECONDITION,
      /did not authenticate the token/,
    );
  });

  it("refuses a token for service account A asking for B's identity", async () => {
    api.createServiceAccount('emojivoto', 'voting');
    await refused(
      certify(idOf('emojivoto', 'voting'), await podToken('web-2')),
      Status.UNAUTHENTICATED_AS_PRECONDITION,
      /token is for service account emojivoto\/web/,
    );
  });

  it('refuses a token for another audience: an ordinary API token gets no certificate', async () => {
    const token = await podToken('web-3', 'web', api.apiAudiences as string[]);
    await refused(
      certify(WEB, token),
      Status.UNAUTHENTICATED_AS_PRECONDITION,
      /did not authenticate the token/,
    );
  });

  // The issuer tests below run after this one, so they also show the watches resuming after the
  // API server came back.
  it('answers UNAVAILABLE while the API server is down and recovers when it is back', async () => {
    const token = await podToken('web-4');
    await api.pause();
    try {
      await refused(
        certify(WEB, token),
        Status.UNAVAILABLE,
        /TokenReview at https:\/\/127\.0\.0\.1:\d+ failed/,
      );
    } finally {
      await api.resume();
    }
    await waitFor('Certify after the API server is back', async () => {
      try {
        return await certify(WEB, token);
      } catch {
        return undefined;
      }
    });
  });

  it('rotates to a new issuer written to the Secret through the API, with an IssuerUpdated Event', async () => {
    const next = await createIntermediateCa({
      issuer: root,
      commonName: 'identity-2.linkerd.cluster.local',
      notBefore: systemClock.now() - HOUR,
      notAfter: systemClock.now() + 30 * DAY,
      pathLength: 0,
    });
    putIssuerSecret(api, ISSUER_REF, next, root);
    const token = await podToken('web-5');
    await waitFor('leaves from the new issuer', async () => {
      const res = await certify(WEB, token);
      return issuedBy(res).includes('identity-2') ? res : undefined;
    });
    const updated = await waitFor('IssuerUpdated event', () => {
      const e = events('IssuerUpdated', 'Secret');
      return e.length > 0 ? e : undefined;
    });
    assert.match(
      (updated[0] as KubeObject & { message?: string }).message ?? '',
      /Updated identity issuer .*identity-2/,
    );
    issuer = next;
  });

  it('refuses an issuer from a foreign root written to the Secret: the last good one stays, with an IssuerUpdateSkipped Event', async () => {
    const foreignRoot = await createRootCa({
      commonName: 'foreign-root',
      notBefore: systemClock.now() - HOUR,
      notAfter: systemClock.now() + DAY,
    });
    const foreign = await createIntermediateCa({
      issuer: foreignRoot,
      commonName: 'identity-foreign',
      notBefore: systemClock.now() - HOUR,
      notAfter: systemClock.now() + DAY,
      pathLength: 0,
    });
    const rejectedBefore = metricValue(
      (await adminGet(ca.admin, '/metrics')).body,
      'meshid_issuer_updates_total',
      {
        result: 'rejected',
      },
    );
    putIssuerSecret(api, ISSUER_REF, foreign, foreignRoot);
    await waitFor('the refusal', async () => {
      const m = (await adminGet(ca.admin, '/metrics')).body;
      // NaN before any refusal: the series does not exist yet.
      return metricValue(m, 'meshid_issuer_updates_total', { result: 'rejected' }) >
        (Number.isNaN(rejectedBefore) ? 0 : rejectedBefore)
        ? true
        : undefined;
    });
    const skipped = await waitFor('IssuerUpdateSkipped event', () => {
      const e = events('IssuerUpdateSkipped', 'Secret');
      return e.length > 0 ? e : undefined;
    });
    assert.match(
      (skipped[0] as KubeObject & { message?: string }).message ?? '',
      /keeping the last good issuer/,
    );
    const res = await certify(WEB, await podToken('web-6'));
    assert.match(issuedBy(res), /identity-2/, 'still the last good issuer');
    assert.equal((await adminGet(ca.admin, '/ready')).status, 200);
    // A CA starting now has no last good issuer to keep: it refuses to start, naming the problem.
    const fresh = await runMeshid([
      'ca',
      ...caArgs,
      '--listen',
      '127.0.0.1:0',
      '--admin',
      '127.0.0.1:0',
    ]);
    assert.equal(fresh.code, 1, fresh.stderr);
    assert.match(
      fresh.stderr,
      /issuer does not chain to any trust anchor .*Secret linkerd\/linkerd-identity-issuer/,
    );
    putIssuerSecret(api, ISSUER_REF, issuer, root);
  });

  it("validates tokens offline with the cluster's own JWKS from OIDC discovery (--jwks kubernetes)", async () => {
    const jwksCa = await startCaProcess([
      ...caArgs,
      '--token-validator',
      'jwks',
      '--jwks',
      'kubernetes',
    ]);
    const jwksClient = new CertifyClient({
      address: jwksCa.address,
      serverName: CA_IDENTITY,
      anchorsPem: root.certificatePem,
    });
    try {
      api.clearRequests();
      const res = await jwksClient.certify({
        identity: WEB,
        token: Buffer.from(await podToken('web-7')),
        certificateSigningRequest: csr(WEB),
      });
      assert.ok(res.leafCertificate.length > 0);
      assert.equal(
        api.requests.filter((r) => r.resource === 'tokenreviews').length,
        0,
        'no TokenReview in JWKS mode',
      );
      await refused(
        jwksClient.certify({
          identity: WEB,
          token: Buffer.from(await podToken('web-8', 'web', api.apiAudiences as string[])),
          certificateSigningRequest: csr(WEB),
        }),
        Status.UNAUTHENTICATED_AS_PRECONDITION,
        /token audience .* does not include "identity.l5d.io"/,
      );
    } finally {
      jwksClient.close();
      jwksCa.proc.kill('SIGTERM');
    }
  });

  it('runs as two replicas (one of them with two workers) issuing concurrently with no coordination: distinct serials, one chain', async function () {
    // Two worker processes start slowly on a loaded machine: the start limit, then the calls.
    this.timeout(START_LIMIT_MS + 90_000);
    // The second replica runs two worker processes, each with its own API client and watches.
    const replicaArgs = caArgs.map((a, i) => (caArgs[i - 1] === '--workers' ? '2' : a));
    const replica = await startCaProcess([...replicaArgs, '--token-review-cache-ttl', '0s']);
    assert.equal(replica.listening['workers'], 2);
    const replicaClient = new CertifyClient({
      address: replica.address,
      serverName: CA_IDENTITY,
      anchorsPem: root.certificatePem,
    });
    try {
      const token = await podToken('web-9');
      const calls = Array.from({ length: 40 }, (_, i) =>
        (i % 2 === 0 ? client : replicaClient).certify({
          identity: WEB,
          token: Buffer.from(token),
          certificateSigningRequest: csr(WEB),
        }),
      );
      const leaves = (await Promise.all(calls)).map((r) => new X509Certificate(r.leafCertificate));
      assert.equal(new Set(leaves.map((l) => l.serialNumber)).size, 40);
      assert.equal(
        new Set(leaves.map((l) => l.issuer)).size,
        1,
        'both replicas use the same issuer',
      );
      // Repeats are counted on one Event per replica (a merge patch, allowed by the installed
      // RBAC), and the rate limit stops each replica after its burst.
      const counts = await waitFor('Event counts', () => {
        const c = (
          events('IssuedLeafCertificate', 'ServiceAccount') as (KubeObject & { count?: number })[]
        ).map((e) => e.count ?? 0);
        return c.some((n) => n >= 2) ? c : undefined;
      });
      // The bucket gives 5 at once and one more per minute after (identity-ca/kube/events.ts).
      // The first CA's bucket for this Event may have been opened by an earlier test, so its
      // minutes count from that CA's start, not this test's: on a loaded machine the suite can
      // take over a minute before this test, which earns a sixth.
      const bound = 5 + Math.floor((Date.now() - caStartedAt) / 60_000);
      assert.ok(
        Math.max(...counts) <= bound,
        `at most the burst per replica (${bound}): ${counts.join(',')}`,
      );
    } finally {
      replicaClient.close();
      replica.proc.kill('SIGTERM');
    }
  });

  it('records an issuer change once per CA process, not once per worker (two workers)', async function () {
    // Two worker processes start slowly on a loaded machine: the start limit, then the calls.
    this.timeout(START_LIMIT_MS + 90_000);
    const instance = 'meshid-identity-two-workers';
    const replicaArgs = caArgs.map((a, i) => (caArgs[i - 1] === '--workers' ? '2' : a));
    const replica = await startCaProcess([...replicaArgs, '--token-review-cache-ttl', '0s'], {
      POD_NAME: instance,
    });
    const clients: CertifyClient[] = [];
    const mine = (reason: string, kind: string): (KubeObject & { message?: string })[] =>
      events(reason, kind).filter(
        (e) => (e as KubeObject & { reportingInstance?: string }).reportingInstance === instance,
      );
    try {
      // NaN (no series yet) counts as none.
      const accepted = async (): Promise<number> =>
        metricValue(
          (await adminGet(replica.admin, '/metrics')).body,
          'meshid_issuer_updates_total',
          {
            result: 'accepted',
          },
        ) || 0;
      const acceptedBefore = await accepted();
      const next = await createIntermediateCa({
        issuer: root,
        commonName: 'identity-3.linkerd.cluster.local',
        notBefore: systemClock.now() - HOUR,
        notAfter: systemClock.now() + 30 * DAY,
        pathLength: 0,
      });
      putIssuerSecret(api, ISSUER_REF, next, root);
      // Both workers took the new issuer (the counter is summed over the workers).
      await waitFor('both workers on the new issuer', async () =>
        (await accepted()) >= acceptedBefore + 2 ? true : undefined,
      );
      // A barrier: each worker queues Events in order and has at most two writes in flight, so
      // once both have written the Event of a leaf they issued after the change, any issuer
      // Event either of them queued before it has been sent or is being sent. Each worker keeps
      // its own series, so two workers make two Event objects for the probe's ServiceAccount;
      // connections go round-robin to the workers.
      const probe = idOf('emojivoto', 'probe');
      const token = await podToken('probe-0', 'probe');
      await waitFor('a leaf Event from each worker', async () => {
        const c = new CertifyClient({
          address: replica.address,
          serverName: CA_IDENTITY,
          anchorsPem: root.certificatePem,
        });
        clients.push(c);
        const res = await c.certify({
          identity: probe,
          token: Buffer.from(token),
          certificateSigningRequest: csr(probe),
        });
        assert.match(issuedBy(res), /identity-3/);
        return mine('IssuedLeafCertificate', 'ServiceAccount').length >= 2 ? true : undefined;
      });
      const issuerUpdated = (): (KubeObject & { message?: string })[] =>
        mine('IssuerUpdated', 'Secret').filter((e) => /identity-3/.test(e.message ?? ''));
      // The one that records it may still be writing it (two writes run at once).
      await waitFor('the IssuerUpdated Event of the change', () =>
        issuerUpdated().length > 0 ? true : undefined,
      );
      const updated = issuerUpdated();
      assert.equal(updated.length, 1, 'one IssuerUpdated Event for the change, from one worker');
      assert.equal((updated[0] as KubeObject & { count?: number }).count, 1);
      issuer = next;
    } finally {
      for (const c of clients) c.close();
      replica.proc.kill('SIGTERM');
    }
  });

  it('refuses to start, naming the permission, with credentials the install did not grant', async () => {
    const { token } = await api.mintToken({ namespace: 'emojivoto', serviceAccount: 'web' });
    const kubeconfig = join(dir, 'kubeconfig-web');
    await api.writeKubeconfig(kubeconfig, { token });
    const args = [...caArgs];
    args[1] = kubeconfig;
    const run = await runMeshid([
      'ca',
      ...args,
      '--listen',
      '127.0.0.1:0',
      '--admin',
      '127.0.0.1:0',
    ]);
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stderr, /lack permissions it needs/);
    assert.match(run.stderr, /create tokenreviews\.authentication\.k8s\.io/);
    assert.match(run.stderr, /get secrets "linkerd-identity-issuer" in namespace "linkerd"/);
  });
});
