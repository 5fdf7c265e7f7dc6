/**
 * How a listen address becomes a bound socket, once for every meshid listener (the CA's gRPC and
 * admin servers, the destination service, the webhooks, the proxy's admin, inbound, outbound and
 * transparent listeners).
 *
 * One meaning of "all addresses": `[::]` (host `::`) is one IPv6 socket that also accepts IPv4
 * connections as IPv4-mapped addresses (`ipv6Only: false`), so a listener is reachable in an
 * IPv4-only, an IPv6-only and a dual-stack pod alike; on a kernel without IPv6 (`socket(AF_INET6)`
 * fails with EAFNOSUPPORT, or the address with EADDRNOTAVAIL) the same listener binds `0.0.0.0`
 * instead and says so in one log line. `0.0.0.0` written out is IPv4 only, as the user asked.
 * Node's own `listen()` without a host does the same fallback; meshid spells the host out so
 * that the address in the settings is the one in the logs.
 */
import type { AddressInfo, Server } from 'node:net';
import { formatAddress } from './config/setting.js';
import type { Address } from './config/setting.js';
import type { Logger } from './logger.js';
import { LogKey } from './logger.js';

/**
 * The host of a listener on every address of both families (`[::]:4191`).
 *
 * @example
 * ```ts
 * await listenOn(server, { host: ALL_ADDRESSES, port: 4191 }); // IPv4 and IPv6 clients
 * ```
 */
export const ALL_ADDRESSES = '::';

/**
 * The host of a listener on every IPv4 address only, and where `[::]` falls back to.
 *
 * @example
 * ```ts
 * await listenOn(server, { host: ALL_IPV4_ADDRESSES, port: 4191 }); // IPv4 clients only
 * ```
 */
export const ALL_IPV4_ADDRESSES = '0.0.0.0';

/** Errors that mean "this kernel (or namespace) has no IPv6": fall back to IPv4. */
const NO_IPV6 = new Set(['EAFNOSUPPORT', 'EADDRNOTAVAIL']);

/** What {@link listenOn} needs besides the server and the address. */
export interface ListenOnOptions {
  /** Where the IPv4 fallback is logged. */
  readonly logger?: Logger;
  /** The listener's name in that log line ("admin", "webhooks"). */
  readonly name?: string;
}

function bind(server: Server, host: string, port: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen({ host, port, ...(host === ALL_ADDRESSES ? { ipv6Only: false } : {}) }, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/**
 * Binds `server` (a net, tls, http, https or http2 server) to `address` and resolves with the
 * bound address (the real port when 0 was asked). `[::]` listens on both families, falling back
 * to `0.0.0.0` where the kernel has no IPv6; any other host is bound as written.
 *
 * @throws the listen error (EADDRINUSE, EACCES, EADDRNOTAVAIL for an address the host lacks);
 *   the server is then not listening.
 *
 * @example
 * ```ts
 * const bound = await listenOn(server, { host: '::', port: 4191 }, { logger, name: 'admin' });
 * // bound: { host: '::', port: 4191 }, or { host: '0.0.0.0', port: 4191 } without IPv6
 * ```
 */
export async function listenOn(
  server: Server,
  address: Address,
  options: ListenOnOptions = {},
): Promise<Address> {
  try {
    await bind(server, address.host, address.port);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (address.host !== ALL_ADDRESSES || code === undefined || !NO_IPV6.has(code)) throw err;
    const fallback = { host: ALL_IPV4_ADDRESSES, port: address.port };
    options.logger?.warn(
      {
        [LogKey.address]: formatAddress(fallback),
        listener: options.name,
        err: code,
        asked: formatAddress(address),
      },
      'no IPv6 on this host: listening on IPv4 addresses only',
    );
    await bind(server, fallback.host, fallback.port);
  }
  const bound = server.address() as AddressInfo | string | null;
  if (bound === null || typeof bound === 'string') throw new Error('listener has no address');
  return { host: bound.address, port: bound.port };
}
