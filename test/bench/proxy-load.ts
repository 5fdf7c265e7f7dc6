/**
 * The proxy benches' load and process tools: wrk at saturation with the proxies' CPU and RSS
 * read from /proc, an open-loop generator at a fixed rate (this file is also its child
 * process's entry point), nginx configurations, and pinning and niceness for the fixed-rate
 * runs. A load target is a loopback port, or an address reached from inside a network namespace
 * (the command prefix runs wrk and the generator there).
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, readdirSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { connect } from 'node:net';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { waitFor } from '../support/ca-process.js';
import { childPids, cpuSeconds, rssMb, rssSplitMb } from '../support/proc.js';

export type Out = (s?: string) => void;

const env = (name: string, fallback: number): number => {
  const v = process.env[name];
  return v === undefined || v === '' ? fallback : Number(v);
};
/** Fixed-rate run: requests per second and measured seconds (after a 1 s unrecorded lead-in). */
export const RATE = env('BENCH_PROXY_RATE', 1000);
export const RATE_SECONDS = env('BENCH_PROXY_RATE_SECONDS', 10);
export const CONNECTIONS = 32;
/**
 * Niceness of the servers and the generator during the fixed-rate runs (when root): the machine
 * is shared, and a millisecond target is lost in other processes' time slices otherwise. The
 * same for every path; undone afterwards.
 */
export const NICE = -15;

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const THIS_FILE = fileURLToPath(import.meta.url);

/** The authority every request names; path (d)'s HTTP listener routes it to web. */
export const HOST = 'web.bench.svc';

/**
 * Where a load goes: a port on 127.0.0.1, or a host and port reached with `prefix` before the
 * command (`ip netns exec <ns>`: the load runs inside a pod).
 */
export type LoadTarget =
  number | { readonly host: string; readonly port: number; readonly prefix: readonly string[] };

function targetOf(target: LoadTarget): {
  host: string;
  port: number;
  prefix: readonly string[];
} {
  return typeof target === 'number' ? { host: '127.0.0.1', port: target, prefix: [] } : target;
}

function hostPart(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

// ---------------------------------------------------------------------------------------------
// Small helpers

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  if (s.length === 0) return NaN;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function which(cmd: string): string {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).stdout.trim();
}

export function ensureTools(out: Out): { wrk: string; nginx: string } {
  if (which('wrk') === '' || which('nginx') === '') {
    out('installing wrk and nginx (Debian packages)…');
    execFileSync(
      'sh',
      [
        '-c',
        'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx >/dev/null',
      ],
      { stdio: 'inherit', timeout: 300_000 },
    );
  }
  const tools = { wrk: which('wrk'), nginx: which('nginx') };
  if (tools.wrk === '' || tools.nginx === '') throw new Error('wrk or nginx is not installed');
  return tools;
}

/** Whether something accepts TCP connections on the port. */
export function tcpOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port, timeout: 1000 });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('timeout', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', () => resolve(false));
  });
}

/** One GET with a deadline; resolves with status and body. */
export function get(
  port: number,
  path: string,
  timeoutMs = 5000,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, path, agent: false, timeout: timeoutMs, headers: { host: HOST } },
      (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`GET :${port}${path} timed out`)));
    req.on('error', reject);
    req.end();
  });
}

// ---------------------------------------------------------------------------------------------
// Processes

/** A child process we started, with the pids whose RSS and CPU make up "the proxy". */
export interface Child {
  readonly name: string;
  readonly proc: ChildProcess;
  /** The process and, for nginx, its workers (read once it is up). */
  pids(): number[];
  output(): string;
  stop(): Promise<void>;
}

export function spawnChild(name: string, argv: readonly string[], cwd?: string): Child {
  const proc = spawn(argv[0]!, argv.slice(1), {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { PATH: process.env['PATH'] ?? '' },
    ...(cwd === undefined ? {} : { cwd }),
  });
  let output = '';
  const keep = (d: Buffer): void => {
    output = (output + d.toString()).slice(-8000);
  };
  proc.stdout!.on('data', keep);
  proc.stderr!.on('data', keep);
  proc.on('error', (err) => keep(Buffer.from(`spawn error: ${err.message}\n`)));
  let workers: number[] = [];
  return {
    name,
    proc,
    pids() {
      if (proc.pid === undefined) return [];
      const now = childPids(proc.pid);
      if (now.length > 0) workers = now;
      return [proc.pid, ...workers];
    },
    output: () => output,
    async stop() {
      const pids = this.pids();
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = once(proc, 'exit');
      proc.kill('SIGTERM');
      const done = await Promise.race([exited.then(() => true), sleep(5000).then(() => false)]);
      if (!done) {
        // Not by name: only the pids this bench started and saw.
        for (const pid of pids.reverse()) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // already gone
          }
        }
        await Promise.race([exited, sleep(2000)]);
      }
    },
  };
}

/** Waits until `check` passes, failing early (with the child's output) if the child exits. */
export async function waitUp(
  child: Child,
  what: string,
  check: () => Promise<boolean>,
): Promise<void> {
  await waitFor(
    what,
    async () => {
      if (child.proc.exitCode !== null || child.proc.signalCode !== null) {
        throw new Error(`${child.name} exited (${child.proc.exitCode}):\n${child.output()}`);
      }
      return (await check()) ? true : undefined;
    },
    // Bounded but generous: under a load average of 20 a proxy took over 20 s to get its first
    // certificate (the CA and the proxy both start cold), which crashed the bench.
    120_000,
  ).catch((err: unknown) => {
    throw new Error(`${(err as Error).message}\n${child.name} output:\n${child.output()}`);
  });
}

/** Common top of an nginx configuration: one master, one worker, everything in `dir`. */
export function nginxMain(dir: string, name: string, http: string): string {
  const tmp = join(dir, `${name}-tmp`);
  mkdirSync(tmp, { recursive: true });
  return `daemon off;
master_process on;
worker_processes 1;
pid ${join(dir, `${name}.pid`)};
error_log ${join(dir, `${name}-error.log`)} warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${tmp}/body;
  proxy_temp_path ${tmp}/proxy;
  fastcgi_temp_path ${tmp}/fastcgi;
  uwsgi_temp_path ${tmp}/uwsgi;
  scgi_temp_path ${tmp}/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
${http}
}
`;
}

export async function startNginx(
  nginx: string,
  dir: string,
  name: string,
  conf: string,
  prefix: readonly string[] = [],
): Promise<Child> {
  const file = join(dir, `${name}.conf`);
  await writeFile(file, conf);
  const test = spawnSync(nginx, ['-t', '-q', '-c', file, '-p', dir, '-e', join(dir, 'stderr')], {
    encoding: 'utf8',
    timeout: 10_000,
  });
  if (test.status !== 0) throw new Error(`nginx ${name} config:\n${test.stderr}\n${conf}`);
  return spawnChild(`nginx ${name}`, [
    ...prefix,
    nginx,
    '-c',
    file,
    '-p',
    dir,
    '-e',
    join(dir, `${name}-error.log`),
  ]);
}

// ---------------------------------------------------------------------------------------------
// Loads

export interface WrkResult {
  readonly rps: number;
  readonly p50ms: number;
  readonly p99ms: number;
  readonly requests: number;
  readonly non2xx: number;
  readonly socketErrors: number;
}

export function toMs(value: string, unit: string): number {
  const v = Number(value);
  switch (unit) {
    case 'us':
      return v / 1000;
    case 'ms':
      return v;
    case 's':
      return v * 1000;
    case 'm':
      return v * 60_000;
    default:
      return NaN;
  }
}

export function parseWrk(text: string): WrkResult {
  const pct = (p: string): number => {
    const m = new RegExp(`^\\s*${p}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, 'm').exec(text);
    return m === null ? NaN : toMs(m[1]!, m[2]!);
  };
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(text);
  const requests = /(\d+) requests in/.exec(text);
  const non2xx = /Non-2xx or 3xx responses:\s+(\d+)/.exec(text);
  const errors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  if (rps === null || requests === null) throw new Error(`cannot parse wrk output:\n${text}`);
  return {
    rps: Number(rps[1]),
    p50ms: pct('50'),
    p99ms: pct('99'),
    requests: Number(requests[1]),
    non2xx: non2xx === null ? 0 : Number(non2xx[1]),
    socketErrors: errors === null ? 0 : errors.slice(1).reduce((s, x) => s + Number(x), 0),
  };
}

/** Runs wrk against `target`; returns its output. Bounded by its own -d plus a margin. */
export async function wrk(bin: string, target: LoadTarget, seconds: number): Promise<string> {
  const t = targetOf(target);
  const child = spawnChild('wrk', [
    ...t.prefix,
    bin,
    '-t1',
    `-c${CONNECTIONS}`,
    `-d${seconds}s`,
    '--timeout',
    '5s',
    '--latency',
    '-H',
    `Host: ${HOST}`,
    `http://${hostPart(t.host)}:${t.port}/`,
  ]);
  const exited = once(child.proc, 'exit') as Promise<[number | null, string | null]>;
  const timer = setTimeout(() => child.proc.kill('SIGKILL'), (seconds + 30) * 1000);
  try {
    const [code] = await exited;
    if (code !== 0) throw new Error(`wrk exited with ${code}:\n${child.output()}`);
    return child.output();
  } finally {
    clearTimeout(timer);
  }
}

/** What the proxies of one path used during a saturation run. */
export interface ProxyUsage {
  /** RSS per proxy just before the run, MB (nginx: master + worker). */
  readonly rssBeforeMb: Record<string, number>;
  /** Max RSS per proxy during the run, MB (nginx: master + worker). */
  readonly rssMb: Record<string, number>;
  /**
   * The same, split (each its own maximum): private pages (RssAnon: heap, buffers) and shared
   * file-backed pages (RssFile: mostly the executable, shared by every process running it).
   */
  readonly rssAnonMb: Record<string, number>;
  readonly rssFileMb: Record<string, number>;
  /** CPU time of each proxy per request, µs. */
  readonly cpuUsPerRequestOf: Record<string, number>;
  /** CPU time of all the path's proxy processes per request, µs. */
  readonly cpuUsPerRequest: number;
}

export interface SaturationResult extends WrkResult, ProxyUsage {}

export const sum = (xs: readonly number[]): number => xs.reduce((s, x) => s + x, 0);

export async function saturate(
  bin: string,
  target: LoadTarget,
  proxies: readonly Child[],
  seconds: number,
): Promise<SaturationResult> {
  const pidsOf = new Map(proxies.map((p) => [p.name, p.pids()]));
  const rssNow = (): Record<string, number> =>
    Object.fromEntries([...pidsOf].map(([name, pids]) => [name, sum(pids.map(rssMb))]));
  const cpuNow = (): Record<string, number> =>
    Object.fromEntries([...pidsOf].map(([name, pids]) => [name, sum(pids.map(cpuSeconds))]));
  const rssBefore = rssNow();
  const rss = { ...rssBefore };
  const anon: Record<string, number> = {};
  const file: Record<string, number> = {};
  const sample = (): void => {
    for (const [name, mb] of Object.entries(rssNow())) rss[name] = Math.max(rss[name] ?? 0, mb);
    for (const [name, pids] of pidsOf) {
      const split = pids.map(rssSplitMb);
      anon[name] = Math.max(anon[name] ?? 0, sum(split.map((x) => x.anon)));
      file[name] = Math.max(file[name] ?? 0, sum(split.map((x) => x.file)));
    }
  };
  const cpu0 = cpuNow();
  const timer = setInterval(sample, 200);
  let text: string;
  try {
    text = await wrk(bin, target, seconds);
  } finally {
    clearInterval(timer);
  }
  sample();
  const cpu1 = cpuNow();
  const res = parseWrk(text);
  const cpuOf = Object.fromEntries(
    Object.keys(cpu1).map((n) => [n, (((cpu1[n] ?? 0) - (cpu0[n] ?? 0)) * 1e6) / res.requests]),
  );
  return {
    ...res,
    rssBeforeMb: rssBefore,
    rssMb: rss,
    rssAnonMb: anon,
    rssFileMb: file,
    cpuUsPerRequestOf: cpuOf,
    cpuUsPerRequest: sum(Object.values(cpuOf)),
  };
}

/** Sets the nice value of every thread of running processes (Linux nice is per thread). */
export function renice(pids: readonly number[], niceness: number): void {
  const tids = pids.flatMap((pid) => {
    try {
      return readdirSync(`/proc/${pid}/task`);
    } catch {
      return [];
    }
  });
  if (tids.length === 0) return;
  spawnSync('renice', ['-n', String(niceness), '-p', ...tids], { stdio: 'ignore', timeout: 5000 });
}

/**
 * Sets the CPU affinity of running processes, every thread (`taskset -a -p`): for the
 * fixed-rate runs the servers go to core 0 and the generator has core 1 to itself.
 */
export function pin(pids: readonly number[], cores: string): void {
  for (const pid of pids) {
    spawnSync('taskset', ['-a', '-p', '-c', cores, String(pid)], {
      stdio: 'ignore',
      timeout: 5000,
    });
  }
}

export interface OpenLoopResult {
  readonly sent: number;
  readonly ok: number;
  readonly non200: number;
  readonly errors: number;
  readonly firstError: string;
  /** Latency from the moment each request was handed to the socket, ms. */
  readonly p50ms: number;
  readonly p99ms: number;
  readonly p999ms: number;
  readonly maxMs: number;
  /** How late sends were against the schedule, ms: shows whether the rate was held. */
  readonly lagP99ms: number;
  readonly lagMaxMs: number;
}

/**
 * The open-loop generator (runs in a child process): request i is due at i/rate seconds and is
 * sent then, whether or not earlier ones have answered. Keep-alive sockets, a few of them.
 * The first `leadInSeconds` are sent but not recorded.
 */
export async function openLoop(
  host: string,
  port: number,
  rate: number,
  seconds: number,
  leadInSeconds = 1,
): Promise<OpenLoopResult> {
  const agent = new Agent({ keepAlive: true, maxSockets: 8 });
  const skip = Math.round(rate * leadInSeconds);
  const total = skip + Math.round(rate * seconds);
  const latencies = new Float64Array(total - skip);
  const lags = new Float64Array(total - skip);
  const interval = 1000 / rate;
  let recorded = 0;
  let ok = 0;
  let non200 = 0;
  let errors = 0;
  let firstError = '';
  let finished = 0;
  let next = 0;
  const t0 = process.hrtime.bigint();
  const nowMs = (): number => Number(process.hrtime.bigint() - t0) / 1e6;
  await new Promise<void>((resolve) => {
    const done = (): void => {
      if (++finished === total) resolve();
    };
    const send = (i: number, lag: number): void => {
      const start = nowMs();
      const req = request(
        { host, port, path: '/', agent, timeout: 5000, headers: { host: HOST } },
        (res) => {
          res.resume();
          res.on('end', () => {
            const ms = nowMs() - start;
            if (res.statusCode === 200) ok++;
            else non200++;
            if (i >= skip) {
              latencies[recorded] = ms;
              lags[recorded] = lag;
              recorded++;
            }
            done();
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error('timed out after 5 s')));
      req.on('error', (err) => {
        errors++;
        firstError ||= err.message;
        done();
      });
      req.end();
    };
    const tick = (): void => {
      const now = nowMs();
      while (next < total && next * interval <= now) {
        send(next, now - next * interval);
        next++;
      }
      if (next < total) setTimeout(tick, Math.max(0, next * interval - nowMs()));
    };
    tick();
  });
  agent.destroy();
  const lat = latencies.subarray(0, recorded).sort();
  const lag = lags.subarray(0, recorded).sort();
  return {
    sent: total,
    ok,
    non200,
    errors,
    firstError,
    p50ms: percentile(lat, 50),
    p99ms: percentile(lat, 99),
    p999ms: percentile(lat, 99.9),
    maxMs: lat[lat.length - 1] ?? NaN,
    lagP99ms: percentile(lag, 99),
    lagMaxMs: lag[lag.length - 1] ?? NaN,
  };
}

/** Runs the open-loop generator as a child process pinned to core 1 (when there is one). */
export async function fixedRate(target: LoadTarget): Promise<OpenLoopResult> {
  const t = targetOf(target);
  const core1 = availableParallelism() > 1 && which('taskset') !== '' ? ['taskset', '-c', '1'] : [];
  const priority = process.getuid?.() === 0 ? ['nice', '-n', String(NICE)] : [];
  const child = spawnChild(
    'open-loop',
    [
      ...priority,
      ...core1,
      ...t.prefix,
      process.execPath,
      '--import',
      'tsx',
      THIS_FILE,
      '--open-loop',
      t.host,
      String(t.port),
      String(RATE),
      String(RATE_SECONDS),
    ],
    ROOT,
  );
  const exited = once(child.proc, 'exit') as Promise<[number | null, string | null]>;
  const timer = setTimeout(() => child.proc.kill('SIGKILL'), (RATE_SECONDS + 40) * 1000);
  try {
    const [code] = await exited;
    const line = child
      .output()
      .split('\n')
      .find((l) => l.startsWith('{'));
    if (code !== 0 || line === undefined)
      throw new Error(`open-loop generator exited with ${code}:\n${child.output()}`);
    return JSON.parse(line) as OpenLoopResult;
  } finally {
    clearTimeout(timer);
  }
}

const f0 = (x: number): string => (Number.isFinite(x) ? x.toFixed(0) : 'n/a');
const f1 = (x: number): string => (Number.isFinite(x) ? x.toFixed(1) : 'n/a');
const f2 = (x: number): string => (Number.isFinite(x) ? x.toFixed(2) : 'n/a');

/** Fails the bench when a load saw anything but success. */
export function checkLoad(what: string, r: WrkResult | OpenLoopResult): void {
  if ('rps' in r) {
    if (r.non2xx > 0 || r.socketErrors > 0)
      throw new Error(
        `${what}: wrk saw ${r.non2xx} non-2xx/3xx responses and ${r.socketErrors} socket errors`,
      );
  } else if (r.non200 > 0 || r.errors > 0 || r.ok !== r.sent) {
    throw new Error(
      `${what}: ${r.sent} sent, ${r.ok} answered 200, ${r.non200} other statuses, ${r.errors} errors (${r.firstError})`,
    );
  }
}

/** One round's results, per path. */
export interface Rounds<P extends string> {
  readonly saturation: Record<P, SaturationResult>;
  readonly rate: Record<P, OpenLoopResult>;
}

/** What {@link measureRounds} measures. */
export interface MeasureOptions<P extends string> {
  readonly paths: readonly P[];
  readonly wrkBin: string;
  readonly targetOf: Record<P, LoadTarget>;
  /** The processes whose CPU and RSS are each path's own. */
  readonly proxiesOf: Record<P, Child[]>;
  readonly rounds: number;
  readonly seconds: number;
  readonly warmupSeconds: number;
  /** Every server process (pinned to core 0 and reniced for the fixed-rate runs). */
  readonly servers: () => number[];
  /**
   * Called just before each fixed-rate run of a path; what it returns is called just after, and
   * its text is printed with the run (e.g. the proxies' event-loop delay and GC in that window).
   */
  readonly rateProbe?: (path: P) => Promise<() => Promise<string>>;
  readonly out: Out;
}

/**
 * A warm-up per path, then `rounds` rounds, the order of the paths rotated each round: every
 * path at saturation, then every path at the fixed rate with the servers pinned to core 0 and
 * the generator alone on core 1 (all at nice {@link NICE} when root). Every load is checked.
 */
export async function measureRounds<P extends string>(o: MeasureOptions<P>): Promise<Rounds<P>[]> {
  const { paths, out } = o;
  for (const p of paths) {
    checkLoad(`warm-up ${p}`, parseWrk(await wrk(o.wrkBin, o.targetOf[p], o.warmupSeconds)));
  }
  const cores = availableParallelism();
  const pinned = cores > 1 && which('taskset') !== '';
  const root = process.getuid?.() === 0;
  const rounds: Rounds<P>[] = [];
  for (let r = 0; r < o.rounds; r++) {
    // Rotate the order so no path always runs first or last.
    const order = paths.map((_, i) => paths[(i + r) % paths.length]!);
    const saturation = {} as Record<P, SaturationResult>;
    const rate = {} as Record<P, OpenLoopResult>;
    for (const p of order) {
      const s = await saturate(o.wrkBin, o.targetOf[p], o.proxiesOf[p], o.seconds);
      checkLoad(`round ${r + 1} ${p} saturation`, s);
      saturation[p] = s;
      const usage = o.proxiesOf[p]
        .map(
          (c) =>
            `${c.name}: CPU ${f1(s.cpuUsPerRequestOf[c.name] ?? NaN)} µs/req, RSS ${f1(s.rssBeforeMb[c.name] ?? NaN)} → ${f1(s.rssMb[c.name] ?? NaN)} MB (RssAnon ${f1(s.rssAnonMb[c.name] ?? NaN)} / RssFile ${f1(s.rssFileMb[c.name] ?? NaN)})`,
        )
        .join('; ');
      out(
        `  round ${r + 1}, ${p.padEnd(6)} saturation: ${f0(s.rps)} req/s, p50 ${f2(s.p50ms)} ms, p99 ${f2(s.p99ms)} ms, ${s.requests} requests all 2xx${usage === '' ? '' : `; ${usage}`}`,
      );
    }
    const servers = o.servers();
    if (pinned) pin(servers, '0');
    if (root) renice(servers, NICE);
    try {
      for (const p of order) {
        const probed = await o.rateProbe?.(p);
        const x = await fixedRate(o.targetOf[p]);
        const probe = probed === undefined ? '' : await probed();
        checkLoad(`round ${r + 1} ${p} at ${RATE} req/s`, x);
        rate[p] = x;
        out(
          `  round ${r + 1}, ${p.padEnd(6)} ${RATE} req/s: p50 ${f2(x.p50ms)} ms, p99 ${f2(x.p99ms)} ms, p99.9 ${f2(x.p999ms)} ms, max ${f2(x.maxMs)} ms (send lag p99 ${f2(x.lagP99ms)} ms, max ${f2(x.lagMaxMs)} ms; ${x.ok} of ${x.sent} answered 200)${probe === '' ? '' : `; ${probe}`}`,
        );
      }
    } finally {
      if (pinned) pin(servers, `0-${cores - 1}`);
      if (root) renice(servers, 0);
    }
    rounds.push({ saturation, rate });
  }
  return rounds;
}

const isMain =
  process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (isMain && process.argv[2] === '--open-loop') {
  const [host = '', ...rest] = process.argv.slice(3);
  const [port, rate, seconds] = rest.map(Number);
  const res = await openLoop(host, port!, rate!, seconds!);
  process.stdout.write(`${JSON.stringify(res)}\n`);
}
