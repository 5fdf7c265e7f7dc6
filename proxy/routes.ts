/**
 * Where the outbound proxy sends traffic, and which identity it insists the far end proves.
 *
 * Two ways in:
 * - A static route, `--route LISTEN_ADDR=HOST:PORT@EXPECTED_IDENTITY`: one local loopback
 *   listener per destination. The app dials the listener; the proxy dials HOST:PORT over mTLS
 *   and accepts only a server whose certificate names EXPECTED_IDENTITY.
 * - A {@link DestinationResolver}, consulted by the HTTP forward proxy with the request's
 *   authority (`host:port` from the Host header or the absolute URI).
 */
import type { Address } from '../core/index.js';
import {
  MeshidError,
  formatAddress,
  isDns1123Subdomain,
  parseAddress,
  printable,
} from '../core/index.js';

/** One per-destination listener: plain TCP in on `listen`, mTLS out to `target`. */
export interface Route {
  readonly listen: Address;
  readonly target: Address;
  /** The identity the target's certificate must carry as its first DNS SAN. */
  readonly identity: string;
}

/** What a destination lookup answers: where to connect and whom to expect there. */
export interface Destination {
  readonly target: Address;
  readonly identity: string;
}

/**
 * Resolves a logical destination (an authority, `host:port`, lower-case) to a concrete target
 * and the identity it must prove. `undefined` means "not a meshed destination": the caller
 * refuses the request rather than sending it in the clear.
 *
 * The static implementation below answers from configuration. The call is async so a resolver
 * over watches can wait for its first update; it is made per new upstream connection, never per
 * byte.
 */
export interface DestinationResolver {
  resolve(authority: string): Promise<Destination | undefined>;
}

/**
 * A resolver over a fixed table (`--destination AUTHORITY=HOST:PORT@IDENTITY`).
 */
export class StaticDestinationResolver implements DestinationResolver {
  readonly #table: ReadonlyMap<string, Destination>;

  constructor(entries: Iterable<{ readonly authority: string } & Destination>) {
    const table = new Map<string, Destination>();
    for (const e of entries) {
      const key = normalizeAuthority(e.authority);
      if (key === undefined) {
        throw configError(`destination authority "${printable(e.authority)}" is not host[:port]`);
      }
      if (table.has(key)) throw configError(`destination "${key}" is configured twice`);
      table.set(key, { target: e.target, identity: e.identity });
    }
    this.#table = table;
  }

  resolve(authority: string): Promise<Destination | undefined> {
    const key = normalizeAuthority(authority);
    return Promise.resolve(key === undefined ? undefined : this.#table.get(key));
  }
}

const HOST_NAME = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

/**
 * Lower-cases an authority and adds the HTTP default port, so `Web.NS:80` and `web.ns` are one
 * key. Undefined when it is not `host[:port]` (userinfo, paths and empty hosts are refused).
 */
export function normalizeAuthority(authority: string, defaultPort = 80): string | undefined {
  const lower = authority.trim().toLowerCase();
  const a = parseAddress(lower) ?? parseAddress(`${lower}:${defaultPort}`);
  // A host name (letters, digits, '-', '.') or an IPv6 literal; never userinfo or a path.
  if (a === undefined || !(a.host.includes(':') || HOST_NAME.test(a.host))) return undefined;
  return formatAddress(a);
}

/**
 * Parses `LISTEN_ADDR=HOST:PORT@EXPECTED_IDENTITY`. The listen address must be loopback: the
 * listener relays with the workload's own certificate, so anything that can reach it speaks
 * as this workload.
 *
 * @throws MeshidError ERR_CONFIG_INVALID naming the part that is wrong.
 */
export function parseRoute(text: string): Route {
  const { left, target, identity } = splitSpec(text, 'route', 'LISTEN_ADDR');
  const listen = parseAddress(left);
  if (listen === undefined) {
    throw configError(
      `route "${printable(text)}": listen address "${printable(left)}" is not host:port`,
    );
  }
  if (!isLoopback(listen.host)) {
    throw configError(
      `route "${printable(text)}": listen address "${printable(left)}" must be loopback (127.0.0.0/8, ::1 or localhost)`,
    );
  }
  return { listen, target, identity };
}

/**
 * Parses `AUTHORITY=HOST:PORT@IDENTITY`, an entry of {@link StaticDestinationResolver}.
 * AUTHORITY is what the app puts in the Host header; the port defaults to 80.
 *
 * @throws MeshidError ERR_CONFIG_INVALID naming the part that is wrong.
 */
export function parseDestination(text: string): { authority: string } & Destination {
  const { left, target, identity } = splitSpec(text, 'destination', 'AUTHORITY');
  const authority = normalizeAuthority(left);
  if (authority === undefined) {
    throw configError(
      `destination "${printable(text)}": authority "${printable(left)}" is not host[:port]`,
    );
  }
  return { authority, target, identity };
}

/** True for addresses only this host can reach. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

function splitSpec(
  text: string,
  what: string,
  leftName: string,
): { left: string; target: Address; identity: string } {
  const form = `${leftName}=HOST:PORT@EXPECTED_IDENTITY`;
  // '=' and '@' appear in none of the parts, so the first '=' and the last '@' split it.
  const eq = text.indexOf('=');
  if (eq < 0) throw configError(`${what} "${printable(text)}" has no "=": expected ${form}`);
  const at = text.lastIndexOf('@');
  if (at < eq)
    throw configError(`${what} "${printable(text)}" has no "@identity": expected ${form}`);
  const left = text.slice(0, eq);
  const targetText = text.slice(eq + 1, at);
  const identity = text.slice(at + 1);
  if (left.length === 0) throw configError(`${what} "${printable(text)}" has an empty ${leftName}`);
  const target = parseAddress(targetText);
  if (target === undefined || target.port === 0) {
    throw configError(
      `${what} "${printable(text)}": target "${printable(targetText)}" is not host:port with a non-zero port`,
    );
  }
  if (!isDns1123Subdomain(identity)) {
    throw configError(
      `${what} "${printable(text)}": identity "${printable(identity)}" is not a DNS-1123 subdomain`,
    );
  }
  return { left, target, identity };
}

function configError(message: string): MeshidError {
  return new MeshidError('ERR_CONFIG_INVALID', message);
}
