/**
 * Pod certificates (`BENCH_PARTS=podcert`): PodCertificateRequests issued per second by
 * `meshid ca --pod-certificates` through the Kubernetes API test double (a test double; the
 * figures are the double's as much as the CA's), with one replica and with two, beside Certify's
 * rate through the same double in the same run (each call a TokenReview on the double, the
 * review cache off, as each PCR costs a Pod read). Requests are made before the clock starts; each
 * of `BATCHES` batches is created at once and timed until the double accepted its last status
 * write (counted from its request log, no polling in this process, which is the double's); the
 * table gives the median batch rate, and the ratio of two replicas to one.
 */
import { generateKeyPairSync } from 'node:crypto';
import { CertifyClient, createCsr } from '../../core/index.js';
import { NO_RATE_LIMITS, waitFor } from '../support/ca-process.js';
import { median } from './stats.js';
import type { CaProcess } from '../support/ca-process.js';
import type { KubeObject } from '../support/kube-api-server/index.js';
import { startKubeletSim } from '../support/kubelet-sim.js';
import {
  answerOf,
  replicasSeen,
  podCertRequestBodies,
  startPodCertCluster,
  statusWrites,
} from '../support/podcert-cluster.js';
import type { PodCertCluster } from '../support/podcert-cluster.js';
import { CA_IDENTITY, idOf } from '../support/state.js';

const COUNT = Number(process.env['BENCH_PODCERT_COUNT'] ?? 1000);
const CERTIFY_CONCURRENCY = 32;
const BATCHES = 5;

async function prepare(cluster: PodCertCluster, prefix: string): Promise<KubeObject[]> {
  const kubelet = startKubeletSim({
    api: cluster.api,
    nodeName: 'node-a',
    version: '1.36',
    dir: cluster.dir,
  });
  const bodies = await podCertRequestBodies(kubelet, prefix, COUNT);
  kubelet.close();
  return bodies;
}

/** PCRs per second of each batch: a batch created at once, timed until its last status write. */
async function pcrRates(cluster: PodCertCluster, bodies: KubeObject[]): Promise<number[]> {
  const size = Math.ceil(bodies.length / BATCHES);
  const rates: number[] = [];
  for (let at = 0; at < bodies.length; at += size) {
    const batch = bodies.slice(at, at + size);
    const written = statusWrites(cluster, batch.length, 600_000);
    const t0 = performance.now();
    for (const b of batch) cluster.api.create(b);
    await written;
    rates.push(batch.length / ((performance.now() - t0) / 1000));
  }
  const names = new Set(bodies.map((b) => b.metadata.name));
  const issued = cluster
    .requests()
    .filter((p) => names.has(p.metadata.name) && answerOf(p)?.type === 'Issued').length;
  if (issued !== names.size) throw new Error(`${issued} of ${names.size} requests issued`);
  return rates;
}

/** Certify calls per second of each batch against `ca`, `CERTIFY_CONCURRENCY` at a time. */
async function certifyRates(cluster: PodCertCluster, ca: CaProcess): Promise<number[]> {
  const identity = idOf('emojivoto', 'web');
  const tokens: string[] = [];
  for (let i = 0; i < 50; i++)
    tokens.push(
      (
        await cluster.api.mintToken({
          namespace: 'emojivoto',
          serviceAccount: 'web',
          pod: `certify-${i}`,
          audiences: ['identity.l5d.io'],
        })
      ).token,
    );
  const csrs = Array.from({ length: 50 }, () =>
    createCsr({
      privateKey: generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey,
      dnsNames: [identity],
    }),
  );
  const client = new CertifyClient({
    address: ca.address,
    serverName: CA_IDENTITY,
    anchorsPem: cluster.root.certificatePem,
  });
  try {
    const size = Math.ceil(COUNT / BATCHES);
    const rates: number[] = [];
    for (let b = 0; b < BATCHES; b++) {
      let next = 0;
      const t0 = performance.now();
      const worker = async (): Promise<void> => {
        while (next < size) {
          const i = next++;
          await client.certify({
            identity,
            token: Buffer.from(tokens[i % tokens.length]!),
            certificateSigningRequest: csrs[i % csrs.length]!,
          });
        }
      };
      await Promise.all(Array.from({ length: CERTIFY_CONCURRENCY }, worker));
      rates.push(size / ((performance.now() - t0) / 1000));
    }
    return rates;
  } finally {
    client.close();
  }
}

/**
 * Runs the part and prints its table.
 *
 * @example
 * ```ts
 * await runPodCertBench((s) => process.stdout.write(`${s}\n`));
 * ```
 */
export async function runPodCertBench(out: (s?: string) => unknown): Promise<void> {
  out(
    `## Pod certificates: ${COUNT} PodCertificateRequests in ${BATCHES} batches created at once, through the API test double`,
  );
  const rows: [string, number[]][] = [];
  const pcr = new Map<number, number>();
  for (const replicas of [1, 2]) {
    const cluster = await startPodCertCluster({ mode: '1.36' });
    try {
      const cas: CaProcess[] = [];
      for (let r = 0; r < replicas; r++)
        cas.push(await cluster.startCa(['--token-review-cache-ttl', '0s', ...NO_RATE_LIMITS]));
      // Every replica sees the others before the first request: the shares are settled.
      await waitFor(
        'the replicas see each other',
        () => (cas.every((ca) => replicasSeen(ca) === replicas) ? true : undefined),
        120_000,
      );
      const bodies = await prepare(cluster, `bench-${replicas}`);
      const rates = await pcrRates(cluster, bodies);
      pcr.set(replicas, median(rates));
      rows.push([`PCRs issued/s, ${replicas} replica${replicas > 1 ? 's' : ''}`, rates]);
      if (replicas === 1)
        rows.push([
          `Certify calls/s, 1 replica (TokenReview on the double, ${CERTIFY_CONCURRENCY} at a time)`,
          await certifyRates(cluster, cas[0]!),
        ]);
    } finally {
      await cluster.close();
    }
  }
  out('| measure | median per second | batches |');
  out('|---|---:|---|');
  for (const [what, rates] of rows)
    out(`| ${what} | ${median(rates).toFixed(0)} | ${rates.map((r) => r.toFixed(0)).join(', ')} |`);
  out();
  out(`Two replicas ÷ one: ${(pcr.get(2)! / pcr.get(1)!).toFixed(2)} (medians).`);
}
