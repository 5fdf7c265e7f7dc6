/**
 * What every long-running command builds once: the logger (with grpc-js routed into it) and
 * the process-level handlers, and the wait for a stop signal.
 */
import * as grpc from '@grpc/grpc-js';
import { availableParallelism } from 'node:os';
import { createLogger } from '../core/index.js';
import type { LogLevel, Logger } from '../core/index.js';

/** The process logger, with grpc-js's own log lines routed into it. */
export function processLogger(level: LogLevel, bindings: Record<string, unknown> = {}): Logger {
  const logger = createLogger({ level }).child(bindings);
  const grpcLog = logger.child({ component: 'grpc-js' });
  grpc.setLogger({
    error: (...args: unknown[]) => grpcLog.warn(args.map(String).join(' ')),
  } as unknown as Partial<Console>);
  grpc.setLogVerbosity(grpc.logVerbosity.ERROR);
  return logger;
}

/**
 * Logs the one "listening" line. It is printed at any level but silent, because tools and tests
 * wait for it; below info it goes through a logger of its own, which leaves grpc-js's log routing
 * on the process logger.
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
