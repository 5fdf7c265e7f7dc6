/**
 * The destination service's memory for a cluster of 10,000 pods: the endpoint index fed
 * directly with the objects a cluster would send (1,000 Services of 10 meshed pods each, one
 * EndpointSlice per Service), in a fresh child process so that the figures are its own. Reports
 * the heap kept by the index (after a full GC, against the empty process), the RSS, the time to
 * load, and the time to recompute and send the answers of 1,000 open subscriptions when one pod
 * leaves its slice.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { EndpointIndex } from '../../destination/index.js';
import { UpdateStream } from '../../destination/updates.js';
import { parseTarget } from '../../destination/target.js';
import { endpointSlice, pod, service } from '../support/destination-objects.js';

const PODS = Number(process.env['BENCH_DESTINATION_PODS'] ?? 10_000);
const PER_SERVICE = 10;
const naming = { trustDomain: 'cluster.local', controlPlaneNamespace: 'linkerd' };

function ip(n: number): string {
  return `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`;
}

interface Figures {
  pods: number;
  services: number;
  heapMb: number;
  rssMb: number;
  loadMs: number;
  subscriptions: number;
  updateMs: number;
}

function measure(): Figures {
  const gc = (globalThis as { gc?: () => void }).gc!;
  gc();
  const heap0 = process.memoryUsage().heapUsed;
  const index = new EndpointIndex({ naming, clusterDomain: 'cluster.local' });
  const started = performance.now();
  const services = PODS / PER_SERVICE;
  for (let s = 0; s < services; s++) {
    const ns = `ns-${s % 50}`;
    const name = `svc-${s}`;
    index.apply(
      'Service',
      'ADDED',
      service(ns, name, ip(0x600000 + s), [{ name: 'http', port: 80 }]),
    );
    const eps = [];
    for (let i = 0; i < PER_SERVICE; i++) {
      const n = s * PER_SERVICE + i;
      index.apply('Pod', 'ADDED', pod(ns, `${name}-${i}`, ip(n + 1), { meshed: true, sa: name }));
      eps.push({ ip: ip(n + 1), pod: `${name}-${i}` });
    }
    index.apply(
      'EndpointSlice',
      'ADDED',
      endpointSlice(ns, `${name}-a`, name, eps, [{ name: 'http', port: 8080 }]),
    );
  }
  for (const kind of ['Service', 'EndpointSlice', 'Pod'] as const) index.markSynced(kind);
  const loadMs = performance.now() - started;
  // 1,000 proxies following the same Service, as a busy one would be.
  let sent = 0;
  const subscriptions = 1000;
  for (let i = 0; i < subscriptions; i++) {
    const stream = new UpdateStream();
    index.subscribe(
      parseTarget(`${ip(0x600000)}:80`, 'cluster.local'),
      (r) => (sent += stream.next(r).length),
    );
  }
  const before = sent;
  const t = performance.now();
  const eps = Array.from({ length: PER_SERVICE - 1 }, (_, i) => ({
    ip: ip(i + 1),
    pod: `svc-0-${i}`,
  }));
  index.apply(
    'EndpointSlice',
    'MODIFIED',
    endpointSlice('ns-0', 'svc-0-a', 'svc-0', eps, [{ name: 'http', port: 8080 }]),
  );
  const updateMs = performance.now() - t;
  if (sent - before !== subscriptions)
    throw new Error(`expected ${subscriptions} updates, saw ${sent - before}`);
  gc();
  const m = process.memoryUsage();
  return {
    pods: index.stats.pods,
    services: index.stats.services,
    heapMb: (m.heapUsed - heap0) / 2 ** 20,
    rssMb: m.rss / 2 ** 20,
    loadMs,
    subscriptions,
    updateMs,
  };
}

/** Runs the measurement in a child process and prints its table. */
export function runDestinationBench(out: (s?: string) => void): Figures {
  const child = spawnSync(
    process.execPath,
    ['--expose-gc', '--import', 'tsx', fileURLToPath(import.meta.url), '--child'],
    { encoding: 'utf8', env: process.env },
  );
  if (child.status !== 0) throw new Error(`destination bench failed: ${child.stderr}`);
  const f = JSON.parse(child.stdout.trim().split('\n').pop()!) as Figures;
  out('## destination service: the endpoint index at 10,000 pods');
  out();
  out(
    '| pods | Services | heap kept by the index | process RSS | load | 1 pod leaves: 1,000 subscribers told |',
  );
  out('|---:|---:|---:|---:|---:|---:|');
  out(
    `| ${f.pods} | ${f.services} | ${f.heapMb.toFixed(1)} MB (${((f.heapMb * 2 ** 20) / f.pods / 1024).toFixed(2)} KB/pod) | ${f.rssMb.toFixed(0)} MB | ${f.loadMs.toFixed(0)} ms | ${f.updateMs.toFixed(1)} ms |`,
  );
  return f;
}

if (process.argv.includes('--child')) process.stdout.write(`${JSON.stringify(measure())}\n`);
