import { strict as assert } from 'node:assert';
import jsonpatch from 'fast-json-patch';
import type { Operation } from 'fast-json-patch';
import { loadConfig } from '../../../core/index.js';
import { silentLogger } from '../../../core/logger.js';
import { createInjector } from '../../../webhooks/index.js';
import { admissionResponse, parseAdmissionReview } from '../../../webhooks/admission.js';
import { identitySourceOf } from '../../../webhooks/identity-source.js';
import type { InjectorOptions } from '../../../webhooks/inject.js';
import type { JsonObject, PatchOperation } from '../../../webhooks/admission.js';
import { INJECTOR_OPTIONS, emojivotoWeb, podReview } from './fixtures/pods.js';

const OPTIONS: InjectorOptions = {
  ...INJECTOR_OPTIONS,
  podCertificateSigner: 'example.com/mesh-signer',
};
const MOUNT = '/var/run/meshid/pod-certificate';

interface Admitted {
  response: JsonObject;
  pod: JsonObject | undefined;
  lookups: string[];
}

/** A review through the handler and the response encoding; the patch applied strictly. */
async function admit(
  podAnnotations: Record<string, string>,
  nsAnnotations: Record<string, string> = {},
): Promise<Admitted> {
  const pod = emojivotoWeb();
  (pod['metadata'] as JsonObject)['annotations'] = podAnnotations;
  const lookups: string[] = [];
  const handler = createInjector(OPTIONS, {
    logger: silentLogger(),
    namespaceAnnotations: (ns) => (lookups.push(ns), Promise.resolve(nsAnnotations)),
  });
  const request = parseAdmissionReview(JSON.stringify(podReview(pod, 'emojivoto')));
  const response = admissionResponse(request.uid, await handler(request))['response'] as JsonObject;
  if (response['patch'] === undefined) return { response, pod: undefined, lookups };
  const patch = JSON.parse(
    Buffer.from(response['patch'] as string, 'base64').toString('utf8'),
  ) as PatchOperation[];
  const out = jsonpatch.applyPatch(structuredClone(pod), patch as Operation[], true, true);
  return { response, pod: out.newDocument, lookups };
}

function proxyOf(pod: JsonObject): JsonObject {
  const containers = (pod['spec'] as JsonObject)['containers'] as JsonObject[];
  const proxy = containers.find((c) => c['name'] === 'meshid-proxy');
  assert.ok(proxy !== undefined, 'no meshid-proxy container');
  return proxy;
}

function envOf(pod: JsonObject): Map<string, string> {
  const env = proxyOf(pod)['env'] as { name: string; value: string }[];
  return new Map(env.map((e) => [e.name, e.value]));
}

/** The volumes the injector added (emojivoto's web pod has one of its own, the API token). */
function meshidVolumes(pod: JsonObject): JsonObject[] {
  return ((pod['spec'] as JsonObject)['volumes'] as JsonObject[]).filter((v) =>
    (v['name'] as string).startsWith('meshid-'),
  );
}

const EXPECTED_VOLUME = {
  name: 'meshid-pod-certificate',
  projected: {
    sources: [
      {
        podCertificate: {
          signerName: 'example.com/mesh-signer',
          keyType: 'ECDSAP256',
          maxExpirationSeconds: 86400,
          credentialBundlePath: 'credentialbundle.pem',
        },
      },
      {
        clusterTrustBundle: {
          signerName: 'example.com/mesh-signer',
          labelSelector: { matchLabels: { 'meshid.io/trust-bundle': 'live' } },
          path: 'ca-bundle.crt',
        },
      },
    ],
  },
};

function assertPodCertificate(pod: JsonObject): void {
  // One projected volume for the identity (and proxy-init's lock): no token, no anchors ConfigMap.
  assert.deepEqual(meshidVolumes(pod), [
    EXPECTED_VOLUME,
    { name: 'meshid-proxy-init-xtables-lock', emptyDir: {} },
  ]);
  assert.deepEqual(proxyOf(pod)['volumeMounts'], [
    { name: 'meshid-pod-certificate', mountPath: MOUNT, readOnly: true },
  ]);
  const env = envOf(pod);
  assert.equal(env.get('MESHID_IDENTITY_SOURCE'), 'pod-certificate');
  assert.equal(env.get('MESHID_CREDENTIAL_BUNDLE'), `${MOUNT}/credentialbundle.pem`);
  assert.equal(env.get('MESHID_TRUST_ANCHORS'), `${MOUNT}/ca-bundle.crt`);
  assert.equal(
    env.get('MESHID_LOCAL_IDENTITY'),
    'web.emojivoto.serviceaccount.identity.linkerd.cluster.local',
  );
  for (const gone of ['MESHID_TOKEN_FILE', 'MESHID_IDENTITY_ADDR', 'MESHID_IDENTITY_NAME'])
    assert.equal(env.has(gone), false, `${gone} is rendered`);
  assert.doesNotMatch(
    JSON.stringify(pod),
    /serviceAccountToken"?:\s*\{"?audience|identity\.l5d\.io/,
  );
}

describe('proxy injector: meshid.io/identity-source', () => {
  it('pod-certificate on the pod: a podCertificate + clusterTrustBundle volume and the proxy reads them, no token', async () => {
    const { response, pod } = await admit({
      'meshid.io/inject': 'enabled',
      'meshid.io/identity-source': 'pod-certificate',
    });
    assert.equal(response['allowed'], true);
    assert.ok(pod !== undefined);
    assertPodCertificate(pod);
    // What the injector renders is what the proxy's settings accept.
    const { config } = loadConfig('proxy', { argv: [], env: Object.fromEntries(envOf(pod)) });
    assert.equal(config.identitySource, 'pod-certificate');
    assert.equal(config.credentialBundle, `${MOUNT}/credentialbundle.pem`);
    assert.equal(config.trustAnchors, `${MOUNT}/ca-bundle.crt`);
    assert.equal(config.tokenFile, undefined);
  });

  it('pod-certificate on the namespace applies to a pod that opts in without choosing (the namespace is read for it)', async () => {
    const { pod, lookups } = await admit(
      { 'meshid.io/inject': 'enabled' },
      { 'meshid.io/identity-source': 'pod-certificate' },
    );
    assert.deepEqual(lookups, ['emojivoto']);
    assert.ok(pod !== undefined);
    assertPodCertificate(pod);
  });

  it("the pod's certify wins over the namespace's pod-certificate, without reading the namespace", async () => {
    const { pod, lookups } = await admit({
      'meshid.io/inject': 'enabled',
      'meshid.io/identity-source': 'certify',
    });
    assert.deepEqual(lookups, []);
    assert.ok(pod !== undefined);
    const viaNs = await admit(
      { 'meshid.io/inject': 'enabled', 'meshid.io/identity-source': 'certify' },
      { 'meshid.io/identity-source': 'pod-certificate' },
    );
    assert.deepEqual(meshidVolumes(viaNs.pod!), meshidVolumes(pod));
    assert.equal(envOf(pod).has('MESHID_IDENTITY_SOURCE'), false);
  });

  it('certify and no annotation give the same pod: token + anchors ConfigMap, Certify settings', async () => {
    const none = await admit({ 'meshid.io/inject': 'enabled' });
    const certify = await admit({
      'meshid.io/inject': 'enabled',
      'meshid.io/identity-source': 'certify',
    });
    const strip = (pod: JsonObject): JsonObject => {
      const copy = structuredClone(pod);
      delete ((copy['metadata'] as JsonObject)['annotations'] as JsonObject)[
        'meshid.io/identity-source'
      ];
      return copy;
    };
    assert.deepEqual(strip(certify.pod!), strip(none.pod!));
    assert.deepEqual(
      meshidVolumes(none.pod!).map((v) => v['name']),
      ['meshid-identity-token', 'meshid-trust-anchors', 'meshid-proxy-init-xtables-lock'],
    );
    const env = envOf(none.pod!);
    assert.equal(env.get('MESHID_TOKEN_FILE'), '/var/run/secrets/meshid.io/serviceaccount/token');
    assert.equal(env.get('MESHID_IDENTITY_ADDR'), 'linkerd-identity.linkerd.svc:8080');
    assert.equal(env.get('MESHID_TRUST_ANCHORS'), '/var/run/meshid/trust-anchors/ca-bundle.crt');
    assert.equal(env.has('MESHID_IDENTITY_SOURCE'), false);
    assert.equal(env.has('MESHID_CREDENTIAL_BUNDLE'), false);
  });

  for (const [where, pod, ns] of [
    ['pod', { 'meshid.io/inject': 'enabled', 'meshid.io/identity-source': 'spiffe' }, {}],
    ['namespace', { 'meshid.io/inject': 'enabled' }, { 'meshid.io/identity-source': 'spiffe' }],
  ] as const) {
    it(`refuses an unknown value on the ${where} (400) naming the annotation and the allowed values`, async () => {
      const { response, pod: injected } = await admit(pod, ns);
      assert.equal(response['allowed'], false);
      assert.equal(injected, undefined);
      const status = response['status'] as { code: number; message: string };
      assert.equal(status.code, 400);
      assert.match(
        status.message,
        /^meshid proxy injector: annotation meshid\.io\/identity-source/,
      );
      assert.match(status.message, new RegExp(`on the ${where} is "spiffe"`));
      assert.match(status.message, /must be one of "certify", "pod-certificate"/);
    });
  }

  it('a bad value on a pod that is not injected refuses nothing', async () => {
    const { response, pod } = await admit({
      'meshid.io/inject': 'disabled',
      'meshid.io/identity-source': 'spiffe',
    });
    assert.equal(response['allowed'], true);
    assert.equal(pod, undefined);
  });

  it('identitySourceOf: the pod wins, then the namespace, then certify', () => {
    const key = 'meshid.io/identity-source';
    assert.equal(identitySourceOf({}, undefined), 'certify');
    assert.equal(identitySourceOf({}, { [key]: 'pod-certificate' }), 'pod-certificate');
    assert.equal(identitySourceOf({ [key]: 'certify' }, { [key]: 'pod-certificate' }), 'certify');
    assert.throws(
      () => identitySourceOf({ [key]: 'Pod-Certificate' }, undefined),
      /must be one of/,
    );
  });
});
