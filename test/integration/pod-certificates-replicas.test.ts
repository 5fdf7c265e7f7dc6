/**
 * Two `meshid ca --pod-certificates` replicas against the Kubernetes API test double (a test
 * double, docs/kube-api-test-server.md): each holds a Lease in the CA's namespace, they share the
 * PodCertificateRequests by rendezvous hashing (both issue part, each request once), and when one
 * is killed the other issues its share once the killed replica's Lease expires (a few seconds
 * here), without waiting for the takeover time (minutes here): by ownership, not by takeover.
 * When one stops cleanly it deletes its Lease and the other owns everything at once.
 */
import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import { waitFor } from '../support/ca-process.js';
import type { CaProcess } from '../support/ca-process.js';
import type { KubeObject } from '../support/kube-api-server/index.js';
import { startKubeletSim } from '../support/kubelet-sim.js';
import type { KubeletSim } from '../support/kubelet-sim.js';
import {
  answerOf,
  NS,
  replicasSeen,
  podCertRequestBodies,
  startPodCertCluster,
} from '../support/podcert-cluster.js';
import type { PodCertCluster } from '../support/podcert-cluster.js';

const LEASE = '3s';
const TAKEOVER = '10m';
const ISSUED_FOR_POD = 'issued leaf certificate for a pod';

interface LogLine {
  msg?: string;
  lease?: string;
  request?: string;
  replicas?: number;
  left?: string[];
}

const records = (ca: CaProcess): LogLine[] =>
  ca.lines.flatMap((l) => {
    try {
      return [JSON.parse(l) as LogLine];
    } catch {
      return [];
    }
  });

/** The Lease (replica identity) a CA holds, from its log. */
async function leaseOf(ca: CaProcess): Promise<string> {
  return waitFor(
    'the replica holds its Lease',
    () => records(ca).find((r) => r.msg === 'holding a signer Lease')?.lease,
  );
}

/** The requests (names) a CA's audit records say it issued. */
const issuedBy = (ca: CaProcess): Set<string> =>
  new Set(
    records(ca)
      .filter((r) => r.msg === ISSUED_FOR_POD)
      .map((r) => r.request ?? ''),
  );

/** Waits until the CAs' audit records, together, name every one of `names`. */
const auditsOf = (cas: CaProcess[], names: readonly string[]): Promise<true> =>
  waitFor(
    `audit records of ${names.length} requests`,
    () => {
      const all = new Set(cas.flatMap((ca) => [...issuedBy(ca)]));
      return names.every((n) => all.has(n)) ? true : undefined;
    },
    60_000,
  );

describe('pod certificates: two signer replicas (Leases, rendezvous hashing)', function () {
  this.timeout(600_000);
  let cluster: PodCertCluster;
  let kubelet: KubeletSim;

  before(async () => {
    cluster = await startPodCertCluster({ mode: '1.37' });
    kubelet = startKubeletSim({
      api: cluster.api,
      nodeName: 'node-a',
      version: '1.37',
      dir: cluster.dir,
    });
  });
  after(async () => {
    kubelet?.close();
    await cluster?.close();
  });

  /** Creates `n` requests named `<prefix>-<i>` at once; resolves with their names. */
  async function request(prefix: string, n: number): Promise<string[]> {
    const bodies = await podCertRequestBodies(kubelet, prefix, n);
    for (const b of bodies) cluster.api.create(b);
    return bodies.map((b) => b.metadata.name!);
  }

  const issued = (names: readonly string[]): Promise<KubeObject[]> =>
    waitFor(
      `${names.length} requests answered`,
      () => {
        const mine = cluster.requests().filter((p) => names.includes(p.metadata.name!));
        return mine.length === names.length && mine.every((p) => answerOf(p) !== undefined)
          ? mine
          : undefined;
      },
      300_000,
    );

  it('share the requests, and the survivor of a kill issues its share when its Lease expires', async () => {
    const args = [
      '--pod-certificate-lease-duration',
      LEASE,
      '--pod-certificate-takeover',
      TAKEOVER,
    ];
    const a = await cluster.startCa(args);
    const b = await cluster.startCa(args);
    const [leaseA, leaseB] = [await leaseOf(a), await leaseOf(b)];
    assert.notEqual(leaseA, leaseB);
    const leases = cluster.api
      .list<KubeObject>('coordination.k8s.io/v1', 'Lease', NS)
      .map((l) => l.metadata.name);
    assert.deepEqual(leases.sort(), [leaseA, leaseB].sort(), "a Lease each, in the CA's namespace");
    await waitFor(
      'each replica sees both',
      () => (replicasSeen(a) === 2 && replicasSeen(b) === 2 ? true : undefined),
      120_000,
    );

    const first = await request('shared', 24);
    const answers = await issued(first);
    assert.ok(answers.every((p) => answerOf(p)?.type === 'Issued'));
    // The audit record follows the status write (the write must win first): wait for it.
    await auditsOf([a, b], first);
    const [byA, byB] = [issuedBy(a), issuedBy(b)];
    assert.ok(byA.size > 0 && byB.size > 0, `both issued (${byA.size} + ${byB.size})`);
    assert.equal(byA.size + byB.size, first.length, 'each request once');
    assert.deepEqual(
      [...byA].filter((n) => byB.has(n)),
      [],
    );

    b.proc.kill('SIGKILL');
    await once(b.proc, 'exit');
    const second = await request('after-kill', 24);
    const answered = await issued(second);
    assert.ok(answered.every((p) => answerOf(p)?.type === 'Issued'));
    await auditsOf([a], second);
    const byAAfter = issuedBy(a);
    assert.ok(
      second.every((n) => byAAfter.has(n)),
      'the survivor issued every request made after the kill',
    );
    const left = records(a).find(
      (r) => r.msg === 'pod certificate signer replicas' && (r.left ?? []).includes(leaseB),
    );
    assert.ok(left !== undefined, 'the survivor dropped the killed replica when its Lease expired');
    assert.equal(replicasSeen(a), 1);
    assert.ok(
      !a.lines.some((l) => l.includes('a replica that answers nothing')),
      'by ownership once the Lease expired, not by the takeover (10 minutes)',
    );
    await a.stop();
  });

  it('let the other own everything at once when one stops cleanly (its Lease deleted)', async () => {
    const args = [
      '--pod-certificate-lease-duration',
      '60s',
      '--pod-certificate-takeover',
      TAKEOVER,
    ];
    const a = await cluster.startCa(args);
    const b = await cluster.startCa(args);
    const leaseB = await leaseOf(b);
    await waitFor(
      'each replica sees both',
      () => (replicasSeen(a) === 2 && replicasSeen(b) === 2 ? true : undefined),
      120_000,
    );
    assert.equal(await b.stop(), 0);
    assert.ok(
      !cluster.api
        .list<KubeObject>('coordination.k8s.io/v1', 'Lease', NS)
        .some((l) => l.metadata.name === leaseB),
      'the stopped replica deleted its Lease',
    );
    await waitFor(
      'the other replica alone',
      () => (replicasSeen(a) === 1 ? true : undefined),
      60_000,
    );
    // Long before the 60 s Lease would have expired: every request is the survivor's now.
    const names = await request('after-stop', 12);
    await issued(names);
    await auditsOf([a], names);
    const byA = issuedBy(a);
    assert.ok(names.every((n) => byA.has(n)));
    assert.ok(!a.lines.some((l) => l.includes('a replica that answers nothing')));
    await a.stop();
  });
});
