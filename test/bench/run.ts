/**
 * `npm run bench`: Certify throughput against the raw cost of its cryptography, in one run.
 *
 * 1. Raw crypto with node:crypto, synchronous, one core: one ECDSA P-256 sign, one P-256 verify
 *    (the CSR's proof of possession), one RS256 verify (the token). Their summed cost is the
 *    upper bound of Certify calls per second per core.
 * 2. The hot path's own steps (CSR parse, CSR verify, leaf build+sign) against @peculiar/x509.
 * 3. Token validation: meshid's JWKS validator against jose's jwtVerify on the same token.
 * 4. `meshid ca` as a real process, loaded by h2load (a real HTTP/2 load tool, from Debian's
 *    nghttp2-client) with concurrent Certify calls over TLS for a fixed time: first one worker
 *    pinned to core 0 with h2load pinned to core 1 (the per-core figure), then two workers on
 *    both cores with h2load sharing them. Every call does the full work: JWKS token validation,
 *    CSR parse and proof of possession, leaf signing. The CA's own metrics confirm that every
 *    call was issued and none refused; the CA's CPU time per certificate is read from /proc.
 *
 * 5. The restart storm (`storm.ts`): thousands of proxies asking at once, backpressure on and off.
 * 6. The proxy path (`proxy.ts`).
 * 6b. The transparent path beside the explicit one and nginx, between network namespaces
 *    (`transparent.ts`).
 * 7. The mesh TLS handshake without resumption against a resumed one (`handshake.ts`).
 * 8. The destination service's endpoint index at 10,000 pods (`destination.ts`): memory and update time.
 * 9. Node 20 and Node 26 side by side (`runtimes.ts`), with the figures of 4 and 6 from this run.
 *
 * 10. Pod certificates (`podcert.ts`): PodCertificateRequests issued per second through the API
 *    test double, one and two CA replicas, beside Certify's rate through the same double.
 *
 * `BENCH_PARTS` picks parts: `ca` (1 to 4), `storm`, `proxy`, `transparent`, `handshake`,
 * `destination`, `runtimes`, `podcert`, comma-separated; default all.
 * Medians of several alternating rounds; the machine is shared and noisy, so ratios measured in
 * the same run matter more than absolute numbers. Bounded: every load stops by itself.
 */
import 'reflect-metadata';
import { execFileSync, spawnSync } from 'node:child_process';
import { createSign, generateKeyPairSync, sign, verify } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createLocalJWKSet, jwtVerify } from 'jose';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir, availableParallelism } from 'node:os';
import { join } from 'node:path';
import { CERTIFY_PATH, createCsr, encodeCertifyRequest, systemClock } from '../../core/index.js';
import { silentLogger } from '../../core/logger.js';
import { JwksTokenValidator } from '../../identity-ca/index.js';
import { NO_RATE_LIMITS, adminGet, metricValue, startCaProcess } from '../support/ca-process.js';
import { TOKEN_ISSUER, idOf, makeTestState } from '../support/state.js';
import { measureHotPath } from './hot-path.js';
import { treeCpuSeconds } from '../support/proc.js';
import { runHandshakeBench } from './handshake.js';
import { runProxyBench } from './proxy.js';
import { runTransparentBench } from './transparent.js';
import { runDestinationBench } from './destination.js';
import { median, percentile } from './stats.js';
import { runStormBench } from './storm.js';
import { runRuntimesBench } from './runtimes.js';
import type { CertifyFigures } from './runtimes.js';
import { runPodCertBench } from './podcert.js';

const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 3);
const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 5);
/**
 * Load before measuring. V8 keeps optimising the CA's code for several seconds under load
 * (measured: 1,170 → 1,760 → 2,390 cert/s over the first three 2 s intervals on one core), and a
 * CA runs for days, so the steady state is what is measured.
 */
const WARMUP_SECONDS = Number(process.env['BENCH_WARMUP_SECONDS'] ?? 8);
/** Node options of the CA processes under h2load, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`. */
const CA_NODE_ARGS = (process.env['BENCH_CA_NODE_ARGS'] ?? '').split(' ').filter(Boolean);
/**
 * Which parts run: any of `ca`, `storm`, `proxy`, `transparent`, `handshake`, `destination`,
 * `runtimes`, comma-separated (default all).
 */
const PARTS = new Set(
  (
    process.env['BENCH_PARTS'] ??
    'ca,storm,proxy,transparent,handshake,destination,runtimes,podcert'
  ).split(','),
);
const out = (s = ''): boolean => process.stdout.write(`${s}\n`);

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

interface RawCrypto {
  signP256: number;
  verifyP256: number;
  verifyRs256: number;
  boundPerCore: number;
}

const rawKeys = {
  ec: generateKeyPairSync('ec', { namedCurve: 'P-256' }),
  rsa: generateKeyPairSync('rsa', { modulusLength: 2048 }),
};

/** The raw bound, measured again in every round: the machine's speed drifts between minutes. */
function rawCrypto(): RawCrypto {
  const { ec, rsa } = rawKeys;
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
  /** CPU time of the CA's processes (primary and workers) per certificate issued, µs. */
  readonly cpuUsPerCert: number;
  readonly p50ms: number;
  readonly p99ms: number;
  readonly requests: number;
  readonly issued: number;
  readonly refused: number;
}

/** How the CA and the load generator are placed on the cores. */
interface Setting {
  readonly workers: number;
  readonly caCores?: string;
  readonly loadCores?: string;
}

const taskset = (cores: string | undefined): string[] =>
  cores === undefined ? [] : ['taskset', '-c', cores];

async function loadCa(
  h2load: string,
  setting: Setting,
  body: string,
  dir: string,
  caArgs: string[],
): Promise<LoadResult> {
  const ca = await startCaProcess(
    // h2load is one address asking for one identity; the admission queue stays on.
    [...caArgs, '--workers', String(setting.workers), '--log-level', 'warn', ...NO_RATE_LIMITS],
    {},
    { prefix: taskset(setting.caCores), nodeArgs: CA_NODE_ARGS },
  );
  try {
    const metrics = async (): Promise<{ issued: number; refused: number }> => {
      const text = (await adminGet(ca.admin, '/metrics')).body;
      const v = (o: string): number => {
        const n = metricValue(text, 'meshid_certify_requests_total', { outcome: o });
        return Number.isNaN(n) ? 0 : n;
      };
      return { issued: v('issued'), refused: v('refused') + v('error') };
    };
    const url = `https://127.0.0.1:${ca.address.port}${CERTIFY_PATH}`;
    const run = (
      seconds: number,
      extra: string[],
    ): { status: number | null; stdout: string; stderr: string } => {
      const argv = [
        ...taskset(setting.loadCores),
        h2load,
        ...['-D', String(seconds), '-c', '8', '-m', '4', '-t', '1', '-d', body],
        ...['-H', 'content-type: application/grpc', '-H', 'te: trailers', ...extra, url],
      ];
      return spawnSync(argv[0]!, argv.slice(1), {
        encoding: 'utf8',
        timeout: (seconds + 30) * 1000,
      });
    };
    run(WARMUP_SECONDS, []); // JIT, connections, caches
    const log = join(dir, `h2load-${setting.workers}-${Date.now()}.tsv`);
    const before = await metrics();
    const cpu0 = treeCpuSeconds(ca.proc.pid!);
    const res = run(SECONDS, [`--log-file=${log}`]);
    const cpu1 = treeCpuSeconds(ca.proc.pid!);
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
    const issued = after.issued - before.issued;
    return {
      rps: m === null ? NaN : Number(m[3]),
      cpuUsPerCert: ((cpu1 - cpu0) * 1e6) / issued,
      p50ms: percentile(latencies, 50),
      p99ms: percentile(latencies, 99),
      requests: succeeded === null ? NaN : Number(succeeded[1]),
      issued,
      refused: after.refused - before.refused,
    };
  } finally {
    await ca.stop();
  }
}

/** Median µs per validate of `fn` over 5 rounds of `n` sequential calls. */
async function microsecondsAsync(fn: () => Promise<unknown>, n = 2000): Promise<number> {
  const rounds: number[] = [];
  for (let r = 0; r < 6; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) await fn();
    if (r > 0) rounds.push(Number(process.hrtime.bigint() - t0) / 1000 / n);
  }
  return median(rounds);
}

async function main(): Promise<CertifyFigures> {
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
  for (const [k, v] of Object.entries(hot)) out(`  ${k.padEnd(48)} ${v.toFixed(1)}`);

  const state = await makeTestState();
  const identity = idOf('bench', 'load');
  const token = await state.token('bench', 'load', { ttlMs: 3_600_000 });
  const validator = await JwksTokenValidator.create({
    jwks: { file: state.jwksFile },
    issuer: TOKEN_ISSUER,
    audience: 'identity.l5d.io',
    clockSkewMs: 20_000,
    clock: systemClock,
    logger: silentLogger(),
  });
  const tokenBytes = Buffer.from(token);
  const keySet = createLocalJWKSet(
    JSON.parse(await readFile(state.jwksFile, 'utf8')) as Parameters<typeof createLocalJWKSet>[0],
  );
  const tokenMeshid = await microsecondsAsync(() => validator.validate(tokenBytes));
  const tokenJose = await microsecondsAsync(() =>
    jwtVerify(token, keySet, {
      issuer: TOKEN_ISSUER,
      audience: 'identity.l5d.io',
      algorithms: ['RS256'],
    }),
  );
  await validator.close();
  out(
    `  ${'token validation, RS256 (meshid JWKS validator)'.padEnd(48)} ${tokenMeshid.toFixed(1)}`,
  );
  out(`  ${"token validation, RS256 (jose's jwtVerify)".padEnd(48)} ${tokenJose.toFixed(1)}`);
  out();

  const h2load = ensureH2load();
  const dir = mkdtempSync(join(tmpdir(), 'meshid-bench-'));
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const csr = createCsr({ privateKey, commonName: identity, dnsNames: [identity] });
  const msg = encodeCertifyRequest({ identity, token: tokenBytes, certificateSigningRequest: csr });
  const frame = Buffer.alloc(5 + msg.length);
  frame.writeUInt32BE(msg.length, 1);
  msg.copy(frame, 5);
  const body = join(dir, 'certify-request.bin');
  writeFileSync(body, frame);

  const settings = {
    one: { workers: 1, caCores: '0', loadCores: '1' },
    two: { workers: 2 },
  } as const satisfies Record<string, Setting>;
  const runs: Record<keyof typeof settings, LoadResult[]> = { one: [], two: [] };
  out(
    `Certify over gRPC/TLS (h2load: 8 connections × 4 streams, ${SECONDS}s per run after a ${WARMUP_SECONDS}s warm-up)`,
  );
  const bounds: RawCrypto[] = [raw];
  for (let r = 0; r < ROUNDS; r++) {
    if (r > 0) bounds.push(rawCrypto());
    const bound = bounds[r]!.boundPerCore;
    out(`  round ${r + 1}: raw bound ${bound.toFixed(0)}/s per core`);
    for (const name of ['one', 'two'] as const) {
      const res = await loadCa(h2load, settings[name], body, dir, state.caArgs);
      if (res.refused > 0 || res.issued < res.requests) {
        throw new Error(
          `round ${r}, ${name}: ${res.requests} requests but ${res.issued} issued and ${res.refused} refused`,
        );
      }
      runs[name].push(res);
      const perCore = res.rps / settings[name].workers / bound;
      out(
        `  round ${r + 1}, ${name === 'one' ? '1 worker on core 0' : '2 workers, 2 cores'}: ${res.rps.toFixed(0)} cert/s (${perCore.toFixed(2)} of the bound per core), p50 ${res.p50ms.toFixed(2)} ms, p99 ${res.p99ms.toFixed(2)} ms, CA CPU ${res.cpuUsPerCert.toFixed(0)} µs/cert (${res.issued} issued, ${res.refused} refused)`,
      );
    }
  }
  await state.cleanup();

  const summary = (
    runsOf: LoadResult[],
  ): { rps: number; p50: number; p99: number; cpu: number } => ({
    rps: median(runsOf.map((x) => x.rps)),
    p50: median(runsOf.map((x) => x.p50ms)),
    p99: median(runsOf.map((x) => x.p99ms)),
    cpu: median(runsOf.map((x) => x.cpuUsPerCert)),
  });
  const one = summary(runs.one);
  const two = summary(runs.two);
  // Ratios are taken within each round (against that round's bound), then their median.
  const ratioOne = median(runs.one.map((x, i) => x.rps / bounds[i]!.boundPerCore));
  const ratioTwo = median(runs.two.map((x, i) => x.rps / 2 / bounds[i]!.boundPerCore));
  const scaling = median(runs.two.map((x, i) => x.rps / runs.one[i]!.rps));
  const bound = median(bounds.map((b) => b.boundPerCore));
  out();
  out(
    '| CA setting | certificates/s | p50 ms | p99 ms | CA CPU µs/cert | ÷ raw bound per core | vs 1 worker |',
  );
  out('|---|---:|---:|---:|---:|---:|---:|');
  out(
    `| 1 worker, pinned to 1 core | ${one.rps.toFixed(0)} | ${one.p50.toFixed(2)} | ${one.p99.toFixed(2)} | ${one.cpu.toFixed(0)} | ${ratioOne.toFixed(2)} | 1.00 |`,
  );
  out(
    `| 2 workers, 2 cores | ${two.rps.toFixed(0)} | ${two.p50.toFixed(2)} | ${two.p99.toFixed(2)} | ${two.cpu.toFixed(0)} | ${ratioTwo.toFixed(2)} per core | ${scaling.toFixed(2)} |`,
  );
  out();
  out(
    `raw bound: median ${bound.toFixed(0)}/s per core over the rounds (one P-256 sign + one P-256 verify + one RS256 verify, keys already loaded); ratios are medians of per-round ratios`,
  );
  out(
    `targets: 1 worker ≥ 0.35 of the raw bound (${(0.35 * bound).toFixed(0)}/s); 2 workers ≥ 1.6× one worker.`,
  );
  out(
    'The 2-worker run shares both cores with h2load; the 1-worker run has core 1 to h2load alone.',
  );
  writeFileSync(
    join(resultsDir, 'certify.json'),
    JSON.stringify(
      { bounds, hot, tokenMeshid, tokenJose, runs, one, two, ratioOne, ratioTwo, scaling },
      null,
      2,
    ),
  );
  return { ratioOne, ratioTwo, scaling, cpuUsPerCert: one.cpu };
}

let certify: CertifyFigures | undefined;
if (PARTS.has('ca')) {
  certify = await main();
  out();
}
if (PARTS.has('storm')) {
  await runStormBench(out);
  out();
}
if (PARTS.has('proxy')) await runProxyBench(out);
if (PARTS.has('transparent')) {
  out();
  await runTransparentBench(out);
}
if (PARTS.has('handshake')) await runHandshakeBench(out);
if (PARTS.has('destination')) {
  out();
  runDestinationBench(out);
}
if (PARTS.has('runtimes')) {
  out();
  await runRuntimesBench(out, certify, PARTS.has('proxy'));
}
if (PARTS.has('podcert')) {
  out();
  await runPodCertBench(out);
}
