/**
 * Which signer replica answers a PodCertificateRequest: rendezvous (highest-random-weight)
 * hashing of the request's UID over the live replicas. Every replica computes the same owner from
 * the same replica set, with no coordination; a replica joining or leaving moves only the
 * requests it wins or held (about 1/n of them), never reshuffles the rest.
 *
 * The score of (replica, request) is the first 64 bits of SHA-256 over both names: uniform, so
 * the work is shared evenly, and not steerable by whoever names a request (the UID is the API
 * server's, and a request's creator cannot pick its replica).
 */
import { createHash } from 'node:crypto';

/**
 * The rendezvous score of `replica` for `key`: the larger, the stronger its claim.
 *
 * @example
 * ```ts
 * rendezvousScore('meshid-podcert-ca-0-1a2b3c', pcr.metadata.uid) > 0n; // true
 * ```
 */
export function rendezvousScore(replica: string, key: string): bigint {
  // A NUL between the two names: ('ab', 'c') and ('a', 'bc') are different inputs.
  return createHash('sha256').update(replica).update('\0').update(key).digest().readBigUInt64BE(0);
}

/**
 * The replica that owns `key` among `replicas` (the highest score; the larger name on a tie),
 * or undefined when there are none.
 *
 * @example
 * ```ts
 * ownerOf(pcr.metadata.uid, ['ca-0-1a2b3c', 'ca-1-4d5e6f']) === me; // this replica answers it
 * ```
 */
export function ownerOf(key: string, replicas: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestScore = -1n;
  for (const r of replicas) {
    const score = rendezvousScore(r, key);
    if (score > bestScore || (score === bestScore && best !== undefined && r > best)) {
      best = r;
      bestScore = score;
    }
  }
  return best;
}
