/**
 * The restart storm, part of `npm run bench`: thousands of proxies asking a real `meshid ca` for
 * their first certificate at once (a mass restart), with the CA's defaults (backpressure and the
 * handshake limit), with the handshake limit off (`MESHID_CERTIFY_MAX_HANDSHAKES=0`), and with
 * both off (`MESHID_BACKPRESSURE=false` too: everything admitted at once), in the same run.
 *
 * - The CA is a real `meshid ca` process, one worker pinned to core 0, JWKS token validation,
 *   log level warn (as the h2load part); a fresh one per storm, warmed up first.
 * - The proxies (`storm-proxies.ts`) run in a process of their own pinned to core 1: each is the
 *   proxy's own identity client and Certify client, with its own TLS connection from its own
 *   loopback address (pods have an IP each), `BENCH_STORM_PROXIES` pods of
 *   `BENCH_STORM_ACCOUNTS` ServiceAccounts. Keys and CSRs are made before the storm.
 * - Reported per storm: time until every proxy holds a verified certificate, p50/p99 per proxy,
 *   RESOURCE_EXHAUSTED answers retried after the hint (not errors), every other failure by gRPC
 *   status, the CA's peak RSS (VmHWM) and CPU per certificate, and how busy the proxies' core
 *   was (it must stay well below 100 % for the CA to be what is measured).
 *
 * Bounded: `BENCH_STORM_ROUNDS` alternating pairs of storms, each cut at
 * `BENCH_STORM_DEADLINE_SECONDS` (proxies without a certificate by then are reported missing).
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { adminGet, metricValue, startCaProcess } from '../support/ca-process.js';
import { CA_IDENTITY, idOf, makeTestState } from '../support/state.js';
import { treeCpuSeconds, treeMemoryMb } from '../support/proc.js';
import { median, percentile } from './stats.js';
import type { PrepareMessage, StormMessage, StormOutcome } from './storm-proxies.js';
import { stormProxies } from './storm-proxies.js';

const env = (name: string, fallback: number): number => {
  const v = Number(process.env[name] ?? fallback);
  if (!Number.isFinite(v) || v <= 0) throw new Error(`${name} must be a positive number`);
  return v;
};
const PROXIES = env('BENCH_STORM_PROXIES', 4000);
const ACCOUNTS = env('BENCH_STORM_ACCOUNTS', 40);
const ROUNDS = env('BENCH_STORM_ROUNDS', 2);
/**
 * Proxies that get certificates one storm before the measured one, from other addresses: a mesh
 * restarting its pods meets a CA that has been running (warm JIT), not one that just started.
 */
const WARMUP = env('BENCH_STORM_WARMUP', 1000);
const DEADLINE_S = env('BENCH_STORM_DEADLINE_SECONDS', 120);
/** Node options of the CA (as for the h2load part), e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`. */
const CA_NODE_ARGS = (process.env['BENCH_CA_NODE_ARGS'] ?? '').split(' ').filter(Boolean);
/**
 * Niceness of the CA and the proxies' process when root (as the proxy bench's fixed-rate runs):
 * the machine is shared, and a storm measured in other processes' time slices says little.
 */
const NICE = -15;
const PRIORITY = process.getuid?.() === 0 ? ['nice', '-n', String(NICE)] : [];
const PROXIES_FILE = fileURLToPath(new URL('./storm-proxies.ts', import.meta.url));

const ALL_MODES = ['on', 'no-gate', 'off'] as const;
type Mode = (typeof ALL_MODES)[number];
/** `BENCH_STORM_MODES`: which of them run (comma-separated; default all). */
const MODES: readonly Mode[] = (process.env['BENCH_STORM_MODES'] ?? ALL_MODES.join(','))
  .split(',')
  .map((m) => {
    if (!(ALL_MODES as readonly string[]).includes(m))
      throw new Error(`BENCH_STORM_MODES: "${m}" is not one of ${ALL_MODES.join(', ')}`);
    return m as Mode;
  });
/** `BENCH_STORM_MAX_HANDSHAKES`: the handshake limit of the "all on" mode (default: the CA's). */
const MAX_HANDSHAKES = process.env['BENCH_STORM_MAX_HANDSHAKES'];
const LABEL: Record<Mode, string> = {
  on:
    MAX_HANDSHAKES === undefined
      ? 'all on (defaults)'
      : `all on, handshake limit ${MAX_HANDSHAKES}`,
  'no-gate': 'handshake limit off',
  off: 'backpressure and handshake limit off',
};
/** The CA's environment per mode (call deadlines are honoured in every mode). */
const MODE_ENV: Record<Mode, Record<string, string>> = {
  on: MAX_HANDSHAKES === undefined ? {} : { MESHID_CERTIFY_MAX_HANDSHAKES: MAX_HANDSHAKES },
  'no-gate': { MESHID_CERTIFY_MAX_HANDSHAKES: '0' },
  off: { MESHID_BACKPRESSURE: 'false', MESHID_CERTIFY_MAX_HANDSHAKES: '0' },
};

/** One storm as measured from both sides. */
interface StormResult {
  readonly mode: Mode;
  readonly outcome: StormOutcome;
  readonly allIssuedS: number;
  readonly p50S: number;
  readonly p99S: number;
  readonly caRssBeforeMb: number;
  readonly caRssPeakMb: number;
  readonly caCpuUsPerCert: number;
  readonly issued: number;
  /** Certificates signed that no proxy received (its caller had gone). */
  readonly wasted: number;
  /** Calls dropped unsigned because their caller had gone, and connections reset unshaken. */
  readonly dropped: number;
  readonly connectionsReset: number;
  readonly refusedByReason: Record<string, number>;
  /** Share of its one core the proxies' process used during the storm, and the CA's. */
  readonly proxiesCoreBusy: number;
  readonly caCoreBusy: number;
}

/** The next message of a type from the proxies' process. */
function nextMessage<T>(child: ChildProcess, type: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: { t: string }): void => {
      if (m.t !== type) return;
      cleanup();
      resolve(m as T);
    };
    const onExit = (code: number | null): void => {
      cleanup();
      reject(new Error(`the storm's proxies exited (${code}) before "${type}"`));
    };
    const cleanup = (): void => {
      child.off('message', onMessage);
      child.off('exit', onExit);
    };
    child.on('message', onMessage);
    child.once('exit', onExit);
  });
}

async function oneStorm(
  mode: Mode,
  child: ChildProcess,
  caArgs: string[],
  anchorsPem: string,
): Promise<StormResult> {
  const ca = await startCaProcess(
    // warn: at info the CA writes a line per certificate to a pipe this process reads, and
    // node's writes to a pipe block when it is full (this process is not at the CA's priority).
    [...caArgs, '--workers', '1', '--log-level', 'warn'],
    MODE_ENV[mode],
    { prefix: [...PRIORITY, 'taskset', '-c', '0'], nodeArgs: CA_NODE_ARGS },
  );
  try {
    const pid = ca.proc.pid!;
    const ask = async (set: StormMessage['set']): Promise<StormOutcome> => {
      const answer = nextMessage<StormOutcome>(child, 'outcome');
      child.send({
        t: 'storm',
        set,
        port: ca.address.port,
        serverName: CA_IDENTITY,
        anchorsPem,
        deadlineMs: DEADLINE_S * 1000,
      } satisfies StormMessage);
      return answer;
    };
    const counts = async (): Promise<{
      issued: number;
      dropped: number;
      reset: number;
      refused: Record<string, number>;
    }> => {
      const metrics = (await adminGet(ca.admin, '/metrics')).body;
      const v = (name: string, labels: Record<string, string>): number => {
        const n = metricValue(metrics, name, labels);
        return Number.isNaN(n) ? 0 : n;
      };
      const refused: Record<string, number> = {};
      for (const reason of ['queue-full', 'displaced', 'source-rate', 'identity-rate'])
        refused[reason] = v('meshid_certify_admission_refused_total', { reason });
      return {
        issued: v('meshid_certify_requests_total', { outcome: 'issued' }),
        dropped: v('meshid_certify_dropped_total', {}),
        reset: v('meshid_certify_connections_refused_total', {}),
        refused,
      };
    };
    const warm = await ask('warmup');
    if (warm.missing > 0) throw new Error(`warm-up: ${warm.missing} proxies got no certificate`);
    const start = await counts();
    const before = treeMemoryMb(pid);
    const cpu0 = treeCpuSeconds(pid);
    const outcome = await ask('storm');
    const cpu1 = treeCpuSeconds(pid);
    const mem = treeMemoryMb(pid);
    const end = await counts();
    const issued = end.issued - start.issued;
    const refusedByReason: Record<string, number> = {};
    for (const [reason, n] of Object.entries(end.refused)) {
      if (n > start.refused[reason]!) refusedByReason[reason] = n - start.refused[reason]!;
    }
    return {
      mode,
      outcome,
      allIssuedS: outcome.missing > 0 ? NaN : outcome.timesMs.at(-1)! / 1000,
      p50S: percentile(outcome.timesMs, 50) / 1000,
      p99S: percentile(outcome.timesMs, 99) / 1000,
      caRssBeforeMb: before.rss,
      caRssPeakMb: mem.peak,
      caCpuUsPerCert: ((cpu1 - cpu0) * 1e6) / Math.max(1, issued),
      issued,
      wasted: issued - outcome.timesMs.length,
      dropped: end.dropped - start.dropped,
      connectionsReset: end.reset - start.reset,
      refusedByReason,
      proxiesCoreBusy: outcome.cpuMs / outcome.wallMs,
      caCoreBusy: ((cpu1 - cpu0) * 1000) / outcome.wallMs,
    };
  } finally {
    await ca.stop();
  }
}

const f2 = (x: number): string => (Number.isNaN(x) ? '—' : x.toFixed(2));
const errorsText = (e: Record<string, number>): string =>
  Object.keys(e).length === 0
    ? '0'
    : Object.entries(e)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ');

/**
 * Runs the restart-storm benchmark and prints its table through `out`.
 *
 * @example
 * ```ts
 * await runStormBench((line) => process.stdout.write(`${line}\n`));
 * ```
 */
export async function runStormBench(out: (line?: string) => unknown): Promise<StormResult[]> {
  const state = await makeTestState();
  const { proxies, accounts } = stormProxies(PROXIES, ACCOUNTS, idOf);
  const warmup = stormProxies(WARMUP, ACCOUNTS, idOf, 2).proxies;
  const tokens: string[] = [];
  for (const a of accounts) tokens.push(await state.token(a.ns, a.sa, { ttlMs: 3_600_000 }));
  const anchorsPem = readFileSync(state.anchorsFile, 'utf8');

  const [exe, ...args] = [
    ...PRIORITY,
    ...['taskset', '-c', '1', process.execPath, '--import', 'tsx', PROXIES_FILE, '--storm-proxies'],
  ];
  const child = spawn(exe!, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const results: StormResult[] = [];
  try {
    await nextMessage(child, 'hello');
    const ready = nextMessage<{ keygenMs: number }>(child, 'ready');
    child.send({ t: 'prepare', proxies, warmup, tokens } satisfies PrepareMessage);
    const { keygenMs } = await ready;
    out(
      `Restart storm: ${PROXIES} proxies (${ACCOUNTS} ServiceAccounts, one loopback address each) ask for their first certificate at once; CA: 1 worker on core 0, a fresh one per storm warmed up by ${WARMUP} proxies first, proxies' process on core 1${PRIORITY.length > 0 ? `, both at nice ${NICE}` : ''}; ${ROUNDS} rounds (keys and CSRs made beforehand in ${(keygenMs / 1000).toFixed(1)} s)`,
    );
    for (let r = 0; r < ROUNDS; r++) {
      // Alternate the order, so that a drift of the machine does not favour one.
      const order = r % 2 === 0 ? MODES : ([...MODES].reverse() as Mode[]);
      for (const mode of order) {
        const res = await oneStorm(mode, child, state.caArgs, anchorsPem);
        results.push(res);
        const o = res.outcome;
        out(
          `  round ${r + 1}, ${LABEL[mode]}: all issued in ${f2(res.allIssuedS)} s (p50 ${f2(res.p50S)} s, p99 ${f2(res.p99S)} s), ${o.missing} missing, ${o.attempts} attempts, ${o.retriedExhausted} RESOURCE_EXHAUSTED retried (${o.hintsMs.length === 0 ? 'no hints' : `hint median ${median(o.hintsMs).toFixed(0)} ms`}; CA: ${errorsText(res.refusedByReason)}), errors ${errorsText(o.errors)}, CA issued ${res.issued} (wasted ${res.wasted}; dropped unsigned ${res.dropped}; connections reset ${res.connectionsReset}), RSS ${res.caRssBeforeMb.toFixed(0)} → peak ${res.caRssPeakMb.toFixed(0)} MB, CA CPU ${res.caCpuUsPerCert.toFixed(0)} µs/cert, cores busy: CA ${(100 * res.caCoreBusy).toFixed(0)} %, proxies ${(100 * res.proxiesCoreBusy).toFixed(0)} %`,
        );
      }
    }
  } finally {
    if (child.exitCode === null) {
      child.send({ t: 'exit' });
      await once(child, 'exit');
    }
    await state.cleanup();
  }

  const of = (mode: Mode): StormResult[] => results.filter((x) => x.mode === mode);
  const summary = (mode: Mode): Record<string, number> => {
    const rs = of(mode);
    return {
      all: median(rs.map((x) => x.allIssuedS)),
      p50: median(rs.map((x) => x.p50S)),
      p99: median(rs.map((x) => x.p99S)),
      missing: Math.max(...rs.map((x) => x.outcome.missing)),
      cut: rs.filter((x) => x.outcome.missing > 0).length,
      exhausted: median(rs.map((x) => x.outcome.retriedExhausted)),
      errors: median(rs.map((x) => Object.values(x.outcome.errors).reduce((a, b) => a + b, 0))),
      attempts: median(rs.map((x) => x.outcome.attempts)),
      wasted: median(rs.map((x) => x.wasted)),
      dropped: median(rs.map((x) => x.dropped)),
      reset: median(rs.map((x) => x.connectionsReset)),
      peak: median(rs.map((x) => x.caRssPeakMb)),
      cpu: median(rs.map((x) => x.caCpuUsPerCert)),
      busy: Math.max(...rs.map((x) => x.proxiesCoreBusy)),
      caBusy: median(rs.map((x) => x.caCoreBusy)),
    };
  };
  out();
  out(
    `| mode | time until all issued, s | p50 s | p99 s | missing (max) | attempts | RESOURCE_EXHAUSTED retried | errors | wasted signatures (issued − delivered) | dropped unsigned | connections reset | CA RSS peak, MB | CA CPU µs/cert | CA core busy | proxies' core busy (max) |`,
  );
  out('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const mode of MODES) {
    const s = summary(mode);
    out(
      `| ${LABEL[mode]} | ${s['cut']! > 0 ? `${s['cut']} of ${ROUNDS} rounds cut at ${DEADLINE_S} s${Number.isNaN(s['all']!) ? '' : `; others ${f2(s['all']!)}`}` : f2(s['all']!)} | ${f2(s['p50']!)} | ${f2(s['p99']!)} | ${s['missing']} | ${s['attempts']} | ${s['exhausted']} | ${s['errors']} | ${s['wasted']} | ${s['dropped']} | ${s['reset']} | ${s['peak']!.toFixed(0)} | ${s['cpu']!.toFixed(0)} | ${(100 * s['caBusy']!).toFixed(0)} % | ${(100 * s['busy']!).toFixed(0)} % |`,
    );
  }
  // Ratios within each round, then their median.
  const ratio = (mode: Mode, pick: (x: StormResult) => number): number =>
    median(of(mode).map((x, i) => pick(x) / pick(of('on')[i]!)));
  for (const mode of MODES.includes('on') ? MODES.filter((m) => m !== 'on') : []) {
    out(
      `| ${LABEL[mode]} ÷ all on | ${f2(ratio(mode, (x) => x.allIssuedS))} | ${f2(ratio(mode, (x) => x.p50S))} | ${f2(ratio(mode, (x) => x.p99S))} | | ${f2(ratio(mode, (x) => x.outcome.attempts))} | | | | | | ${f2(ratio(mode, (x) => x.caRssPeakMb))} | ${f2(ratio(mode, (x) => x.caCpuUsPerCert))} | | |`,
    );
  }
  out();
  out(
    `medians of ${ROUNDS} rounds (p50/p99 over the proxies that got a certificate); errors are failures other than RESOURCE_EXHAUSTED (which the proxies retry after the CA's hint plus up to half of it again, as a proxy does); times are from the storm's start to a proxy holding a certificate it has verified; CA CPU per certificate counts every certificate issued, also those for callers that had given up (the wasted signatures); "dropped unsigned" are calls the CA dropped because their caller had gone, "connections reset" those the handshake limit closed after waiting too long. A core busy well below 100 % on both sides means the storm waited on neither process but on the machine (other work on the same cores). Load average ${loadavg()
      .map((x) => x.toFixed(1))
      .join(' ')} after: the machine is shared.`,
  );
  return results;
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  await runStormBench((line = '') => process.stdout.write(`${line}\n`));
}
