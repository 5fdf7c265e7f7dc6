/**
 * Two `meshid ca --pod-certificates` replicas under 1,000 PodCertificateRequests made at once
 * (the Kubernetes API test double, a test double): every request is issued exactly once (one
 * status write each, one audit record each across both replicas), the replicas share the work
 * by rendezvous hashing (each does 30 % to 70 % of it, and at most a few status writes lose a
 * race: none should, with both replicas seeing each other's Lease before the requests arrive),
 * and the spread of beginRefreshAt over the certificates' lifetimes is measured.
 *
 * A minute or more on a shared machine: `npm run test:scale`, not part of `npm test`.
 */
import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { waitFor } from '../support/ca-process.js';
import type { CaProcess } from '../support/ca-process.js';
import { startKubeletSim } from '../support/kubelet-sim.js';
import {
  answerOf,
  replicasSeen,
  podCertRequestBodies,
  startPodCertCluster,
  statusWrites,
} from '../support/podcert-cluster.js';
import type { PodCertCluster } from '../support/podcert-cluster.js';

const COUNT = 1000;

describe('pod certificates: two signer replicas under 1,000 requests at once', function () {
  this.timeout(1_800_000);
  let cluster: PodCertCluster;
  let replicas: CaProcess[];

  before(async () => {
    cluster = await startPodCertCluster({ mode: '1.36' });
    // One after the other: two Node processes starting at once on a loaded machine is slow.
    replicas = [await cluster.startCa(), await cluster.startCa()];
  });
  after(async () => {
    await cluster?.close();
  });

  it('issues each exactly once, shares the work, and spreads beginRefreshAt', async () => {
    const kubelet = startKubeletSim({
      api: cluster.api,
      nodeName: 'node-a',
      version: '1.36',
      dir: cluster.dir,
    });
    const bodies = await podCertRequestBodies(kubelet, 'web', COUNT);
    kubelet.close();
    // Both replicas share the work from the first request: each has seen the other's Lease.
    await waitFor(
      'each replica sees both',
      () => (replicas.every((ca) => replicasSeen(ca) === 2) ? true : undefined),
      120_000,
    );
    cluster.api.clearRequests();
    // Counted as the double answers each write (no polling: a list of 1,000 requests every
    // 50 ms would compete with the double it measures, in this process).
    const allWritten = statusWrites(cluster, COUNT);
    const started = Date.now();
    for (const b of bodies) cluster.api.create(b);
    await allWritten;
    const seconds = (Date.now() - started) / 1000;
    const answered = cluster.requests();
    assert.ok(
      answered.every((p) => answerOf(p) !== undefined),
      'every request answered',
    );
    assert.equal(answered.length, COUNT);
    assert.ok(answered.every((p) => answerOf(p)?.type === 'Issued'));

    const writes = cluster.api.requests.filter(
      (r) => r.verb === 'update' && r.path.endsWith('/status'),
    );
    const won = new Map<string, number>();
    for (const w of writes.filter((r) => r.status === 200))
      won.set(w.path, (won.get(w.path) ?? 0) + 1);
    assert.equal(won.size, COUNT, 'a status write succeeded for every request');
    assert.ok(
      [...won.values()].every((n) => n === 1),
      'and only one for each',
    );
    const conflicts = writes.filter((r) => r.status === 409).length;

    const auditCounts = (): number[] =>
      replicas.map(
        (ca) => ca.lines.filter((l) => l.includes('issued leaf certificate for a pod')).length,
      );
    // The audit record follows the winning write: wait for the last ones to be logged.
    const audits = await waitFor(
      'the audit records',
      () => {
        const counts = auditCounts();
        return counts[0]! + counts[1]! >= COUNT ? counts : undefined;
      },
      120_000,
    );
    const audited = new Set(
      replicas.flatMap((ca) =>
        ca.lines
          .filter((l) => l.includes('issued leaf certificate for a pod'))
          .map((l) => (JSON.parse(l) as { request: string }).request),
      ),
    );
    assert.equal(audits[0]! + audits[1]!, COUNT, 'one audit record per certificate, in all');
    assert.equal(audited.size, COUNT);
    assert.ok(
      audits.every((n) => n >= COUNT * 0.3 && n <= COUNT * 0.7),
      `each replica did 30 % to 70 % of the work (${audits.join(' + ')})`,
    );
    // Rendezvous hashing gives each request one owner; a lost race needs a takeover (30 s of
    // an owner answering nothing) or a replica set still settling, neither expected here.
    assert.ok(conflicts <= COUNT * 0.01, `${conflicts} status writes lost a race (at most 1 %)`);

    const fractions = answered
      .map((p) => p['status'] as { notBefore: string; notAfter: string; beginRefreshAt: string })
      .map((s) => {
        const nb = Date.parse(s.notBefore);
        return (Date.parse(s.beginRefreshAt) - nb) / (Date.parse(s.notAfter) - nb);
      });
    const mean = fractions.reduce((a, b) => a + b, 0) / COUNT;
    const sd = Math.sqrt(fractions.reduce((a, b) => a + (b - mean) ** 2, 0) / COUNT);
    const min = Math.min(...fractions);
    const max = Math.max(...fractions);
    const seconds24h = new Set(
      answered.map((p) => (p['status'] as { beginRefreshAt: string }).beginRefreshAt),
    ).size;
    process.stdout.write(
      `      ${COUNT} requests, 2 replicas: ${seconds.toFixed(1)} s (${(COUNT / seconds).toFixed(0)}/s), ${conflicts} lost races, audits ${audits.join(' + ')}; beginRefreshAt at ${min.toFixed(3)}..${max.toFixed(3)} of the lifetime (mean ${mean.toFixed(3)}, sd ${sd.toFixed(3)}), ${seconds24h} distinct seconds\n`,
    );
    assert.ok(min >= 0.5 - 1e-3 && max <= 0.8, `within [0.5, 0.8]: ${min}..${max}`);
    // Uniform over [0.5, 0.8] has sd 0.087; a bunched schedule would not.
    assert.ok(sd > 0.07, `spread: sd ${sd}`);
    assert.ok(seconds24h > COUNT * 0.9, `${seconds24h} distinct refresh times of ${COUNT}`);
  });
});
