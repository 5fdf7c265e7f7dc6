import { strict as assert } from 'node:assert';
import { TRANSPARENT_ANNOTATIONS, loadConfig } from '../../../core/index.js';
import { PROXY_INIT_CONTAINER } from '../../../webhooks/index.js';
import { planInjection } from '../../../webhooks/inject.js';
import { PROXY_CONTAINER } from '../../../webhooks/proxy-container.js';
import type { InjectorOptions } from '../../../webhooks/inject.js';
import type { JsonObject, PatchOperation } from '../../../webhooks/admission.js';
import { INJECTOR_OPTIONS, emojivotoWeb, shopFrontend } from './fixtures/pods.js';

const OPTIONS: InjectorOptions = INJECTOR_OPTIONS;

function annotated(pod: JsonObject, extra: Record<string, string>): JsonObject {
  const meta = pod['metadata'] as JsonObject;
  meta['annotations'] = { ...(meta['annotations'] as JsonObject), ...extra };
  return pod;
}

/** The containers a plan adds, by name. */
function added(patch: readonly PatchOperation[]): Map<string, JsonObject> {
  const out = new Map<string, JsonObject>();
  for (const op of patch) {
    if (!/^\/spec\/(initContainers|containers)/.test(op.path)) continue;
    const values = (Array.isArray(op.value) ? op.value : [op.value]) as JsonObject[];
    for (const c of values) out.set(c['name'] as string, c);
  }
  return out;
}

function plan(pod: JsonObject, options: Partial<InjectorOptions> = {}) {
  const p = planInjection(pod, { namespace: 'emojivoto' }, { ...OPTIONS, ...options });
  assert.ok(p.inject);
  return p.patch;
}

describe('proxy injector: transparent mode', () => {
  it('adds proxy-init first with NET_ADMIN and NET_RAW only, root only there; the proxy runs as 2102', () => {
    const containers = added(plan(emojivotoWeb()));
    const init = containers.get(PROXY_INIT_CONTAINER)!;
    assert.deepEqual(init['args'], ['proxy-init', '--proxy-uid', '2102']);
    assert.deepEqual(init['securityContext'], {
      runAsUser: 0,
      runAsNonRoot: false,
      allowPrivilegeEscalation: false,
      privileged: false,
      readOnlyRootFilesystem: true,
      capabilities: { add: ['NET_ADMIN', 'NET_RAW'], drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    });
    const proxy = containers.get(PROXY_CONTAINER)!;
    const sc = proxy['securityContext'] as JsonObject;
    assert.equal(sc['runAsUser'], 2102);
    assert.equal(sc['runAsNonRoot'], true);
    assert.deepEqual(sc['capabilities'], { drop: ['ALL'] });
    const env = new Map(
      (proxy['env'] as { name: string; value: string }[]).map((e) => [e.name, e.value]),
    );
    assert.equal(env.get('MESHID_TRANSPARENT'), 'true');
    assert.equal(env.get('MESHID_INBOUND'), '[::]:4143');
    assert.equal(env.get('MESHID_INBOUND_POLICY'), 'all-unauthenticated');
  });

  it('puts proxy-init before the pod own init containers and before a native sidecar proxy', () => {
    const patch = plan(annotated(shopFrontend(), { 'meshid.io/inject': 'enabled' }), {
      nativeSidecar: true,
    });
    const inits = patch.filter((op) => op.path.startsWith('/spec/initContainers/'));
    assert.deepEqual(
      inits.map((op) => [op.path, (op.value as JsonObject)['name']]),
      [
        ['/spec/initContainers/0', PROXY_INIT_CONTAINER],
        ['/spec/initContainers/1', PROXY_CONTAINER],
      ],
    );
  });

  it("passes Linkerd's annotations to proxy-init and the proxy", () => {
    const pod = annotated(emojivotoWeb(), {
      [TRANSPARENT_ANNOTATIONS.skipInboundPorts]: '22, 8000-8100',
      [TRANSPARENT_ANNOTATIONS.skipOutboundPorts]: '5432',
      [TRANSPARENT_ANNOTATIONS.skipSubnets]: '10.96.0.0/12,fd00::/8',
      [TRANSPARENT_ANNOTATIONS.proxyUid]: '3000',
      [TRANSPARENT_ANNOTATIONS.defaultInboundPolicy]: 'all-authenticated',
    });
    const containers = added(plan(pod));
    assert.deepEqual(containers.get(PROXY_INIT_CONTAINER)!['args'], [
      'proxy-init',
      '--proxy-uid',
      '3000',
      '--skip-inbound-ports',
      '22,8000-8100',
      '--skip-outbound-ports',
      '5432',
      '--skip-subnets',
      '10.96.0.0/12,fd00::/8',
    ]);
    const proxy = containers.get(PROXY_CONTAINER)!;
    assert.equal((proxy['securityContext'] as JsonObject)['runAsUser'], 3000);
    assert.ok(
      (proxy['env'] as { name: string; value: string }[]).some(
        (e) => e.name === 'MESHID_INBOUND_POLICY' && e.value === 'all-authenticated',
      ),
    );
  });

  it('gives the proxy the per-port policies of meshid.io/inbound-port-policy, ranges expanded', () => {
    const pod = annotated(emojivotoWeb(), {
      [TRANSPARENT_ANNOTATIONS.inboundPortPolicy]: ' 8081=all-authenticated, 9000-9002=deny ,',
    });
    const env = added(plan(pod)).get(PROXY_CONTAINER)!['env'] as { name: string; value: string }[];
    assert.deepEqual(
      env.filter((e) => e.name === 'MESHID_INBOUND_PORT_POLICY'),
      [
        {
          name: 'MESHID_INBOUND_PORT_POLICY',
          value: '8081=all-authenticated,9000=deny,9001=deny,9002=deny',
        },
      ],
    );
    // What the injector renders is what the proxy's settings accept.
    const { config } = loadConfig('proxy', {
      argv: [],
      env: Object.fromEntries(env.map((e) => [e.name, e.value])),
    });
    assert.deepEqual(config.inboundPortPolicy, [
      '8081=all-authenticated',
      '9000=deny',
      '9001=deny',
      '9002=deny',
    ]);
    const without = added(plan(emojivotoWeb())).get(PROXY_CONTAINER)!['env'] as { name: string }[];
    assert.ok(!without.some((e) => e.name === 'MESHID_INBOUND_PORT_POLICY'));
  });

  const bad: [string, string, RegExp][] = [
    [
      TRANSPARENT_ANNOTATIONS.transparent,
      'off',
      /meshid\.io\/transparent must be "enabled" or "disabled"/,
    ],
    [TRANSPARENT_ANNOTATIONS.proxyUid, '0', /proxy-uid must be a non-root UID/],
    [TRANSPARENT_ANNOTATIONS.proxyUid, '-5', /proxy-uid must be a non-root UID/],
    [TRANSPARENT_ANNOTATIONS.skipInboundPorts, '22,ssh', /skip-inbound-ports: "ssh" is not a port/],
    [TRANSPARENT_ANNOTATIONS.skipOutboundPorts, '99999', /skip-outbound-ports: "99999"/],
    [TRANSPARENT_ANNOTATIONS.skipSubnets, '10.0.0.0/40', /skip-subnets: "10\.0\.0\.0\/40"/],
    [
      TRANSPARENT_ANNOTATIONS.defaultInboundPolicy,
      'cluster-unauthenticated',
      /default-inbound-policy must be one of all-unauthenticated, all-authenticated, deny/,
    ],
    [
      TRANSPARENT_ANNOTATIONS.inboundPortPolicy,
      '8081=open',
      /inbound-port-policy: "8081=open" must be PORTS=POLICY, POLICY one of all-unauthenticated, all-authenticated, deny/,
    ],
    [
      TRANSPARENT_ANNOTATIONS.inboundPortPolicy,
      '8081',
      /inbound-port-policy: "8081" must be PORTS=POLICY/,
    ],
    [
      TRANSPARENT_ANNOTATIONS.inboundPortPolicy,
      'http=deny',
      /inbound-port-policy: "http=deny": "http" is not a port/,
    ],
    [
      TRANSPARENT_ANNOTATIONS.inboundPortPolicy,
      '8000-8100=deny, 8080=all-authenticated',
      /inbound-port-policy: "8080=all-authenticated": port 8080 already has policy deny/,
    ],
    [
      TRANSPARENT_ANNOTATIONS.inboundPortPolicy,
      '1-2000=deny',
      /inbound-port-policy: more than 1024 ports; narrow the ranges/,
    ],
  ];
  for (const [annotation, value, message] of bad) {
    it(`refuses ${annotation}: ${value}, naming the annotation`, () => {
      assert.throws(
        () =>
          planInjection(
            annotated(emojivotoWeb(), { [annotation]: value }),
            { namespace: 'emojivoto' },
            OPTIONS,
          ),
        (err: Error) => err.name === 'PodNotInjectable' && message.test(err.message),
      );
    });
  }

  it("gives the proxy the destination service's address and identity, from the naming", () => {
    const env = (options: Partial<InjectorOptions>, pod = emojivotoWeb()): JsonObject[] =>
      added(plan(pod, options)).get(PROXY_CONTAINER)!['env'] as JsonObject[];
    const values = (e: JsonObject[]) =>
      Object.fromEntries(
        e
          .filter((v) => /^MESHID_DESTINATION/.test(v['name'] as string))
          .map((v) => [v['name'], v['value']]),
      );
    assert.deepEqual(values(env({})), {
      MESHID_DESTINATION_ADDR: 'linkerd-dst.linkerd.svc:8086',
      MESHID_DESTINATION_NAME:
        'linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local',
    });
    assert.deepEqual(
      values(env({ naming: { trustDomain: 'corp.example', controlPlaneNamespace: 'mesh' } })),
      {
        MESHID_DESTINATION_ADDR: 'linkerd-dst.mesh.svc:8086',
        MESHID_DESTINATION_NAME:
          'linkerd-destination.mesh.serviceaccount.identity.mesh.corp.example',
      },
    );
    // The explicit mode asks no destination service.
    const explicit = annotated(emojivotoWeb(), {
      [TRANSPARENT_ANNOTATIONS.transparent]: 'disabled',
    });
    assert.deepEqual(values(env({}, explicit)), {});
  });

  it('ignores meshid.io/proxy-destinations in transparent mode with a warning: 4140 is the transparent outbound', () => {
    const pod = annotated(emojivotoWeb(), {
      'meshid.io/proxy-destinations':
        'api.shop:80=10.0.0.1:4143@api.shop.serviceaccount.identity.linkerd.cluster.local',
    });
    const p = planInjection(pod, { namespace: 'emojivoto' }, OPTIONS);
    assert.ok(p.inject);
    const env = added(p.patch).get(PROXY_CONTAINER)!['env'] as JsonObject[];
    const names = env.map((v) => v['name']);
    assert.ok(!names.includes('MESHID_OUTBOUND'));
    assert.ok(!names.includes('MESHID_DESTINATION'));
    assert.ok(
      p.warnings.some((w) =>
        /meshid.io\/proxy-destinations is ignored in transparent mode.*meshid.io\/transparent: disabled/.test(
          w,
        ),
      ),
      p.warnings.join('\n'),
    );
  });
});
