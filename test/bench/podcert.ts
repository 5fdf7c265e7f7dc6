/**
 * Pod certificates (`BENCH_PARTS=podcert`): PodCertificateRequests issued per second by
 * `meshid ca --pod-certificates` through the Kubernetes API test double (a test double; the
 * figures are the double's as much as the CA's), with one replica and with two, beside Certify's
 * rate through the same double in the same run (each call a TokenReview on the double, the
 * review cache off, as each PCR costs a Pod read). Requests are made before the clock starts and
 * created at once; the time is until the last one is answered.
 */
import { generateKeyPairSync } from 'node:crypto';
import { CertifyClient, createCsr } from '../../core/index.js';
import { NO_RATE_LIMITS, waitFor } from '../support/ca-process.js';
import type { CaProcess } from '../support/ca-process.js';
import type { KubeObject } from '../support/kube-api-server/index.js';
import { generatePodKey, startKubeletSim } from '../support/kubelet-sim.js';
import { answerOf, SIGNER, startPodCertCluster } from '../support/podcert-cluster.js';
import type { PodCertCluster } from '../support/podcert-cluster.js';
import { CA_IDENTITY, idOf } from '../support/state.js';

const COUNT = Number(process.env['BENCH_PODCERT_COUNT'] ?? 1000);
const CERTIFY_CONCURRENCY = 32;

async function prepare(cluster: PodCertCluster, prefix: string): Promise<KubeObject[]> {
  const kubelet = startKubeletSim({
    api: cluster.api,
    nodeName: 'node-a',
    version: '1.36',
    dir: cluster.dir,
  });
  const bodies: KubeObject[] = [];
  for (let i = 0; i < COUNT; i++) {
    const pod = kubelet.createPod('emojivoto', `${prefix}-${i}`, 'web');
    const body = await kubelet.requestBody(
      pod,
      { signerName: SIGNER, keyType: 'ECDSAP256' },
      generatePodKey('ECDSAP256'),
    );
    body.metadata.name = `${prefix}-${i}`;
    bodies.push(body);
  }
  kubelet.close();
  return bodies;
}

/** PCRs per second: all created at once, timed until every one is answered. */
async function pcrRate(cluster: PodCertCluster, bodies: KubeObject[]): Promise<number> {
  const names = new Set(bodies.map((b) => b.metadata.name));
  const t0 = performance.now();
  for (const b of bodies) cluster.api.create(b);
  await waitFor(
    'every request answered',
    () => {
      const done = cluster
        .requests()
        .filter((p) => names.has(p.metadata.name) && answerOf(p)?.type === 'Issued').length;
      return done === names.size ? true : undefined;
    },
    600_000,
  );
  return COUNT / ((performance.now() - t0) / 1000);
}

/** Certify calls per second against `ca`, `CERTIFY_CONCURRENCY` at a time. */
async function certifyRate(cluster: PodCertCluster, ca: CaProcess): Promise<number> {
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
    let next = 0;
    const t0 = performance.now();
    const worker = async (): Promise<void> => {
      while (next < COUNT) {
        const i = next++;
        await client.certify({
          identity,
          token: Buffer.from(tokens[i % tokens.length]!),
          certificateSigningRequest: csrs[i % csrs.length]!,
        });
      }
    };
    await Promise.all(Array.from({ length: CERTIFY_CONCURRENCY }, worker));
    return COUNT / ((performance.now() - t0) / 1000);
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
  out(`## Pod certificates: ${COUNT} PodCertificateRequests at once, through the API test double`);
  const rows: [string, number][] = [];
  for (const replicas of [1, 2]) {
    const cluster = await startPodCertCluster({ mode: '1.36' });
    try {
      const cas: CaProcess[] = [];
      for (let r = 0; r < replicas; r++)
        cas.push(await cluster.startCa(['--token-review-cache-ttl', '0s', ...NO_RATE_LIMITS]));
      const bodies = await prepare(cluster, `bench-${replicas}`);
      rows.push([
        `PCRs issued/s, ${replicas} replica${replicas > 1 ? 's' : ''}`,
        await pcrRate(cluster, bodies),
      ]);
      if (replicas === 1)
        rows.push([
          `Certify calls/s, 1 replica (TokenReview on the double, ${CERTIFY_CONCURRENCY} at a time)`,
          await certifyRate(cluster, cas[0]!),
        ]);
    } finally {
      await cluster.close();
    }
  }
  out('| measure | per second |');
  out('|---|---:|');
  for (const [what, rate] of rows) out(`| ${what} | ${rate.toFixed(0)} |`);
}
