/**
 * Protobuf encoding of the two Certify messages (`identity-ca/proto/identity.proto`), written by
 * hand on core/protobuf.ts's reader. It lives in core because both ends use it: the CA decodes requests and encodes responses,
 * proxies and tools do the reverse. Written by hand because they are three fields each, and a generic runtime would cost more than the rest of the
 * message handling. The tests check this codec against protobufjs loading identity.proto.
 */
import { ProtoReader, WIRE_LEN, WIRE_VARINT } from './protobuf.js';

/** `io.linkerd.proxy.identity.CertifyRequest`. */
export interface CertifyRequest {
  readonly identity: string;
  readonly token: Uint8Array;
  readonly certificateSigningRequest: Uint8Array;
}

/** `io.linkerd.proxy.identity.CertifyResponse`. */
export interface CertifyResponse {
  readonly leafCertificate: Uint8Array;
  readonly intermediateCertificates: readonly Uint8Array[];
  /** `valid_until` as milliseconds since the epoch (a google.protobuf.Timestamp on the wire). */
  readonly validUntil: number;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Decodes a CertifyRequest. Unknown fields are skipped, as protobuf requires; a field of the
 * wrong wire type or a string that is not UTF-8 is an error.
 *
 * @example
 * ```ts
 * const req = decodeCertifyRequest(encodeCertifyRequest({ identity, token, certificateSigningRequest }));
 * ```
 */
export function decodeCertifyRequest(buf: Uint8Array): CertifyRequest {
  const r = new ProtoReader(buf, 'CertifyRequest');
  let identity: Uint8Array = new Uint8Array(0);
  let token: Uint8Array = new Uint8Array(0);
  let csr: Uint8Array = new Uint8Array(0);
  while (!r.done) {
    const { field, wireType } = r.tag();
    if (field >= 1 && field <= 3) {
      if (wireType !== WIRE_LEN)
        throw r.malformed(`field ${field} has wire type ${wireType}, not length-delimited`);
      const value = r.bytes();
      if (field === 1) identity = value;
      else if (field === 2) token = value;
      else csr = value;
    } else {
      r.skip(wireType);
    }
  }
  let identityText: string;
  try {
    identityText = utf8.decode(identity);
  } catch {
    throw r.malformed('identity is not valid UTF-8');
  }
  return { identity: identityText, token, certificateSigningRequest: csr };
}

// ---- encoding -----------------------------------------------------------------------------------

function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

function writeVarint(buf: Uint8Array, pos: number, n: number): number {
  while (n >= 0x80) {
    buf[pos++] = (n % 128) | 0x80;
    n = Math.floor(n / 128);
  }
  buf[pos++] = n;
  return pos;
}

function lenFieldSize(field: number, len: number): number {
  return varintSize(field * 8 + WIRE_LEN) + varintSize(len) + len;
}

function writeLenField(buf: Uint8Array, pos: number, field: number, value: Uint8Array): number {
  pos = writeVarint(buf, pos, field * 8 + WIRE_LEN);
  pos = writeVarint(buf, pos, value.length);
  buf.set(value, pos);
  return pos + value.length;
}

function timestamp(ms: number): Uint8Array {
  const seconds = Math.floor(ms / 1000);
  const nanos = (ms - seconds * 1000) * 1_000_000;
  const out = new Uint8Array(1 + varintSize(seconds) + (nanos > 0 ? 1 + varintSize(nanos) : 0));
  let pos = writeVarint(out, 0, 1 * 8 + WIRE_VARINT);
  pos = writeVarint(out, pos, seconds);
  if (nanos > 0) {
    pos = writeVarint(out, pos, 2 * 8 + WIRE_VARINT);
    writeVarint(out, pos, nanos);
  }
  return out;
}

/**
 * Encodes a CertifyResponse.
 *
 * @example
 * ```ts
 * const bytes = encodeCertifyResponse({ leafCertificate, intermediateCertificates, validUntil });
 * ```
 */
export function encodeCertifyResponse(res: CertifyResponse): Buffer {
  const ts = timestamp(res.validUntil);
  let size = lenFieldSize(1, res.leafCertificate.length) + lenFieldSize(3, ts.length);
  for (const c of res.intermediateCertificates) size += lenFieldSize(2, c.length);
  const out = Buffer.allocUnsafe(size);
  let pos = writeLenField(out, 0, 1, res.leafCertificate);
  for (const c of res.intermediateCertificates) pos = writeLenField(out, pos, 2, c);
  writeLenField(out, pos, 3, ts);
  return out;
}

/**
 * Encodes a CertifyRequest (the client side: the proxy, the CLI and tests).
 *
 * @example
 * ```ts
 * const bytes = encodeCertifyRequest({ identity, token, certificateSigningRequest: csrDer });
 * ```
 */
export function encodeCertifyRequest(req: CertifyRequest): Buffer {
  const identity = Buffer.from(req.identity, 'utf8');
  const out = Buffer.allocUnsafe(
    lenFieldSize(1, identity.length) +
      lenFieldSize(2, req.token.length) +
      lenFieldSize(3, req.certificateSigningRequest.length),
  );
  let pos = writeLenField(out, 0, 1, identity);
  pos = writeLenField(out, pos, 2, req.token);
  writeLenField(out, pos, 3, req.certificateSigningRequest);
  return out;
}

/**
 * Decodes a CertifyResponse (the client side).
 *
 * @example
 * ```ts
 * const { leafCertificate, validUntil } = decodeCertifyResponse(bytes);
 * ```
 */
export function decodeCertifyResponse(buf: Uint8Array): CertifyResponse {
  const r = new ProtoReader(buf, 'CertifyResponse');
  let leaf: Uint8Array = new Uint8Array(0);
  const intermediates: Uint8Array[] = [];
  let validUntil = 0;
  while (!r.done) {
    const { field, wireType } = r.tag();
    if ((field === 1 || field === 2 || field === 3) && wireType === WIRE_LEN) {
      const value = r.bytes();
      if (field === 1) leaf = value;
      else if (field === 2) intermediates.push(value);
      else validUntil = decodeTimestamp(value);
    } else {
      r.skip(wireType);
    }
  }
  return { leafCertificate: leaf, intermediateCertificates: intermediates, validUntil };
}

function decodeTimestamp(buf: Uint8Array): number {
  const r = new ProtoReader(buf, 'Timestamp');
  let seconds = 0;
  let nanos = 0;
  while (!r.done) {
    const { field, wireType } = r.tag();
    if (field === 1 && wireType === WIRE_VARINT) seconds = r.varint();
    else if (field === 2 && wireType === WIRE_VARINT) nanos = r.varint();
    else r.skip(wireType);
  }
  return seconds * 1000 + Math.floor(nanos / 1_000_000);
}

/** The method path on the wire. */
export const CERTIFY_PATH = '/io.linkerd.proxy.identity.Identity/Certify';

/**
 * The trailer of a RESOURCE_EXHAUSTED answer that says how many milliseconds to wait before
 * trying again (the message says it too: "...; retry after N ms").
 */
export const RETRY_AFTER_METADATA = 'retry-after-ms';

/**
 * The retry hint of an answer's trailers (or trailers-only headers): a whole number of
 * milliseconds, at most a minute; undefined when absent or not a plain number.
 *
 * @example
 * ```ts
 * retryAfterMsOf({ 'retry-after-ms': '250' }); // 250
 * ```
 */
export function retryAfterMsOf(
  metadata: Readonly<Record<string, string | string[] | undefined>>,
): number | undefined {
  const v = metadata[RETRY_AFTER_METADATA];
  if (typeof v !== 'string' || !/^\d{1,9}$/.test(v)) return undefined;
  return Math.min(60_000, Number(v));
}

/**
 * A gRPC length-prefixed message: flag byte 0 (not compressed), 4-byte big-endian length, bytes.
 *
 * @example
 * ```ts
 * stream.end(frameGrpcMessage(encodeCertifyRequest(req)));
 * ```
 */
export function frameGrpcMessage(message: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(5 + message.length);
  frame[0] = 0;
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, 5);
  return frame;
}

/**
 * The one message of a unary call's body, without its prefix. Throws an Error saying what is
 * wrong (`what` names the body: "request", "response") when the body is not exactly one
 * uncompressed message.
 *
 * @example
 * ```ts
 * const message = unframeGrpcMessage(Buffer.concat(chunks), 'request');
 * ```
 */
export function unframeGrpcMessage(framed: Buffer, what: string): Buffer {
  if (framed.length < 5) throw new Error(`${what} has no message`);
  if (framed[0] !== 0) {
    throw new Error(`${what} message is compressed, but no compression was negotiated`);
  }
  if (framed.length !== 5 + framed.readUInt32BE(1)) {
    throw new Error(`${what} must carry exactly one message, whole`);
  }
  return framed.subarray(5);
}

/**
 * `grpc-message` as gRPC percent-encodes it: bytes outside printable ASCII, and '%' itself.
 *
 * @example
 * ```ts
 * encodeGrpcMessage('token refusé'); // 'token refus%C3%A9'
 * ```
 */
export function encodeGrpcMessage(details: string): string {
  let out = '';
  for (const byte of Buffer.from(details, 'utf8')) {
    out +=
      byte >= 0x20 && byte <= 0x7e && byte !== 0x25
        ? String.fromCharCode(byte)
        : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/**
 * The text of a received `grpc-message` (the raw value when it is not valid percent-encoding).
 *
 * @example
 * ```ts
 * decodeGrpcMessage('token refus%C3%A9'); // 'token refusé'
 * ```
 */
export function decodeGrpcMessage(value: string | string[] | undefined): string {
  const s = Array.isArray(value) ? value.join(',') : (value ?? '');
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
