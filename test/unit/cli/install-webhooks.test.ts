/**
 * `meshid install --cert-manager --webhooks`: the webhooks' objects validate, come last in apply
 * order, use the contract's names, select namespaces as documented, get their caBundle from
 * cert-manager, and the Deployment's arguments are accepted by `meshid webhooks`' config loader.
 */
import { strict as assert } from 'node:assert';
import { parseAllDocuments } from 'yaml';
import { renderInstall } from '../../../cli/install.js';
import { isMeshidError, loadConfig } from '../../../core/index.js';
import { assertObjectsValidate } from '../../support/install-models.js';

interface Obj {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  [key: string]: unknown;
}

interface Hook {
  name: string;
  clientConfig: { service: { name: string; namespace: string; path: string; port: number } };
  rules: { operations: string[]; apiGroups: string[]; resources: string[] }[];
  namespaceSelector: unknown;
  sideEffects: string;
  failurePolicy: string;
  timeoutSeconds: number;
  admissionReviewVersions: string[];
}

function render(argv: string[]): Obj[] {
  const text = renderInstall({ argv, env: {}, now: Date.now() });
  return parseAllDocuments(text).map((d) => d.toJS() as Obj);
}

const one = (objects: Obj[], kind: string, name: string): Obj => {
  const found = objects.filter((o) => o.kind === kind && o.metadata.name === name);
  assert.equal(found.length, 1, `${kind}/${name}`);
  return found[0]!;
};
const hook = (o: Obj): Hook => (o['webhooks'] as Hook[])[0]!;

describe('meshid install --webhooks', () => {
  const objects = render(['--cert-manager', '--webhooks']);

  it('adds the webhooks after the CA, their configurations last, every object valid against its schema', () => {
    const names = objects.map((o) => `${o.kind}/${o.metadata.name}`);
    assert.deepEqual(names.slice(names.indexOf('ServiceAccount/meshid-webhooks')), [
      'ServiceAccount/meshid-webhooks',
      'ClusterRole/meshid-webhooks-linkerd',
      'ClusterRoleBinding/meshid-webhooks-linkerd',
      'Issuer/meshid-webhooks-selfsigned',
      'Certificate/meshid-webhooks-ca',
      'Issuer/meshid-webhooks-ca',
      'Certificate/meshid-webhooks',
      'Service/meshid-webhooks',
      'Deployment/meshid-webhooks',
      'PodDisruptionBudget/meshid-webhooks',
      'MutatingWebhookConfiguration/meshid-proxy-injector',
      'ValidatingWebhookConfiguration/meshid-trust-guard',
    ]);
    assertObjectsValidate(objects);
  });

  it('renders nothing of the webhooks without --webhooks, and refuses --webhooks without cert-manager', () => {
    assert.ok(
      !render(['--cert-manager']).some((o) => o.metadata.name.startsWith('meshid-webhooks')),
    );
    assert.throws(
      () => renderInstall({ argv: ['--webhooks'], env: {}, now: Date.now() }),
      (err: unknown) =>
        isMeshidError(err, 'ERR_CONFIG_INVALID') &&
        /webhooks .*needs certManager/.test(err.message),
    );
  });

  it('the injector: Pods on CREATE, /inject of the Service, not the control plane or kube-system, sideEffects None, Ignore by default', () => {
    const m = one(objects, 'MutatingWebhookConfiguration', 'meshid-proxy-injector');
    assert.equal(
      m.metadata.annotations?.['cert-manager.io/inject-ca-from'],
      'linkerd/meshid-webhooks',
    );
    const h = hook(m);
    assert.equal(h.name, 'proxy-injector.meshid.io');
    assert.deepEqual(h.clientConfig, {
      service: { name: 'meshid-webhooks', namespace: 'linkerd', path: '/inject', port: 443 },
    });
    assert.deepEqual(h.rules, [
      {
        operations: ['CREATE'],
        apiGroups: [''],
        apiVersions: ['v1'],
        resources: ['pods'],
        scope: 'Namespaced',
      },
    ]);
    assert.deepEqual(h.namespaceSelector, {
      matchExpressions: [
        {
          key: 'kubernetes.io/metadata.name',
          operator: 'NotIn',
          values: ['linkerd', 'kube-system'],
        },
        { key: 'config.linkerd.io/admission-webhooks', operator: 'NotIn', values: ['disabled'] },
      ],
    });
    assert.equal(h.sideEffects, 'None');
    assert.deepEqual(h.admissionReviewVersions, ['v1']);
    assert.equal(h.failurePolicy, 'Ignore');
    assert.equal(h.timeoutSeconds, 10);
  });

  it('the guard: ConfigMaps and Certificates on CREATE/UPDATE in the control plane only, /validate, Fail by default', () => {
    const v = one(objects, 'ValidatingWebhookConfiguration', 'meshid-trust-guard');
    assert.equal(
      v.metadata.annotations?.['cert-manager.io/inject-ca-from'],
      'linkerd/meshid-webhooks',
    );
    const h = hook(v);
    assert.equal(h.name, 'trust-guard.meshid.io');
    assert.equal(h.clientConfig.service.path, '/validate');
    assert.deepEqual(
      h.rules.map((r) => [r.apiGroups, r.resources, r.operations]),
      [
        [[''], ['configmaps'], ['CREATE', 'UPDATE']],
        [['cert-manager.io'], ['certificates'], ['CREATE', 'UPDATE']],
      ],
    );
    assert.deepEqual(h.namespaceSelector, {
      matchLabels: { 'kubernetes.io/metadata.name': 'linkerd' },
    });
    assert.equal(h.failurePolicy, 'Fail');
  });

  it('takes the failure policies and the timeout from the settings, with the trade-off in a comment', () => {
    const argv = [
      '--cert-manager',
      '--webhooks',
      '--injector-failure-policy',
      'Fail',
      '--trust-guard-failure-policy',
      'Ignore',
      '--webhook-timeout',
      '5s',
    ];
    const o = render(argv);
    assert.equal(
      hook(one(o, 'MutatingWebhookConfiguration', 'meshid-proxy-injector')).failurePolicy,
      'Fail',
    );
    assert.equal(
      hook(one(o, 'ValidatingWebhookConfiguration', 'meshid-trust-guard')).failurePolicy,
      'Ignore',
    );
    assert.equal(
      hook(one(o, 'ValidatingWebhookConfiguration', 'meshid-trust-guard')).timeoutSeconds,
      5,
    );
    const text = renderInstall({ argv, env: {}, now: Date.now() });
    assert.match(
      text,
      /# Fail: while the injector is down, pods in every namespace it matches are refused/,
    );
    assert.match(
      text,
      /# Ignore: while the guard is down, trust edits in linkerd go through unchecked/,
    );
    for (const bad of [
      ['--webhook-timeout', '31s'],
      ['--injector-failure-policy', 'Sometimes'],
    ])
      assert.throws(
        () =>
          renderInstall({
            argv: ['--cert-manager', '--webhooks', ...bad],
            env: {},
            now: Date.now(),
          }),
        /webhookTimeout|injectorFailurePolicy/,
      );
  });

  it('serves a cert-manager certificate for the Service name into meshid-webhooks-tls, mounted where --tls-dir points', () => {
    const cert = one(objects, 'Certificate', 'meshid-webhooks') as Obj & {
      spec: {
        secretName: string;
        dnsNames: string[];
        issuerRef: { name: string };
        privateKey: { algorithm: string };
      };
    };
    assert.equal(cert.spec.secretName, 'meshid-webhooks-tls');
    assert.deepEqual(cert.spec.dnsNames, [
      'meshid-webhooks.linkerd.svc',
      'meshid-webhooks.linkerd.svc.cluster.local',
    ]);
    assert.equal(cert.spec.issuerRef.name, 'meshid-webhooks-ca');
    const ca = one(objects, 'Certificate', 'meshid-webhooks-ca') as Obj & {
      spec: { isCA: boolean; secretName: string };
    };
    assert.equal(ca.spec.isCA, true);
    assert.notEqual(ca.spec.secretName, 'linkerd-identity-issuer', "not the mesh's issuer");
    const d = one(objects, 'Deployment', 'meshid-webhooks') as Obj & {
      spec: {
        template: {
          spec: {
            serviceAccountName: string;
            volumes: { name: string; secret?: { secretName: string } }[];
            containers: { args: string[]; volumeMounts: { name: string; mountPath: string }[] }[];
          };
        };
      };
    };
    const pod = d.spec.template.spec;
    assert.equal(pod.serviceAccountName, 'meshid-webhooks');
    const tls = pod.volumes.find((v) => v.secret !== undefined)!;
    assert.equal(tls.secret!.secretName, 'meshid-webhooks-tls');
    const mount = pod.containers[0]!.volumeMounts.find((m) => m.name === tls.name)!;
    assert.ok(pod.containers[0]!.args.includes(`--tls-dir=${mount.mountPath}`));
  });

  it('gives meshid webhooks arguments its config loader accepts', () => {
    const d = one(objects, 'Deployment', 'meshid-webhooks') as Obj & {
      spec: { template: { spec: { containers: { args: string[] }[] } } };
    };
    const [command, ...argv] = d.spec.template.spec.containers[0]!.args;
    assert.equal(command, 'webhooks');
    const { config } = loadConfig('webhooks', { argv, env: {} });
    assert.deepEqual(config.listen, { host: '::', port: 8443 });
    assert.equal(config.kubeconfig, 'in-cluster');
    assert.equal(config.issuerSecret, 'linkerd-identity-issuer');
  });

  it('grants the webhooks get on namespaces and nothing else: no Role, so no Secret (the issuer key)', () => {
    assert.deepEqual(one(objects, 'ClusterRole', 'meshid-webhooks-linkerd')['rules'], [
      { apiGroups: [''], resources: ['namespaces'], verbs: ['get'] },
    ]);
    const bound = objects.filter(
      (o) =>
        (o.kind === 'RoleBinding' || o.kind === 'ClusterRoleBinding') &&
        (o['subjects'] as { name: string }[]).some((s) => s.name === 'meshid-webhooks'),
    );
    assert.deepEqual(
      bound.map((b) => `${b.kind}/${b.metadata.name}`),
      ['ClusterRoleBinding/meshid-webhooks-linkerd'],
    );
  });
});
