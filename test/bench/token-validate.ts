/**
 * µs per JwksTokenValidator.validate for RS256 (2048-bit) and ES256 tokens, next to jose's bare
 * jwtVerify with the same key set, so that the validator's own overhead shows.
 *
 *   node --import tsx test/bench/token-validate.ts
 *
 * Each figure is the median of 5 rounds of 2,000 sequential calls, after a warm-up of 1,000. The
 * machine is shared and noisy; compare the two columns of one run rather than runs with each other.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SignJWT, createLocalJWKSet, exportJWK, generateKeyPair, jwtVerify } from 'jose';
import { ManualClock, silentLogger } from '../../core/index.js';
import { JwksTokenValidator } from '../../identity-ca/token/jwks.js';

const ROUNDS = 5;
const ITERATIONS = 2000;
const ISSUER = 'https://kubernetes.default.svc.cluster.local';
const AUDIENCE = 'identity.l5d.io';
const out = (s = ''): boolean => process.stdout.write(`${s}\n`);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

type Measure = { wall: number; cpu: number };

/** One round: µs per call of `fn` over ITERATIONS sequential calls, wall clock and CPU. */
async function round(fn: () => Promise<unknown>): Promise<Measure> {
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < ITERATIONS; i++) await fn();
  const wall = Number(process.hrtime.bigint() - t0) / 1000 / ITERATIONS;
  const c = process.cpuUsage(c0);
  return { wall, cpu: (c.user + c.system) / ITERATIONS };
}

/**
 * Median wall-clock and CPU µs per call of `a` and `b`, their rounds interleaved (and the order
 * alternated) so that JIT warm-up and the neighbours' load fall on both alike. CPU covers all of
 * the process's threads, so WebCrypto's thread-pool work counts; it moves less on a busy machine.
 */
async function compare(
  a: () => Promise<unknown>,
  b: () => Promise<unknown>,
): Promise<[Measure, Measure]> {
  for (let i = 0; i < 1000; i++) await a();
  for (let i = 0; i < 1000; i++) await b();
  const ra: Measure[] = [];
  const rb: Measure[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    if (r % 2 === 0) {
      ra.push(await round(a));
      rb.push(await round(b));
    } else {
      rb.push(await round(b));
      ra.push(await round(a));
    }
  }
  const med = (ms: Measure[]): Measure => ({
    wall: median(ms.map((m) => m.wall)),
    cpu: median(ms.map((m) => m.cpu)),
  });
  return [med(ra), med(rb)];
}

const show = (m: { wall: number; cpu: number }): string =>
  `${m.wall.toFixed(1).padStart(7)} wall ${m.cpu.toFixed(1).padStart(7)} cpu`;

const now = Date.now();
const clock = new ManualClock(now);
const dir = await mkdtemp(join(tmpdir(), 'meshid-bench-'));
try {
  const algs = ['RS256', 'ES256'] as const;
  const pairs = await Promise.all(algs.map((alg) => generateKeyPair(alg, { extractable: true })));
  const keys = await Promise.all(
    pairs.map(async (p, i) => ({ ...(await exportJWK(p.publicKey)), kid: algs[i]!, use: 'sig' })),
  );
  const file = join(dir, 'jwks.json');
  await writeFile(file, JSON.stringify({ keys }));
  const validator = await JwksTokenValidator.create({
    jwks: { file },
    issuer: ISSUER,
    audience: AUDIENCE,
    clockSkewMs: 20_000,
    clock,
    logger: silentLogger(),
  });
  const keySet = createLocalJWKSet({ keys });
  out(`token validation, median of ${ROUNDS} rounds x ${ITERATIONS} calls (µs per call)`);
  out('alg     validator.validate         jose jwtVerify alone');
  for (const [i, alg] of algs.entries()) {
    const iat = Math.floor(now / 1000);
    const token = await new SignJWT({
      'kubernetes.io': {
        namespace: 'emojivoto',
        serviceaccount: { name: 'web', uid: crypto.randomUUID() },
        pod: { name: 'web-0', uid: crypto.randomUUID() },
      },
    })
      .setProtectedHeader({ alg, kid: alg })
      .setIssuer(ISSUER)
      .setSubject('system:serviceaccount:emojivoto:web')
      .setAudience([AUDIENCE])
      .setIssuedAt(iat)
      .setNotBefore(iat)
      .setExpirationTime(iat + 86_400)
      .setJti(crypto.randomUUID())
      .sign(pairs[i]!.privateKey);
    const bytes = new TextEncoder().encode(token);
    const [ours, bare] = await compare(
      () => validator.validate(bytes),
      () =>
        jwtVerify(token, keySet, {
          algorithms: [alg],
          issuer: ISSUER,
          audience: AUDIENCE,
          currentDate: new Date(now),
        }),
    );
    out(`${alg}   ${show(ours)}   ${show(bare)}`);
  }
  await validator.close();
} finally {
  await rm(dir, { recursive: true, force: true });
}
