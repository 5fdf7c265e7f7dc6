/**
 * The conventions a user of kubectl or linkerd expects, run as real processes: `--version`,
 * `help CMD`, "did you mean" for a mistyped command, subcommand or flag, one error prefix,
 * subcommands and defaults in `--help`, and `--fips` refused by every command on a Node.js
 * without a FIPS provider.
 */
import { strict as assert } from 'node:assert';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { COMMAND_SETTINGS, configReference } from '../../core/index.js';
import type { CommandName } from '../../core/index.js';
import { TRUST_SUBCOMMANDS } from '../../cli/trust.js';
import { runMeshid } from '../support/ca-process.js';

/** Runs the commands a few at a time: a loaded machine starts thirteen node processes slowly. */
async function runAll(argvs: string[][]): Promise<Awaited<ReturnType<typeof runMeshid>>[]> {
  const results: Awaited<ReturnType<typeof runMeshid>>[] = [];
  for (let i = 0; i < argvs.length; i += 3)
    results.push(...(await Promise.all(argvs.slice(i, i + 3).map((a) => runMeshid(a)))));
  return results;
}

describe('meshid CLI conventions (real processes)', function () {
  this.timeout(300_000);
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshid-conventions-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('--version prints the package version and the runtime, exit 0', async () => {
    const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string };
    const r = await runMeshid(['--version']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(
      r.stdout,
      `meshid ${pkg.version} (Node.js ${process.version}, OpenSSL ${process.versions.openssl})\n`,
    );
  });

  it('help CMD prints what CMD --help prints, exit 0; help alone lists the commands', async () => {
    const [viaHelp, viaFlag, all] = await Promise.all([
      runMeshid(['help', 'check']),
      runMeshid(['check', '--help']),
      runMeshid(['help']),
    ]);
    assert.equal(viaHelp.code, 0);
    assert.equal(viaFlag.code, 0);
    assert.equal(viaHelp.stdout, viaFlag.stdout);
    assert.match(viaHelp.stdout, /^meshid check: /);
    assert.equal(all.code, 0);
    for (const command of Object.keys(COMMAND_SETTINGS))
      assert.match(all.stdout, new RegExp(`^ {2}meshid ${command} `, 'm'));
  });

  it('a mistyped command gets the nearest one suggested, exit 2', async () => {
    const r = await runMeshid(['chek', '--dir', dir]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^meshid: unknown command "chek"; did you mean "check"\?\n/);
    const h = await runMeshid(['help', 'instal']);
    assert.equal(h.code, 2);
    assert.match(h.stderr, /unknown command "instal"; did you mean "install"\?/);
  });

  it('a mistyped flag gets the flag suggested, under one "meshid check:" prefix, exit 2', async () => {
    const r = await runMeshid(['check', '--dri', dir]);
    assert.equal(r.code, 2);
    assert.equal(
      r.stderr,
      "meshid check: unknown flag --dri; did you mean --dir? ('meshid check --help' lists every flag) [ERR_CONFIG_INVALID]\n",
    );
  });

  it('a mistyped trust subcommand gets the subcommand suggested, exit 2', async () => {
    const r = await runMeshid(['trust', 'rotat', '--dir', dir]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^meshid trust: unknown subcommand "rotat"; did you mean "rotate"\?/);
  });

  it('every error is printed under one prefix', async () => {
    const r = await runMeshid(['trust', 'validate']);
    assert.equal(r.code, 2);
    assert.doesNotMatch(r.stderr, /meshid trust: meshid trust/);
    assert.match(r.stderr, /^meshid trust validate: exactly one FILE is required/);
  });

  it('trust --help lists every subcommand', async () => {
    const r = await runMeshid(['trust', '--help']);
    assert.equal(r.code, 0);
    for (const sub of TRUST_SUBCOMMANDS)
      assert.match(r.stdout, new RegExp(`meshid trust [a-z|]*${sub}`));
  });

  it('every --help shows each setting with its variable and its default', async () => {
    const reference = configReference();
    const commands = Object.keys(COMMAND_SETTINGS) as CommandName[];
    const helps = await runAll(commands.map((c) => [c, '--help']));
    commands.forEach((command, i) => {
      const r = helps[i]!;
      assert.equal(r.code, 0, `${command}: ${r.stderr}`);
      for (const s of reference[command]) {
        const shown =
          s.default === undefined ||
          s.default === '' ||
          (s.kind === 'boolean' && s.default === 'false')
            ? ''
            : `, default ${s.default}`;
        assert.ok(
          r.stdout.includes(`  ${s.flag} (${s.env})${shown}\n`),
          `meshid ${command} --help does not show ${s.flag} (${s.env})${shown}`,
        );
      }
    });
    assert.match(
      helps[commands.indexOf('ca')]!.stdout,
      /--cert-lifetime \(MESHID_CERT_LIFETIME\), default 24h\n/,
    );
  });

  // The arguments that make each command's configuration valid, so that only FIPS can stop it.
  const FIPS_ARGS: Record<CommandName, (d: string) => string[]> = {
    init: (d) => ['--dir', join(d, 'init')],
    token: (d) => ['--dir', join(d, 'token'), '--ns', 'emojivoto', '--sa', 'web'],
    ca: (d) => ['--dir', join(d, 'ca'), '--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0'],
    proxy: (d) => [
      '--identity-addr',
      '127.0.0.1:1',
      '--identity-name',
      'linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local',
      '--trust-anchors',
      join(d, 'anchors.pem'),
      '--token-file',
      join(d, 'token'),
      '--local-identity',
      'web.emojivoto.serviceaccount.identity.linkerd.cluster.local',
      '--admin',
      '127.0.0.1:0',
    ],
    'proxy-init': () => ['--dry-run'],
    local: (d) => ['--dir', join(d, 'local'), '--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0'],
    webhooks: (d) => ['--tls-dir', join(d, 'tls'), '--listen', '127.0.0.1:0'],
    destination: (d) => [
      '--trust-anchors',
      join(d, 'anchors.pem'),
      '--token-file',
      join(d, 'token'),
    ],
    install: () => [],
    check: (d) => ['--dir', join(d, 'check')],
    identity: (d) => [join(d, 'leaf.pem')],
    version: () => [],
    trust: (d) => ['status', '--dir', join(d, 'trust')],
  };

  it('--fips is refused by every command on a Node.js without a FIPS provider, exit 1, nothing written', async () => {
    const commands = Object.keys(COMMAND_SETTINGS) as CommandName[];
    const runs = await runAll(commands.map((c) => [c, ...FIPS_ARGS[c](dir), '--fips']));
    commands.forEach((command, i) => {
      const r = runs[i]!;
      assert.equal(r.code, 1, `meshid ${command} --fips exited ${r.code}: ${r.stdout}${r.stderr}`);
      assert.match(
        r.stderr,
        new RegExp(
          `^meshid ${command}: FIPS mode was requested .*\\[ERR_FIPS_UNAVAILABLE\\]\\n$`,
          's',
        ),
        `meshid ${command}`,
      );
      assert.equal(r.stdout, '', `meshid ${command} printed ${r.stdout}`);
    });
    for (const made of ['init', 'local', 'ca', 'trust'])
      assert.equal(existsSync(join(dir, made)), false, `--fips ${made} wrote ${made}/`);
    // The environment variable is refused the same way.
    const env = await runMeshid(['version'], { MESHID_FIPS: '1' });
    assert.equal(env.code, 1);
    assert.match(env.stderr, /\[ERR_FIPS_UNAVAILABLE\]/);
  });
});
