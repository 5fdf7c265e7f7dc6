/**
 * The proxy's identity from a pod certificate's credential bundle file (the key, then the chain),
 * as the kubelet writes it (the `..data` swap): what is refused, and the reload.
 */
import { strict as assert } from 'node:assert';
import { generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger, isMeshidError } from '../../../core/index.js';
import { ManualClock } from '../../../core/clock.js';
import type { WorkloadCertificate } from '../../../proxy/index.js';
import { CredentialFileIdentity } from '../../../proxy/index.js';
import { parseCredentialBundle } from '../../../proxy/identity/credential-file.js';
import { makeTrustDomain } from '../../support/outbound-pki.js';
import type { TrustDomain } from '../../support/outbound-pki.js';
import { kubeletWrite } from '../../support/kubelet-volume.js';

const ID = 'web.emojivoto.serviceaccount.identity.linkerd.cluster.local';
const bundleOf = (c: WorkloadCertificate): string => c.keyPem + c.certChainPem;
const silent = createLogger({ level: 'silent' });

describe('proxy: identity from a pod certificate credential bundle', () => {
  let mesh: TrustDomain;
  let other: TrustDomain;
  before(async () => {
    mesh = await makeTrustDomain();
    other = await makeTrustDomain('another.root');
  });
  const parse = (text: string, anchorsPem = mesh.anchorsPem) =>
    parseCredentialBundle(Buffer.from(text), { localIdentity: ID, anchorsPem, now: Date.now() });
  const refused = (text: string, words: RegExp, anchorsPem?: string): void => {
    assert.throws(
      () => parse(text, anchorsPem),
      (err: unknown) =>
        isMeshidError(err, 'ERR_POD_CERTIFICATE_INVALID') && words.test((err as Error).message),
    );
  };

  it('takes the key and the chain of its own identity, chaining to the anchors', () => {
    const c = mesh.leaf(ID);
    const got = parse(bundleOf(c));
    assert.equal(got.identity, ID);
    assert.equal(got.serialHex, c.serialHex);
    assert.equal(got.certChainPem, c.certChainPem);
  });

  it('refuses another identity, another key, another mesh, an expired leaf, no key, two keys, a key after the chain', () => {
    const c = mesh.leaf(ID);
    refused(bundleOf(mesh.leaf(`x${ID}`)), /first name is DNS:x/);
    const stranger = generateKeyPairSync('ec', { namedCurve: 'P-256' })
      .privateKey.export({ type: 'pkcs8', format: 'pem' })
      .toString();
    refused(stranger + c.certChainPem, /not for the key this proxy holds/);
    refused(bundleOf(c), /does not lead to a trust anchor/, other.anchorsPem);
    refused(bundleOf(mesh.leaf(ID, { notAfter: Date.now() - 1000 })), /not valid now/);
    refused(c.certChainPem, /must hold one private key, first/);
    refused(c.keyPem + bundleOf(c), /found 2 keys/);
    refused(c.certChainPem + c.keyPem, /must hold one private key, first/);
    refused('garbage', /it is not PEM/);
  });

  it('follows the kubelet rewriting the file; a bad rewrite keeps the last good certificate', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'meshid-podcert-'));
    const clock = new ManualClock(Date.now());
    try {
      const first = mesh.leaf(ID);
      await kubeletWrite(dir, { 'credentialbundle.pem': bundleOf(first) });
      const identity = await CredentialFileIdentity.open({
        file: join(dir, 'credentialbundle.pem'),
        localIdentity: ID,
        anchorsPem: () => mesh.anchorsPem,
        clock,
        logger: silent,
      });
      try {
        assert.equal(identity.current()?.serialHex, first.serialHex);
        const second = mesh.leaf(ID);
        const changed = once(identity, 'certificate');
        await kubeletWrite(dir, { 'credentialbundle.pem': bundleOf(second) });
        assert.equal(((await changed)[0] as WorkloadCertificate).serialHex, second.serialHex);
        assert.equal(identity.current()?.serialHex, second.serialHex);
        const failed = once(identity, 'refreshFailed');
        await kubeletWrite(dir, { 'credentialbundle.pem': bundleOf(other.leaf(ID)) });
        assert.match(String((await failed)[0]), /does not lead to a trust anchor/);
        assert.equal(identity.current()?.serialHex, second.serialHex, 'the last good one');
        assert.equal(identity.stats.failures, 1);
        // Past its notAfter, nothing is presented (not ready) until the kubelet renews.
        clock.advance(second.notAfter - clock.now() + 1);
        assert.equal(identity.current(), undefined);
      } finally {
        identity.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a refused first file does not stop the proxy: not ready until a good one is written', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'meshid-podcert-'));
    try {
      await kubeletWrite(dir, { 'credentialbundle.pem': bundleOf(other.leaf(ID)) });
      const identity = await CredentialFileIdentity.open({
        file: join(dir, 'credentialbundle.pem'),
        localIdentity: ID,
        anchorsPem: () => mesh.anchorsPem,
        clock: new ManualClock(Date.now()),
        logger: silent,
      });
      try {
        assert.equal(identity.current(), undefined);
        const good = mesh.leaf(ID);
        const changed = once(identity, 'certificate');
        await kubeletWrite(dir, { 'credentialbundle.pem': bundleOf(good) });
        await changed;
        assert.equal(identity.current()?.serialHex, good.serialHex);
      } finally {
        identity.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
