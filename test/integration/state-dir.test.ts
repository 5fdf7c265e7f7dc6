/**
 * The local state folder is refused when others could change it: `meshid init`, `meshid ca
 * --dir` and `meshid local`, each on a folder writable by anyone or by its group, with a planted
 * `issuer` link into a world-writable folder, and with a private key readable by others. Every
 * refusal exits 1 before anything is written or served, names the path and the command that
 * fixes it; a folder made under the usual umask (0755) works.
 */
import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import { chmod, cp, mkdir, mkdtemp, readdir, rename, rm, stat, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MESHID_BIN, runMeshid, startCaProcess } from '../support/ca-process.js';

/** Runs meshid; a command that does not end within `ms` (it started serving) is stopped: -1. */
function runBounded(
  args: string[],
  ms = 20_000,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [MESHID_BIN, ...args],
      { env: { PATH: process.env['PATH'] ?? '' }, timeout: ms, killSignal: 'SIGTERM' },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

const LISTEN = ['--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0'];

describe('the local state folder must be private (init, ca --dir, local)', function () {
  this.timeout(60_000);
  let base: string;
  let good: string;
  let n = 0;

  before(async () => {
    base = await mkdtemp(join(tmpdir(), 'meshid-state-dir-'));
    good = join(base, 'good');
    const r = await runMeshid(['init', '--dir', good]);
    assert.equal(r.code, 0, r.stderr);
  });
  after(async () => {
    await rm(base, { recursive: true, force: true });
  });

  /** A copy of the initialised state folder (or an empty folder), with `mode`. */
  async function folder(opts: { initialised: boolean; mode?: number }): Promise<string> {
    const dir = join(base, `case-${n++}`);
    if (opts.initialised) await cp(good, dir, { recursive: true });
    else await mkdir(dir);
    await chmod(dir, opts.mode ?? 0o755);
    return dir;
  }

  /** Moves `<dir>/issuer` into a world-writable folder and leaves a link to it in its place. */
  async function plantIssuerLink(dir: string): Promise<string> {
    const elsewhere = join(base, `world-writable-${n++}`);
    await mkdir(elsewhere);
    await chmod(elsewhere, 0o777);
    const target = join(elsewhere, 'issuer');
    if ((await readdir(dir)).includes('issuer')) await rename(join(dir, 'issuer'), target);
    else await mkdir(target);
    await symlink(target, join(dir, 'issuer'));
    return elsewhere;
  }

  const commands: {
    name: string;
    initialised: boolean;
    args: (dir: string) => string[];
  }[] = [
    { name: 'init', initialised: false, args: (dir) => ['init', '--dir', dir] },
    { name: 'init --force', initialised: true, args: (dir) => ['init', '--dir', dir, '--force'] },
    {
      name: 'ca --dir',
      initialised: true,
      args: (dir) => ['ca', '--dir', dir, '--workers', '1', ...LISTEN],
    },
    {
      name: 'local (empty folder)',
      initialised: false,
      args: (dir) => ['local', '--dir', dir, ...LISTEN],
    },
    {
      name: 'local (initialised folder)',
      initialised: true,
      args: (dir) => ['local', '--dir', dir, ...LISTEN],
    },
  ];

  for (const c of commands) {
    for (const [mode, who] of [
      [0o777, 'anyone'],
      [0o775, 'its group'],
    ] as const) {
      it(`${c.name} refuses a folder writable by ${who} (mode 0${mode.toString(8)}), names chmod, writes nothing`, async () => {
        const dir = await folder({ initialised: c.initialised, mode });
        const before = (await readdir(dir, { recursive: true })).sort();
        const r = await runBounded(c.args(dir));
        assert.equal(r.code, 1, `${r.stdout}\n${r.stderr}`);
        assert.ok(
          r.stderr.includes(
            `the state folder ${dir} is writable by ${who} (mode 0${mode.toString(8)})`,
          ),
          r.stderr,
        );
        assert.ok(r.stderr.includes(`run: chmod go-w ${dir}`), r.stderr);
        assert.match(r.stderr, /\[ERR_LOCAL_STATE\]/);
        assert.deepEqual((await readdir(dir, { recursive: true })).sort(), before);
        assert.equal((await stat(dir)).mode & 0o777, mode, 'the folder is left as it was');
      });
    }

    it(`${c.name} refuses a planted issuer link into a world-writable folder, names it, writes nothing there`, async () => {
      const dir = await folder({ initialised: c.initialised });
      const elsewhere = await plantIssuerLink(dir);
      const before = (await readdir(elsewhere, { recursive: true })).sort();
      const r = await runBounded(c.args(dir));
      assert.equal(r.code, 1, `${r.stdout}\n${r.stderr}`);
      const link = join(dir, 'issuer');
      assert.ok(
        r.stderr.includes(`${link} is a symbolic link (to ${join(elsewhere, 'issuer')})`),
        r.stderr,
      );
      assert.ok(r.stderr.includes(`(rm ${link})`), r.stderr);
      assert.deepEqual((await readdir(elsewhere, { recursive: true })).sort(), before);
    });
  }

  for (const c of commands.filter((x) => x.initialised && !x.name.startsWith('init'))) {
    it(`${c.name} refuses an issuer key readable by others, naming chmod 600`, async () => {
      const dir = await folder({ initialised: true });
      const key = join(dir, 'issuer', 'tls.key');
      await chmod(key, 0o644);
      const r = await runBounded(c.args(dir));
      assert.equal(r.code, 1, `${r.stdout}\n${r.stderr}`);
      assert.ok(
        r.stderr.includes(
          `the private key ${key} is readable by others (mode 0644); run: chmod 600 ${key}`,
        ),
        r.stderr,
      );
    });
  }

  it('init into a 0755 folder (what mkdir makes under umask 022) works, keys 0600, and ca --dir runs on it', async () => {
    const dir = await folder({ initialised: false, mode: 0o755 });
    const r = await runMeshid(['init', '--dir', dir]);
    assert.equal(r.code, 0, r.stderr);
    for (const key of ['issuer/tls.key', 'token-signing/key.pem'])
      assert.equal((await stat(join(dir, key))).mode & 0o777, 0o600, key);
    const ca = await startCaProcess(['--dir', dir, '--workers', '1']);
    assert.equal(await ca.stop(), 0);
  });

  it('init makes a missing folder 0700', async () => {
    const dir = join(base, `fresh-${n++}`, 'state');
    const r = await runMeshid(['init', '--dir', dir]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await stat(dir)).mode & 0o777, 0o700);
  });
});
