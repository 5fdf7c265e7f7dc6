/**
 * Which anchor of a bundle a chain was issued under (the live issuer, a proxy's leaf, a CA's
 * serving chain), and the refusal of a bundle that would not anchor the live issuer: the rule
 * every trust controller applies before it writes a bundle.
 */
import {
  MeshidError,
  chainFingerprints,
  parseAnchors,
  parseCertificates,
  reachAnchor,
  toPem,
} from '../core/index.js';
import type { Anchor, AnchorBundle } from '../core/index.js';

/**
 * Refuses a bundle that would not anchor the live issuer. Used for every bundle the trust
 * controllers write.
 *
 * @throws ERR_ROTATION_REFUSED naming the issuer.
 * @example
 * ```ts
 * assertAnchorsIssuer(nextBundle, issuerTlsCrt);
 * ```
 */
export function assertAnchorsIssuer(bundle: AnchorBundle, issuerChainPem: string): Anchor {
  const anchor = anchorOfChain(issuerChainPem, bundle.anchors);
  if (anchor === undefined) {
    throw new MeshidError(
      'ERR_ROTATION_REFUSED',
      `refusing a trust bundle that does not anchor the live issuer${describeIssuer(issuerChainPem)}: every certificate it signed would stop verifying`,
    );
  }
  return anchor;
}

/**
 * The anchor a PEM chain was issued under, validity not looked at (the injected clock may have
 * outlived a proxy's leaf; a lineage question).
 */
export function anchorOfChain(chainPem: string, anchors: readonly Anchor[]): Anchor | undefined {
  try {
    return reachAnchor(parseCertificates(chainPem, 'ERR_ANCHORS_INVALID'), anchors).anchor;
  } catch {
    return undefined;
  }
}

/** A root certificate (the first of a `tls.crt`) as an anchor, by the bundle rule. */
export function rootFromPem(pem: string, now: number): Anchor {
  const first = parseCertificates(pem, 'ERR_ANCHORS_INVALID', 'root certificate')[0];
  if (first === undefined)
    throw new MeshidError('ERR_ANCHORS_INVALID', 'root certificate: no CERTIFICATE block');
  return parseAnchors(toPem(first.der, 'CERTIFICATE'), { now }).anchors[0]!;
}

/** The subject of a PEM chain's first certificate, or undefined when there is none. */
export function firstSubject(chainPem: string): string | undefined {
  try {
    return parseCertificates(chainPem, 'ERR_ANCHORS_INVALID')[0]?.subject;
  } catch {
    return undefined;
  }
}

/** The issuer's subject for messages, with its leading space. */
export function describeIssuer(chainPem: string): string {
  const subject = firstSubject(chainPem);
  return subject === undefined ? ' (no issuer certificate could be read)' : ` "${subject}"`;
}

/** `(… sha256 …)`: the issuer's and the anchors' fingerprints, with where they were read. */
export function fingerprintsOf(
  chainPem: string,
  bundle: AnchorBundle,
  sources: { readonly issuer: string; readonly anchors: string } | undefined,
): string {
  try {
    const chain = parseCertificates(chainPem, 'ERR_ROTATION_REFUSED');
    return ` (${chainFingerprints(chain, bundle.anchors, {
      chain: sources?.issuer ?? 'the live issuer',
      anchors: sources?.anchors ?? 'the current bundle',
    })})`;
  } catch {
    return '';
  }
}
