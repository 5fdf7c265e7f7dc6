/**
 * The proxy part of `npm run bench`: what meshid's two proxy hops cost on an HTTP/1.1 request
 * path, against no proxy at all and against nginx doing the same two-hop TLS 1.3 mTLS.
 *
 * Four paths to one backend (nginx serving a fixed "ok\n"), all on 127.0.0.1, measured in the
 * same run in alternating rounds:
 *
 * (a) direct: load → backend.
 * (b) meshid: load → `voting` proxy route listener → TLS 1.3 mTLS → `web` proxy inbound → backend.
 * (c) nginx: load → nginx "outbound" (HTTP in, `proxy_pass https://` with a client certificate,
 *     server verified against the anchors and the web identity, keep-alive pool) → nginx
 *     "inbound" (TLS 1.3, client certificate required and verified, keep-alive pool) → backend.
 *     nginx's certificates come from the same `meshid ca`, requested the way a proxy does.
 * (d) meshid over HTTP/2: load → a second `voting` proxy's HTTP listener (routing by Host) → one
 *     multiplexed HTTP/2 connection over TLS 1.3 mTLS (ALPN meshid.io/h2) → a second `web`
 *     proxy's inbound, which downgrades to HTTP/1.1 for the backend. Its own pair of processes,
 *     so that each path's RSS and CPU are its own.
 *
 * Every request carries `Host: web.bench.svc` (what (d) routes by; the others ignore it).
 *
 * Each proxy hop is one process (one nginx worker; one `meshid proxy`). Two loads:
 * - saturation: wrk, one thread, 32 keep-alive connections, for a fixed time → requests/s and
 *   wrk's latency percentiles; the proxies' RSS is sampled from /proc during it, and their CPU
 *   time per request read from /proc.
 * - a fixed rate of 1,000 requests/s: wrk is closed-loop and cannot hold a rate, so an
 *   open-loop generator in this file (run as a child process pinned to core 1) sends on a fixed
 *   schedule over a few keep-alive sockets whatever the responses do, and records each latency.
 *   Meanwhile every server is pinned to core 0 (`taskset -a -p`), so the generator's own
 *   scheduling does not compete with the path it measures, and, when root, the servers and the
 *   generator run at nice -15 so that unrelated work on a shared machine does not decide the
 *   p99; both are undone afterwards.
 *
 * Every response is checked: wrk's non-2xx/3xx count and socket errors, the generator's
 * statuses, and one request per path that reads back the `l5d-client-id` the backend received.
 * Any failure fails the bench. Medians over the rounds; ratios are taken within each round.
 *
 * Standalone: `npm run build && node --import tsx test/bench/proxy.ts`.
 */
import 'reflect-metadata';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { connect } from 'node:net';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { formatAddress } from '../../core/index.js';
import { SIDECAR_NODE_OPTIONS } from '../../proxy/index.js';
import {
  MESHID_BIN,
  adminGet,
  metricValue,
  startCaProcess,
  waitFor,
} from '../support/ca-process.js';
import type { CaProcess } from '../support/ca-process.js';
import { childPids, cpuSeconds, rssMb } from '../support/proc.js';
import { certificateFromCa, freePort } from '../support/proxy-process.js';
import { CA_IDENTITY, HOUR, idOf, makeTestState } from '../support/state.js';
import type { TestState } from '../support/state.js';

type Out = (s?: string) => void;

const env = (name: string, fallback: number): number => {
  const v = process.env[name];
  return v === undefined || v === '' ? fallback : Number(v);
};
const ROUNDS = env('BENCH_PROXY_ROUNDS', env('BENCH_ROUNDS', 3));
/** wrk duration per saturation run. */
const SECONDS = env('BENCH_PROXY_SECONDS', 8);
/** wrk once per path before the rounds: JIT, connections, TLS sessions. */
const WARMUP_SECONDS = env('BENCH_PROXY_WARMUP_SECONDS', 5);
/** Fixed-rate run: requests per second and measured seconds (after a 1 s unrecorded lead-in). */
const RATE = env('BENCH_PROXY_RATE', 1000);
const RATE_SECONDS = env('BENCH_PROXY_RATE_SECONDS', 10);
const CONNECTIONS = 32;
/**
 * Node arguments for the two meshid proxies: by default the ones the sidecar is meant to run
 * with (SIDECAR_NODE_OPTIONS); override e.g. with `--cpu-prof --cpu-prof-dir=/tmp/prof` to profile
 * them under the same load (profiles are written when they stop), or with '' for none.
 */
const PROXY_NODE_ARGS = (process.env['BENCH_PROXY_NODE_ARGS'] ?? SIDECAR_NODE_OPTIONS.join(' '))
  .split(' ')
  .filter(Boolean);
/**
 * Niceness of the servers and the generator during the fixed-rate runs (when root): the machine
 * is shared, and a millisecond target is lost in other processes' time slices otherwise. The
 * same for every path; undone afterwards.
 */
const NICE = -15;

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const THIS_FILE = fileURLToPath(import.meta.url);

const WEB = idOf('bench', 'web');
const VOTING = idOf('bench', 'voting');

const PATHS = ['direct', 'meshid', 'nginx', 'meshidH2'] as const;
type PathName = (typeof PATHS)[number];
const LABEL: Record<PathName, string> = {
  direct: '(a) direct',
  meshid: '(b) meshid, two proxies',
  nginx: '(c) nginx, two proxies',
  meshidH2: '(d) meshid, HTTP/2 between the proxies',
};
/** The authority every request names; path (d)'s HTTP listener routes it to web. */
const HOST = 'web.bench.svc';

// ---------------------------------------------------------------------------------------------
// Small helpers

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  if (s.length === 0) return NaN;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function which(cmd: string): string {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).stdout.trim();
}

function ensureTools(out: Out): { wrk: string; nginx: string } {
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
function tcpOpen(port: number): Promise<boolean> {
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
function get(
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
interface Child {
  readonly name: string;
  readonly proc: ChildProcess;
  /** The process and, for nginx, its workers (read once it is up). */
  pids(): number[];
  output(): string;
  stop(): Promise<void>;
}

function spawnChild(name: string, argv: readonly string[], cwd?: string): Child {
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
async function waitUp(child: Child, what: string, check: () => Promise<boolean>): Promise<void> {
  await waitFor(
    what,
    async () => {
      if (child.proc.exitCode !== null || child.proc.signalCode !== null) {
        throw new Error(`${child.name} exited (${child.proc.exitCode}):\n${child.output()}`);
      }
      return (await check()) ? true : undefined;
    },
    20_000,
  ).catch((err: unknown) => {
    throw new Error(`${(err as Error).message}\n${child.name} output:\n${child.output()}`);
  });
}

/** Common top of an nginx configuration: one master, one worker, everything in `dir`. */
function nginxMain(dir: string, name: string, http: string): string {
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

async function startNginx(nginx: string, dir: string, name: string, conf: string): Promise<Child> {
  const file = join(dir, `${name}.conf`);
  await writeFile(file, conf);
  const test = spawnSync(nginx, ['-t', '-q', '-c', file, '-p', dir, '-e', join(dir, 'stderr')], {
    encoding: 'utf8',
    timeout: 10_000,
  });
  if (test.status !== 0) throw new Error(`nginx ${name} config:\n${test.stderr}\n${conf}`);
  return spawnChild(`nginx ${name}`, [
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

interface WrkResult {
  readonly rps: number;
  readonly p50ms: number;
  readonly p99ms: number;
  readonly requests: number;
  readonly non2xx: number;
  readonly socketErrors: number;
}

function toMs(value: string, unit: string): number {
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

function parseWrk(text: string): WrkResult {
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

/** Runs wrk against `port`; returns its output. Bounded by its own -d plus a margin. */
async function wrk(bin: string, port: number, seconds: number): Promise<string> {
  const child = spawnChild('wrk', [
    bin,
    '-t1',
    `-c${CONNECTIONS}`,
    `-d${seconds}s`,
    '--timeout',
    '5s',
    '--latency',
    '-H',
    `Host: ${HOST}`,
    `http://127.0.0.1:${port}/`,
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
interface ProxyUsage {
  /** RSS per proxy just before the run, MB (nginx: master + worker). */
  readonly rssBeforeMb: Record<string, number>;
  /** Max RSS per proxy during the run, MB (nginx: master + worker). */
  readonly rssMb: Record<string, number>;
  /** CPU time of each proxy per request, µs. */
  readonly cpuUsPerRequestOf: Record<string, number>;
  /** CPU time of all the path's proxy processes per request, µs. */
  readonly cpuUsPerRequest: number;
}

interface SaturationResult extends WrkResult, ProxyUsage {}

const sum = (xs: readonly number[]): number => xs.reduce((s, x) => s + x, 0);

async function saturate(
  bin: string,
  port: number,
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
  const sample = (): void => {
    for (const [name, mb] of Object.entries(rssNow())) rss[name] = Math.max(rss[name] ?? 0, mb);
  };
  const cpu0 = cpuNow();
  const timer = setInterval(sample, 200);
  let text: string;
  try {
    text = await wrk(bin, port, seconds);
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
    cpuUsPerRequestOf: cpuOf,
    cpuUsPerRequest: sum(Object.values(cpuOf)),
  };
}

/** Sets the nice value of every thread of running processes (Linux nice is per thread). */
function renice(pids: readonly number[], niceness: number): void {
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
function pin(pids: readonly number[], cores: string): void {
  for (const pid of pids) {
    spawnSync('taskset', ['-a', '-p', '-c', cores, String(pid)], {
      stdio: 'ignore',
      timeout: 5000,
    });
  }
}

interface OpenLoopResult {
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
async function openLoop(
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
        { host: '127.0.0.1', port, path: '/', agent, timeout: 5000, headers: { host: HOST } },
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
async function fixedRate(port: number): Promise<OpenLoopResult> {
  const core1 = availableParallelism() > 1 && which('taskset') !== '' ? ['taskset', '-c', '1'] : [];
  const priority = process.getuid?.() === 0 ? ['nice', '-n', String(NICE)] : [];
  const child = spawnChild(
    'open-loop',
    [
      ...priority,
      ...core1,
      process.execPath,
      '--import',
      'tsx',
      THIS_FILE,
      '--open-loop',
      String(port),
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

// ---------------------------------------------------------------------------------------------
// The bench

interface RoundResult {
  readonly saturation: Record<PathName, SaturationResult>;
  readonly rate: Record<PathName, OpenLoopResult>;
}

const f1 = (x: number): string => (Number.isFinite(x) ? x.toFixed(1) : 'n/a');
const f2 = (x: number): string => (Number.isFinite(x) ? x.toFixed(2) : 'n/a');
const f0 = (x: number): string => (Number.isFinite(x) ? x.toFixed(0) : 'n/a');

/** The proxy bench: sets everything up, measures, prints, writes bench-results/proxy.json. */
export async function runProxyBench(out: Out): Promise<void> {
  const tools = ensureTools(out);
  const cores = availableParallelism();
  const loadBefore = loadavg().map(f2).join(' ');
  out(
    `Proxy path (HTTP/1.1, 127.0.0.1, ${cores} cores): ${ROUNDS} rounds × (wrk ${SECONDS}s, ${CONNECTIONS} connections | open loop ${RATE} req/s × ${RATE_SECONDS}s) per path, after a ${WARMUP_SECONDS}s warm-up`,
  );

  const children: Child[] = [];
  let state: TestState | undefined;
  let ca: CaProcess | undefined;
  const dir = await mkdtemp(join(tmpdir(), 'meshid-proxy-bench-'));
  try {
    state = await makeTestState();
    ca = await startCaProcess([
      ...state.caArgs,
      '--workers',
      '1',
      '--cert-lifetime',
      '1h',
      '--log-level',
      'warn',
    ]);

    // The backend.
    const backendPort = await freePort();
    const backend = await startNginx(
      tools.nginx,
      dir,
      'backend',
      nginxMain(
        dir,
        'backend',
        `  server {
    listen 127.0.0.1:${backendPort};
    default_type text/plain;
    location = /id { return 200 "$http_l5d_client_id\\n"; }
    location / { return 200 "ok\\n"; }
  }`,
      ),
    );
    children.push(backend);
    await waitUp(backend, 'the backend', async () => (await get(backendPort, '/')).status === 200);

    // meshid: web (inbound → backend) and voting (route → web's inbound). The proxy announces
    // "listening" at info only, so at --log-level warn its ports are chosen here.
    const admins = new Map<string, number>();
    const startProxy = async (sa: string, args: string[], name = sa): Promise<Child> => {
      const tokenFile = join(state!.dir, `${sa}-token`);
      await writeFile(tokenFile, await state!.token('bench', sa, { ttlMs: 2 * HOUR }));
      const admin = await freePort();
      admins.set(name, admin);
      const child = spawnChild(`meshid ${name}`, [
        process.execPath,
        ...PROXY_NODE_ARGS,
        MESHID_BIN,
        'proxy',
        '--identity-addr',
        formatAddress(ca!.address),
        '--identity-name',
        CA_IDENTITY,
        '--trust-anchors',
        state!.anchorsFile,
        '--token-file',
        tokenFile,
        '--local-identity',
        idOf('bench', sa),
        '--admin',
        `127.0.0.1:${admin}`,
        '--log-level',
        'warn',
        ...args,
      ]);
      children.push(child);
      await waitUp(
        child,
        `the ${name} proxy to be ready`,
        async () => (await adminGet({ host: '127.0.0.1', port: admin }, '/ready')).status === 200,
      );
      return child;
    };
    const webInbound = await freePort();
    const web = await startProxy('web', [
      '--inbound',
      `127.0.0.1:${webInbound}`,
      '--app',
      `127.0.0.1:${backendPort}`,
    ]);
    const votingRoute = await freePort();
    const voting = await startProxy('voting', [
      '--route',
      `127.0.0.1:${votingRoute}=127.0.0.1:${webInbound}@${WEB}`,
    ]);

    // (d): a web and a voting proxy of their own, voting's HTTP listener routing HOST to web.
    const webH2Inbound = await freePort();
    const webH2 = await startProxy(
      'web',
      ['--inbound', `127.0.0.1:${webH2Inbound}`, '--app', `127.0.0.1:${backendPort}`],
      'web-h2',
    );
    const votingH2Listener = await freePort();
    const votingH2 = await startProxy(
      'voting',
      [
        ...['--outbound', `127.0.0.1:${votingH2Listener}`],
        ...['--destination', `${HOST}=127.0.0.1:${webH2Inbound}@${WEB}`],
      ],
      'voting-h2',
    );

    // nginx: certificates from the same CA, then inbound and outbound.
    const nWeb = await certificateFromCa(state, ca.address, 'bench', 'web');
    const nVoting = await certificateFromCa(state, ca.address, 'bench', 'voting');
    const files = {
      anchors: state.anchorsFile,
      webCrt: join(dir, 'web.crt'),
      webKey: join(dir, 'web.key'),
      votingCrt: join(dir, 'voting.crt'),
      votingKey: join(dir, 'voting.key'),
    };
    await writeFile(files.webCrt, nWeb.chainPem);
    await writeFile(files.webKey, nWeb.keyPem, { mode: 0o600 });
    await writeFile(files.votingCrt, nVoting.chainPem);
    await writeFile(files.votingKey, nVoting.keyPem, { mode: 0o600 });
    const nginxInboundPort = await freePort();
    const nginxOutboundPort = await freePort();
    const upstream = (name: string, port: number): string => `  upstream ${name} {
    server 127.0.0.1:${port};
    keepalive ${CONNECTIONS};
    keepalive_requests 1000000;
  }`;
    const nginxInbound = await startNginx(
      tools.nginx,
      dir,
      'inbound',
      nginxMain(
        dir,
        'inbound',
        `${upstream('backend', backendPort)}
  server {
    listen 127.0.0.1:${nginxInboundPort} ssl;
    ssl_protocols TLSv1.3;
    ssl_certificate ${files.webCrt};
    ssl_certificate_key ${files.webKey};
    ssl_client_certificate ${files.anchors};
    ssl_verify_client on;
    ssl_verify_depth 3;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header l5d-client-id $ssl_client_verify;
    }
  }`,
      ),
    );
    children.push(nginxInbound);
    const nginxOutbound = await startNginx(
      tools.nginx,
      dir,
      'outbound',
      nginxMain(
        dir,
        'outbound',
        `${upstream('inbound', nginxInboundPort)}
  server {
    listen 127.0.0.1:${nginxOutboundPort};
    location / {
      proxy_pass https://inbound;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_ssl_certificate ${files.votingCrt};
      proxy_ssl_certificate_key ${files.votingKey};
      proxy_ssl_trusted_certificate ${files.anchors};
      proxy_ssl_verify on;
      proxy_ssl_verify_depth 3;
      proxy_ssl_name ${WEB};
      proxy_ssl_server_name on;
      proxy_ssl_protocols TLSv1.3;
      proxy_ssl_session_reuse on;
    }
  }`,
      ),
    );
    children.push(nginxOutbound);
    for (const [child, port] of [
      [nginxInbound, nginxInboundPort],
      [nginxOutbound, nginxOutboundPort],
    ] as const) {
      await waitUp(child, child.name, () => tcpOpen(port));
    }

    // RSS of each proxy right after start, before any traffic.
    const rssAtStartMb = Object.fromEntries(
      [voting, web, nginxOutbound, nginxInbound, votingH2, webH2].map((c) => [
        c.name,
        sum(c.pids().map(rssMb)),
      ]),
    );
    const portOf: Record<PathName, number> = {
      direct: backendPort,
      meshid: votingRoute,
      nginx: nginxOutboundPort,
      meshidH2: votingH2Listener,
    };
    const proxiesOf: Record<PathName, Child[]> = {
      direct: [],
      meshid: [voting, web],
      nginx: [nginxOutbound, nginxInbound],
      meshidH2: [votingH2, webH2],
    };

    // Correctness: each path answers, and the backend sees the caller's verified identity.
    const seen: Record<PathName, string> = { direct: '', meshid: '', nginx: '', meshidH2: '' };
    for (const p of PATHS) {
      const r = await get(portOf[p], '/id');
      if (r.status !== 200) throw new Error(`${p}: GET /id answered ${r.status}: ${r.body}`);
      seen[p] = r.body.trim();
    }
    for (const p of ['meshid', 'meshidH2'] as const) {
      if (seen[p] !== VOTING)
        throw new Error(`${p} path: the backend saw l5d-client-id "${seen[p]}"`);
    }
    // Stock nginx has no variable for a certificate's SAN (the leaves have no subject), so its
    // inbound passes the verification result instead: SUCCESS only for a verified client.
    if (seen.nginx !== 'SUCCESS')
      throw new Error(`nginx path: the backend saw l5d-client-id "${seen.nginx}"`);
    out(
      `  backend saw l5d-client-id: meshid "${seen.meshid}", meshid over HTTP/2 "${seen.meshidH2}", nginx "${seen.nginx}"`,
    );
    // (d) must really be HTTP/2 between the proxies: web-h2 counts its inbound connections.
    const h2Connections = metricValue(
      (await adminGet({ host: '127.0.0.1', port: admins.get('web-h2')! }, '/metrics')).body,
      'meshid_proxy_connections_total',
      { direction: 'inbound', protocol: 'http2' },
    );
    if (!(h2Connections >= 1))
      throw new Error(`meshidH2 path: web-h2 saw no inbound HTTP/2 connection (${h2Connections})`);

    const check = (what: string, r: WrkResult | OpenLoopResult): void => {
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
    };

    for (const p of PATHS) {
      const w = parseWrk(await wrk(tools.wrk, portOf[p], WARMUP_SECONDS));
      check(`warm-up ${p}`, w);
    }

    const pinned = cores > 1 && which('taskset') !== '';
    const root = process.getuid?.() === 0;
    const rounds: RoundResult[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      // Rotate the order so no path always runs first or last.
      const order = PATHS.map((_, i) => PATHS[(i + r) % PATHS.length]!);
      const saturation = {} as Record<PathName, SaturationResult>;
      const rate = {} as Record<PathName, OpenLoopResult>;
      for (const p of order) {
        const s = await saturate(tools.wrk, portOf[p], proxiesOf[p], SECONDS);
        check(`round ${r + 1} ${p} saturation`, s);
        saturation[p] = s;
        out(
          `  round ${r + 1}, ${p.padEnd(6)} saturation: ${f0(s.rps)} req/s, p50 ${f2(s.p50ms)} ms, p99 ${f2(s.p99ms)} ms, ${s.requests} requests all 2xx${
            proxiesOf[p].length > 0
              ? `; ${proxiesOf[p]
                  .map(
                    (c) =>
                      `${c.name}: CPU ${f1(s.cpuUsPerRequestOf[c.name] ?? NaN)} µs/req, RSS ${f1(s.rssBeforeMb[c.name] ?? NaN)} → ${f1(s.rssMb[c.name] ?? NaN)} MB`,
                  )
                  .join('; ')}`
              : ''
          }`,
        );
      }
      const servers = [
        ...children.flatMap((c) => c.pids()),
        ...(ca.proc.pid === undefined ? [] : [ca.proc.pid]),
      ];
      if (pinned) pin(servers, '0');
      if (root) renice(servers, NICE);
      try {
        for (const p of order) {
          const o = await fixedRate(portOf[p]);
          check(`round ${r + 1} ${p} at ${RATE} req/s`, o);
          rate[p] = o;
          out(
            `  round ${r + 1}, ${p.padEnd(6)} ${RATE} req/s: p50 ${f2(o.p50ms)} ms, p99 ${f2(o.p99ms)} ms, p99.9 ${f2(o.p999ms)} ms, max ${f2(o.maxMs)} ms (send lag p99 ${f2(o.lagP99ms)} ms, max ${f2(o.lagMaxMs)} ms; ${o.ok} of ${o.sent} answered 200)`,
          );
        }
      } finally {
        if (pinned) pin(servers, `0-${cores - 1}`);
        if (root) renice(servers, 0);
      }
      rounds.push({ saturation, rate });
    }

    // Summaries: medians over rounds; ratios and differences taken within each round.
    const med = (fn: (x: RoundResult) => number): number => median(rounds.map(fn));
    const summary = Object.fromEntries(
      PATHS.map((p) => [
        p,
        {
          rps: med((x) => x.saturation[p].rps),
          vsDirect: med((x) => x.saturation[p].rps / x.saturation.direct.rps),
          vsNginx: med((x) => x.saturation[p].rps / x.saturation.nginx.rps),
          satP50ms: med((x) => x.saturation[p].p50ms),
          satP99ms: med((x) => x.saturation[p].p99ms),
          rateP50ms: med((x) => x.rate[p].p50ms),
          rateP99ms: med((x) => x.rate[p].p99ms),
          p99AddedMs: med((x) => x.rate[p].p99ms - x.rate.direct.p99ms),
          p50AddedMs: med((x) => x.rate[p].p50ms - x.rate.direct.p50ms),
          cpuUsPerRequest: med((x) => x.saturation[p].cpuUsPerRequest),
          rssMaxMb: Object.fromEntries(
            proxiesOf[p].map((c) => [
              c.name,
              Math.max(...rounds.map((x) => x.saturation[p].rssMb[c.name] ?? 0)),
            ]),
          ),
        },
      ]),
    ) as Record<
      PathName,
      {
        rps: number;
        vsDirect: number;
        vsNginx: number;
        satP50ms: number;
        satP99ms: number;
        rateP50ms: number;
        rateP99ms: number;
        p99AddedMs: number;
        p50AddedMs: number;
        cpuUsPerRequest: number;
        rssMaxMb: Record<string, number>;
      }
    >;

    out();
    out(
      `| path | req/s at saturation | ÷ (a) | ÷ (c) | p50 / p99 ms at saturation | p50 / p99 ms at ${RATE.toLocaleString('en')} req/s | p99 added over direct | RSS per proxy, MB (max) | proxy CPU µs/req |`,
    );
    out('|---|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const p of PATHS) {
      const s = summary[p];
      const rss = Object.entries(s.rssMaxMb)
        .map(([n, mb]) => `${n.replace(/^(meshid|nginx) /, '')} ${f1(mb)}`)
        .join(', ');
      out(
        `| ${LABEL[p]} | ${f0(s.rps)} | ${f2(s.vsDirect)} | ${f2(s.vsNginx)} | ${f2(s.satP50ms)} / ${f2(s.satP99ms)} | ${f2(s.rateP50ms)} / ${f2(s.rateP99ms)} | ${p === 'direct' ? '—' : `${f2(s.p99AddedMs)} ms`} | ${rss === '' ? '—' : rss} | ${p === 'direct' ? '—' : f1(s.cpuUsPerRequest)} |`,
      );
    }
    out();
    const m = summary.meshid;
    const meshidRss = Math.max(...Object.values(m.rssMaxMb));
    const verdict = (ok: boolean): string => (ok ? 'met' : 'NOT MET');
    out('targets:');
    out(
      `  meshid's two hops add < 1 ms at p99 at ${RATE} req/s: ${f2(m.p99AddedMs)} ms added (${f2(m.rateP99ms)} vs ${f2(summary.direct.rateP99ms)} ms) — ${verdict(m.p99AddedMs < 1)}`,
    );
    out(
      `  meshid ≥ 0.5 of nginx's saturation throughput: ${f2(m.vsNginx)} — ${verdict(m.vsNginx >= 0.5)}`,
    );
    const d = summary.meshidH2;
    out(
      `  (d) HTTP/2 between the proxies, same run: ${f2(d.vsNginx)} of nginx's saturation throughput (${f2(d.vsNginx / m.vsNginx)} of (b)), ${f2(d.p99AddedMs)} ms added at p99 at ${RATE} req/s, RSS max ${f1(Math.max(...Object.values(d.rssMaxMb)))} MB (no target of its own; reported)`,
    );
    out(
      `  RSS < 80 MB per meshid proxy: max ${f1(meshidRss)} MB under load — ${verdict(meshidRss < 80)} (right after start, before traffic: ${Object.entries(
        rssAtStartMb,
      )
        .map(([n, mb]) => `${n} ${f1(mb)}`)
        .join(', ')} MB)`,
    );
    out(
      `notes: medians of ${ROUNDS} rounds; ratios and added latency are taken within each round, then their median. Saturation: all processes share the ${cores} cores unpinned, so wrk, both proxies and the backend compete for CPU and req/s reflects CPU per request as much as anything. Fixed rate: every server (backend, proxies, CA) pinned to core 0 and the generator alone on core 1, all at nice ${NICE} when root; latency is from handing the request to the socket to the end of the response. nginx RSS is master + worker. meshid's route listener forwards bytes (one TLS connection per client connection) and its inbound relays HTTP/1.1 on one backend connection per client connection, rewriting only request heads; the meshid proxies run with ${PROXY_NODE_ARGS.join(' ') || 'no node options'}; nginx parses HTTP at both hops and pools upstream connections. Load average ${loadBefore} before, ${loadavg().map(f2).join(' ')} after: other work on the machine shows up as noise.`,
    );

    const resultsDir = join(ROOT, 'bench-results');
    mkdirSync(resultsDir, { recursive: true });
    writeFileSync(
      join(resultsDir, 'proxy.json'),
      JSON.stringify(
        {
          settings: {
            rounds: ROUNDS,
            seconds: SECONDS,
            warmupSeconds: WARMUP_SECONDS,
            rate: RATE,
            rateSeconds: RATE_SECONDS,
            connections: CONNECTIONS,
            cores,
            node: process.version,
          },
          summary,
          rssAtStartMb,
          targets: {
            p99AddedUnder1ms: m.p99AddedMs < 1,
            halfOfNginx: m.vsNginx >= 0.5,
            rssUnder80Mb: meshidRss < 80,
          },
          rounds,
        },
        null,
        2,
      ),
    );
  } finally {
    for (const c of children.reverse()) await c.stop().catch(() => undefined);
    await ca?.stop().catch(() => undefined);
    await state?.cleanup().catch(() => undefined);
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
}

const isMain =
  process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (isMain) {
  if (process.argv[2] === '--open-loop') {
    const [port, rate, seconds] = process.argv.slice(3).map(Number);
    const res = await openLoop(port!, rate!, seconds!);
    process.stdout.write(`${JSON.stringify(res)}\n`);
  } else {
    await runProxyBench((s = '') => process.stdout.write(`${s}\n`));
  }
}
