/**
 * The handshake part of `npm run bench` (`BENCH_PARTS=handshake`): what refusing TLS session
 * resumption costs a mesh connection (proxy/tls.ts, NO_RESUMPTION). One process, client and
 * server on 127.0.0.1 with the proxy's TLS settings and mutual certificates (ECDSA P-256), one
 * connection at a time: a full TLS 1.3 handshake (what every inbound connection now is) against
 * a resumed one (what a ticket allowed before). Reports the median microseconds of wall time and
 * of this process's CPU per connection, both sides together, over alternating rounds.
 *
 * Standalone: `node --import tsx test/bench/handshake.ts`.
 */
import 'reflect-metadata';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { connect as tlsConnect, createServer as createTlsServer } from 'node:tls';
import type { TLSSocket } from 'node:tls';
import { pathToFileURL } from 'node:url';
import { NO_RESUMPTION, PROXY_TLS } from '../../proxy/tls.js';
import { createWorkloadPki, workloadId } from '../support/proxy-pki.js';
import { median } from './stats.js';

const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 3);
const PER_ROUND = 300;

/** µs of wall time and CPU per connection over `n` sequential connections. */
async function perConnection(
  n: number,
  connectOnce: () => Promise<void>,
): Promise<{ wallUs: number; cpuUs: number }> {
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) await connectOnce();
  const wall = Number(process.hrtime.bigint() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  return { wallUs: wall / n, cpuUs: (cpu.user + cpu.system) / n };
}

/** Runs the comparison; prints one table. */
export async function runHandshakeBench(out: (s?: string) => void): Promise<void> {
  const pki = await createWorkloadPki();
  const server = pki.workload(workloadId('bench', 'web'));
  const client = pki.workload(workloadId('bench', 'voting'));
  const make = (resumption: boolean) => {
    const srv = createTlsServer(
      {
        ...PROXY_TLS,
        ...(resumption ? {} : NO_RESUMPTION),
        key: server.keyPem,
        cert: server.certChainPem,
        ca: pki.anchorsPem,
        requestCert: true,
        rejectUnauthorized: true,
      },
      (s) => s.end('x'),
    );
    return srv;
  };
  const servers = { full: make(false), resumed: make(true) };
  for (const s of Object.values(servers)) {
    s.listen(0, '127.0.0.1');
    await once(s, 'listening');
  }
  let ticket: Buffer | undefined;
  const connectTo = (port: number, offer: boolean) => async (): Promise<void> => {
    const socket: TLSSocket = tlsConnect({
      ...PROXY_TLS,
      host: '127.0.0.1',
      port,
      servername: server.identity,
      ca: pki.anchorsPem,
      key: client.keyPem,
      cert: client.certChainPem,
      checkServerIdentity: () => undefined,
      ...(offer && ticket !== undefined ? { session: ticket } : {}),
    });
    socket.on('session', (s: Buffer) => (ticket = s));
    socket.resume();
    await once(socket, 'close');
  };
  const full = connectTo((servers.full.address() as AddressInfo).port, false);
  const resumed = connectTo((servers.resumed.address() as AddressInfo).port, true);
  await full();
  await resumed(); // a first ticket
  let reused = 0;
  const probe = tlsConnect({
    ...PROXY_TLS,
    host: '127.0.0.1',
    port: (servers.resumed.address() as AddressInfo).port,
    servername: server.identity,
    ca: pki.anchorsPem,
    key: client.keyPem,
    cert: client.certChainPem,
    checkServerIdentity: () => undefined,
    ...(ticket === undefined ? {} : { session: ticket }),
  });
  probe.on('secureConnect', () => (reused = probe.isSessionReused() ? 1 : 0));
  probe.resume();
  await once(probe, 'close');
  if (reused !== 1) throw new Error('the resumed path did not resume: the comparison is void');

  const rows: Record<'full' | 'resumed', { wallUs: number; cpuUs: number }[]> = {
    full: [],
    resumed: [],
  };
  for (let r = 0; r < ROUNDS; r++) {
    rows.full.push(await perConnection(PER_ROUND, full));
    rows.resumed.push(await perConnection(PER_ROUND, resumed));
  }
  for (const s of Object.values(servers)) s.close();
  const med = (k: 'full' | 'resumed', f: 'wallUs' | 'cpuUs'): number =>
    median(rows[k].map((x) => x[f]));
  out(
    '## Mesh TLS handshake: full (no resumption) against resumed, client and server in one process',
  );
  out();
  out('| handshake | wall µs/connection | CPU µs/connection |');
  out('|---|---:|---:|');
  out(
    `| full (NO_RESUMPTION) | ${med('full', 'wallUs').toFixed(0)} | ${med('full', 'cpuUs').toFixed(0)} |`,
  );
  out(
    `| resumed (ticket) | ${med('resumed', 'wallUs').toFixed(0)} | ${med('resumed', 'cpuUs').toFixed(0)} |`,
  );
  out(
    `\nfull / resumed CPU: ${(med('full', 'cpuUs') / med('resumed', 'cpuUs')).toFixed(2)}× (${ROUNDS} rounds of ${PER_ROUND} sequential connections)`,
  );
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await runHandshakeBench((s = '') => process.stdout.write(`${s}\n`));
}
