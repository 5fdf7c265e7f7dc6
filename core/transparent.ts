/**
 * Transparent mode's shared vocabulary: the pod annotations (Linkerd's names where Linkerd has
 * one), the proxy's ports and UID, and the parsing of port lists and CIDRs. The injector reads
 * the annotations and passes them to `meshid proxy-init` as flags; proxy-init and the proxy
 * parse the same values with the same functions, so a value the injector accepts is one they
 * accept.
 */
import { isIP } from 'node:net';

/** Pod annotations of transparent mode. */
export const TRANSPARENT_ANNOTATIONS = {
  /** `disabled` keeps the explicit mode (no proxy-init, listeners configured by annotation). */
  transparent: 'meshid.io/transparent',
  /** Inbound ports not redirected to the proxy: `25,587,8000-9000`. */
  skipInboundPorts: 'config.linkerd.io/skip-inbound-ports',
  /** Outbound ports not redirected to the proxy. */
  skipOutboundPorts: 'config.linkerd.io/skip-outbound-ports',
  /** Outbound destinations (CIDRs) not redirected: `10.0.0.0/8,fd00::/8`. */
  skipSubnets: 'config.linkerd.io/skip-subnets',
  /** The proxy's UID, whose own traffic is not redirected. */
  proxyUid: 'config.linkerd.io/proxy-uid',
  /** What plaintext gets on redirected inbound ports: see {@link INBOUND_POLICIES}. */
  defaultInboundPolicy: 'config.linkerd.io/default-inbound-policy',
  /**
   * Per-port policies overriding the default: `8081=all-authenticated, 9000-9010=deny` (ports
   * and ranges as in Linkerd's port-list annotations). Linkerd has no per-port counterpart of
   * default-inbound-policy (it uses Server resources), so this one is meshid's.
   */
  inboundPortPolicy: 'meshid.io/inbound-port-policy',
} as const;

/** The most ports {@link parsePortPolicies} expands ranges to (each is one proxy setting). */
const MAX_PORT_POLICIES = 1024;

/**
 * Linkerd's default inbound policies that meshid implements on redirected ports:
 * `all-unauthenticated` (plaintext allowed, counted as unauthenticated), `all-authenticated`
 * (meshed peers only), `deny` (nothing).
 */
export const INBOUND_POLICIES = ['all-unauthenticated', 'all-authenticated', 'deny'] as const;
export type InboundPolicyName = (typeof INBOUND_POLICIES)[number];

/** A port or an inclusive range of ports. */
export interface PortRange {
  readonly from: number;
  readonly to: number;
}

/**
 * Parses a port list as Linkerd's annotations write it: `25,587,8000-9000` (spaces allowed).
 * Returns the ranges, or the problem with the entry named.
 *
 * @example
 * ```ts
 * parsePortList('25, 8000-9000'); // { ranges: [{from: 25, to: 25}, {from: 8000, to: 9000}] }
 * parsePortList('70000');         // { problem: '"70000" is not a port (1-65535)' }
 * ```
 */
export function parsePortList(text: string): { ranges: PortRange[] } | { problem: string } {
  const ranges: PortRange[] = [];
  for (const raw of text.split(',')) {
    const entry = raw.trim();
    if (entry === '') continue;
    const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(entry);
    const from = Number(m?.[1]);
    const to = m?.[2] === undefined ? from : Number(m[2]);
    if (m === null || from < 1 || to > 65535 || to < from) {
      return {
        problem: `"${entry}" is not a port (1-65535) or a range of ports such as 8000-9000`,
      };
    }
    ranges.push({ from, to });
  }
  return { ranges };
}

/** An IPv4 or IPv6 CIDR. */
export interface Cidr {
  readonly text: string;
  readonly family: 4 | 6;
}

/**
 * Parses a comma-separated CIDR list (`10.0.0.0/8, fd00::/8`); a bare address is a /32 or /128.
 *
 * @example
 * ```ts
 * parseCidrList('10.0.0.0/8,fd00::/8'); // { cidrs: [{ text: '10.0.0.0/8', family: 4 }, ...] }
 * ```
 */
export function parseCidrList(text: string): { cidrs: Cidr[] } | { problem: string } {
  const cidrs: Cidr[] = [];
  for (const raw of text.split(',')) {
    const entry = raw.trim();
    if (entry === '') continue;
    const [address = '', bits, extra] = entry.split('/');
    const family = isIP(address);
    const max = family === 6 ? 128 : 32;
    const prefix = bits === undefined ? max : /^\d{1,3}$/.test(bits) ? Number(bits) : -1;
    if (family === 0 || extra !== undefined || prefix < 0 || prefix > max) {
      return { problem: `"${entry}" is not an IPv4 or IPv6 CIDR such as 10.0.0.0/8` };
    }
    cidrs.push({ text: `${address}/${prefix}`, family: family === 6 ? 6 : 4 });
  }
  return { cidrs };
}

/**
 * Parses per-port policies as the `meshid.io/inbound-port-policy` annotation writes them:
 * `PORTS=POLICY` entries, comma-separated, PORTS a port or a range. Ranges are expanded (at most
 * {@link MAX_PORT_POLICIES} ports in all); a port named twice with different policies is a
 * problem, named with the entry.
 *
 * @example
 * ```ts
 * parsePortPolicies('8081=all-authenticated, 9000-9001=deny');
 * // { policies: Map { 8081 => 'all-authenticated', 9000 => 'deny', 9001 => 'deny' } }
 * parsePortPolicies('8081=open'); // { problem: '"8081=open": POLICY must be one of ...' }
 * ```
 */
export function parsePortPolicies(
  text: string,
): { policies: Map<number, InboundPolicyName> } | { problem: string } {
  const policies = new Map<number, InboundPolicyName>();
  for (const raw of text.split(',')) {
    const entry = raw.trim();
    if (entry === '') continue;
    const [ports = '', policy = '', extra] = entry.split('=').map((x) => x.trim());
    if (extra !== undefined || !(INBOUND_POLICIES as readonly string[]).includes(policy)) {
      return {
        problem: `"${entry}" must be PORTS=POLICY, POLICY one of ${INBOUND_POLICIES.join(', ')}`,
      };
    }
    const list = parsePortList(ports);
    if ('problem' in list || list.ranges.length !== 1) {
      return {
        problem: `"${entry}": "${ports}" is not a port (1-65535) or a range such as 9000-9010`,
      };
    }
    const { from, to } = list.ranges[0]!;
    if (policies.size + (to - from + 1) > MAX_PORT_POLICIES) {
      return { problem: `more than ${MAX_PORT_POLICIES} ports; narrow the ranges` };
    }
    for (let port = from; port <= to; port++) {
      const before = policies.get(port);
      if (before !== undefined && before !== policy) {
        return { problem: `"${entry}": port ${port} already has policy ${before}` };
      }
      policies.set(port, policy as InboundPolicyName);
    }
  }
  return { policies };
}
