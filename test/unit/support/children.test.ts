/**
 * The net under spawned test processes: `killAll` ends a child and what it started, whether the
 * child is still running or already gone and left its own children behind.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { children } from '../../support/children.js';
import type { PipedChild } from '../../support/children.js';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The first stdout line of a child (the pid its shell printed). */
async function firstLine(p: PipedChild): Promise<string> {
  let out = '';
  for await (const chunk of p.stdout) {
    out += (chunk as Buffer).toString();
    if (out.includes('\n')) return out.split('\n')[0]!;
  }
  throw new Error(`exited before a line: ${out}`);
}

/** Resolves once `pid` is gone (a killed grandchild is reaped by init, not at once). */
async function gone(pid: number): Promise<void> {
  for (let i = 0; i < 500 && alive(pid); i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(alive(pid), false, `process ${pid} still alive`);
}

describe('test support: children() ends what a test spawned', () => {
  it('kills a running child and the grandchild it started', async () => {
    const procs = children();
    const p = procs.spawn('bash', ['-c', 'sleep 300 & echo $!; wait']);
    const grandchild = Number(await firstLine(p));
    assert.ok(alive(p.pid!) && alive(grandchild));
    await procs.killAll();
    assert.equal(p.signalCode, 'SIGKILL');
    await gone(grandchild);
  });

  it('kills what a child left behind when the child itself has exited', async () => {
    const procs = children();
    const p = procs.spawn('bash', ['-c', '(sleep 300 </dev/null >/dev/null 2>&1 &) ; echo ok']);
    const exited = once(p, 'exit');
    assert.equal(await firstLine(p), 'ok');
    await exited;
    // The orphan is still in the child's process group.
    const orphans = execFileSync('pgrep', ['-g', String(p.pid)], { encoding: 'utf8' })
      .trim()
      .split('\n')
      .map(Number);
    assert.equal(orphans.length, 1);
    await procs.killAll();
    await gone(orphans[0]!);
  });

  it('does nothing for children that ended with everything they started', async () => {
    const procs = children();
    const p = procs.spawn('true', []);
    await once(p, 'exit');
    await procs.killAll();
    assert.equal(p.exitCode, 0);
  });
});
