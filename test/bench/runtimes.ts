/**
 * The `runtimes` part of `npm run bench`: the system Node 20 and the pinned Node 26 side by side,
 * in one run.
 *
 * - runtime-micro.ts on both runtimes, alternating, `BENCH_ROUNDS` rounds: the raw bound of
 *   Certify, the CSR key import (each way node offers), full TLS 1.3 mTLS handshake CPU with
 *   X25519 and with X25519MLKEM768, and the bare runtime's memory;
 * - on Node 26 only (meshid refuses Node < 26, bin/meshid.js): the Certify figures of part `ca`
 *   and the proxy figures of part `proxy` when they ran in the same invocation, and the memory of
 *   two real proxies (RssAnon: private; RssFile: file-backed pages, mostly the node binary, which
 *   every pod on a node shares) ready and after traffic.
 *
 * The Node 20 binary is `BENCH_NODE20` (default /usr/bin/node); without one the column says so.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { Agent, createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { generateKeyPairSync } from 'node:crypto';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SIDECAR_NODE_OPTIONS, formatAddress } from '../../core/index.js';
import type { Address } from '../../core/index.js';
import { startCaProcess } from '../support/ca-process.js';
import { startProxyProcess } from '../support/proxy-process.js';
import { createWorkloadPki, workloadId } from '../support/proxy-pki.js';
import { rssSplitMb } from '../support/proc.js';
import { idOf, makeTestState } from '../support/state.js';
import { median } from './stats.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const MICRO = fileURLToPath(new URL('./runtime-micro.ts', import.meta.url));
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 3);
const NODE20 = process.env['BENCH_NODE20'] ?? '/usr/bin/node';
const REQUESTS = 3000;

/** What runtime-micro.ts prints. */
interface Micro {
  readonly node: string;
  readonly openssl: string;
  readonly raw: {
    signP256: number;
    verifyP256: number;
    verifyRs256: number;
    boundPerCore: number;
  };
  readonly csrImport: {
    webcryptoRaw: number;
    webcryptoRawVerify: number;
    derSpki: number;
    derSpkiVerify: number;
  };
  readonly handshake: { x25519: number; hybrid: number | null; hybridRatio: number | null };
  readonly memory: { rssAnonKb: number; rssFileKb: number };
}

/** The Certify figures of part `ca` (run.ts), when it ran in this invocation. */
export interface CertifyFigures {
  readonly ratioOne: number;
  readonly scaling: number;
  readonly cpuUsPerCert: number;
  readonly ratioTwo: number;
}

function runMicro(node: string, materialFile: string): Micro {
  const r = spawnSync(node, ['--import', 'tsx', MICRO, materialFile], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 300_000,
  });
  if (r.status !== 0) throw new Error(`${node} runtime-micro.ts failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as Micro;
}

async function writeMaterial(dir: string): Promise<string> {
  const pki = await createWorkloadPki();
  const server = pki.workload(workloadId('bench', 'web'));
  const client = pki.workload(workloadId('bench', 'voting'));
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const file = join(dir, 'material.json');
  writeFileSync(
    file,
    JSON.stringify({
      anchorPem: pki.anchorsPem,
      server: { keyPem: server.keyPem, chainPem: server.certChainPem, name: server.identity },
      client: { keyPem: client.keyPem, chainPem: client.certChainPem },
      rsaKeyPem: rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }),
    }),
  );
  return file;
}

/** `n` GETs through `at`, 8 at a time on keep-alive connections. */
async function drive(at: Address, n: number): Promise<void> {
  const agent = new Agent({ keepAlive: true, maxSockets: 8 });
  let next = 0;
  const one = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const req = request({ host: at.host, port: at.port, path: '/', agent }, (res) => {
        res.resume();
        res.on('end', () =>
          res.statusCode === 200 ? resolve() : reject(new Error(`HTTP ${res.statusCode}`)),
        );
      });
      req.on('error', reject);
      req.end();
    });
  const worker = async (): Promise<void> => {
    while (next++ < n) await one();
  };
  try {
    await Promise.all(Array.from({ length: 8 }, worker));
  } finally {
    agent.destroy();
  }
}

/** Two real proxies (voting's route → web's inbound → an app), their memory ready and after traffic. */
async function proxyMemory(): Promise<{
  ready: Record<string, { anon: number; file: number }>;
  loaded: Record<string, { anon: number; file: number }>;
}> {
  const state = await makeTestState();
  const app = createServer((_req, res) => res.end('ok\n')).listen(0, '127.0.0.1');
  await once(app, 'listening');
  const ca = await startCaProcess([...state.caArgs, '--workers', '1', '--log-level', 'warn']);
  const stops: (() => Promise<unknown>)[] = [() => ca.stop()];
  try {
    const web = await startProxyProcess({
      state,
      ca: formatAddress(ca.address),
      sa: 'web',
      nodeArgs: SIDECAR_NODE_OPTIONS,
      args: [
        ...['--inbound', '127.0.0.1:0', '--log-level', 'warn'],
        ...['--app', `127.0.0.1:${(app.address() as AddressInfo).port}`],
      ],
    });
    stops.unshift(() => web.stop());
    const voting = await startProxyProcess({
      state,
      ca: formatAddress(ca.address),
      sa: 'voting',
      nodeArgs: SIDECAR_NODE_OPTIONS,
      args: [
        '--log-level',
        'warn',
        '--route',
        `127.0.0.1:0=${formatAddress(web.inbound!)}@${idOf('emojivoto', 'web')}`,
      ],
    });
    stops.unshift(() => voting.stop());
    const now = (): Record<string, { anon: number; file: number }> => ({
      voting: rssSplitMb(voting.proc.pid!),
      web: rssSplitMb(web.proc.pid!),
    });
    const ready = now();
    await drive(voting.outbound[0]!, REQUESTS);
    return { ready, loaded: now() };
  } finally {
    for (const stop of stops) await stop().catch(() => undefined);
    app.close();
    await state.cleanup();
  }
}

const f0 = (x: number): string => (Number.isFinite(x) ? x.toFixed(0) : '—');
const f1 = (x: number): string => (Number.isFinite(x) ? x.toFixed(1) : '—');
const f2 = (x: number): string => (Number.isFinite(x) ? x.toFixed(2) : '—');

/**
 * Runs the comparison and prints the table; `certify` is part `ca`'s figures and `proxyRan` says
 * whether part `proxy` ran (its bench-results/proxy.json is then this run's), in this invocation.
 */
export async function runRuntimesBench(
  out: (s?: string) => void,
  certify: CertifyFigures | undefined,
  proxyRan: boolean,
): Promise<void> {
  const load = loadavg().map(f2).join(' ');
  const dir = mkdtempSync(join(tmpdir(), 'meshid-runtimes-'));
  try {
    const material = await writeMaterial(dir);
    const node20 = existsSync(NODE20)
      ? spawnSync(NODE20, ['--version'], { encoding: 'utf8' }).stdout.trim()
      : '';
    const runtimes = [
      ...(node20 === '' ? [] : [{ label: 'old', bin: NODE20 }]),
      { label: 'new', bin: process.execPath },
    ];
    const results: Record<string, Micro[]> = { old: [], new: [] };
    out(
      `## Runtimes side by side: ${node20 === '' ? `no ${NODE20} (set BENCH_NODE20)` : `${NODE20} ${node20}`} and ${process.execPath} ${process.version}`,
    );
    for (let r = 0; r < ROUNDS; r++) {
      // Alternate which runtime goes first: the machine's speed drifts between minutes.
      for (const rt of r % 2 === 0 ? runtimes : [...runtimes].reverse()) {
        const m = runMicro(rt.bin, material);
        results[rt.label]!.push(m);
        out(
          `  round ${r + 1}, ${m.node}: raw bound ${f0(m.raw.boundPerCore)}/s, CSR import+verify WebCrypto raw ${f1(m.csrImport.webcryptoRawVerify)} µs / DER SPKI ${f1(m.csrImport.derSpkiVerify)} µs, handshake X25519 ${f0(m.handshake.x25519)} µs${m.handshake.hybrid === null ? '' : `, X25519MLKEM768 ${f0(m.handshake.hybrid)} µs`}`,
        );
      }
    }
    const mem = await proxyMemory();

    const med = (label: string, f: (m: Micro) => number | null): number => {
      const xs = (results[label] ?? []).map(f).filter((x): x is number => x !== null);
      return xs.length === 0 ? NaN : median(xs);
    };
    const cell = (label: string, f: (m: Micro) => number | null, fmt = f1): string =>
      results[label]!.length === 0 ? 'not measured' : fmt(med(label, f));
    const ratio = (f: (m: Micro) => number | null): string => f2(med('new', f) / med('old', f));
    const oldName = results['old']![0]
      ? `Node ${results['old']![0].node} (OpenSSL ${results['old']![0].openssl})`
      : 'Node 20';
    const newName = `Node ${results['new']![0]!.node} (OpenSSL ${results['new']![0]!.openssl})`;
    const hybridRatio = (m: Micro): number | null => m.handshake.hybridRatio;
    const only26 = 'only on 26 (meshid refuses Node < 26)';
    const rows: string[][] = [
      [
        'raw bound, Certify/s per core (P-256 sign + P-256 verify + RS256 verify)',
        cell('old', (m) => m.raw.boundPerCore, f0),
        cell('new', (m) => m.raw.boundPerCore, f0),
        ratio((m) => m.raw.boundPerCore),
      ],
      [
        'CSR key import + P-256 verify, the CA path of each runtime, CPU µs (20: WebCrypto raw; 26: DER SPKI)',
        cell('old', (m) => m.csrImport.webcryptoRawVerify),
        cell('new', (m) => m.csrImport.derSpkiVerify),
        f2(
          med('new', (m) => m.csrImport.derSpkiVerify) /
            med('old', (m) => m.csrImport.webcryptoRawVerify),
        ),
      ],
      [
        'CSR key import alone, WebCrypto raw → KeyObject, CPU µs',
        cell('old', (m) => m.csrImport.webcryptoRaw),
        cell('new', (m) => m.csrImport.webcryptoRaw),
        ratio((m) => m.csrImport.webcryptoRaw),
      ],
      [
        'CSR key import alone, createPublicKey(DER SPKI), CPU µs',
        cell('old', (m) => m.csrImport.derSpki),
        cell('new', (m) => m.csrImport.derSpki),
        ratio((m) => m.csrImport.derSpki),
      ],
      [
        'TLS 1.3 mTLS full handshake, X25519, CPU µs (both ends)',
        cell('old', (m) => m.handshake.x25519, f0),
        cell('new', (m) => m.handshake.x25519, f0),
        ratio((m) => m.handshake.x25519),
      ],
      [
        'same, X25519MLKEM768, CPU µs',
        results['old']!.length === 0 ? 'not measured' : 'no ML-KEM in OpenSSL 3.0',
        cell('new', (m) => m.handshake.hybrid, f0),
        '',
      ],
      [
        'hybrid ÷ X25519 handshake CPU, per-round ratio (target ≤ 1.2)',
        '—',
        cell('new', hybridRatio, f2),
        '',
      ],
      [
        'bare runtime at start, RssAnon / RssFile MB',
        results['old']!.length === 0
          ? 'not measured'
          : `${f1(med('old', (m) => m.memory.rssAnonKb) / 1024)} / ${f1(med('old', (m) => m.memory.rssFileKb) / 1024)}`,
        `${f1(med('new', (m) => m.memory.rssAnonKb) / 1024)} / ${f1(med('new', (m) => m.memory.rssFileKb) / 1024)}`,
        '',
      ],
    ];
    const figure = (ran: boolean, v: string): string => (ran ? v : 'part not run');
    rows.push(
      [
        'Certify, 1 worker ÷ raw bound (target ≥ 0.35; part `ca`)',
        only26,
        figure(certify !== undefined, f2(certify?.ratioOne ?? NaN)),
        '',
      ],
      [
        'Certify, 2 workers ÷ 1 worker (target ≥ 1.6)',
        only26,
        figure(certify !== undefined, f2(certify?.scaling ?? NaN)),
        '',
      ],
      [
        'CA CPU per certificate, µs (1 worker)',
        only26,
        figure(certify !== undefined, f0(certify?.cpuUsPerCert ?? NaN)),
        '',
      ],
    );
    if (proxyRan) {
      const proxy = JSON.parse(readFileSync(join(ROOT, 'bench-results', 'proxy.json'), 'utf8')) as {
        summary: { meshid: { vsNginx: number; p99AddedMs: number } };
      };
      rows.push(
        ['proxy throughput ÷ nginx (part `proxy`)', only26, f2(proxy.summary.meshid.vsNginx), ''],
        [
          'added p99 at 1,000 req/s, ms (part `proxy`)',
          only26,
          f2(proxy.summary.meshid.p99AddedMs),
          '',
        ],
      );
    } else {
      rows.push(
        ['proxy throughput ÷ nginx (part `proxy`)', only26, 'part not run', ''],
        ['added p99 at 1,000 req/s (part `proxy`)', only26, 'part not run', ''],
      );
    }
    const memCell = (m: Record<string, { anon: number; file: number }>): string =>
      Object.entries(m)
        .map(([n, x]) => `${n} ${f1(x.anon)} / ${f1(x.file)}`)
        .join(', ');
    rows.push(
      ['meshid proxy ready, RssAnon / RssFile MB', only26, memCell(mem.ready), ''],
      [
        `meshid proxy after ${REQUESTS.toLocaleString('en')} requests, RssAnon / RssFile MB`,
        only26,
        memCell(mem.loaded),
        '',
      ],
    );
    out();
    out(`| | ${oldName} | ${newName} | 26 ÷ 20 |`);
    out('|---|---:|---:|---:|');
    for (const row of rows) out(`| ${row.join(' | ')} |`);
    out();
    out(
      `medians of ${ROUNDS} alternating rounds per runtime (CPU time, one process, unpinned); load average ${load} before, ${loadavg().map(f2).join(' ')} after: other processes on the machine show up as noise, compare within a row.`,
    );
    out(
      `proxies: two meshid proxies (voting route → web inbound → app) with ${SIDECAR_NODE_OPTIONS.join(' ')}, ${REQUESTS} HTTP/1.1 requests 8 at a time; RssFile is mostly the node binary's pages, shared by every proxy on a node.`,
    );
    mkdirSync(join(ROOT, 'bench-results'), { recursive: true });
    writeFileSync(
      join(ROOT, 'bench-results', 'runtimes.json'),
      JSON.stringify({ results, proxyMemoryMb: mem, certify }, null, 2),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
