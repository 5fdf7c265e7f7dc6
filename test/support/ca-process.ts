/**
 * Runs `meshid` subcommands as real processes (the compiled CLI, as a user runs it) and reads the
 * bound addresses from the "listening" log line.
 */
import { spawn, execFile } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { Address } from '../../core/index.js';
import { formatAddress, parseAddress } from '../../core/index.js';

export const MESHID_BIN = fileURLToPath(new URL('../../bin/meshid.js', import.meta.url));
const execFileAsync = promisify(execFile);

/** A running `meshid ca`. */
export interface CaProcess extends MeshidProcess {
  readonly address: Address;
  readonly admin: Address;
}

/** A running long-lived `meshid` command and the fields of its "listening" line. */
export interface MeshidProcess {
  readonly proc: ChildProcess;
  /** The "listening" log record. */
  readonly listening: Record<string, unknown>;
  /** Every stdout line so far (JSON log lines). */
  readonly lines: string[];
  readonly stderr: () => string;
  stop(): Promise<number | null>;
}

/** How a `meshid` process is started, besides its arguments and environment. */
export interface StartOptions {
  /** Runs it under another command, e.g. taskset to pin it to one core. */
  readonly prefix?: readonly string[];
  /** Node's own options (e.g. `--cpu-prof`, which NODE_OPTIONS does not allow). */
  readonly nodeArgs?: readonly string[];
}

/** How long a `meshid` process may take to say "listening" before it is killed. */
export const START_LIMIT_MS = 120_000;

/** Starts `meshid <command> <args>` and waits for its "listening" log line. */
export async function startMeshid(
  command: string,
  args: string[],
  env: Record<string, string> = {},
  opts: StartOptions = {},
): Promise<MeshidProcess> {
  const [exe, ...prefixArgs] = [...(opts.prefix ?? []), process.execPath];
  const argv = [...prefixArgs, ...(opts.nodeArgs ?? []), MESHID_BIN, command, ...args];
  const proc = spawn(exe!, argv, {
    env: { PATH: process.env['PATH'] ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  let buffered = '';
  const listening = new Promise<Record<string, unknown>>((resolve, reject) => {
    proc.stdout!.on('data', (d: Buffer) => {
      buffered += d.toString();
      const parts = buffered.split('\n');
      buffered = parts.pop()!;
      for (const line of parts) {
        lines.push(line);
        try {
          const rec = JSON.parse(line) as Record<string, unknown>;
          if (rec['msg'] === 'listening') resolve(rec);
        } catch {
          // not a log line
        }
      }
    });
    proc.once('exit', (code) =>
      reject(
        new Error(
          `meshid ${command} exited with ${code} before listening:\n${stderr}\n${lines.join('\n')}`,
        ),
      ),
    );
  });
  // Generous: a CA with two workers on a machine kept busy by another test run took over 30 s
  // to say "listening" (issue 20); an honest start on an idle machine takes about 1 s.
  const timeout = setTimeout(() => proc.kill('SIGKILL'), START_LIMIT_MS);
  try {
    return {
      proc,
      listening: await listening,
      lines,
      stderr: () => stderr,
      async stop() {
        if (proc.exitCode !== null) return proc.exitCode;
        proc.kill('SIGTERM');
        const [code, signal] = (await once(proc, 'exit')) as [number | null, string | null];
        if (code === null) {
          throw new Error(
            `meshid ${command} was killed by ${signal}:\n${stderr}\n${lines.slice(-5).join('\n')}`,
          );
        }
        return code;
      },
    };
  } finally {
    clearTimeout(timeout);
  }
}

/**
 * CA flags for a load generator: many calls from one address (127.0.0.1) for one identity,
 * which the default per-source and per-identity rate limits are there to refuse. The admission
 * queue stays on. Tests of the limits themselves set them explicitly.
 */
export const NO_RATE_LIMITS: readonly string[] = [
  '--certify-source-burst',
  '0',
  '--certify-identity-burst',
  '0',
];

/** Starts `meshid ca` with `args` (listen and admin on 127.0.0.1:0 unless given). */
export async function startCaProcess(
  args: string[],
  env: Record<string, string> = {},
  opts: StartOptions = {},
): Promise<CaProcess> {
  const withPorts = [...args];
  if (!args.includes('--listen')) withPorts.push('--listen', '127.0.0.1:0');
  if (!args.includes('--admin')) withPorts.push('--admin', '127.0.0.1:0');
  const p = await startMeshid('ca', withPorts, env, opts);
  return {
    ...p,
    address: parseAddress(String(p.listening['address']))!,
    admin: parseAddress(String(p.listening['admin']))!,
  };
}

/**
 * Runs a short-lived `meshid` command (in `cwd`); resolves with its exit code and output. It is
 * killed after `timeoutMs` (default 60 s).
 */
export async function runMeshid(
  args: string[],
  env: Record<string, string> = {},
  cwd?: string,
  timeoutMs = 60_000,
): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await execFileAsync(process.execPath, [MESHID_BIN, ...args], {
      env: { PATH: process.env['PATH'] ?? '', ...env },
      timeout: timeoutMs,
      ...(cwd === undefined ? {} : { cwd }),
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return {
      code: typeof e.code === 'number' ? e.code : -1,
      stdout: e.stdout ?? '',
      stderr: e.stderr ?? '',
    };
  }
}

/** GETs an admin path; resolves with status and body. */
export async function adminGet(
  admin: Address,
  path: string,
): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://${formatAddress(admin)}${path}`);
  return { status: res.status, body: await res.text() };
}

/** Sums a Prometheus sample family with the given labels from /metrics text. */
export function metricValue(
  text: string,
  name: string,
  labels: Record<string, string> = {},
): number {
  let total = 0;
  let seen = false;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const ok = Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`));
    if (!ok) continue;
    seen = true;
    total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return seen ? total : NaN;
}

/** Polls `check` until it returns a value other than undefined, or fails after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out waiting for ${what}${last === undefined ? '' : `: ${String(last)}`}`,
      );
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * The pids that wrote worker log lines (`"worker":`): each worker logs the issuer it loads. The
 * primary's own "worker died" line names a worker too, so once a worker has died the primary's
 * pid is among them; callers that want only workers leave it out.
 */
export function workerLogPids(ca: CaProcess): Set<number> {
  const pids = new Set<number>();
  for (const line of ca.lines) {
    if (!line.includes('"worker":')) continue;
    pids.add((JSON.parse(line) as { pid: number }).pid);
  }
  return pids;
}
