/**
 * Load for the fault-injection suites: Certify callers against a real CA, and HTTP traffic
 * through two real `meshid proxy` processes (voting's outbound route to web's inbound, TLS 1.3
 * mTLS between them, a plain HTTP app behind web). Every call is recorded with its start and end
 * time and outcome, so a suite can count what failed while a fault was in force and what failed
 * outside it. Loops are bounded in time (`maxMs`) and paced (`pauseMs`), and stop by themselves.
 */
import { strict as assert } from 'node:assert';
import { generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import { readFile, writeFile } from 'node:fs/promises';
import { Agent, createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { CertifyClient, createCsr, formatAddress } from '../../core/index.js';
import type { Address } from '../../core/index.js';
import type { CertifyCallError } from '../../core/certify-client.js';
import { adminGet, metricValue } from './ca-process.js';
import type { CaProcess } from './ca-process.js';
import { recordReliability } from './reliability-report.js';
import { getStatus, startProxyProcess } from './proxy-process.js';
import type { ProxyProcess } from './proxy-process.js';
import { CA_IDENTITY, idOf } from './state.js';
import type { TestState } from './state.js';

/** One call: when it started and ended, and how it ended (0 = OK, a gRPC code, -1 = other). */
export interface CallRecord {
  /** Which caller (loop) made it. */
  readonly caller: number;
  readonly start: number;
  readonly end: number;
  readonly code: number;
  readonly detail: string;
}

/** Calls recorded by a load. */
abstract class Recorded {
  readonly records: CallRecord[] = [];
  get ok(): number {
    return this.records.filter((r) => r.code === 0).length;
  }
  get failed(): CallRecord[] {
    return this.records.filter((r) => r.code !== 0);
  }
  /** Calls that ended in [from, to). */
  endedBetween(from: number, to = Number.POSITIVE_INFINITY): CallRecord[] {
    return this.records.filter((r) => r.end >= from && r.end < to);
  }
  /** Waits until `n` more calls than now have succeeded. */
  async moreOk(n: number, timeoutMs = 30_000): Promise<void> {
    const target = this.ok + n;
    const deadline = Date.now() + timeoutMs;
    while (this.ok < target) {
      if (Date.now() > deadline)
        throw new Error(
          `timed out waiting for ${n} more successful calls (last failures: ${this.failed
            .slice(-3)
            .map((r) => r.detail)
            .join('; ')})`,
        );
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

/** Options of {@link CertifyLoad}. */
export interface CertifyLoadOptions {
  readonly ca: Address;
  readonly anchorsPem: () => string;
  /** The token to send (read per call, so a suite can swap it). */
  readonly token: () => Promise<Buffer> | Buffer;
  readonly identity: string;
  /** Concurrent callers, each on its own connection (client). */
  readonly callers: number;
  readonly deadlineMs?: number;
  /** Pause between one caller's calls; default 10 ms. */
  readonly pauseMs?: number;
  /** Hard bound on the load's life; default 120 s. */
  readonly maxMs?: number;
}

/** Certify callers issuing continuously until stopped (each call a fresh key and CSR). */
export class CertifyLoad extends Recorded {
  #stop = false;
  readonly #loops: Promise<void>[];

  constructor(o: CertifyLoadOptions) {
    super();
    const until = Date.now() + (o.maxMs ?? 120_000);
    this.#loops = Array.from({ length: o.callers }, async (_, caller) => {
      let client = newClient(o);
      try {
        while (!this.#stop && Date.now() < until) {
          const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
          const csr = createCsr({ privateKey, commonName: o.identity, dnsNames: [o.identity] });
          const token = await o.token();
          const start = Date.now();
          try {
            const res = await client.certify(
              { identity: o.identity, token, certificateSigningRequest: csr },
              o.deadlineMs ?? 10_000,
            );
            this.records.push({
              caller,
              start,
              end: Date.now(),
              code: 0,
              detail: res.validUntil.toString(),
            });
          } catch (err) {
            const e = err as Partial<CertifyCallError>;
            this.records.push({
              caller,
              start,
              end: Date.now(),
              code: typeof e.code === 'number' ? e.code : -1,
              detail: e.details ?? String(err),
            });
            // A new connection after a failure, as a proxy's client does after a broken one.
            client.close();
            client = newClient(o);
          }
          await new Promise((r) => setTimeout(r, o.pauseMs ?? 10));
        }
      } finally {
        client.close();
      }
    });
  }

  async stop(): Promise<this> {
    this.#stop = true;
    await Promise.all(this.#loops);
    return this;
  }
}

function newClient(o: CertifyLoadOptions): CertifyClient {
  return new CertifyClient({ address: o.ca, serverName: CA_IDENTITY, anchorsPem: o.anchorsPem() });
}

/** One Certify call with a fresh key: its status (0 = issued), message, duration and issuer. */
export async function certifyOnce(o: {
  ca: Address;
  anchorsPem: string;
  identity: string;
  token: Buffer;
  deadlineMs?: number;
}): Promise<{ code: number; details: string; ms: number; issuer?: string }> {
  const client = new CertifyClient({
    address: o.ca,
    serverName: CA_IDENTITY,
    anchorsPem: o.anchorsPem,
  });
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const start = Date.now();
  try {
    const res = await client.certify(
      {
        identity: o.identity,
        token: o.token,
        certificateSigningRequest: createCsr({ privateKey, dnsNames: [o.identity] }),
      },
      o.deadlineMs ?? 20_000,
    );
    return {
      code: 0,
      details: 'issued',
      ms: Date.now() - start,
      issuer: Buffer.from(res.intermediateCertificates[0]!).toString('hex'),
    };
  } catch (err) {
    const e = err as CertifyCallError;
    return { code: e.code, details: e.details, ms: Date.now() - start };
  } finally {
    client.close();
  }
}

/** Options of {@link TrafficLoad}. */
export interface TrafficLoadOptions {
  /** Where the requests go (a proxy's outbound route). */
  readonly target: () => Address;
  /** Callers on keep-alive connections (which outlive the certificates they began with). */
  readonly keepAlive: number;
  /** Callers that open a new connection (a new mTLS handshake) for every request. */
  readonly fresh: number;
  readonly pauseMs?: number;
  readonly maxMs?: number;
}

/** HTTP GETs through the mesh; a call is OK when the app answered 200. */
export class TrafficLoad extends Recorded {
  #stop = false;
  readonly #loops: Promise<void>[];
  readonly #agent = new Agent({ keepAlive: true, maxSockets: 8 });

  constructor(o: TrafficLoadOptions) {
    super();
    const until = Date.now() + (o.maxMs ?? 120_000);
    this.#loops = Array.from({ length: o.keepAlive + o.fresh }, async (_, i) => {
      const agent = i < o.keepAlive ? this.#agent : false;
      while (!this.#stop && Date.now() < until) {
        const start = Date.now();
        try {
          const status = await getStatus(o.target(), agent);
          this.records.push({
            caller: i,
            start,
            end: Date.now(),
            code: status === 200 ? 0 : status,
            detail: `status ${status}`,
          });
        } catch (err) {
          this.records.push({
            caller: i,
            start,
            end: Date.now(),
            code: -1,
            detail: (err as Error).message,
          });
        }
        await new Promise((r) => setTimeout(r, o.pauseMs ?? 5));
      }
    });
  }

  async stop(): Promise<this> {
    this.#stop = true;
    await Promise.all(this.#loops);
    this.#agent.destroy();
    return this;
  }
}

export const WEB = idOf('emojivoto', 'web');
export const VOTING = idOf('emojivoto', 'voting');

/** Two proxies and an app: voting's outbound route reaches the app through web's inbound. */
export interface MeshPair {
  readonly web: ProxyProcess;
  readonly voting: ProxyProcess;
  /** The proxies' own anchors file (a copy of the state's, so a suite can corrupt it alone). */
  readonly anchorsFile: string;
  /** voting's outbound route to web. */
  route(): Address;
  /** Certificate refreshes of a proxy by result (`ok` or `failure`), from its /metrics. */
  refreshes(p: ProxyProcess, result?: 'ok' | 'failure'): Promise<number>;
  ready(p: ProxyProcess): Promise<boolean>;
  stop(): Promise<void>;
}

/**
 * Starts the app and both proxies against the CA at `ca`. The app answers 200 only to voting's
 * verified identity (`l5d-client-id`), so a 200 proves the request crossed the mTLS hop.
 */
export async function startMeshPair(o: {
  state: TestState;
  ca: string;
  /** Extra proxy flags (both proxies). */
  args?: readonly string[];
  env?: Record<string, string>;
}): Promise<MeshPair> {
  const anchorsFile = join(o.state.dir, 'proxy-anchors.pem');
  await writeFile(anchorsFile, await readFile(o.state.anchorsFile));
  const app: Server = createServer((req, res) => {
    res.statusCode = req.headers['l5d-client-id'] === VOTING ? 200 : 500;
    res.end('ok');
  });
  app.listen(0, '127.0.0.1');
  await once(app, 'listening');
  const start = (sa: string, args: string[]): Promise<ProxyProcess> =>
    startProxyProcess({
      state: o.state,
      ca: o.ca,
      sa,
      anchorsFile,
      args: ['--identity-retry-max', '1s', ...(o.args ?? []), ...args],
      ...(o.env === undefined ? {} : { env: o.env }),
    });
  const web = await start('web', [
    '--inbound',
    '127.0.0.1:0',
    '--app',
    `127.0.0.1:${(app.address() as AddressInfo).port}`,
  ]);
  const voting = await start('voting', [
    '--route',
    `127.0.0.1:0=${formatAddress(web.inbound!)}@${WEB}`,
  ]);
  return {
    web,
    voting,
    anchorsFile,
    route: () => voting.outbound[0]!,
    refreshes: async (p, result = 'ok') =>
      metricValue(
        (await adminGet(p.admin, '/metrics')).body,
        'control_identity_cert_refreshes_total',
        {
          result,
        },
      ) || 0,
    ready: async (p) => (await adminGet(p.admin, '/ready')).status === 200,
    async stop() {
      for (const p of [voting, web]) await p.stop().catch(() => undefined);
      await new Promise((r) => app.close(r));
    },
  };
}

/** A short account of failures for an assertion message. */
export function describeFailures(records: readonly CallRecord[]): string {
  const byDetail = new Map<string, number>();
  for (const r of records)
    byDetail.set(`${r.code} ${r.detail}`, (byDetail.get(`${r.code} ${r.detail}`) ?? 0) + 1);
  return `${records.length} failed: ${[...byDetail].map(([d, n]) => `${n}x ${d}`).join('; ')}`;
}

/** A fault suite's figures, for its reliability record. */
export interface FaultTally {
  faults: number;
  requests: number;
  failedWhereNoneMay: number;
  notes: string[];
}

/** A fresh tally. */
export function newTally(): FaultTally {
  return { faults: 0, requests: 0, failedWhereNoneMay: 0, notes: [] };
}

/**
 * Counts a finished load into `tally`. With `noneMayFail`, its failures are counted as failures
 * where none may be, and asserted to be none.
 */
export function countLoad(
  tally: FaultTally,
  load: CertifyLoad | TrafficLoad,
  noneMayFail: boolean,
  what = 'calls',
): void {
  tally.requests += load.records.length;
  if (!noneMayFail) return;
  tally.failedWhereNoneMay += load.failed.length;
  assert.equal(load.failed.length, 0, `${what}: ${describeFailures(load.failed)}`);
}

/** What the benches of a CA and the proxy pair share: the processes, the tally, the traffic. */
export abstract class MeshBench {
  state!: TestState;
  ca!: CaProcess;
  mesh!: MeshPair;
  readonly tally: FaultTally = newTally();

  abstract start(): Promise<void>;

  async stop(): Promise<void> {
    await this.mesh?.stop();
    await this.ca?.stop().catch(() => undefined);
    await this.state?.cleanup();
  }

  /** HTTP traffic through voting's route: two keep-alive callers and `fresh` on new connections. */
  traffic(fresh = 1): TrafficLoad {
    return new TrafficLoad({ target: () => this.mesh.route(), keepAlive: 2, fresh });
  }

  /** Both proxies' successful certificate refreshes so far. */
  async refreshCounts(): Promise<{ web: number; voting: number }> {
    return {
      web: await this.mesh.refreshes(this.mesh.web),
      voting: await this.mesh.refreshes(this.mesh.voting),
    };
  }
}

/**
 * Mocha hooks of a fault bench: started before the suite, stopped after it; with `suite`, its
 * tally is recorded for the `npm run test:reliability` table. wronglyIssued is 0 because every
 * refusal a case expects (nothing issued while tokens cannot be checked, nor by a refused issuer,
 * nor for a token from the future) is asserted: a certificate issued there fails the test.
 */
export function benchHooks(
  bench: { start(): Promise<void>; stop(): Promise<void>; readonly tally: FaultTally },
  suite?: string,
): void {
  before(() => bench.start());
  after(async () => {
    await bench.stop();
    if (suite === undefined) return;
    recordReliability({
      suite,
      faults: bench.tally.faults,
      requests: bench.tally.requests,
      failedWhereNoneMay: bench.tally.failedWhereNoneMay,
      wronglyIssued: 0,
      notes: bench.tally.notes.join('; '),
    });
  });
}
