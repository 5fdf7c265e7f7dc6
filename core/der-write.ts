/**
 * The DER writer: builds TLVs from parts. The leaf signer encodes the constant parts of a
 * certificate once per issuer with it and splices per-request fields in (see
 * identity-ca/issuer/leaf.ts). Its failures are the reader's {@link DerError}.
 */
import { DerError, DerTag } from './der.js';

/**
 * The DER length octets for `n`.
 */
export function encodeLength(n: number): Uint8Array {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) {
    throw new DerError(`cannot encode length ${n}`);
  }
  if (n < 0x80) return Uint8Array.of(n);
  if (n <= 0xff) return Uint8Array.of(0x81, n);
  if (n <= 0xffff) return Uint8Array.of(0x82, n >>> 8, n & 0xff);
  if (n <= 0xffffff) return Uint8Array.of(0x83, n >>> 16, (n >>> 8) & 0xff, n & 0xff);
  return Uint8Array.of(0x84, n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
}

/**
 * Concatenates parts into one Buffer with a single allocation.
 *
 * @example
 * ```ts
 * concatBytes([prefix, middle, suffix]);
 * ```
 */
export function concatBytes(parts: readonly Uint8Array[]): Buffer {
  let total = 0;
  for (const p of parts) total += p.length;
  const out = Buffer.allocUnsafe(total);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/**
 * One TLV: `tag`, the DER length of the parts together, then the parts.
 *
 * @example
 * ```ts
 * tlv(DerTag.SEQUENCE, derOid('1.2.840.10045.4.3.2')); // AlgorithmIdentifier, no parameters
 * ```
 */
export function tlv(tag: number, ...parts: Uint8Array[]): Buffer {
  if (!Number.isInteger(tag) || tag < 0 || tag > 0xff || (tag & 0x1f) === 0x1f) {
    throw new DerError(`cannot encode tag ${tag}: only single-byte tags are supported`);
  }
  let total = 0;
  for (const p of parts) total += p.length;
  const len = encodeLength(total);
  const out = Buffer.allocUnsafe(1 + len.length + total);
  out[0] = tag;
  out.set(len, 1);
  let o = 1 + len.length;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/**
 * A positive INTEGER from an unsigned big-endian magnitude: leading zero bytes are dropped and
 * a 0x00 is prepended when the top bit is set, so the result is minimal and never negative.
 * An empty or all-zero magnitude encodes 0.
 *
 * @example
 * ```ts
 * derUnsignedInteger(Uint8Array.of(0x00, 0x80)); // 02 02 00 80
 * ```
 */
export function derUnsignedInteger(magnitude: Uint8Array): Buffer {
  let i = 0;
  while (i < magnitude.length - 1 && magnitude[i] === 0) i++;
  const m = magnitude.length === 0 ? Uint8Array.of(0) : magnitude.subarray(i);
  return m[0]! >= 0x80 ? tlv(DerTag.INTEGER, Uint8Array.of(0), m) : tlv(DerTag.INTEGER, m);
}

function base128(out: number[], v: bigint): void {
  const groups: number[] = [Number(v & 0x7fn)];
  for (let x = v >> 7n; x > 0n; x >>= 7n) groups.push(Number(x & 0x7fn) | 0x80);
  for (let i = groups.length - 1; i >= 0; i--) out.push(groups[i]!);
}

/**
 * An OBJECT IDENTIFIER TLV from its dotted form, e.g. `'2.5.29.17'`.
 *
 * @example
 * ```ts
 * derOid('2.5.29.17'); // 06 03 55 1d 11
 * ```
 */
export function derOid(dotted: string): Buffer {
  if (!/^[0-2](\.(0|[1-9][0-9]*))+$/.test(dotted)) {
    throw new DerError(`"${dotted}" is not a dotted OBJECT IDENTIFIER`);
  }
  const arcs = dotted.split('.').map((a) => BigInt(a));
  const a0 = arcs[0]!;
  const a1 = arcs[1]!;
  if (a0 < 2n && a1 >= 40n) {
    throw new DerError(`"${dotted}": the second arc must be below 40 under arc ${a0}`);
  }
  const bytes: number[] = [];
  base128(bytes, a0 * 40n + a1);
  for (const arc of arcs.slice(2)) base128(bytes, arc);
  return tlv(DerTag.OID, Uint8Array.from(bytes));
}

const GENERALIZED_FROM = Date.UTC(2050, 0, 1);
const UTC_FROM = Date.UTC(1950, 0, 1);
const MAX_TIME = Date.UTC(10000, 0, 1);

/** Writes `n` as two ASCII digits at `at`. */
function put2(out: Uint8Array, at: number, n: number): void {
  out[at] = 0x30 + Math.floor(n / 10);
  out[at + 1] = 0x30 + (n % 10);
}

/**
 * A certificate validity time as RFC 5280 §4.1.2.5 wants it: UTCTime (YYMMDDHHMMSSZ) for the
 * years 1950–2049, GeneralizedTime (YYYYMMDDHHMMSSZ) otherwise; always UTC with seconds and no
 * fraction (milliseconds are truncated).
 *
 * @example
 * ```ts
 * derTime(Date.UTC(2049, 11, 31, 23, 59, 59)); // UTCTime '491231235959Z'
 * derTime(Date.UTC(2050, 0, 1)); // GeneralizedTime '20500101000000Z'
 * ```
 */
export function derTime(ms: number): Buffer {
  if (!Number.isFinite(ms) || ms >= MAX_TIME) {
    throw new DerError(`time ${ms} cannot be encoded in a certificate`);
  }
  const d = new Date(Math.floor(ms / 1000) * 1000);
  const year = d.getUTCFullYear();
  if (year < 0) throw new DerError(`time ${ms} is before year 0 and cannot be encoded`);
  // Digits written straight into the TLV: this runs twice for every leaf.
  const utc = ms >= UTC_FROM && ms < GENERALIZED_FROM;
  const digits = utc ? 13 : 15;
  const out = Buffer.allocUnsafe(2 + digits);
  out[0] = utc ? DerTag.UTC_TIME : DerTag.GENERALIZED_TIME;
  out[1] = digits;
  let o = 2;
  if (!utc) {
    put2(out, o, Math.floor(year / 100));
    o += 2;
  }
  put2(out, o, year % 100);
  put2(out, o + 2, d.getUTCMonth() + 1);
  put2(out, o + 4, d.getUTCDate());
  put2(out, o + 6, d.getUTCHours());
  put2(out, o + 8, d.getUTCMinutes());
  put2(out, o + 10, d.getUTCSeconds());
  out[o + 12] = 0x5a; // 'Z'
  return out;
}
