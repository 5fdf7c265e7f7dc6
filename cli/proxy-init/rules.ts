/**
 * The nat rules of `meshid proxy-init`, as a pure function of its settings: what
 * `iptables-restore --noflush` is given, per address family.
 *
 * Two chains of meshid's own, hooked from the built-in ones:
 *
 * ```
 * PREROUTING ─► MESHID_PROXY_INIT_REDIRECT   inbound TCP
 *                 ├─ dport in (proxy ports ∪ skipped inbound ports) ─► RETURN
 *                 └─ else ─► REDIRECT --to-ports 4143
 * OUTPUT ─────► MESHID_PROXY_INIT_OUTPUT     outbound TCP
 *                 ├─ owner uid = proxy UID (2102) ─► RETURN   (the proxy's own connections)
 *                 ├─ -o lo ─► RETURN                           (loopback: app ↔ proxy, app ↔ itself)
 *                 ├─ dport in skipped outbound ports ─► RETURN
 *                 ├─ -d in skipped subnets ─► RETURN
 *                 └─ else ─► REDIRECT --to-ports 4140
 * ```
 *
 * Idempotence: declaring a chain in `iptables-restore --noflush` input creates it or empties it,
 * and the jump from the built-in chain is added only when the current rules (`iptables-save`)
 * do not have it, so a second run leaves exactly the rules of the first. The whole input is one
 * transaction per family.
 */
import type { Cidr, PortRange } from '../../core/index.js';

export const REDIRECT_CHAIN = 'MESHID_PROXY_INIT_REDIRECT';
export const OUTPUT_CHAIN = 'MESHID_PROXY_INIT_OUTPUT';

/** What the rules are made of (already parsed and validated). */
export interface ProxyInitSettings {
  readonly inboundPort: number;
  readonly outboundPort: number;
  readonly proxyUid: number;
  /** Inbound ports never redirected: the proxy's own (inbound, admin) and the skipped ones. */
  readonly skipInboundPorts: readonly PortRange[];
  readonly skipOutboundPorts: readonly PortRange[];
  readonly skipSubnets: readonly Cidr[];
}

/** iptables' multiport takes at most 15 ports, a range counting as two. */
const MULTIPORT_MAX = 15;

function portGroups(ranges: readonly PortRange[]): string[] {
  const groups: string[] = [];
  let current: string[] = [];
  let weight = 0;
  const sorted = [...ranges].sort((a, b) => a.from - b.from || a.to - b.to);
  for (const r of sorted) {
    const w = r.from === r.to ? 1 : 2;
    if (weight + w > MULTIPORT_MAX) {
      groups.push(current.join(','));
      current = [];
      weight = 0;
    }
    current.push(r.from === r.to ? String(r.from) : `${r.from}:${r.to}`);
    weight += w;
  }
  if (current.length > 0) groups.push(current.join(','));
  return groups;
}

function comment(text: string): string {
  return `-m comment --comment "meshid/${text}"`;
}

/** The hooks from the built-in chains into meshid's chains. */
function jumpRules(): {
  readonly chain: string;
  readonly target: string;
  readonly rule: string;
}[] {
  return [
    {
      chain: 'PREROUTING',
      target: REDIRECT_CHAIN,
      rule: `-A PREROUTING -p tcp ${comment('proxy-init-inbound')} -j ${REDIRECT_CHAIN}`,
    },
    {
      chain: 'OUTPUT',
      target: OUTPUT_CHAIN,
      rule: `-A OUTPUT -p tcp ${comment('proxy-init-outbound')} -j ${OUTPUT_CHAIN}`,
    },
  ];
}

/**
 * The rules of meshid's two chains for one address family, in `iptables-save` syntax.
 */
export function chainRules(settings: ProxyInitSettings, family: 4 | 6): string[] {
  const rules: string[] = [];
  for (const ports of portGroups(settings.skipInboundPorts)) {
    rules.push(
      `-A ${REDIRECT_CHAIN} -p tcp -m multiport --dports ${ports} ${comment('skip-inbound-ports')} -j RETURN`,
    );
  }
  rules.push(
    `-A ${REDIRECT_CHAIN} -p tcp ${comment('redirect-inbound')} -j REDIRECT --to-ports ${settings.inboundPort}`,
  );
  rules.push(
    `-A ${OUTPUT_CHAIN} -m owner --uid-owner ${settings.proxyUid} ${comment('proxy-uid')} -j RETURN`,
  );
  rules.push(`-A ${OUTPUT_CHAIN} -o lo ${comment('loopback')} -j RETURN`);
  for (const ports of portGroups(settings.skipOutboundPorts)) {
    rules.push(
      `-A ${OUTPUT_CHAIN} -p tcp -m multiport --dports ${ports} ${comment('skip-outbound-ports')} -j RETURN`,
    );
  }
  for (const cidr of settings.skipSubnets.filter((c) => c.family === family)) {
    rules.push(`-A ${OUTPUT_CHAIN} -d ${cidr.text} ${comment('skip-subnets')} -j RETURN`);
  }
  rules.push(
    `-A ${OUTPUT_CHAIN} -p tcp ${comment('redirect-outbound')} -j REDIRECT --to-ports ${settings.outboundPort}`,
  );
  return rules;
}

/**
 * The `iptables-restore --noflush` input that brings the nat table from `currentSave` (the
 * output of `iptables-save -t nat`, empty for a dry run) to meshid's rules: both chains declared
 * (created, or emptied if they exist) and filled, and each jump added unless already there.
 */
export function restoreInput(
  settings: ProxyInitSettings,
  family: 4 | 6,
  currentSave: string,
): string {
  // Matched by chain and target rather than by text: the two back ends print options in
  // their own ways.
  const saved = currentSave.split('\n').map((l) => l.trim());
  const hooked = (chain: string, target: string): boolean =>
    saved.some((l) => l.startsWith(`-A ${chain} `) && l.endsWith(`-j ${target}`));
  const lines = ['*nat', `:${REDIRECT_CHAIN} - [0:0]`, `:${OUTPUT_CHAIN} - [0:0]`];
  lines.push(...chainRules(settings, family));
  for (const { chain, target, rule } of jumpRules()) {
    if (!hooked(chain, target)) lines.push(rule);
  }
  lines.push('COMMIT', '');
  return lines.join('\n');
}
