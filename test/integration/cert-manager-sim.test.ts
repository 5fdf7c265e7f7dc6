import { strict as assert } from 'node:assert';
import { X509Certificate } from 'node:crypto';
import { ManualClock } from '../../core/clock.js';
import { CertManagerSimulator } from '../support/cert-manager-sim.js';
import { startKubeApiServer } from '../support/kube-api-server/index.js';
import type { KubeApiServer, KubeObject } from '../support/kube-api-server/index.js';

const HOUR = 3_600_000;
const NS = 'linkerd';

describe('cert-manager simulator (test double) on the Kubernetes API test server', function () {
  this.timeout(30_000);
  let api: KubeApiServer;
  let clock: ManualClock;
  let sim: CertManagerSimulator;

  const secret = (name: string): Record<string, string> => {
    const s = api.get({ apiVersion: 'v1', kind: 'Secret', namespace: NS, name });
    assert.ok(s, `Secret ${name}`);
    assert.equal(s['type'], 'kubernetes.io/tls');
    const data = s['data'] as Record<string, string>;
    return Object.fromEntries(
      Object.entries(data).map(([k, v]) => [k, Buffer.from(v, 'base64').toString()]),
    );
  };
  const cert = (pem: string): X509Certificate => new X509Certificate(pem);
  const certificate = (name: string, spec: Record<string, unknown>): KubeObject => ({
    apiVersion: 'cert-manager.io/v1',
    kind: 'Certificate',
    metadata: { name, namespace: NS },
    spec: { secretName: name, ...spec },
  });

  beforeEach(async () => {
    api = await startKubeApiServer({ namespaces: [NS] });
    clock = new ManualClock(Date.now());
    sim = new CertManagerSimulator({ api, clock });
    api.create({
      apiVersion: 'cert-manager.io/v1',
      kind: 'Issuer',
      metadata: { name: 'selfsigned', namespace: NS },
      spec: { selfSigned: {} },
    });
    api.create(
      certificate('root', {
        isCA: true,
        commonName: 'root.linkerd.cluster.local',
        duration: '8760h',
        renewBefore: '7320h',
        privateKey: { algorithm: 'ECDSA', size: 256, rotationPolicy: 'Always' },
        secretTemplate: { labels: { 'meshid.io/trust-anchor': 'true' } },
        issuerRef: { name: 'selfsigned', kind: 'Issuer' },
      }),
    );
    api.create({
      apiVersion: 'cert-manager.io/v1',
      kind: 'Issuer',
      metadata: { name: 'root', namespace: NS },
      spec: { ca: { secretName: 'root' } },
    });
    api.create(
      certificate('issuer', {
        isCA: true,
        commonName: 'identity.linkerd.cluster.local',
        duration: '48h',
        renewBefore: '25h',
        privateKey: { algorithm: 'ECDSA', size: 256, rotationPolicy: 'Always' },
        issuerRef: { name: 'root', kind: 'Issuer' },
      }),
    );
  });
  afterEach(async () => {
    await sim.stop();
    await api.stop();
  });

  it('issues a self-signed root and a CA-issued intermediate with tls.crt, tls.key and ca.crt', async () => {
    // The CA Issuer's Secret does not exist on the first pass: the issuer waits for it.
    // Certificates are visited in name order: "issuer" waits for the root Secret its CA Issuer needs.
    const first = await sim.reconcile();
    assert.deepEqual(
      first.map((i) => [i.certificate, i.reason]),
      [['root', 'missing']],
    );
    const waiting = api.get({
      apiVersion: 'cert-manager.io/v1',
      kind: 'Certificate',
      namespace: NS,
      name: 'issuer',
    })!['status'] as { conditions: { reason: string }[] };
    assert.equal(waiting.conditions[0]!.reason, 'IssuerNotReady');
    const second = await sim.reconcile();
    assert.deepEqual(
      second.map((i) => [i.certificate, i.reason]),
      [['issuer', 'missing']],
    );
    const root = secret('root');
    const issuer = secret('issuer');
    const r = cert(root['tls.crt']!);
    assert.equal(r.subject, 'CN=root.linkerd.cluster.local');
    assert.equal(r.ca, true);
    assert.equal(root['ca.crt'], root['tls.crt'], 'a self-signed certificate is its own ca.crt');
    assert.ok(
      r.checkPrivateKey(
        await import('node:crypto').then((c) => c.createPrivateKey(root['tls.key']!)),
      ),
    );
    const i = cert(issuer['tls.crt']!);
    assert.equal(i.subject, 'CN=identity.linkerd.cluster.local');
    assert.ok(i.verify(r.publicKey), 'the issuer is signed by the root');
    assert.equal(issuer['ca.crt'], root['tls.crt']);
    assert.equal(Date.parse(i.validTo) - Date.parse(i.validFrom), 48 * HOUR);
    const stored = api.get({ apiVersion: 'v1', kind: 'Secret', namespace: NS, name: 'root' })!;
    assert.equal(stored.metadata.labels?.['meshid.io/trust-anchor'], 'true');
    assert.equal(stored.metadata.annotations?.['cert-manager.io/certificate-name'], 'root');
    const status = api.get({
      apiVersion: 'cert-manager.io/v1',
      kind: 'Certificate',
      namespace: NS,
      name: 'issuer',
    })!['status'] as {
      conditions: { type: string; status: string }[];
      revision: number;
      renewalTime: string;
    };
    assert.deepEqual(
      status.conditions.map((c) => [c.type, c.status]),
      [['Ready', 'True']],
    );
    assert.equal(status.revision, 1);
    // Nothing more to do until something changes.
    assert.deepEqual(await sim.reconcile(), []);
  });

  it('renews at notAfter - renewBefore on the injected clock, with a new key', async () => {
    await sim.reconcile();
    await sim.reconcile();
    const before = secret('issuer');
    clock.advance(23 * HOUR - 60_000);
    assert.deepEqual(await sim.reconcile(), [], 'not due yet');
    clock.advance(2 * 60_000);
    const renewed = await sim.reconcile();
    assert.deepEqual(
      renewed.map((i) => [i.certificate, i.reason]),
      [['issuer', 'renewal']],
    );
    const after = secret('issuer');
    assert.notEqual(after['tls.key'], before['tls.key']);
    assert.notEqual(cert(after['tls.crt']!).serialNumber, cert(before['tls.crt']!).serialNumber);
  });

  it('re-issues when the Certificate changes, and on a manual renewal (the Issuing condition)', async () => {
    await sim.reconcile();
    await sim.reconcile();
    // A second root and CA Issuer; pointing the issuer Certificate at it re-issues from it.
    api.create(
      certificate('root-b', {
        isCA: true,
        commonName: 'root.linkerd.cluster.local',
        issuerRef: { name: 'selfsigned', kind: 'Issuer' },
      }),
    );
    api.create({
      apiVersion: 'cert-manager.io/v1',
      kind: 'Issuer',
      metadata: { name: 'root-b', namespace: NS },
      spec: { ca: { secretName: 'root-b' } },
    });
    await sim.reconcile();
    const c = api.get({
      apiVersion: 'cert-manager.io/v1',
      kind: 'Certificate',
      namespace: NS,
      name: 'issuer',
    })!;
    api.update({
      ...c,
      spec: { ...(c['spec'] as object), issuerRef: { name: 'root-b', kind: 'Issuer' } },
    });
    const changed = await sim.reconcile();
    assert.deepEqual(
      changed.map((i) => [i.certificate, i.reason]),
      [['issuer', 'spec-changed']],
    );
    assert.ok(
      cert(secret('issuer')['tls.crt']!).verify(cert(secret('root-b')['tls.crt']!).publicKey),
    );

    const latest = api.get({
      apiVersion: 'cert-manager.io/v1',
      kind: 'Certificate',
      namespace: NS,
      name: 'root',
    })!;
    api.updateStatus({
      ...latest,
      status: {
        ...(latest['status'] as object),
        conditions: [{ type: 'Issuing', status: 'True', reason: 'ManuallyTriggered' }],
      },
    });
    const manual = await sim.reconcile();
    assert.deepEqual(
      manual.map((i) => [i.certificate, i.reason]),
      [['root', 'manual']],
    );
    const conditions = (
      api.get({
        apiVersion: 'cert-manager.io/v1',
        kind: 'Certificate',
        namespace: NS,
        name: 'root',
      })!['status'] as { conditions: { type: string }[] }
    ).conditions;
    assert.deepEqual(
      conditions.map((x) => x.type),
      ['Ready'],
      'the Issuing condition is cleared',
    );
  });

  it('runs on an interval once started', async () => {
    sim.start();
    const deadline = Date.now() + 10_000;
    while (
      api.get({ apiVersion: 'v1', kind: 'Secret', namespace: NS, name: 'issuer' }) === undefined
    ) {
      assert.ok(Date.now() < deadline, 'the Secrets appear');
      await new Promise((r) => setTimeout(r, 20));
    }
  });
});
