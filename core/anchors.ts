/**
 * The trust-anchor bundle, once for every component: parse, validate, fingerprint, and which
 * anchor a certificate chain reaches and until when. The rule (docs/rotation.md, "What a bundle
 * may hold"):
 *
 * - every certificate must parse, be a CA allowed to sign certificates, be a root (self-signed)
 *   and have a P-256, P-384, Ed25519 or RSA >= 2048 key (FIPS mode: inside the FIPS policy); otherwise the bundle is refused, every bad
 *   certificate named at once;
 * - an anchor outside its validity (an old root that expired before the rotation retired it, a
 *   new root a skewed clock sees as not yet valid) is kept with a warning and never reached, but
 *   at least one anchor must be valid now;
 * - a duplicate is kept once, with a warning.
 *
 * The CA's full issuer path validation (pathLenConstraint, critical extensions, EKU) builds on
 * the anchors parsed here, in identity-ca.
 */
// @peculiar/x509 needs its Reflect polyfill loaded first; only its extension parser is used.
import 'reflect-metadata';
import {
  KeyUsageFlags,
  KeyUsagesExtension,
  X509Certificate as X509Extensions,
} from '@peculiar/x509';
import { createHash, X509Certificate } from 'node:crypto';
import { isOneSequence } from './der.js';
import { MeshidError } from './errors.js';
import type { ErrorCode } from './errors.js';
import { fipsCertificateProblem } from './fips.js';
import { printable } from './identity.js';
import { PemError, parsePem, toPem } from './pem.js';
import type { TlsAlgorithms } from './tls-groups.js';

/** A certificate of a bundle or chain, parsed once. */
export interface ParsedCertificate {
  /** 1-based position in the PEM text it came from, for messages. */
  readonly position: number;
  /** `CN=root.linkerd.cluster.local, O=…`. */
  readonly subject: string;
  readonly der: Uint8Array;
  readonly notBefore: number;
  readonly notAfter: number;
  /** Hex SHA-256 of the DER: a certificate's identity across bundles. */
  readonly fingerprint: string;
  readonly x509: X509Certificate;
}

/** The key types an anchor may have. */
export type AnchorKeyType = 'ecdsa-p256' | 'ecdsa-p384' | 'ed25519' | `rsa-${number}`;

/** One trust anchor. */
export interface Anchor extends ParsedCertificate {
  readonly keyType: AnchorKeyType;
}

/** A parsed, validated bundle. Frozen. */
export interface AnchorBundle {
  /** De-duplicated, in the order read (expired and not-yet-valid ones included). */
  readonly anchors: readonly Anchor[];
  /** The text exactly as read (for a bundle built from anchors, {@link AnchorBundle.pem}). */
  readonly text: string;
  /** {@link bundleFingerprint} of the text: what proxies report and pods are annotated with. */
  readonly fingerprint: string;
  /** The canonical PEM: earliest notBefore first (ties by fingerprint), 64-column blocks. */
  readonly pem: string;
  /** The earliest notAfter over all anchors, expired ones included. */
  readonly earliestNotAfter: number;
  /** Anchors kept but unusable now, duplicates dropped, expiry inside the warning window. */
  readonly warnings: readonly string[];
}

/** Options of {@link parseAnchors}. */
export interface ParseAnchorsOptions {
  /** Milliseconds since the epoch. */
  readonly now: number;
  /** Warn when an anchor expires within this many ms of `now`; default 60 days (Linkerd's check). */
  readonly warnWithin?: number | undefined;
  /** FIPS mode: an anchor whose key or signature is outside the policy is ERR_FIPS_MATERIAL_REFUSED. */
  readonly fips?: boolean | undefined;
}

/** Default expiry warning window: 60 days, as `linkerd check`. */
const DEFAULT_EXPIRY_WARNING_MS = 60 * 86_400_000;

/** At most this many certificates between a chain's first certificate and its anchor. */
const MAX_CHAIN_DEPTH = 5;

const WHAT = 'trust anchor bundle';

/**
 * Hex SHA-256 of a bundle's PEM text as written, as Linkerd's `linkerd.io/trust-root-sha256`
 * annotation is computed (so a whitespace-only edit is a different fingerprint).
 *
 * @example
 * ```ts
 * bundleFingerprint(configMap.data['ca-bundle.crt']); // '3f0c…'
 * ```
 */
export function bundleFingerprint(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

/**
 * Parses and validates a trust-anchor bundle by the rule above. Throws ERR_ANCHORS_INVALID
 * naming every bad certificate (by position and subject), or ERR_FIPS_MATERIAL_REFUSED.
 *
 * @example
 * ```ts
 * const bundle = parseAnchors(await readFile('ca-bundle.crt', 'utf8'), { now: clock.now() });
 * bundle.anchors.map((a) => a.subject);
 * ```
 */
export function parseAnchors(text: string, options: ParseAnchorsOptions): AnchorBundle {
  const { now } = options;
  const certs = parseCertificates(text, 'ERR_ANCHORS_INVALID', WHAT);
  if (certs.length === 0) throw anchorsInvalid(`${WHAT} is empty: it holds no certificate`);
  const problems: string[] = [];
  const warnings: string[] = [];
  const unique = new Map<string, Anchor>();
  for (const c of certs) {
    const name = `trust anchor #${c.position} "${printable(c.subject, 120)}"`;
    const fips = options.fips === true ? fipsCertificateProblem(c.der) : undefined;
    if (fips !== undefined)
      throw new MeshidError('ERR_FIPS_MATERIAL_REFUSED', `FIPS mode refused ${name}: ${fips}`);
    const keyType = keyTypeOf(c.x509);
    const problem = anchorProblem(c, keyType);
    if (problem !== undefined) problems.push(`${name} ${problem}`);
    else if (unique.has(c.fingerprint))
      warnings.push(
        `${name} duplicates trust anchor #${unique.get(c.fingerprint)!.position}; kept once`,
      );
    else unique.set(c.fingerprint, Object.freeze({ ...c, keyType: keyType! }));
  }
  if (problems.length > 0)
    throw anchorsInvalid(
      `${WHAT} refused (${problems.length} bad certificate${problems.length === 1 ? '' : 's'}):\n${problems.map((p) => `  ${p}`).join('\n')}`,
    );
  const anchors = [...unique.values()];
  const unusable = anchors.map((a) => validityProblem(a, now)).filter((p) => p !== undefined);
  if (unusable.length === anchors.length)
    throw anchorsInvalid(
      `every trust anchor in the bundle has expired or is not yet valid: ${unusable.join('; ')}`,
    );
  warnings.push(...unusable.map((p) => `${p}: kept, but no chain reaches it`));
  const warnWithin = options.warnWithin ?? DEFAULT_EXPIRY_WARNING_MS;
  for (const a of anchors) {
    if (a.notAfter >= now && a.notAfter - now <= warnWithin)
      warnings.push(
        `anchor "${a.subject}" expires at ${iso(a.notAfter)}, within ${formatDays(warnWithin)}`,
      );
  }
  return bundleOf(anchors, text, warnings);
}

/**
 * A bundle of anchors that were already validated (adding a staged root, dropping a retired one):
 * de-duplicated; its text is the canonical PEM.
 *
 * @example
 * ```ts
 * const staged = bundleOfAnchors([...current.anchors, newRoot]);
 * ```
 */
export function bundleOfAnchors(anchors: readonly Anchor[]): AnchorBundle {
  const unique = new Map<string, Anchor>();
  for (const a of anchors) if (!unique.has(a.fingerprint)) unique.set(a.fingerprint, a);
  const list = [...unique.values()];
  return bundleOf(list, canonicalPem(list), []);
}

/**
 * Parses PEM text holding certificates only (a chain, a `ca.crt`, a webhook caBundle) without
 * judging them. Throws a MeshidError with `code`, its message prefixed with `what` when given.
 *
 * @example
 * ```ts
 * const chain = parseCertificates(tlsCrt, 'ERR_ISSUER_INVALID', 'issuer tls.crt');
 * ```
 */
export function parseCertificates(
  text: string,
  code: ErrorCode,
  what?: string,
): ParsedCertificate[] {
  let blocks;
  try {
    blocks = parsePem(text, 'CERTIFICATE');
  } catch (err) {
    if (!(err instanceof PemError)) throw err;
    throw new MeshidError(code, what === undefined ? err.message : `${what}: ${err.message}`, {
      cause: err,
    });
  }
  return blocks.map((b, i) => {
    const bad = (detail: string, cause?: unknown): MeshidError =>
      new MeshidError(
        code,
        `certificate #${i + 1}${what === undefined ? '' : ` of the ${what}`} is not a parseable X.509 certificate (${detail})`,
        cause === undefined ? undefined : { cause },
      );
    // node ignores bytes after the certificate; a truncated or concatenated body must not pass.
    if (!isOneSequence(b.der)) throw bad('bad or trailing bytes after its DER');
    let x509: X509Certificate;
    try {
      x509 = new X509Certificate(b.der);
    } catch (err) {
      throw bad((err as Error).message, err);
    }
    return Object.freeze({
      position: i + 1,
      subject: nameOf(x509.subject),
      der: b.der,
      notBefore: Date.parse(x509.validFrom),
      notAfter: Date.parse(x509.validTo),
      fingerprint: createHash('sha256').update(b.der).digest('hex'),
      x509,
    });
  });
}

/** The outcome of {@link reachAnchor}. */
export type Reach<A extends ParsedCertificate = ParsedCertificate> =
  | {
      readonly anchor: A;
      /** The chain's first certificate, then the intermediates used; empty when it is the anchor. */
      readonly path: readonly ParsedCertificate[];
      /** The earliest notAfter over the path and the anchor: until when the chain holds. */
      readonly notAfter: number;
    }
  | { readonly anchor?: undefined; readonly reason: string };

/**
 * Which anchor a chain reaches: from its first certificate, through the others (intermediates,
 * any order, each a CA), to an anchor, every link checked by name and signature, at most
 * {@link MAX_CHAIN_DEPTH} deep; a first certificate that is itself an anchor reaches it. With
 * `now`, every certificate on the way and the anchor must be valid then (does it verify?);
 * without, validity is not looked at (lineage: was it issued under this root? as the rotation
 * asks of certificates its injected clock may have outlived).
 *
 * @example
 * ```ts
 * const found = reachAnchor(parseCertificates(tlsCrt, 'ERR_ISSUER_INVALID'), bundle.anchors, now);
 * if (found.anchor === undefined) refuse(found.reason);
 * ```
 */
export function reachAnchor<A extends ParsedCertificate>(
  chain: readonly ParsedCertificate[],
  anchors: readonly A[],
  now?: number,
): Reach<A> {
  const [first, ...rest] = chain;
  if (first === undefined) return { reason: 'the chain holds no certificate' };
  const valid = (c: ParsedCertificate): boolean =>
    now === undefined || validityProblem(c, now) === undefined;
  if (!valid(first)) return { reason: validityProblem(first, now!, shortName)! };
  const live = anchors.filter(valid);
  const self = live.find((a) => a.fingerprint === first.fingerprint);
  if (self !== undefined) return { anchor: self, path: [], notAfter: self.notAfter };
  // The certificate the longest path stopped at: what a refusal names.
  let stuck = first;
  let depth = 0;
  const search = (path: readonly ParsedCertificate[]): Reach<A> | undefined => {
    const cur = path[path.length - 1]!;
    if (path.length > depth) [stuck, depth] = [cur, path.length];
    const anchor = live.find((a) => signs(a, cur));
    if (anchor !== undefined)
      return { anchor, path, notAfter: Math.min(anchor.notAfter, ...path.map((p) => p.notAfter)) };
    if (path.length > MAX_CHAIN_DEPTH) return undefined;
    for (const next of rest) {
      if (path.includes(next) || !next.x509.ca || !valid(next) || !signs(next, cur)) continue;
      const found = search([...path, next]);
      if (found !== undefined) return found;
    }
    return undefined;
  };
  const found = search([first]);
  if (found !== undefined) return found;
  const stale = anchors.find((a) => !live.includes(a) && signs(a, stuck));
  if (stale !== undefined) return { reason: validityProblem(stale, now!, shortName)! };
  return {
    reason: `${shortName(stuck)} (issued by ${shortName({ subject: nameOf(stuck.x509.issuer) })}) is not signed by any current anchor${rest.length > 0 ? ' or intermediate' : ''}`,
  };
}

/**
 * Anchors as a person compares them: `root.linkerd.cluster.local sha256 9a1b…, …` (the full
 * SHA-256 of each DER, as `meshid trust inspect` prints it); `no anchors` for none.
 *
 * @example
 * ```ts
 * `checked against ${file}: ${anchorFingerprints(bundle.anchors)}`;
 * ```
 */
export function anchorFingerprints(anchors: readonly ParsedCertificate[]): string {
  return anchors.length === 0
    ? 'no anchors'
    : anchors.map((a) => `${shortName(a)} sha256 ${a.fingerprint}`).join(', ');
}

/**
 * What a person compares when a chain is refused, whatever refused it (the CA's issuer load, a
 * proxy's look at the CA or at its own certificate, `meshid check`, the trust commands): every
 * state folder has the same names (`root.linkerd.cluster.local`), so the names alone read as a
 * contradiction. Says the SHA-256 fingerprint (of the DER, as {@link ParsedCertificate}) of the
 * chain's first certificate, of its issuer when the chain carries it (else only the issuer's
 * name), and of each anchor it was checked against, with the files or objects they came from.
 *
 * @example
 * ```ts
 * `${found.reason}; ${chainFingerprints(chain, bundle.anchors, { chain: 'issuer/tls.crt', anchors: 'trust-anchors.pem' })}`;
 * // '… ; issuer/tls.crt: identity.linkerd.cluster.local sha256 3f0c…, issued by root.linkerd.cluster.local (not in the chain); trust-anchors.pem: root.linkerd.cluster.local sha256 9a1b…'
 * ```
 */
export function chainFingerprints(
  chain: readonly ParsedCertificate[],
  anchors: readonly ParsedCertificate[],
  /** Where the chain and the anchors came from; without `anchors`, the anchors are left out. */
  from: { readonly chain: string; readonly anchors?: string },
): string {
  const [first, ...rest] = chain;
  const anchorList =
    from.anchors === undefined ? '' : `; ${from.anchors}: ${anchorFingerprints(anchors)}`;
  if (first === undefined) return `${from.chain}: no certificate${anchorList}`;
  const issuerName = nameOf(first.x509.issuer);
  const parent = rest.find((c) => nameOf(c.x509.subject) === issuerName);
  const issuer =
    parent !== undefined
      ? `issued by ${shortName(parent)} sha256 ${parent.fingerprint}`
      : `issued by ${shortName({ subject: issuerName })} (not in the chain)`;
  return `${from.chain}: ${shortName(first)} sha256 ${first.fingerprint}, ${issuer}${anchorList}`;
}

/**
 * A certificate's name for a person: its CN (`CN=root.linkerd.cluster.local, O=x` →
 * `root.linkerd.cluster.local`); without one (a workload leaf has an empty subject) its first DNS
 * SAN, else the whole subject. `{ subject }` alone names an issuer known only by its DN.
 *
 * @example
 * ```ts
 * shortName(bundle.anchors[0]!); // 'root.linkerd.cluster.local'
 * ```
 */
export function shortName(c: {
  readonly subject: string;
  readonly x509?: X509Certificate | undefined;
}): string {
  const subject = nameOf(c.subject);
  return (
    /(?:^|, )CN=([^,]*)/.exec(subject)?.[1] ??
    /(?:^|, )DNS:([^,]+)/.exec(c.x509?.subjectAltName ?? '')?.[1] ??
    (subject || '(no subject)')
  );
}

function bundleOf(anchors: readonly Anchor[], text: string, warnings: string[]): AnchorBundle {
  return Object.freeze({
    anchors: Object.freeze([...anchors]),
    text,
    fingerprint: bundleFingerprint(text),
    pem: canonicalPem(anchors),
    earliestNotAfter: Math.min(...anchors.map((a) => a.notAfter)),
    warnings: Object.freeze(warnings),
  });
}

function canonicalPem(anchors: readonly Anchor[]): string {
  return [...anchors]
    .sort((a, b) =>
      a.notBefore !== b.notBefore
        ? a.notBefore - b.notBefore
        : a.fingerprint < b.fingerprint
          ? -1
          : 1,
    )
    .map((a) => toPem(a.der, 'CERTIFICATE'))
    .join('');
}

function signs(parent: ParsedCertificate, child: ParsedCertificate): boolean {
  try {
    return child.x509.checkIssued(parent.x509) && child.x509.verify(parent.x509.publicKey);
  } catch {
    return false;
  }
}

function anchorProblem(
  c: ParsedCertificate,
  keyType: AnchorKeyType | undefined,
): string | undefined {
  // Before cA: node's `ca` is false too when keyUsage lacks keyCertSign (X509_check_ca).
  const usage = new X509Extensions(c.der).getExtension(KeyUsagesExtension);
  if (usage !== null && (usage.usages & KeyUsageFlags.keyCertSign) === 0)
    return 'has a keyUsage without keyCertSign, so it may not sign certificates';
  if (!c.x509.ca) return 'is not a CA certificate (basicConstraints cA is absent or false)';
  if (keyType === undefined) return `has an unsupported key (${describeKey(c.x509)})`;
  if (!signs(c, c))
    return `is not self-signed (issued by "${printable(nameOf(c.x509.issuer), 120)}"): an anchor must be a root`;
  return undefined;
}

function validityProblem(
  c: ParsedCertificate,
  now: number,
  name: (c: ParsedCertificate) => string = (a) =>
    `trust anchor #${a.position} "${printable(a.subject, 120)}"`,
): string | undefined {
  if (now > c.notAfter) return `${name(c)} has expired (notAfter ${iso(c.notAfter)})`;
  if (now < c.notBefore) return `${name(c)} is not yet valid (notBefore ${iso(c.notBefore)})`;
  return undefined;
}

function keyTypeOf(cert: X509Certificate): AnchorKeyType | undefined {
  const { asymmetricKeyType: type, asymmetricKeyDetails: d } = cert.publicKey;
  if (type === 'ec' && d?.namedCurve === 'prime256v1') return 'ecdsa-p256';
  if (type === 'ec' && d?.namedCurve === 'secp384r1') return 'ecdsa-p384';
  if (type === 'rsa' && (d?.modulusLength ?? 0) >= 2048) return `rsa-${d!.modulusLength!}`;
  if (type === 'ed25519') return 'ed25519';
  return undefined;
}

function describeKey(cert: X509Certificate): string {
  const { asymmetricKeyType: type, asymmetricKeyDetails: d } = cert.publicKey;
  if (type === 'rsa')
    return `RSA ${d?.modulusLength ?? '?'} bits; RSA keys must have at least 2048`;
  if (type === 'ec')
    return `ECDSA on ${d?.namedCurve ?? 'an unknown curve'}; only P-256 and P-384 are accepted`;
  return `${type ?? 'unknown'}; only ECDSA P-256/P-384, Ed25519 and RSA >= 2048 are accepted`;
}

/** node's multi-line distinguished name as `CN=a, O=b` (node gives undefined for an empty one). */
function nameOf(dn: string | undefined): string {
  return (dn ?? '').split('\n').filter(Boolean).join(', ');
}

function anchorsInvalid(message: string): MeshidError {
  return new MeshidError('ERR_ANCHORS_INVALID', message);
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function formatDays(ms: number): string {
  const days = ms / 86_400_000;
  return Number.isInteger(days) ? `${days} days` : `${Math.round(ms / 1000)}s`;
}

/** What a proxy's admin `/identity` answers: written by proxy/admin.ts, read by check, `meshid identity`, the rotation and tests. */
export interface ProxyIdentityReport {
  readonly identity: string;
  readonly ready: boolean;
  readonly certificate?: {
    readonly serial: string;
    readonly notBefore: string;
    readonly notAfter: string;
    /** The leaf and its intermediates, PEM (public material: what `meshid check` verifies). */
    readonly chainPem: string;
  };
  readonly trustAnchors: {
    /** {@link bundleFingerprint} of the bundle the proxy loaded. */
    readonly fingerprint: string;
    /**
     * {@link bundleFingerprint} of that bundle's canonical PEM: the same for every file holding
     * the same anchors in any order or line wrapping. A kubelet writes a `clusterTrustBundle`
     * volume's anchors in an order of its own, so a pod-certificate proxy's file is not the
     * ConfigMap's text even when it holds the same anchors. Absent from older proxies.
     */
    readonly canonicalFingerprint?: string;
    readonly subjects: readonly string[];
    readonly loadedAt: string;
  };
  readonly refreshes: { readonly ok: number; readonly failed: number };
  /** The key exchange: the groups offered, the CA connection's, and the mesh connections' so far. */
  readonly tls?: ProxyTlsReport;
}

/** What `/identity` says about TLS key exchange (core/tls-groups.ts). */
export interface ProxyTlsReport {
  /** The `tlsGroups` setting in force (hybrid-preferred, hybrid-required, classic; fips). */
  readonly mode: string;
  /** The OpenSSL group list offered, e.g. `X25519MLKEM768/X25519:P-256:P-384`. */
  readonly groups: string;
  /** The last connection to the CA. */
  readonly ca?: TlsAlgorithms;
  /** Successful handshakes so far by direction and group. */
  readonly inbound: Readonly<Record<string, number>>;
  readonly outbound: Readonly<Record<string, number>>;
}

/** A {@link ProxyIdentityReport} as read off the network: only the string fields that are strings. */
export interface ProxyIdentityReportAsRead {
  readonly identity?: string;
  readonly certificate: Partial<NonNullable<ProxyIdentityReport['certificate']>>;
  readonly trustAnchors: Partial<
    Pick<ProxyIdentityReport['trustAnchors'], 'fingerprint' | 'canonicalFingerprint' | 'loadedAt'>
  >;
  /** The key-exchange report, when every field of it has its type (older proxies have none). */
  readonly tls?: ProxyTlsReport;
}

/**
 * Reads a `/identity` body from a proxy that may be old, other or hostile: every field checked,
 * a missing or mistyped one absent. Throws a SyntaxError when the body is not JSON.
 *
 * @example
 * ```ts
 * const report = readIdentityReport(await res.text());
 * report.trustAnchors.fingerprint === bundle.fingerprint;
 * ```
 */
export function readIdentityReport(body: string): ProxyIdentityReportAsRead {
  const json: unknown = JSON.parse(body);
  const fields = (v: unknown): Record<string, string> => {
    const out: Record<string, string> = {};
    if (typeof v === 'object' && v !== null)
      for (const [k, x] of Object.entries(v)) if (typeof x === 'string') out[k] = x;
    return out;
  };
  const top = fields(json);
  return {
    ...(top['identity'] === undefined ? {} : { identity: top['identity'] }),
    certificate: fields((json as Record<string, unknown> | null)?.['certificate']),
    trustAnchors: fields((json as Record<string, unknown> | null)?.['trustAnchors']),
    ...withTls(readTlsReport((json as Record<string, unknown> | null)?.['tls'])),
  };
}

function withTls(tls: ProxyTlsReport | undefined): { tls?: ProxyTlsReport } {
  return tls === undefined ? {} : { tls };
}

/** The `tls` part of a `/identity` body when every field has its type, else undefined. */
function readTlsReport(t: unknown): ProxyTlsReport | undefined {
  const counts = (v: unknown): Record<string, number> | undefined =>
    typeof v === 'object' &&
    v !== null &&
    !Array.isArray(v) &&
    Object.values(v).every((n) => typeof n === 'number' && Number.isFinite(n) && n >= 0)
      ? Object.fromEntries(Object.entries(v as Record<string, number>))
      : undefined;
  if (typeof t !== 'object' || t === null) return undefined;
  const r = t as Record<string, unknown>;
  const [inbound, outbound] = [counts(r['inbound']), counts(r['outbound'])];
  if (typeof r['mode'] !== 'string' || typeof r['groups'] !== 'string') return undefined;
  if (inbound === undefined || outbound === undefined) return undefined;
  const ca = r['ca'] as { group?: unknown; cipher?: unknown } | null | undefined;
  const caOk = typeof ca?.group === 'string' && typeof ca.cipher === 'string';
  return {
    mode: r['mode'],
    groups: r['groups'],
    inbound,
    outbound,
    ...(caOk ? { ca: { group: ca.group as string, cipher: ca.cipher as string } } : {}),
  };
}
