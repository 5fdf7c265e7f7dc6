import { strict as assert } from 'node:assert';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Certificate, Issuer } from '@kubernetes-models/cert-manager/cert-manager.io/v1';
import { Bundle } from '@kubernetes-models/cert-manager/trust.cert-manager.io/v1alpha1';
import { parseAllDocuments } from 'yaml';
import { isMeshidError, loadConfig } from '../../../core/index.js';
import { createRootCa } from '../../../core/pki.js';
import { renderTrustManifests, validateBundleFile } from '../../../cli/trust.js';

const DAY = 86_400_000;
const config = (argv: string[] = []) => loadConfig('trust', { argv, env: {} }).config;

describe('meshid trust (in process)', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshid-trust-cli-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('manifests: the cert-manager chain, each valid against its model, and the Bundle on request', () => {
    const docs = parseAllDocuments(renderTrustManifests(config(['--trust-manager']))) as {
      toJS(): { kind: string; metadata: { name: string; namespace?: string } };
    }[];
    const objects = docs.map((d) => d.toJS());
    assert.deepEqual(
      objects.map((o) => `${o.kind}/${o.metadata.name}`),
      [
        'Issuer/linkerd-trust-root-issuer',
        'Certificate/linkerd-trust-anchor',
        'Issuer/linkerd-trust-anchor',
        'Certificate/linkerd-identity-issuer',
        'Bundle/linkerd-identity-trust-roots',
      ],
    );
    const models: Record<string, new (d: never) => { validate(): void }> = {
      Issuer,
      Certificate,
      Bundle,
    };
    for (const o of objects) assert.doesNotThrow(() => new models[o.kind]!(o as never).validate());
    assert.equal(objects[1]!.metadata.namespace, 'linkerd');
    const plain = parseAllDocuments(renderTrustManifests(config(['--namespace', 'mesh'])));
    assert.equal((plain as unknown[]).length, 4);
  });

  it('validate: a summary of a good bundle', async () => {
    const now = Date.now();
    const root = await createRootCa({
      commonName: 'root.linkerd.cluster.local',
      notBefore: now - DAY,
      notAfter: now + 30 * DAY,
    });
    const file = join(dir, 'good.pem');
    await writeFile(file, root.certificatePem);
    const out = await validateBundleFile(file, config(), now);
    assert.equal(out.code, 0);
    assert.match(out.stdout, /valid trust bundle, 1 anchor/);
    assert.match(out.stdout, /1\. CN=root\.linkerd\.cluster\.local {2}ecdsa-p256/);
    assert.match(
      out.stdout,
      /warning: anchor "CN=root.linkerd.cluster.local" expires at .*within 60 days/,
    );
    const json = JSON.parse(
      (await validateBundleFile(file, config(['--output', 'json']), now)).stdout,
    ) as { valid: boolean; anchors: unknown[]; canonical: boolean };
    assert.equal(json.valid, true);
    assert.equal(json.anchors.length, 1);
    assert.equal(json.canonical, true);
  });

  it('validate: the file name and each bad certificate in the error', async () => {
    const file = join(dir, 'bad.pem');
    await writeFile(file, 'not pem\n');
    await assert.rejects(
      validateBundleFile(file, config(), Date.now()),
      (e) =>
        isMeshidError(e, 'ERR_ANCHORS_INVALID') &&
        e.message ===
          `${file}: trust anchor bundle: line 1: unexpected content outside a PEM block: "not pem"`,
    );
    await assert.rejects(
      validateBundleFile(join(dir, 'missing.pem'), config(), Date.now()),
      (e) => isMeshidError(e, 'ERR_ANCHORS_INVALID') && /missing\.pem: cannot read/.test(e.message),
    );
  });
});
