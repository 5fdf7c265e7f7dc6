/**
 * What the soak measures with: a process's resident set from /proc, its children, and the
 * least-squares slope of a series over time.
 */
import { readdirSync, readFileSync } from 'node:fs';

/** One sample: `t` in minutes since the start, `v` the value. */
export interface Point {
  readonly t: number;
  readonly v: number;
}

/**
 * The least-squares slope of `points` (value per minute); NaN for fewer than two distinct times.
 *
 * @example
 * ```ts
 * leastSquaresSlope([{ t: 0, v: 10 }, { t: 1, v: 12 }]); // 2
 * ```
 */
export function leastSquaresSlope(points: readonly Point[]): number {
  const n = points.length;
  if (n < 2) return NaN;
  const mt = points.reduce((s, p) => s + p.t, 0) / n;
  const mv = points.reduce((s, p) => s + p.v, 0) / n;
  let num = 0;
  let den = 0;
  for (const p of points) {
    num += (p.t - mt) * (p.v - mv);
    den += (p.t - mt) ** 2;
  }
  return den === 0 ? NaN : num / den;
}

/** The resident set size of a live process in bytes (VmRSS), or undefined once it is gone. */
export function rssBytes(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m === null ? undefined : Number(m[1]) * 1024;
  } catch {
    return undefined;
  }
}

/** The pids whose parent is `pid` (from /proc/<pid>/stat, which every Linux has). */
export function childPids(pid: number): number[] {
  const children: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // The command name is in parentheses and may hold spaces; the ppid is the second field after it.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) children.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return children;
}
