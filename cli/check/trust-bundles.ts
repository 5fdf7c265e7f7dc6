/**
 * The ClusterTrustBundle check of `meshid check --kubeconfig`: meshid's live and canary bundles
 * (published by `meshid trust sync`, docs/cluster-trust-bundles.md) against the anchors ConfigMap. A pure
 * function of what cluster.ts read; docs/troubleshooting.md has its section.
 */
import { parseAnchors } from '../../core/index.js';
import {
  TRUST_BUNDLE_ROLE_LABEL,
  clusterTrustBundleName,
  rotationInProgress,
  rotationStateFromAnnotations,
} from '../../trust-bundle/index.js';
import type { CheckResult } from './model.js';
import { result } from './model.js';

/** One ClusterTrustBundle as listed. */
export interface ListedTrustBundle {
  readonly metadata?: { readonly name?: string; readonly labels?: Record<string, string> };
  readonly spec?: { readonly signerName?: string; readonly trustBundle?: string };
}

/** What the check compares. */
interface TrustBundlesInput {
  /** The bundles listed; `'unserved'` when the API does not serve them; an Error when unreadable. */
  readonly bundles: readonly ListedTrustBundle[] | 'unserved' | Error;
  /** The anchors ConfigMap's text (an Error when it could not be read). */
  readonly anchorsText: string | Error;
  /** Its annotations (the rotation state). */
  readonly anchorsAnnotations?: Record<string, string> | undefined;
  readonly signerName: string;
  readonly now: number;
}

const setOf = (pem: string, now: number): string[] =>
  parseAnchors(pem, { now })
    .anchors.map((a) => a.fingerprint)
    .sort();

const short = (fps: readonly string[]): string => fps.map((f) => f.slice(0, 12)).join(', ');

/**
 * ✓ when meshid's live bundle holds exactly the ConfigMap's anchors (and the canary what the
 * rotation leaves), ‼ when there are none (trust sync not run with clusterTrustBundles, or the
 * API off), × when they disagree.
 */
export function checkTrustBundles(input: TrustBundlesInput): CheckResult {
  const { bundles, anchorsText, signerName, now } = input;
  const id = 'cluster-trust-bundles';
  if (bundles === 'unserved')
    return result(id, 'ok', 'the API does not serve ClusterTrustBundles: nothing to compare');
  if (bundles instanceof Error)
    return result(
      id,
      'warn',
      `cannot list ClusterTrustBundles: ${bundles.message}`,
      'give the checking user "list clustertrustbundles.certificates.k8s.io"',
    );
  if (anchorsText instanceof Error)
    return result(id, 'error', 'no anchors ConfigMap to compare the ClusterTrustBundles with');
  const fix = `let "meshid trust sync" publish them (clusterTrustBundles: on|auto; its logs say why not), or delete a bundle meshid did not make so that it can; see docs/cluster-trust-bundles.md`;
  const byName = new Map(bundles.map((b) => [b.metadata?.name ?? '', b]));
  let want: string[];
  try {
    want = setOf(anchorsText, now);
  } catch (err) {
    return result(id, 'error', `the anchors do not parse: ${(err as Error).message}`);
  }
  const liveName = clusterTrustBundleName(signerName, 'live');
  const live = byName.get(liveName);
  if (live === undefined)
    return result(
      id,
      'warn',
      `no ClusterTrustBundle ${liveName}: pods with pod certificates have no meshid anchors to mount`,
      fix,
    );
  const problems: string[] = [];
  for (const role of ['live', 'canary'] as const) {
    const name = clusterTrustBundleName(signerName, role);
    const b = byName.get(name);
    if (b === undefined) {
      problems.push(`${name} is missing`);
      continue;
    }
    if (b.metadata?.labels?.[TRUST_BUNDLE_ROLE_LABEL] !== role)
      problems.push(`${name} was not made by meshid (no ${TRUST_BUNDLE_ROLE_LABEL}=${role} label)`);
    let have: string[];
    try {
      have = setOf(b.spec?.trustBundle ?? '', now);
    } catch (err) {
      problems.push(`${name} does not parse: ${(err as Error).message}`);
      continue;
    }
    const expected = role === 'live' ? want : canaryOf(want, input.anchorsAnnotations);
    if (have.join() !== expected.join())
      problems.push(
        `${name} holds [${short(have)}] where the anchors ConfigMap says [${short(expected)}]`,
      );
  }
  if (problems.length > 0) return result(id, 'error', problems.join('; '), fix);
  return result(
    id,
    'ok',
    `${liveName} and its canary hold the anchors of the ConfigMap (${want.length} anchor${want.length === 1 ? '' : 's'})`,
  );
}

/** The canary's anchors: the new root alone while a rotation is under way, else the live ones. */
function canaryOf(live: string[], annotations: Record<string, string> | undefined): string[] {
  let state;
  try {
    state = rotationStateFromAnnotations(annotations);
  } catch {
    return live;
  }
  if (state === undefined || !rotationInProgress(state) || state.newRoot === undefined) return live;
  const next = live.filter((f) => f === state.newRoot!.fingerprint);
  return next.length > 0 ? next : live;
}
