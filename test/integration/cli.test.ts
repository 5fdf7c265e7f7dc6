/**
 * The `meshid` command as a user runs it: init, token, ca against the state folder, local, and
 * the errors a user meets.
 */
import { strict as assert } from 'node:assert';
import { mkdtemp, readFile, rm, stat, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { MESHID_BIN, runMeshid, startCaProcess } from '../support/ca-process.js';
import { children } from '../support/children.js';

describe('meshid CLI (real processes)', function () {
  this.timeout(60_000);
  let dir: string;
  before(async () => {
    dir = join(await mkdtemp(join(tmpdir(), 'meshid-cli-')), 'state');
  });
  // Whatever an assertion does, no process of a test outlives it.
  const procs = children();
  afterEach(() => procs.killAll());
  after(async () => {
    await rm(join(dir, '..'), { recursive: true, force: true });
  });

  it('init writes the anchor, the issuer laid out like a TLS Secret, and the token-signing key, keys private', async () => {
    const r = await runMeshid(['init', '--dir', dir]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual((await readdir(join(dir, 'issuer'))).sort(), ['ca.crt', 'tls.crt', 'tls.key']);
    assert.deepEqual((await readdir(join(dir, 'token-signing'))).sort(), ['jwks.json', 'key.pem']);
    assert.match(
      await readFile(join(dir, 'trust-anchors.pem'), 'utf8'),
      /^-----BEGIN CERTIFICATE-----/,
    );
    assert.equal(
      (await stat(join(dir, 'issuer', 'tls.key'))).mode & 0o077,
      0,
      'issuer key readable by others',
    );
    assert.equal(
      (await stat(join(dir, 'token-signing', 'key.pem'))).mode & 0o077,
      0,
      'signing key readable by others',
    );
    const jwks = JSON.parse(await readFile(join(dir, 'token-signing', 'jwks.json'), 'utf8')) as {
      keys: Record<string, unknown>[];
    };
    assert.equal(jwks.keys.length, 1);
    assert.equal(jwks.keys[0]!['d'], undefined, 'the JWKS holds no private part');
  });

  it('init refuses to overwrite existing material without --force, and changes nothing', async () => {
    const anchorBefore = await readFile(join(dir, 'trust-anchors.pem'), 'utf8');
    const r = await runMeshid(['init', '--dir', dir]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /refusing to overwrite existing material .*pass --force to replace it \[ERR_LOCAL_STATE\]/,
    );
    assert.equal(await readFile(join(dir, 'trust-anchors.pem'), 'utf8'), anchorBefore);
  });

  it('init --force replaces the material', async () => {
    const anchorBefore = await readFile(join(dir, 'trust-anchors.pem'), 'utf8');
    const r = await runMeshid(['init', '--dir', dir, '--force']);
    assert.equal(r.code, 0, r.stderr);
    assert.notEqual(await readFile(join(dir, 'trust-anchors.pem'), 'utf8'), anchorBefore);
  });

  it('token prints a projected-token-like JWT and says it is for development only', async () => {
    const r = await runMeshid([
      'token',
      '--dir',
      dir,
      '--ns',
      'emojivoto',
      '--sa',
      'web',
      '--ttl',
      '10m',
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /development only/);
    const jwt = r.stdout.trim();
    assert.equal(decodeProtectedHeader(jwt).alg, 'RS256');
    const claims = decodeJwt(jwt);
    assert.equal(claims.sub, 'system:serviceaccount:emojivoto:web');
    assert.deepEqual(claims.aud, ['identity.l5d.io']);
    assert.equal(claims.exp! - claims.iat!, 600);
    assert.equal((claims['kubernetes.io'] as { namespace: string }).namespace, 'emojivoto');
  });

  it('ca --dir runs against the state folder and its token key', async () => {
    const ca = await startCaProcess(['--dir', dir, '--workers', '1']);
    try {
      assert.ok(ca.address.port > 0);
    } finally {
      assert.equal(await ca.stop(), 0);
    }
  });

  it('ca refuses to start on a folder with no material, naming the missing file', async () => {
    const r = await runMeshid([
      'ca',
      '--dir',
      join(dir, 'nothing-here'),
      '--listen',
      '127.0.0.1:0',
      '--admin',
      '127.0.0.1:0',
      '--workers',
      '2',
    ]);
    assert.equal(r.code, 1);
    assert.match(r.stderr + r.stdout, /nothing-here/);
  });

  it('ca refuses an invalid configuration with exit code 2 and every problem named', async () => {
    const r = await runMeshid(['ca', '--dir', dir, '--cert-lifetime', 'soon', '--listen', 'here'], {
      MESHID_CLOCK_SKEWW: '1s',
    });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--cert-lifetime: must be a duration/);
    assert.match(r.stderr, /--listen: must be HOST:PORT/);
    assert.match(r.stderr, /MESHID_CLOCK_SKEWW: unknown MESHID_ environment variable/);
  });

  it('an unknown command lists the commands', async () => {
    const r = await runMeshid(['certiffy']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /unknown command "certiffy"/);
    assert.match(r.stderr, /meshid ca/);
  });

  it('local (npm start) initialises an empty folder, runs the CA and a two-workload mesh over mTLS, and stops on Ctrl-C', async () => {
    const localDir = join(dir, '..', 'local');
    const proc = procs.spawn(process.execPath, [
      MESHID_BIN,
      'local',
      '--dir',
      localDir,
      '--listen',
      '127.0.0.1:0',
      '--admin',
      '127.0.0.1:0',
    ]);
    let out = '';
    proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => proc.once('exit', resolve));
    const ready = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 45_000);
      proc.stdout.on('data', () => {
        if (out.includes('calls ok')) {
          clearTimeout(timer);
          resolve(true);
        }
      });
      void exited.then(() => resolve(false));
    });
    assert.ok(ready, out);
    assert.match(out, /initialised local state/);
    // The self-check issues the identities the demo runs as.
    assert.match(
      out,
      /self-check: issued web\.emojivoto\.serviceaccount\.identity\.linkerd\.cluster\.local/,
    );
    // The next steps: a second terminal, and a curl that works as printed.
    assert.match(out, /try it in a second terminal/);
    const route = /curl -s http:\/\/(\S+)\/ /.exec(out)?.[1];
    assert.ok(route !== undefined, out);
    const answer = (await (await fetch(`http://${route}/`)).json()) as { youAre: string };
    assert.equal(answer.youAre, 'voting.emojivoto.serviceaccount.identity.linkerd.cluster.local');
    // Output for people: no raw JSON log line among it (piped, the logs are text too).
    assert.doesNotMatch(out, /^\{"level"/m);
    assert.match(out, /chain verified to the trust anchor/);
    // The local mesh: voting calls web over HTTP and gRPC through both proxies, over mTLS.
    assert.match(
      out,
      /voting → web {2}HTTP 200, gRPC OK; web sees the caller as voting\.emojivoto\.serviceaccount\.identity\.linkerd\.cluster\.local \(verified\)/,
    );
    assert.match(out, /1 HTTP and 1 gRPC calls ok, 0 failed/);
    proc.kill('SIGINT');
    assert.equal(await exited, 0, out);
  });
});
