/**
 * The protobuf wire format, the little of it meshid's hand-written codecs need (Certify in
 * certify-wire.ts, Destination in destination-wire.ts): a bounds-checked reader and a writer.
 * Hand-written because the messages are small and a generic runtime costs more than the rest of
 * their handling; each codec is tested against protobufjs loading its .proto.
 */
import { MeshidError } from './errors.js';

export const WIRE_VARINT = 0;
export const WIRE_I64 = 1;
export const WIRE_LEN = 2;
export const WIRE_I32 = 5;
/** 2^29 - 1, protobuf's largest field number. */
const MAX_FIELD_NUMBER = 536_870_911;

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Reads one message. Every failure is an ERR_REQUEST_INVALID naming `what` ("CertifyRequest is
 * not valid protobuf: truncated varint").
 */
export class ProtoReader {
  pos = 0;
  constructor(
    readonly buf: Uint8Array,
    readonly what: string,
  ) {}

  get done(): boolean {
    return this.pos >= this.buf.length;
  }

  malformed(detail: string): MeshidError {
    return new MeshidError('ERR_REQUEST_INVALID', `${this.what} is not valid protobuf: ${detail}`);
  }

  varint(): number {
    let result = 0;
    let shift = 0;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.buf.length) throw this.malformed('truncated varint');
      const b = this.buf[this.pos++]!;
      if (shift < 53) result += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return result;
      shift += 7;
    }
    throw this.malformed('varint longer than 10 bytes');
  }

  /**
   * A field's tag: its number and wire type. Field numbers run from 1 to 2^29 - 1 and a tag is a
   * uint32 (protobuf's encoding spec); a larger one is no field at all, and skipping it as
   * unknown would accept bytes that no protobuf parser reads as a message.
   */
  tag(): { field: number; wireType: number } {
    const tag = this.varint();
    const field = Math.floor(tag / 8);
    if (field === 0) throw this.malformed('field number 0');
    if (field > MAX_FIELD_NUMBER)
      throw this.malformed(`field number ${field} is over the largest, ${MAX_FIELD_NUMBER}`);
    return { field, wireType: tag % 8 };
  }

  bytes(): Uint8Array {
    const len = this.varint();
    if (len > this.buf.length - this.pos)
      throw this.malformed('length-delimited field overruns the message');
    const out = this.buf.subarray(this.pos, this.pos + len);
    this.pos += len;
    return out;
  }

  /** A length-delimited field as UTF-8 text (an error when it is not UTF-8). */
  string(name: string): string {
    try {
      return utf8.decode(this.bytes());
    } catch (err) {
      if (err instanceof MeshidError) throw err;
      throw this.malformed(`${name} is not valid UTF-8`);
    }
  }

  /** A little-endian fixed32, unsigned. */
  fixed32(): number {
    this.#need(4);
    const b = this.buf;
    const p = this.pos;
    this.pos += 4;
    return (b[p]! | (b[p + 1]! << 8) | (b[p + 2]! << 16)) + b[p + 3]! * 0x1000000;
  }

  /** A little-endian fixed64, unsigned. */
  fixed64(): bigint {
    const low = BigInt(this.fixed32());
    const high = BigInt(this.fixed32());
    return (high << 32n) | low;
  }

  /** Checks a field's wire type. */
  expect(field: number, wireType: number, want: number): void {
    if (wireType !== want)
      throw this.malformed(`field ${field} has wire type ${wireType}, expected ${want}`);
  }

  skip(wireType: number): void {
    switch (wireType) {
      case WIRE_VARINT:
        this.varint();
        return;
      case WIRE_I64:
        this.#need(8);
        this.pos += 8;
        return;
      case WIRE_LEN:
        this.bytes();
        return;
      case WIRE_I32:
        this.#need(4);
        this.pos += 4;
        return;
      default:
        throw this.malformed(`unsupported wire type ${wireType}`);
    }
  }

  #need(n: number): void {
    if (n > this.buf.length - this.pos)
      throw this.malformed('fixed-width field overruns the message');
  }
}

/**
 * Writes one message, field by field in the order called (protobuf's canonical order is by
 * field number: call in that order). Nested messages are written to their own writer first.
 */
export class ProtoWriter {
  readonly #parts: Uint8Array[] = [];
  #size = 0;

  get size(): number {
    return this.#size;
  }

  #push(b: Uint8Array): void {
    this.#parts.push(b);
    this.#size += b.length;
  }

  #rawVarint(n: number): void {
    const out: number[] = [];
    while (n >= 0x80) {
      out.push((n % 128) | 0x80);
      n = Math.floor(n / 128);
    }
    out.push(n);
    this.#push(Uint8Array.from(out));
  }

  #tag(field: number, wireType: number): void {
    this.#rawVarint(field * 8 + wireType);
  }

  /** An unsigned varint field; 0 is the default and is not written. */
  uint(field: number, n: number): this {
    if (n === 0) return this;
    this.#tag(field, WIRE_VARINT);
    this.#rawVarint(n);
    return this;
  }

  /** A bool field; false is the default and is not written. */
  bool(field: number, b: boolean): this {
    return this.uint(field, b ? 1 : 0);
  }

  /** A length-delimited field, written even when empty (`force`) or skipped when empty. */
  bytes(field: number, b: Uint8Array, force = false): this {
    if (b.length === 0 && !force) return this;
    this.#tag(field, WIRE_LEN);
    this.#rawVarint(b.length);
    this.#push(b);
    return this;
  }

  /** A string field; '' is the default and is not written. */
  string(field: number, s: string): this {
    return this.bytes(field, Buffer.from(s, 'utf8'));
  }

  /** An embedded message, written even when empty (its presence is the information). */
  message(field: number, m: ProtoWriter): this {
    return this.bytes(field, m.finish(), true);
  }

  /** A fixed32 field (always written: it sits in a oneof where presence counts). */
  fixed32(field: number, n: number): this {
    this.#tag(field, WIRE_I32);
    const b = Buffer.allocUnsafe(4);
    b.writeUInt32LE(n >>> 0, 0);
    this.#push(b);
    return this;
  }

  /** A fixed64 field. */
  fixed64(field: number, n: bigint): this {
    this.#tag(field, WIRE_I64);
    const b = Buffer.allocUnsafe(8);
    b.writeBigUInt64LE(n, 0);
    this.#push(b);
    return this;
  }

  /** A `map<string, string>` field: one entry message {key = 1, value = 2} per pair, sorted. */
  stringMap(field: number, map: Readonly<Record<string, string>>): this {
    for (const key of Object.keys(map).sort()) {
      this.message(field, new ProtoWriter().string(1, key).string(2, map[key]!));
    }
    return this;
  }

  finish(): Buffer {
    return Buffer.concat(this.#parts, this.#size);
  }
}
