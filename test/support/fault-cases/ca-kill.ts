/**
 * Fault family: a CA worker killed (SIGKILL), and the whole CA killed and restarted, while two
 * real proxies carry mTLS traffic and Certify callers keep asking. Shared by the full suite
 * (test/reliability/faults-ca-kill.test.ts) and the default run's slice.
 */
import { strict as assert } from 'node:assert';
import { readFile } from 'node:fs/promises';
import { NO_RATE_LIMITS, startCaProcess, waitFor, workerLogPids } from '../ca-process.js';
import type { CaProcess } from '../ca-process.js';
import {
  CertifyLoad,
  countLoad,
  describeFailures,
  MeshBench,
  startMeshPair,
} from '../fault-load.js';
import type { TrafficLoad } from '../fault-load.js';
import { freePort } from '../proxy-process.js';
import { idOf, makeTestState } from '../state.js';

const UNAVAILABLE = 14;
const LOADER = idOf('emojivoto', 'loader');

/** Pids of the live workers, from the workers' own log lines. */
export function workerPids(ca: CaProcess): Set<number> {
  return new Set([...workerLogPids(ca)].filter((pid) => pid !== ca.proc.pid && alive(pid)));
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A CA (two workers, short leaves), two proxies under traffic and Certify callers. */
export class CaKillBench extends MeshBench {
  caAddress!: string;

  /**
   * Leaf lifetime: a renewal comes within a test (at 63-77 % of the life), and the rest of the
   * life (14 s or more) outlives a CA restart on a loaded machine (measured 3-8 s).
   */
  static readonly LIFETIME = '60s';

  caArgs(): string[] {
    return [
      ...this.state.caArgs,
      ...['--workers', '2', '--cert-lifetime', CaKillBench.LIFETIME, '--clock-skew', '1s'],
      ...['--listen', this.caAddress, ...NO_RATE_LIMITS],
    ];
  }

  override async start(): Promise<void> {
    this.state = await makeTestState();
    this.caAddress = `127.0.0.1:${await freePort()}`;
    this.ca = await startCaProcess(this.caArgs());
    this.mesh = await startMeshPair({ state: this.state, ca: this.caAddress });
  }

  async loads(callers: number): Promise<{ certify: CertifyLoad; traffic: TrafficLoad }> {
    const anchorsPem = await readFile(this.state.anchorsFile, 'utf8');
    const token = Buffer.from(await this.state.token('emojivoto', 'loader', { ttlMs: 3_600_000 }));
    const certify = new CertifyLoad({
      ca: this.ca.address,
      anchorsPem: () => anchorsPem,
      token: () => token,
      identity: LOADER,
      callers,
      deadlineMs: 5000,
    });
    const traffic = this.traffic();
    await Promise.all([certify.moreOk(callers * 2), traffic.moreOk(50)]);
    return { certify, traffic };
  }

  /** Counts a finished run into the tally and asserts no proxied request failed. */
  account(traffic: TrafficLoad, certify: CertifyLoad): void {
    countLoad(this.tally, certify, false);
    countLoad(this.tally, traffic, true, 'proxied requests');
  }

  /**
   * SIGKILLs one worker under load. Asserts: zero failed proxied requests; the Certify calls
   * that fail are at most those in flight on the killed worker's connections (at most one per
   * caller, each started before the kill); a replacement worker starts; calls succeed again.
   * Returns how many Certify calls failed.
   */
  async killWorker(callers: number): Promise<number> {
    const before = workerPids(this.ca);
    assert.equal(before.size, 2, `two workers: ${[...before].join(',')}`);
    const { certify, traffic } = await this.loads(callers);
    const victim = [...before][0]!;
    const killedAt = Date.now();
    process.kill(victim, 'SIGKILL');
    this.tally.faults++;
    await waitFor(
      'a replacement worker',
      () => {
        const fresh = [...workerPids(this.ca)].filter((p) => !before.has(p));
        return fresh.length === 1 ? true : undefined;
      },
      45_000,
    );
    const replacedAt = Date.now();
    await Promise.all([certify.moreOk(callers * 4), traffic.moreOk(100)]);
    await Promise.all([certify.stop(), traffic.stop()]);
    this.account(traffic, certify);
    assert.ok(
      traffic.endedBetween(killedAt, replacedAt).length > 0,
      'proxied requests ran while the worker was being replaced',
    );
    const failed = certify.failed;
    // Each caller has one connection, on one worker. Each of the killed worker's connections
    // loses the call in flight (or the next one, sent before the reset arrives); the caller's new
    // connection may still be handed to the dead worker in the moment before the primary has seen
    // it exit, which costs that caller one more. Nothing else may fail.
    const perCaller = new Map<number, number>();
    for (const f of failed) perCaller.set(f.caller, (perCaller.get(f.caller) ?? 0) + 1);
    assert.ok(
      [...perCaller.values()].every((n) => n <= 2),
      `a worker death costs at most one call per connection it held (two if the reconnect raced the primary): ${describeFailures(failed)}`,
    );
    for (const f of failed)
      assert.ok(
        f.start <= killedAt + 1000,
        `a call started ${f.start - killedAt} ms after the kill failed: ${f.detail}`,
      );
    assert.equal(this.ca.proc.exitCode, null, 'the CA primary stays up');
    this.tally.notes.push(
      `worker kill: ${perCaller.size} of ${callers} callers lost calls (${failed.length} in all, at most ${Math.max(0, ...perCaller.values())} each)`,
    );
    return failed.length;
  }

  /**
   * SIGKILLs the whole CA (the primary; its workers follow) under load, waits until a proxy's
   * renewal has failed against the dead CA, restarts the CA on the same address. Asserts: zero
   * failed proxied requests throughout; every Certify failure during the outage is UNAVAILABLE
   * and none fails outside it; both proxies renew from the restarted CA.
   */
  async killCa(callers: number): Promise<void> {
    const { certify, traffic } = await this.loads(callers);
    const workers = workerPids(this.ca);
    const failuresBefore = await this.mesh.refreshes(this.mesh.web, 'failure');
    const okBefore = await this.refreshCounts();
    const downAt = Date.now();
    this.ca.proc.kill('SIGKILL');
    this.tally.faults++;
    await waitFor('the workers to exit with their primary', () =>
      [...workers].every((p) => !alive(p)) ? true : undefined,
    );
    // The proxy's renewal meets the dead CA (60 s leaves renew after ~42 s).
    await waitFor(
      "web's renewal to fail while the CA is down",
      async () =>
        (await this.mesh.refreshes(this.mesh.web, 'failure')) > failuresBefore ? true : undefined,
      70_000,
    );
    const upAt = Date.now();
    this.ca = await startCaProcess(this.caArgs());
    // The premise: the proxies still hold valid certificates (else failures are expected).
    for (const p of [this.mesh.web, this.mesh.voting])
      assert.ok(
        await this.mesh.ready(p),
        `${p.identity} lost its certificate before the CA was back (restart took ${Date.now() - upAt} ms)`,
      );
    const backAt = Date.now();
    for (const p of [this.mesh.web, this.mesh.voting]) {
      const base = p === this.mesh.web ? okBefore.web : okBefore.voting;
      await waitFor(
        'the proxy to renew from the restarted CA',
        async () => ((await this.mesh.refreshes(p)) > base ? true : undefined),
        70_000,
      );
    }
    await Promise.all([certify.moreOk(callers * 2), traffic.moreOk(100)]);
    await Promise.all([certify.stop(), traffic.stop()]);
    this.account(traffic, certify);
    const during = certify.endedBetween(downAt, backAt + 2000);
    // "Zero failed proxied requests" means something only if requests ran while the CA was down.
    const proxiedDuring = traffic.endedBetween(downAt, upAt);
    assert.ok(
      proxiedDuring.length > 0 && proxiedDuring.every((r) => r.code === 0),
      `proxied requests while the CA was down: ${proxiedDuring.length}, failed: ${describeFailures(proxiedDuring.filter((r) => r.code !== 0))}`,
    );
    const outside = certify.records.filter((r) => r.code !== 0 && !during.includes(r));
    assert.ok(
      during.some((r) => r.code === UNAVAILABLE),
      'Certify calls were made, and refused, during the outage',
    );
    assert.deepEqual(
      during
        .filter((r) => r.code !== 0 && r.code !== UNAVAILABLE)
        .map((r) => `${r.code} ${r.detail}`),
      [],
      'every Certify failure during the outage is UNAVAILABLE',
    );
    assert.equal(outside.length, 0, `Certify outside the outage: ${describeFailures(outside)}`);
    this.tally.notes.push(
      `CA kill: down ${Math.round((backAt - downAt) / 1000)} s (restart ${backAt - upAt} ms), ${during.filter((r) => r.code !== 0).length} Certify UNAVAILABLE, ${proxiedDuring.length} proxied requests served meanwhile`,
    );
  }
}
