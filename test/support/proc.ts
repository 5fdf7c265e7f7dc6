/**
 * What /proc says about the processes a test or a bench runs: children, CPU time and memory, of
 * one process or of a process and its children (a CA with workers is a primary and its worker
 * processes; nginx is a master and its workers). Linux only, as the benches and the soak are.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

const CLK_TCK = Number(
  spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim() || '100',
);
const MB = 1024 * 1024;

/** The fields of /proc/<pid>/stat after the command name (which is in parentheses and may hold spaces). */
function statFields(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/**
 * `kB` fields of /proc/<pid>/status in bytes (VmRSS, VmHWM, RssAnon, RssFile), or undefined once
 * the process is gone; `pid` 'self' reads this process.
 */
function statusBytes(pid: number | 'self', field: string): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(status);
    return m === null ? undefined : Number(m[1]) * 1024;
  } catch {
    return undefined;
  }
}

/** The pids whose parent is `pid`. */
export function childPids(pid: number): number[] {
  const children: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    // The ppid is the second field after the command name.
    if (Number(statFields(Number(entry))?.[1]) === pid) children.push(Number(entry));
  }
  return children;
}

/** The resident set size of a live process in bytes (VmRSS), or undefined once it is gone. */
export function rssBytes(pid: number): number | undefined {
  return statusBytes(pid, 'VmRSS');
}

/** VmRSS of a process in MB, 0 if it is gone. */
export function rssMb(pid: number): number {
  return (rssBytes(pid) ?? 0) / MB;
}

/**
 * Resident memory of a process split as the kernel counts it, MB: `anon`, its private pages
 * (RssAnon: the JavaScript heap, buffers, stacks), and `file`, its file-backed pages (RssFile:
 * mostly the node binary and libraries, shared by every process running the same files, e.g.
 * every proxy on a node). Zeros once the process is gone; 'self' reads this process.
 */
export function rssSplitMb(pid: number | 'self'): { anon: number; file: number } {
  return {
    anon: (statusBytes(pid, 'RssAnon') ?? 0) / MB,
    file: (statusBytes(pid, 'RssFile') ?? 0) / MB,
  };
}

/** User+system CPU seconds of a process, 0 if it is gone. */
export function cpuSeconds(pid: number): number {
  const fields = statFields(pid);
  return fields === undefined ? 0 : (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

/** User+system CPU seconds of a process and its direct children (0 for those gone). */
export function treeCpuSeconds(pid: number): number {
  return [pid, ...childPids(pid)].reduce((sum, p) => sum + cpuSeconds(p), 0);
}

/**
 * Resident memory of a process and its direct children, MB: `rss` now and `peak` (the kernel's
 * high-water mark, VmHWM, since each started), summed over the processes.
 */
export function treeMemoryMb(pid: number): { rss: number; peak: number } {
  let rss = 0;
  let peak = 0;
  for (const p of [pid, ...childPids(pid)]) {
    rss += (statusBytes(p, 'VmRSS') ?? 0) / MB;
    peak += (statusBytes(p, 'VmHWM') ?? 0) / MB;
  }
  return { rss, peak };
}
