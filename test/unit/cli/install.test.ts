/**
 * `meshid install`, rendered in-process: the YAML parses, every object validates against its
 * kubernetes-models schema, the RBAC is exactly what the CA needs (with a reason per rule), the
 * Deployment is hardened, and the CA accepts the arguments the Deployment gives it.
 */
import { strict as assert } from 'node:assert';
import { Certificate } from '@kubernetes-models/cert-manager/cert-manager.io/v1';
import { Deployment } from 'kubernetes-models/apps/v1';
import type { IPolicyRule } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import type { IContainer, IPodSpec, IProbe } from 'kubernetes-models/v1';
import { parseAllDocuments } from 'yaml';
import type { Document } from 'yaml';
import { renderInstall, runInstall } from '../../../cli/install.js';
import { manifestYaml } from '../../../cli/install/yaml.js';
import { isMeshidError, loadConfig } from '../../../core/index.js';
import { assertObjectsValidate } from '../../support/install-models.js';
import type { CaConfig, ErrorCode } from '../../../core/index.js';
import { createRootCa } from '../../../core/pki.js';
import { caRequirements, describeAccess } from '../../../identity-ca/index.js';

type AccessQuery = Parameters<typeof describeAccess>[0];

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const NOW = Date.now();

interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [key: string]: unknown;
}

const CLUSTER_SCOPED = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'Bundle']);

let files: Record<string, string> = {};
const readFile = (path: string): string => {
  const f = files[path];
  if (f === undefined) throw new Error(`ENOENT: no such file or directory, open '${path}'`);
  return f;
};

interface Rendered {
  readonly text: string;
  readonly docs: Document.Parsed[];
  readonly objects: KubeObject[];
  one(kind: string, name?: string): KubeObject;
  all(kind: string): KubeObject[];
}

function render(argv: string[] = []): Rendered {
  const text = renderInstall({ argv, env: {}, readFile, now: NOW });
  const docs = parseAllDocuments(text);
  assert.ok(Array.isArray(docs), 'the output is a YAML stream');
  for (const d of docs) {
    assert.deepEqual(d.errors, [], 'YAML errors');
    assert.deepEqual(d.warnings, [], 'YAML warnings');
  }
  const objects = docs.map((d) => d.toJS() as KubeObject);
  const all = (kind: string): KubeObject[] => objects.filter((o) => o.kind === kind);
  return {
    text,
    docs,
    objects,
    all,
    one(kind, name) {
      const found = all(kind).filter((o) => name === undefined || o.metadata.name === name);
      assert.equal(found.length, 1, `exactly one ${kind} ${name ?? ''}`);
      return found[0]!;
    },
  };
}

function deploymentParts(r: Rendered): {
  deployment: KubeObject & { spec: { replicas: number; selector: { matchLabels: object } } };
  pod: IPodSpec;
  podLabels: Record<string, string>;
  container: IContainer;
} {
  const deployment = r.one('Deployment', 'linkerd-identity') as KubeObject & {
    spec: {
      replicas: number;
      selector: { matchLabels: object };
      template: { metadata: { labels: Record<string, string> }; spec: IPodSpec };
    };
  };
  const pod = deployment.spec.template.spec;
  assert.equal(pod.containers.length, 1);
  return {
    deployment,
    pod,
    podLabels: deployment.spec.template.metadata.labels,
    container: pod.containers[0]!,
  };
}

/**
 * RBAC's decision for one request, from the rendered Role (in its namespace) and ClusterRole,
 * both bound to the CA's ServiceAccount (a binding test checks that).
 */
function allows(r: Rendered, q: AccessQuery): boolean {
  const role = r.one('Role');
  const scoped = [
    ...rulesOf(r.one('ClusterRole')),
    ...(q.namespace === role.metadata.namespace ? rulesOf(role) : []),
  ];
  return scoped.some(
    (rule) =>
      (rule.apiGroups ?? []).includes(q.group) &&
      (rule.resources ?? []).includes(q.resource) &&
      rule.verbs.includes(q.verb) &&
      (rule.resourceNames === undefined ||
        (q.name !== undefined && rule.resourceNames.includes(q.name))),
  );
}

/** The text of the one document of this kind, as printed. */
function documentText(r: Rendered, kind: string): string {
  const texts = r.text.split(/^---\n/m).slice(1);
  assert.equal(texts.length, r.objects.length);
  return texts[r.objects.indexOf(r.one(kind))]!;
}

function rulesOf(o: KubeObject): IPolicyRule[] {
  return (o as unknown as { rules: IPolicyRule[] }).rules;
}

function isSubsetOf(selector: object, labels: Record<string, string>): boolean {
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}

/** The container's port number behind a probe's or Service's named (or numbered) port. */
function portNumber(container: IContainer, port: string | number | undefined): number | undefined {
  if (typeof port === 'number') return port;
  return container.ports?.find((p) => p.name === port)?.containerPort;
}

/** What `meshid ca` makes of the Deployment's container, as the kubelet would start it. */
function caConfigOf(r: Rendered): CaConfig {
  const { deployment, container } = deploymentParts(r);
  const [command, ...argv] = container.args ?? [];
  assert.equal(command, 'ca');
  const env: Record<string, string> = {};
  for (const e of container.env ?? []) {
    if (e.value !== undefined) env[e.name] = e.value;
    else if (e.valueFrom?.fieldRef?.fieldPath === 'metadata.namespace')
      env[e.name] = deployment.metadata.namespace!;
    else if (e.valueFrom?.fieldRef?.fieldPath === 'metadata.name')
      env[e.name] = `${deployment.metadata.name}-5d9f7c6b8-x2x4q`;
    else assert.fail(`env ${e.name} has a source this test cannot resolve`);
  }
  return loadConfig('ca', { argv, env }).config;
}

async function anchorPem(opts: { notAfter?: number; isCa?: boolean } = {}): Promise<string> {
  const root = await createRootCa({
    commonName: 'root.linkerd.cluster.local',
    notBefore: NOW - 2 * 365 * DAY,
    notAfter: opts.notAfter ?? NOW + 365 * DAY,
    ...(opts.isCa === undefined ? {} : { isCa: opts.isCa }),
  });
  return root.certificatePem;
}

function errorCode(fn: () => unknown): { code: ErrorCode; message: string } {
  try {
    fn();
  } catch (err) {
    if (isMeshidError(err)) return { code: err.code, message: err.message };
    throw err;
  }
  return assert.fail('expected a MeshidError');
}

describe('meshid install', () => {
  let goodAnchors: string;
  before(async () => {
    goodAnchors = await anchorPem();
  });
  beforeEach(() => {
    files = { '/anchors.pem': goodAnchors };
  });

  describe('the YAML', () => {
    it('is a stream of documents of the expected kinds, in apply order, the Namespace first', () => {
      const r = render();
      assert.deepEqual(
        r.objects.map((o) => `${o.kind}/${o.metadata.name}`),
        [
          'Namespace/linkerd',
          'ServiceAccount/linkerd-identity',
          'Role/meshid-identity',
          'RoleBinding/meshid-identity',
          'ClusterRole/meshid-identity-linkerd',
          'ClusterRoleBinding/meshid-identity-linkerd',
          'Service/linkerd-identity',
          'Service/linkerd-identity-headless',
          'Deployment/linkerd-identity',
          'PodDisruptionBudget/linkerd-identity',
        ],
      );
      assert.match(r.text, /^---\n/, 'every document starts with ---');
    });

    it('validates every parsed document against its kubernetes-models schema, with every option on', () => {
      const r = render([
        '--trust-anchors',
        '/anchors.pem',
        '--cert-manager',
        '--trust-manager',
        '--token-validator',
        'jwks',
      ]);
      assert.equal(r.objects.length, 16);
      assertObjectsValidate(r.objects);
    });

    it('puts every namespaced object in the install namespace and no namespace on cluster objects', () => {
      const r = render(['--trust-anchors', '/anchors.pem', '--cert-manager']);
      for (const o of r.objects) {
        if (CLUSTER_SCOPED.has(o.kind)) assert.equal(o.metadata.namespace, undefined, o.kind);
        else assert.equal(o.metadata.namespace, 'linkerd', `${o.kind}/${o.metadata.name}`);
      }
    });

    it('labels every object as part of meshid, and the CA objects with name, component and version', () => {
      const r = render();
      for (const o of r.objects) {
        assert.equal(o.metadata.labels?.['app.kubernetes.io/part-of'], 'meshid', o.kind);
        if (o.kind === 'Namespace') continue;
        assert.deepEqual(
          {
            name: o.metadata.labels?.['app.kubernetes.io/name'],
            component: o.metadata.labels?.['app.kubernetes.io/component'],
            version: o.metadata.labels?.['app.kubernetes.io/version'],
          },
          { name: 'meshid', component: 'identity', version: 'v0.1.0' },
          o.kind,
        );
      }
    });

    it('takes the version label from the image tag, and leaves it out for a digest-only image', () => {
      const tagged = render(['--image', 'registry.local:5000/meshid:dev-3']);
      assert.equal(
        deploymentParts(tagged).podLabels['app.kubernetes.io/version'],
        'dev-3',
        'a registry port is not a tag',
      );
      assert.equal(deploymentParts(tagged).container.image, 'registry.local:5000/meshid:dev-3');
      const digest = `registry.local:5000/meshid@sha256:${'ab'.repeat(32)}`;
      const pinned = render(['--image', digest]);
      assert.equal(deploymentParts(pinned).container.image, digest);
      for (const o of pinned.objects)
        assert.equal(o.metadata.labels?.['app.kubernetes.io/version'], undefined, o.kind);
    });

    it('refuses to print an object that does not validate (the check is not decorative)', () => {
      const broken = new Deployment({
        metadata: { name: 'x' },
        spec: { selector: {}, template: { spec: { containers: [{ image: 'x' } as never] } } },
      });
      assert.equal(
        errorCode(() => manifestYaml([{ object: broken, comment: 'broken', notes: [] }])).code,
        'ERR_INTERNAL',
      );
    });
  });

  describe('RBAC', () => {
    it('grants in the namespace only get/list/watch on the issuer Secret and anchors ConfigMap, by name', () => {
      const r = render();
      assert.deepEqual(rulesOf(r.one('Role')), [
        {
          apiGroups: [''],
          resources: ['secrets'],
          resourceNames: ['linkerd-identity-issuer'],
          verbs: ['get', 'list', 'watch'],
        },
        {
          apiGroups: [''],
          resources: ['configmaps'],
          resourceNames: ['linkerd-identity-trust-roots'],
          verbs: ['get', 'list', 'watch'],
        },
      ]);
    });

    it('grants cluster-wide only TokenReview create and core Event create/get/update (what the CA calls)', () => {
      const r = render();
      assert.deepEqual(rulesOf(r.one('ClusterRole')), [
        { apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] },
        { apiGroups: [''], resources: ['events'], verbs: ['create', 'patch'] },
      ]);
    });

    it('drops TokenReview with the jwks validator, which reads discovery through a default binding', () => {
      const r = render(['--token-validator', 'jwks']);
      assert.deepEqual(
        rulesOf(r.one('ClusterRole')).map((rule) => rule.resources),
        [['events']],
      );
      assert.match(
        documentText(r, 'ClusterRole'),
        /^# no rule for the OIDC discovery .*system:service-account-issuer-discovery/m,
      );
    });

    it('names the configured Secret and ConfigMap', () => {
      const r = render(['--issuer-secret', 'my-issuer', '--trust-anchors-config-map', 'my-roots']);
      assert.deepEqual(
        rulesOf(r.one('Role')).map((rule) => rule.resourceNames),
        [['my-issuer'], ['my-roots']],
      );
    });

    for (const validator of ['tokenreview', 'jwks'] as const) {
      it(`allows every permission the CA checks for at start-up, and its Event writes (${validator})`, () => {
        const r = render(['--token-validator', validator, '--control-plane-namespace', 'mesh']);
        const ca = caConfigOf(r);
        const queries: AccessQuery[] = [
          ...caRequirements({
            tokenReview: ca.tokenValidator === 'tokenreview',
            namespace: ca.namespace,
            issuerSecret: ca.issuerSecret,
            trustAnchorsConfigMap: ca.trustAnchorsConfigMap,
            events: ca.events,
          }).map((q) => q.query),
          // A "leaf issued" Event in a workload namespace, and its repeat (a merge patch).
          ...['create', 'patch'].map((verb) => ({
            verb,
            group: '',
            resource: 'events',
            namespace: 'emojivoto',
            name: 'web.1879c2e1a2b3c4d5',
          })),
        ];
        assert.ok(queries.length >= (validator === 'tokenreview' ? 10 : 9));
        for (const q of queries) assert.ok(allows(r, q), describeAccess(q));
      });
    }

    it('allows nothing else: other Secrets, other verbs, other namespaces', () => {
      const r = render();
      const denied: AccessQuery[] = [
        { verb: 'get', group: '', resource: 'secrets', namespace: 'linkerd', name: 'other' },
        { verb: 'list', group: '', resource: 'secrets', namespace: 'linkerd' },
        {
          verb: 'update',
          group: '',
          resource: 'secrets',
          namespace: 'linkerd',
          name: 'linkerd-identity-issuer',
        },
        {
          verb: 'get',
          group: '',
          resource: 'secrets',
          namespace: 'other',
          name: 'linkerd-identity-issuer',
        },
        {
          verb: 'patch',
          group: '',
          resource: 'configmaps',
          namespace: 'linkerd',
          name: 'linkerd-identity-trust-roots',
        },
        { verb: 'list', group: '', resource: 'events', namespace: 'linkerd' },
        { verb: 'delete', group: '', resource: 'events', namespace: 'linkerd', name: 'x' },
        { verb: 'get', group: 'authentication.k8s.io', resource: 'tokenreviews' },
      ];
      for (const q of denied) assert.ok(!allows(r, q), describeAccess(q));
    });

    it('has no wildcard and no rule without verbs, resources and groups', () => {
      const r = render(['--trust-anchors', '/anchors.pem', '--cert-manager']);
      for (const kind of ['Role', 'ClusterRole']) {
        for (const rule of r.all(kind).flatMap((o) => rulesOf(o))) {
          for (const field of ['apiGroups', 'resources', 'verbs'] as const)
            assert.ok((rule[field] ?? []).length > 0, `${kind} rule without ${field}`);
          const values = [
            ...(rule.apiGroups ?? []),
            ...(rule.resources ?? []),
            ...rule.verbs,
            ...(rule.resourceNames ?? []),
            ...(rule.nonResourceURLs ?? []),
          ];
          assert.ok(!values.some((v) => v.includes('*')), `${kind} has a wildcard`);
        }
      }
    });

    it('binds each role to the linkerd-identity ServiceAccount of the namespace, and nothing else', () => {
      const r = render(['--control-plane-namespace', 'mesh']);
      for (const [binding, roleKind] of [
        ['RoleBinding', 'Role'],
        ['ClusterRoleBinding', 'ClusterRole'],
      ] as const) {
        const b = r.one(binding) as KubeObject & {
          roleRef: { kind: string; name: string };
          subjects: unknown[];
        };
        assert.deepEqual(b.roleRef, {
          apiGroup: 'rbac.authorization.k8s.io',
          kind: roleKind,
          name: r.one(roleKind).metadata.name,
        });
        assert.deepEqual(b.subjects, [
          { kind: 'ServiceAccount', name: 'linkerd-identity', namespace: 'mesh' },
        ]);
      }
    });

    it('states the reason for every rule in a comment above it, and why SelfSubjectAccessReview needs none', () => {
      const r = render();
      const expected: Record<string, RegExp[]> = {
        Role: [/why: .*issuer.*fieldSelector/, /why: .*trust anchors.*fieldSelector/],
        ClusterRole: [/why: .*TokenReview/, /why: .*Events.*patch counts a repeat/],
      };
      for (const [kind, reasons] of Object.entries(expected)) {
        // Read the text as a reviewer does: the line above each `- ` rule item is its reason.
        const lines = documentText(r, kind).split('\n');
        const rulesAt = lines.indexOf('rules:');
        assert.ok(rulesAt >= 0);
        const items = lines
          .map((line, i) => ({ line, i }))
          .filter(({ line, i }) => i > rulesAt && line.startsWith('  - '));
        assert.equal(items.length, reasons.length, kind);
        items.forEach(({ i }, n) => {
          assert.match(lines[i - 1]!, /^ {2}# why: /, `${kind} rule ${n}`);
          assert.match(lines[i - 1]!, reasons[n]!, `${kind} rule ${n}`);
        });
      }
      assert.match(
        r.text,
        /# no rule for the SelfSubjectAccessReview .*system:basic-user/,
        'said in the YAML',
      );
    });
  });

  describe('the Deployment', () => {
    it('runs 2 replicas by default, spread by preferred anti-affinity on the hostname', () => {
      const { deployment, pod, podLabels } = deploymentParts(render());
      assert.equal(deployment.spec.replicas, 2);
      assert.ok(isSubsetOf(deployment.spec.selector.matchLabels, podLabels));
      const terms = pod.affinity?.podAntiAffinity?.preferredDuringSchedulingIgnoredDuringExecution;
      assert.equal(terms?.length, 1);
      assert.equal(terms![0]!.podAffinityTerm.topologyKey, 'kubernetes.io/hostname');
      assert.ok(
        isSubsetOf(terms![0]!.podAffinityTerm.labelSelector!.matchLabels!, podLabels),
        'the anti-affinity selects the CA pods',
      );
      assert.equal(
        pod.affinity?.podAntiAffinity?.requiredDuringSchedulingIgnoredDuringExecution,
        undefined,
        'preferred, so small clusters still schedule both',
      );
      assert.equal(pod.topologySpreadConstraints?.[0]?.whenUnsatisfiable, 'ScheduleAnyway');
    });

    it('probes startup, readiness and liveness over HTTP on the admin port 9990', () => {
      const { container } = deploymentParts(render());
      const probes: [string, IProbe | undefined, string][] = [
        ['startup', container.startupProbe, '/live'],
        ['liveness', container.livenessProbe, '/live'],
        ['readiness', container.readinessProbe, '/ready'],
      ];
      for (const [name, probe, path] of probes) {
        assert.equal(probe?.httpGet?.path, path, name);
        assert.equal(portNumber(container, probe.httpGet.port), 9990, name);
      }
    });

    it('runs as a fixed non-root user with a read-only root filesystem, no capabilities and RuntimeDefault seccomp', () => {
      const { pod, container } = deploymentParts(render());
      assert.equal(pod.securityContext?.runAsNonRoot, true);
      assert.equal(pod.securityContext?.seccompProfile?.type, 'RuntimeDefault');
      const sc = container.securityContext;
      assert.equal(sc?.runAsNonRoot, true);
      assert.ok((sc.runAsUser ?? 0) > 0, 'a fixed non-zero uid');
      assert.equal(sc.readOnlyRootFilesystem, true);
      assert.equal(sc.allowPrivilegeEscalation, false);
      assert.deepEqual(sc.capabilities, { drop: ['ALL'] });
      assert.equal(sc.seccompProfile?.type, 'RuntimeDefault');
      assert.equal(pod.hostNetwork, undefined);
      assert.equal(pod.volumes, undefined, 'no volumes: the CA reads its inputs through the API');
    });

    it('requests CPU and memory and limits memory', () => {
      const { container } = deploymentParts(render());
      assert.ok(container.resources?.requests?.['cpu']);
      assert.ok(container.resources.requests['memory']);
      assert.ok(container.resources.limits?.['memory']);
      assert.equal(container.resources.limits['cpu'], undefined);
    });

    it('runs as the linkerd-identity ServiceAccount with its API token mounted, without Service env vars', () => {
      const { pod } = deploymentParts(render());
      assert.equal(pod.serviceAccountName, 'linkerd-identity');
      assert.equal(pod.automountServiceAccountToken, true);
      assert.equal(pod.enableServiceLinks, false);
    });

    it('is selected by both Services (gRPC 8080) and the PodDisruptionBudget (one at a time)', () => {
      const r = render();
      const { podLabels, container } = deploymentParts(r);
      const services = r.all('Service') as (KubeObject & {
        spec: {
          clusterIP?: string;
          selector: object;
          ports: { port: number; targetPort: string }[];
        };
      })[];
      assert.deepEqual(
        services.map((s) => [s.metadata.name, s.spec.clusterIP]),
        [
          ['linkerd-identity', undefined],
          ['linkerd-identity-headless', 'None'],
        ],
      );
      for (const s of services) {
        assert.ok(isSubsetOf(s.spec.selector, podLabels), s.metadata.name);
        assert.deepEqual(
          s.spec.ports.map((p) => [p.port, portNumber(container, p.targetPort)]),
          [[8080, 8080]],
        );
      }
      const pdb = r.one('PodDisruptionBudget') as KubeObject & {
        spec: { maxUnavailable?: number; minAvailable?: number; selector: { matchLabels: object } };
      };
      assert.equal(pdb.spec.maxUnavailable, 1);
      assert.ok(isSubsetOf(pdb.spec.selector.matchLabels, podLabels));
    });
  });

  describe("the CA's arguments", () => {
    const cases: { name: string; argv: string[]; expect: Record<string, unknown> }[] = [
      {
        name: 'the defaults read the default Secret and ConfigMap through TokenReview in linkerd',
        argv: [],
        expect: {
          issuerSecret: 'linkerd-identity-issuer',
          trustAnchorsConfigMap: 'linkerd-identity-trust-roots',
          trustAnchorsKey: 'ca-bundle.crt',
          tokenValidator: 'tokenreview',
          namespace: 'linkerd',
          kubeconfig: 'in-cluster',
          identityName: 'linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local',
          certLifetime: DAY,
          clockSkew: 20_000,
          workers: 1,
        },
      },
      {
        name: 'every setting given is passed on',
        argv: [
          '--control-plane-namespace',
          'meshid-system',
          '--trust-domain',
          'prod.example.org',
          '--issuer-secret',
          'iss',
          '--trust-anchors-config-map',
          'roots',
          '--trust-anchors-key',
          'roots.pem',
          '--cert-lifetime',
          '12h',
          '--clock-skew',
          '30s',
        ],
        expect: {
          issuerSecret: 'iss',
          trustAnchorsConfigMap: 'roots',
          trustAnchorsKey: 'roots.pem',
          namespace: 'meshid-system',
          controlPlaneNamespace: 'meshid-system',
          trustDomain: 'prod.example.org',
          identityName:
            'linkerd-identity.meshid-system.serviceaccount.identity.meshid-system.prod.example.org',
          certLifetime: 12 * HOUR,
          clockSkew: 30_000,
        },
      },
      {
        name: "the jwks validator reads the cluster's own JWKS",
        argv: ['--token-validator', 'jwks'],
        expect: { tokenValidator: 'jwks', jwks: 'kubernetes', kubeconfig: 'in-cluster' },
      },
    ];
    for (const c of cases) {
      it(`are accepted by the CA's config loader: ${c.name}`, () => {
        const ca = caConfigOf(render(c.argv));
        for (const [key, value] of Object.entries(c.expect))
          assert.deepEqual(ca[key as keyof typeof ca], value, key);
        assert.deepEqual(ca.listen, { host: '::', port: 8080 });
        assert.deepEqual(ca.admin, { host: '::', port: 9990 });
      });
    }

    it('listen on the ports the container declares', () => {
      const r = render();
      const { container } = deploymentParts(r);
      const ca = caConfigOf(r);
      assert.equal(portNumber(container, 'grpc'), ca.listen.port);
      assert.equal(portNumber(container, 'admin'), ca.admin.port);
    });

    it('bind every listener on all addresses of both families ([::]), and the kubelet probes name no host (the pod IP, of either family)', () => {
      const r = render(['--cert-manager', '--webhooks', '--destination']);
      const listeners: string[] = [];
      for (const d of r.all('Deployment')) {
        const spec = (d as unknown as { spec: { template: { spec: IPodSpec } } }).spec.template
          .spec;
        for (const c of spec.containers) {
          for (const a of c.args ?? []) {
            const m = /^--(listen|admin)=(.*)$/.exec(a);
            if (m !== null) listeners.push(`${d.metadata.name} ${m[1]}=${m[2]}`);
          }
          for (const probe of [c.startupProbe, c.livenessProbe, c.readinessProbe]) {
            if (probe === undefined) continue;
            assert.equal(probe.httpGet?.host, undefined, `${d.metadata.name}: ${c.name}`);
            assert.equal(probe.tcpSocket, undefined, `${d.metadata.name}: ${c.name}`);
          }
        }
      }
      assert.deepEqual(listeners.sort(), [
        'linkerd-destination admin=[::]:9996',
        'linkerd-destination listen=[::]:8086',
        'linkerd-identity admin=[::]:9990',
        'linkerd-identity listen=[::]:8080',
        'meshid-webhooks listen=[::]:8443',
      ]);
    });

    it('take the namespace (and the pod name for Events) from the downward API', () => {
      const { container } = deploymentParts(render());
      assert.deepEqual(container.env, [
        {
          name: 'MESHID_NAMESPACE',
          valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.namespace' } },
        },
        {
          name: 'POD_NAME',
          valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.name' } },
        },
      ]);
    });
  });

  describe('trust anchors', () => {
    it('renders no anchors ConfigMap without --trust-anchors', () => {
      assert.deepEqual(render().all('ConfigMap'), []);
    });

    it('puts the bundle, byte for byte, under the configured key of the configured ConfigMap', () => {
      const bundle = `${goodAnchors}${goodAnchors}`;
      files['/two.pem'] = bundle;
      const r = render([
        '--trust-anchors',
        '/two.pem',
        '--trust-anchors-config-map',
        'roots',
        '--trust-anchors-key',
        'bundle.pem',
      ]);
      const cm = r.one('ConfigMap', 'roots') as KubeObject & { data: Record<string, string> };
      assert.deepEqual(cm.data, { 'bundle.pem': bundle });
      assert.equal(caConfigOf(r).trustAnchorsKey, 'bundle.pem');
    });

    const bad: { name: string; content?: () => Promise<string>; match: RegExp }[] = [
      { name: 'a missing file', match: /cannot read the file/ },
      { name: 'text that is not PEM', content: async () => 'hello\n', match: /anchor/ },
      { name: 'an empty file', content: async () => '', match: /empty/ },
      {
        name: 'expired anchors',
        content: () => anchorPem({ notAfter: NOW - DAY }),
        match: /expired/,
      },
      {
        name: 'a certificate that is not a CA',
        content: () => anchorPem({ isCa: false }),
        match: /trust anchor #1/,
      },
    ];
    for (const b of bad) {
      it(`refuses ${b.name} with ERR_ANCHORS_INVALID naming the file`, async () => {
        if (b.content !== undefined) files['/bad.pem'] = await b.content();
        const err = errorCode(() => render(['--trust-anchors', '/bad.pem']));
        assert.equal(err.code, 'ERR_ANCHORS_INVALID');
        assert.match(err.message, /^--trust-anchors \/bad\.pem: /);
        assert.match(err.message, b.match);
      });
    }

    it('prints nothing at all when the anchors are refused', async () => {
      const writes: unknown[] = [];
      const write = process.stdout.write.bind(process.stdout);
      process.stdout.write = ((chunk: unknown) => {
        writes.push(chunk);
        return true;
      }) as typeof process.stdout.write;
      let failure: unknown;
      try {
        await runInstall(['--trust-anchors', '/definitely/not/here.pem']);
      } catch (err) {
        failure = err;
      } finally {
        process.stdout.write = write;
      }
      assert.ok(isMeshidError(failure, 'ERR_ANCHORS_INVALID'));
      assert.deepEqual(writes, []);
    });
  });

  describe('cert-manager', () => {
    it('renders no Certificate without --cert-manager', () => {
      assert.deepEqual(render().all('Certificate'), []);
    });

    it('adds a valid Certificate issuing the issuer Secret as an ECDSA P-256 intermediate CA from the Issuer', () => {
      const r = render(['--cert-manager']);
      const cert = r.one('Certificate', 'linkerd-identity-issuer') as KubeObject & {
        spec: Record<string, unknown>;
      };
      assert.doesNotThrow(() => new Certificate(cert as never).validate());
      assert.deepEqual(cert.spec, {
        secretName: 'linkerd-identity-issuer',
        isCA: true,
        commonName: 'identity.linkerd.cluster.local',
        dnsNames: ['identity.linkerd.cluster.local'],
        duration: '48h',
        renewBefore: '25h',
        privateKey: { algorithm: 'ECDSA', size: 256, rotationPolicy: 'Always' },
        usages: ['cert sign', 'crl sign'],
        issuerRef: { group: 'cert-manager.io', kind: 'Issuer', name: 'linkerd-trust-anchor' },
      });
      assert.equal(cert.metadata.namespace, 'linkerd');
    });

    it('follows the issuer Secret, Issuer, namespace and trust domain given', () => {
      const r = render([
        '--cert-manager',
        '--cert-manager-issuer',
        'root-issuer',
        '--issuer-secret',
        'iss',
        '--control-plane-namespace',
        'mesh',
        '--trust-domain',
        'example.org',
      ]);
      const cert = r.one('Certificate', 'iss') as KubeObject & {
        spec: { secretName: string; commonName: string; issuerRef: { name: string } };
      };
      assert.equal(cert.metadata.name, 'iss');
      assert.equal(cert.metadata.namespace, 'mesh');
      assert.equal(cert.spec.secretName, 'iss');
      assert.equal(cert.spec.commonName, 'identity.mesh.example.org');
      assert.equal(cert.spec.issuerRef.name, 'root-issuer');
    });

    it('renders the whole recipe: a self-signed Issuer, the root Certificate, a CA Issuer over it', () => {
      const r = render(['--cert-manager']);
      const selfSigned = r.one('Issuer', 'linkerd-trust-root-issuer') as KubeObject & {
        spec: unknown;
      };
      assert.deepEqual(selfSigned.spec, { selfSigned: {} });
      const root = r.one('Certificate', 'linkerd-trust-anchor') as KubeObject & {
        spec: Record<string, unknown>;
      };
      assert.deepEqual(root.spec, {
        secretName: 'linkerd-trust-anchor',
        secretTemplate: { labels: { 'meshid.io/trust-anchor': 'true' } },
        isCA: true,
        commonName: 'root.linkerd.cluster.local',
        duration: '8760h0m0s',
        renewBefore: '7320h0m0s',
        privateKey: { algorithm: 'ECDSA', size: 256, rotationPolicy: 'Always' },
        usages: ['cert sign', 'crl sign'],
        issuerRef: { group: 'cert-manager.io', kind: 'Issuer', name: 'linkerd-trust-root-issuer' },
      });
      const ca = r.one('Issuer', 'linkerd-trust-anchor') as KubeObject & { spec: unknown };
      assert.deepEqual(ca.spec, { ca: { secretName: 'linkerd-trust-anchor' } });
      // Applied in order: what each object refers to comes before it.
      const order = r.objects.map((o) => `${o.kind}/${o.metadata.name}`);
      assert.ok(
        order.indexOf('Issuer/linkerd-trust-root-issuer') <
          order.indexOf('Certificate/linkerd-trust-anchor'),
      );
      assert.ok(
        order.indexOf('Issuer/linkerd-trust-anchor') <
          order.indexOf('Certificate/linkerd-identity-issuer'),
      );
      assert.deepEqual(r.all('Bundle'), [], 'no trust-manager Bundle unless asked');
    });

    it('adds a trust-manager Bundle targeting the anchors ConfigMap with --trust-manager', () => {
      const r = render(['--cert-manager', '--trust-manager']);
      const b = r.one('Bundle', 'linkerd-identity-trust-roots') as KubeObject & { spec: unknown };
      assert.deepEqual(b.spec, {
        sources: [
          { secret: { name: 'linkerd-trust-anchor', key: 'tls.crt' } },
          { secret: { name: 'linkerd-trust-anchor-previous', key: 'tls.crt' } },
        ],
        target: {
          configMap: { key: 'ca-bundle.crt' },
          namespaceSelector: { matchLabels: { 'linkerd.io/is-control-plane': 'true' } },
        },
      });
    });

    it('runs meshid trust sync, with its own ServiceAccount and a namespaced Role, unless trust-manager does the job', () => {
      const r = render(['--cert-manager', '--control-plane-namespace', 'mesh']);
      const d = r.one('Deployment', 'meshid-trust') as KubeObject & {
        spec: { template: { spec: IPodSpec } };
      };
      const pod = d.spec.template.spec;
      assert.equal(pod.serviceAccountName, 'meshid-trust');
      const args = pod.containers[0]!.args!;
      assert.deepEqual(args.slice(0, 2), ['trust', 'sync']);
      // The arguments are exactly what `meshid trust sync` accepts.
      const { config } = loadConfig('trust', { argv: args.slice(2), env: {} });
      assert.equal(config.kubeconfig, 'in-cluster');
      assert.equal(config.namespace, 'mesh');
      assert.equal(config.rootCertificate, 'linkerd-trust-anchor');
      const role = r.one('Role', 'meshid-trust') as KubeObject & {
        metadata: { namespace: string };
      };
      assert.equal(role.metadata.namespace, 'mesh');
      const binding = r.one('RoleBinding', 'meshid-trust') as KubeObject & {
        subjects: { name: string }[];
      };
      assert.deepEqual(
        binding.subjects.map((x) => x.name),
        ['meshid-trust'],
      );
      // The anchors' copies in meshed namespaces: exactly these verbs, cluster-wide, and nothing
      // on Secrets, Pods or anything else outside the control plane.
      const cluster = r.one('ClusterRole', 'meshid-trust-mesh') as KubeObject & {
        rules: {
          apiGroups: string[];
          resources: string[];
          verbs: string[];
          resourceNames?: string[];
        }[];
      };
      assert.deepEqual(cluster.rules, [
        { apiGroups: [''], resources: ['namespaces'], verbs: ['get', 'list', 'watch'] },
        {
          apiGroups: [''],
          resources: ['configmaps'],
          verbs: ['get', 'list', 'watch', 'update', 'delete'],
          resourceNames: ['linkerd-identity-trust-roots'],
        },
        { apiGroups: [''], resources: ['pods'], verbs: ['list', 'watch'] },
        { apiGroups: [''], resources: ['configmaps'], verbs: ['create'] },
        // The anchors as ClusterTrustBundles: the two of meshid's signer, and attest on it only.
        {
          apiGroups: ['certificates.k8s.io'],
          resources: ['clustertrustbundles'],
          verbs: ['get', 'update'],
          resourceNames: ['meshid.io:workload-identity:live', 'meshid.io:workload-identity:canary'],
        },
        {
          apiGroups: ['certificates.k8s.io'],
          resources: ['clustertrustbundles'],
          verbs: ['list', 'create'],
        },
        {
          apiGroups: ['certificates.k8s.io'],
          resources: ['signers'],
          verbs: ['attest'],
          resourceNames: ['meshid.io/workload-identity'],
        },
      ]);
      const clusterBinding = r.one('ClusterRoleBinding', 'meshid-trust-mesh') as KubeObject & {
        roleRef: { name: string };
        subjects: { name: string; namespace: string }[];
      };
      assert.equal(clusterBinding.roleRef.name, 'meshid-trust-mesh');
      assert.deepEqual(
        clusterBinding.subjects.map((x) => `${x.namespace}/${x.name}`),
        ['mesh/meshid-trust'],
      );
      assert.deepEqual(
        render(['--cert-manager', '--trust-manager'])
          .all('Deployment')
          .map((o) => o.metadata.name),
        ['linkerd-identity'],
      );
      assert.deepEqual(
        render()
          .all('Deployment')
          .map((o) => o.metadata.name),
        ['linkerd-identity'],
      );
    });

    it('renews the issuer while it still outlives a full-length leaf', () => {
      const cert = render(['--cert-manager', '--cert-lifetime', '48h']).one(
        'Certificate',
        'linkerd-identity-issuer',
      ) as KubeObject & { spec: { duration: string; renewBefore: string } };
      assert.deepEqual([cert.spec.duration, cert.spec.renewBefore], ['72h', '49h']);
    });
  });

  describe('settings', () => {
    it('takes --replicas, --control-plane-namespace, --trust-domain and --image', () => {
      const r = render([
        '--replicas',
        '3',
        '--control-plane-namespace',
        'meshid-system',
        '--trust-domain',
        'example.org',
        '--image',
        'example.org/meshid:v9',
      ]);
      const { deployment, container } = deploymentParts(r);
      assert.equal(deployment.spec.replicas, 3);
      assert.equal(container.image, 'example.org/meshid:v9');
      assert.equal(r.one('Namespace').metadata.name, 'meshid-system');
      assert.equal(r.one('ClusterRole').metadata.name, 'meshid-identity-meshid-system');
      for (const o of r.objects)
        if (!CLUSTER_SCOPED.has(o.kind)) assert.equal(o.metadata.namespace, 'meshid-system');
      assert.equal(caConfigOf(r).trustDomain, 'example.org');
      assert.match(
        r.text,
        /linkerd-identity\.meshid-system\.serviceaccount\.identity\.meshid-system\.example\.org/,
      );
    });

    it('refuses bad settings with ERR_CONFIG_INVALID naming them', () => {
      for (const [argv, field] of [
        [['--replicas', '0'], 'replicas'],
        [['--token-validator', 'oidc'], 'tokenValidator'],
        [['--control-plane-namespace', 'Not_A_Label'], 'controlPlaneNamespace'],
        [['--image', 'has space'], 'image'],
        [['--trust-anchors-key', 'a/b'], 'trustAnchorsKey'],
      ] as const) {
        const err = errorCode(() => render([...argv]));
        assert.equal(err.code, 'ERR_CONFIG_INVALID', argv.join(' '));
        assert.match(err.message, new RegExp(field), argv.join(' '));
      }
    });
  });

  describe('--destination', () => {
    it('adds the destination service: ServiceAccount, ClusterRole and binding, Service on 8086, Deployment', () => {
      const base = render();
      const r = render(['--destination']);
      const added = r.objects.slice(base.objects.length).map((o) => `${o.kind}/${o.metadata.name}`);
      assert.equal(r.objects.length, base.objects.length + 5);
      assert.deepEqual(added, [
        'ServiceAccount/linkerd-destination',
        'ClusterRole/meshid-destination-linkerd',
        'ClusterRoleBinding/meshid-destination-linkerd',
        'Service/linkerd-dst',
        'Deployment/linkerd-destination',
      ]);
      assertObjectsValidate(r.objects);
      const service = r.one('Service', 'linkerd-dst') as KubeObject & {
        spec: { ports: { port: number; targetPort: string }[]; selector: Record<string, string> };
      };
      assert.deepEqual(
        service.spec.ports.map((p) => [p.port, p.targetPort]),
        [[8086, 'grpc']],
      );
      const deployment = r.one('Deployment', 'linkerd-destination') as KubeObject & {
        spec: { template: { metadata: { labels: Record<string, string> }; spec: IPodSpec } };
      };
      assert.ok(isSubsetOf(service.spec.selector, deployment.spec.template.metadata.labels));
      // The CA's Services must not select the destination's pods, nor the reverse.
      const caService = r.one('Service', 'linkerd-identity') as KubeObject & {
        spec: { selector: Record<string, string> };
      };
      assert.ok(!isSubsetOf(caService.spec.selector, deployment.spec.template.metadata.labels));
      const pod = deployment.spec.template.spec;
      assert.equal(pod.serviceAccountName, 'linkerd-destination');
      const container = pod.containers[0]!;
      assert.equal(portNumber(container, 'grpc'), 8086);
      assert.deepEqual(container.args?.slice(0, 4), [
        'destination',
        '--listen=[::]:8086',
        '--admin=[::]:9996',
        '--kubeconfig=in-cluster',
      ]);
      assert.ok(
        container.args?.includes(
          '--local-identity=linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local',
        ),
      );
      const token = pod.volumes?.find((v) => v.projected !== undefined);
      assert.equal(
        token?.projected?.sources?.[0]?.serviceAccountToken?.audience,
        'identity.l5d.io',
      );
    });

    it('is on by default with --webhooks (the injector makes pods transparent); false in the environment or the config file leaves it out', () => {
      const names = (objects: KubeObject[]): string[] =>
        objects.map((o) => `${o.kind}/${o.metadata.name}`);
      const destination = [
        'ServiceAccount/linkerd-destination',
        'ClusterRole/meshid-destination-linkerd',
        'ClusterRoleBinding/meshid-destination-linkerd',
        'Service/linkerd-dst',
        'Deployment/linkerd-destination',
      ];
      const withHooks = names(render(['--cert-manager', '--webhooks']).objects);
      for (const name of destination) assert.ok(withHooks.includes(name), name);
      assert.ok(!names(render(['--cert-manager']).objects).includes('Service/linkerd-dst'));
      const optedOut = [
        names(
          parseAllDocuments(
            renderInstall({
              argv: ['--cert-manager', '--webhooks'],
              env: { MESHID_DESTINATION: 'false' },
              readFile,
              now: NOW,
            }),
          ).map((d) => d.toJS() as KubeObject),
        ),
      ];
      files = { '/etc/meshid/install.yaml': 'destination: false\n' };
      optedOut.push(
        names(
          render(['--cert-manager', '--webhooks', '--config', '/etc/meshid/install.yaml']).objects,
        ),
      );
      files = {};
      for (const without of optedOut) {
        assert.deepEqual(
          without,
          withHooks.filter((n) => !destination.includes(n)),
        );
        assert.ok(without.includes('Deployment/meshid-webhooks'));
      }
    });

    it('grants list and watch of Services, EndpointSlices and Pods, nothing else, to its ServiceAccount only', () => {
      const r = render(['--destination']);
      const role = r.one('ClusterRole', 'meshid-destination-linkerd');
      assert.deepEqual(rulesOf(role), [
        { apiGroups: [''], resources: ['services', 'pods'], verbs: ['list', 'watch'] },
        {
          apiGroups: ['discovery.k8s.io'],
          resources: ['endpointslices'],
          verbs: ['list', 'watch'],
        },
      ]);
      const binding = r.one('ClusterRoleBinding', 'meshid-destination-linkerd') as KubeObject & {
        subjects: unknown[];
        roleRef: { name: string };
      };
      assert.deepEqual(binding.subjects, [
        { kind: 'ServiceAccount', name: 'linkerd-destination', namespace: 'linkerd' },
      ]);
      assert.equal(binding.roleRef.name, 'meshid-destination-linkerd');
      for (const reason of [/why: a Service's ClusterIPs/, /why: the ready endpoints/])
        assert.match(r.text, reason);
    });
  });
});
