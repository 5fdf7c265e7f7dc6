/**
 * What `meshid check` reports: every check has a stable id (the JSON output, the troubleshooting
 * page and the tests use it), a group and a title. The catalog is the one list of them.
 */

/** A check's verdict: ✓, ‼ or ×. */
export type CheckStatus = 'ok' | 'warn' | 'error';

/** Where a check applies. */
type CheckMode = 'local' | 'cluster' | 'pre';

/** One check in the catalog. */
interface CheckSpec {
  readonly id: string;
  readonly group: string;
  readonly title: string;
  readonly modes: readonly CheckMode[];
}

const both: readonly CheckMode[] = ['local', 'cluster'];
const cluster: readonly CheckMode[] = ['cluster'];
const pre: readonly CheckMode[] = ['pre'];
const local: readonly CheckMode[] = ['local'];

/** Every check, in the order they are printed. */
export const CHECKS = [
  { id: 'pre-api', group: 'Before install', title: 'the API server answers', modes: pre },
  {
    id: 'pre-rbac',
    group: 'Before install',
    title: 'these credentials may create what the install holds',
    modes: pre,
  },
  {
    id: 'pre-cert-manager',
    group: 'Before install',
    title: "cert-manager's API is served",
    modes: pre,
  },
  {
    id: 'pre-existing',
    group: 'Before install',
    title: 'what already runs in the namespace (Linkerd, meshid)',
    modes: pre,
  },
  {
    id: 'state-dir',
    group: 'State folder',
    title: 'the state folder exists and only this user can change it',
    modes: local,
  },
  {
    id: 'token-signing',
    group: 'State folder',
    title: 'the token-signing key parses, is private, and is in the JWKS the CA uses',
    modes: local,
  },
  {
    id: 'anchors-valid',
    group: 'Trust anchors',
    title: 'trust anchors parse and are CA certificates',
    modes: both,
  },
  {
    id: 'anchors-expiry',
    group: 'Trust anchors',
    title: 'trust anchors are within their validity',
    modes: both,
  },
  { id: 'issuer-valid', group: 'Issuer', title: 'issuer certificate and key parse', modes: both },
  { id: 'issuer-is-ca', group: 'Issuer', title: 'issuer is a CA', modes: both },
  { id: 'issuer-key', group: 'Issuer', title: 'issuer key matches its certificate', modes: both },
  { id: 'issuer-chain', group: 'Issuer', title: 'issuer chains to the trust anchors', modes: both },
  { id: 'issuer-expiry', group: 'Issuer', title: 'issuer is within its validity', modes: both },
  {
    id: 'cert-manager-ready',
    group: 'cert-manager',
    title: 'issuer Certificate is Ready',
    modes: cluster,
  },
  {
    id: 'cert-manager-renewal',
    group: 'cert-manager',
    title: 'issuer Certificate renews before it expires',
    modes: cluster,
  },
  { id: 'ca-reachable', group: 'Identity CA', title: 'the CA is reachable', modes: both },
  {
    id: 'ca-certificate',
    group: 'Identity CA',
    title: 'the CA serves a certificate for its name',
    modes: both,
  },
  { id: 'ca-ready', group: 'Identity CA', title: 'the CA answers /ready', modes: both },
  {
    id: 'ca-rbac',
    group: 'Identity CA',
    title: "the CA's RBAC allows what it needs",
    modes: cluster,
  },
  { id: 'webhook-injector', group: 'Webhooks', title: 'proxy injector webhook', modes: cluster },
  { id: 'webhook-trust-guard', group: 'Webhooks', title: 'trust guard webhook', modes: cluster },
  {
    id: 'proxies-trust-root',
    group: 'Data plane',
    title: 'injected pods carry the current trust bundle',
    modes: cluster,
  },
  {
    id: 'anchors-namespaces',
    group: 'Data plane',
    title: 'namespaces of injected pods hold the anchors ConfigMap',
    modes: cluster,
  },
  {
    id: 'proxies-transparent',
    group: 'Data plane',
    title: "injected pods' traffic goes through their proxies (transparent mode)",
    modes: cluster,
  },
  {
    id: 'destination-ready',
    group: 'Data plane',
    title: 'the destination service is ready for transparent proxies',
    modes: cluster,
  },
  {
    id: 'cluster-trust-bundles',
    group: 'Data plane',
    title: "meshid's ClusterTrustBundles hold the current anchors",
    modes: cluster,
  },
  {
    id: 'proxies-certificates',
    group: 'Data plane',
    title: "proxies' certificates chain to the current anchors",
    modes: both,
  },
  {
    id: 'proxies-key-exchange',
    group: 'Data plane',
    title: "proxies' connections use the post-quantum hybrid key exchange",
    modes: both,
  },
  {
    id: 'pod-certificates',
    group: 'Data plane',
    title: "PodCertificateRequests of meshid's signer are answered and refreshed",
    modes: cluster,
  },
  { id: 'rotation-state', group: 'Rotation', title: 'trust-anchor rotation', modes: both },
  { id: 'fips-status', group: 'FIPS', title: 'FIPS status', modes: both },
] as const satisfies readonly CheckSpec[];

/** A check id. */
export type CheckId = (typeof CHECKS)[number]['id'];

/** One line of the report. */
export interface CheckResult {
  readonly id: CheckId;
  readonly group: string;
  readonly status: CheckStatus;
  /** What was found, one line. */
  readonly message: string;
  /** What to do, one line; present on ‼ and ×. */
  readonly fix?: string;
}

/** The whole report (`--output json` prints exactly this). */
export interface CheckReport {
  /** Bumped only when a field changes meaning or goes away; new fields may appear. */
  readonly schemaVersion: 1;
  readonly mode: CheckMode;
  /** The state folder or the API server. */
  readonly target: string;
  readonly checkedAt: string;
  readonly durationMs: number;
  readonly success: boolean;
  readonly summary: { readonly ok: number; readonly warn: number; readonly error: number };
  readonly checks: readonly CheckResult[];
}

const SPEC_BY_ID = new Map<string, CheckSpec>(CHECKS.map((c) => [c.id, c]));

/** A result for `id`, with the group from the catalog. */
export function result(
  id: CheckId,
  status: CheckStatus,
  message: string,
  fix?: string,
): CheckResult {
  const spec = SPEC_BY_ID.get(id)!;
  return { id, group: spec.group, status, message, ...(fix === undefined ? {} : { fix }) };
}

/** Orders results as the catalog does and adds the summary. */
export function buildReport(o: {
  mode: CheckMode;
  target: string;
  startedAt: number;
  finishedAt: number;
  results: readonly CheckResult[];
}): CheckReport {
  const order = new Map<string, number>(CHECKS.map((c, i) => [c.id, i]));
  const checks = [...o.results].sort((a, b) => order.get(a.id)! - order.get(b.id)!);
  const count = (s: CheckStatus): number => checks.filter((c) => c.status === s).length;
  const summary = { ok: count('ok'), warn: count('warn'), error: count('error') };
  return {
    schemaVersion: 1,
    mode: o.mode,
    target: o.target,
    checkedAt: new Date(o.startedAt).toISOString(),
    durationMs: o.finishedAt - o.startedAt,
    success: summary.error === 0,
    summary,
    checks,
  };
}
