/**
 * `meshid check`'s cluster-trust-bundles check: meshid's live and canary ClusterTrustBundles
 * against the anchors ConfigMap (a pure function of what the cluster check read).
 */
import { strict as assert } from 'node:assert';
import { checkTrustBundles } from '../../../cli/check/trust-bundles.js';
import type { ListedTrustBundle } from '../../../cli/check/trust-bundles.js';
import { createRootCa } from '../../../core/pki.js';
import { parseAnchors } from '../../../core/index.js';
import { ROTATION_ANNOTATION } from '../../../trust-bundle/index.js';

const SIGNER = 'meshid.io/workload-identity';
const LIVE = 'meshid.io:workload-identity:live';
const CANARY = 'meshid.io:workload-identity:canary';
const now = Date.now();

const root = async (cn: string): Promise<string> =>
  (await createRootCa({ commonName: cn, notBefore: now - 60_000, notAfter: now + 86_400_000 }))
    .certificatePem;

const bundle = (name: string, pem: string, role?: string): ListedTrustBundle => ({
  metadata: { name, ...(role === undefined ? {} : { labels: { 'meshid.io/trust-bundle': role } }) },
  spec: { signerName: SIGNER, trustBundle: pem },
});

describe('meshid check: cluster-trust-bundles', () => {
  let oldRoot: string;
  let newRoot: string;
  before(async () => {
    oldRoot = await root('old.root');
    newRoot = await root('new.root');
  });
  const run = (
    bundles: Parameters<typeof checkTrustBundles>[0]['bundles'],
    anchorsText: string,
    anchorsAnnotations?: Record<string, string>,
  ) => checkTrustBundles({ bundles, anchorsText, anchorsAnnotations, signerName: SIGNER, now });

  it('✓ when both hold the anchors (in any order), and when the API does not serve them', () => {
    const r = run(
      [bundle(LIVE, newRoot + oldRoot, 'live'), bundle(CANARY, oldRoot + newRoot, 'canary')],
      oldRoot + newRoot,
    );
    assert.equal(r.status, 'ok', r.message);
    assert.match(r.message, /hold the anchors of the ConfigMap \(2 anchors\)/);
    assert.equal(run('unserved', oldRoot).status, 'ok');
  });

  it('× naming both sides’ fingerprints when live lags the ConfigMap', () => {
    const r = run([bundle(LIVE, oldRoot, 'live'), bundle(CANARY, oldRoot, 'canary')], newRoot);
    assert.equal(r.status, 'error');
    const fp = (pem: string) => parseAnchors(pem, { now }).anchors[0]!.fingerprint.slice(0, 12);
    assert.match(
      r.message,
      new RegExp(
        `${LIVE} holds \\[${fp(oldRoot)}\\] where the anchors ConfigMap says \\[${fp(newRoot)}\\]`,
      ),
    );
    assert.match(r.fix ?? '', /meshid trust sync/);
  });

  it('× when a bundle of meshid’s name was not made by meshid; ‼ when there is none', () => {
    const r = run([bundle(LIVE, oldRoot, 'live'), bundle(CANARY, oldRoot)], oldRoot);
    assert.equal(r.status, 'error');
    assert.match(
      r.message,
      /canary was not made by meshid \(no meshid\.io\/trust-bundle=canary label\)/,
    );
    const none = run([], oldRoot);
    assert.equal(none.status, 'warn');
    assert.match(none.message, /no ClusterTrustBundle meshid\.io:workload-identity:live/);
    assert.equal(run(new Error('forbidden'), oldRoot).status, 'warn');
  });

  it('during a rotation the canary must hold the new root alone', () => {
    const fpNew = parseAnchors(newRoot, { now }).anchors[0]!.fingerprint;
    const state = {
      version: 1,
      id: 'r1',
      mode: 'local',
      phase: 'switch',
      paused: false,
      startedAt: new Date(now).toISOString(),
      phaseStartedAt: new Date(now).toISOString(),
      updatedAt: new Date(now).toISOString(),
      oldRoot: {
        fingerprint: 'a'.repeat(64),
        subject: 'CN=old.root',
        notAfter: new Date(now + 1e9).toISOString(),
      },
      newRoot: {
        fingerprint: fpNew,
        subject: 'CN=new.root',
        notAfter: new Date(now + 1e9).toISOString(),
      },
      history: [],
    };
    const annotations = { [ROTATION_ANNOTATION]: JSON.stringify(state) };
    const staged = oldRoot + newRoot;
    assert.equal(
      run([bundle(LIVE, staged, 'live'), bundle(CANARY, newRoot, 'canary')], staged, annotations)
        .status,
      'ok',
    );
    const r = run(
      [bundle(LIVE, staged, 'live'), bundle(CANARY, staged, 'canary')],
      staged,
      annotations,
    );
    assert.equal(r.status, 'error');
    assert.match(r.message, /canary holds/);
  });
});
