/**
 * Entry of a CA worker process (forked by the primary in `meshid ca`). It gets its validated
 * configuration from the primary over IPC and runs one Certify process.
 */
import 'reflect-metadata';
import cluster from 'node:cluster';
import { createRegistry, systemClock, systemRandom } from '../core/index.js';
import { runCertifyWorker, startCertifyProcess } from '../identity-ca/index.js';
import { caKube } from './kube.js';
import { processLogger } from './runtime.js';

function optional<K extends string, V>(key: K, value: V | undefined): { [P in K]?: V } {
  return value === undefined ? {} : ({ [key]: value } as { [P in K]: V });
}

const bootstrapLevel = process.env['MESHID_LOG_LEVEL'] === 'silent' ? 'silent' : 'info';
const workerId = cluster.worker?.id ?? 0;
const bootLogger = processLogger(bootstrapLevel, { service: 'identity-ca', worker: workerId });

await runCertifyWorker(
  async (config, registry) =>
    startCertifyProcess({
      config,
      ...optional('kube', await caKube(config)),
      registry,
      logger: processLogger(config.logLevel, { service: 'identity-ca', worker: workerId }),
      clock: systemClock,
      random: systemRandom,
    }),
  () => createRegistry(),
  bootLogger,
);
