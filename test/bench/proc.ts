/**
 * What /proc says about the processes a bench runs: CPU time and memory, of a process and of its
 * children (a CA with workers is a primary and its worker processes).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

const CLK_TCK = Number(
  spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim() || '100',
);

/** The process and its direct children. */
function family(pid: number): number[] {
  const children = spawnSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' })
    .stdout.split('\n')
    .filter(Boolean)
    .map(Number);
  return [pid, ...children];
}

/** User+system CPU seconds of a process and of its children (0 for those gone). */
export function cpuSeconds(pid: number): number {
  let total = 0;
  for (const p of family(pid)) {
    try {
      const fields = readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]!.split(' ');
      total += (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
    } catch {
      // the process is gone
    }
  }
  return total;
}

/**
 * Resident memory of a process and its children, MB: `rss` now and `peak` (the kernel's
 * high-water mark, VmHWM, since each started), summed over the processes.
 */
export function memoryMb(pid: number): { rss: number; peak: number } {
  let rss = 0;
  let peak = 0;
  for (const p of family(pid)) {
    try {
      const status = readFileSync(`/proc/${p}/status`, 'utf8');
      const kb = (field: string): number =>
        Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0);
      rss += kb('VmRSS') / 1024;
      peak += kb('VmHWM') / 1024;
    } catch {
      // the process is gone
    }
  }
  return { rss, peak };
}
