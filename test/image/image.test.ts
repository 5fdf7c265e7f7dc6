/**
 * The container image `npm run image` builds (scripts/image/build.sh, ./Dockerfile), run by podman
 * as a kubelet's runtime would run the install's pods: runc, the image's own entrypoint and user,
 * a read-only root file system, no network but the container's own loopback, a tmpfs for the
 * state. Inside it: `meshid local` initialises a state folder, starts the CA and has it issue
 * certificates over TLS (its self-check verifies each chain to the anchor), then runs its two
 * proxies; `meshid version` and `meshid check --dir` run beside it, and the transparent mode's
 * dependencies (iptables, the original-dst addon) are there.
 *
 * Run by `npm run test:image` after `npm run image` (.ci/run does both); MESHID_TEST_IMAGE names
 * another image to test.
 */
import { strict as assert } from 'node:assert';
import { execFile, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);
const repo = fileURLToPath(new URL('../../', import.meta.url));
const pkg = JSON.parse(readFileSync(`${repo}package.json`, 'utf8')) as {
  version: string;
  devDependencies: Record<string, string>;
};
const IMAGE = process.env['MESHID_TEST_IMAGE'] ?? `localhost/meshid:v${pkg.version}`;
// podman with the settings the build used (runc, cgroupfs, vfs storage).
const PODMAN_ENV = {
  ...process.env,
  CONTAINERS_CONF: `${repo}scripts/image/containers.conf`,
  CONTAINERS_STORAGE_CONF: `${repo}scripts/image/storage.conf`,
};

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

async function podman(args: string[]): Promise<Run> {
  try {
    const { stdout, stderr } = await execFileAsync('podman', args, {
      env: PODMAN_ENV,
      maxBuffer: 16 * 1024 * 1024,
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number | string; stdout?: string; stderr?: string };
    if (typeof e.code !== 'number') throw err;
    return { code: e.code, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

describe('the container image (podman, read-only root, uid 65532)', function () {
  // Starting a container copies the image's file system (vfs storage): tens of seconds when busy.
  this.timeout(240_000);
  const name = `meshid-image-test-${process.pid}`;
  let local: ChildProcess | undefined;
  let localOut = '';

  before(async function () {
    const inspect = await podman(['image', 'exists', IMAGE]);
    assert.equal(inspect.code, 0, `image ${IMAGE} is not in podman's storage: run npm run image`);
  });

  after(async function () {
    await podman(['rm', '--force', '--time', '2', name]);
    local?.kill('SIGKILL');
  });

  it('is configured to run meshid as uid 65532 from /app, with no shell', async function () {
    const { stdout } = await podman(['image', 'inspect', IMAGE]);
    const [image] = JSON.parse(stdout) as {
      Config: {
        User: string;
        Entrypoint: string[];
        WorkingDir: string;
        Labels: Record<string, string>;
      };
      RootFS: { Layers: string[] };
    }[];
    assert.ok(image !== undefined);
    assert.equal(image.Config.User, '65532:65532');
    assert.deepEqual(image.Config.Entrypoint, ['/usr/local/bin/node', '/app/bin/meshid.js']);
    assert.equal(image.Config.WorkingDir, '/app');
    assert.equal(image.Config.Labels['org.opencontainers.image.version'], pkg.version);
    assert.equal(image.Config.Labels['io.meshid.node-version'], pkg.devDependencies['node']);
    // The runtime layer and the app layer.
    assert.equal(image.RootFS.Layers.length, 2);
  });

  it('runs meshid local: init, the CA issuing over TLS (self-check), and the proxies', async function () {
    local = spawn(
      'podman',
      [
        'run',
        '--rm',
        '--name',
        name,
        '--read-only',
        '--network',
        'none',
        '--cap-drop',
        'ALL',
        '--security-opt',
        'no-new-privileges',
        '--tmpfs',
        '/state:rw,mode=1777',
        IMAGE,
        'local',
        '--dir',
        '/state/.meshid',
      ],
      { env: PODMAN_ENV, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    local.stdout!.on('data', (d: Buffer) => (localOut += d.toString()));
    local.stderr!.on('data', (d: Buffer) => (localOut += d.toString()));
    const exited = new Promise<number | null>((resolve) => local!.on('exit', resolve));
    const ready = new Promise<void>((resolve) => {
      local!.stdout!.on('data', () => {
        if (localOut.includes('meshid: Ctrl-C here stops the mesh')) resolve();
      });
    });
    const first = await Promise.race([ready.then(() => 'ready'), exited]);
    assert.equal(first, 'ready', `meshid local exited (${String(first)}):\n${localOut}`);
    assert.match(localOut, /initialised local state in \/state\/\.meshid/);
    assert.match(
      localOut,
      /self-check: issued web\.emojivoto\.serviceaccount\.identity\.linkerd\.cluster\.local[\s\S]*chain verified to the trust anchor/,
    );
    assert.match(localOut, /self-check: issued voting\.emojivoto\./);
  });

  it('meshid version reports its runtime and the CA running beside it', async function () {
    const r = await podman(['exec', name, '/usr/local/bin/node', '/app/bin/meshid.js', 'version']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      new RegExp(
        `^Client: meshid ${pkg.version} \\(Node\\.js v${pkg.devDependencies['node']}, OpenSSL 3\\.`,
        'm',
      ),
    );
    assert.match(r.stdout, new RegExp(`^Server: meshid ${pkg.version}`, 'm'));
  });

  it('meshid check --dir passes on the state and the mesh inside the image', async function () {
    const r = await podman([
      'exec',
      name,
      '/usr/local/bin/node',
      '/app/bin/meshid.js',
      'check',
      '--dir',
      '/state/.meshid',
    ]);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /Status: all checks passed/);
  });

  it('runs as uid 65532 on a read-only root file system', async function () {
    const r = await podman([
      'exec',
      name,
      '/usr/local/bin/node',
      '-e',
      `const fs = require('node:fs');
       let err = '';
       try { fs.writeFileSync('/app/x', ''); } catch (e) { err = e.code; }
       console.log(process.getuid(), process.getgid(), err);`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), '65532 65532 EROFS');
    const shell = await podman(['exec', name, '/bin/sh', '-c', 'true']);
    assert.notEqual(shell.code, 0, 'the image has no shell');
  });

  it('holds what transparent mode needs: iptables (nft and legacy) and the original-dst addon', async function () {
    for (const [cmd, backend] of [
      ['/usr/sbin/iptables', 'nf_tables'],
      ['/usr/sbin/iptables-legacy', 'legacy'],
      ['/usr/sbin/ip6tables-restore', 'nf_tables'],
    ] as const) {
      const r = await podman(['exec', name, cmd, '--version']);
      assert.equal(r.code, 0, `${cmd}: ${r.stderr}`);
      assert.match(r.stdout, new RegExp(`v1\\.8\\.\\d+ \\(${backend}\\)`), cmd);
    }
    const addon = await podman([
      'exec',
      name,
      '/usr/local/bin/node',
      '-e',
      "console.log(typeof require('/app/native/original-dst/build/Release/original_dst.node').originalDst)",
    ]);
    assert.equal(addon.code, 0, addon.stderr);
    assert.equal(addon.stdout.trim(), 'function');
  });
});
