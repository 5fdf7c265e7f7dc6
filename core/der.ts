/**
 * A strict, minimal DER reader for the per-request X.509 hot path (its writer: der-write.ts).
 *
 * The reader accepts only what DER allows for the structures meshid reads (PKCS#10 requests,
 * certificates): single-byte tags, definite lengths in their shortest form, and no bytes left
 * over where a whole structure is expected. It never copies: every element is a view into the
 * input, so a CSR is parsed without allocating its contents again.
 *
 * Errors are {@link DerError}, a plain class with no wire meaning: the caller knows what it was
 * reading and maps the failure to its own error code (core/csr.ts maps to ERR_CSR_MALFORMED).
 */

/**
 * A DER encoding or decoding failure; `message` says what is wrong and where. It has no wire
 * meaning: callers map it to their own MeshidError code.
 *
 * @example
 * ```ts
 * try { decodeDer(bytes); } catch (err) { if (err instanceof DerError) throw new MeshidError('ERR_CSR_MALFORMED', err.message); }
 * ```
 */
export class DerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DerError';
  }
}

/**
 * The single-byte tags meshid reads and writes (class and constructed bit included).
 *
 * @example
 * ```ts
 * tlv(DerTag.SEQUENCE, tlv(DerTag.INTEGER, Uint8Array.of(0)));
 * ```
 */
export const DerTag = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  NUMERIC_STRING: 0x12,
  PRINTABLE_STRING: 0x13,
  TELETEX_STRING: 0x14,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  VISIBLE_STRING: 0x1a,
  UNIVERSAL_STRING: 0x1c,
  BMP_STRING: 0x1e,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/**
 * The tag byte of a context-specific tag `[n]` (n ≤ 30).
 *
 * @example
 * ```ts
 * contextTag(0, true); // 0xa0, as in a certificate's `[0] EXPLICIT Version`
 * contextTag(2); // 0x82, a dNSName in GeneralNames
 * ```
 */
export function contextTag(n: number, constructed = false): number {
  if (!Number.isInteger(n) || n < 0 || n > 30) {
    throw new DerError(`context tag [${n}] needs a multi-byte tag, which is not supported`);
  }
  return 0x80 | (constructed ? 0x20 : 0) | n;
}

/** One decoded TLV: its tag, where it sits in the input, and views of its bytes. */
export interface DerElement {
  /** The tag byte (class, constructed bit and number). */
  readonly tag: number;
  /** The whole TLV: tag, length and contents. A view into the input, not a copy. */
  readonly raw: Uint8Array;
  /** The contents octets. A view into the input, not a copy. */
  readonly contents: Uint8Array;
  /** Offset of the tag byte in the buffer the element was read from. */
  readonly offset: number;
  /** Offset just past the element's last byte in that buffer. */
  readonly end: number;
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

function tagName(tag: number): string {
  return `0x${HEX[tag]!}`;
}

/**
 * Reads one TLV starting at `offset` of `buf`, which may be followed by more data.
 * Rejects high-tag-number form, indefinite lengths, non-minimal lengths and lengths that run
 * past the end of `buf`. `what` names the thing being read, for the error message.
 */
export function readElement(buf: Uint8Array, offset: number, what = 'element'): DerElement {
  const avail = buf.length - offset;
  if (avail < 2) {
    throw new DerError(
      `${what} is truncated: ${avail} byte(s) left where a tag and length are needed`,
    );
  }
  const tag = buf[offset]!;
  if ((tag & 0x1f) === 0x1f) {
    // High-tag-number form (tag numbers ≥ 31): nothing meshid reads uses it, so it can only be
    // garbage or an attempt at parser confusion.
    throw new DerError(`${what} uses a multi-byte tag (${tagName(tag)}), which is not supported`);
  }
  const first = buf[offset + 1]!;
  let length: number;
  let header: number;
  if (first < 0x80) {
    length = first;
    header = 2;
  } else if (first === 0x80) {
    throw new DerError(`${what} uses an indefinite length, which DER forbids`);
  } else {
    const n = first & 0x7f;
    // Four length bytes describe up to 4 GiB, far beyond anything meshid accepts; more bytes
    // (or the reserved 0xff) cannot be legitimate.
    if (n > 4) {
      throw new DerError(`${what} has a ${n}-byte length field, which is not supported`);
    }
    if (avail < 2 + n) {
      throw new DerError(`${what} is truncated inside its length field`);
    }
    length = 0;
    for (let i = 0; i < n; i++) length = length * 256 + buf[offset + 2 + i]!;
    // DER: the long form only for lengths ≥ 128, and in as few bytes as possible.
    if (length < 0x80 || buf[offset + 2] === 0) {
      throw new DerError(`${what} has a non-minimal length encoding, which DER forbids`);
    }
    header = 2 + n;
  }
  if (length > avail - header) {
    throw new DerError(
      `${what} is truncated: its length says ${length} byte(s) but only ${avail - header} remain`,
    );
  }
  const start = offset + header;
  return new Element(buf, tag, offset, start, start + length);
}

/**
 * A DerElement whose views are made on first use: walking a structure needs the contents of most
 * elements but the whole TLV of few, and each view is an allocation.
 */
class Element implements DerElement {
  #raw: Uint8Array | undefined;
  #contents: Uint8Array | undefined;
  readonly #buf: Uint8Array;
  readonly #start: number;

  constructor(
    buf: Uint8Array,
    readonly tag: number,
    readonly offset: number,
    start: number,
    readonly end: number,
  ) {
    this.#buf = buf;
    this.#start = start;
  }

  get raw(): Uint8Array {
    return (this.#raw ??= this.#buf.subarray(this.offset, this.end));
  }

  get contents(): Uint8Array {
    return (this.#contents ??= this.#buf.subarray(this.#start, this.end));
  }
}

/**
 * A plain Uint8Array view of the same bytes. Buffer's own subarray is markedly slower than the
 * typed-array builtin (it showed as a fifth of CSR parsing time in a profile), and the reader
 * makes many views, so inputs are viewed this way first.
 *
 * @example
 * ```ts
 * const el = decodeDer(plainView(requestBuffer), DerTag.SEQUENCE);
 * ```
 */
export function plainView(bytes: Uint8Array): Uint8Array {
  return Object.getPrototypeOf(bytes) === Uint8Array.prototype
    ? bytes
    : new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * Decodes `buf` as exactly one TLV with the expected tag (when given); trailing bytes are an
 * error.
 *
 * @example
 * ```ts
 * const seq = decodeDer(certDer, DerTag.SEQUENCE, 'certificate');
 * ```
 */
export function decodeDer(buf: Uint8Array, tag?: number, what = 'element'): DerElement {
  const el = readElement(buf, 0, what);
  if (tag !== undefined && el.tag !== tag) {
    throw new DerError(`${what} has tag ${tagName(el.tag)}, expected ${tagName(tag)}`);
  }
  if (el.end !== buf.length) {
    throw new DerError(`${what} has ${buf.length - el.end} trailing byte(s)`);
  }
  return el;
}

/**
 * True when `der` is exactly one DER SEQUENCE with nothing after it (node's X509Certificate and
 * @peculiar/x509 ignore trailing bytes; a truncated or concatenated body must not pass).
 *
 * @example
 * ```ts
 * if (!isOneSequence(block.der)) throw new Error('trailing bytes after the certificate');
 * ```
 */
export function isOneSequence(der: Uint8Array): boolean {
  try {
    decodeDer(der, DerTag.SEQUENCE);
    return true;
  } catch {
    return false;
  }
}

/**
 * A cursor over the contents of a constructed element (a SEQUENCE, SET or explicit tag).
 *
 * @example
 * ```ts
 * const r = new DerReader(seq.contents, 'AlgorithmIdentifier');
 * const oid = oidToString(r.next(DerTag.OID, 'algorithm').contents);
 * const params = r.optional(DerTag.NULL);
 * r.finish();
 * ```
 */
export class DerReader {
  #pos = 0;
  readonly #buf: Uint8Array;
  readonly #what: string;

  constructor(contents: Uint8Array, what = 'structure') {
    this.#buf = contents;
    this.#what = what;
  }

  /** True while there are bytes left. */
  get more(): boolean {
    return this.#pos < this.#buf.length;
  }

  /** The tag of the next element, or undefined at the end. Does not validate the element. */
  peekTag(): number | undefined {
    return this.#pos < this.#buf.length ? this.#buf[this.#pos] : undefined;
  }

  /** Reads the next element; when `tag` is given it must match. */
  next(tag?: number, what = 'element'): DerElement {
    const name = `${this.#what} ${what}`;
    if (!this.more) throw new DerError(`${name} is missing`);
    const el = readElement(this.#buf, this.#pos, name);
    if (tag !== undefined && el.tag !== tag) {
      throw new DerError(`${name} has tag ${tagName(el.tag)}, expected ${tagName(tag)}`);
    }
    this.#pos = el.end;
    return el;
  }

  /** Reads the next element only if it has the given tag. */
  optional(tag: number, what = 'element'): DerElement | undefined {
    return this.peekTag() === tag ? this.next(tag, what) : undefined;
  }

  /** Throws unless every byte has been read. */
  finish(): void {
    if (this.more) {
      throw new DerError(
        `${this.#what} has ${this.#buf.length - this.#pos} unexpected trailing byte(s)`,
      );
    }
  }
}

/**
 * All elements in the contents of a constructed element, in order (for SEQUENCE OF / SET OF).
 */
export function readAll(contents: Uint8Array, what = 'structure'): DerElement[] {
  const out: DerElement[] = [];
  const r = new DerReader(contents, what);
  while (r.more) out.push(r.next(undefined, `item ${out.length + 1}`));
  return out;
}

/**
 * Checks that INTEGER contents are DER (non-empty, minimal two's complement) and returns them.
 * Negative values are allowed here; callers that need non-negative numbers check the sign.
 */
export function integerContents(el: DerElement, what = 'INTEGER'): Uint8Array {
  const c = el.contents;
  if (el.tag !== DerTag.INTEGER) throw new DerError(`${what} is not an INTEGER`);
  if (c.length === 0) throw new DerError(`${what} is empty`);
  if (c.length > 1) {
    const a = c[0]!;
    const b = c[1]!;
    if ((a === 0x00 && b < 0x80) || (a === 0xff && b >= 0x80)) {
      throw new DerError(`${what} is not minimally encoded`);
    }
  }
  return c;
}

/**
 * Reads a small non-negative INTEGER (up to 2^31 - 1) as a number, e.g. a version field.
 */
export function readSmallInteger(el: DerElement, what = 'INTEGER'): number {
  const c = integerContents(el, what);
  if (c[0]! >= 0x80) throw new DerError(`${what} is negative`);
  if (c.length > 4) throw new DerError(`${what} is too large`);
  let n = 0;
  for (const b of c) n = n * 256 + b;
  return n;
}

/**
 * Reads a BOOLEAN; DER allows only 0x00 and 0xff.
 */
export function readBoolean(el: DerElement, what = 'BOOLEAN'): boolean {
  if (el.tag !== DerTag.BOOLEAN) throw new DerError(`${what} is not a BOOLEAN`);
  const c = el.contents;
  if (c.length !== 1 || (c[0] !== 0x00 && c[0] !== 0xff)) {
    throw new DerError(`${what} is not a DER BOOLEAN (one byte, 0x00 or 0xff)`);
  }
  return c[0] === 0xff;
}

/** A decoded BIT STRING: the bytes and how many bits of the last byte are padding. */
interface BitString {
  readonly unusedBits: number;
  readonly bytes: Uint8Array;
}

/**
 * Reads a BIT STRING, enforcing DER: at most 7 unused bits, none when empty, and padding bits zero.
 */
export function readBitString(el: DerElement, what = 'BIT STRING'): BitString {
  if (el.tag !== DerTag.BIT_STRING) throw new DerError(`${what} is not a BIT STRING`);
  const c = el.contents;
  if (c.length === 0) throw new DerError(`${what} has no unused-bits byte`);
  const unusedBits = c[0]!;
  if (unusedBits > 7) throw new DerError(`${what} claims ${unusedBits} unused bits (at most 7)`);
  if (c.length === 1 && unusedBits !== 0) {
    throw new DerError(`${what} is empty but claims ${unusedBits} unused bits`);
  }
  if (unusedBits !== 0 && (c[c.length - 1]! & ((1 << unusedBits) - 1)) !== 0) {
    throw new DerError(`${what} has non-zero padding bits, which DER forbids`);
  }
  return { unusedBits, bytes: c.subarray(1) };
}

/**
 * Reads a BIT STRING that must be a whole number of bytes (keys and signatures).
 */
export function readOctetAlignedBitString(el: DerElement, what = 'BIT STRING'): Uint8Array {
  const bs = readBitString(el, what);
  if (bs.unusedBits !== 0) throw new DerError(`${what} is not a whole number of bytes`);
  return bs.bytes;
}

/**
 * Reads an OCTET STRING's contents.
 *
 * @example
 * ```ts
 * const extnValue = readOctetString(r.next(DerTag.OCTET_STRING), 'extnValue');
 * ```
 */
export function readOctetString(el: DerElement, what = 'OCTET STRING'): Uint8Array {
  if (el.tag !== DerTag.OCTET_STRING) throw new DerError(`${what} is not an OCTET STRING`);
  return el.contents;
}

/**
 * The dotted form of OBJECT IDENTIFIER contents. Rejects empty contents, non-minimal
 * sub-identifiers (a leading 0x80 byte) and a final sub-identifier cut short. Sub-identifiers
 * beyond 2^53 (UUID arcs under 2.25) are decoded exactly with BigInt.
 */
export function oidToString(contents: Uint8Array, what = 'OBJECT IDENTIFIER'): string {
  const n = contents.length;
  if (n === 0) throw new DerError(`${what} is empty`);
  if ((contents[n - 1]! & 0x80) !== 0) throw new DerError(`${what} ends inside a sub-identifier`);
  // Built by string concatenation with plain numbers: this runs for every OID of every request.
  let out = '';
  let value = 0;
  let big: bigint | undefined;
  let startOfArc = true;
  for (let i = 0; i < n; i++) {
    const b = contents[i]!;
    if (startOfArc && b === 0x80) throw new DerError(`${what} has a non-minimal sub-identifier`);
    startOfArc = false;
    if (big !== undefined) {
      big = (big << 7n) | BigInt(b & 0x7f);
    } else if (value >= 2 ** 45) {
      // One more 7-bit step could pass 2^53; continue exactly.
      big = (BigInt(value) << 7n) | BigInt(b & 0x7f);
    } else {
      value = value * 128 + (b & 0x7f);
    }
    if ((b & 0x80) === 0) {
      if (out === '') {
        // The first sub-identifier packs the first two arcs as 40 * a + b (X.690 §8.19.4).
        if (big !== undefined) out = `2.${big - 80n}`;
        else if (value < 40) out = `0.${value}`;
        else if (value < 80) out = `1.${value - 40}`;
        else out = `2.${value - 80}`;
      } else {
        out += `.${big ?? value}`;
      }
      value = 0;
      big = undefined;
      startOfArc = true;
    }
  }
  return out;
}

/**
 * Reads an OBJECT IDENTIFIER element as a dotted string.
 *
 * @example
 * ```ts
 * readOid(r.next(DerTag.OID, 'algorithm')); // '1.2.840.10045.2.1'
 * ```
 */
export function readOid(el: DerElement, what = 'OBJECT IDENTIFIER'): string {
  if (el.tag !== DerTag.OID) throw new DerError(`${what} is not an OBJECT IDENTIFIER`);
  return oidToString(el.contents, what);
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const utf16be = new TextDecoder('utf-16be', { fatal: true, ignoreBOM: true });

function ascii(c: Uint8Array, what: string, ok: (b: number) => boolean, kind: string): string {
  let s = '';
  for (const b of c) {
    if (!ok(b)) throw new DerError(`${what} has a byte (0x${HEX[b]!}) not allowed in a ${kind}`);
    s += String.fromCharCode(b);
  }
  return s;
}

const isIa5 = (b: number): boolean => b < 0x80;
const isVisible = (b: number): boolean => b >= 0x20 && b < 0x7f;
const isNumeric = (b: number): boolean => b === 0x20 || (b >= 0x30 && b <= 0x39);
// X.680 PrintableString: A–Z a–z 0–9 space ' ( ) + , - . / : = ?
const PRINTABLE = new Uint8Array(128);
for (const ch of "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?") {
  PRINTABLE[ch.charCodeAt(0)] = 1;
}
const isPrintable = (b: number): boolean => b < 0x80 && PRINTABLE[b] === 1;

/**
 * Decodes any of the ASN.1 character string types found in X.509 names and GeneralNames,
 * checking each type's character set (UTF8String must be valid UTF-8, IA5String ASCII, ...).
 * TeletexString is read as Latin-1, as most X.509 stacks do in practice.
 */
export function readString(el: DerElement, what = 'string'): string {
  const c = el.contents;
  switch (el.tag) {
    case DerTag.UTF8_STRING:
      try {
        return utf8.decode(c);
      } catch {
        throw new DerError(`${what} is not valid UTF-8`);
      }
    case DerTag.PRINTABLE_STRING:
      return ascii(c, what, isPrintable, 'PrintableString');
    case DerTag.IA5_STRING:
      return ascii(c, what, isIa5, 'IA5String');
    case DerTag.VISIBLE_STRING:
      return ascii(c, what, isVisible, 'VisibleString');
    case DerTag.NUMERIC_STRING:
      return ascii(c, what, isNumeric, 'NumericString');
    case DerTag.TELETEX_STRING:
      return ascii(c, what, () => true, 'TeletexString');
    case DerTag.BMP_STRING:
      if (c.length % 2 !== 0) throw new DerError(`${what} (BMPString) has an odd length`);
      try {
        return utf16be.decode(c);
      } catch {
        throw new DerError(`${what} is not valid UCS-2`);
      }
    case DerTag.UNIVERSAL_STRING: {
      if (c.length % 4 !== 0)
        throw new DerError(`${what} (UniversalString) length is not a multiple of 4`);
      let s = '';
      for (let i = 0; i < c.length; i += 4) {
        const cp = ((c[i]! << 24) | (c[i + 1]! << 16) | (c[i + 2]! << 8) | c[i + 3]!) >>> 0;
        if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
          throw new DerError(`${what} (UniversalString) has an invalid code point`);
        }
        s += String.fromCodePoint(cp);
      }
      return s;
    }
    default:
      throw new DerError(`${what} has tag ${tagName(el.tag)}, which is not a character string`);
  }
}

/**
 * Decodes IA5String contents (used by the implicitly tagged dNSName, rfc822Name and URI
 * GeneralNames, whose tag is the context tag, not 0x16).
 */
export function ia5ToString(contents: Uint8Array, what = 'IA5String'): string {
  return ascii(contents, what, isIa5, 'IA5String');
}
