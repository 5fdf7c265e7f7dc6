/**
 * Fault family: bad issuer material and bad anchor bundles written under load, in file mode (a
 * kubelet-style `..data` swap for the issuer folder, renames for the anchors): the CA and the
 * proxies refuse them, keep the last good material, fail no call, count and log the refusal, and
 * take the next good update. Shared by test/reliability/faults-material.test.ts and the slice.
 */
import { strict as assert } from 'node:assert';
import type { ProxyIdentityReport } from '../../../core/index.js';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { systemClock } from '../../../core/index.js';
import { createIntermediateCa, createRootCa } from '../../../core/pki.js';
import type { GeneratedCa } from '../../../core/pki.js';
import { NO_RATE_LIMITS, adminGet, metricValue, startCaProcess, waitFor } from '../ca-process.js';
import { CertifyLoad, certifyOnce, countLoad, MeshBench, startMeshPair } from '../fault-load.js';
import type { TrafficLoad } from '../fault-load.js';
import type { ProxyProcess } from '../proxy-process.js';
import { DAY, HOUR, idOf, makeTestState, writeIssuerDir } from '../state.js';
import type { TestState } from '../state.js';

const LOADER = idOf('emojivoto', 'loader');

/** Bad issuer folders, each as a partial or mistaken update would leave it. */
export const BAD_ISSUERS = [
  'a certificate with the key of another issuer (cert updated, key not yet)',
  'a truncated certificate PEM',
  'a certificate that is not a CA',
  'a key that is not PEM',
] as const;
export type BadIssuer = (typeof BAD_ISSUERS)[number];

/** Bad anchor bundles. */
export const BAD_ANCHORS = [
  'bytes that are not PEM',
  'a truncated PEM',
  'an empty file',
  'a certificate that is not a CA',
] as const;
export type BadAnchors = (typeof BAD_ANCHORS)[number];

/** Words the refusal of each bad issuer is logged with. */
const ISSUER_WORDS: Record<BadIssuer, RegExp> = {
  'a certificate with the key of another issuer (cert updated, key not yet)':
    /private key does not match/,
  'a truncated certificate PEM': /PEM|certificate/i,
  'a certificate that is not a CA': /not a CA/i,
  'a key that is not PEM': /key/i,
};

/** A certificate (PEM) that is not a CA, under `root`. */
async function notACa(root: GeneratedCa, commonName: string): Promise<GeneratedCa> {
  const now = systemClock.now();
  return createIntermediateCa({
    issuer: root,
    commonName,
    notBefore: now - HOUR,
    notAfter: now + DAY,
    isCa: false,
  });
}

/** The issuer files a bad update of the given kind leaves (for a folder or a Secret). */
export async function badIssuerFiles(
  state: Pick<TestState, 'root' | 'newIssuer'>,
  kind: BadIssuer,
): Promise<{ 'tls.crt': string; 'tls.key': string; 'ca.crt': string }> {
  const next = await state.newIssuer({ commonName: 'identity-bad.linkerd.cluster.local' });
  const files = {
    'tls.crt': next.certificatePem,
    'tls.key': next.privateKeyPem,
    'ca.crt': state.root.certificatePem,
  };
  switch (kind) {
    case 'a certificate with the key of another issuer (cert updated, key not yet)':
      return { ...files, 'tls.key': (await state.newIssuer()).privateKeyPem };
    case 'a truncated certificate PEM':
      return { ...files, 'tls.crt': next.certificatePem.slice(0, next.certificatePem.length / 2) };
    case 'a certificate that is not a CA': {
      const leaf = await notACa(state.root, 'identity-not-ca.linkerd.cluster.local');
      return { ...files, 'tls.crt': leaf.certificatePem, 'tls.key': leaf.privateKeyPem };
    }
    case 'a key that is not PEM':
      return { ...files, 'tls.key': 'this is not a key\n' };
  }
}

/** The text of a bad anchors bundle. */
export async function badAnchorsText(good: string, kind: BadAnchors): Promise<string> {
  switch (kind) {
    case 'bytes that are not PEM':
      return '\u0000\u00ff garbage \u0001 not a certificate bundle\n';
    case 'a truncated PEM':
      return good.slice(0, Math.floor(good.length / 2));
    case 'an empty file':
      return '';
    case 'a certificate that is not a CA': {
      const now = systemClock.now();
      const root = await createRootCa({
        commonName: 'scratch-root',
        notBefore: now - HOUR,
        notAfter: now + DAY,
      });
      return (await notACa(root, 'not-an-anchor')).certificatePem;
    }
  }
}

/** Replaces a file atomically (as a ConfigMap mount or an editor's rename does). */
export async function replaceFile(file: string, text: string): Promise<void> {
  await writeFile(`${file}.tmp`, text);
  await rename(`${file}.tmp`, file);
}

/** The CA (two workers, file mode), two proxies, and the probes the cases use. */
export class MaterialBench extends MeshBench {
  #token!: Buffer;
  readonly #refused = { issuer: 0, caAnchors: 0, proxyAnchors: 0 };

  #refusal(what: 'issuer' | 'caAnchors' | 'proxyAnchors'): void {
    this.#refused[what]++;
    const r = this.#refused;
    this.tally.notes[0] = `refused, last good kept: ${r.issuer} issuer folders, ${r.caAnchors} CA anchor files, ${r.proxyAnchors} proxy anchor files`;
  }

  override async start(): Promise<void> {
    this.state = await makeTestState();
    this.ca = await startCaProcess([...this.state.caArgs, '--workers', '2', ...NO_RATE_LIMITS]);
    this.mesh = await startMeshPair({ state: this.state, ca: `127.0.0.1:${this.ca.address.port}` });
    this.#token = Buffer.from(await this.state.token('emojivoto', 'loader', { ttlMs: 2 * HOUR }));
  }

  async #anchorsPem(): Promise<string> {
    return readFile(this.state.anchorsFile, 'utf8');
  }

  /** Issuer (hex DER of the first intermediate) of leaves from `n` new connections. */
  async issuersOfNewLeaves(n = 4): Promise<Set<string>> {
    const seen = new Set<string>();
    for (let i = 0; i < n; i++) {
      const r = await certifyOnce({
        ca: this.ca.address,
        anchorsPem: this.state.root.certificatePem,
        identity: LOADER,
        token: this.#token,
      });
      assert.equal(r.code, 0, r.details);
      seen.add(r.issuer!);
    }
    return seen;
  }

  async #caUpdates(result: 'accepted' | 'rejected'): Promise<number> {
    return (
      metricValue((await adminGet(this.ca.admin, '/metrics')).body, 'meshid_issuer_updates_total', {
        result,
      }) || 0
    );
  }

  async #proxyReloads(p: ProxyProcess, result: 'accepted' | 'rejected'): Promise<number> {
    return (
      metricValue(
        (await adminGet(p.admin, '/metrics')).body,
        'meshid_proxy_trust_anchors_reloads_total',
        { result },
      ) || 0
    );
  }

  #certifyLoad(callers: number): CertifyLoad {
    const anchorsPem = this.state.root.certificatePem;
    return new CertifyLoad({
      ca: this.ca.address,
      anchorsPem: () => anchorsPem,
      token: () => this.#token,
      identity: LOADER,
      callers,
    });
  }

  #account(loads: readonly (CertifyLoad | TrafficLoad)[]): void {
    for (const l of loads) countLoad(this.tally, l, true);
  }

  /**
   * Writes a bad issuer folder under load. Asserts: both workers refuse it (counted), the refusal
   * is logged with its reason, the last good issuer keeps issuing, no Certify call fails.
   */
  async badIssuer(kind: BadIssuer, callers = 3): Promise<void> {
    const [current] = [...(await this.issuersOfNewLeaves(1))];
    const before = await this.#caUpdates('rejected');
    const lines = this.ca.lines.length;
    const load = this.#certifyLoad(callers);
    await load.moreOk(callers * 2);
    await writeIssuerDir(this.state.issuerDir, await badIssuerFiles(this.state, kind));
    this.tally.faults++;
    await waitFor(`both workers to refuse ${kind}`, async () =>
      (await this.#caUpdates('rejected')) >= before + 2 ? true : undefined,
    );
    await load.moreOk(callers * 4);
    await load.stop();
    this.#account([load]);
    assert.deepEqual(
      [...(await this.issuersOfNewLeaves())],
      [current],
      'the last good issuer issues',
    );
    const logged = this.ca.lines
      .slice(lines)
      .filter((l) => l.includes('refused') || l.includes('rejected'));
    assert.ok(
      logged.some((l) => ISSUER_WORDS[kind].test(l)),
      `the refusal is logged with its reason: ${logged.slice(0, 3).join('\n')}`,
    );
    assert.equal((await adminGet(this.ca.admin, '/ready')).status, 200, 'still ready');
    this.#refusal('issuer');
  }

  /** A good issuer after bad ones: taken by both workers without a failed call. */
  async goodIssuer(callers = 3): Promise<void> {
    const next = await this.state.newIssuer({
      commonName: `identity-${Date.now()}.linkerd.cluster.local`,
    });
    const load = this.#certifyLoad(callers);
    await load.moreOk(callers);
    await this.state.installIssuer(next);
    const hex = Buffer.from(next.certificateDer).toString('hex');
    await waitFor('both workers on the good issuer', async () => {
      const seen = await this.issuersOfNewLeaves();
      return seen.size === 1 && seen.has(hex) ? true : undefined;
    });
    await load.stop();
    this.#account([load]);
  }

  /**
   * Replaces the CA's anchors file by a bad one under load: both workers refuse it, Certify
   * never fails, the issuer is unchanged; the good file back is accepted.
   */
  async badCaAnchors(kind: BadAnchors, callers = 3): Promise<void> {
    const good = await this.#anchorsPem();
    const [current] = [...(await this.issuersOfNewLeaves(1))];
    const rejected = await this.#caUpdates('rejected');
    const load = this.#certifyLoad(callers);
    await load.moreOk(callers * 2);
    await replaceFile(this.state.anchorsFile, await badAnchorsText(good, kind));
    this.tally.faults++;
    await waitFor(`both workers to refuse anchors: ${kind}`, async () =>
      (await this.#caUpdates('rejected')) >= rejected + 2 ? true : undefined,
    );
    await load.moreOk(callers * 4);
    // The same bundle again is no change; the good one plus one more root is.
    const accepted = await this.#caUpdates('accepted');
    const now = systemClock.now();
    const extra = await createRootCa({
      commonName: `root-extra-${now}`,
      notBefore: now - HOUR,
      notAfter: now + DAY,
    });
    await replaceFile(this.state.anchorsFile, good + extra.certificatePem);
    await waitFor('both workers to take the good anchors again', async () =>
      (await this.#caUpdates('accepted')) >= accepted + 2 ? true : undefined,
    );
    await load.moreOk(callers * 2);
    await load.stop();
    this.#account([load]);
    assert.deepEqual([...(await this.issuersOfNewLeaves())], [current]);
    this.#refusal('caAnchors');
  }

  /**
   * Replaces the proxies' anchors file by a bad one under mTLS traffic (new handshakes and
   * keep-alive): both proxies refuse it (counted), keep the bundle they have (same fingerprint),
   * fail no request; a later good file (with one more root) is picked up.
   */
  async badProxyAnchors(kind: BadAnchors): Promise<void> {
    const { web, voting, anchorsFile } = this.mesh;
    const good = await readFile(anchorsFile, 'utf8');
    const fingerprint = async (p: ProxyProcess): Promise<string> =>
      (
        JSON.parse((await adminGet(p.admin, '/identity')).body) as {
          trustAnchors: { fingerprint: string };
        }
      ).trustAnchors.fingerprint;
    const prints = [await fingerprint(web), await fingerprint(voting)];
    const rejected = [
      await this.#proxyReloads(web, 'rejected'),
      await this.#proxyReloads(voting, 'rejected'),
    ];
    const handshakesFailed = async (): Promise<number> =>
      (await this.#handshakesFailed(web)) + (await this.#handshakesFailed(voting));
    const failedBefore = await handshakesFailed();
    const traffic = this.traffic(2);
    await traffic.moreOk(50);
    await replaceFile(anchorsFile, await badAnchorsText(good, kind));
    this.tally.faults++;
    await waitFor(`both proxies to refuse anchors: ${kind}`, async () =>
      (await this.#proxyReloads(web, 'rejected')) > rejected[0]! &&
      (await this.#proxyReloads(voting, 'rejected')) > rejected[1]!
        ? true
        : undefined,
    );
    await traffic.moreOk(100);
    assert.deepEqual(
      [await fingerprint(web), await fingerprint(voting)],
      prints,
      'last good bundle in use',
    );
    assert.match(web.lines.join('\n'), /new trust anchors refused; keeping the last good bundle/);
    // A good bundle, with one more root, is picked up.
    const now = systemClock.now();
    const extra = await createRootCa({
      commonName: `root-extra-${now}`,
      notBefore: now - HOUR,
      notAfter: now + DAY,
    });
    await replaceFile(anchorsFile, good + extra.certificatePem);
    for (const p of [web, voting])
      await waitFor('the good bundle in use', async () =>
        (
          JSON.parse((await adminGet(p.admin, '/identity')).body) as ProxyIdentityReport
        ).trustAnchors.subjects.includes(`CN=root-extra-${now}`)
          ? true
          : undefined,
      );
    await traffic.moreOk(50);
    await traffic.stop();
    this.#account([traffic]);
    assert.equal(
      await handshakesFailed(),
      failedBefore,
      'no failed mTLS handshake in either proxy',
    );
    this.#refusal('proxyAnchors');
  }

  async #handshakesFailed(p: ProxyProcess): Promise<number> {
    return (
      metricValue((await adminGet(p.admin, '/metrics')).body, 'meshid_proxy_tls_handshakes_total', {
        result: 'failed',
      }) || 0
    );
  }
}
