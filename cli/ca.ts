/**
 * `meshid ca`: the identity CA. With no inputs given it runs against the local state folder
 * (`--dir`, default .meshid) that `meshid init` writes, after checking that only its owner can
 * change it (cli/state-dir.ts).
 */
import { fileURLToPath } from 'node:url';
import type { CaConfig, Logger } from '../core/index.js';
import { formatAddress, loadConfig, systemClock, systemRandom } from '../core/index.js';
import { startIdentityCa } from '../identity-ca/index.js';
import type { RunningCa } from '../identity-ca/index.js';
import { caKube, checkCaPermissions } from './kube.js';
import { checkStateDir } from './state-dir.js';
import {
  announceListening,
  processLogger,
  startCrypto,
  untilStopSignal,
  workerCount,
} from './runtime.js';

/** The worker process entry (compiled beside this file). */
export const CA_WORKER_ENTRY = fileURLToPath(new URL('./ca-worker.js', import.meta.url));

/**
 * Starts the CA and logs the one "listening" line with the bound addresses.
 *
 * @example
 * ```ts
 * const ca = await startCa(config, logger);
 * ```
 */
export async function startCa(config: CaConfig, logger: Logger): Promise<RunningCa> {
  // A state folder others could change is refused before anything is read from it.
  if (config.dir !== undefined) await checkStateDir(config.dir);
  const workers = workerCount(config.workers);
  const kube = await caKube(config);
  if (kube !== undefined) {
    try {
      await checkCaPermissions(kube.api, config, logger);
    } finally {
      // Workers make their own clients; this one was for the check.
      if (workers > 1) kube.api.close();
    }
  }
  const ca = await startIdentityCa({
    config,
    ...(kube === undefined || workers > 1 ? {} : { kube }),
    workers,
    logger,
    clock: systemClock,
    random: systemRandom,
    workerEntry: CA_WORKER_ENTRY,
  });
  announceListening(
    logger,
    { service: 'identity-ca' },
    {
      address: formatAddress(ca.address),
      admin: formatAddress(ca.adminAddress),
      identity: config.identityName,
      workers,
    },
  );
  return ca;
}

/** `meshid ca` */
export async function runCa(argv: string[]): Promise<number> {
  const { config } = loadConfig('ca', { argv, env: process.env });
  const logger = processLogger(config.logLevel, { service: 'identity-ca' });
  startCrypto(config, logger);
  // Handlers first: a stop signal during start-up must still stop the CA cleanly.
  const stopped = untilStopSignal();
  const ca = await startCa(config, logger);
  process.on('SIGHUP', () => void ca.reload());
  const signal = await stopped;
  logger.info({ signal }, 'shutting down');
  await ca.close();
  return 0;
}
