import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  bundleFingerprint,
  isMeshidError,
  toPem,
  systemRandom,
  parseAnchors,
  parseCertificates,
} from '../../../core/index.js';
import { ManualClock } from '../../../core/clock.js';
import { silentLogger } from '../../../core/logger.js';
import type { AnchorBundle } from '../../../core/index.js';
import { createIntermediateCa, createRootCa } from '../../../core/pki.js';
import { initLocalState } from '../../../cli/init.js';
import {
  LocalRotationBackend,
  RotationController,
  readRotationStateFile,
} from '../../../trust-bundle/index.js';
import { STALE_LOCK_MS } from '../../../trust-bundle/local-backend.js';
import { anchorOfChain, assertAnchorsIssuer } from '../../../trust-bundle/lineage.js';
import type { CaObserver, ProxyObserver } from '../../../trust-bundle/index.js';
import type { CaObservation, ProxyObservation } from '../../../trust-bundle/rotation-observe.js';
import type { GeneratedPem } from '../../../trust-bundle/local-backend.js';
import { validateIssuer } from '../../../identity-ca/issuer/material.js';

const HOUR = 3_600_000;
const LEAF = 24 * HOUR;
const SKEW = 20_000;

/** A proxy whose report the test sets. */
class FakeProxies implements ProxyObserver {
  readonly description = 'test proxies';
  reports: ProxyObservation[] = [];
  observe(): Promise<ProxyObservation[]> {
    return Promise.resolve(this.reports);
  }
}

describe('trust-bundle: rotation controller (local mode)', function () {
  this.timeout(60_000);
  let dir: string;
  let clock: ManualClock;
  let proxies: FakeProxies;

  const createRoot = async (cn: string): Promise<GeneratedPem> =>
    createRootCa({
      commonName: cn,
      notBefore: clock.now() - 60_000,
      notAfter: clock.now() + 3650 * 24 * HOUR,
    });
  const createIssuer = async (root: GeneratedPem, cn: string): Promise<GeneratedPem> => {
    const { createPrivateKey } = await import('node:crypto');
    return createIntermediateCa({
      issuer: {
        certificateDer: new Uint8Array(
          Buffer.from(root.certificatePem.replace(/-----[^-]+-----|\s/g, ''), 'base64'),
        ),
        privateKey: createPrivateKey(root.privateKeyPem),
      },
      commonName: cn,
      notBefore: clock.now() - 60_000,
      notAfter: clock.now() + 365 * 24 * HOUR,
      pathLength: 0,
    });
  };
  const controller = (
    holder = 'test',
    caObserver?: CaObserver,
    backend = new LocalRotationBackend({ dir, createRoot, createIssuer }),
  ): RotationController =>
    new RotationController({
      ...(caObserver === undefined ? {} : { caObserver }),
      backend,
      observer: proxies,
      clock,
      random: systemRandom,
      logger: silentLogger(),
      leafLifetime: LEAF,
      clockSkew: SKEW,
      waitTimeout: HOUR,
      holder,
    });
  const files = async (): Promise<{ bundle: string; crt: string; key: string; ca: string }> => ({
    bundle: await readFile(join(dir, 'trust-anchors.pem'), 'utf8'),
    crt: await readFile(join(dir, 'issuer', 'tls.crt'), 'utf8'),
    key: await readFile(join(dir, 'issuer', 'tls.key'), 'utf8'),
    ca: await readFile(join(dir, 'issuer', 'ca.crt'), 'utf8'),
  });
  /** The CA's own check of the pair, as its file source would run it after each write. */
  const caAccepts = async (): Promise<void> => {
    const f = await files();
    await validateIssuer(
      { tlsCrt: f.crt, tlsKey: f.key, caCrt: f.ca },
      parseAnchors(f.bundle, { now: clock.now() }),
      clock.now(),
    );
  };

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshid-rotation-'));
    clock = new ManualClock(Date.now());
    proxies = new FakeProxies();
    await initLocalState({
      dir,
      force: false,
      trustDomain: 'cluster.local',
      controlPlaneNamespace: 'linkerd',
      now: clock.now(),
    });
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses to start when the live issuer is from another root, naming the files and the fingerprints (same names, told apart)', async () => {
    const other = await createRoot('root.linkerd.cluster.local');
    const foreign = await createIssuer(other, 'identity.linkerd.cluster.local');
    await writeFile(join(dir, 'issuer', 'tls.crt'), foreign.certificatePem);
    await writeFile(join(dir, 'issuer', 'ca.crt'), other.certificatePem);
    const fp = (pem: string): string =>
      parseCertificates(pem, 'ERR_INSPECT_TARGET')[0]!.fingerprint;
    const anchors = await readFile(join(dir, 'trust-anchors.pem'), 'utf8');
    await assert.rejects(controller().start(), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ERR_ROTATION_REFUSED');
      assert.ok(
        err.message.endsWith(
          `fix the issuer or the bundle first (${join(dir, 'issuer', 'tls.crt')} (+ ca.crt): identity.linkerd.cluster.local sha256 ${fp(foreign.certificatePem)}, issued by root.linkerd.cluster.local sha256 ${fp(other.certificatePem)}; ${join(dir, 'trust-anchors.pem')}: root.linkerd.cluster.local sha256 ${fp(anchors)})`,
        ),
        err.message,
      );
      return true;
    });
  });

  it('completes when the old root expires mid-way, between the switch and retire', async () => {
    // Root A lives 12 h: it expires while the rotation drains the leaves (24 h).
    const rootAExpiry = clock.now() + 12 * HOUR;
    const rootA = await createRootCa({
      commonName: 'short-root.linkerd.cluster.local',
      notBefore: clock.now() - 60_000,
      notAfter: rootAExpiry,
    });
    const issuerA = await createIntermediateCa({
      issuer: rootA,
      commonName: 'identity.linkerd.linkerd.cluster.local',
      notBefore: clock.now() - 60_000,
      notAfter: clock.now() + 12 * HOUR,
      pathLength: 0,
    });
    await writeFile(join(dir, 'trust-anchors.pem'), rootA.certificatePem);
    await writeFile(join(dir, 'issuer', 'tls.crt'), issuerA.certificatePem);
    await writeFile(join(dir, 'issuer', 'tls.key'), issuerA.privateKeyPem);
    await writeFile(join(dir, 'issuer', 'ca.crt'), rootA.certificatePem);
    const rc = controller();
    await rc.start();
    const phases: string[] = [];
    for (let i = 0; i < 12; i++) {
      const r = await rc.step();
      phases.push(r.state!.phase);
      if (r.state!.lastError !== undefined) assert.fail(r.state!.lastError);
      if (r.state!.phase === 'done') break;
      if (!r.advanced) clock.advance(LEAF + 2 * SKEW + 1);
    }
    assert.ok(clock.now() > rootAExpiry, 'root A expired before retire');
    assert.deepEqual(phases.slice(-2), ['retire', 'done']);
    const end = parseAnchors((await files()).bundle, { now: clock.now() });
    assert.equal(end.anchors.length, 1);
    assert.notEqual(end.pem, rootA.certificatePem, 'the new root, the old one retired');
    await caAccepts();
  });

  it('takes root A to root B through every phase, holding on each wait, the old root removed only at the end', async () => {
    const before = await files();
    const rootA = parseAnchors(before.bundle, { now: clock.now() }).anchors[0]!;
    const rc = controller();
    const started = await rc.start();
    assert.equal(started.phase, 'stage');
    assert.equal(started.oldRoot.fingerprint, rootA.fingerprint);

    let r = await rc.step();
    assert.equal(r.state?.phase, 'propagate');
    const staged = parseAnchors((await files()).bundle, { now: clock.now() });
    assert.equal(staged.anchors.length, 2, 'both roots in the bundle');
    assert.equal(staged.pem, (await files()).bundle, 'written in canonical form');
    assert.equal(r.state?.stagedBundleFingerprint, staged.fingerprint);
    await caAccepts();

    // A proxy still on the old bundle holds the rotation.
    proxies.reports = [
      { name: 'web', bundleFingerprint: 'old' },
      { name: 'voting', bundleFingerprint: staged.fingerprint },
    ];
    r = await rc.step();
    assert.equal(r.state?.phase, 'propagate');
    assert.equal(r.advanced, false);
    assert.equal(r.state?.waitingFor?.done, 1);
    assert.equal(r.state?.waitingFor?.total, 2);
    assert.match(r.state?.waitingFor?.description ?? '', /1 of 2 proxies .* \(waiting for web\)/);
    // Past the deadline it is reported overdue and still holds.
    clock.advance(2 * HOUR);
    r = await rc.step();
    assert.equal(r.state?.phase, 'propagate');
    assert.match(r.state?.waitingFor?.description ?? '', /^OVERDUE \(holding, never skipping\)/);

    proxies.reports = proxies.reports.map((p) => ({ ...p, bundleFingerprint: staged.fingerprint }));
    r = await rc.step();
    assert.equal(r.state?.phase, 'switch');
    assert.equal(parseAnchors((await files()).bundle, { now: clock.now() }).anchors.length, 2);

    r = await rc.step();
    assert.equal(r.state?.phase, 'drain');
    const afterSwitch = await files();
    const rootB = staged.anchors.find((a) => a.fingerprint !== rootA.fingerprint)!;
    assert.equal(anchorOfChain(afterSwitch.crt, [rootB])?.fingerprint, rootB.fingerprint);
    assert.notEqual(afterSwitch.key, before.key);
    await caAccepts();
    assert.deepEqual(
      (await readdir(join(dir, 'rotation'))).filter((f) => f.endsWith('.key')),
      [],
      "the new root's key is deleted once it has signed the issuer",
    );

    // Drain: the leaf lifetime bound and the proxies' renewal both hold it.
    proxies.reports = proxies.reports.map((p) => ({
      ...p,
      certNotBefore: clock.now() - SKEW - 1000,
    }));
    clock.advance(LEAF);
    r = await rc.step();
    assert.equal(r.state?.phase, 'drain');
    assert.match(
      r.state?.waitingFor?.description ?? '',
      /leaves issued before the switch to expire/,
    );
    clock.advance(2 * SKEW + 1);
    r = await rc.step();
    assert.equal(r.state?.phase, 'drain', 'proxies still hold pre-switch certificates');
    assert.match(
      r.state?.waitingFor?.description ?? '',
      /0 of 2 proxies hold a certificate from the new issuer/,
    );
    assert.equal(parseAnchors((await files()).bundle, { now: clock.now() }).anchors.length, 2);
    proxies.reports = proxies.reports.map((p) => ({ ...p, certNotBefore: clock.now() - SKEW }));
    r = await rc.step();
    assert.equal(r.state?.phase, 'retire');
    r = await rc.step();
    assert.equal(r.state?.phase, 'done');
    const end = parseAnchors((await files()).bundle, { now: clock.now() });
    assert.deepEqual(
      end.anchors.map((a) => a.fingerprint),
      [rootB.fingerprint],
    );
    await caAccepts();
    assert.deepEqual(
      r.state?.history.map((h) => h.phase),
      ['stage', 'propagate', 'switch', 'drain', 'retire', 'done'],
    );
    // Finished: a new rotation may start.
    assert.equal((await controller().start()).phase, 'stage');
  });

  it("counts a proxy whose file holds the staged anchors in another order (a kubelet's clusterTrustBundle file) as propagated, by the canonical fingerprint it reports", async () => {
    const rc = controller();
    await rc.start();
    await rc.step();
    const staged = parseAnchors((await files()).bundle, { now: clock.now() });
    // What a kubelet writes: the same anchors, the other way round. What the proxy reports for it.
    const shuffled = [...staged.anchors]
      .reverse()
      .map((a) => toPem(a.der, 'CERTIFICATE'))
      .join('');
    const loaded = parseAnchors(shuffled, { now: clock.now() });
    assert.notEqual(loaded.fingerprint, staged.fingerprint, 'not the same text');
    const report = (name: string, b: AnchorBundle): ProxyObservation => ({
      name,
      bundleFingerprint: b.fingerprint,
      canonicalFingerprint: bundleFingerprint(b.pem),
    });
    const old = parseAnchors(toPem(staged.anchors[0]!.der, 'CERTIFICATE'), { now: clock.now() });
    proxies.reports = [report('web', loaded), report('voting', old)];
    let r = await rc.step();
    assert.equal(r.state?.phase, 'propagate');
    assert.match(
      r.state?.waitingFor?.description ?? '',
      /1 of 2 proxies .* \(waiting for voting\)$/,
    );
    proxies.reports = [report('web', loaded), report('voting', loaded)];
    r = await rc.step();
    assert.equal(r.state?.phase, 'switch');
  });

  it('completes the switch only when every CA replica serves from the new issuer', async () => {
    const before = await files();
    let served: CaObservation[] = [{ name: 'ca-0', chainPem: before.crt + before.ca }];
    const cas: CaObserver = { description: 'test CAs', observe: () => Promise.resolve(served) };
    const rc = controller('test', cas);
    await rc.start();
    await rc.step(); // propagate
    await rc.step(); // switch
    let r = await rc.step();
    assert.equal(r.state?.phase, 'switch', 'the CA still serves from the old issuer');
    assert.match(
      r.state?.waitingFor?.description ?? '',
      /^0 of 1 CA replicas serve from the new issuer \(waiting for ca-0\)/,
    );
    const after = await files();
    served = [
      { name: 'ca-0', chainPem: after.crt + after.ca },
      { name: 'ca-1', error: 'connect ECONNREFUSED' },
    ];
    r = await rc.step();
    assert.equal(r.state?.phase, 'switch');
    assert.match(
      r.state?.waitingFor?.description ?? '',
      /1 of 2 CA replicas .*ca-1: connect ECONNREFUSED/,
    );
    served = [served[0]!];
    r = await rc.step();
    assert.equal(r.state?.phase, 'drain');
  });

  it('resumes where it stopped with a new controller (a restart), and pause holds every step', async () => {
    await controller('first').start();
    await controller('first').step();
    assert.equal((await readRotationStateFile(dir))?.phase, 'propagate');
    const second = controller('second');
    await second.setPaused(true);
    assert.equal((await second.step()).advanced, false);
    assert.equal((await readRotationStateFile(dir))?.phase, 'propagate');
    await second.setPaused(false);
    const r = await second.step();
    assert.equal(r.state?.phase, 'switch', 'no proxies observed: nothing to wait for');
    assert.equal(r.state?.holder, 'second');
  });

  it('lets two controllers race without doing a step twice', async () => {
    await controller('a').start();
    const results = await Promise.all([controller('a').step(), controller('b').step()]);
    assert.deepEqual(
      results.map((r) => r.state?.lastError),
      [undefined, undefined],
    );
    const state = await readRotationStateFile(dir);
    assert.equal(state?.phase, 'propagate');
    assert.deepEqual(
      state?.history.map((h) => h.phase),
      ['stage', 'propagate'],
    );
    assert.equal(parseAnchors((await files()).bundle, { now: clock.now() }).anchors.length, 2);
    assert.equal(
      (await readdir(join(dir, 'rotation'))).filter((f) => f.endsWith('.crt')).length,
      1,
    );
  });

  describe('the lock file a controller killed while writing leaves behind', () => {
    const lock = (): string => join(dir, 'rotation.lock');
    const backend = (o: { now?: () => number; lockWaitMs?: number } = {}): LocalRotationBackend =>
      new LocalRotationBackend({ dir, createRoot, createIssuer, ...o });
    const rotateWith = (b: LocalRotationBackend): RotationController =>
      controller('test', undefined, b);
    /** The pid of a process that has exited. */
    const deadPid = (): number => {
      const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], {
        encoding: 'utf8',
      });
      return Number(r.stdout);
    };
    const holder = (pid: number, host = hostname()): string =>
      JSON.stringify({ pid, host, at: new Date().toISOString() });

    it('is removed when its process is gone, and the write goes ahead (the lock released after)', async () => {
      await writeFile(lock(), holder(deadPid()));
      const started = await rotateWith(backend()).start();
      assert.equal((await readRotationStateFile(dir))?.id, started.id);
      assert.equal(existsSync(lock()), false);
    });

    it('is waited on while its holder lives, then reported naming the holder, and nothing is written', async () => {
      await writeFile(lock(), holder(process.pid));
      await assert.rejects(
        rotateWith(backend({ lockWaitMs: 100 })).start(),
        (err: Error) =>
          isMeshidError(err, 'ERR_LOCAL_STATE') &&
          err.message.includes(`rotation.lock is held by pid ${process.pid} on ${hostname()}`) &&
          err.message.includes('remove the file if none runs'),
      );
      assert.equal(await readRotationStateFile(dir), undefined);
      assert.equal(existsSync(lock()), true, "a live holder's lock is left alone");
    });

    it('is taken over when older than any write takes, whoever holds it (another host, an empty file)', async () => {
      await rotateWith(backend()).start();
      const later = (): number => Date.now() + STALE_LOCK_MS + 5_000;
      for (const [text, who] of [
        [holder(process.pid, 'another-host'), `pid ${process.pid} on another-host`],
        ['', 'an unknown controller'],
      ]) {
        await writeFile(lock(), text!);
        await assert.rejects(
          rotateWith(backend({ lockWaitMs: 50 })).setPaused(true),
          (err: Error) =>
            isMeshidError(err, 'ERR_LOCAL_STATE') && err.message.includes(`is held by ${who!}`),
        );
        assert.equal((await readRotationStateFile(dir))?.paused, false, 'nothing written');
        await rotateWith(backend({ now: later })).setPaused(true);
        assert.equal((await readRotationStateFile(dir))?.paused, true);
        assert.equal(existsSync(lock()), false);
        await rotateWith(backend()).setPaused(false);
      }
    });

    it('keeps a controller whose writes meet a live lock holding with the reason, not spinning', async () => {
      await rotateWith(backend()).start();
      await writeFile(lock(), holder(process.pid));
      const r = await rotateWith(backend({ lockWaitMs: 50 })).step();
      assert.equal(r.advanced, false);
      assert.match(r.state?.lastError ?? '', /rotation\.lock is held by pid/);
      assert.equal((await readRotationStateFile(dir))?.phase, 'stage');
    });
  });

  it('rolls back from propagate (the staged root leaves), and refuses to roll back after the switch', async () => {
    const original = (await files()).bundle;
    const rc = controller();
    await rc.start();
    await rc.step();
    const back = await rc.rollback();
    assert.equal(back.phase, 'rolled-back');
    assert.equal((await files()).bundle, original);
    assert.deepEqual(await readdir(join(dir, 'rotation')), []);
    await caAccepts();

    await rc.start();
    await rc.step(); // propagate
    await rc.step(); // switch
    await rc.step(); // drain
    assert.equal((await readRotationStateFile(dir))?.phase, 'drain');
    await assert.rejects(
      rc.rollback(),
      (e) =>
        isMeshidError(e, 'ERR_ROTATION_REFUSED') &&
        /refusing to roll back from phase drain: .*leave the issuer unanchored/.test(e.message),
    );
  });

  it('refuses to start a second rotation, or one that would leave the issuer unanchored', async () => {
    const rc = controller();
    await rc.start();
    await assert.rejects(
      rc.start(),
      (e) =>
        isMeshidError(e, 'ERR_ROTATION_REFUSED') &&
        /already in progress, in phase stage/.test(e.message),
    );
    await rc.rollback();
    // Someone replaced the bundle with an unrelated root: the issuer no longer chains to it.
    const other = await createRootCa({
      commonName: 'other',
      notBefore: clock.now() - 1000,
      notAfter: clock.now() + HOUR * 1000,
    });
    await writeFile(join(dir, 'trust-anchors.pem'), other.certificatePem);
    await assert.rejects(
      rc.start(),
      (e) =>
        isMeshidError(e, 'ERR_ROTATION_REFUSED') &&
        /the live issuer "CN=identity\.linkerd\.cluster\.local" does not chain to any anchor .* leave it unanchored/.test(
          e.message,
        ),
    );
  });

  it("refuses a bundle update that removes the live issuer's anchor", async () => {
    const f = await files();
    const other = await createRootCa({
      commonName: 'other',
      notBefore: clock.now() - 1000,
      notAfter: clock.now() + HOUR * 1000,
    });
    const next = parseAnchors(other.certificatePem, { now: clock.now() });
    assert.throws(
      () => assertAnchorsIssuer(next, f.crt),
      (e: unknown) =>
        isMeshidError(e, 'ERR_ROTATION_REFUSED') &&
        /does not anchor the live issuer "CN=identity\.linkerd\.cluster\.local"/.test(e.message),
    );
    assert.equal(
      assertAnchorsIssuer(
        parseAnchors(f.bundle + other.certificatePem, { now: clock.now() }),
        f.crt,
      ).subject,
      'CN=root.linkerd.cluster.local',
    );
    assert.equal(existsSync(join(dir, 'rotation.json')), false);
  });
});
