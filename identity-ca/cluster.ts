/**
 * The CA on every core: a primary process and one Certify worker process per core, sharing the
 * listening socket (node:cluster hands connections out round-robin). Each worker loads and
 * watches the issuer itself, so the issuer's private key is read by the processes that sign and
 * never travels over IPC. The primary serves the admin port: it aggregates the workers' metrics
 * and is ready only when every worker is.
 *
 * Workers need no coordination: serials are random, and state is only what the files say.
 */
import cluster from 'node:cluster';
import type { Worker } from 'node:cluster';
import { AggregatorRegistry } from 'prom-client';
import type { Address, CaConfig, Clock, Logger, Readiness, Registry } from '../core/index.js';
import { MeshidError, formatAddress, isMeshidError, startAdminServer } from '../core/index.js';
import type { CertifyProcess, CertifyStatus } from './ca.js';
import { readinessOf } from './ca.js';

type ToWorker = { t: 'meshid:config'; config: CaConfig; role: WorkerRole } | { t: 'meshid:reload' };

/**
 * What one worker does besides serving Certify. Every worker watches the issuer and so sees each
 * change, but a change is one thing happening to the CA: exactly one worker at a time (the
 * primary's choice) records the issuer Events, so a change is one Event per CA process, not one
 * per worker.
 */
interface WorkerRole {
  readonly recordIssuerEvents: boolean;
}
type FromWorker =
  | { t: 'meshid:hello' }
  | { t: 'meshid:listening'; address: Address }
  | { t: 'meshid:failed'; code: string; message: string }
  | { t: 'meshid:status'; status: CertifyStatus };

/** A running CA: its Certify address, its admin address, and how to stop it. */
export interface RunningCa {
  readonly address: Address;
  readonly adminAddress: Address;
  readiness(): Readiness;
  reload(): Promise<void>;
  close(): Promise<void>;
}

interface PrimaryDeps {
  readonly config: CaConfig;
  readonly workers: number;
  readonly logger: Logger;
  readonly clock: Clock;
  /** The worker's entry module (it calls runCertifyWorker). */
  readonly workerEntry: string;
}

/** How long a worker may take to stop after SIGTERM before it is killed. */
const WORKER_STOP_MS = 10_000;

/**
 * Starts the primary: forks the workers, waits until every one listens (or one fails, which
 * fails the start), then serves the admin port. A worker that dies later is replaced.
 *
 * @example
 * ```ts
 * const ca = await startCaPrimary({ config, workers: 2, logger, clock, workerEntry });
 * ```
 */
export async function startCaPrimary(deps: PrimaryDeps): Promise<RunningCa> {
  const { config, logger: log, clock } = deps;
  cluster.setupPrimary({ exec: deps.workerEntry, args: [], silent: false });
  const aggregator = new AggregatorRegistry();
  const statuses = new Map<number, CertifyStatus>();
  let stopping = false;
  let address: Address | undefined;
  // The worker that records issuer Events; a replacement takes the role when it dies.
  let issuerEventsWorker: number | undefined;

  const fork = (): Promise<Worker> =>
    new Promise((resolve, reject) => {
      const worker = cluster.fork();
      const onMessage = (m: FromWorker): void => {
        // The worker asks for its configuration once its listener is attached: a message sent
        // on 'online' would arrive while its modules still load, and be lost.
        if (m.t === 'meshid:hello') {
          issuerEventsWorker ??= worker.id;
          const role = { recordIssuerEvents: issuerEventsWorker === worker.id };
          worker.send({ t: 'meshid:config', config, role } satisfies ToWorker);
        } else if (m.t === 'meshid:status') statuses.set(worker.id, m.status);
        else if (m.t === 'meshid:listening') {
          address ??= m.address;
          resolve(worker);
        } else if (m.t === 'meshid:failed') {
          reject(new MeshidError(m.code as MeshidError['code'], m.message));
        }
      };
      worker.on('message', onMessage);
      worker.once('exit', (code, signal) => {
        statuses.delete(worker.id);
        if (issuerEventsWorker === worker.id) issuerEventsWorker = undefined;
        reject(new Error(`worker exited during start (code ${code}, signal ${signal})`));
        if (!stopping && address !== undefined) {
          log.error({ worker: worker.id, code, signal }, 'Certify worker died; starting a new one');
          fork().catch((err: unknown) => log.error({ err }, 'replacement worker failed to start'));
        }
      });
    });

  const started = await Promise.allSettled(Array.from({ length: deps.workers }, fork));
  const failure = started.find((r) => r.status === 'rejected');
  if (failure !== undefined) {
    stopping = true;
    for (const w of Object.values(cluster.workers ?? {})) w?.kill();
    throw failure.reason;
  }

  const readiness = (): Readiness => {
    const workers = Object.values(cluster.workers ?? {}).filter((w) => w !== undefined);
    if (workers.length < deps.workers)
      return { ready: false, reason: `${workers.length}/${deps.workers} workers running` };
    for (const w of workers) {
      const r = readinessOf(statuses.get(w.id) ?? {}, clock.now());
      if (!r.ready) return { ready: false, reason: `worker ${w.id}: ${r.reason}` };
    }
    return readinessOf(statuses.values().next().value ?? {}, clock.now());
  };
  const stopWorkers = async (): Promise<void> => {
    await Promise.all(
      Object.values(cluster.workers ?? {}).map(
        (w) =>
          new Promise<void>((resolve) => {
            if (w === undefined || w.isDead()) return resolve();
            // Either exit event ends the wait; the timer keeps the primary's event loop alive
            // meanwhile (a wait with no handle left would end the process with exit code 13) and
            // bounds it: a worker still there after 10 s is killed.
            const done = (): void => {
              clearTimeout(backstop);
              resolve();
            };
            const backstop = setTimeout(() => {
              w.process.kill('SIGKILL');
              done();
            }, WORKER_STOP_MS);
            w.once('exit', done);
            w.process.once('exit', done);
            w.process.kill('SIGTERM');
          }),
      ),
    );
  };
  let admin: Awaited<ReturnType<typeof startAdminServer>>;
  try {
    admin = await startAdminServer(config.admin, {
      logger: log,
      readiness,
      metrics: async () => ({
        contentType: aggregator.contentType,
        body: await aggregator.clusterMetrics(),
      }),
    });
  } catch (err) {
    // The workers would keep the process alive, serving with no admin port.
    stopping = true;
    await stopWorkers();
    throw err;
  }

  return {
    address: address!,
    adminAddress: admin.address,
    readiness,
    async reload() {
      for (const w of Object.values(cluster.workers ?? {}))
        w?.send({ t: 'meshid:reload' } satisfies ToWorker);
    },
    async close() {
      stopping = true;
      await admin.close();
      await stopWorkers();
    },
  };
}

/**
 * The worker side: waits for its configuration from the primary, starts a Certify process
 * with `start`, reports listening (or the failure), then its status whenever it changes.
 *
 * @example
 * ```ts
 * await runCertifyWorker((config, registry, role) => startCertifyProcess({ config, registry, ...role, ... }), logger);
 * ```
 */
export async function runCertifyWorker(
  start: (config: CaConfig, registry: Registry, role: WorkerRole) => Promise<CertifyProcess>,
  registryFor: () => Registry,
  logger: Logger,
): Promise<void> {
  const send = (m: FromWorker): void => {
    process.send?.(m);
  };
  const { config, role } = await new Promise<{ config: CaConfig; role: WorkerRole }>((resolve) => {
    const onMessage = (m: ToWorker): void => {
      if (m.t === 'meshid:config') {
        process.off('message', onMessage);
        resolve(m);
      }
    };
    process.on('message', onMessage);
    send({ t: 'meshid:hello' });
  });
  const registry = registryFor();
  new AggregatorRegistry();
  AggregatorRegistry.setRegistries([registry]);
  let ca: CertifyProcess;
  try {
    ca = await start(config, registry, role);
  } catch (err) {
    send({
      t: 'meshid:failed',
      code: isMeshidError(err) ? err.code : 'ERR_INTERNAL',
      message: err instanceof Error ? err.message : String(err),
    });
    process.disconnect?.();
    process.exitCode = 1;
    return;
  }
  ca.onStatus((status) => send({ t: 'meshid:status', status }));
  send({ t: 'meshid:status', status: ca.status() });
  send({ t: 'meshid:listening', address: ca.address });
  logger.debug({ address: formatAddress(ca.address) }, 'worker listening');
  process.on('message', (m: ToWorker) => {
    if (m.t === 'meshid:reload') void ca.reload();
  });
  // Ctrl-C in a terminal signals the whole process group; the primary decides when workers
  // stop (it sends SIGTERM), so a worker must not die of SIGINT on its own and be "replaced".
  process.on('SIGINT', () => undefined);
  process.once('SIGTERM', () => {
    void ca.close().then(() => process.exit(0));
  });
  process.once('disconnect', () => {
    void ca.close().then(() => process.exit(0));
  });
}
