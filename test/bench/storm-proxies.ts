/**
 * The simulated proxies of the restart-storm benchmark, in a process of their own (started by
 * `storm.ts`, pinned to a core the CA does not use, driven over IPC).
 *
 * Each simulated proxy is the proxy's own identity client (`IdentityClient`: the retry policy,
 * the CA's retry hint honoured with jitter, the response verified against the anchors) over the
 * proxy's own Certify client (`Http2CertifyClient`: one TLS connection of its own, from an
 * address of its own in 127.0.0.0/8, as every pod has its own IP). Only the key and CSR are made
 * beforehand, outside the timed window, so that key generation is not what is measured.
 */
import { createSecureContext } from 'node:tls';
import type { CertifyRequest, CertifyResponse, Logger } from '../../core/index.js';
import { GrpcStatus, systemClock, systemRandom } from '../../core/index.js';
import { silentLogger } from '../../core/logger.js';
import type { RequestKey } from '../../proxy/identity/client.js';
import { Http2CertifyClient, IdentityClient, systemTimers } from '../../proxy/index.js';
import { CertifyCallFailed } from '../../proxy/identity/certify-h2.js';
import { freshRequestKey } from '../../proxy/identity/client.js';

/** One simulated pod: its identity, its token and its own source address. */
export interface StormProxy {
  readonly identity: string;
  /** Index into the tokens of {@link PrepareMessage}. */
  readonly token: number;
  readonly localAddress: string;
}

export interface PrepareMessage {
  readonly t: 'prepare';
  /** The storm's proxies, and those that warm the CA up before it (other addresses). */
  readonly proxies: readonly StormProxy[];
  readonly warmup: readonly StormProxy[];
  readonly tokens: readonly string[];
}

export interface StormMessage {
  readonly t: 'storm';
  /** Which proxies ask: the storm's, or the warm-up's. */
  readonly set: 'storm' | 'warmup';
  readonly port: number;
  readonly serverName: string;
  readonly anchorsPem: string;
  /** Proxies still without a certificate by then count as missing. */
  readonly deadlineMs: number;
}

/** What one storm gave, from the proxies' side. */
export interface StormOutcome {
  readonly t: 'outcome';
  /** Per proxy that got one: ms from the storm's start to holding a verified certificate. */
  readonly timesMs: number[];
  readonly missing: number;
  /** Certify attempts in all (first tries and retries). */
  readonly attempts: number;
  /** RESOURCE_EXHAUSTED answers, each retried after the hint (not errors). */
  readonly retriedExhausted: number;
  /** Retry hints received (ms), for their median. */
  readonly hintsMs: number[];
  /** Every other failure, by gRPC status name (or "verify" for a refused response). */
  readonly errors: Record<string, number>;
  /** CPU time of this process during the storm, and the storm's wall time. */
  readonly cpuMs: number;
  readonly wallMs: number;
}

/** gRPC status names by number, for the error counts. */
const STATUS_NAMES = new Map<number, string>(
  Object.entries(GrpcStatus).map(([name, code]) => [code, name]),
);

interface Pod extends StormProxy {
  readonly key: RequestKey;
}
const sets: Record<StormMessage['set'], Pod[]> = { storm: [], warmup: [] };
let tokens: readonly Buffer[] = [];

/** A pod with its key and CSR made now (the proxy's own), before the storm. */
function withKey(p: StormProxy): Pod {
  return { ...p, key: freshRequestKey(p.identity) };
}

function prepare(msg: PrepareMessage): void {
  sets.storm = msg.proxies.map(withKey);
  sets.warmup = msg.warmup.map(withKey);
  tokens = msg.tokens.map((t) => Buffer.from(t));
}

async function storm(msg: StormMessage): Promise<StormOutcome> {
  const log: Logger = silentLogger();
  const errors: Record<string, number> = {};
  const hintsMs: number[] = [];
  const timesMs: number[] = [];
  let attempts = 0;
  let retriedExhausted = 0;
  const proxies = sets[msg.set];
  let pending = proxies.length;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const clients: { id: IdentityClient; h2: Http2CertifyClient }[] = [];
  // One TLS context for all: each real proxy makes one for its one connection, on its own core.
  const secureContext = createSecureContext({ ca: msg.anchorsPem });
  let allDone!: () => void;
  const done = new Promise<void>((resolve) => (allDone = resolve));
  const deadline = setTimeout(allDone, msg.deadlineMs);
  for (const p of proxies) {
    const h2 = new Http2CertifyClient({
      address: { host: '127.0.0.1', port: msg.port },
      serverName: msg.serverName,
      anchorsPem: msg.anchorsPem,
      localAddress: p.localAddress,
      secureContext,
    });
    const certify = (req: CertifyRequest): Promise<CertifyResponse> => {
      attempts++;
      return h2.certify(req);
    };
    const id = new IdentityClient({
      localIdentity: p.identity,
      tokenFile: '(in memory)',
      readFile: () => Promise.resolve(tokens[p.token]!),
      requestKey: () => p.key,
      certify,
      anchorsPem: () => msg.anchorsPem,
      clock: systemClock,
      random: systemRandom,
      timers: systemTimers,
      logger: log,
    });
    id.on('certificate', () => {
      timesMs.push(performance.now() - t0);
      id.close();
      h2.close();
      if (--pending === 0) allDone();
    });
    id.on('refreshFailed', (err) => {
      if (err instanceof CertifyCallFailed) {
        if (err.code === GrpcStatus.RESOURCE_EXHAUSTED && err.retryAfterMs !== undefined) {
          retriedExhausted++;
          hintsMs.push(err.retryAfterMs);
          return;
        }
        const name = STATUS_NAMES.get(err.code) ?? `code ${err.code}`;
        errors[name] = (errors[name] ?? 0) + 1;
      } else {
        errors['verify'] = (errors['verify'] ?? 0) + 1;
      }
    });
    clients.push({ id, h2 });
  }
  // "At once": every proxy starts in the same turn of the event loop.
  for (const c of clients) c.id.start();
  await done;
  clearTimeout(deadline);
  const wallMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  for (const c of clients) {
    c.id.close();
    c.h2.close();
  }
  return {
    t: 'outcome',
    timesMs: timesMs.sort((a, b) => a - b),
    missing: pending,
    attempts,
    retriedExhausted,
    hintsMs,
    errors,
    cpuMs: (cpu.user + cpu.system) / 1000,
    wallMs,
  };
}

/**
 * `count` pods over `accounts` ServiceAccounts, from 127.<net>.0.1 onwards (250 addresses per
 * /24, so up to 64,000 pods per net).
 */
export function stormProxies(
  count: number,
  accounts: number,
  naming: (ns: string, sa: string) => string,
  net = 1,
): { proxies: StormProxy[]; accounts: { ns: string; sa: string }[] } {
  const list = Array.from({ length: accounts }, (_, j) => ({
    ns: `storm-${j % 4}`,
    sa: `app-${j}`,
  }));
  const proxies = Array.from({ length: count }, (_, i) => {
    const a = i % accounts;
    const localAddress = `127.${net}.${Math.floor(i / 250)}.${(i % 250) + 1}`;
    return { identity: naming(list[a]!.ns, list[a]!.sa), token: a, localAddress };
  });
  return { proxies, accounts: list };
}

if (process.send !== undefined && process.argv.includes('--storm-proxies')) {
  process.on('message', (m: PrepareMessage | StormMessage | { t: 'exit' }) => {
    if (m.t === 'prepare') {
      const started = performance.now();
      prepare(m);
      process.send!({ t: 'ready', keygenMs: performance.now() - started });
    } else if (m.t === 'storm') {
      void storm(m).then((o) => process.send!(o));
    } else {
      process.disconnect?.();
    }
  });
  process.send({ t: 'hello' });
}
