/**
 * Fault family: wall-clock jumps in the real processes. The CA and the proxies run under
 * libfaketime (Debian's `faketime` package, LD_PRELOAD), each group reading its offset from a
 * file the test rewrites, so the jump is seen by everything in the process: Date.now, the token
 * and certificate checks, and OpenSSL's own validity checks in the TLS handshakes. The monotonic
 * clock is not faked (FAKETIME_DONT_FAKE_MONOTONIC), as a real wall-clock step (NTP, a resumed
 * VM) leaves it alone, so timers keep running. This is a test-only seam of the environment; the
 * product has no clock setting. Shared by test/reliability/faults-clock.test.ts and the slice.
 */
import { strict as assert } from 'node:assert';
import { existsSync } from 'node:fs';
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { NO_RATE_LIMITS, adminGet, startCaProcess, waitFor } from '../ca-process.js';
import { certifyOnce, countLoad, MeshBench, startMeshPair } from '../fault-load.js';
import type { TrafficLoad } from '../fault-load.js';
import type { ProxyProcess } from '../proxy-process.js';
import { HOUR, idOf, makeTestState } from '../state.js';

const LIBFAKETIME = [
  '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1',
  '/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1',
  '/usr/lib/faketime/libfaketime.so.1',
];

/** The libfaketime library; fails (never skips) when it is not installed. */
export function libfaketime(): string {
  const lib = LIBFAKETIME.find((p) => existsSync(p));
  assert.ok(
    lib !== undefined,
    'libfaketime is not installed (apt-get install faketime; .ci/run does)',
  );
  return lib;
}

/** A clock offset file and the environment that makes a process read it. */
export class FakeClock {
  readonly file: string;
  #offsetS = 0;
  constructor(dir: string, name: string) {
    this.file = join(dir, `${name}.faketime`);
  }
  env(): Record<string, string> {
    return {
      LD_PRELOAD: libfaketime(),
      FAKETIME_TIMESTAMP_FILE: this.file,
      // The file is read on every clock read: every process sees a jump at once, as on one
      // machine (with a cache, the two proxies would disagree for up to the cache's life).
      FAKETIME_NO_CACHE: '1',
      FAKETIME_DONT_FAKE_MONOTONIC: '1',
    };
  }
  get offsetS(): number {
    return this.#offsetS;
  }
  /** Sets the offset from real time, in seconds (positive: ahead). */
  async set(offsetS: number): Promise<void> {
    this.#offsetS = offsetS;
    // Atomically: a process reading a half-written file would see no offset at all.
    await writeFile(`${this.file}.tmp`, `${offsetS >= 0 ? '+' : ''}${offsetS}\n`);
    await rename(`${this.file}.tmp`, this.file);
  }
}

/** The CA and two proxies under libfaketime, leaves of one hour, traffic through them. */
export class ClockBench extends MeshBench {
  caClock!: FakeClock;
  proxyClock!: FakeClock;

  override async start(): Promise<void> {
    this.state = await makeTestState();
    this.caClock = new FakeClock(this.state.dir, 'ca');
    this.proxyClock = new FakeClock(this.state.dir, 'proxies');
    await this.caClock.set(0);
    await this.proxyClock.set(0);
    this.ca = await startCaProcess(
      [...this.state.caArgs, '--workers', '1', '--cert-lifetime', '1h', ...NO_RATE_LIMITS],
      this.caClock.env(),
    );
    this.mesh = await startMeshPair({
      state: this.state,
      ca: `127.0.0.1:${this.ca.address.port}`,
      env: this.proxyClock.env(),
    });
    // Tokens that outlive every jump here (the proxies read the file on every request).
    for (const sa of ['web', 'voting'])
      await writeFile(
        join(this.state.dir, `${sa}-token`),
        await this.state.token('emojivoto', sa, { ttlMs: 48 * HOUR }),
      );
  }

  /** Moves both clocks (the machine's clock stepping) to `offsetS`. */
  async jumpAll(offsetS: number): Promise<void> {
    await Promise.all([this.caClock.set(offsetS), this.proxyClock.set(offsetS)]);
    this.tally.faults++;
  }

  #account(load: TrafficLoad, noneMayFail: boolean): void {
    countLoad(this.tally, load, noneMayFail, 'proxied requests');
  }

  async #renewedSince(base: { web: number; voting: number }, timeoutMs = 20_000): Promise<void> {
    for (const [p, n] of [
      [this.mesh.web, base.web],
      [this.mesh.voting, base.voting],
    ] as const)
      await waitFor(
        'the proxy to renew',
        async () => ((await this.mesh.refreshes(p)) > n ? true : undefined),
        timeoutMs,
      );
  }

  /**
   * Both clocks jump forward past the renewal time (70 % of a 1 h leaf) but not past expiry:
   * both proxies renew within seconds although their (monotonic) renewal timers are ~40 min
   * away, and no request fails. Returns the seconds until both had renewed.
   */
  async forwardPastRenewal(offsetS: number): Promise<number> {
    const load = this.traffic();
    await load.moreOk(30);
    const base = await this.refreshCounts();
    const at = Date.now();
    await this.jumpAll(offsetS);
    await this.#renewedSince(base);
    const took = (Date.now() - at) / 1000;
    await load.moreOk(50);
    await load.stop();
    this.#account(load, true);
    assert.match(this.mesh.web.lines.join('\n'), /certificate refresh is due by the clock/);
    this.tally.notes.push(`+${offsetS} s: both proxies renewed in ${took.toFixed(1)} s`);
    return took;
  }

  /**
   * The proxies' clock jumps past their certificate's expiry while the CA's does not: each proxy
   * says its certificate expired, reports not ready and carries no request with it; its renewals
   * fail (the CA's certificate and any leaf it issues are expired on the proxy's clock). With its
   * clock back in line it serves again.
   */
  async proxiesPastExpiry(aheadS: number): Promise<void> {
    const back = this.proxyClock.offsetS;
    const load = this.traffic();
    await load.moreOk(30);
    await this.proxyClock.set(back + aheadS);
    this.tally.faults++;
    const notReady = async (p: ProxyProcess): Promise<boolean> =>
      (await adminGet(p.admin, '/ready')).status !== 200;
    await waitFor('both proxies to be not ready', async () =>
      (await notReady(this.mesh.web)) && (await notReady(this.mesh.voting)) ? true : undefined,
    );
    const failedAt = Date.now();
    await waitFor('requests to be refused', () =>
      load.endedBetween(failedAt).some((r) => r.code !== 0) ? true : undefined,
    );
    for (const p of [this.mesh.web, this.mesh.voting]) {
      await waitFor(`${p.identity} to say its certificate expired`, () =>
        p.lines.some((l) => l.includes('certificate expired; not ready')) ? true : undefined,
      );
      await waitFor(`${p.identity}'s renewal to be refused by its own check`, () =>
        p.lines.some((l) => /certificate refresh failed/.test(l) && /not valid now|expired/.test(l))
          ? true
          : undefined,
      );
    }
    const refused = load.endedBetween(failedAt).filter((r) => r.code !== 0).length;
    await this.proxyClock.set(back);
    const fixedAt = Date.now();
    for (const p of [this.mesh.web, this.mesh.voting])
      await waitFor('the proxy to be ready again', async () =>
        (await notReady(p)) ? undefined : true,
      );
    await load.moreOk(50);
    await load.stop();
    this.#account(load, false);
    const lateFailures = load.records.filter((r) => r.code !== 0 && r.start > fixedAt + 3000);
    assert.deepEqual(
      lateFailures.map((r) => r.detail),
      [],
      'no failure once recovered',
    );
    this.tally.notes.push(
      `proxies +${aheadS} s past expiry: not ready, ${refused} requests refused, recovered`,
    );
  }

  /**
   * Both clocks step back by less than the skew allowance right after the proxies renewed (they
   * jump to `forwardS` first, which must be past the renewal time of the leaves they hold, at
   * most 77 % of their life with the jitter, and before their expiry):
   * certificates whose NotBefore is now seconds in the future are still accepted by the peers
   * (the CA back-dates NotBefore by the allowance), and no request fails.
   */
  async backWithinSkew(forwardS: number, backS: number): Promise<void> {
    const load = this.traffic();
    await load.moreOk(30);
    const base = await this.refreshCounts();
    await this.jumpAll(forwardS);
    await this.#renewedSince(base);
    await this.jumpAll(forwardS - backS);
    // Fresh handshakes meet the new certificates on the stepped-back clock.
    await load.moreOk(100);
    await load.stop();
    this.#account(load, true);
    this.tally.notes.push(`-${backS} s right after renewal: 0 failed`);
  }

  /**
   * The proxies' clock runs behind the CA's: by less than the skew allowance a new leaf is
   * accepted; by more, the proxy refuses it as not yet valid and keeps serving on the one it
   * holds (no request fails), and takes the next one once the clocks agree.
   */
  async proxiesBehindCa(withinS: number, beyondS: number): Promise<void> {
    // The CA's clock moves ahead (moving the proxies back would also take them back before the
    // NotBefore of the leaves they hold, which is another case).
    const p = this.proxyClock.offsetS;
    const load = this.traffic();
    await load.moreOk(30);
    await this.caClock.set(p + withinS);
    this.tally.faults++;
    let base = await this.refreshCounts();
    // A forced renewal: both jump past the renewal time, the CA still ahead.
    await this.caClock.set(p + 3000 + withinS);
    await this.proxyClock.set(p + 3000);
    await this.#renewedSince(base);
    const failuresBefore = await this.mesh.refreshes(this.mesh.web, 'failure');
    base = await this.refreshCounts();
    await this.caClock.set(p + 6000 + beyondS);
    await this.proxyClock.set(p + 6000);
    this.tally.faults++;
    await waitFor('the not-yet-valid leaf to be refused', async () =>
      (await this.mesh.refreshes(this.mesh.web, 'failure')) > failuresBefore ? true : undefined,
    );
    assert.equal(await this.mesh.refreshes(this.mesh.web), base.web, 'not taken');
    assert.ok(
      this.mesh.web.lines.some(
        (l) => /certificate refresh failed/.test(l) && /not valid now|not yet valid/.test(l),
      ),
      'refused as not valid yet (by its own check, or by TLS for the CA certificate)',
    );
    await load.moreOk(50);
    await this.proxyClock.set(p + 6000 + beyondS);
    await this.#renewedSince(base);
    await load.moreOk(30);
    await load.stop();
    this.#account(load, true);
    this.tally.notes.push(
      `proxies ${withinS} s behind: accepted; ${beyondS} s behind: refused, kept serving`,
    );
  }

  /**
   * Tokens' iat/nbf against a CA whose clock is behind the token issuer's: within the skew
   * allowance the token is accepted; beyond it, refused naming the claim; once the clock is back,
   * accepted.
   */
  async tokenTimesBehind(withinS: number, beyondS: number): Promise<void> {
    const loader = idOf('emojivoto', 'loader');
    const certify = async (): Promise<{ code: number; details: string }> =>
      certifyOnce({
        ca: this.ca.address,
        anchorsPem: this.state.root.certificatePem,
        identity: loader,
        token: Buffer.from(await this.state.token('emojivoto', 'loader', { ttlMs: HOUR })),
      });
    const back = this.caClock.offsetS;
    await this.caClock.set(-withinS);
    this.tally.faults++;
    await waitFor('the CA clock to step back', async () =>
      (await certify()).code === 0 ? true : undefined,
    );
    await this.caClock.set(-beyondS);
    const refused = await waitFor('a token from the CA future to be refused', async () => {
      const r = await certify();
      return r.code !== 0 ? r : undefined;
    });
    assert.match(refused.details, /not valid before|is in the future/);
    assert.match(refused.details, /clock skew allowance/);
    await this.caClock.set(back);
    await waitFor('tokens accepted again', async () =>
      (await certify()).code === 0 ? true : undefined,
    );
    this.tally.requests += 3;
    this.tally.notes.push(
      `CA ${withinS} s behind the token issuer: accepted; ${beyondS} s: refused (${refused.details.slice(0, 60)}...)`,
    );
  }
}
