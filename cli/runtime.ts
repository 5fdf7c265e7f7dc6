/**
 * What every long-running command builds once: the logger and the process-level handlers, and
 * the wait for a stop signal. Nothing here loads grpc-js: the one grpc-js user, the CertifyClient
 * of `meshid local`'s self-check, routes its logs itself.
 */
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import {
  FIPS_TLS,
  MeshidError,
  createLogger,
  enforceFips,
  envName,
  formatAddress,
  hybridGroupAvailable,
  tlsGroupList,
} from '../core/index.js';
import type {
  Address,
  CryptoStatus,
  LogFormat,
  LogLevel,
  Logger,
  TlsGroupsMode,
} from '../core/index.js';
import type * as Tls from 'node:tls';
import { findPortOwner } from './port-owner.js';

/** The log settings every command has. */
interface LogSettings {
  readonly logLevel: LogLevel;
  readonly logFormat: 'auto' | LogFormat;
}

/**
 * The format of log lines: as set, or for `auto` text where people read them (a terminal, or a
 * command whose output is for people, `human`) and JSON where machines do.
 */
export function logFormat(setting: LogSettings['logFormat'], human = false): LogFormat {
  if (setting !== 'auto') return setting;
  return human || process.stdout.isTTY ? 'text' : 'json';
}

/** The process logger, on stdout. */
export function processLogger(
  log: LogSettings,
  bindings: Record<string, unknown> = {},
  human = false,
): Logger {
  return createLogger({ level: log.logLevel, format: logFormat(log.logFormat, human) }).child(
    bindings,
  );
}

/**
 * Logs the one "listening" line. It is printed at any level but silent, because tools and tests
 * wait for it; below info it goes through a child logger of its own level.
 */
export function announceListening(logger: Logger, fields: Record<string, unknown>): void {
  const announce =
    logger.isLevelEnabled('info') || logger.level === 'silent'
      ? logger
      : logger.child({}, { level: 'info' });
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
 *
 * In FIPS mode it also narrows node's TLS defaults to the FIPS policy (TLS 1.3, AES-GCM, P-256 and
 * P-384), for the connections meshid's own settings do not reach: the Kubernetes API client and
 * a JWKS URL. The OpenSSL 3.0 FIPS provider itself still offers X25519, which node's default
 * group list puts first.
 *
 * Either way node's default key-exchange groups become those of `tlsGroups` (core/tls-groups.ts),
 * so those connections follow the same policy; `hybrid-required` where the hybrid cannot be
 * negotiated (FIPS mode, an OpenSSL without ML-KEM) fails here with ERR_TLS_GROUPS_UNAVAILABLE.
 */
export function startCrypto(
  config: {
    readonly fips: boolean;
    readonly logLevel: LogLevel;
    readonly logFormat: LogSettings['logFormat'];
    readonly tlsGroups: TlsGroupsMode;
  },
  logger?: Logger,
): CryptoStatus {
  const log =
    logger ??
    createLogger({
      level: config.fips ? config.logLevel : 'silent',
      destination: process.stderr,
      // These commands' own output is for people (or is YAML, a token): so is this line.
      format: logFormat(config.logFormat, true),
    });
  const status = enforceFips(config.fips, log);
  const groups = tlsGroupList(config.tlsGroups, config.fips);
  // The module object itself: an ES namespace import of it is read-only.
  const tls = createRequire(import.meta.url)('node:tls') as typeof Tls;
  if (config.fips) {
    tls.DEFAULT_MIN_VERSION = FIPS_TLS.minVersion;
    tls.DEFAULT_CIPHERS = FIPS_TLS.ciphers;
  } else if (config.tlsGroups === 'hybrid-preferred' && !hybridGroupAvailable()) {
    logger?.warn(
      { tlsGroups: config.tlsGroups, openssl: process.versions.openssl },
      'no post-quantum key exchange: this OpenSSL cannot negotiate X25519MLKEM768; classic groups only',
    );
  }
  tls.DEFAULT_ECDH_CURVE = groups;
  return status;
}

/** One listener of a command: what it serves, the flag that chooses its address, the address. */
export interface ListenerSetting {
  readonly what: string;
  /** The flag, e.g. `--admin`; its MESHID_* variable and config key are derived from it. */
  readonly flag: string;
  readonly address: Address | undefined;
}

/**
 * Binds one listener, or fails with ERR_LISTEN_FAILED naming the address, the cause and `flag`,
 * the setting that chooses it: "address already in use" alone does not say which of a process's
 * listeners it was, nor what to change.
 */
export async function listenOrExplain<T>(
  what: string,
  flag: string,
  address: Address | undefined,
  listen: () => Promise<T>,
): Promise<T> {
  return listenersOrExplain([{ what, flag, address }], listen);
}

/**
 * Runs `start`, which binds one or more of `listeners`; a bind failure becomes ERR_LISTEN_FAILED
 * naming the listener whose port failed, its flag (and variable and config key), the address,
 * the cause and, for a busy port, the process found holding it. No stack trace: the message is
 * the whole story.
 */
export async function listenersOrExplain<T>(
  listeners: readonly ListenerSetting[],
  start: () => Promise<T>,
): Promise<T> {
  try {
    return await start();
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { address?: string; port?: number };
    if (e.syscall !== 'listen' && e.syscall !== 'bind') throw err;
    throw await listenError(e, listeners);
  }
}

async function listenError(
  e: NodeJS.ErrnoException & { address?: string; port?: number },
  listeners: readonly ListenerSetting[],
): Promise<MeshidError> {
  const listener =
    listeners.find((l) => l.address !== undefined && l.address.port === e.port) ??
    (listeners.length === 1 ? listeners[0] : undefined);
  const address =
    e.address !== undefined && e.port !== undefined
      ? { host: e.address, port: e.port }
      : listener?.address;
  const where = address === undefined ? 'its address' : formatAddress(address);
  const flag = listener?.flag ?? listeners.map((l) => l.flag).join(' or ');
  const key = flag.replace(/^--/, '').replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
  const how =
    listener === undefined ? flag : `${flag} (${envName(key)}, or ${key}: in a --config file)`;
  let hint: string;
  if (e.code === 'EADDRINUSE') {
    const owner = address === undefined ? undefined : await findPortOwner(address.port);
    const holder =
      owner === undefined
        ? 'another process holds that port'
        : owner.pid === process.pid
          ? `this meshid process already listens there (pid ${owner.pid}: two settings name the same port)`
          : `process ${owner.pid} (${owner.command}) holds that port`;
    hint = `${holder}: stop it, or choose another address with ${how}`;
  } else if (e.code === 'EADDRNOTAVAIL') {
    hint = `that address is not one of this host's: choose one that is with ${how}`;
  } else if (e.code === 'EACCES') {
    hint = `the process may not bind that port: choose a port above 1023 with ${how}, or grant the capability (CAP_NET_BIND_SERVICE)`;
  } else {
    hint = `choose another address with ${how}`;
  }
  return new MeshidError(
    'ERR_LISTEN_FAILED',
    `cannot listen on ${where} for the ${listener?.what ?? 'server'} (${e.code ?? e.message}): ${hint}`,
    { cause: e },
  );
}

/**
 * Makes sure the process ends: once `afterMs` has passed (the shutdown grace period and a little),
 * logs what is late and exits with `code`. The timer is unref'd, so a process that ends by itself
 * is not held; a connection or timer nobody closed cannot keep it running past its grace.
 */
export function exitAfter(
  afterMs: number,
  code: number,
  logger: Logger,
  why: string,
): NodeJS.Timeout {
  const timer = setTimeout(() => {
    logger.warn({ afterMs }, why);
    process.exit(code);
  }, afterMs);
  timer.unref();
  return timer;
}
