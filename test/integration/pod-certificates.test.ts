/**
 * meshid's PodCertificateRequest signer end to end: real `meshid ca --pod-certificates`
 * processes installed with the RBAC `meshid install --pod-certificates` renders, against the
 * Kubernetes API test double (a test double, docs/kube-api-test-server.md) serving
 * PodCertificateRequests, with simulated kubelets (test/support/kubelet-sim.ts) of 1.35, 1.36 and
 * 1.37 mounting `podCertificate` volumes. Then a hostile table against a double that lets
 * everything through (so the signer's own checks are what refuses), each refusal with its reason.
 */
import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import {
  X509Certificate,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
} from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { KubernetesObjectApi } from '@kubernetes/client-node';
import type { KubernetesObject } from '@kubernetes/client-node';
import { createCsr } from '../../core/index.js';
import { adminGet, metricValue, waitFor } from '../support/ca-process.js';
import type { CaProcess } from '../support/ca-process.js';
import type { KubeObject } from '../support/kube-api-server/index.js';
import {
  generatePodKey,
  PodCertificateRefused,
  proofOfPossession,
  startKubeletSim,
  stubCsr,
} from '../support/kubelet-sim.js';
import type { KubeletSim, PodCertificateKeyType, SimPod } from '../support/kubelet-sim.js';
import { answerOf, SIGNER, startPodCertCluster } from '../support/podcert-cluster.js';
import type { PodCertCluster } from '../support/podcert-cluster.js';

const WEB = 'web.emojivoto.serviceaccount.identity.linkerd.cluster.local';
const WEB_SPIFFE = 'spiffe://cluster.local/ns/emojivoto/sa/web';

/** The parts of a credential bundle: the key first, then the chain. */
function splitBundle(text: string): { keyPem: string; certs: X509Certificate[] } {
  const keyPem = /^-----BEGIN PRIVATE KEY-----[^-]+-----END PRIVATE KEY-----\n/.exec(text)?.[0];
  assert.ok(keyPem !== undefined, 'the bundle starts with the PKCS#8 key');
  const certs = [
    ...text.matchAll(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g),
  ].map((m) => new X509Certificate(m[0]));
  return { keyPem, certs };
}

describe('pod certificates: meshid ca signs PodCertificateRequests (test double, simulated kubelets)', function () {
  this.timeout(120_000);

  describe('on a 1.37 cluster with 1.35, 1.36 and 1.37 kubelets', () => {
    let cluster: PodCertCluster;
    let ca: CaProcess;
    const kubelets = new Map<string, KubeletSim>();

    before(async () => {
      cluster = await startPodCertCluster({ mode: '1.37' });
      ca = await cluster.startCa();
      for (const v of ['1.35', '1.36', '1.37'] as const)
        kubelets.set(
          v,
          startKubeletSim({
            api: cluster.api,
            nodeName: `node-${v.replace('.', '')}`,
            version: v,
            dir: cluster.dir,
          }),
        );
    });
    after(async () => {
      for (const k of kubelets.values()) k.close();
      await cluster?.close();
    });

    for (const v of ['1.35', '1.36', '1.37'] as const)
      it(`issues the ${v} request shape a certificate for the pod's ServiceAccount, bound to the pod in the audit record`, async () => {
        const kubelet = kubelets.get(v)!;
        const pod = kubelet.createPod('emojivoto', `web-${v.replace('.', '')}`, 'web');
        const m = await kubelet.mount(pod, {
          signerName: SIGNER,
          keyType: 'ECDSAP256',
          maxExpirationSeconds: 7200,
        });
        const { keyPem, certs } = splitBundle(await readFile(m.bundlePath, 'utf8'));
        const [leaf, issuer] = certs;
        assert.ok(
          leaf !== undefined && issuer !== undefined && certs.length === 2,
          'leaf, then the issuer',
        );
        assert.equal(leaf.subjectAltName, `DNS:${WEB}, URI:${WEB_SPIFFE}`);
        assert.ok(
          createPublicKey(createPrivateKey(keyPem)).equals(leaf.publicKey),
          'the leaf is for the key the kubelet made',
        );
        assert.ok(leaf.verify(issuer.publicKey), 'signed by the issuer');
        assert.ok(issuer.verify(new X509Certificate(cluster.root.certificatePem).publicKey));
        assert.equal(leaf.ca, false);
        const nb = Date.parse(leaf.validFrom);
        const na = Date.parse(leaf.validTo);
        assert.equal(
          na - nb,
          7200_000,
          'the lifetime is maxExpirationSeconds when that is shorter',
        );
        assert.ok(
          m.beginRefreshAt >= nb + 0.5 * 7200_000 - 1000 && m.beginRefreshAt <= nb + 0.8 * 7200_000,
        );
        const line = await waitFor('the audit line', () =>
          ca.lines.find(
            (l) => l.includes('issued leaf certificate for a pod') && l.includes(pod.uid),
          ),
        );
        const audit = JSON.parse(line) as Record<string, string>;
        assert.equal(audit['identity'], WEB);
        assert.equal(audit['pod'], `emojivoto/${pod.name}`);
        assert.equal(audit['node'], kubelet.nodeName);
        assert.equal(audit['serial'], leaf.serialNumber.toLowerCase());
        const event = await waitFor('the IssuedPodCertificate Event', () =>
          cluster.api
            .list<
              KubeObject & { reason?: string; message?: string; involvedObject?: { name?: string } }
            >('v1', 'Event', 'emojivoto')
            .find(
              (e) =>
                e.reason === 'IssuedPodCertificate' && e.involvedObject?.name === m.requestName,
            ),
        );
        assert.match(
          event.message ?? '',
          new RegExp(
            `Issued ${WEB} to pod ${pod.name} \\(uid ${pod.uid}\\) on node ${kubelet.nodeName}`,
          ),
        );
      });

    for (const keyType of ['RSA3072', 'ED25519', 'ECDSAP384'] as PodCertificateKeyType[])
      it(`denies a ${keyType} key with UnsupportedKeyType, suggesting ECDSAP256`, async () => {
        const kubelet = kubelets.get('1.36')!;
        const pod = kubelet.createPod('emojivoto', `web-${keyType.toLowerCase()}`, 'web');
        const err = await kubelet.mount(pod, { signerName: SIGNER, keyType }).then(
          () => assert.fail('issued'),
          (e: unknown) => e,
        );
        assert.ok(err instanceof PodCertificateRefused, String(err));
        assert.equal(err.condition, 'Denied');
        assert.equal(err.reason, 'UnsupportedKeyType');
        assert.match(err.detail, /set keyType: ECDSAP256 .*SuggestedKeyType: ECDSAP256/);
      });

    it("leaves another signer's requests untouched", async () => {
      const kubelet = kubelets.get('1.37')!;
      const pod = kubelet.createPod('emojivoto', 'web-other-signer', 'web');
      const other = await kubelet.requestBody(
        pod,
        { signerName: 'example.com/other', keyType: 'ECDSAP256' },
        generatePodKey('ECDSAP256'),
      );
      other.metadata.name = 'for-another-signer';
      cluster.api.create(other);
      // A request of meshid's, made after it, is answered: the signer has seen both.
      const pod2 = kubelet.createPod('emojivoto', 'web-after-other', 'web');
      await kubelet.mount(pod2, { signerName: SIGNER, keyType: 'ECDSAP256' });
      const foreign = cluster.api.get<KubeObject>({
        apiVersion: 'certificates.k8s.io/v1',
        kind: 'PodCertificateRequest',
        namespace: 'emojivoto',
        name: 'for-another-signer',
      })!;
      assert.equal(foreign['status'], undefined);
      assert.equal(
        cluster.api.requests.filter((r) => r.path.endsWith('/for-another-signer/status')).length,
        0,
        'no status write was even tried',
      );
      const watches = cluster.api.requests.filter(
        (r) =>
          r.resource === 'podcertificaterequests' &&
          r.user === 'system:serviceaccount:linkerd:linkerd-identity',
      );
      assert.ok(watches.length > 0);
      assert.ok(
        watches
          .filter((r) => r.verb === 'list' || r.verb === 'watch')
          .every((r) => r.query['fieldSelector'] === `spec.signerName=${SIGNER}`),
        'the signer only ever asks for its own requests',
      );
    });

    it('refreshes at beginRefreshAt: a new request, a new key and certificate in the same file', async () => {
      let now = Date.now();
      const kubelet = startKubeletSim({
        api: cluster.api,
        nodeName: 'node-137',
        version: '1.37',
        dir: join(cluster.dir, 'refresh'),
        now: () => now,
      });
      try {
        const pod = kubelet.createPod('emojivoto', 'web-refresh', 'web');
        const first = await kubelet.mount(pod, { signerName: SIGNER, keyType: 'ECDSAP256' });
        now = first.beginRefreshAt;
        assert.equal(await kubelet.refreshDue(), 1);
        const second = kubelet.mounts[0]!;
        const { keyPem, certs } = splitBundle(await readFile(first.bundlePath, 'utf8'));
        assert.notEqual(second.requestName, first.requestName);
        assert.ok(createPublicKey(createPrivateKey(keyPem)).equals(certs[0]!.publicKey));
        assert.notEqual(certs[0]!.serialNumber, new X509Certificate(first.chainPem).serialNumber);
        assert.ok(
          !createPublicKey(createPrivateKey(keyPem)).equals(
            new X509Certificate(first.chainPem).publicKey,
          ),
          'a new key',
        );
      } finally {
        kubelet.close();
      }
    });

    it('counts what it answered in its metrics', async () => {
      const metrics = (await adminGet(ca.admin, '/metrics')).body;
      assert.ok(metricValue(metrics, 'meshid_podcert_requests_total', { outcome: 'issued' }) >= 4);
      assert.ok(
        metricValue(metrics, 'meshid_podcert_requests_total', {
          outcome: 'denied',
          reason: 'UnsupportedKeyType',
        }) >= 3,
      );
    });

    it('answers after a restart what was asked while it was down', async () => {
      await ca.stop();
      const kubelet = kubelets.get('1.36')!;
      const pod = kubelet.createPod('emojivoto', 'web-while-down', 'web');
      const pending = kubelet.mount(pod, { signerName: SIGNER, keyType: 'ECDSAP256' });
      await waitFor('the request', () =>
        cluster
          .requests()
          .find((r) => (r['spec'] as { podName?: string }).podName === 'web-while-down'),
      );
      ca = await cluster.startCa();
      const m = await pending;
      assert.equal(m.generation, 1);
    });
  });

  describe('a hostile table, on an API server that checks nothing (the signer refuses on its own)', () => {
    let cluster: PodCertCluster;
    let admin: KubernetesObjectApi;
    let kubelet: KubeletSim;
    let old: KubeletSim;

    before(async () => {
      cluster = await startPodCertCluster({ mode: '1.36', checks: false });
      await cluster.startCa();
      admin = KubernetesObjectApi.makeApiClient(cluster.api.kubeConfig());
      kubelet = startKubeletSim({
        api: cluster.api,
        nodeName: 'node-a',
        version: '1.36',
        dir: cluster.dir,
      });
      old = startKubeletSim({
        api: cluster.api,
        nodeName: 'node-a',
        version: '1.35',
        dir: cluster.dir,
      });
      startKubeletSim({
        api: cluster.api,
        nodeName: 'node-b',
        version: '1.36',
        dir: cluster.dir,
      }).close();
    });
    after(async () => {
      kubelet.close();
      old.close();
      await cluster?.close();
    });

    const spec = (b: KubeObject): Record<string, unknown> => b['spec'] as Record<string, unknown>;

    const cases: [string, (pod: SimPod) => Promise<KubeObject>, string, RegExp][] = [
      [
        'a request from a node the pod is not on',
        async (pod) => {
          const b = await kubelet.requestBody(
            pod,
            { signerName: SIGNER, keyType: 'ECDSAP256' },
            generatePodKey('ECDSAP256'),
          );
          spec(b)['nodeName'] = 'node-b';
          return b;
        },
        'NodeMismatch',
        /is bound to node node-a, not the requesting node node-b/,
      ],
      [
        "a request naming another pod's UID",
        async (pod) => {
          const b = await kubelet.requestBody(
            pod,
            { signerName: SIGNER, keyType: 'ECDSAP256' },
            generatePodKey('ECDSAP256'),
          );
          spec(b)['podUID'] = '00000000-0000-0000-0000-000000000000';
          return b;
        },
        'PodMismatch',
        /has UID .*, not the request's spec\.podUID 00000000/,
      ],
      [
        "a request for another ServiceAccount than the pod's",
        async (pod) => {
          cluster.api.createServiceAccount('emojivoto', 'admin');
          const b = await kubelet.requestBody(
            pod,
            { signerName: SIGNER, keyType: 'ECDSAP256' },
            generatePodKey('ECDSAP256'),
          );
          spec(b)['serviceAccountName'] = 'admin';
          return b;
        },
        'PodMismatch',
        /runs as ServiceAccount web, not the request's spec\.serviceAccountName admin/,
      ],
      [
        'a forged proof of possession (signed over another pod UID)',
        async (pod) => {
          const key = generatePodKey('ECDSAP256');
          const b = await old.requestBody(pod, { signerName: SIGNER, keyType: 'ECDSAP256' }, key);
          spec(b)['proofOfPossession'] = proofOfPossession(key, 'another-pod-uid').toString(
            'base64',
          );
          return b;
        },
        'InvalidProofOfPossession',
        /spec\.proofOfPossession does not verify/,
      ],
      [
        'a missing proof of possession',
        async (pod) => {
          const b = await old.requestBody(
            pod,
            { signerName: SIGNER, keyType: 'ECDSAP256' },
            generatePodKey('ECDSAP256'),
          );
          delete spec(b)['proofOfPossession'];
          return b;
        },
        'InvalidProofOfPossession',
        /spec\.proofOfPossession is missing/,
      ],
      [
        'a stub CSR whose signature is not its key',
        async (pod) => {
          const b = await kubelet.requestBody(
            pod,
            { signerName: SIGNER, keyType: 'ECDSAP256' },
            generatePodKey('ECDSAP256'),
          );
          const csr = stubCsr(generatePodKey('ECDSAP256'));
          const other = stubCsr(generatePodKey('ECDSAP256'));
          other.subarray(other.length - 20).copy(csr, csr.length - 20);
          spec(b)['stubPKCS10Request'] = csr.toString('base64');
          return b;
        },
        'InvalidProofOfPossession',
        /signature does not verify with its own key/,
      ],
      [
        'a stub CSR carrying a subject and SANs',
        async (pod) => {
          const b = await kubelet.requestBody(
            pod,
            { signerName: SIGNER, keyType: 'ECDSAP256' },
            generatePodKey('ECDSAP256'),
          );
          const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
          spec(b)['stubPKCS10Request'] = createCsr({
            privateKey,
            commonName: 'linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local',
            dnsNames: ['linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local'],
          }).toString('base64');
          return b;
        },
        'InvalidStubPKCS10Request',
        /must be an empty CSR/,
      ],
      [
        'a lifetime under an hour',
        async (pod) => {
          const b = await kubelet.requestBody(
            pod,
            { signerName: SIGNER, keyType: 'ECDSAP256' },
            generatePodKey('ECDSAP256'),
          );
          spec(b)['maxExpirationSeconds'] = 1800;
          return b;
        },
        'LifetimeTooShort',
        /spec\.maxExpirationSeconds is 1800/,
      ],
      [
        'an RSA-2048 key',
        async (pod) => {
          const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
          return kubelet.requestBody(pod, { signerName: SIGNER, keyType: 'RSA3072' }, privateKey);
        },
        'UnsupportedKeyType',
        /an RSA key is not supported/,
      ],
      [
        'user annotations meshid does not define',
        async (pod) =>
          kubelet.requestBody(
            pod,
            {
              signerName: SIGNER,
              keyType: 'ECDSAP256',
              userAnnotations: { 'meshid.io/identity': 'admin' },
            },
            generatePodKey('ECDSAP256'),
          ),
        'InvalidUnverifiedUserAnnotations',
        /remove "meshid\.io\/identity"/,
      ],
    ];
    cases.forEach(([what, make, reason, message], i) =>
      it(`denies ${what} (${reason})`, async () => {
        const pod = kubelet.createPod('emojivoto', `hostile-${i}`, 'web');
        const body = await make(pod);
        body.metadata.name = `hostile-${i}`;
        await admin.create(body as unknown as KubernetesObject);
        const answered = await waitFor(`the answer to ${what}`, () => {
          const pcr = cluster.api.get<KubeObject>({
            apiVersion: 'certificates.k8s.io/v1beta1',
            kind: 'PodCertificateRequest',
            namespace: 'emojivoto',
            name: `hostile-${i}`,
          });
          return pcr === undefined ? undefined : answerOf(pcr);
        });
        assert.deepEqual([answered.type, answered.reason], ['Denied', reason]);
        assert.match(answered.message, message);
        const status = cluster.api.get<KubeObject>({
          apiVersion: 'certificates.k8s.io/v1beta1',
          kind: 'PodCertificateRequest',
          namespace: 'emojivoto',
          name: `hostile-${i}`,
        })!['status'] as Record<string, unknown>;
        assert.deepEqual(Object.keys(status), ['conditions'], 'no certificate');
      }),
    );
  });
});
