import { strict as assert } from 'node:assert';
import { silentLogger } from '../../../core/logger.js';
import { createIntermediateCa, createRootCa } from '../../../core/pki.js';
import type { GeneratedCa } from '../../../core/pki.js';
import { createTrustGuard } from '../../../webhooks/index.js';
import { admissionResponse, parseAdmissionReview } from '../../../webhooks/admission.js';
import type { JsonObject } from '../../../webhooks/admission.js';

const HOUR = 3_600_000;
const NOW = Date.parse('2026-12-03T08:00:00Z');
const OPTIONS = {
  controlPlaneNamespace: 'linkerd',
  trustAnchorsConfigMap: 'linkerd-identity-trust-roots',
  trustAnchorsKey: 'ca-bundle.crt',
  issuerSecret: 'linkerd-identity-issuer',
  caIdentityName: 'linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local',
  caAddress: 'linkerd-identity.linkerd.svc:8080',
};

/** What the CA's Certify port serves in a case (its certificate first), or that it is down. */
type ServedChain = 'ca-a' | 'unreachable' | 'no-ca' | 'impostor' | 'other-name' | 'no-issuer';

function review(
  operation: 'CREATE' | 'UPDATE',
  object: JsonObject,
  oldObject?: JsonObject,
): JsonObject {
  const [group, version] = (object['apiVersion'] as string).includes('/')
    ? (object['apiVersion'] as string).split('/')
    : ['', object['apiVersion'] as string];
  const meta = object['metadata'] as JsonObject;
  return {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid: 'e911857d-c318-11e8-bbad-025000000001',
      kind: { group, version, kind: object['kind'] },
      resource: {
        group,
        version,
        resource: object['kind'] === 'ConfigMap' ? 'configmaps' : 'certificates',
      },
      name: meta['name'],
      namespace: meta['namespace'],
      operation,
      userInfo: { username: 'alice@example.com', groups: ['system:authenticated'] },
      object,
      oldObject: oldObject ?? null,
      dryRun: false,
      options: {
        apiVersion: 'meta.k8s.io/v1',
        kind: `${operation === 'CREATE' ? 'Create' : 'Update'}Options`,
      },
    },
  };
}

function anchorsConfigMap(
  pem: string | undefined,
  name = OPTIONS.trustAnchorsConfigMap,
  namespace = 'linkerd',
): JsonObject {
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name, namespace, resourceVersion: '4711' },
    data: pem === undefined ? { other: 'x' } : { 'ca-bundle.crt': pem },
  };
}

function issuerCertificate(spec: JsonObject, secretName = OPTIONS.issuerSecret): JsonObject {
  return {
    apiVersion: 'cert-manager.io/v1',
    kind: 'Certificate',
    metadata: { name: 'linkerd-identity-issuer', namespace: 'linkerd' },
    spec: {
      secretName,
      commonName: 'identity.linkerd.cluster.local',
      duration: '48h0m0s',
      renewBefore: '25h0m0s',
      issuerRef: { name: 'linkerd-trust-anchor', kind: 'Issuer' },
      ...spec,
    },
  };
}

describe('trust guard', () => {
  let rootA: GeneratedCa;
  let rootB: GeneratedCa;
  let expired: GeneratedCa;
  let issuerA: GeneratedCa;
  let notCa: GeneratedCa;
  /** The chains a CA port may serve, by case. */
  const served = new Map<ServedChain, string[]>();
  before(async () => {
    const window = { notBefore: NOW - HOUR, notAfter: NOW + 365 * 24 * HOUR };
    rootA = await createRootCa({ commonName: 'root-a.linkerd.cluster.local', ...window });
    rootB = await createRootCa({ commonName: 'root-b.linkerd.cluster.local', ...window });
    expired = await createRootCa({
      commonName: 'old-root',
      notBefore: NOW - 10 * HOUR,
      notAfter: NOW - HOUR,
    });
    notCa = await createRootCa({ commonName: 'a-leaf', isCa: false, ...window });
    issuerA = await createIntermediateCa({
      issuer: rootA,
      commonName: 'identity.linkerd.cluster.local',
      notBefore: NOW - HOUR,
      notAfter: NOW + 48 * HOUR,
      pathLength: 0,
    });
    // The CA's serving certificate, as identity-ca issues it to itself from its issuer.
    const serving = (issuer: GeneratedCa, dns: string): Promise<GeneratedCa> =>
      createIntermediateCa({
        issuer,
        commonName: dns.slice(0, 60),
        notBefore: NOW - HOUR,
        notAfter: NOW + 24 * HOUR,
        isCa: false,
        keyUsage: ['digitalSignature'],
        extendedKeyUsage: ['serverAuth', 'clientAuth'],
        dnsNames: [dns],
      });
    const rootC = await createRootCa({
      commonName: 'root-c.attacker.example',
      notBefore: NOW - HOUR,
      notAfter: NOW + 24 * HOUR,
    });
    const issuerC = await createIntermediateCa({
      issuer: rootC,
      commonName: 'identity.linkerd.cluster.local',
      notBefore: NOW - HOUR,
      notAfter: NOW + 24 * HOUR,
      pathLength: 0,
    });
    const servingA = await serving(issuerA, OPTIONS.caIdentityName);
    served.set('ca-a', [servingA.certificatePem, issuerA.certificatePem]);
    served.set('impostor', [
      (await serving(issuerC, OPTIONS.caIdentityName)).certificatePem,
      issuerC.certificatePem,
    ]);
    served.set('other-name', [
      (await serving(issuerA, 'web.emojivoto.serviceaccount.identity.linkerd.cluster.local'))
        .certificatePem,
      issuerA.certificatePem,
    ]);
    served.set('no-issuer', [servingA.certificatePem]);
  });

  async function judge(
    body: JsonObject,
    ca: ServedChain,
  ): Promise<{ response: JsonObject; reads: number }> {
    let reads = 0;
    const guard = createTrustGuard(OPTIONS, {
      ...(ca === 'no-ca'
        ? {}
        : {
            caChainPem: () => {
              reads++;
              return ca === 'unreachable'
                ? Promise.reject(new Error('connect ECONNREFUSED 10.96.0.20:8080'))
                : Promise.resolve(served.get(ca)!);
            },
          }),
      clock: { now: () => NOW },
      logger: silentLogger(),
    });
    const request = parseAdmissionReview(JSON.stringify(body));
    const response = admissionResponse(request.uid, await guard(request))['response'] as JsonObject;
    assert.equal(response['uid'], 'e911857d-c318-11e8-bbad-025000000001');
    return { response, reads };
  }

  const cases: {
    name: string;
    body: () => JsonObject;
    ca?: ServedChain;
    allowed: boolean;
    message?: RegExp;
    warning?: RegExp;
    reads?: number;
  }[] = [
    {
      name: 'allows adding a second anchor beside the one the issuer chains to (stage of a rotation)',
      body: () =>
        review(
          'UPDATE',
          anchorsConfigMap(rootA.certificatePem + rootB.certificatePem),
          anchorsConfigMap(rootA.certificatePem),
        ),
      allowed: true,
      reads: 1,
    },
    {
      name: 'refuses replacing the anchor the issuer chains to, naming it',
      body: () =>
        review(
          'UPDATE',
          anchorsConfigMap(rootB.certificatePem),
          anchorsConfigMap(rootA.certificatePem + rootB.certificatePem),
        ),
      allowed: false,
      message:
        /drops the anchor the current issuer chains to.*It removes "CN=root-a\.linkerd\.cluster\.local".*issuer "CN=identity\.linkerd\.cluster\.local"/s,
    },
    {
      name: 'refuses a bundle that is not PEM',
      body: () =>
        review(
          'UPDATE',
          anchorsConfigMap('not a certificate'),
          anchorsConfigMap(rootA.certificatePem),
        ),
      allowed: false,
      message: /trust anchor bundle: .*line 1/,
      reads: 0,
    },
    {
      name: 'refuses an empty bundle',
      body: () => review('UPDATE', anchorsConfigMap('\n'), anchorsConfigMap(rootA.certificatePem)),
      allowed: false,
      message: /bundle is empty/,
    },
    {
      name: 'refuses a bundle with a certificate that is not a CA',
      body: () => review('UPDATE', anchorsConfigMap(rootA.certificatePem + notCa.certificatePem)),
      allowed: false,
      message: /trust anchor #2 "CN=a-leaf" is not a CA certificate/,
    },
    {
      name: 'refuses a bundle whose anchors have all expired',
      body: () => review('CREATE', anchorsConfigMap(expired.certificatePem)),
      allowed: false,
      message: /every trust anchor in the bundle has expired/,
    },
    {
      name: 'refuses a ConfigMap without the bundle key',
      body: () =>
        review('UPDATE', anchorsConfigMap(undefined), anchorsConfigMap(rootA.certificatePem)),
      allowed: false,
      message: /must hold the trust-anchor bundle under the key "ca-bundle\.crt"/,
    },
    {
      name: 'refuses keeping only an expired copy of the anchor beside another root',
      body: () =>
        review(
          'UPDATE',
          anchorsConfigMap(expired.certificatePem + rootB.certificatePem),
          anchorsConfigMap(rootA.certificatePem),
        ),
      allowed: false,
      message: /does not chain to any valid anchor/,
    },
    {
      name: 'allows a metadata-only edit (the bundle unchanged) without reading the issuer',
      body: () =>
        review(
          'UPDATE',
          anchorsConfigMap(rootA.certificatePem),
          anchorsConfigMap(rootA.certificatePem),
        ),
      allowed: true,
      reads: 0,
    },
    {
      name: 'allows a valid bundle with a warning when the CA cannot be reached (a first install: the CA waits for its anchors)',
      body: () => review('CREATE', anchorsConfigMap(rootB.certificatePem)),
      ca: 'unreachable',
      allowed: true,
      warning:
        /cannot read the live issuer from the CA at linkerd-identity\.linkerd\.svc:8080: connect ECONNREFUSED.*no issuer was checked/,
    },
    {
      name: 'allows a valid bundle with a warning when no CA is configured',
      body: () => review('CREATE', anchorsConfigMap(rootB.certificatePem)),
      ca: 'no-ca',
      allowed: true,
      warning: /no CA address configured/,
    },
    {
      name: 'an impostor on the CA address cannot make it refuse a good edit: its chain does not reach the anchors in force',
      body: () =>
        review(
          'UPDATE',
          anchorsConfigMap(rootA.certificatePem + rootB.certificatePem),
          anchorsConfigMap(rootA.certificatePem),
        ),
      ca: 'impostor',
      allowed: true,
      warning:
        /the chain the CA at linkerd-identity\.linkerd\.svc:8080 serves does not reach the anchors in force .*root-c\.attacker\.example.*no issuer was checked/,
      reads: 1,
    },
    {
      name: 'does not take the chain of a server that is not the CA (another identity) as the live issuer',
      body: () =>
        review(
          'UPDATE',
          anchorsConfigMap(rootB.certificatePem),
          anchorsConfigMap(rootA.certificatePem),
        ),
      ca: 'other-name',
      allowed: true,
      warning:
        /serves a certificate for DNS:web\.emojivoto\.serviceaccount\.identity\.linkerd\.cluster\.local, not for linkerd-identity\.linkerd\.serviceaccount/,
    },
    {
      name: 'says so when the CA serves its certificate without the issuer',
      body: () =>
        review(
          'UPDATE',
          anchorsConfigMap(rootB.certificatePem),
          anchorsConfigMap(rootA.certificatePem),
        ),
      ca: 'no-issuer',
      allowed: true,
      warning: /serves its certificate without the issuer that signed it/,
    },
    {
      name: 'refuses creating the ConfigMap without the anchor the live issuer chains to',
      body: () => review('CREATE', anchorsConfigMap(rootB.certificatePem)),
      allowed: false,
      message:
        /drops the anchor the current issuer chains to.*The issuer "CN=identity\.linkerd\.cluster\.local"/s,
      reads: 1,
    },
    {
      name: 'leaves other ConfigMaps alone, even with a broken bundle',
      body: () => review('UPDATE', anchorsConfigMap('garbage', 'app-config')),
      allowed: true,
      reads: 0,
    },
    {
      name: 'leaves a ConfigMap of the same name in another namespace alone',
      body: () =>
        review('UPDATE', anchorsConfigMap('garbage', OPTIONS.trustAnchorsConfigMap, 'emojivoto')),
      allowed: true,
      reads: 0,
    },
    {
      name: 'allows the issuer Certificate as a P-256 CA',
      body: () =>
        review(
          'CREATE',
          issuerCertificate({ isCA: true, privateKey: { algorithm: 'ECDSA', size: 256 } }),
        ),
      allowed: true,
    },
    {
      name: 'allows the issuer Certificate with ECDSA and the default size',
      body: () =>
        review('UPDATE', issuerCertificate({ isCA: true, privateKey: { algorithm: 'ECDSA' } })),
      allowed: true,
    },
    {
      name: 'refuses an issuer Certificate that is not a CA',
      body: () =>
        review(
          'UPDATE',
          issuerCertificate({ isCA: false, privateKey: { algorithm: 'ECDSA', size: 256 } }),
        ),
      allowed: false,
      message: /spec\.isCA must be true/,
    },
    {
      name: 'refuses an issuer Certificate with an RSA key',
      body: () =>
        review(
          'CREATE',
          issuerCertificate({ isCA: true, privateKey: { algorithm: 'RSA', size: 2048 } }),
        ),
      allowed: false,
      message: /spec\.privateKey\.algorithm must be ECDSA, got "RSA"/,
    },
    {
      name: 'refuses an issuer Certificate without a key algorithm (cert-manager would make it RSA)',
      body: () => review('CREATE', issuerCertificate({ isCA: true })),
      allowed: false,
      message: /defaults it to RSA/,
    },
    {
      name: 'refuses an issuer Certificate on P-384, listing every problem',
      body: () =>
        review('CREATE', issuerCertificate({ privateKey: { algorithm: 'ECDSA', size: 384 } })),
      allowed: false,
      message: /spec\.isCA must be true .*; spec\.privateKey\.size must be 256 \(P-256\), got 384/,
    },
    {
      name: 'leaves other Certificates alone (a serving certificate with an RSA key)',
      body: () =>
        review(
          'CREATE',
          issuerCertificate({ privateKey: { algorithm: 'RSA' } }, 'meshid-webhooks-tls'),
        ),
      allowed: true,
    },
  ];
  for (const c of cases) {
    it(c.name, async () => {
      const { response, reads } = await judge(c.body(), c.ca ?? 'ca-a');
      assert.equal(response['allowed'], c.allowed, JSON.stringify(response));
      assert.equal(response['patch'], undefined);
      if (c.message !== undefined) {
        const status = response['status'] as { code: number; message: string; reason: string };
        assert.equal(status.code, 422);
        assert.equal(status.reason, 'Invalid');
        assert.match(status.message, c.message);
      }
      if (c.warning !== undefined) assert.match((response['warnings'] as string[])[0]!, c.warning);
      if (c.reads !== undefined) assert.equal(reads, c.reads);
    });
  }
});
