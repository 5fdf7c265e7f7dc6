/**
 * Small, dependency-free checks of a trust-anchor bundle and of whether a certificate chain
 * reaches one of its anchors, on node's own X509Certificate. They exist for components that must
 * judge a bundle without owning one: the trust-configuration guard of the webhooks refuses an
 * anchors ConfigMap that does not parse or that drops the anchor the live issuer chains to. The
 * CA's full issuer validation (key match, path length, critical extensions) stays in identity-ca.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { MeshidError } from './errors.js';
import { printable } from './identity.js';
import { PemError, parsePem } from './pem.js';

/** One anchor of a bundle, in bundle order. */
export interface AnchorCertificate {
  /** 1-based position in the bundle, for messages. */
  readonly position: number;
  readonly subject: string;
  readonly der: Uint8Array;
  readonly notBefore: number;
  readonly notAfter: number;
  /** Hex SHA-256 of the DER. */
  readonly sha256: string;
  readonly certificate: X509Certificate;
}

/** At most this many certificates between a chain's first certificate and its anchor. */
const MAX_CHAIN_DEPTH = 5;

/**
 * Hex SHA-256 of a bundle's PEM text as written, as Linkerd's `linkerd.io/trust-root-sha256`
 * annotation is computed (so a whitespace-only edit is a different fingerprint).
 *
 * @example
 * ```ts
 * bundleFingerprint(readFileSync('ca-bundle.crt', 'utf8')); // '3f0c…'
 * ```
 */
export function bundleFingerprint(pem: string): string {
  return createHash('sha256').update(pem, 'utf8').digest('hex');
}

/**
 * Parses a trust-anchor bundle: clean PEM of CERTIFICATE blocks only, at least one, each a CA
 * certificate, at least one not expired at `now`. Throws ERR_ANCHORS_INVALID naming the
 * certificate (by position and subject) and the problem.
 *
 * @example
 * ```ts
 * const anchors = parseAnchorCertificates(configMap.data['ca-bundle.crt'], clock.now());
 * ```
 */
export function parseAnchorCertificates(pem: string, now: number): AnchorCertificate[] {
  const certs = parseCertificateList(pem, 'trust anchor bundle', 'ERR_ANCHORS_INVALID');
  if (certs.length === 0)
    throw new MeshidError(
      'ERR_ANCHORS_INVALID',
      'trust anchor bundle is empty: it holds no CERTIFICATE block',
    );
  for (const c of certs) {
    if (!c.certificate.ca)
      throw new MeshidError(
        'ERR_ANCHORS_INVALID',
        `trust anchor #${c.position} "${printable(c.subject)}" is not a CA certificate (basicConstraints cA is not set)`,
      );
  }
  const latest = Math.max(...certs.map((c) => c.notAfter));
  if (latest < now)
    throw new MeshidError(
      'ERR_ANCHORS_INVALID',
      `every trust anchor in the bundle has expired (the latest expired at ${new Date(latest).toISOString()})`,
    );
  return certs;
}

/**
 * Parses PEM text holding certificates only (a `tls.crt` with its chain, a `ca.crt`).
 * Throws a MeshidError with `code` naming `what` and the problem.
 *
 * @example
 * ```ts
 * const [issuer, ...rest] = parseCertificateList(tlsCrt, 'issuer tls.crt', 'ERR_ISSUER_INVALID');
 * ```
 */
export function parseCertificateList(
  pem: string,
  what: string,
  code: 'ERR_ANCHORS_INVALID' | 'ERR_ISSUER_INVALID',
): AnchorCertificate[] {
  let blocks;
  try {
    blocks = parsePem(pem, 'CERTIFICATE');
  } catch (err) {
    if (err instanceof PemError) throw new MeshidError(code, `${what}: ${err.message}`);
    throw err;
  }
  return blocks.map((b, i) => {
    let certificate: X509Certificate;
    try {
      certificate = new X509Certificate(b.der);
    } catch (err) {
      throw new MeshidError(
        code,
        `${what}: certificate #${i + 1} does not parse: ${(err as Error).message}`,
        { cause: err },
      );
    }
    return {
      position: i + 1,
      // A leaf with an empty subject (the CA's serving certificate, as Linkerd's) has none.
      subject: (certificate.subject ?? '').replace(/\n/g, ', '),
      der: b.der,
      notBefore: Date.parse(certificate.validFrom),
      notAfter: Date.parse(certificate.validTo),
      sha256: createHash('sha256').update(b.der).digest('hex'),
      certificate,
    };
  });
}

/** The outcome of {@link anchorOfChain}. */
export type ChainResult =
  { readonly anchor: AnchorCertificate } | { readonly anchor?: undefined; readonly reason: string };

/**
 * Finds the anchor a chain reaches: the chain's first certificate (an issuer), through the other
 * certificates given (intermediates, in any order), to a non-expired anchor, each link checked by
 * name and signature, at most five certificates deep. A first certificate that is itself one of
 * the anchors reaches it.
 *
 * @param chain - the issuer first, then candidate intermediates.
 *
 * @example
 * ```ts
 * const chain = parseCertificateList(tlsCrt + caCrt, 'issuer', 'ERR_ISSUER_INVALID');
 * const found = anchorOfChain(chain, parseAnchorCertificates(bundle, now), now);
 * if (found.anchor === undefined) refuse(found.reason);
 * ```
 */
export function anchorOfChain(
  chain: readonly AnchorCertificate[],
  anchors: readonly AnchorCertificate[],
  now: number,
): ChainResult {
  const [leaf, ...rest] = chain;
  if (leaf === undefined) return { reason: 'the chain holds no certificate' };
  const live = anchors.filter((a) => a.notBefore <= now && now <= a.notAfter);
  const signs = (child: AnchorCertificate, parent: AnchorCertificate): boolean => {
    try {
      return child.certificate.checkIssued(parent.certificate) &&
        child.certificate.verify(parent.certificate.publicKey)
        ? true
        : false;
    } catch {
      return false;
    }
  };
  const search = (
    c: AnchorCertificate,
    used: Set<AnchorCertificate>,
  ): AnchorCertificate | undefined => {
    const direct = live.find((a) => a.sha256 === c.sha256 || signs(c, a));
    if (direct !== undefined) return direct;
    if (used.size >= MAX_CHAIN_DEPTH) return undefined;
    for (const next of rest) {
      if (used.has(next) || !next.certificate.ca || !signs(c, next)) continue;
      const found = search(next, new Set([...used, next]));
      if (found !== undefined) return found;
    }
    return undefined;
  };
  const anchor = search(leaf, new Set());
  if (anchor !== undefined) return { anchor };
  return {
    reason: `"${printable(leaf.subject)}" (issued by "${printable(leaf.certificate.issuer.replace(/\n/g, ', '))}") does not chain to any valid anchor of the bundle (${live.length === 0 ? 'none is valid now' : live.map((a) => `"${printable(a.subject)}"`).join(', ')})`,
  };
}
