/**
 * `meshid identity` on a file, a Secret (Kubernetes API test server, a test double) and a running
 * proxy's admin endpoint; `meshid version` with and without a reachable CA. Real processes.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatAddress, systemClock } from '../../core/index.js';
import { createRootCa } from '../../core/pki.js';
import { runMeshid, startCaProcess } from '../support/ca-process.js';
import type { CaProcess } from '../support/ca-process.js';
import { issuerSecret } from '../support/issuer-secret.js';
import { startKubeApiServer } from '../support/kube-api-server/index.js';
import type { KubeApiServer } from '../support/kube-api-server/index.js';
import { freePort, startProxyProcess } from '../support/proxy-process.js';
import type { ProxyProcess } from '../support/proxy-process.js';
import { DAY, HOUR, makeTestState } from '../support/state.js';
import type { TestState } from '../support/state.js';

interface View {
  source: string;
  certificates: {
    subject: string;
    dnsNames: string[];
    spiffeIds: string[];
    serial: string;
    sha256: string;
    keyType: string;
    isCa: boolean;
    notAfter: string;
    timeLeft: string;
  }[];
  chainsToAnchors: boolean | null;
  anchor?: string;
  reason?: string;
  proxyBundleFingerprint?: string;
}

describe('meshid identity and meshid version (real processes)', function () {
  this.timeout(120_000);
  let state: TestState;
  let ca: CaProcess;
  let proxy: ProxyProcess;
  let api: KubeApiServer;
  let dir: string;
  let kubeconfig: string;

  before(async () => {
    state = await makeTestState();
    dir = await mkdtemp(join(tmpdir(), 'meshid-identity-'));
    ca = await startCaProcess([...state.caArgs, '--workers', '1']);
    proxy = await startProxyProcess({ state, ca: formatAddress(ca.address), sa: 'web' });
    api = await startKubeApiServer({ namespaces: ['linkerd'] });
    kubeconfig = join(dir, 'kubeconfig');
    await api.writeKubeconfig(kubeconfig);
    api.create(
      issuerSecret(
        { namespace: 'linkerd', name: 'linkerd-identity-issuer' },
        state.issuer,
        state.root,
      ),
    );
    api.create({
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: 'linkerd-identity-trust-roots', namespace: 'linkerd' },
      data: { 'ca-bundle.crt': state.root.certificatePem },
    });
  });
  after(async () => {
    await proxy?.stop();
    await ca?.stop();
    await api?.stop();
    await state?.cleanup();
    await rm(dir, { recursive: true, force: true });
  });

  it('a running proxy: its leaf with DNS and SPIFFE SANs, the chain, and that it chains to the anchors', async () => {
    const r = await runMeshid([
      'identity',
      '--proxy',
      formatAddress(proxy.admin),
      '--trust-anchors',
      state.anchorsFile,
      '--output',
      'json',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const v = JSON.parse(r.stdout) as View;
    const leaf = v.certificates[0]!;
    assert.deepEqual(leaf.dnsNames, [
      'web.emojivoto.serviceaccount.identity.linkerd.cluster.local',
    ]);
    assert.deepEqual(leaf.spiffeIds, ['spiffe://cluster.local/ns/emojivoto/sa/web']);
    assert.equal(leaf.keyType, 'ECDSA P-256');
    assert.equal(leaf.isCa, false);
    assert.match(leaf.timeLeft, /^23h 59m$|^1d$/);
    assert.equal(v.certificates[1]?.subject, 'CN=identity.linkerd.cluster.local');
    assert.equal(v.chainsToAnchors, true);
    assert.equal(v.anchor, 'root.linkerd.cluster.local');
    assert.match(v.proxyBundleFingerprint ?? '', /^[0-9a-f]{64}$/);
    // Serial and fingerprint agree with openssl, an independent reader.
    const pemFile = join(dir, 'leaf.pem');
    const report = JSON.parse(
      await (await fetch(`http://${formatAddress(proxy.admin)}/identity`)).text(),
    ) as { certificate: { chainPem: string } };
    await writeFile(pemFile, report.certificate.chainPem);
    const ossl = execFileSync(
      'openssl',
      ['x509', '-in', pemFile, '-noout', '-serial', '-fingerprint', '-sha256'],
      { encoding: 'utf8' },
    );
    assert.match(ossl, new RegExp(`serial=${leaf.serial}`, 'i'));
    assert.ok(ossl.replace(/:/g, '').toLowerCase().includes(leaf.sha256), ossl);

    const t = await runMeshid([
      'identity',
      '--proxy',
      formatAddress(proxy.admin),
      '--trust-anchors',
      state.anchorsFile,
    ]);
    assert.equal(t.code, 0);
    assert.match(t.stdout, /^ {2}SPIFFE ID {3}spiffe:\/\/cluster\.local\/ns\/emojivoto\/sa\/web$/m);
    assert.match(
      t.stdout,
      /^✓ chains to the current anchors \(root\.linkerd\.cluster\.local, from /m,
    );
  });

  it('a file (the FILE argument): chains with --dir, does not with other anchors (exit 1)', async () => {
    const ok = await runMeshid([
      'identity',
      join(state.issuerDir, 'tls.crt'),
      '--dir',
      state.dir,
      '--output',
      'json',
    ]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal((JSON.parse(ok.stdout) as View).chainsToAnchors, true);
    const other = await createRootCa({
      commonName: 'other.example',
      notBefore: systemClock.now() - HOUR,
      notAfter: systemClock.now() + DAY,
    });
    const otherFile = join(dir, 'other.pem');
    await writeFile(otherFile, other.certificatePem);
    const bad = await runMeshid([
      'identity',
      join(state.issuerDir, 'tls.crt'),
      '--trust-anchors',
      otherFile,
    ]);
    assert.equal(bad.code, 1);
    assert.match(
      bad.stdout,
      /^× does not chain to the current anchors from .*other\.pem: identity\.linkerd\.cluster\.local \(issued by root\.linkerd\.cluster\.local\) is not signed by any current anchor/m,
    );
  });

  it("a --config file's relative paths: its own folder's anchors, not the working directory's", async () => {
    // Two meshes' folders with the same file names, run from the other one (issue 22).
    const meshA = join(dir, 'mesh-a');
    const meshB = join(dir, 'mesh-b');
    await mkdir(meshA);
    await mkdir(meshB);
    await writeFile(join(meshA, 'anchors.pem'), state.root.certificatePem);
    await writeFile(join(meshA, 'identity.yaml'), 'trustAnchors: anchors.pem\noutput: json\n');
    const other = await createRootCa({
      commonName: 'other-mesh.example',
      notBefore: systemClock.now() - HOUR,
      notAfter: systemClock.now() + DAY,
    });
    await writeFile(join(meshB, 'anchors.pem'), other.certificatePem);
    const leaf = join(state.issuerDir, 'tls.crt');
    const r = await runMeshid(
      ['identity', leaf, '--config', join(meshA, 'identity.yaml')],
      {},
      meshB,
    );
    assert.equal(r.code, 0, r.stderr);
    const view = JSON.parse(r.stdout) as View;
    assert.equal(view.chainsToAnchors, true);
    // On the command line a relative path stays relative to the working directory.
    const cli = await runMeshid(['identity', leaf, '--trust-anchors', 'anchors.pem'], {}, meshB);
    assert.equal(cli.code, 1);
    assert.match(cli.stdout, /^× does not chain to the current anchors from anchors\.pem: /m);
  });

  it('a Secret through the API, with the anchors from the ConfigMap', async () => {
    const r = await runMeshid([
      'identity',
      '--secret',
      'linkerd/linkerd-identity-issuer',
      '--kubeconfig',
      kubeconfig,
      '--output',
      'json',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const v = JSON.parse(r.stdout) as View;
    assert.equal(v.source, 'Secret linkerd/linkerd-identity-issuer');
    assert.equal(v.certificates[0]!.isCa, true);
    assert.equal(v.chainsToAnchors, true);
    const missing = await runMeshid([
      'identity',
      '--secret',
      'linkerd/nope',
      '--kubeconfig',
      kubeconfig,
    ]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /Secret linkerd\/nope not found \[ERR_INSPECT_TARGET\]/);
  });

  it('bad input: no target, two targets, --secret without kubeconfig, an unreadable file', async () => {
    for (const [args, re] of [
      [[], /give exactly one of FILE, --secret NS\/NAME or --proxy ADMIN_ADDR/],
      [['a.pem', '--proxy', '127.0.0.1:1'], /give exactly one of FILE/],
      [
        ['--secret', 'linkerd/x'],
        /kubeconfig \(--kubeconfig, MESHID_KUBECONFIG\): is required with --secret/,
      ],
      [['--secret', 'no-slash'], /must be NAMESPACE\/NAME/],
    ] as const) {
      const r = await runMeshid(['identity', ...args]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re);
    }
    const r = await runMeshid(['identity', join(dir, 'missing.pem')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot read .*missing\.pem: ENOENT.*\[ERR_INSPECT_TARGET\]/);
  });

  it('version: client, Node, OpenSSL and FIPS; the server version from the CA admin; unreachable said plainly', async () => {
    const r = await runMeshid([
      'version',
      '--ca-admin',
      formatAddress(ca.admin),
      '--output',
      'json',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const v = JSON.parse(r.stdout) as {
      client: { version: string; node: string; openssl: string; fips: boolean };
      server: { version: { version: string } };
    };
    assert.equal(v.client.version, '0.1.0');
    assert.equal(v.client.node, process.version);
    assert.equal(v.client.openssl, process.versions.openssl);
    assert.equal(v.client.fips, false);
    assert.equal(v.server.version.version, '0.1.0');
    const port = await freePort();
    const t = await runMeshid(['version', '--ca-admin', `127.0.0.1:${port}`]);
    assert.equal(t.code, 0);
    assert.match(
      t.stdout,
      // The runtime the tests run on is the one meshid runs on (package.json's pinned node).
      new RegExp(
        `^Client: meshid 0\\.1\\.0 \\(Node\\.js ${process.version.replaceAll('.', '\\.')}, OpenSSL [^,]+, FIPS off\\)$`,
        'm',
      ),
    );
    assert.match(
      t.stdout,
      new RegExp(`^Server: unavailable at 127\\.0\\.0\\.1:${port}: connection refused$`, 'm'),
    );
  });
});
