/**
 * `npm run bench`: Certify throughput against the raw cost of its cryptography, in one run.
 *
 * 1. Raw crypto with node:crypto, synchronous, one core: one ECDSA P-256 sign, one P-256 verify
 *    (the CSR's proof of possession), one RS256 verify (the token). Their summed cost is the
 *    upper bound of Certify calls per second per core.
 * 2. The hot path's own steps (CSR parse, CSR verify, leaf build+sign) against @peculiar/x509.
 * 3. `meshid ca` as a real process with 1 and then 2 worker processes, loaded by h2load (a real
 *    HTTP/2 load tool, from Debian's nghttp2-client) with concurrent Certify calls over TLS for a
 *    fixed time. Every call does the full work: JWKS token validation, CSR parse and signature
 *    check, leaf signing. The CA's own metrics confirm every call was issued, none refused.
 *
 * Medians of several alternating rounds; the machine is shared and noisy, so ratios measured in
 * the same run matter more than absolute numbers. Bounded: every load stops by itself.
 */
import 'reflect-metadata';
import { execFileSync, spawnSync } from 'node:child_process';
import { createSign, generateKeyPairSync, sign, verify } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir, availableParallelism } from 'node:os';
import { join } from 'node:path';
import { createCsr } from '../../core/index.js';
import { encodeCertifyRequest, CERTIFY_PATH } from '../../identity-ca/index.js';
import { adminGet, metricValue, startCaProcess } from '../support/ca-process.js';
import { idOf, makeTestState } from '../support/state.js';
import { measureHotPath } from './hot-path.js';

const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 3);
const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 5);
const out = (s = ''): boolean => process.stdout.write(`${s}\n`);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** Median µs per call of `fn` over 5 rounds of at least `ms` each. */
function microseconds(fn: () => void, ms = 300): number {
  const rounds: number[] = [];
  for (let r = 0; r < 5; r++) {
    let n = 0;
    const t0 = process.hrtime.bigint();
    const end = t0 + BigInt(ms) * 1_000_000n;
    let t = t0;
    while (t < end) {
      for (let i = 0; i < 20; i++) fn();
      n += 20;
      t = process.hrtime.bigint();
    }
    rounds.push(Number(t - t0) / 1000 / n);
  }
  return median(rounds);
}

function rawCrypto(): {
  signP256: number;
  verifyP256: number;
  verifyRs256: number;
  boundPerCore: number;
} {
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const data = Buffer.alloc(400, 7);
  const ecSig = sign('sha256', data, ec.privateKey);
  const rsaSig = createSign('sha256').update(data).sign(rsa.privateKey);
  const signP256 = microseconds(() => sign('sha256', data, ec.privateKey));
  const verifyP256 = microseconds(() => verify('sha256', data, ec.publicKey, ecSig));
  const verifyRs256 = microseconds(() => verify('sha256', data, rsa.publicKey, rsaSig));
  return {
    signP256,
    verifyP256,
    verifyRs256,
    boundPerCore: 1e6 / (signP256 + verifyP256 + verifyRs256),
  };
}

function ensureH2load(): string {
  const found = spawnSync('sh', ['-c', 'command -v h2load'], { encoding: 'utf8' }).stdout.trim();
  if (found !== '') return found;
  out('installing h2load (Debian package nghttp2-client)…');
  execFileSync(
    'sh',
    [
      '-c',
      'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client >/dev/null',
    ],
    { stdio: 'inherit' },
  );
  return spawnSync('sh', ['-c', 'command -v h2load'], { encoding: 'utf8' }).stdout.trim();
}

interface LoadResult {
  readonly rps: number;
  readonly p50ms: number;
  readonly p99ms: number;
  readonly requests: number;
  readonly issued: number;
  readonly refused: number;
}

async function loadCa(
  h2load: string,
  workers: number,
  body: string,
  dir: string,
  caArgs: string[],
): Promise<LoadResult> {
  const ca = await startCaProcess([...caArgs, '--workers', String(workers), '--log-level', 'warn']);
  try {
    const metrics = async (): Promise<{ issued: number; refused: number }> => {
      const text = (await adminGet(ca.admin, '/metrics')).body;
      const v = (o: string): number => {
        const n = metricValue(text, 'meshid_certify_requests_total', { outcome: o });
        return Number.isNaN(n) ? 0 : n;
      };
      return { issued: v('issued'), refused: v('refused') + v('error') };
    };
    const before = await metrics();
    const log = join(dir, `h2load-${workers}-${Date.now()}.tsv`);
    const url = `https://127.0.0.1:${ca.address.port}${CERTIFY_PATH}`;
    const res = spawnSync(
      h2load,
      [
        '-D',
        String(SECONDS),
        '--warm-up-time',
        '1',
        '-c',
        '32',
        '-m',
        '4',
        '-t',
        '1',
        '-d',
        body,
        '-H',
        'content-type: application/grpc',
        '-H',
        'te: trailers',
        `--log-file=${log}`,
        url,
      ],
      { encoding: 'utf8', timeout: (SECONDS + 30) * 1000 },
    );
    if (res.status !== 0) throw new Error(`h2load failed: ${res.stderr}\n${res.stdout}`);
    const after = await metrics();
    const latencies = readFileSync(log, 'utf8')
      .trim()
      .split('\n')
      .map((l) => l.split('\t'))
      .filter((c) => c[1] === '200')
      .map((c) => Number(c[2]) / 1000)
      .sort((a, b) => a - b);
    const m = /finished in ([\d.]+)(m?s), ([\d.]+) req\/s/.exec(res.stdout);
    const succeeded = /(\d+) succeeded/.exec(res.stdout);
    return {
      rps: m === null ? NaN : Number(m[3]),
      p50ms: percentile(latencies, 50),
      p99ms: percentile(latencies, 99),
      requests: succeeded === null ? NaN : Number(succeeded[1]),
      issued: after.issued - before.issued,
      refused: after.refused - before.refused,
    };
  } finally {
    await ca.stop();
  }
}

async function main(): Promise<void> {
  const resultsDir = join(process.cwd(), 'bench-results');
  mkdirSync(resultsDir, { recursive: true });
  out(
    `meshid bench — node ${process.version}, ${availableParallelism()} cores, ${ROUNDS} rounds × ${SECONDS}s per CA setting`,
  );
  out();

  const raw = rawCrypto();
  out('Raw crypto per Certify (node:crypto, synchronous, one core, median of 5)');
  out(
    `  P-256 sign ${raw.signP256.toFixed(1)} µs | P-256 verify ${raw.verifyP256.toFixed(1)} µs | RS256 verify ${raw.verifyRs256.toFixed(1)} µs`,
  );
  out(`  raw bound: ${raw.boundPerCore.toFixed(0)} Certify/s per core`);
  out();

  const hot = await measureHotPath();
  out('Hot path steps (µs/op, median of 5)');
  for (const [k, v] of Object.entries(hot)) out(`  ${k.padEnd(44)} ${v.toFixed(1)}`);
  out();

  const h2load = ensureH2load();
  const dir = mkdtempSync(join(tmpdir(), 'meshid-bench-'));
  const state = await makeTestState();
  const identity = idOf('bench', 'load');
  const token = await state.token('bench', 'load', { ttlMs: 3_600_000 });
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const csr = createCsr({ privateKey, commonName: identity, dnsNames: [identity] });
  const msg = encodeCertifyRequest({
    identity,
    token: Buffer.from(token),
    certificateSigningRequest: csr,
  });
  const frame = Buffer.alloc(5 + msg.length);
  frame.writeUInt32BE(msg.length, 1);
  msg.copy(frame, 5);
  const body = join(dir, 'certify-request.bin');
  writeFileSync(body, frame);

  const runs: Record<number, LoadResult[]> = { 1: [], 2: [] };
  for (let r = 0; r < ROUNDS; r++) {
    for (const workers of [1, 2]) {
      const res = await loadCa(h2load, workers, body, dir, state.caArgs);
      if (res.refused > 0 || res.issued < res.requests) {
        throw new Error(
          `round ${r}, ${workers} workers: ${res.requests} requests but ${res.issued} issued and ${res.refused} refused`,
        );
      }
      runs[workers]!.push(res);
      out(
        `  round ${r + 1}, ${workers} worker(s): ${res.rps.toFixed(0)} cert/s, p50 ${res.p50ms.toFixed(2)} ms, p99 ${res.p99ms.toFixed(2)} ms (${res.issued} issued, ${res.refused} refused)`,
      );
    }
  }
  await state.cleanup();

  const summary = (w: number): { rps: number; p50: number; p99: number } => ({
    rps: median(runs[w]!.map((x) => x.rps)),
    p50: median(runs[w]!.map((x) => x.p50ms)),
    p99: median(runs[w]!.map((x) => x.p99ms)),
  });
  const one = summary(1);
  const two = summary(2);
  out();
  out('| CA setting | certificates/s | p50 ms | p99 ms | ÷ raw bound per core | vs 1 worker |');
  out('|---|---:|---:|---:|---:|---:|');
  out(
    `| 1 worker  | ${one.rps.toFixed(0)} | ${one.p50.toFixed(2)} | ${one.p99.toFixed(2)} | ${(one.rps / raw.boundPerCore).toFixed(2)} | 1.00 |`,
  );
  out(
    `| 2 workers | ${two.rps.toFixed(0)} | ${two.p50.toFixed(2)} | ${two.p99.toFixed(2)} | ${(two.rps / 2 / raw.boundPerCore).toFixed(2)} per core | ${(two.rps / one.rps).toFixed(2)} |`,
  );
  out();
  out(
    `targets: 1 worker ≥ 0.35 of the raw bound (${(0.35 * raw.boundPerCore).toFixed(0)}/s); 2 workers ≥ 1.6× one worker.`,
  );
  out('(the load generator, h2load, runs on the same two cores as the CA)');
  writeFileSync(
    join(resultsDir, 'certify.json'),
    JSON.stringify({ raw, hot, runs, one, two }, null, 2),
  );
}

await main();
