/**
 * Entry of a CA worker process (forked by the primary in `meshid ca`). It gets its validated
 * configuration from the primary over IPC and runs one Certify process.
 */
import 'reflect-metadata';
import cluster from 'node:cluster';
import { createRegistry, systemClock, systemRandom } from '../core/index.js';
import { runCertifyWorker, startCertifyProcess } from '../identity-ca/index.js';
import { caListeners, certifyChoices } from './ca.js';
import { caKube } from './kube.js';
import { listenersOrExplain, processLogger, startCrypto } from './runtime.js';

const bootstrapLevel = process.env['MESHID_LOG_LEVEL'] === 'silent' ? 'silent' : 'info';
const workerId = cluster.worker?.id ?? 0;
const bootLogger = processLogger(
  { logLevel: bootstrapLevel, logFormat: 'json' },
  { service: 'identity-ca', worker: workerId },
);

await runCertifyWorker(
  async (config, registry, role) => {
    const logger = processLogger(config, { service: 'identity-ca', worker: workerId });
    // Each worker is its own process: FIPS mode is checked (and set) in every one.
    startCrypto(config, logger);
    const kube = await caKube(config);
    // A busy port fails here, in the worker: the primary prints what the worker says.
    return listenersOrExplain(caListeners(config).slice(0, 1), () =>
      startCertifyProcess({
        ...certifyChoices(config, kube, logger, systemClock),
        config,
        registry,
        recordIssuerEvents: role.recordIssuerEvents,
        // One signer per replica (in the worker that records issuer Events), not one per worker.
        signPodCertificates: role.recordIssuerEvents,
        logger,
        clock: systemClock,
        random: systemRandom,
      }),
    );
  },
  () => createRegistry(),
  bootLogger,
);
