/**
 * `meshid install --pod-certificates`: the signer's permissions as rendered, each held to least
 * privilege. The replicas' Leases are in the CA's namespace only (a Role, never a ClusterRole),
 * with only the verbs the replica set uses (no get, patch or deletecollection); without
 * --pod-certificates there is no Lease rule at all.
 */
import { strict as assert } from 'node:assert';
import { parseAllDocuments } from 'yaml';
import { renderInstall } from '../../../cli/install.js';
import { INSTALL_NAMES } from '../../../cli/install/manifest.js';
import { systemClock } from '../../../core/index.js';
import { writeAnchorsFile } from '../../support/state.js';
import type { AnchorsFile } from '../../support/state.js';

interface Rule {
  apiGroups?: string[];
  resources?: string[];
  resourceNames?: string[];
  verbs?: string[];
}
interface Obj {
  kind: string;
  metadata: { name: string; namespace?: string };
  rules?: Rule[];
  roleRef?: { kind: string; name: string };
  subjects?: { kind: string; name: string; namespace?: string }[];
}

const touchesLeases = (r: Rule): boolean =>
  (r.apiGroups ?? []).some((g) => g === 'coordination.k8s.io' || g === '*') &&
  (r.resources ?? []).some((x) => x === 'leases' || x === '*');

describe('meshid install --pod-certificates: the signer replicas’ Lease permissions', function () {
  this.timeout(60_000);
  let anchors: AnchorsFile;
  before(async () => {
    anchors = await writeAnchorsFile('meshid-install-podcert-');
  });
  after(() => anchors.remove());

  const render = (...flags: string[]): Obj[] =>
    parseAllDocuments(
      renderInstall({
        argv: ['--trust-anchors', anchors.file, '--control-plane-namespace', 'mesh-ca', ...flags],
        env: {},
        now: systemClock.now(),
      }),
    ).map((d) => d.toJS() as Obj);

  it("grants create, update, delete, list and watch of Leases in the CA's namespace only, to the CA only", () => {
    const objects = render('--pod-certificates');
    const withLeases = objects.filter((o) => (o.rules ?? []).some(touchesLeases));
    assert.deepEqual(
      withLeases.map((o) => `${o.kind} ${o.metadata.namespace ?? ''}`),
      ['Role mesh-ca'],
      'one Role, in the control-plane namespace; no ClusterRole',
    );
    const role = withLeases[0]!;
    assert.deepEqual(role.rules!.filter(touchesLeases), [
      {
        apiGroups: ['coordination.k8s.io'],
        resources: ['leases'],
        verbs: ['create', 'update', 'delete', 'list', 'watch'],
      },
    ]);
    const bindings = objects.filter(
      (o) => o.kind === 'RoleBinding' && o.roleRef?.name === role.metadata.name,
    );
    assert.equal(bindings.length, 1);
    assert.equal(bindings[0]!.metadata.namespace, 'mesh-ca');
    assert.deepEqual(bindings[0]!.subjects, [
      { kind: 'ServiceAccount', name: INSTALL_NAMES.serviceAccount, namespace: 'mesh-ca' },
    ]);
  });

  it('grants no Lease permission without --pod-certificates', () => {
    assert.equal(render().filter((o) => (o.rules ?? []).some(touchesLeases)).length, 0);
  });
});
