/**
 * Certificate inspection shared by `meshid check` and `meshid identity`: describing names, keys
 * and validity for a person. Parsing and chaining are core's (parseCertificates, reachAnchor).
 * Read-only: nothing here holds or makes a private key.
 */
import type { X509Certificate } from 'node:crypto';

/** The DNS names and URIs of the subjectAltName extension. */
export function subjectAltNames(c: X509Certificate): { dns: string[]; uris: string[] } {
  const dns: string[] = [];
  const uris: string[] = [];
  // node writes "DNS:a, URI:b"; names with a comma are quoted, which identity names never need.
  for (const part of (c.subjectAltName ?? '').split(/,\s*/)) {
    if (part.startsWith('DNS:')) dns.push(part.slice(4));
    else if (part.startsWith('URI:')) uris.push(part.slice(4));
  }
  return { dns, uris };
}

/** Key type for a person: `ECDSA P-256`, `RSA 2048`, `Ed25519`. */
export function keyType(c: X509Certificate): string {
  const k = c.publicKey;
  const d = k.asymmetricKeyDetails;
  switch (k.asymmetricKeyType) {
    case 'ec': {
      const curve = d?.namedCurve;
      const names: Record<string, string> = { prime256v1: 'P-256', secp384r1: 'P-384' };
      return `ECDSA ${curve === undefined ? '?' : (names[curve] ?? curve)}`;
    }
    case 'rsa':
      return `RSA ${d?.modulusLength ?? '?'}`;
    default:
      return String(k.asymmetricKeyType ?? 'unknown').toUpperCase();
  }
}

/** `notBefore`/`notAfter` as ms since the epoch. */
export function validity(c: X509Certificate): { notBefore: number; notAfter: number } {
  return { notBefore: Date.parse(c.validFrom), notAfter: Date.parse(c.validTo) };
}

/** `3d 4h`, `5h 12m`, `42s`: the two largest units of a duration. */
export function humanDuration(ms: number): string {
  const units: [string, number][] = [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
  ];
  let rest = Math.floor(Math.abs(ms));
  const parts: string[] = [];
  for (const [u, size] of units) {
    const n = Math.floor(rest / size);
    rest -= n * size;
    // The two largest units from the first non-zero one: "3d 4h", "3d" when the hours are zero.
    if (n > 0) parts.push(`${n}${u}`);
    if (parts.length === 2 || (parts.length === 1 && n === 0)) break;
  }
  return parts.length === 0 ? '0s' : parts.join(' ');
}

/** The verdict on a certificate's validity window at `now`. */
interface ExpiryVerdict {
  readonly status: 'ok' | 'warn' | 'error';
  /** `valid for 29d 4h (until 2026-…)`, `expired 2h ago (…)`, `not valid until …`. */
  readonly text: string;
  readonly notBefore: number;
  readonly notAfter: number;
  /** Milliseconds left; negative when expired. */
  readonly remainingMs: number;
}

/**
 * Judges a validity window: an error when not yet valid or expired, a warning when less than
 * `warnWithinMs` is left *and* less than a third of the lifetime (so a 48 h issuer renewed every
 * day does not warn forever: cert-manager renews at two thirds by default, so a third left means
 * a renewal was missed), otherwise fine.
 */
export function judgeExpiry(c: X509Certificate, now: number, warnWithinMs: number): ExpiryVerdict {
  const { notBefore, notAfter } = validity(c);
  const remainingMs = notAfter - now;
  const until = new Date(notAfter).toISOString();
  if (now < notBefore)
    return {
      status: 'error',
      text: `not valid for another ${humanDuration(notBefore - now)} (NotBefore ${new Date(notBefore).toISOString()})`,
      notBefore,
      notAfter,
      remainingMs,
    };
  if (remainingMs <= 0)
    return {
      status: 'error',
      text: `expired ${humanDuration(-remainingMs)} ago (NotAfter ${until})`,
      notBefore,
      notAfter,
      remainingMs,
    };
  const threshold = Math.min(warnWithinMs, (notAfter - notBefore) / 3);
  return {
    status: remainingMs < threshold ? 'warn' : 'ok',
    text: `valid for ${humanDuration(remainingMs)} more (until ${until})`,
    notBefore,
    notAfter,
    remainingMs,
  };
}
