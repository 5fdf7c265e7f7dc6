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

/** Every check by group, groups and checks in the order they are printed: id, title, modes. */
const CATALOG = {
  'Before install': [
    ['pre-api', 'the API server answers', pre],
    ['pre-rbac', 'these credentials may create what the install holds', pre],
    ['pre-cert-manager', "cert-manager's API is served", pre],
    ['pre-existing', 'what already runs in the namespace (Linkerd, meshid)', pre],
  ],
  'State folder': [
    ['state-dir', 'the state folder exists and only this user can change it', local],
    [
      'token-signing',
      'the token-signing key parses, is private, and is in the JWKS the CA uses',
      local,
    ],
  ],
  'Trust anchors': [
    ['anchors-valid', 'trust anchors parse and are CA certificates', both],
    ['anchors-expiry', 'trust anchors are within their validity', both],
  ],
  Issuer: [
    ['issuer-valid', 'issuer certificate and key parse', both],
    ['issuer-is-ca', 'issuer is a CA', both],
    ['issuer-key', 'issuer key matches its certificate', both],
    ['issuer-chain', 'issuer chains to the trust anchors', both],
    ['issuer-expiry', 'issuer is within its validity', both],
  ],
  'cert-manager': [
    ['cert-manager-ready', 'issuer Certificate is Ready', cluster],
    ['cert-manager-renewal', 'issuer Certificate renews before it expires', cluster],
  ],
  'Identity CA': [
    ['ca-reachable', 'the CA is reachable', both],
    ['ca-certificate', 'the CA serves a certificate for its name', both],
    ['ca-ready', 'the CA answers /ready', both],
    ['ca-rbac', "the CA's RBAC allows what it needs", cluster],
  ],
  Webhooks: [
    ['webhook-injector', 'proxy injector webhook', cluster],
    ['webhook-trust-guard', 'trust guard webhook', cluster],
  ],
  'Data plane': [
    ['proxies-trust-root', 'injected pods carry the current trust bundle', cluster],
    ['anchors-namespaces', 'namespaces of injected pods hold the anchors ConfigMap', cluster],
    [
      'proxies-transparent',
      "injected pods' traffic goes through their proxies (transparent mode)",
      cluster,
    ],
    ['destination-ready', 'the destination service is ready for transparent proxies', cluster],
    ['cluster-trust-bundles', "meshid's ClusterTrustBundles hold the current anchors", cluster],
    ['proxies-certificates', "proxies' certificates chain to the current anchors", both],
    ['proxies-key-exchange', "proxies' connections use the post-quantum hybrid key exchange", both],
    [
      'pod-certificates',
      "PodCertificateRequests of meshid's signer are answered and refreshed",
      cluster,
    ],
  ],
  Rotation: [['rotation-state', 'trust-anchor rotation', both]],
  FIPS: [['fips-status', 'FIPS status', both]],
} as const satisfies Record<string, readonly (readonly [string, string, readonly CheckMode[]])[]>;

/** Every check, in the order they are printed. */
export const CHECKS = Object.entries(CATALOG).flatMap(([group, checks]) =>
  checks.map(([id, title, modes]) => ({ id, group, title, modes })),
);

/** A check id. */
export type CheckId = (typeof CATALOG)[keyof typeof CATALOG][number][0];

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
