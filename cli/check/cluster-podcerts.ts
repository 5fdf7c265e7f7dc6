/**
 * `meshid check` in a cluster: the PodCertificateRequests of meshid's signer
 * (docs/pod-certificates.md). Pending ones older than a few minutes mean no signer answers;
 * denied and failed ones name their reason; an issued certificate whose pod asked for no newer
 * one long after `beginRefreshAt` (or past `notAfter`) is overdue.
 */
import { kindNotServed } from '../../core/index.js';
import type { CheckConfig } from '../../core/index.js';
import type { Cluster } from './cluster-api.js';
import { result } from './model.js';
import type { CheckResult } from './model.js';

/** A request pending this long has no signer answering it. */
const PENDING_GRACE_MS = 5 * 60_000;
/** A kubelet refreshes at beginRefreshAt plus up to 5 minutes of jitter. */
const REFRESH_GRACE_MS = 15 * 60_000;

interface Pcr {
  readonly metadata: { name: string; namespace?: string; creationTimestamp?: string };
  readonly spec?: { podUID?: string; podName?: string };
  readonly status?: {
    conditions?: { type?: string; reason?: string; message?: string }[];
    beginRefreshAt?: string;
    notAfter?: string;
  };
}

function nameOf(p: Pcr): string {
  return `${p.metadata.namespace ?? ''}/${p.metadata.name}`;
}

function answerOf(p: Pcr): { type: string; reason: string; message: string } | undefined {
  const c = (p.status?.conditions ?? []).find((x) =>
    ['Issued', 'Denied', 'Failed'].includes(x.type ?? ''),
  );
  return c === undefined
    ? undefined
    : { type: c.type ?? '', reason: c.reason ?? '', message: c.message ?? '' };
}

/** The signer's requests: v1beta1 (shows every kubelet's), else v1; undefined when not served. */
async function listRequests(api: Cluster, signer: string): Promise<Pcr[] | undefined | Error> {
  for (const version of ['v1beta1', 'v1']) {
    const listed = await api.call(`list PodCertificateRequests (${version})`, (signal) =>
      api.kube.list(
        `certificates.k8s.io/${version}`,
        'PodCertificateRequest',
        undefined,
        undefined,
        `spec.signerName=${signer}`,
        signal,
      ),
    );
    if (!(listed instanceof Error)) return listed as unknown as Pcr[];
    if (!kindNotServed(listed)) return listed;
  }
  return undefined;
}

/**
 * The `pod-certificates` check.
 */
export async function checkPodCertificates(
  api: Cluster,
  config: CheckConfig,
  now: number,
): Promise<CheckResult> {
  const signer = config.podCertificateSigner;
  const all = await listRequests(api, signer);
  if (all === undefined)
    return result(
      'pod-certificates',
      'ok',
      'the PodCertificateRequest API is not served: pod certificates are not in use',
    );
  if (all instanceof Error)
    return result(
      'pod-certificates',
      'warn',
      `cannot list PodCertificateRequests: ${all.message}`,
      'grant list on podcertificaterequests.certificates.k8s.io to whoever runs meshid check',
    );
  const age = (p: Pcr): number => now - Date.parse(p.metadata.creationTimestamp ?? '');
  const pending = all.filter((p) => answerOf(p) === undefined && age(p) > PENDING_GRACE_MS);
  const refused = all.filter((p) => ['Denied', 'Failed'].includes(answerOf(p)?.type ?? ''));
  const issued = all.filter((p) => answerOf(p)?.type === 'Issued');
  // A pod's latest request, by creation: only the latest matters for overdue.
  const latest = new Map<string, Pcr>();
  for (const p of all) {
    const k = p.spec?.podUID ?? nameOf(p);
    const cur = latest.get(k);
    if (cur === undefined || age(cur) > age(p)) latest.set(k, p);
  }
  const overdue = issued.filter(
    (p) =>
      latest.get(p.spec?.podUID ?? nameOf(p)) === p &&
      now > Date.parse(p.status?.beginRefreshAt ?? '') + REFRESH_GRACE_MS,
  );
  const expired = overdue.filter((p) => now >= Date.parse(p.status?.notAfter ?? ''));
  const counts = `${all.length} request(s) for ${signer}: ${issued.length} issued, ${pending.length} pending over 5 min, ${refused.length} denied or failed, ${overdue.length} overdue`;
  if (pending.length > 0)
    return result(
      'pod-certificates',
      'error',
      `${counts}; oldest pending: ${nameOf(pending.sort((a, b) => age(b) - age(a))[0]!)}`,
      `no signer answers ${signer}: run the CA with --pod-certificates (meshid install --pod-certificates) and check its log and RBAC (docs/pod-certificates.md)`,
    );
  if (expired.length > 0)
    return result(
      'pod-certificates',
      'error',
      `${counts}; expired with no newer request: ${expired.map(nameOf).slice(0, 5).join(', ')}`,
      "the kubelet of these pods stopped refreshing: check the node's kubelet and its PodCertificateRequest gate",
    );
  if (refused.length > 0 || overdue.length > 0) {
    const reasons = new Map<string, number>();
    for (const p of refused) {
      const a = answerOf(p)!;
      reasons.set(`${a.type} ${a.reason}`, (reasons.get(`${a.type} ${a.reason}`) ?? 0) + 1);
    }
    const first = refused[0];
    const detail =
      first === undefined
        ? `overdue: ${overdue.map(nameOf).slice(0, 5).join(', ')}`
        : `${[...reasons].map(([r, n]) => `${r}: ${n}`).join(', ')}; e.g. ${nameOf(first)}: ${answerOf(first)!.message}`;
    return result(
      'pod-certificates',
      'warn',
      `${counts}; ${detail}`,
      "fix what the reason names in the pod's podCertificate volume (keyType: ECDSAP256, no userAnnotations, maxExpirationSeconds >= 3600) or its node; see docs/pod-certificates.md",
    );
  }
  return result('pod-certificates', 'ok', counts);
}
