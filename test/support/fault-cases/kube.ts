/**
 * Fault families against the Kubernetes API test server (a test double of kube-apiserver,
 * test/support/kube-api-server, reached through @kubernetes/client-node by the real `meshid ca`
 * process): the API server down and slow, in TokenReview mode and in cluster-JWKS mode
 * (`--jwks kubernetes`), and the issuer Secret corrupted mid-update. Shared by
 * test/reliability/faults-kube.test.ts and the default run's slice.
 */
import { strict as assert } from 'node:assert';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { systemClock } from '../../../core/index.js';
import { createIntermediateCa, createRootCa } from '../../../core/pki.js';
import type { GeneratedCa } from '../../../core/pki.js';
import { NO_RATE_LIMITS, adminGet, metricValue, startCaProcess, waitFor } from '../ca-process.js';
import type { CaProcess } from '../ca-process.js';
import { CertifyLoad, certifyOnce, countLoad, newTally } from '../fault-load.js';
import type { FaultTally } from '../fault-load.js';
import { issuerSecret } from '../issuer-secret.js';
import { startKubeApiServer } from '../kube-api-server/index.js';
import type { KubeApiServer, KubeObject } from '../kube-api-server/index.js';
import { DAY, HOUR, idOf } from '../state.js';
import { FakeClock } from './clock.js';
import { BAD_ISSUERS, badIssuerFiles } from './material.js';
import type { BadIssuer } from './material.js';

const NS = 'linkerd';
const SECRET = { namespace: NS, name: 'linkerd-identity-issuer' };
const UNAVAILABLE = 14;
const RESOURCE_EXHAUSTED = 8;
const WEB = idOf('emojivoto', 'web');
/** The CA's TokenReview deadline (identity-ca/token/token-review.ts, not configurable). */
export const TOKEN_REVIEW_TIMEOUT_MS = 5000;

/** How the CA validates tokens. */
export type TokenMode = 'tokenreview' | 'jwks';

/** The API server, the CA reading its issuer from it, and tokens for pods. */
export class KubeBench {
  api!: KubeApiServer;
  root!: GeneratedCa;
  issuer!: GeneratedCa;
  dir!: string;
  kubeconfig!: string;
  readonly cas: CaProcess[] = [];
  readonly tally: FaultTally = newTally();
  #pods = 0;

  async start(): Promise<void> {
    this.dir = await mkdtemp(join(tmpdir(), 'meshid-faults-kube-'));
    const now = systemClock.now();
    this.root = await createRootCa({
      commonName: 'root.linkerd.cluster.local',
      notBefore: now - HOUR,
      notAfter: now + 365 * DAY,
    });
    this.issuer = await this.newIssuer('identity.linkerd.cluster.local');
    this.api = await startKubeApiServer({ namespaces: [NS, 'emojivoto'] });
    this.api.create({
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: 'linkerd-identity-trust-roots', namespace: NS },
      data: { 'ca-bundle.crt': this.root.certificatePem },
    } as KubeObject);
    this.api.create(issuerSecret(SECRET, this.issuer, this.root));
    this.kubeconfig = join(this.dir, 'kubeconfig');
    await this.api.writeKubeconfig(this.kubeconfig);
  }

  async stop(): Promise<void> {
    for (const ca of this.cas) await ca.stop().catch(() => undefined);
    await this.api?.stop();
    if (this.dir !== undefined) await rm(this.dir, { recursive: true, force: true });
  }

  newIssuer(commonName: string): Promise<GeneratedCa> {
    const now = systemClock.now();
    return createIntermediateCa({
      issuer: this.root,
      commonName,
      notBefore: now - HOUR,
      notAfter: now + 30 * DAY,
      pathLength: 0,
    });
  }

  /** Starts a CA (one worker) validating tokens the given way; `args` are added. */
  async startCa(
    mode: TokenMode,
    args: readonly string[] = [],
    env: Record<string, string> = {},
  ): Promise<CaProcess> {
    const ca = await startCaProcess(
      [
        ...['--kubeconfig', this.kubeconfig, '--namespace', NS, '--workers', '1'],
        ...[
          '--issuer-secret',
          SECRET.name,
          '--trust-anchors-config-map',
          'linkerd-identity-trust-roots',
        ],
        ...(mode === 'jwks' ? ['--token-validator', 'jwks', '--jwks', 'kubernetes'] : []),
        ...NO_RATE_LIMITS,
        ...args,
      ],
      env,
    );
    this.cas.push(ca);
    return ca;
  }

  /** A token TokenRequest minted for a new running pod of emojivoto/web. */
  async podToken(): Promise<Buffer> {
    const pod = `web-${this.#pods++}`;
    this.api.createPod('emojivoto', pod, { serviceAccount: 'web' });
    const { token } = await this.api.mintToken({
      namespace: 'emojivoto',
      serviceAccount: 'web',
      pod,
      audiences: ['identity.l5d.io'],
    });
    return Buffer.from(token);
  }

  /** One Certify call for emojivoto/web. */
  certifyOnce(ca: CaProcess, token: Buffer): ReturnType<typeof certifyOnce> {
    return certifyOnce({
      ca: ca.address,
      anchorsPem: this.root.certificatePem,
      identity: WEB,
      token,
    });
  }

  load(ca: CaProcess, token: Buffer, callers = 2): CertifyLoad {
    return new CertifyLoad({
      ca: ca.address,
      anchorsPem: () => this.root.certificatePem,
      token: () => token,
      identity: WEB,
      callers,
      deadlineMs: 15_000,
    });
  }

  /**
   * The API server goes away (listener and connections closed) under Certify load, then comes
   * back on the same port. TokenReview mode (reviews not cached): every call while it is down
   * is UNAVAILABLE naming the failed TokenReview, none is issued; after it is back, calls are
   * issued again by the same process. JWKS mode: the keys fetched before keep validating, so no
   * call fails at all; a token signed by a key the CA has not seen gets no certificate while the
   * server is down, and is issued once it is back.
   */
  async apiDown(ca: CaProcess, mode: TokenMode): Promise<void> {
    const token = await this.podToken();
    const load = this.load(ca, token);
    await load.moreOk(4);
    const downAt = Date.now();
    await this.api.pause();
    this.tally.faults++;
    let unseenKey: Buffer | undefined;
    try {
      if (mode === 'tokenreview') {
        await waitFor('Certify refused while the API server is down', () =>
          load.endedBetween(downAt).filter((r) => r.code === UNAVAILABLE).length >= 10
            ? true
            : undefined,
        );
      } else {
        await load.moreOk(10);
        // A key rotation the CA could not have fetched: the API server is down.
        this.api.signingKeys.use(await this.api.signingKeys.add());
        unseenKey = await this.podToken();
        const r = await this.certifyOnce(ca, unseenKey);
        assert.notEqual(r.code, 0, 'no certificate for a token whose key cannot be fetched');
      }
    } finally {
      await this.api.resume();
    }
    const upAt = Date.now();
    await load.moreOk(6, 45_000);
    await load.stop();
    const down = load.records.filter((r) => r.start >= downAt && r.end < upAt);
    if (mode === 'tokenreview') {
      countLoad(this.tally, load, false);
      assert.equal(
        down.filter((r) => r.code === 0).length,
        0,
        'nothing issued while the API server is down',
      );
      const wrong = down.filter(
        (r) =>
          r.code !== UNAVAILABLE ||
          !/TokenReview at https:\/\/127\.0\.0\.1:\d+ failed/.test(r.detail),
      );
      assert.deepEqual(
        wrong.map((r) => `${r.code} ${r.detail}`),
        [],
        'UNAVAILABLE naming the failed TokenReview',
      );
      // Only the outage may fail: none after the server is back and answered.
      const lastFailure = Math.max(...load.failed.map((r) => r.end));
      assert.ok(
        load.records.some((r) => r.code === 0 && r.start > lastFailure),
        'issuing again without a restart',
      );
      this.tally.notes.push(`TokenReview down: ${down.length} calls UNAVAILABLE, 0 issued`);
    } else {
      countLoad(this.tally, load, true, 'cached JWKS keeps validating');
      await waitFor(
        "a token of the new key, once the keys can be fetched (jose's 30 s refetch cooldown)",
        async () => ((await this.certifyOnce(ca, unseenKey!)).code === 0 ? true : undefined),
        45_000,
      );
      this.tally.notes.push(`JWKS down: ${down.length} calls on cached keys, 0 failed`);
    }
    assert.equal(ca.proc.exitCode, null, 'no restart');
  }

  /**
   * How long cached keys last while the API server is down (JWKS mode): jose keeps a fetched key
   * set fresh for 10 minutes (its cacheMaxAge); after that it must fetch again. With the API server
   * down and the CA's clock (libfaketime) stepped 11 minutes ahead, Certify answers UNAVAILABLE
   * naming the JWKS, nothing is issued; with the server back, it issues again.
   */
  async apiDownStaleJwks(): Promise<void> {
    const dir = await mkdtemp(join(this.dir, 'clock-'));
    const clock = new FakeClock(dir, 'ca');
    await clock.set(0);
    const ca = await this.startCa('jwks', [], clock.env());
    const token = await this.podToken();
    assert.equal((await this.certifyOnce(ca, token)).code, 0);
    await this.api.pause();
    this.tally.faults++;
    try {
      const cached = await this.certifyOnce(ca, token);
      assert.equal(cached.code, 0, `fresh cache while down: ${cached.details}`);
      await clock.set(11 * 60);
      const stale = await waitFor('the stale key set to be refused', async () => {
        const r = await this.certifyOnce(ca, token);
        return r.code !== 0 ? r : undefined;
      });
      assert.equal(stale.code, UNAVAILABLE, stale.details);
      assert.match(
        stale.details,
        /JWKS at https:\/\/127\.0\.0\.1:\d+\/openid\/v1\/jwks could not be fetched/,
      );
    } finally {
      await this.api.resume();
    }
    await waitFor('issuing again once the keys can be fetched', async () =>
      (await this.certifyOnce(ca, token)).code === 0 ? true : undefined,
    );
    this.tally.requests += 4;
    this.tally.notes.push(
      'JWKS: cached keys valid 10 min after the last fetch, then UNAVAILABLE while down',
    );
  }

  /**
   * The API server answers slowly (later than the CA's deadline) under a burst of calls, each
   * with its own pod's token. TokenReview mode: every admitted call is UNAVAILABLE within the
   * deadline (plus its wait in the admission queue), the calls beyond the admission limits are
   * refused at once with RESOURCE_EXHAUSTED and a retry hint, and the API server never sees
   * more reviews than the CA admits (no pile-up). JWKS mode: calls on cached keys do not touch
   * the API server and none fails.
   */
  async apiSlow(
    ca: CaProcess,
    mode: TokenMode,
    limits: { inFlight: number; queue: number },
    burst: number,
  ): Promise<void> {
    const tokens = await Promise.all(Array.from({ length: burst }, () => this.podToken()));
    const delayMs = TOKEN_REVIEW_TIMEOUT_MS + 3000;
    this.tally.faults++;
    if (mode === 'jwks') {
      // The premise: the keys are cached (a case run alone has not fetched them yet).
      const warm = await this.certifyOnce(ca, tokens[0]!);
      assert.equal(warm.code, 0, warm.details);
      this.api.failNext({ path: '/openid/v1/jwks', delayMs, times: 1000 });
      const results = await Promise.all(tokens.map((t) => this.certifyOnce(ca, t)));
      this.api.clearFaults();
      this.tally.requests += results.length;
      const failed = results.filter((r) => r.code !== 0);
      this.tally.failedWhereNoneMay += failed.length;
      assert.deepEqual(
        failed.map((r) => `${r.code} ${r.details}`),
        [],
        'cached keys: none fails',
      );
      // A call that waited for the slow server would still be issued within its deadline.
      const waited = results.filter((r) => r.ms >= delayMs);
      assert.deepEqual(
        waited.map((r) => `${r.ms} ms`),
        [],
        `cached keys: no call waits for the ${delayMs} ms server`,
      );
      this.tally.notes.push(`JWKS slow: ${results.length} calls, 0 failed`);
      return;
    }
    let reviews = 0;
    const unsubscribe = this.api.onRequest((e) => {
      if (e.resource === 'tokenreviews') reviews++;
    });
    this.api.failNext({ path: /tokenreviews/, delayMs, times: burst });
    const start = Date.now();
    const results = await Promise.all(tokens.map((t) => this.certifyOnce(ca, t)));
    const took = Date.now() - start;
    this.api.clearFaults();
    // Reviews still stalled at the server are logged when they end.
    await waitFor(
      'the stalled reviews to end at the server',
      () => (reviews >= Math.min(burst, limits.inFlight + limits.queue) ? true : undefined),
      30_000,
    );
    unsubscribe();
    this.tally.requests += results.length;
    assert.equal(results.filter((r) => r.code === 0).length, 0, 'nothing issued without a review');
    const unavailable = results.filter((r) => r.code === UNAVAILABLE);
    const refused = results.filter((r) => r.code === RESOURCE_EXHAUSTED);
    assert.equal(
      unavailable.length + refused.length,
      burst,
      results.map((r) => `${r.code} ${r.details}`).join('; '),
    );
    for (const r of unavailable) assert.match(r.details, /TokenReview at .* failed/);
    for (const r of refused) assert.match(r.details, /retry after \d+ ms/);
    assert.ok(
      unavailable.length <= limits.inFlight + limits.queue,
      `${unavailable.length} admitted`,
    );
    assert.ok(
      reviews <= limits.inFlight + limits.queue,
      `the API server saw ${reviews} reviews for ${burst} calls`,
    );
    // Each admitted call waits at most for the reviews ahead of it: ceil(admitted / inFlight) deadlines.
    const rounds = Math.ceil(unavailable.length / limits.inFlight);
    const bound = rounds * TOKEN_REVIEW_TIMEOUT_MS + 3000;
    assert.ok(took <= bound, `all answered in ${took} ms (bound ${bound} ms)`);
    this.tally.notes.push(
      `TokenReview slow: ${burst} calls, ${unavailable.length} UNAVAILABLE after the ${TOKEN_REVIEW_TIMEOUT_MS} ms deadline, ${refused.length} RESOURCE_EXHAUSTED, ${reviews} reviews reached the API server, all answered in ${took} ms`,
    );
    // And it recovers without a restart.
    const after = await this.certifyOnce(ca, await this.podToken());
    assert.equal(after.code, 0, after.details);
  }

  async #rejected(ca: CaProcess): Promise<number> {
    return (
      metricValue((await adminGet(ca.admin, '/metrics')).body, 'meshid_issuer_updates_total', {
        result: 'rejected',
      }) || 0
    );
  }

  #events(reason: string): number {
    return this.api
      .list<KubeObject & { reason?: string; count?: number }>('v1', 'Event', NS)
      .filter((e) => e.reason === reason)
      .reduce((n, e) => n + (e.count ?? 1), 0);
  }

  #putSecret(files: Record<string, string>): void {
    const current = this.api.get({ apiVersion: 'v1', kind: 'Secret', ...SECRET })!;
    this.api.update({
      ...current,
      data: Object.fromEntries(
        Object.entries(files).map(([k, v]) => [k, Buffer.from(v).toString('base64')]),
      ),
    } as KubeObject);
  }

  /**
   * Writes a bad issuer Secret under Certify load: refused (metric, IssuerUpdateSkipped Event,
   * log), the last good issuer keeps issuing, no call fails.
   */
  async badSecret(ca: CaProcess, kind: BadIssuer): Promise<void> {
    const token = await this.podToken();
    const good = (await this.certifyOnce(ca, token)).issuer!;
    const rejected = await this.#rejected(ca);
    const skipped = this.#events('IssuerUpdateSkipped');
    const load = this.load(ca, token);
    await load.moreOk(4);
    this.#putSecret(
      await badIssuerFiles(
        { root: this.root, newIssuer: () => this.newIssuer('identity-bad') },
        kind,
      ),
    );
    this.tally.faults++;
    await waitFor('the CA to refuse the Secret', async () =>
      (await this.#rejected(ca)) > rejected ? true : undefined,
    );
    await waitFor('an IssuerUpdateSkipped Event', () =>
      this.#events('IssuerUpdateSkipped') > skipped ? true : undefined,
    );
    await load.moreOk(6);
    await load.stop();
    countLoad(this.tally, load, true);
    assert.equal((await this.certifyOnce(ca, token)).issuer, good, 'the last good issuer issues');
    assert.match(ca.lines.join('\n'), /keeping the last good issuer|refused/);
  }

  /** A good Secret after bad ones: picked up (IssuerUpdated Event), no call fails. */
  async goodSecret(ca: CaProcess): Promise<void> {
    const token = await this.podToken();
    const next = await this.newIssuer(`identity-${Date.now()}.linkerd.cluster.local`);
    const updated = this.#events('IssuerUpdated');
    const load = this.load(ca, token);
    await load.moreOk(4);
    this.#putSecret({
      'tls.crt': next.certificatePem,
      'tls.key': next.privateKeyPem,
      'ca.crt': this.root.certificatePem,
    });
    const hex = Buffer.from(next.certificateDer).toString('hex');
    await waitFor('the good issuer in use', async () =>
      (await this.certifyOnce(ca, token)).issuer === hex ? true : undefined,
    );
    await waitFor('an IssuerUpdated Event', () =>
      this.#events('IssuerUpdated') > updated ? true : undefined,
    );
    await load.moreOk(4);
    await load.stop();
    countLoad(this.tally, load, true);
    this.issuer = next;
  }
}

export { BAD_ISSUERS };
