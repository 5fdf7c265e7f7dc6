/**
 * Structured JSON logs (pino) to stdout. The logger is passed in; components make children.
 * Log keys are constants so that dashboards and tests can rely on them. Tokens and private keys
 * are never logged: log a certificate's serial and the SHA-256 of its DER instead.
 */
import { pino } from 'pino';
import type { Logger as PinoLogger, DestinationStream } from 'pino';

export type Logger = PinoLogger;

/** Log keys used across components. */
export const LogKey = {
  component: 'component',
  event: 'event',
  identity: 'identity',
  serial: 'serial',
  sha256: 'sha256',
  notAfter: 'notAfter',
  code: 'code',
  grpcStatus: 'grpcStatus',
  reason: 'reason',
  address: 'address',
  worker: 'worker',
  issuer: 'issuer',
  durationMs: 'durationMs',
} as const;

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

/**
 * Creates the process logger. Secrets never reach it, but as a second line of defence any field
 * named like a secret is redacted.
 *
 * @example
 * ```ts
 * const log = createLogger({ level: 'info' }).child({ component: 'identity-ca' });
 * ```
 */
export function createLogger(opts: { level: LogLevel; destination?: DestinationStream }): Logger {
  return pino(
    {
      level: opts.level,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: {
        paths: ['token', '*.token', 'privateKey', '*.privateKey', 'key', '*.key', 'authorization'],
        censor: '[redacted]',
      },
    },
    opts.destination ?? pino.destination({ fd: 1, sync: true }),
  );
}

/** A logger that drops everything (for tests that do not read logs). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
