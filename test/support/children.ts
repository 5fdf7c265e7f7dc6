/**
 * Processes a test spawns, ended whatever the test's outcome: each runs as the leader of its own
 * process group, so `killAll()` (in an `afterEach`) ends it and every process it started (a
 * `meshid local` runs a CA and its workers, proxies and demo apps) with SIGKILL, and waits for
 * the leader to be gone. A test that passes stops its processes itself, as a user would; this is
 * the net for one that fails between the spawn and that stop.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess, ChildProcessByStdio, SpawnOptions } from 'node:child_process';
import { once } from 'node:events';
import type { Readable } from 'node:stream';

/** A child with stdin ignored and stdout and stderr piped. */
export type PipedChild = ChildProcessByStdio<null, Readable, Readable>;

export interface Children {
  /** `child_process.spawn` with stdout and stderr piped, in a new process group that `killAll` ends. */
  spawn(
    command: string,
    args: readonly string[],
    options?: Omit<SpawnOptions, 'stdio'>,
  ): PipedChild;
  /** SIGKILL to every group still alive; resolves once each leader has exited. */
  killAll(): Promise<void>;
}

function running(p: ChildProcess): boolean {
  return p.exitCode === null && p.signalCode === null;
}

export function children(): Children {
  const spawned = new Set<ChildProcess>();
  return {
    spawn(command, args, options = {}) {
      const p = spawn(command, args, {
        ...options,
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true,
      });
      spawned.add(p);
      return p;
    },
    async killAll() {
      const waits: Promise<unknown>[] = [];
      for (const p of spawned) {
        const alive = running(p);
        if (alive) waits.push(once(p, 'exit'));
        // The group too when the leader is gone: what it started may have outlived it.
        try {
          if (p.pid !== undefined) process.kill(-p.pid, 'SIGKILL');
        } catch {
          // ESRCH: nothing left in the group.
        }
      }
      spawned.clear();
      await Promise.all(waits);
    },
  };
}
