/**
 * Enough of a TLS ClientHello to tell meshid's mTLS from anything else on a redirected port:
 * the record says handshake/ClientHello, and the server_name extension (RFC 6066 §3) names the
 * server. A meshid or Linkerd proxy dialling a peer sends the peer's identity as SNI, so a
 * ClientHello whose SNI is this proxy's own identity is terminated here; any other TLS (an
 * unmeshed client's TLS to the app itself) passes through to the app untouched.
 */

/** What the first bytes of a connection are. */
export type ClientHelloPeek =
  | { readonly kind: 'not-tls' }
  /** A ClientHello, with its SNI host name if it has one. */
  | { readonly kind: 'tls'; readonly sni: string | undefined }
  /** A TLS record that is not complete yet; `need` is the byte count that completes it. */
  | { readonly kind: 'need-more'; readonly need: number }
  /** A handshake record that is not a well-formed ClientHello. */
  | { readonly kind: 'malformed' };

const RECORD_HANDSHAKE = 0x16;
const HANDSHAKE_CLIENT_HELLO = 0x01;
const EXT_SERVER_NAME = 0x0000;
const HOST_NAME = 0x00;
/** TLS's largest plaintext record (RFC 8446 §5.1). */
export const MAX_RECORD = 16_384 + 5;

/**
 * Reads the first TLS record of a connection, if it is one.
 *
 * @example
 * ```ts
 * const peek = peekClientHello(firstBytes);
 * if (peek.kind === 'tls' && peek.sni === ownIdentity) terminate(); else passThrough();
 * ```
 */
export function peekClientHello(bytes: Buffer): ClientHelloPeek {
  if (bytes.length === 0 || bytes[0] !== RECORD_HANDSHAKE) return { kind: 'not-tls' };
  if (bytes.length < 5) return { kind: 'need-more', need: 5 };
  if (bytes[1] !== 0x03) return { kind: 'not-tls' };
  const length = bytes.readUInt16BE(3);
  if (length === 0 || length > 16_384) return { kind: 'malformed' };
  if (bytes.length < 5 + length) return { kind: 'need-more', need: 5 + length };
  const body = bytes.subarray(5, 5 + length);
  try {
    return { kind: 'tls', sni: serverName(body) };
  } catch {
    return { kind: 'malformed' };
  }
}

/** The host name of the server_name extension of a ClientHello handshake message. */
function serverName(msg: Buffer): string | undefined {
  let at = 0;
  const need = (n: number): void => {
    if (at + n > msg.length) throw new RangeError('truncated');
  };
  const u8 = (): number => {
    need(1);
    return msg[at++] ?? 0;
  };
  const u16 = (): number => {
    need(2);
    const v = msg.readUInt16BE(at);
    at += 2;
    return v;
  };
  const skip = (n: number): void => {
    need(n);
    at += n;
  };
  if (u8() !== HANDSHAKE_CLIENT_HELLO) throw new RangeError('not a ClientHello');
  need(3);
  const helloLength = msg.readUIntBE(at, 3);
  at += 3;
  // A ClientHello longer than its record continues in the next one: the extensions may not all
  // be here, so only what is here is read.
  const end = Math.min(msg.length, at + helloLength);
  skip(2 + 32); // legacy_version, random
  skip(u8()); // legacy_session_id
  skip(u16()); // cipher_suites
  skip(u8()); // legacy_compression_methods
  if (at >= end) return undefined;
  const extensionsEnd = Math.min(end, at + 2 + msg.readUInt16BE(at));
  at += 2;
  while (at + 4 <= extensionsEnd) {
    const type = u16();
    const len = u16();
    if (type !== EXT_SERVER_NAME) {
      skip(len);
      continue;
    }
    const listEnd = at + 2 + u16();
    while (at + 3 <= listEnd) {
      const nameType = u8();
      const nameLen = u16();
      need(nameLen);
      const name = msg.subarray(at, at + nameLen);
      at += nameLen;
      if (nameType === HOST_NAME) return name.toString('latin1');
    }
    return undefined;
  }
  return undefined;
}
