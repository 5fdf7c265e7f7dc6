/**
 * The checks that talk to running processes: the CA's gRPC/TLS port and admin port, and proxies'
 * admin endpoints. Every probe has a timeout, and many probes run with bounded concurrency, so a
 * cluster with hundreds of pods is checked in a few seconds and one dead pod costs one timeout.
 */
import type { Address } from '../../core/index.js';
import {
  bundleFingerprint,
  parseAnchors,
  toPem,
  anchorFingerprints,
  chainFingerprints,
  formatAddress,
  parseCertificates,
  peerChain,
  reachAnchor,
  readIdentityReport,
  shortName,
} from '../../core/index.js';
import type { ParsedCertificate, ProxyIdentityReportAsRead } from '../../core/index.js';
import type { CheckResult } from './model.js';
import { result } from './model.js';
import { subjectAltNames } from './x509.js';

/** Runs `fn` over `items`, at most `limit` at once, keeping the order of the results. */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<R>,
): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return out;
}

/** A GET with a deadline; never throws (errors become `error`). */
export async function getWithTimeout(
  url: string,
  timeoutMs: number,
): Promise<{ status: number; body: string } | { error: string }> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    return { status: res.status, body: await res.text() };
  } catch (err) {
    return { error: describeNetError(err, timeoutMs) };
  }
}

/** A network error (or a timeout after `timeoutMs`) in a few words. */
export function describeNetError(err: unknown, timeoutMs: number): string {
  const e = err as { name?: string; code?: string; cause?: { code?: string; message?: string } };
  if (e.name === 'TimeoutError' || e.name === 'AbortError')
    return `no answer within ${timeoutMs} ms`;
  const code = e.cause?.code ?? e.code;
  if (code === 'ECONNREFUSED') return 'connection refused';
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return 'the name does not resolve';
  return e.cause?.message ?? (err instanceof Error ? err.message : String(err));
}

/**
 * TLS handshake with the CA's Certify port (ALPN h2, SNI its identity), then checks that the
 * certificate it serves is for `identityName` and chains to the anchors.
 */
export async function probeCa(o: {
  address: Address;
  identityName: string;
  anchors: readonly ParsedCertificate[];
  /** Where the anchors came from (a file, a ConfigMap), for a refusal's message. */
  anchorsSource: string;
  now: number;
  timeoutMs: number;
  fix: string;
}): Promise<CheckResult[]> {
  const where = formatAddress(o.address);
  let chainPem: string[];
  try {
    chainPem = await peerChain(o.address, o.identityName, o.timeoutMs, {
      alpn: ['h2'],
      minVersion: 'TLSv1.3',
    });
  } catch (err) {
    return [
      result(
        'ca-reachable',
        'error',
        `cannot reach the CA at ${where}: ${describeNetError(err, o.timeoutMs)}`,
        o.fix,
      ),
    ];
  }
  const out = [result('ca-reachable', 'ok', `TLS handshake with ${where}`)];
  const [leaf, ...rest] = parseCertificates(chainPem.join(''), 'ERR_INSPECT_TARGET');
  if (leaf === undefined) {
    out.push(result('ca-certificate', 'error', `${where} presented no certificate`, o.fix));
    return out;
  }
  const names = subjectAltNames(leaf.x509).dns;
  if (!names.includes(o.identityName)) {
    out.push(
      result(
        'ca-certificate',
        'error',
        `${where} serves a certificate for ${names.join(', ') || shortName(leaf)}, not ${o.identityName}`,
        "check the CA's --identity-name and that --ca-address points at the identity CA",
      ),
    );
    return out;
  }
  const c = reachAnchor([leaf, ...rest], o.anchors, o.now);
  out.push(
    c.anchor !== undefined
      ? result(
          'ca-certificate',
          'ok',
          `serves ${o.identityName}, chained to ${shortName(c.anchor)}`,
        )
      : result(
          'ca-certificate',
          'error',
          `the CA's certificate for ${o.identityName} does not chain to the current anchors: ${c.reason} (${chainFingerprints([leaf, ...rest], o.anchors, { chain: `the chain ${where} serves`, anchors: o.anchorsSource })})`,
          'the CA runs with other anchors or issuer than these: restart it after fixing the issuer, or check that both read the same anchors',
        ),
  );
  return out;
}

/** `/ready` on the CA's admin port, and what `/version` and `/metrics` say (when they answer). */
export async function probeCaAdmin(o: {
  admin: Address;
  timeoutMs: number;
  fix: string;
}): Promise<{ results: CheckResult[]; version?: string; metrics?: string }> {
  const base = `http://${formatAddress(o.admin)}`;
  const ready = await getWithTimeout(`${base}/ready`, o.timeoutMs);
  if ('error' in ready) {
    return {
      results: [
        result(
          'ca-ready',
          'error',
          `cannot reach the CA's admin port ${formatAddress(o.admin)}: ${ready.error}`,
          o.fix,
        ),
      ],
    };
  }
  const [version, metrics] = await Promise.all([
    getWithTimeout(`${base}/version`, o.timeoutMs),
    getWithTimeout(`${base}/metrics`, o.timeoutMs),
  ]);
  const body = ready.body.trim().slice(0, 300);
  return {
    results: [
      ready.status === 200
        ? result('ca-ready', 'ok', body)
        : result(
            'ca-ready',
            'error',
            `/ready answered ${ready.status}: ${body}`,
            "read the CA's log: it says why it has no valid issuer (then fix the issuer checks above)",
          ),
    ],
    ...('status' in version && version.status === 200 ? { version: version.body } : {}),
    ...('status' in metrics && metrics.status === 200 ? { metrics: metrics.body } : {}),
  };
}

/** A proxy to ask: a name for the report and its admin address. */
export interface ProxyTarget {
  readonly name: string;
  readonly admin: Address;
}

/** What one proxy's `/identity` said about its certificate. */
interface ProxyVerdict {
  readonly name: string;
  readonly kind: 'ok' | 'unreachable' | 'no-certificate' | 'old-chain' | 'old-bundle';
  readonly detail: string;
}

/**
 * Asks each proxy's `/identity` for its certificate chain and checks it chains to the current
 * anchors; × for any proxy that holds a certificate from other anchors, ‼ for proxies that did
 * not answer or still hold an older bundle.
 */
export async function checkProxies(o: {
  targets: readonly ProxyTarget[];
  /** How many proxies there were in all (the targets may be a sample). */
  total: number;
  anchors: readonly ParsedCertificate[];
  /** Where the anchors came from (a file, a ConfigMap), for a refusal's message. */
  anchorsSource: string;
  bundleFingerprint: string;
  now: number;
  timeoutMs: number;
  concurrency: number;
}): Promise<CheckResult> {
  if (o.targets.length === 0) {
    return result(
      'proxies-certificates',
      'ok',
      o.total === 0
        ? 'no proxies to check'
        : `none of the ${o.total} proxies has an address to ask yet`,
    );
  }
  const verdicts = await mapLimit(o.targets, o.concurrency, (t) => askProxy(t, o));
  const by = (k: ProxyVerdict['kind']): ProxyVerdict[] => verdicts.filter((v) => v.kind === k);
  const list = (vs: ProxyVerdict[]): string =>
    vs
      .slice(0, 5)
      .map((v) => `${v.name} (${v.detail})`)
      .join('; ') + (vs.length > 5 ? `; and ${vs.length - 5} more` : '');
  const asked = `${o.targets.length}${o.targets.length < o.total ? ` sampled of ${o.total}` : ''}`;
  const bad = [...by('old-chain'), ...by('no-certificate')];
  if (bad.length > 0) {
    return result(
      'proxies-certificates',
      'error',
      `${bad.length} of ${asked} proxies hold no certificate that chains to the current anchors: ${list(bad)}; checked against ${o.anchorsSource}: ${anchorFingerprints(o.anchors)}`,
      'restart those pods so their proxies get a certificate from the current issuer; if many, check the issuer chain and the rotation state first',
    );
  }
  const unreachable = by('unreachable');
  const oldBundle = by('old-bundle');
  if (unreachable.length > 0 || oldBundle.length > 0) {
    const parts = [
      ...(unreachable.length > 0
        ? [`${unreachable.length} did not answer: ${list(unreachable)}`]
        : []),
      ...(oldBundle.length > 0
        ? [`${oldBundle.length} load a different anchor bundle: ${list(oldBundle)}`]
        : []),
    ];
    return result(
      'proxies-certificates',
      'warn',
      `${by('ok').length + oldBundle.length} of ${asked} proxies hold certificates that chain to the current anchors; ${parts.join('; ')}`,
      unreachable.length > 0
        ? "check that the proxies' admin port (--proxy-admin-port, default 4191) is reachable from here"
        : 'the anchors ConfigMap changed after those proxies loaded it; they reload it by themselves within a minute (kubelet sync), else restart them',
    );
  }
  return result(
    'proxies-certificates',
    'ok',
    `${asked} proxies hold certificates that chain to the current anchors`,
  );
}

async function askProxy(
  t: ProxyTarget,
  o: {
    anchors: readonly ParsedCertificate[];
    bundleFingerprint: string;
    now: number;
    timeoutMs: number;
  },
): Promise<ProxyVerdict> {
  const r = await getWithTimeout(`http://${formatAddress(t.admin)}/identity`, o.timeoutMs);
  if ('error' in r) return { name: t.name, kind: 'unreachable', detail: r.error };
  if (r.status !== 200)
    return { name: t.name, kind: 'unreachable', detail: `/identity answered ${r.status}` };
  let report: ProxyIdentityReportAsRead;
  try {
    report = readIdentityReport(r.body);
  } catch {
    return { name: t.name, kind: 'unreachable', detail: '/identity is not JSON' };
  }
  const chainPem = report.certificate.chainPem;
  if (chainPem === undefined)
    return { name: t.name, kind: 'no-certificate', detail: 'holds no certificate' };
  let chain: ParsedCertificate[];
  try {
    chain = parseCertificates(chainPem, 'ERR_INSPECT_TARGET');
  } catch (err) {
    return { name: t.name, kind: 'no-certificate', detail: (err as Error).message };
  }
  const [leaf, ...rest] = chain;
  if (leaf === undefined)
    return { name: t.name, kind: 'no-certificate', detail: 'holds no certificate' };
  const c = reachAnchor([leaf, ...rest], o.anchors, o.now);
  if (c.anchor === undefined) {
    const who = report.identity === undefined ? '' : `${report.identity}: `;
    const held = chainFingerprints(chain, o.anchors, { chain: 'its certificate' });
    return { name: t.name, kind: 'old-chain', detail: `${who}${c.reason}; ${held}` };
  }
  // A kubelet writes a clusterTrustBundle file in its own order: the same anchors in another
  // order are the same bundle (the proxy reports the canonical form's fingerprint too).
  const canonical = canonicalFingerprintOf(o.anchors, o.now);
  const current =
    report.trustAnchors?.fingerprint === o.bundleFingerprint ||
    (report.trustAnchors?.canonicalFingerprint !== undefined &&
      report.trustAnchors.canonicalFingerprint === canonical);
  if (!current)
    return {
      name: t.name,
      kind: 'old-bundle',
      detail: `bundle ${String(report.trustAnchors?.fingerprint).slice(0, 12)}…`,
    };
  return { name: t.name, kind: 'ok', detail: '' };
}

/** The fingerprint of the anchors' canonical bundle, as a proxy reports it; undefined if invalid. */
function canonicalFingerprintOf(
  anchors: readonly ParsedCertificate[],
  now: number,
): string | undefined {
  try {
    const pem = anchors.map((c) => toPem(c.der, 'CERTIFICATE')).join('');
    return bundleFingerprint(parseAnchors(pem, { now }).pem);
  } catch {
    return undefined;
  }
}
