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

/** How log lines are written: one JSON object a line, or a line for people. */
export type LogFormat = 'json' | 'text';

const TEXT_LEVELS: Record<string, string> = {
  trace: 'TRACE',
  debug: 'DEBUG',
  info: 'INFO ',
  warn: 'WARN ',
  error: 'ERROR',
  fatal: 'FATAL',
};

/**
 * Rewrites one line pino wrote, as the last step before the stream. Each key appears once
 * (the innermost wins: a field of the call over the child's binding over the parent's), which
 * pino itself does not ensure: a child bound `component` under a parent bound `component`
 * wrote the key twice, which strict JSON parsers refuse. In `text`, the line is for people:
 * time, level, where (service/component), message, then the other fields as key=value.
 *
 * @example
 * ```ts
 * formatLogLine('{"level":"info","component":"a","component":"b","msg":"hi"}\n', 'json');
 * // '{"level":"info","component":"b","msg":"hi"}\n'
 * ```
 */
export function formatLogLine(line: string, format: LogFormat): string {
  let record: Record<string, unknown>;
  try {
    // JSON.parse keeps the last of duplicate keys: the innermost binding or the call's field.
    record = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line;
  }
  if (format === 'json') return `${JSON.stringify(record)}\n`;
  const { level, time, msg, service, component, err, ...rest } = record;
  delete rest['pid'];
  const clock = typeof time === 'string' ? time.slice(11, 23) : '';
  const where = [service, component].filter((x) => typeof x === 'string').join('/');
  const error =
    err !== null && typeof err === 'object' && 'message' in err
      ? (err as { message: unknown }).message
      : err;
  const fields = Object.entries(error === undefined ? rest : { ...rest, err: error }).map(
    ([k, v]) => `${k}=${typeof v === 'string' && /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v)}`,
  );
  return `${[clock, TEXT_LEVELS[String(level)] ?? String(level), where === '' ? undefined : `${where}:`, msg, ...fields].filter((x) => x !== undefined && x !== '').join(' ')}\n`;
}

/**
 * Creates the process logger. Secrets never reach it, but as a second line of defence any field
 * named like a secret is redacted.
 *
 * @example
 * ```ts
 * const log = createLogger({ level: 'info', format: 'text' }).child({ component: 'identity-ca' });
 * ```
 */
export function createLogger(opts: {
  level: LogLevel;
  destination?: DestinationStream;
  format?: LogFormat;
}): Logger {
  const format = opts.format ?? 'json';
  return pino(
    {
      hooks: { streamWrite: (line) => formatLogLine(line, format) },
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
