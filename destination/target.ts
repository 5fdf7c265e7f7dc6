/**
 * What a proxy asks about: the `path` of a GetDestination, read as an address (`10.96.0.10:80`,
 * `[fd00::10]:80`) or a Service name (`web.emojivoto.svc.cluster.local:80`).
 */
import {
  MeshidError,
  canonicalIp,
  formatAddress,
  isDns1123Label,
  printable,
} from '../core/index.js';

/** An address or a Service name with a port. */
export type Target =
  | { readonly kind: 'address'; readonly ip: string; readonly port: number }
  | {
      readonly kind: 'service';
      readonly namespace: string;
      readonly service: string;
      readonly port: number;
    }
  /** A name outside the cluster's Services: never known, so always passed through. */
  | { readonly kind: 'external'; readonly name: string; readonly port: number };

/** The longest path read (a DNS name is at most 253 characters, plus a port). */
const MAX_PATH = 300;

/**
 * Reads a GetDestination path. A name without a port means port 80 (as Linkerd reads it); a
 * trailing dot is allowed. Throws ERR_REQUEST_INVALID naming what is wrong.
 *
 * @example
 * ```ts
 * parseTarget('web.emojivoto.svc.cluster.local:8080', 'cluster.local');
 * // { kind: 'service', namespace: 'emojivoto', service: 'web', port: 8080 }
 * parseTarget('10.96.0.10:80', 'cluster.local'); // { kind: 'address', ip: '10.96.0.10', port: 80 }
 * ```
 */
export function parseTarget(path: string, clusterDomain: string): Target {
  const bad = (why: string): MeshidError =>
    new MeshidError('ERR_REQUEST_INVALID', `destination "${printable(path)}": ${why}`);
  if (path.length === 0) throw bad('is empty; expected HOST:PORT');
  if (path.length > MAX_PATH) throw bad(`is longer than ${MAX_PATH} characters`);
  let host: string;
  let portText: string | undefined;
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(path);
  if (v6 !== null) {
    host = v6[1]!;
    portText = v6[2];
  } else {
    const colon = path.lastIndexOf(':');
    if (colon >= 0 && path.indexOf(':') !== colon) throw bad('an IPv6 address must be in brackets');
    host = colon < 0 ? path : path.slice(0, colon);
    portText = colon < 0 ? undefined : path.slice(colon + 1);
  }
  let port = 80;
  if (portText !== undefined) {
    if (!/^\d{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535)
      throw bad('the port must be 1-65535');
    port = Number(portText);
  }
  const ip = canonicalIp(host);
  if (ip !== undefined) return { kind: 'address', ip, port };
  if (v6 !== null) throw bad(`"${printable(host)}" is not an IPv6 address`);
  const name = (host.endsWith('.') ? host.slice(0, -1) : host).toLowerCase();
  const labels = name.split('.');
  if (name.length > 253 || !labels.every(isDns1123Label))
    throw bad('the host is neither an IP address nor a DNS name');
  const suffix = `.svc.${clusterDomain}`;
  if (name.endsWith(suffix)) {
    const head = name.slice(0, -suffix.length).split('.');
    if (head.length === 2) return { kind: 'service', service: head[0]!, namespace: head[1]!, port };
  }
  return { kind: 'external', name, port };
}

/** The target as text, for logs and metrics labels. */
export function formatTarget(t: Target): string {
  switch (t.kind) {
    case 'address':
      return formatAddress({ host: t.ip, port: t.port });
    case 'service':
      return `${t.service}.${t.namespace}.svc:${t.port}`;
    case 'external':
      return `${t.name}:${t.port}`;
  }
}
