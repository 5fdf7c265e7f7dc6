/**
 * The trust-anchor bundle model: a PEM bundle parsed into anchors, each checked for what a trust
 * anchor must be, de-duplicated, put in a stable order and rendered back to PEM byte for byte the
 * same whatever order or layout it came in. Every problem names the certificate by its index in
 * the input (1-based, counting PEM blocks) and its subject, and all of them are reported at once.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { MeshidError, PemError, parsePem, toPem } from '../core/index.js';

/** The key types an anchor may have. */
export type AnchorKeyType = 'ecdsa-p256' | 'ecdsa-p384' | `rsa-${number}`;

/** One trust anchor. */
export interface Anchor {
  readonly der: Uint8Array;
  /** Subject, RFC 4514-ish (`CN=root.linkerd.cluster.local, O=...`). */
  readonly subject: string;
  readonly notBefore: number;
  readonly notAfter: number;
  /** Hex SHA-256 of the DER: the anchor's identity across bundles. */
  readonly fingerprint: string;
  readonly keyType: AnchorKeyType;
}

/** A parsed, validated, de-duplicated bundle. */
export interface TrustBundle {
  /** In the stable order: earliest notBefore first, ties by fingerprint. */
  readonly anchors: readonly Anchor[];
  /** The canonical PEM rendering ({@link renderBundle}). */
  readonly pem: string;
  /** Hex SHA-256 of {@link TrustBundle.pem}: what proxies report and pods are annotated with. */
  readonly fingerprint: string;
  readonly earliestNotAfter: number;
  /** Human-readable warnings: duplicates dropped, expiry inside the warning window. */
  readonly warnings: readonly string[];
}

/** Options of {@link parseBundle}. */
export interface ParseBundleOptions {
  /** Milliseconds since the epoch. */
  readonly now: number;
  /** Warn when an anchor expires within this many ms of `now`; default 60 days (Linkerd's check). */
  readonly warnWithin?: number;
}

/** Default expiry warning window: 60 days, as `linkerd check`. */
export const DEFAULT_EXPIRY_WARNING_MS = 60 * 86_400_000;

/**
 * Parses and validates a bundle. Throws ERR_ANCHORS_INVALID listing every bad certificate.
 *
 * @example
 * ```ts
 * const bundle = parseBundle(await readFile('ca-bundle.crt', 'utf8'), { now: clock.now() });
 * bundle.anchors.map((a) => a.subject);
 * ```
 */
export function parseBundle(text: string, options: ParseBundleOptions): TrustBundle {
  let blocks;
  try {
    blocks = parsePem(text, 'CERTIFICATE');
  } catch (err) {
    if (err instanceof PemError) {
      throw new MeshidError('ERR_ANCHORS_INVALID', `trust bundle: ${err.message}`, { cause: err });
    }
    throw err;
  }
  if (blocks.length === 0) {
    throw new MeshidError(
      'ERR_ANCHORS_INVALID',
      'trust bundle is empty: it holds no CERTIFICATE block',
    );
  }
  const problems: string[] = [];
  const warnings: string[] = [];
  const byFingerprint = new Map<string, { anchor: Anchor; index: number }>();
  blocks.forEach((block, i) => {
    const index = i + 1;
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(block.der);
    } catch (err) {
      problems.push(
        `certificate #${index} is not a parseable X.509 certificate (${(err as Error).message})`,
      );
      return;
    }
    const subject = subjectOf(cert);
    const problem = anchorProblem(cert, options.now);
    if (problem !== undefined) {
      problems.push(`certificate #${index} "${subject}" ${problem}`);
      return;
    }
    const fingerprint = sha256Hex(block.der);
    const seen = byFingerprint.get(fingerprint);
    if (seen !== undefined) {
      warnings.push(
        `certificate #${index} "${subject}" duplicates certificate #${seen.index}; kept once`,
      );
      return;
    }
    byFingerprint.set(fingerprint, {
      index,
      anchor: Object.freeze({
        der: new Uint8Array(block.der),
        subject,
        notBefore: Date.parse(cert.validFrom),
        notAfter: Date.parse(cert.validTo),
        fingerprint,
        keyType: keyTypeOf(cert)!,
      }),
    });
  });
  if (problems.length > 0) {
    throw new MeshidError(
      'ERR_ANCHORS_INVALID',
      `trust bundle refused (${problems.length} bad certificate${problems.length === 1 ? '' : 's'}):\n${problems.map((p) => `  ${p}`).join('\n')}`,
    );
  }
  const anchors = sortAnchors([...byFingerprint.values()].map((v) => v.anchor));
  const warnWithin = options.warnWithin ?? DEFAULT_EXPIRY_WARNING_MS;
  for (const a of anchors) {
    if (a.notAfter - options.now <= warnWithin) {
      warnings.push(
        `anchor "${a.subject}" expires at ${new Date(a.notAfter).toISOString()}, within ${formatDays(warnWithin)}`,
      );
    }
  }
  return bundleOf(anchors, warnings);
}

/**
 * Builds a bundle from anchors that were already validated (adding a staged root, dropping a
 * retired one): de-duplicated, stably ordered and rendered.
 *
 * @example
 * ```ts
 * const staged = bundleFromAnchors([...current.anchors, newRoot]);
 * ```
 */
export function bundleFromAnchors(anchors: readonly Anchor[]): TrustBundle {
  const unique = new Map<string, Anchor>();
  for (const a of anchors) if (!unique.has(a.fingerprint)) unique.set(a.fingerprint, a);
  return bundleOf(sortAnchors([...unique.values()]), []);
}

/**
 * The canonical PEM of anchors: each block with 64-character lines and one newline, in the
 * order given, nothing else. The same set always renders to the same bytes.
 *
 * @example
 * ```ts
 * await writeFile('ca-bundle.crt', renderBundle(bundle.anchors));
 * ```
 */
export function renderBundle(anchors: readonly Anchor[]): string {
  return anchors.map((a) => toPem(a.der, 'CERTIFICATE')).join('');
}

/**
 * Hex SHA-256 of a bundle's PEM text (the `meshid.io/trust-root-sha256` value).
 *
 * @example
 * ```ts
 * bundleFingerprint(configMap.data['ca-bundle.crt']);
 * ```
 */
export function bundleFingerprint(pem: string): string {
  return createHash('sha256').update(pem, 'utf8').digest('hex');
}

/**
 * Reads one certificate (a root that cert-manager wrote into `tls.crt`, or the first certificate
 * of a chain) as an anchor, with the same checks as a bundle's. Throws ERR_ANCHORS_INVALID.
 *
 * @example
 * ```ts
 * const root = anchorFromPem(secret.data['tls.crt'], { now: clock.now() });
 * ```
 */
export function anchorFromPem(pem: string, options: ParseBundleOptions): Anchor {
  const blocks = (() => {
    try {
      return parsePem(pem, 'CERTIFICATE');
    } catch (err) {
      throw new MeshidError('ERR_ANCHORS_INVALID', `root certificate: ${(err as Error).message}`, {
        cause: err,
      });
    }
  })();
  const first = blocks[0];
  if (first === undefined) {
    throw new MeshidError('ERR_ANCHORS_INVALID', 'root certificate: no CERTIFICATE block');
  }
  return parseBundle(toPem(first.der, 'CERTIFICATE'), options).anchors[0]!;
}

/**
 * The certificates of a PEM chain (leaf or issuer first), as node X509Certificates; used to find
 * which anchor a chain leads to.
 *
 * @example
 * ```ts
 * const root = anchorOfChain(issuerTlsCrt, bundle.anchors);
 * ```
 */
export function anchorOfChain(chainPem: string, anchors: readonly Anchor[]): Anchor | undefined {
  let certs: X509Certificate[];
  try {
    certs = parsePem(chainPem, 'CERTIFICATE').map((b) => new X509Certificate(b.der));
  } catch {
    return undefined;
  }
  if (certs.length === 0) return undefined;
  const roots = anchors.map((a) => ({ anchor: a, cert: new X509Certificate(a.der) }));
  // Walk up from the first certificate through the chain until an anchor signed the current one.
  let current = certs[0]!;
  for (let hops = 0; hops <= certs.length; hops++) {
    for (const r of roots) {
      if (
        r.cert.fingerprint256 === current.fingerprint256 ||
        (current.checkIssued(r.cert) && current.verify(r.cert.publicKey))
      ) {
        return r.anchor;
      }
    }
    const parent = certs.find(
      (c) => c !== current && current.checkIssued(c) && current.verify(c.publicKey),
    );
    if (parent === undefined) return undefined;
    current = parent;
  }
  return undefined;
}

function bundleOf(anchors: readonly Anchor[], warnings: readonly string[]): TrustBundle {
  const pem = renderBundle(anchors);
  return Object.freeze({
    anchors: Object.freeze([...anchors]),
    pem,
    fingerprint: bundleFingerprint(pem),
    earliestNotAfter: Math.min(...anchors.map((a) => a.notAfter)),
    warnings: Object.freeze([...warnings]),
  });
}

function sortAnchors(anchors: Anchor[]): Anchor[] {
  return anchors.sort((a, b) =>
    a.notBefore !== b.notBefore
      ? a.notBefore - b.notBefore
      : a.fingerprint < b.fingerprint
        ? -1
        : a.fingerprint > b.fingerprint
          ? 1
          : 0,
  );
}

function anchorProblem(cert: X509Certificate, now: number): string | undefined {
  if (!cert.ca) return 'is not a CA (basicConstraints cA is absent or false)';
  const notBefore = Date.parse(cert.validFrom);
  const notAfter = Date.parse(cert.validTo);
  if (now > notAfter) return `has expired (notAfter ${new Date(notAfter).toISOString()})`;
  if (now < notBefore) return `is not yet valid (notBefore ${new Date(notBefore).toISOString()})`;
  if (keyTypeOf(cert) === undefined) return `has an unsupported key (${describeKey(cert)})`;
  if (cert.issuer !== cert.subject) {
    return `is not self-signed (issued by "${subjectOf(cert, 'issuer')}"): an anchor must be a root`;
  }
  if (!cert.verify(cert.publicKey)) {
    return 'is not self-signed: its signature does not verify with its own key';
  }
  return undefined;
}

function keyTypeOf(cert: X509Certificate): AnchorKeyType | undefined {
  const key = cert.publicKey;
  const details = key.asymmetricKeyDetails;
  if (key.asymmetricKeyType === 'ec') {
    if (details?.namedCurve === 'prime256v1') return 'ecdsa-p256';
    if (details?.namedCurve === 'secp384r1') return 'ecdsa-p384';
    return undefined;
  }
  if (key.asymmetricKeyType === 'rsa') {
    const bits = details?.modulusLength ?? 0;
    return bits >= 2048 ? `rsa-${bits}` : undefined;
  }
  return undefined;
}

function describeKey(cert: X509Certificate): string {
  const key = cert.publicKey;
  const d = key.asymmetricKeyDetails;
  if (key.asymmetricKeyType === 'rsa') {
    return `RSA ${d?.modulusLength ?? '?'} bits; RSA keys must have at least 2048`;
  }
  if (key.asymmetricKeyType === 'ec') {
    return `ECDSA on ${d?.namedCurve ?? 'an unknown curve'}; only P-256 and P-384 are accepted`;
  }
  return `${key.asymmetricKeyType ?? 'unknown'}; only ECDSA P-256/P-384 and RSA >= 2048 are accepted`;
}

function subjectOf(cert: X509Certificate, which: 'subject' | 'issuer' = 'subject'): string {
  return cert[which].split('\n').filter(Boolean).join(', ');
}

function sha256Hex(der: Uint8Array): string {
  return createHash('sha256').update(der).digest('hex');
}

function formatDays(ms: number): string {
  const days = ms / 86_400_000;
  return Number.isInteger(days) ? `${days} days` : `${Math.round(ms / 1000)}s`;
}
