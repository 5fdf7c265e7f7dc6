/**
 * The `proxies-key-exchange` check: which TLS key-exchange groups the proxies' mesh connections
 * used, from each proxy's `meshid_proxy_tls_handshakes_total` series (successful handshakes by
 * direction and `group` label) and its `/identity` (the `tlsGroups` mode it runs with and the
 * group of its last connection to the CA).
 *
 * - ✓ every connection so far used the post-quantum hybrid (or a proxy runs without it on
 *   purpose: `tlsGroups: classic`, or FIPS mode's P-256/P-384);
 * - ‼ a proxy that prefers the hybrid fell back to a classic group: a peer without
 *   X25519MLKEM768 connected (or it connected to one);
 * - × the hybrid is required and missing: a proxy in `hybrid-required` mode reports a classic
 *   connection, or the check itself runs with `--tls-groups hybrid-required` (the mesh's policy)
 *   and a proxy does not require it or has used a classic group.
 */
import { formatAddress, isPostQuantumGroup, readIdentityReport } from '../../core/index.js';
import type { CheckResult } from './model.js';
import { result } from './model.js';
import { getWithTimeout, mapLimit } from './probes.js';
import type { ProxyTarget } from './probes.js';

/** The metric the proxies count their TLS handshakes in (proxy/metrics.ts). */
const HANDSHAKES = 'meshid_proxy_tls_handshakes_total';

/** Successful handshakes of one proxy, by direction and key-exchange group ('' when unknown). */
interface HandshakeGroups {
  readonly inbound: ReadonlyMap<string, number>;
  readonly outbound: ReadonlyMap<string, number>;
}

/**
 * Successful TLS handshakes by direction and group from a proxy's Prometheus text: the series of
 * {@link HANDSHAKES} with `result="ok"`. Lines that are not such a series are skipped.
 */
export function handshakeGroupsFromMetrics(text: string): HandshakeGroups {
  const out = { inbound: new Map<string, number>(), outbound: new Map<string, number>() };
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${HANDSHAKES}{`)) continue;
    const close = line.lastIndexOf('}');
    if (close < 0) continue;
    const labels = new Map<string, string>();
    for (const m of line.slice(HANDSHAKES.length + 1, close).matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g))
      labels.set(
        m[1]!,
        m[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c)),
      );
    const value = Number(line.slice(close + 1).trim());
    const direction = labels.get('direction');
    if (labels.get('result') !== 'ok' || !Number.isFinite(value) || value <= 0) continue;
    if (direction !== 'inbound' && direction !== 'outbound') continue;
    const group = labels.get('group') ?? '';
    out[direction].set(group, (out[direction].get(group) ?? 0) + value);
  }
  return out;
}

/** What one proxy said. */
interface ProxyKex {
  readonly name: string;
  /** Why it could not be asked; nothing else is set then. */
  readonly unreachable?: string;
  /** Its `tlsGroups` mode (`hybrid-preferred`, `hybrid-required`, `classic`, `fips`), if it reports one. */
  readonly mode?: string;
  readonly groups?: HandshakeGroups;
  /** The group of its last connection to the CA. */
  readonly caGroup?: string;
}

type Verdict = 'hybrid' | 'by-config' | 'fallback' | 'missing' | 'unreachable';

/** Classic connections of a proxy, e.g. `inbound X25519 ×2, CA P-256`; '' when none. */
function classicConnections(p: ProxyKex): string {
  const parts: string[] = [];
  for (const direction of ['inbound', 'outbound'] as const) {
    for (const [group, n] of p.groups?.[direction] ?? []) {
      if (!isPostQuantumGroup(group)) parts.push(`${direction} ${group || 'unknown group'} ×${n}`);
    }
  }
  if (p.caGroup !== undefined && !isPostQuantumGroup(p.caGroup)) {
    parts.push(`CA ${p.caGroup || 'unknown group'}`);
  }
  return parts.join(', ');
}

function verdictOf(p: ProxyKex, required: boolean): { verdict: Verdict; detail: string } {
  if (p.unreachable !== undefined) return { verdict: 'unreachable', detail: p.unreachable };
  const classic = classicConnections(p);
  const mode = p.mode ?? 'not reported';
  if (required && p.mode !== 'hybrid-required') {
    return {
      verdict: 'missing',
      detail: `tlsGroups ${mode}, not hybrid-required${classic === '' ? '' : `; ${classic}`}`,
    };
  }
  if (p.mode === 'hybrid-required' && classic !== '') {
    return { verdict: 'missing', detail: `hybrid-required, yet ${classic}` };
  }
  if (p.mode === 'classic' || p.mode === 'fips') return { verdict: 'by-config', detail: mode };
  if (classic !== '') return { verdict: 'fallback', detail: classic };
  return { verdict: 'hybrid', detail: '' };
}

async function askProxy(t: ProxyTarget, timeoutMs: number): Promise<ProxyKex> {
  const base = `http://${formatAddress(t.admin)}`;
  const [identity, metrics] = await Promise.all([
    getWithTimeout(`${base}/identity`, timeoutMs),
    getWithTimeout(`${base}/metrics`, timeoutMs),
  ]);
  for (const [path, r] of [
    ['/metrics', metrics],
    ['/identity', identity],
  ] as const) {
    if ('error' in r) return { name: t.name, unreachable: r.error };
    if (r.status !== 200) return { name: t.name, unreachable: `${path} answered ${r.status}` };
  }
  let tls;
  try {
    tls = readIdentityReport((identity as { body: string }).body).tls;
  } catch {
    return { name: t.name, unreachable: '/identity is not JSON' };
  }
  return {
    name: t.name,
    groups: handshakeGroupsFromMetrics((metrics as { body: string }).body),
    ...(tls === undefined ? {} : { mode: tls.mode }),
    ...(tls?.ca === undefined ? {} : { caGroup: tls.ca.group }),
  };
}

/**
 * Asks each proxy's admin endpoint which key-exchange groups its connections used (see the
 * file comment for the verdicts). `required`: the check runs with `tlsGroups: hybrid-required`,
 * i.e. the mesh must not carry classic key exchange anywhere.
 */
export async function checkKeyExchange(o: {
  targets: readonly ProxyTarget[];
  total: number;
  required: boolean;
  timeoutMs: number;
  concurrency: number;
}): Promise<CheckResult> {
  if (o.targets.length === 0) {
    return result('proxies-key-exchange', 'ok', 'no proxies to ask');
  }
  const asked = await mapLimit(o.targets, o.concurrency, (t) => askProxy(t, o.timeoutMs));
  const verdicts = asked.map((p) => ({ name: p.name, p, ...verdictOf(p, o.required) }));
  const by = (v: Verdict) => verdicts.filter((x) => x.verdict === v);
  const list = (vs: typeof verdicts): string =>
    vs
      .slice(0, 5)
      .map((v) => `${v.name} (${v.detail})`)
      .join('; ') + (vs.length > 5 ? `; and ${vs.length - 5} more` : '');
  const n = `${o.targets.length}${o.targets.length < o.total ? ` sampled of ${o.total}` : ''}`;
  const notes = [
    ...(by('by-config').length > 0
      ? [`without the hybrid by configuration: ${list(by('by-config'))}`]
      : []),
    ...(by('unreachable').length > 0
      ? [`${by('unreachable').length} did not answer: ${list(by('unreachable'))}`]
      : []),
  ];
  const tail = notes.length === 0 ? '' : `; ${notes.join('; ')}`;
  const missing = by('missing');
  if (missing.length > 0) {
    return result(
      'proxies-key-exchange',
      'error',
      `the post-quantum hybrid is required and missing on ${missing.length} of ${n} proxies: ${list(missing)}${tail}`,
      'run those proxies with tlsGroups hybrid-required (--tls-groups, MESHID_TLS_GROUPS) on Node.js 26, and move every classic-only peer (OpenSSL before 3.5) off the mesh first',
    );
  }
  const fallback = by('fallback');
  if (fallback.length > 0) {
    return result(
      'proxies-key-exchange',
      'warn',
      `${fallback.length} of ${n} proxies fell back to a classic key-exchange group: ${list(fallback)}${tail}`,
      'a peer without X25519MLKEM768 connected (OpenSSL before 3.5: an older proxy, a Node 20 process, a classic-only client): upgrade it; once none is left, tlsGroups hybrid-required refuses them',
    );
  }
  const hybrid = by('hybrid');
  if (hybrid.length === 0 && by('by-config').length === 0) {
    return result(
      'proxies-key-exchange',
      'warn',
      `none of the ${n} proxies answered: ${list(by('unreachable'))}`,
      "check that the proxies' admin port (--proxy-admin-port, default 4191) is reachable from here",
    );
  }
  const connections = hybrid.reduce((sum, v) => {
    const g = v.p.groups;
    const count = (m: ReadonlyMap<string, number> | undefined): number =>
      [...(m ?? new Map<string, number>()).values()].reduce((a, b) => a + b, 0);
    return sum + count(g?.inbound) + count(g?.outbound) + (v.p.caGroup === undefined ? 0 : 1);
  }, 0);
  if (hybrid.length === 0) {
    return result(
      'proxies-key-exchange',
      'ok',
      `none of the ${n} proxies uses the post-quantum hybrid${tail}`,
    );
  }
  return result(
    'proxies-key-exchange',
    'ok',
    `${hybrid.length} of ${n} proxies used the post-quantum hybrid on every connection so far (${connections === 0 ? 'none yet' : `${connections} connections`})${tail}`,
  );
}
