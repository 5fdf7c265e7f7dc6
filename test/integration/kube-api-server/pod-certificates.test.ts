/**
 * The test double's PodCertificateRequest API (KEP-4317) and the kubelet simulator: the feature
 * switch, the three request shapes, the create checks (lifetime bounds, proof of possession, the
 * stub CSR, key types), the node restriction, spec immutability, the status rules a signer must
 * meet (key, times, lifetime, refresh window, once only, `sign` permission), the v1 view of a
 * v1beta1 request, and the kubelet's atomic bundle write and refresh at beginRefreshAt.
 */
import { strict as assert } from 'node:assert';
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { mkdtemp, readFile, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CustomObjectsApi, KubernetesObjectApi } from '@kubernetes/client-node';
import type { KubernetesObject } from '@kubernetes/client-node';
import { createCsr, spiffeId, systemRandom, toPem } from '../../../core/index.js';
import { LeafSigner, randomSerial } from '../../../identity-ca/issuer/leaf.js';
import { startKubeApiServer } from '../../support/kube-api-server/index.js';
import type { KubeApiServer, KubeObject } from '../../support/kube-api-server/index.js';
import {
  generatePodKey,
  PodCertificateRefused,
  startKubeletSim,
  stubCsr,
} from '../../support/kubelet-sim.js';
import type { KubeletSim, KubeletVersion } from '../../support/kubelet-sim.js';
import { createWorkloadPki, NAMING } from '../../support/proxy-pki.js';
import type { WorkloadPki } from '../../support/proxy-pki.js';
import { raw, statusOf } from './helpers.js';

const SIGNER = 'example.com/test-signer';
const HOUR = 3_600_000;

/** What a test signer writes into a request's status. */
interface Answer {
  readonly lifetimeMs?: number;
  readonly refreshAfterMs?: number;
  readonly notBeforeShiftMs?: number;
  /** Issue to another key than the request's. */
  readonly spki?: Buffer;
}

/** The request's public key, from whichever field carries it. */
function requestSpki(pcr: KubeObject): Buffer {
  const spec = pcr['spec'] as Record<string, string>;
  if (spec['pkixPublicKey'] !== undefined) return Buffer.from(spec['pkixPublicKey'], 'base64');
  return spkiOfCsr(Buffer.from(spec['stubPKCS10Request']!, 'base64'));
}

/** The SPKI of a CSR: SEQUENCE { SEQUENCE(info) { INTEGER, Name, SPKI, [0] }, ... }. */
function spkiOfCsr(csr: Buffer): Buffer {
  const skip = (at: number): { start: number; end: number } => {
    const first = csr[at + 1]!;
    if (first < 0x80) return { start: at + 2, end: at + 2 + first };
    const n = first & 0x7f;
    let len = 0;
    for (let k = 0; k < n; k++) len = len * 256 + csr[at + 2 + k]!;
    return { start: at + 2 + n, end: at + 2 + n + len };
  };
  const outer = skip(0);
  const info = skip(outer.start);
  const version = skip(info.start);
  const subject = skip(version.end);
  const spki = skip(subject.end);
  return csr.subarray(subject.end, spki.end);
}

function whole(ms: number): number {
  return Math.floor(ms / 1000) * 1000;
}

function iso(ms: number): string {
  return new Date(ms).toISOString().replace('.000Z', 'Z');
}

/** The issued status a careful signer writes (or a careless one, with `a`). */
function issuedStatus(pki: WorkloadPki, pcr: KubeObject, now: number, a: Answer = {}): object {
  const signer = new LeafSigner(pki.issuer.certificateDer, pki.issuer.privateKey);
  const notBefore = whole(now + (a.notBeforeShiftMs ?? 0));
  const notAfter = notBefore + (a.lifetimeMs ?? 24 * HOUR);
  const leaf = signer.sign({
    spki: a.spki ?? requestSpki(pcr),
    dnsName: 'web.emojivoto.serviceaccount.identity.linkerd.cluster.local',
    uri: spiffeId({ namespace: 'emojivoto', serviceAccount: 'web' }, NAMING),
    serial: randomSerial(systemRandom),
    notBefore,
    notAfter,
  });
  return {
    conditions: [
      {
        type: 'Issued',
        status: 'True',
        reason: 'Issued',
        message: 'issued',
        lastTransitionTime: iso(whole(now)),
      },
    ],
    certificateChain: toPem(leaf, 'CERTIFICATE') + pki.issuer.certificatePem,
    notBefore: iso(notBefore),
    notAfter: iso(notAfter),
    beginRefreshAt: iso(notBefore + (a.refreshAfterMs ?? 12 * HOUR)),
  };
}

/** Answers every new request of SIGNER in `api` the moment it is created. */
function autoSigner(api: KubeApiServer, pki: WorkloadPki, now: () => number): () => void {
  return api.onRequest((e) => {
    if (e.verb !== 'create' || e.resource !== 'podcertificaterequests' || e.status !== 201) return;
    for (const v of ['v1beta1', 'v1']) {
      let items: KubeObject[];
      try {
        items = api.list<KubeObject>(`certificates.k8s.io/${v}`, 'PodCertificateRequest');
      } catch {
        continue;
      }
      for (const pcr of items)
        if (pcr['status'] === undefined)
          api.updateStatus({ ...pcr, status: issuedStatus(pki, pcr, now()) });
      return;
    }
  });
}

describe('kube-api-server: PodCertificateRequest (KEP-4317) and the kubelet simulator', function () {
  this.timeout(30_000);
  let pki: WorkloadPki;
  let dir: string;

  before(async () => {
    pki = await createWorkloadPki();
    dir = await mkdtemp(join(tmpdir(), 'meshid-pcr-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('is not served when the feature is off, as by default on 1.35 and 1.36', async () => {
    const api = await startKubeApiServer();
    try {
      const r = await raw(api.url, api.caPem, {
        path: '/apis/certificates.k8s.io/v1beta1/podcertificaterequests',
        token: api.adminToken,
      });
      assert.equal(r.status, 404);
    } finally {
      await api.stop();
    }
  });

  for (const version of ['1.35', '1.36', '1.37'] as const)
    it(`issues a ${version} kubelet's request shape and the kubelet writes key then chain atomically`, async () => {
      const api = await startKubeApiServer({ podCertificates: version });
      const kubelet = startKubeletSim({ api, nodeName: 'node-a', version, dir });
      const stop = autoSigner(api, pki, Date.now);
      try {
        const pod = kubelet.createPod('emojivoto', `web-${version.replace('.', '')}`, 'web');
        const m = await kubelet.mount(pod, { signerName: SIGNER, keyType: 'ECDSAP256' });
        const stored = api.get<KubeObject>({
          apiVersion: version === '1.37' ? 'certificates.k8s.io/v1' : 'certificates.k8s.io/v1beta1',
          kind: 'PodCertificateRequest',
          namespace: 'emojivoto',
          name: m.requestName,
        })!;
        const spec = stored['spec'] as Record<string, unknown>;
        if (version === '1.35') {
          assert.equal(typeof spec['pkixPublicKey'], 'string');
          assert.equal(spec['stubPKCS10Request'], undefined);
        } else {
          assert.equal(typeof spec['stubPKCS10Request'], 'string');
          assert.equal(spec['pkixPublicKey'], undefined);
        }
        assert.equal(spec['maxExpirationSeconds'], 86400, 'defaulted to 24 h');
        assert.equal(spec['nodeUID'], kubelet.nodeUid);
        const bundle = await readFile(m.bundlePath, 'utf8');
        assert.match(bundle, /^-----BEGIN PRIVATE KEY-----/);
        assert.equal((bundle.match(/BEGIN CERTIFICATE/g) ?? []).length, 2, 'leaf then issuer');
        assert.equal(await readlink(m.bundlePath), join('..data', 'credentialbundle.pem'));
        assert.match(await readlink(join(m.dir, '..data')), /^\.\.\d+_\d+$/);
      } finally {
        stop();
        kubelet.close();
        await api.stop();
      }
    });

  describe('on 1.36', () => {
    let api: KubeApiServer;
    let kubelet: KubeletSim;
    let admin: KubernetesObjectApi;

    before(async () => {
      api = await startKubeApiServer({ podCertificates: '1.36' });
      kubelet = startKubeletSim({ api, nodeName: 'node-a', version: '1.36', dir });
      admin = KubernetesObjectApi.makeApiClient(api.kubeConfig());
    });
    after(async () => {
      kubelet.close();
      await api.stop();
    });

    const create = (body: KubeObject): Promise<unknown> =>
      admin.create(body as unknown as KubernetesObject);

    const bodyFor = async (
      name: string,
      key: KeyObject = generatePodKey('ECDSAP256'),
      v: KubeletVersion = '1.36',
    ): Promise<KubeObject> => {
      const pod = kubelet.createPod('emojivoto', name, 'web');
      const sim =
        v === '1.36' ? kubelet : startKubeletSim({ api, nodeName: 'node-a', version: v, dir });
      const body = await sim.requestBody(pod, { signerName: SIGNER, keyType: 'ECDSAP256' }, key);
      body.metadata.name = name;
      return body;
    };

    it('refuses a request from a node the pod is not on (node restriction) with 403', async () => {
      const other = startKubeletSim({ api, nodeName: 'node-b', version: '1.36', dir });
      try {
        const body = await bodyFor('web-elsewhere');
        (body['spec'] as Record<string, unknown>)['nodeName'] = 'node-b';
        (body['spec'] as Record<string, unknown>)['nodeUID'] = other.nodeUid;
        const err = await other.submit(body).then(
          () => assert.fail('created'),
          (e: { code?: number; body?: string }) => e,
        );
        assert.equal(err.code, 403);
        assert.match(String(err.body), /pod is not bound to node \\"node-b\\"/);
      } finally {
        other.close();
      }
    });

    const invalidCases: [string, (b: KubeObject) => Promise<void> | void, RegExp][] = [
      [
        'a lifetime under an hour',
        (b) => {
          (b['spec'] as Record<string, unknown>)['maxExpirationSeconds'] = 1800;
        },
        /spec\.maxExpirationSeconds: Invalid value: 1800: must be in the range \[3600, 7862400\]/,
      ],
      [
        'a stub CSR with a subject and a SAN extension',
        (b) => {
          const key = generatePodKey('ECDSAP256');
          (b['spec'] as Record<string, unknown>)['stubPKCS10Request'] = createCsr({
            privateKey: key,
            commonName: 'admin',
            dnsNames: ['kubernetes.default.svc'],
          }).toString('base64');
        },
        /the stub CSR must be empty/,
      ],
      [
        'a stub CSR signed by another key',
        (b) => {
          const csr = stubCsr(generatePodKey('ECDSAP256'));
          const other = stubCsr(generatePodKey('ECDSAP256'));
          // The first key's request info with the second key's signature.
          const spliced = Buffer.from(csr);
          other.subarray(other.length - 8).copy(spliced, spliced.length - 8);
          (b['spec'] as Record<string, unknown>)['stubPKCS10Request'] = spliced.toString('base64');
        },
        /could not verify the CSR signature/,
      ],
      [
        'an RSA-2048 key',
        (b) => {
          const key = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
          (b['spec'] as Record<string, unknown>)['stubPKCS10Request'] =
            stubCsr(key).toString('base64');
        },
        /2048-bit modulus: RSA keys must have modulus size 3072 or 4096/,
      ],
      [
        'both the stub CSR and the public key',
        (b) => {
          (b['spec'] as Record<string, unknown>)['pkixPublicKey'] = createPublicKey(
            generatePodKey('ECDSAP256'),
          )
            .export({ type: 'spki', format: 'der' })
            .toString('base64');
        },
        /spec\.pkixPublicKey: Forbidden: must be empty when spec\.stubPKCS10Request is set/,
      ],
    ];
    invalidCases.forEach(([what, edit, message], i) =>
      it(`refuses ${what} with 422 Invalid`, async () => {
        const body = await bodyFor(`web-invalid-${i}`);
        await edit(body);
        const { code, body: status } = await statusOf(create(body));
        assert.equal(code, 422);
        assert.equal(status['reason'], 'Invalid');
        assert.match(String(status['message']), message);
      }),
    );

    it('refuses a forged proof of possession (1.35 shape) with 422 Invalid', async () => {
      const body = await bodyFor('web-forged-pop', generatePodKey('ECDSAP256'), '1.35');
      const spec = body['spec'] as Record<string, unknown>;
      // A proof made for another pod's UID.
      const pod2 = kubelet.createPod('emojivoto', 'web-forged-pop-2', 'web');
      const body2 = await startKubeletSim({
        api,
        nodeName: 'node-a',
        version: '1.35',
        dir,
      }).requestBody(
        pod2,
        { signerName: SIGNER, keyType: 'ECDSAP256' },
        generatePodKey('ECDSAP256'),
      );
      spec['pkixPublicKey'] = (body2['spec'] as Record<string, unknown>)['pkixPublicKey'];
      spec['proofOfPossession'] = (body2['spec'] as Record<string, unknown>)['proofOfPossession'];
      const { code, body: status } = await statusOf(create(body));
      assert.equal(code, 422);
      assert.match(
        String(status['message']),
        /spec\.proofOfPossession: Invalid value: "<value omitted>": could not verify proof-of-possession signature/,
      );
    });

    it('keeps the spec immutable and the status subresource to the signer with sign permission', async () => {
      const body = await bodyFor('web-immutable');
      const created = (await create(body)) as unknown as KubeObject;
      (created['spec'] as Record<string, unknown>)['podName'] = 'web-other';
      const r = await statusOf(admin.replace(created as unknown as KubernetesObject));
      assert.equal(r.code, 422);
      assert.match(
        String(r.body['message']),
        /spec: Invalid value: "<value omitted>": field is immutable/,
      );

      const stored = api.get<KubeObject>({
        apiVersion: 'certificates.k8s.io/v1beta1',
        kind: 'PodCertificateRequest',
        namespace: 'emojivoto',
        name: 'web-immutable',
      })!;
      const token = api.addUser({
        username: 'not-a-signer',
        rules: [
          {
            verbs: ['get', 'list', 'watch', 'update'],
            apiGroups: ['certificates.k8s.io'],
            resources: ['podcertificaterequests', 'podcertificaterequests/status'],
          },
        ],
      });
      const custom = api.kubeConfig({ token }).makeApiClient(CustomObjectsApi);
      const writeStatus = (tok: CustomObjectsApi, status: object): Promise<unknown> =>
        tok.replaceNamespacedCustomObjectStatus({
          group: 'certificates.k8s.io',
          version: 'v1beta1',
          namespace: 'emojivoto',
          plural: 'podcertificaterequests',
          name: 'web-immutable',
          body: { ...stored, status },
        });
      const denied = await statusOf(writeStatus(custom, issuedStatus(pki, stored, Date.now())));
      assert.equal(denied.code, 403);
      assert.match(
        String(denied.body['message']),
        /is not permitted to "sign" for signer "example\.com\/test-signer"/,
      );

      const signerToken = api.addUser({
        username: 'a-signer',
        rules: [
          {
            verbs: ['update'],
            apiGroups: ['certificates.k8s.io'],
            resources: ['podcertificaterequests/status'],
          },
          {
            verbs: ['sign'],
            apiGroups: ['certificates.k8s.io'],
            resources: ['signers'],
            resourceNames: ['example.com/*'],
          },
        ],
      });
      const signer = api.kubeConfig({ token: signerToken }).makeApiClient(CustomObjectsApi);
      await writeStatus(signer, issuedStatus(pki, stored, Date.now()));
      const issued = api.get<KubeObject>({
        apiVersion: 'certificates.k8s.io/v1beta1',
        kind: 'PodCertificateRequest',
        namespace: 'emojivoto',
        name: 'web-immutable',
      })!;
      stored.metadata.resourceVersion = issued.metadata.resourceVersion!;
      const again = await statusOf(writeStatus(signer, issuedStatus(pki, stored, Date.now())));
      assert.equal(again.code, 422);
      assert.match(
        String(again.body['message']),
        /immutable after PodCertificateRequest is issued, denied, or failed/,
      );
    });

    const statusCases: [string, Answer, RegExp][] = [
      [
        'a leaf for another key',
        {
          spki: createPublicKey(generatePodKey('ECDSAP256')).export({
            type: 'spki',
            format: 'der',
          }),
        },
        /leaf certificate was not issued to the requested public key/,
      ],
      [
        'a lifetime over maxExpirationSeconds',
        { lifetimeMs: 25 * HOUR },
        /leaf certificate lifetime must be <= spec\.maxExpirationSeconds \(86400\)/,
      ],
      [
        'a lifetime under an hour',
        { lifetimeMs: HOUR / 2, refreshAfterMs: 11 * 60_000 },
        /lifetime must be >= 1 hour/,
      ],
      [
        'a beginRefreshAt within 10 minutes of notBefore',
        { refreshAfterMs: 5 * 60_000 },
        /status\.beginRefreshAt: .*must be at least 10 minutes after status\.notBefore/,
      ],
      [
        'a notBefore an hour away from now',
        { notBeforeShiftMs: -HOUR },
        /must be set to within 5 minutes of kube-apiserver's current time/,
      ],
    ];
    statusCases.forEach(([what, answer, message], i) =>
      it(`refuses a status with ${what} with 422 Invalid`, async () => {
        const created = (await create(await bodyFor(`web-status-${i}`))) as unknown as KubeObject;
        assert.throws(
          () =>
            api.updateStatus({
              ...created,
              status: issuedStatus(pki, created, Date.now(), answer),
            }),
          (e: { status?: { code?: number; message?: string } }) =>
            e.status?.code === 422 && message.test(e.status.message ?? ''),
        );
      }),
    );

    it('lets a Denied status carry conditions only, and only Issued/Denied/Failed types', async () => {
      const created = (await create(await bodyFor('web-denied'))) as unknown as KubeObject;
      const cond = (type: string) => ({
        type,
        status: 'True',
        reason: 'UnsupportedKeyType',
        message: 'use ECDSAP256',
        lastTransitionTime: iso(whole(Date.now())),
      });
      assert.throws(
        () => api.updateStatus({ ...created, status: { conditions: [cond('SuggestedKeyType')] } }),
        (e: { status?: { code?: number; message?: string } }) =>
          e.status?.code === 422 &&
          /Unsupported value: "SuggestedKeyType"/.test(e.status.message ?? ''),
      );
      assert.throws(
        () =>
          api.updateStatus({
            ...created,
            status: { conditions: [cond('Denied')], notAfter: iso(whole(Date.now())) },
          }),
        (e: { status?: { code?: number; message?: string } }) =>
          e.status?.code === 422 &&
          /non-condition status fields must be empty/.test(e.status.message ?? ''),
      );
      api.updateStatus({ ...created, status: { conditions: [cond('Denied')] } });
    });
  });

  it('shows a 1.35 request through v1 without the key fields v1 does not have (1.37)', async () => {
    const api = await startKubeApiServer({ podCertificates: '1.37' });
    const old = startKubeletSim({ api, nodeName: 'node-a', version: '1.35', dir });
    try {
      const pod = old.createPod('emojivoto', 'web-skew', 'web');
      const body = await old.requestBody(
        pod,
        { signerName: SIGNER, keyType: 'ED25519' },
        generatePodKey('ED25519'),
      );
      body.metadata.name = 'web-skew';
      api.create(body);
      const v1 = await raw(api.url, api.caPem, {
        path: '/apis/certificates.k8s.io/v1/namespaces/emojivoto/podcertificaterequests/web-skew',
        token: api.adminToken,
      });
      const seen = JSON.parse(v1.text) as KubeObject;
      assert.equal(seen.apiVersion, 'certificates.k8s.io/v1');
      assert.equal((seen['spec'] as Record<string, unknown>)['pkixPublicKey'], undefined);
      const beta = await raw(api.url, api.caPem, {
        path: '/apis/certificates.k8s.io/v1beta1/namespaces/emojivoto/podcertificaterequests/web-skew',
        token: api.adminToken,
      });
      assert.equal(
        typeof (JSON.parse(beta.text) as { spec: Record<string, unknown> }).spec['pkixPublicKey'],
        'string',
      );
    } finally {
      old.close();
      await api.stop();
    }
  });

  it('refreshes at beginRefreshAt by the injected clock, swapping ..data atomically', async () => {
    let now = Date.now();
    const api = await startKubeApiServer({ podCertificates: '1.37', now: () => now });
    const kubelet = startKubeletSim({
      api,
      nodeName: 'node-a',
      version: '1.37',
      dir,
      now: () => now,
    });
    const stop = autoSigner(api, pki, () => now);
    try {
      const pod = kubelet.createPod('emojivoto', 'web-refresh', 'web');
      const first = await kubelet.mount(pod, { signerName: SIGNER, keyType: 'ECDSAP256' });
      const firstData = await readlink(join(first.dir, '..data'));
      assert.equal(await kubelet.refreshDue(), 0, 'nothing is due before beginRefreshAt');
      now = first.beginRefreshAt;
      assert.equal(await kubelet.refreshDue(), 1);
      const second = kubelet.mounts[0]!;
      assert.equal(second.generation, 2);
      assert.notEqual(second.requestName, first.requestName, 'a new request for the refresh');
      assert.notEqual(await readlink(join(first.dir, '..data')), firstData);
      const bundle = await readFile(first.bundlePath, 'utf8');
      assert.ok(bundle.includes(second.chainPem), 'the file holds the new chain');
      assert.ok(!bundle.includes(first.chainPem.split('-----END CERTIFICATE-----')[0]!));
    } finally {
      stop();
      kubelet.close();
      await api.stop();
    }
  });

  it('reports a Denied answer to the kubelet as a refusal with its reason', async () => {
    const api = await startKubeApiServer({ podCertificates: '1.36' });
    const kubelet = startKubeletSim({ api, nodeName: 'node-a', version: '1.36', dir });
    const stop = api.onRequest((e) => {
      if (e.verb !== 'create' || e.resource !== 'podcertificaterequests' || e.status !== 201)
        return;
      for (const pcr of api.list<KubeObject>(
        'certificates.k8s.io/v1beta1',
        'PodCertificateRequest',
      ))
        if (pcr['status'] === undefined)
          api.updateStatus({
            ...pcr,
            status: {
              conditions: [
                {
                  type: 'Denied',
                  status: 'True',
                  reason: 'UnsupportedKeyType',
                  message: 'use ECDSAP256',
                  lastTransitionTime: iso(whole(Date.now())),
                },
              ],
            },
          });
    });
    try {
      const pod = kubelet.createPod('emojivoto', 'web-refused', 'web');
      const err = await kubelet.mount(pod, { signerName: SIGNER, keyType: 'RSA3072' }).then(
        () => assert.fail('mounted'),
        (e: unknown) => e,
      );
      assert.ok(err instanceof PodCertificateRefused);
      assert.equal(err.condition, 'Denied');
      assert.equal(err.reason, 'UnsupportedKeyType');
    } finally {
      stop();
      kubelet.close();
      await api.stop();
    }
  });
});
