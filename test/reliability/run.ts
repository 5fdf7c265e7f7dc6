/**
 * `npm run test:reliability`: the long runs of the reliability suites and their table.
 *
 * Builds (the soak and fault suites spawn `bin/meshid.js`, which runs `dist/`), then runs mocha
 * over the Certify fuzzer, the Certify property tests and every `test/reliability/**\/*.test.ts`
 * with long-run sizes, each suite appending its figures to a temporary report file
 * (`MESHID_RELIABILITY_REPORT`, see test/support/reliability-report.ts). Then it prints one row per
 * suite and a total row, and exits non-zero if a test failed, if any certificate was wrongly
 * issued, if any request failed where none may, or if the run overran its deadline.
 *
 * Sizes already set in the environment win over the long-run defaults, so a shorter run is e.g.
 * `MESHID_SOAK_MINUTES=1 MESHID_FUZZ_CASES=5000 npm run test:reliability`. Arguments: `--no-build`;
 * options starting with `-` go to mocha (`--grep soak`); file arguments replace the suite list.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  readReliability,
  reliabilityProblems,
  reliabilityTable,
} from '../support/reliability-report.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** What runs: the fuzzer and the property tests (bounded slices of both are in `npm test`) and all suites here. */
const SUITES = [
  'test/unit/identity-ca/fuzz.test.ts',
  'test/unit/identity-ca/certify-properties.test.ts',
  'test/reliability/**/*.test.ts',
];

/**
 * Long-run sizes. The fuzzer ran ~1,000 wire cases/s (and its parser half 2x as many at ~3,000/s)
 * on the shared 2-core machine, so 120k wire cases take about two and a half minutes.
 */
const LONG_RUN: Record<string, string> = {
  MESHID_FUZZ_CASES: '120000',
  MESHID_PROPERTY_RUNS: '20000',
  MESHID_PROPERTY_WIRE_RUNS: '1000',
  MESHID_SOAK_MINUTES: '10',
};

/** The whole run is stopped (and fails) after this long; the issue asks for 30 minutes. */
const DEADLINE_MINUTES = Number(process.env['MESHID_RELIABILITY_DEADLINE_MINUTES'] ?? 30);

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, deadline?: number) {
  return new Promise<{ code: number; timedOut: boolean }>((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: ROOT, env, stdio: 'inherit' });
    let timedOut = false;
    let kill: NodeJS.Timeout | undefined;
    const timer =
      deadline === undefined
        ? undefined
        : setTimeout(
            () => {
              timedOut = true;
              process.stderr.write(
                `\ntest:reliability: over its ${DEADLINE_MINUTES}-minute deadline; stopping mocha\n`,
              );
              child.kill('SIGTERM');
              kill = setTimeout(() => child.kill('SIGKILL'), 10_000);
            },
            Math.max(0, deadline - Date.now()),
          );
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      clearTimeout(kill);
      resolve({ code: code ?? (signal === null ? 1 : 128), timedOut });
    });
  });
}

async function main(): Promise<number> {
  const started = Date.now();
  const deadline = started + DEADLINE_MINUTES * 60_000;
  const argv = process.argv.slice(2);
  const build = !argv.includes('--no-build');
  const rest = argv.filter((a) => a !== '--no-build');
  const files = rest.filter((a) => !a.startsWith('-'));
  const mochaOptions = rest.filter((a) => a.startsWith('-'));

  if (build) {
    const b = await run('npm', ['run', 'build'], process.env);
    if (b.code !== 0) {
      process.stderr.write('test:reliability: the build failed\n');
      return 1;
    }
  }
  const dir = mkdtempSync(join(tmpdir(), 'meshid-reliability-'));
  const report = join(dir, 'report.jsonl');
  const env: NodeJS.ProcessEnv = { ...LONG_RUN, ...process.env, MESHID_RELIABILITY_REPORT: report };
  const sizes = Object.keys(LONG_RUN)
    .map((k) => `${k}=${env[k] ?? ''}`)
    .join(' ');
  process.stdout.write(`test:reliability: ${sizes}; deadline ${DEADLINE_MINUTES} min\n`);
  try {
    const mocha = await run(
      process.execPath,
      [
        join(ROOT, 'node_modules/mocha/bin/mocha.js'),
        ...mochaOptions,
        ...(files.length > 0 ? files : SUITES),
      ],
      env,
      deadline,
    );
    const records = readReliability(report);
    const problems = reliabilityProblems(records);
    if (mocha.code !== 0) problems.push(`mocha exited with ${mocha.code} (a test failed)`);
    if (mocha.timedOut) problems.push(`the run overran its ${DEADLINE_MINUTES}-minute deadline`);
    const minutes = ((Date.now() - started) / 60_000).toFixed(1);
    process.stdout.write(
      `\nReliability (${minutes} min, ${sizes}):\n\n${reliabilityTable(records)}\n`,
    );
    if (problems.length > 0) {
      process.stdout.write(`FAILED:\n${problems.map((p) => `- ${p}`).join('\n')}\n`);
      return 1;
    }
    process.stdout.write('PASSED: nothing wrongly issued, nothing failed where none may\n');
    return 0;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

process.exitCode = await main();
