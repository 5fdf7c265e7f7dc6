/**
 * Least privilege of every install variant: `meshid install` is rendered with every combination
 * of its switches (the boolean settings of the install command, read from the config schema so a
 * new switch is covered without editing this file) and both token validators, with and without
 * --trust-anchors; in each, every rule that reaches Secrets must belong to a role bound only to
 * the identity CA or the trust sync. Nothing else (the webhooks above all) may read a Secret: the
 * issuer Secret holds the issuer's private key.
 */
import { strict as assert } from 'node:assert';
import { parseAllDocuments } from 'yaml';
import { renderInstall } from '../../../cli/install.js';
import { INSTALL_NAMES } from '../../../cli/install/manifest.js';
import { TRUST_SYNC_NAMES } from '../../../cli/install/trust-sync.js';
import { COMMAND_SETTINGS, flagName, isMeshidError, systemClock } from '../../../core/index.js';
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

/** The ServiceAccounts that may touch Secrets: the CA (the issuer) and the trust sync (roots). */
const ALLOWED = new Set<string>([INSTALL_NAMES.serviceAccount, TRUST_SYNC_NAMES.serviceAccount]);

const reachesSecrets = (r: Rule): boolean =>
  (r.apiGroups ?? []).some((g) => g === '' || g === '*') &&
  (r.resources ?? []).some((x) => x === 'secrets' || x.startsWith('secrets/') || x === '*');

/** `ServiceAccount/name` of each subject bound to a role (Role or ClusterRole) that reaches Secrets. */
function secretReaders(objects: Obj[]): Map<string, string[]> {
  const roles = new Map<string, Rule[]>();
  for (const o of objects)
    if (o.kind === 'Role' || o.kind === 'ClusterRole')
      roles.set(
        `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`,
        (o.rules ?? []).filter(reachesSecrets),
      );
  const readers = new Map<string, string[]>();
  for (const b of objects) {
    if (b.kind !== 'RoleBinding' && b.kind !== 'ClusterRoleBinding') continue;
    const ns = b.roleRef!.kind === 'Role' ? (b.metadata.namespace ?? '') : '';
    const rules = roles.get(`${b.roleRef!.kind}/${ns}/${b.roleRef!.name}`) ?? [];
    if (rules.length === 0) continue;
    for (const s of b.subjects ?? [])
      readers.set(`${s.kind}/${s.name}`, [
        ...(readers.get(`${s.kind}/${s.name}`) ?? []),
        `${b.roleRef!.kind} ${b.roleRef!.name}: ${rules.map((r) => (r.verbs ?? []).join(',')).join('; ')}`,
      ]);
  }
  return readers;
}

/** A document of one of the four RBAC kinds (each document opens with `---`, see cli/install/yaml.ts). */
const RBAC_KIND = /^kind: (Cluster)?Role(Binding)?$/m;

describe('meshid install: no Secret permission outside the CA and the trust sync, in every variant', function () {
  // 256 renders of the whole install: CPU-bound work, about 10 s alone, and past 60 s on a machine
  // loaded by another test run (seen in a load pair). Bounded, and generous for that reason.
  this.timeout(300_000);
  let anchorsFile: AnchorsFile;
  before(async () => {
    anchorsFile = await writeAnchorsFile('meshid-install-rbac-');
  });
  after(() => anchorsFile.remove());

  const switches = Object.entries(COMMAND_SETTINGS.install)
    .filter(([, s]) => s.kind === 'boolean')
    .map(([k]) => `--${flagName(k)}`);

  it('enumerates the install switches from the config schema', () => {
    for (const expected of ['--cert-manager', '--trust-manager', '--webhooks', '--fips'])
      assert.ok(switches.includes(expected), `${expected} in ${switches.join(' ')}`);
  });

  it('every variant: Secrets only for the CA and the trust sync, the webhooks none', () => {
    let rendered = 0;
    let withWebhooks = 0;
    let rbacDocuments = 0;
    for (let mask = 0; mask < 1 << switches.length; mask++) {
      const flags = switches.filter((_, i) => (mask & (1 << i)) !== 0);
      for (const validator of ['tokenreview', 'jwks'])
        for (const anchors of [[], ['--trust-anchors', anchorsFile.file]]) {
          const argv = [...flags, '--token-validator', validator, ...anchors];
          let yaml: string;
          try {
            yaml = renderInstall({ argv, env: {}, now: systemClock.now() });
          } catch (err) {
            // A combination the install refuses (e.g. --webhooks without --cert-manager) renders nothing.
            assert.ok(
              isMeshidError(err, 'ERR_CONFIG_INVALID'),
              `${argv.join(' ')}: ${String(err)}`,
            );
            continue;
          }
          rendered++;
          if (flags.includes('--webhooks')) withWebhooks++;
          // Only the RBAC documents matter here; parsing the rest (CRDs' schemas, Deployments) took
          // most of the time: 256 variants must stay fast on a loaded machine.
          const rbac = yaml.split(/^(?=---$)/m).filter((d) => RBAC_KIND.test(d));
          rbacDocuments += rbac.length;
          const objects = rbac.flatMap((d) => parseAllDocuments(d).map((x) => x.toJS() as Obj));
          for (const [subject, grants] of secretReaders(objects)) {
            const [kind, name] = subject.split('/');
            assert.ok(
              kind === 'ServiceAccount' && ALLOWED.has(name!),
              `meshid install ${argv.join(' ')}: ${subject} may use Secrets (${grants.join(' | ')})`,
            );
          }
        }
    }
    assert.ok(rendered >= 8, `${rendered} variants rendered`);
    assert.ok(rbacDocuments >= rendered * 2, `${rbacDocuments} RBAC documents found`);
    assert.ok(withWebhooks >= 2, `${withWebhooks} variants with the webhooks`);
  });
});
