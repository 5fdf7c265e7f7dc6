/**
 * docs/quickstart.md, run as a newcomer runs it: every fenced `sh` block in the page's order, in
 * a fresh folder, with bash, the real `meshid` CLI (the compiled one, as `npx meshid` runs it in
 * the repository), the real `node` and `curl`. A block marked `terminal` is a long-running
 * process started in the background and waited for at its `ready=` URL; `exit=N` is the exit
 * status the page promises (0 when absent). The `text` block after a command is its promised
 * output: each of its lines must appear in the command's stdout, in order, with `…` matching
 * anything within a line.
 *
 * Two rewrites only, both mechanical: `npx meshid ` becomes `node <repo>/bin/meshid.js ` (the
 * folder is not the repository), and each `127.0.0.1:PORT` of the page becomes a port that was
 * free a moment ago, the same everywhere it appears (commands, config file, expected output), so
 * the test never collides with whatever else listens on this machine.
 */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MESHID_BIN, waitFor } from '../support/ca-process.js';
import { assertLinesInOrder, shellSteps } from '../support/docs.js';
import type { DocStep } from '../support/docs.js';
import { freePort } from '../support/proxy-process.js';

const PAGE = fileURLToPath(new URL('../../docs/quickstart.md', import.meta.url));

describe('docs/quickstart.md, run command by command (real CA, proxies, app, curl)', function () {
  this.timeout(240_000);
  let dir: string;
  let steps: DocStep[];
  let rewrite: (s: string) => string;
  const terminals: { proc: ChildProcess; code: string; output: () => string }[] = [];
  const env = {
    PATH: `${dirname(process.execPath)}:${process.env['PATH'] ?? ''}`,
    HOME: process.env['HOME'] ?? '/tmp',
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshid-quickstart-'));
    const page = await readFile(PAGE, 'utf8');
    steps = shellSteps(page);
    const ports = new Map<string, number>();
    for (const m of page.matchAll(/127\.0\.0\.1:(\d+)/g)) {
      if (!ports.has(m[1]!)) ports.set(m[1]!, await freePort());
    }
    assert.ok(ports.size >= 6, `only ${ports.size} ports on the page: the parse is broken`);
    rewrite = (s) =>
      s
        .replaceAll('npx meshid ', `node ${MESHID_BIN} `)
        .replace(/127\.0\.0\.1:(\d+)/g, (_, p: string) => `127.0.0.1:${ports.get(p)!}`);
  });

  after(async () => {
    for (const t of terminals.reverse()) {
      if (t.proc.exitCode !== null || t.proc.signalCode !== null) continue;
      t.proc.kill('SIGTERM');
      await once(t.proc, 'exit');
    }
    await rm(dir, { recursive: true, force: true });
  });

  it('has the steps a newcomer needs: init, the CA, an app, two proxies, requests, check, identity', () => {
    const codes = steps.map((s) => s.code).join('\n');
    for (const want of [
      'npx meshid init',
      'npx meshid ca',
      'npx meshid token',
      'npx meshid proxy',
      'curl',
      'npx meshid check',
      'npx meshid identity --proxy',
    ])
      assert.ok(codes.includes(want), `no step runs ${want}`);
    assert.equal(steps.filter((s) => s.terminal !== undefined).length, 4);
    assert.ok(steps.filter((s) => s.expect !== undefined).length >= 6);
  });

  it('every command exits as the page says and prints what the page promises', async () => {
    let cwd = dir;
    for (const step of steps) {
      const code = rewrite(step.code);
      if (step.terminal !== undefined) {
        let output = '';
        const proc = spawn('bash', ['-c', `exec ${code.trim()}`], { cwd, env });
        proc.stdout.on('data', (d: Buffer) => (output += d.toString()));
        proc.stderr.on('data', (d: Buffer) => (output += d.toString()));
        terminals.push({ proc, code, output: () => output });
        const url = rewrite(step.terminal.ready);
        await waitFor(
          `${url} (${step.code.trim().split('\n')[0]})`,
          async () => {
            assert.equal(proc.exitCode, null, `exited: ${code}\n${output}`);
            const res = await fetch(url).catch(() => undefined);
            return res?.status === 200 ? true : undefined;
          },
          60_000,
        );
        continue;
      }
      const proc = spawn('bash', ['-c', code], { cwd, env });
      let stdout = '';
      let stderr = '';
      proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const [status] = (await once(proc, 'exit')) as [number | null];
      assert.equal(status, step.exit, `${code}\nexited ${status}:\n${stdout}\n${stderr}`);
      if (step.expect !== undefined) assertLinesInOrder(stdout, rewrite(step.expect), code);
      // A step that ends by changing folder (as a reader's shell would stay there).
      const cd = /(?:^|&&\s*)cd (\S+)\s*$/.exec(code.trim())?.[1];
      if (cd !== undefined) cwd = join(cwd, cd);
    }
    for (const t of terminals)
      assert.equal(t.proc.exitCode, null, `a terminal process stopped: ${t.code}\n${t.output()}`);
    assert.ok(existsSync(join(cwd, '.meshid', 'trust-anchors.pem')), `no state folder in ${cwd}`);
    assert.notEqual(cwd, dir, 'the page starts by moving into a scratch folder');
  });

  it('Ctrl-C stops each long-running process cleanly (exit 0)', async () => {
    assert.equal(terminals.length, 4, 'the run above did not start every terminal');
    for (const t of [...terminals].reverse()) {
      t.proc.kill('SIGINT');
      const [status, signal] = (await once(t.proc, 'exit')) as [number | null, string | null];
      assert.ok(
        status === 0 ||
          (status === null && signal === 'SIGINT' && t.code.trim().startsWith('node -e')),
        `${t.code}\nexited ${status} (${signal}):\n${t.output().slice(-2000)}`,
      );
    }
  });
});
