/**
 * One bundle rule (core/anchors.ts, docs/rotation.md "What a bundle may hold"), one verdict: the
 * same bundles, against the same issuer chain (cert-manager's, on the Kubernetes API test
 * server), through every consumer: trust sync, the rotation controller, the CA's issuer loading,
 * the proxy's anchors loading, the admission guard and `meshid check`'s material checks.
 *
 * A verdict is `accepted`, `refused` (the bundle breaks the rule), or `unanchored` (a good bundle
 * the live issuer does not chain to). The proxy judges no issuer when it loads anchors, and trust
 * sync rewrites the bundle as the current root plus the live issuer's anchor, so for those two a
 * good bundle is `accepted` whatever the issuer.
 */
import { strict as assert } from 'node:assert';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kubeTrustSettings } from '../../cli/trust-kube.js';
import { checkAnchors, checkIssuer } from '../../cli/check/material.js';
import { isMeshidError, loadConfig, openKubeClient, systemRandom } from '../../core/index.js';
import { ManualClock } from '../../core/clock.js';
import { silentLogger } from '../../core/logger.js';
import { createIntermediateCa, createRootCa } from '../../core/pki.js';
import { AnchorSource } from '../../proxy/index.js';
import {
  KubeRotationBackend,
  RotationController,
  SyncController,
  trustKubeApi,
} from '../../trust-bundle/index.js';
import type { TrustKubeApi } from '../../trust-bundle/index.js';
import { createTrustGuard } from '../../webhooks/index.js';
import { parseAdmissionReview } from '../../webhooks/admission.js';
import { applyCertManagerInstall } from '../support/cert-manager-install.js';
import type { CertManagerSimulator } from '../support/cert-manager-sim.js';
import { startKubeApiServer } from '../support/kube-api-server/index.js';
import type { KubeApiServer, KubeObject } from '../support/kube-api-server/index.js';
import { IssuerStore } from '../../identity-ca/issuer/store.js';

type Verdict = 'accepted' | 'refused' | 'unanchored';
const NS = 'linkerd';
const CM = 'linkerd-identity-trust-roots';
const KEY = 'ca-bundle.crt';
const DAY = 86_400_000;
const settings = kubeTrustSettings(loadConfig('trust', { argv: [], env: {} }).config);

const CA_IDENTITY = 'linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local';

/** Maps a refusal to a verdict: a bundle breaking the rule, or an issuer left without anchor. */
function verdictOf(err: unknown, unanchoredCodes: readonly string[]): Verdict {
  if (isMeshidError(err, 'ERR_ANCHORS_INVALID')) return 'refused';
  if (isMeshidError(err) && unanchoredCodes.includes(err.code)) return 'unanchored';
  throw err;
}

describe('one trust-anchor bundle rule: every consumer, one verdict', function () {
  this.timeout(120_000);
  let server: KubeApiServer;
  let sim: CertManagerSimulator;
  let api: TrustKubeApi;
  let clock: ManualClock;
  let dir: string;
  let root: string;
  let issuer: { tlsCrt: string; tlsKey: string; caCrt: string };
  /** What the CA serves on its Certify port: its certificate from the issuer, then the issuer. */
  let caServes: string[];
  const pki: Record<string, string> = {};

  before(async () => {
    server = await startKubeApiServer();
    clock = new ManualClock(Date.now());
    sim = await applyCertManagerInstall(server, clock);
    api = trustKubeApi(await openKubeClient(server.kubeConfig()));
    assert.equal(await sync(), 'accepted', 'the first sync writes the root');
    root = configMapBundle();
    const secret = server.get<KubeObject & { data: Record<string, string> }>({
      apiVersion: 'v1',
      kind: 'Secret',
      namespace: NS,
      name: 'linkerd-identity-issuer',
    })!;
    const text = (k: string): string => Buffer.from(secret.data[k]!, 'base64').toString('utf8');
    issuer = { tlsCrt: text('tls.crt'), tlsKey: text('tls.key'), caCrt: text('ca.crt') };
    const now = clock.now();
    const serving = await createIntermediateCa({
      issuer: {
        certificateDer: new X509Certificate(issuer.tlsCrt).raw,
        privateKey: createPrivateKey(issuer.tlsKey),
      },
      commonName: 'linkerd-identity',
      notBefore: now - 60_000,
      notAfter: now + 3_600_000,
      isCa: false,
      keyUsage: ['digitalSignature'],
      dnsNames: [CA_IDENTITY],
    });
    caServes = [serving.certificatePem, issuer.tlsCrt];
    const make = async (name: string, o: { from: number; to: number; isCa?: boolean }) => {
      const ca = await createRootCa({
        commonName: name,
        notBefore: now + o.from,
        notAfter: now + o.to,
        ...(o.isCa === false ? { isCa: false } : {}),
      });
      pki[name] = ca.certificatePem;
    };
    await make('expired-root', { from: -30 * DAY, to: -DAY });
    await make('future-root', { from: DAY, to: 30 * DAY });
    await make('not-a-ca', { from: -DAY, to: 30 * DAY, isCa: false });
    await make('foreign-root', { from: -DAY, to: 30 * DAY });
    dir = await mkdtemp(join(tmpdir(), 'meshid-verdicts-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
    await sim.stop();
    await server.stop();
  });

  function configMapBundle(): string {
    const cm = server.get<KubeObject & { data?: Record<string, string> }>({
      apiVersion: 'v1',
      kind: 'ConfigMap',
      namespace: NS,
      name: CM,
    });
    return cm!.data![KEY]!;
  }

  /** The ConfigMap as an operator (or trust-manager) would write it: the bundle, nothing else. */
  function putBundle(pem: string): void {
    server.apply({
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: CM, namespace: NS },
      data: { [KEY]: pem },
    });
  }

  async function sync(): Promise<Verdict> {
    const controller = new SyncController({ api, settings, clock, logger: silentLogger() });
    return controller.reconcile().then(
      () => 'accepted',
      (err: unknown) => verdictOf(err, []),
    );
  }

  const consumers: Record<string, (pem: string) => Promise<Verdict>> = {
    'trust sync': async (pem) => {
      putBundle(pem);
      return sync();
    },
    rotation: async (pem) => {
      putBundle(pem);
      const rc = new RotationController({
        backend: new KubeRotationBackend(api, settings, clock),
        observer: { description: 'none', observe: () => Promise.resolve([]) },
        clock,
        random: systemRandom,
        logger: silentLogger(),
        leafLifetime: DAY,
        clockSkew: 20_000,
        waitTimeout: DAY,
        holder: 'table',
      });
      return rc.start().then(
        () => 'accepted',
        (err: unknown) => verdictOf(err, ['ERR_ROTATION_REFUSED']),
      );
    },
    'CA issuer loading': async (pem) => {
      const store = new IssuerStore({ clock, logger: silentLogger() });
      const r = await store.apply(issuer, pem, 'table');
      return r.status === 'rejected' ? verdictOf(r.error, ['ERR_ISSUER_INVALID']) : 'accepted';
    },
    'proxy anchors loading': async (pem) => {
      const file = join(dir, 'ca-bundle.crt');
      await writeFile(file, pem);
      return AnchorSource.open(file, { clock, logger: silentLogger() }).then(
        (source) => {
          source.close();
          return 'accepted';
        },
        (err: unknown) => verdictOf(err, []),
      );
    },
    'admission guard': async (pem) => {
      const guard = createTrustGuard(
        {
          controlPlaneNamespace: NS,
          trustAnchorsConfigMap: CM,
          trustAnchorsKey: KEY,
          issuerSecret: 'linkerd-identity-issuer',
          caIdentityName: CA_IDENTITY,
          caAddress: 'linkerd-identity.linkerd.svc:8080',
        },
        {
          caChainPem: () => Promise.resolve(caServes),
          clock,
          logger: silentLogger(),
        },
      );
      const request = parseAdmissionReview(
        JSON.stringify({
          apiVersion: 'admission.k8s.io/v1',
          kind: 'AdmissionReview',
          request: {
            uid: '0d9c5b1e-0000-4000-8000-000000000001',
            kind: { group: '', version: 'v1', kind: 'ConfigMap' },
            resource: { group: '', version: 'v1', resource: 'configmaps' },
            name: CM,
            namespace: NS,
            operation: 'CREATE',
            userInfo: { username: 'operator' },
            object: {
              apiVersion: 'v1',
              kind: 'ConfigMap',
              metadata: { name: CM, namespace: NS },
              data: { [KEY]: pem },
            },
          },
        }),
      );
      const r = await guard(request);
      if (r.allowed) return 'accepted';
      return /drops the anchor the current issuer chains to/.test(r.status?.message ?? '')
        ? 'unanchored'
        : 'refused';
    },
    'meshid check': async (pem) => {
      const src = {
        anchors: 'anchors',
        issuer: 'issuer',
        issuerFile: (n: string) => n,
        fixAnchors: '',
        fixIssuer: '',
      };
      const now = clock.now();
      const a = checkAnchors(pem, src, now, 0);
      if (a.results.some((x) => x.id === 'anchors-valid' && x.status === 'error')) return 'refused';
      const files = { certPem: issuer.tlsCrt, keyPem: issuer.tlsKey, caPem: issuer.caCrt };
      const i = checkIssuer(files, a.anchors, src, now, 0);
      return i.results.some((x) => x.id === 'issuer-chain' && x.status === 'error')
        ? 'unanchored'
        : 'accepted';
    },
  };
  /** Consumers that load a bundle without judging the live issuer against it. */
  const bundleOnly = new Set(['trust sync', 'proxy anchors loading']);

  const rows: { name: string; bundle: () => string; verdict: Verdict }[] = [
    {
      name: 'a valid root and an expired root',
      bundle: () => root + pki['expired-root']!,
      verdict: 'accepted',
    },
    {
      name: 'a valid root and an intermediate (the issuer) used as an anchor',
      bundle: () => root + issuer.tlsCrt,
      verdict: 'refused',
    },
    { name: 'the valid root alone', bundle: () => root, verdict: 'accepted' },
    {
      name: 'a valid root and a root not yet valid',
      bundle: () => root + pki['future-root']!,
      verdict: 'accepted',
    },
    { name: 'an expired root alone', bundle: () => pki['expired-root']!, verdict: 'refused' },
    {
      name: 'a valid root and a certificate that is not a CA',
      bundle: () => root + pki['not-a-ca']!,
      verdict: 'refused',
    },
    { name: 'the valid root twice', bundle: () => root + root, verdict: 'accepted' },
    {
      name: 'a foreign root the issuer does not chain to',
      bundle: () => pki['foreign-root']!,
      verdict: 'unanchored',
    },
    { name: 'an empty bundle', bundle: () => '\n', verdict: 'refused' },
    { name: 'garbage', bundle: () => 'this is not a PEM bundle\n', verdict: 'refused' },
  ];

  for (const row of rows) {
    it(`${row.name}: ${row.verdict} by every consumer`, async () => {
      const got: Record<string, Verdict> = {};
      const want: Record<string, Verdict> = {};
      for (const [name, judge] of Object.entries(consumers)) {
        got[name] = await judge(row.bundle());
        want[name] =
          row.verdict === 'unanchored' && bundleOnly.has(name) ? 'accepted' : row.verdict;
      }
      assert.deepEqual(got, want);
    });
  }
});
