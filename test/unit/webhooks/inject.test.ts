import { strict as assert } from 'node:assert';
import { readFileSync, writeFileSync } from 'node:fs';
import jsonpatch from 'fast-json-patch';
import type { Operation } from 'fast-json-patch';
import { bundleFingerprint } from '../../../core/index.js';
import { silentLogger } from '../../../core/logger.js';
import { createInjector } from '../../../webhooks/index.js';
import { admissionResponse, parseAdmissionReview } from '../../../webhooks/admission.js';
import { planInjection } from '../../../webhooks/inject.js';
import type { InjectorDeps, InjectorOptions } from '../../../webhooks/inject.js';
import type { JsonObject, PatchOperation } from '../../../webhooks/admission.js';
import {
  INJECTOR_OPTIONS,
  emojivotoWeb,
  ledgerNoAutomount,
  podReview,
  shopFrontend,
} from './fixtures/pods.js';

const OPTIONS: InjectorOptions = { ...INJECTOR_OPTIONS, excludeNamespaces: ['legacy'] };
const BUNDLE = '-----BEGIN CERTIFICATE-----\nMIIB…(only hashed here)\n-----END CERTIFICATE-----\n';

/** Sends a review through the handler and the response encoding, as the API server would see it. */
async function admit(
  review: JsonObject,
  deps: Partial<InjectorDeps> = {},
  options: InjectorOptions = OPTIONS,
): Promise<{ response: JsonObject; patch: PatchOperation[] | undefined }> {
  const handler = createInjector(options, { logger: silentLogger(), ...deps });
  const request = parseAdmissionReview(JSON.stringify(review));
  const out = admissionResponse(request.uid, await handler(request));
  const response = out['response'] as JsonObject;
  const patch =
    response['patch'] === undefined
      ? undefined
      : (JSON.parse(
          Buffer.from(response['patch'] as string, 'base64').toString('utf8'),
        ) as PatchOperation[]);
  return { response, patch };
}

/** Applies a patch the way the API server does: strictly, to a copy. */
function applied(pod: JsonObject, patch: readonly PatchOperation[]): JsonObject {
  return jsonpatch.applyPatch(
    structuredClone(pod),
    patch as Operation[],
    /* validateOperation */ true,
    /* mutateDocument */ true,
  ).newDocument;
}

const golden = (name: string): URL => new URL(`./fixtures/injected/${name}.json`, import.meta.url);

function assertGolden(name: string, pod: JsonObject): void {
  const file = golden(name);
  // UPDATE_GOLDEN=1 rewrites the expected pods; review the diff before committing it.
  if (process.env['UPDATE_GOLDEN'] === '1')
    writeFileSync(file, `${JSON.stringify(pod, null, 2)}\n`);
  assert.deepEqual(pod, JSON.parse(readFileSync(file, 'utf8')));
}

describe('proxy injector: real-shaped pods, patch applied with fast-json-patch', () => {
  const cases: {
    name: string;
    golden: string;
    pod: () => JsonObject;
    namespace: string;
    nsAnnotations?: Record<string, string>;
    options?: Partial<InjectorOptions>;
  }[] = [
    {
      name: 'emojivoto web opted in on the pod: the proxy is appended with its token and anchors volumes and the annotations',
      golden: 'emojivoto-web',
      pod: emojivotoWeb,
      namespace: 'emojivoto',
    },
    {
      name: 'a shop frontend opted in on its namespace: init container and both app containers kept, the clashing volume name gets a suffix, inbound goes to the first port',
      golden: 'shop-frontend',
      pod: shopFrontend,
      namespace: 'shop',
      nsAnnotations: { 'meshid.io/inject': 'enabled' },
    },
    {
      name: 'a StatefulSet pod without the API token and with a native-sidecar annotation: the proxy is the first init container, volumes are created',
      golden: 'ledger-native',
      pod: ledgerNoAutomount,
      namespace: 'payments',
    },
    {
      name: 'emojivoto web with meshid.io/transparent: disabled: the explicit mode, no init container, the proxy as the image user',
      golden: 'emojivoto-web-explicit',
      pod: () => {
        const pod = emojivotoWeb();
        const meta = pod['metadata'] as JsonObject;
        meta['annotations'] = {
          ...(meta['annotations'] as JsonObject),
          'meshid.io/transparent': 'disabled',
        };
        return pod;
      },
      namespace: 'emojivoto',
    },
    {
      name: 'the nativeSidecar setting makes every pod a native sidecar, after the existing init containers are moved down',
      golden: 'shop-frontend-native',
      pod: shopFrontend,
      namespace: 'shop',
      nsAnnotations: { 'meshid.io/inject': 'enabled' },
      options: { nativeSidecar: true },
    },
  ];
  for (const c of cases) {
    it(c.name, async () => {
      const pod = c.pod();
      const lookups: string[] = [];
      const deps: Partial<InjectorDeps> = {
        namespaceAnnotations: (ns) => {
          lookups.push(ns);
          return Promise.resolve(c.nsAnnotations ?? {});
        },
        trustAnchorsPem: () => Promise.resolve(BUNDLE),
      };
      const options = { ...OPTIONS, ...c.options };
      const { response, patch } = await admit(podReview(pod, c.namespace), deps, options);
      assert.equal(response['uid'], '705ab4f5-6393-11e8-b7cc-42010a800002');
      assert.equal(response['allowed'], true);
      assert.equal(response['patchType'], 'JSONPatch');
      assert.ok(patch !== undefined);
      const injected = applied(pod, patch);
      assertGolden(c.golden, injected);
      // Annotated for `meshid check`.
      const annotations = (injected['metadata'] as JsonObject)['annotations'] as JsonObject;
      assert.equal(annotations['meshid.io/trust-root-sha256'], bundleFingerprint(BUNDLE));
      assert.equal(annotations['meshid.io/proxy-version'], 'v0.1.0');
      // The namespace is read only when the pod does not decide the opt-in or the identity source.
      const podAnnotations = (pod['metadata'] as JsonObject)['annotations'] as JsonObject;
      const podDecides =
        podAnnotations['meshid.io/inject'] !== undefined &&
        podAnnotations['meshid.io/identity-source'] !== undefined;
      assert.deepEqual(lookups, podDecides ? [] : [c.namespace]);

      // Idempotent: the injected pod sent again is left alone.
      const again = await admit(podReview(injected, c.namespace), deps, options);
      assert.equal(again.response['allowed'], true);
      assert.equal(again.patch, undefined);
      assert.equal(again.response['patchType'], undefined);
    });
  }

  it('keeps automountServiceAccountToken false and adds no API token mount: the projected token is separate', async () => {
    const pod = ledgerNoAutomount();
    const { patch } = await admit(podReview(pod, 'payments'));
    const spec = applied(pod, patch!)['spec'] as JsonObject;
    assert.equal(spec['automountServiceAccountToken'], false);
    const volumes = spec['volumes'] as JsonObject[];
    assert.deepEqual(
      volumes.map((v) => v['name']),
      ['meshid-identity-token', 'meshid-trust-anchors', 'meshid-proxy-init-xtables-lock'],
    );
    const token = (volumes[0]!['projected'] as { sources: JsonObject[] }).sources[0]!;
    assert.deepEqual(token, {
      serviceAccountToken: { audience: 'identity.l5d.io', expirationSeconds: 86400, path: 'token' },
    });
  });

  it('writes the annotations object when the pod has none', async () => {
    const pod = ledgerNoAutomount();
    delete ((pod['metadata'] as JsonObject)['annotations'] as JsonObject)['meshid.io/inject'];
    (pod['metadata'] as JsonObject)['annotations'] = undefined;
    const { patch } = await admit(podReview(pod, 'payments'), {
      namespaceAnnotations: () => Promise.resolve({ 'meshid.io/inject': 'enabled' }),
    });
    const annotations = (applied(pod, patch!)['metadata'] as JsonObject)['annotations'];
    assert.deepEqual(annotations, {
      'meshid.io/proxy-version': 'v0.1.0',
      'meshid.io/proxy-image': 'ghcr.io/meshid/meshid:v0.1.0',
      'meshid.io/created-by': 'meshid/proxy-injector v0.1.0',
    });
  });

  it('labels the pod with its control plane, also when it has no labels (trust sync finds its namespace by it)', async () => {
    const pod = emojivotoWeb();
    delete (pod['metadata'] as JsonObject)['labels'];
    const { patch } = await admit(podReview(pod, 'emojivoto'));
    const meta = applied(pod, patch!)['metadata'] as JsonObject;
    assert.deepEqual(meta['labels'], { 'linkerd.io/control-plane-ns': 'linkerd' });
    const labelled = emojivotoWeb();
    const kept = applied(labelled, (await admit(podReview(labelled, 'emojivoto'))).patch!);
    assert.deepEqual((kept['metadata'] as JsonObject)['labels'], {
      ...((emojivotoWeb()['metadata'] as JsonObject)['labels'] as JsonObject),
      'linkerd.io/control-plane-ns': 'linkerd',
    });
  });
});

describe('proxy injector: pods left alone', () => {
  const withAnnotations = (pod: JsonObject, a: Record<string, string>): JsonObject => {
    (pod['metadata'] as JsonObject)['annotations'] = a;
    return pod;
  };
  const cases: {
    name: string;
    pod: () => JsonObject;
    namespace: string;
    nsAnnotations?: Record<string, string> | undefined;
    reason: string;
    warning?: RegExp;
  }[] = [
    {
      name: 'a pod without the opt-in in a namespace without it',
      pod: () => withAnnotations(emojivotoWeb(), {}),
      namespace: 'emojivoto',
      nsAnnotations: {},
      reason: 'not-opted-in',
    },
    {
      name: 'a pod whose namespace does not exist (any more)',
      pod: () => withAnnotations(emojivotoWeb(), {}),
      namespace: 'emojivoto',
      nsAnnotations: undefined,
      reason: 'not-opted-in',
    },
    {
      name: 'a pod that says disabled in a namespace that says enabled: the pod wins',
      pod: () => withAnnotations(emojivotoWeb(), { 'meshid.io/inject': 'disabled' }),
      namespace: 'emojivoto',
      nsAnnotations: { 'meshid.io/inject': 'enabled' },
      reason: 'disabled-on-pod',
    },
    {
      name: 'a pod without the annotation in a namespace that says disabled',
      pod: () => withAnnotations(emojivotoWeb(), {}),
      namespace: 'emojivoto',
      nsAnnotations: { 'meshid.io/inject': 'disabled' },
      reason: 'disabled-on-namespace',
    },
    {
      name: 'an opted-in pod in kube-system',
      pod: emojivotoWeb,
      namespace: 'kube-system',
      reason: 'excluded-namespace',
    },
    {
      name: 'an opted-in pod in the control-plane namespace',
      pod: emojivotoWeb,
      namespace: 'linkerd',
      reason: 'excluded-namespace',
    },
    {
      name: 'an opted-in pod in a namespace excluded by configuration',
      pod: emojivotoWeb,
      namespace: 'legacy',
      reason: 'excluded-namespace',
    },
    {
      name: 'an opted-in host-network pod',
      pod: () => {
        const p = emojivotoWeb();
        (p['spec'] as JsonObject)['hostNetwork'] = true;
        return p;
      },
      namespace: 'emojivoto',
      reason: 'host-network',
      warning: /hostNetwork/,
    },
    {
      name: 'an opted-in pod whose app listens on the proxy admin port',
      pod: () => {
        const p = emojivotoWeb();
        const c = ((p['spec'] as JsonObject)['containers'] as JsonObject[])[0]!;
        c['ports'] = [{ containerPort: 4191, protocol: 'TCP' }];
        return p;
      },
      namespace: 'emojivoto',
      reason: 'port-conflict',
      warning: /port 4191/,
    },
    {
      name: 'an opted-in pod that names 4143 as its inbound port',
      pod: () =>
        withAnnotations(emojivotoWeb(), {
          'meshid.io/inject': 'enabled',
          'meshid.io/inbound-port': '4143',
        }),
      namespace: 'emojivoto',
      reason: 'port-conflict',
    },
  ];
  for (const c of cases) {
    it(`${c.name}: ${c.reason}`, async () => {
      const plan = planInjection(
        c.pod(),
        { namespace: c.namespace, namespaceAnnotations: c.nsAnnotations },
        OPTIONS,
      );
      assert.equal(plan.inject, false);
      assert.equal(plan.inject ? '' : plan.reason, c.reason);
      const { response, patch } = await admit(podReview(c.pod(), c.namespace), {
        namespaceAnnotations: () => Promise.resolve(c.nsAnnotations),
      });
      assert.equal(response['allowed'], true);
      assert.equal(patch, undefined);
      if (c.warning !== undefined) assert.match((response['warnings'] as string[])[0]!, c.warning);
    });
  }

  it('allows other kinds, operations and subresources unchanged without reading anything', async () => {
    let lookups = 0;
    const deps = { namespaceAnnotations: () => (lookups++, Promise.resolve({})) };
    const update = podReview(emojivotoWeb(), 'emojivoto');
    (update['request'] as JsonObject)['operation'] = 'UPDATE';
    const deployment = podReview(emojivotoWeb(), 'emojivoto');
    (deployment['request'] as JsonObject)['kind'] = {
      group: 'apps',
      version: 'v1',
      kind: 'Deployment',
    };
    const binding = podReview(emojivotoWeb(), 'emojivoto');
    (binding['request'] as JsonObject)['subResource'] = 'binding';
    for (const review of [update, deployment, binding]) {
      const { response, patch } = await admit(review, deps);
      assert.equal(response['allowed'], true);
      assert.equal(patch, undefined);
    }
    assert.equal(lookups, 0);
  });

  it('fails the review when the namespace lookup fails (the failurePolicy decides), instead of guessing', async () => {
    const pod = withAnnotations(emojivotoWeb(), {});
    await assert.rejects(
      admit(podReview(pod, 'emojivoto'), {
        namespaceAnnotations: () =>
          Promise.reject(new Error('cannot read namespace emojivoto: HTTP 403')),
      }),
      /HTTP 403/,
    );
  });
});

describe('proxy injector: opted-in pods it cannot work with are refused with the reason', () => {
  const cases: { name: string; mutate: (pod: JsonObject) => void; message: RegExp }[] = [
    {
      name: 'an inbound-port annotation that is not a port',
      mutate: (p) =>
        (((p['metadata'] as JsonObject)['annotations'] as JsonObject)['meshid.io/inbound-port'] =
          '99999'),
      message: /meshid\.io\/inbound-port must be a port 1-65535/,
    },
    {
      name: 'a native-sidecar annotation that is not a boolean',
      mutate: (p) =>
        (((p['metadata'] as JsonObject)['annotations'] as JsonObject)[
          'meshid.io/proxy-native-sidecar'
        ] = 'yes'),
      message: /proxy-native-sidecar must be "true" or "false"/,
    },
    {
      name: 'containers that are not a list',
      mutate: (p) => ((p['spec'] as JsonObject)['containers'] = { name: 'web' }),
      message: /spec\.containers must be a list of objects/,
    },
    {
      name: 'no containers',
      mutate: (p) => ((p['spec'] as JsonObject)['containers'] = []),
      message: /spec\.containers must not be empty/,
    },
    {
      name: 'a container port of -1',
      mutate: (p) =>
        (((p['spec'] as JsonObject)['containers'] as JsonObject[])[0]!['ports'] = [
          { containerPort: -1 },
        ]),
      message: /containers\[0\]\.ports\[0\]\.containerPort must be a port/,
    },
    {
      name: 'a service account name of 10,000 characters',
      mutate: (p) => ((p['spec'] as JsonObject)['serviceAccountName'] = 'a'.repeat(10_000)),
      message: /serviceAccountName must be a DNS-1123 label/,
    },
    {
      name: 'annotations that are not strings',
      mutate: (p) =>
        ((p['metadata'] as JsonObject)['annotations'] = { 'meshid.io/inject': 'enabled', n: 5 }),
      message: /annotations must map names to strings/,
    },
  ];
  for (const c of cases) {
    it(c.name, async () => {
      const pod = emojivotoWeb();
      c.mutate(pod);
      const { response, patch } = await admit(podReview(pod, 'emojivoto'));
      assert.equal(response['allowed'], false);
      assert.equal(patch, undefined);
      const status = response['status'] as { code: number; message: string };
      assert.equal(status.code, 400);
      assert.match(status.message, c.message);
    });
  }

  it('injects a pod with 2,000 containers in one linear pass', async () => {
    const pod = emojivotoWeb();
    const spec = pod['spec'] as JsonObject;
    const first = (spec['containers'] as JsonObject[])[0]!;
    spec['containers'] = Array.from({ length: 2000 }, (_, i) => ({
      ...first,
      name: `c${i}`,
      ports: [],
    }));
    const { response, patch } = await admit(podReview(pod, 'emojivoto'));
    assert.equal(response['allowed'], true);
    const containers = (applied(pod, patch!)['spec'] as JsonObject)['containers'] as JsonObject[];
    assert.equal(containers.length, 2001);
    assert.equal(containers[2000]!['name'], 'meshid-proxy');
  });
});
