/**
 * The transparent-mode checks of `meshid check --kubeconfig` on pods and Deployments as the API
 * returns them: which pods count (this control plane's label only), the bounded list, and the
 * destination service's verdicts (test/integration/check-cluster.test.ts runs them end to end).
 */
import { strict as assert } from 'node:assert';
import type { V1Deployment, V1Pod } from '@kubernetes/client-node';
import {
  checkDestinationReady,
  checkTransparentPods,
  transparentPods,
} from '../../../cli/check/transparent.js';

const pod = (
  name: string,
  o: { cp?: string; init?: boolean; transparent?: string } = {},
): V1Pod => ({
  metadata: {
    name,
    namespace: 'web',
    ...(o.cp === undefined ? {} : { labels: { 'linkerd.io/control-plane-ns': o.cp } }),
    ...(o.transparent === undefined
      ? {}
      : { annotations: { 'meshid.io/transparent': o.transparent } }),
  },
  spec: {
    containers: [{ name: 'app' }],
    ...(o.init === true ? { initContainers: [{ name: 'meshid-init' }] } : {}),
  },
});

describe('meshid check: proxies-transparent and destination-ready', () => {
  it("counts only this control plane's pods; an explicit annotation wins over an init container", () => {
    const sorted = transparentPods(
      [
        pod('unmeshed'),
        pod('other', { cp: 'other-mesh' }),
        pod('t', { cp: 'linkerd', init: true }),
        pod('t-enabled', { cp: 'linkerd', init: true, transparent: 'enabled' }),
        pod('explicit', { cp: 'linkerd', init: true, transparent: 'disabled' }),
        pod('old', { cp: 'linkerd' }),
      ],
      'linkerd',
    );
    const names = (ps: readonly V1Pod[]): string[] => ps.map((p) => p.metadata!.name!);
    assert.deepEqual(names(sorted.transparent), ['t', 't-enabled']);
    assert.deepEqual(names(sorted.disabled), ['explicit']);
    assert.deepEqual(names(sorted.missingInit), ['old']);
    assert.equal(
      checkTransparentPods(transparentPods([pod('t', { cp: 'linkerd', init: true })], 'linkerd'))
        .status,
      'ok',
    );
    assert.equal(
      checkTransparentPods(transparentPods([pod('x', { cp: 'other' })], 'linkerd')).message,
      'no injected pods of this control plane',
    );
  });

  it('lists five pods, then how many more', () => {
    const pods = Array.from({ length: 8 }, (_, i) =>
      pod(`p${i}`, { cp: 'linkerd', transparent: 'disabled' }),
    );
    const r = checkTransparentPods(transparentPods(pods, 'linkerd'));
    assert.equal(r.status, 'warn');
    assert.match(
      r.message,
      /8 are annotated meshid\.io\/transparent: disabled: web\/p0, web\/p1, web\/p2, web\/p3, web\/p4 and 3 more$/,
    );
    assert.match(r.fix ?? '', /^remove the annotation meshid\.io\/transparent: disabled/);
  });

  it('destination: × missing or no ready replica with transparent pods, ‼ unreadable, ✓ ready or nobody asks', () => {
    const notReady = { spec: { replicas: 2 }, status: { replicas: 2 } } as V1Deployment;
    const ready = { spec: { replicas: 2 }, status: { readyReplicas: 2 } } as V1Deployment;
    assert.equal(checkDestinationReady(undefined, 1, 'linkerd').status, 'error');
    assert.match(
      checkDestinationReady(notReady, 3, 'linkerd').message,
      /has no ready replica while 3 transparent pods ask it/,
    );
    const unreadable = checkDestinationReady(new Error('HTTP 403: forbidden'), 1, 'linkerd');
    assert.equal(unreadable.status, 'warn');
    assert.equal(
      unreadable.message,
      'cannot read Deployment linkerd/linkerd-destination: HTTP 403: forbidden',
    );
    assert.match(unreadable.fix ?? '', /"get deployments" in namespace linkerd/);
    assert.equal(
      checkDestinationReady(ready, 1, 'linkerd').message,
      'Deployment linkerd/linkerd-destination: 2 of 2 replicas ready',
    );
    for (const d of [undefined, notReady, new Error('x')])
      assert.equal(checkDestinationReady(d, 0, 'linkerd').status, 'ok');
  });
});
