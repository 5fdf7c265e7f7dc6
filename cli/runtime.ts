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
  formatAddress,
  hybridGroupAvailable,
  tlsGroupList,
} from '../core/index.js';
import type { Address, CryptoStatus, LogLevel, Logger, TlsGroupsMode } from '../core/index.js';
import type * as Tls from 'node:tls';

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
    readonly tlsGroups: TlsGroupsMode;
  },
  logger?: Logger,
): CryptoStatus {
  const log =
    logger ??
    createLogger({
      level: config.fips ? config.logLevel : 'silent',
      destination: process.stderr,
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
  try {
    return await listen();
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { address?: string; port?: number };
    if (e.syscall !== 'listen' && e.syscall !== 'bind') throw err;
    const where =
      e.address !== undefined && e.port !== undefined
        ? formatAddress({ host: e.address, port: e.port })
        : address === undefined
          ? 'its address'
          : formatAddress(address);
    const hint =
      e.code === 'EADDRINUSE'
        ? 'another process holds that port: stop it, or choose another address'
        : e.code === 'EADDRNOTAVAIL'
          ? 'that address is not one of this host: choose one that is'
          : e.code === 'EACCES'
            ? 'the process may not bind that port: choose a port above 1023 or grant the capability'
            : 'choose another address';
    throw new MeshidError(
      'ERR_LISTEN_FAILED',
      `cannot listen on ${where} for the ${what} (${e.code ?? e.message}): ${hint} with ${flag}`,
      { cause: err },
    );
  }
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
