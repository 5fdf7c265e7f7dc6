/**
 * What every long-running command builds once: the logger and the process-level handlers, and
 * the wait for a stop signal. Nothing here loads grpc-js: the one grpc-js user, the CertifyClient
 * of `meshid local`'s self-check, routes its logs itself.
 */
import { availableParallelism } from 'node:os';
import { createLogger, enforceFips } from '../core/index.js';
import type { CryptoStatus, LogLevel, Logger } from '../core/index.js';

/** The process logger. */
export function processLogger(level: LogLevel, bindings: Record<string, unknown> = {}): Logger {
  return createLogger({ level }).child(bindings);
}

/**
 * Logs the one "listening" line. It is printed at any level but silent, because tools and tests
 * wait for it; below info it goes through a logger of its own.
 */
export function announceListening(
  logger: Logger,
  bindings: Record<string, unknown>,
  fields: Record<string, unknown>,
): void {
  const announce =
    logger.isLevelEnabled('info') || logger.level === 'silent'
      ? logger
      : createLogger({ level: 'info' }).child(bindings);
  announce.info(fields, 'listening');
}

/** Workers for the CA: the configured number, or one per core for 0. */
export function workerCount(configured: number): number {
  return configured > 0 ? configured : Math.max(1, availableParallelism());
}

/** Resolves with the signal that asked the process to stop (SIGINT or SIGTERM). */
export function untilStopSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const stop = (signal: NodeJS.Signals): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve(signal);
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}

/**
 * FIPS mode at start-up, before anything else runs: with `fips` set, Node's crypto runs on a FIPS
 * provider or the command fails with ERR_FIPS_UNAVAILABLE (see core/fips.ts). Logs the crypto
 * status to `logger`; commands whose stdout is their output (init, token, install) pass none, and
 * the line goes to stderr, in FIPS mode only.
 */
export function startCrypto(
  config: { readonly fips: boolean; readonly logLevel: LogLevel },
  logger?: Logger,
): CryptoStatus {
  const log =
    logger ??
    createLogger({
      level: config.fips ? config.logLevel : 'silent',
      destination: process.stderr,
    });
  return enforceFips(config.fips, log);
}
