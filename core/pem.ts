/**
 * PEM (RFC 7468) parsing and encoding.
 *
 * The parser is strict about content and lax about layout: whitespace (blank lines, indentation,
 * CRLF, a trailing newline or none) is accepted anywhere, because trust bundles are assembled by
 * hand, by trust-manager and by `cat`, and an extra blank line must not take a CA down — Linkerd's
 * Go parser does fail on one. Anything that is not whitespace or a PEM block (stray text, openssl
 * "Bag Attributes", RFC 1421 headers of legacy encrypted keys) is refused with the line number,
 * so that a truncated or mangled file is never half-read.
 */

/** One decoded PEM block. */
interface PemBlock {
  /** The label between `BEGIN ` and `-----`, e.g. `CERTIFICATE` or `EC PRIVATE KEY`. */
  readonly label: string;
  /** The decoded body. */
  readonly der: Uint8Array;
}

/**
 * Thrown by {@link parsePem}. It is deliberately not a MeshidError: what a bad PEM file means
 * (bad anchors, bad issuer, bad config) depends on the caller, which wraps it with the right code
 * and says which file it was.
 *
 * @example
 * ```ts
 * try {
 *   parsePem(text, 'CERTIFICATE');
 * } catch (err) {
 *   if (err instanceof PemError) throw new MeshidError('ERR_ANCHORS_INVALID', `bundle: ${err.message}`);
 *   throw err;
 * }
 * ```
 */
export class PemError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PemError';
  }
}

// RFC 7468 §3 labels: printable ASCII without '-', single spaces or hyphens between words.
const LABEL = /^[\x21-\x2c\x2e-\x7e]+(?:[ -][\x21-\x2c\x2e-\x7e]+)*$/;
const BEGIN = /^-----BEGIN (.*)-----$/;
const END = /^-----END (.*)-----$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * Parses PEM text into its blocks, in order. Text holding only whitespace yields no blocks; the
 * caller decides whether that is an error.
 *
 * @param text - the PEM text.
 * @param expectedLabel - when given, every block must carry this label.
 * @throws PemError naming the line and the problem: content outside a block, bad base64, a BEGIN
 *   without its END or with a different END label, headers, an empty block, an unexpected label.
 *
 * @example
 * ```ts
 * const certs = parsePem(bundleText, 'CERTIFICATE').map((b) => b.der);
 * ```
 */
export function parsePem(text: string, expectedLabel?: string): PemBlock[] {
  const lines = text.split(/\r\n|\r|\n/);
  const blocks: PemBlock[] = [];
  let open: { label: string; line: number; body: string[] } | undefined;

  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    const line = lines[i]!.trim();
    if (open === undefined) {
      if (line === '') continue;
      const begin = BEGIN.exec(line);
      if (begin === null) {
        if (END.test(line)) {
          throw new PemError(`line ${lineNo}: PEM END line without a BEGIN`);
        }
        throw new PemError(
          `line ${lineNo}: unexpected content outside a PEM block: "${excerpt(line)}"`,
        );
      }
      const label = begin[1]!;
      if (!LABEL.test(label)) {
        throw new PemError(`line ${lineNo}: malformed PEM label "${excerpt(label)}"`);
      }
      if (expectedLabel !== undefined && label !== expectedLabel) {
        throw new PemError(
          `line ${lineNo}: expected a "${expectedLabel}" PEM block, found "${label}"`,
        );
      }
      open = { label, line: lineNo, body: [] };
      continue;
    }

    if (line.startsWith('-----BEGIN ')) {
      throw new PemError(
        `line ${lineNo}: PEM block "${open.label}" opened at line ${open.line} has no END line before the next BEGIN`,
      );
    }
    const end = END.exec(line);
    if (end !== null) {
      const endLabel = end[1]!;
      if (endLabel !== open.label) {
        throw new PemError(
          `line ${lineNo}: PEM block "BEGIN ${open.label}" (line ${open.line}) ends with "END ${excerpt(endLabel)}"`,
        );
      }
      blocks.push({ label: open.label, der: decodeBody(open.label, open.line, open.body) });
      open = undefined;
      continue;
    }
    if (line.startsWith('-----')) {
      throw new PemError(`line ${lineNo}: malformed PEM boundary line "${excerpt(line)}"`);
    }
    if (line.includes(':')) {
      // RFC 1421 encapsulated headers (Proc-Type, DEK-Info) mark legacy encrypted keys.
      throw new PemError(
        `line ${lineNo}: PEM headers are not supported (is "${open.label}" an encrypted legacy key?)`,
      );
    }
    open.body.push(line.replace(/\s+/g, ''));
  }

  if (open !== undefined) {
    throw new PemError(`PEM block "${open.label}" opened at line ${open.line} has no END line`);
  }
  return blocks;
}

function decodeBody(label: string, beginLine: number, body: string[]): Uint8Array {
  const b64 = body.join('');
  if (b64.length === 0) {
    throw new PemError(`PEM block "${label}" at line ${beginLine} is empty`);
  }
  // Buffer.from(…, 'base64') skips characters it does not know and tolerates missing padding, so
  // a corrupted body would silently decode to different bytes; check the alphabet and length first.
  if (!BASE64.test(b64) || b64.length % 4 !== 0) {
    throw new PemError(`PEM block "${label}" at line ${beginLine} is not valid base64`);
  }
  const der = Buffer.from(b64, 'base64');
  if (der.toString('base64') !== b64) {
    // Non-canonical padding bits: the text is not what an encoder would have produced.
    throw new PemError(`PEM block "${label}" at line ${beginLine} is not valid base64`);
  }
  // Copy into an ArrayBuffer of its own: small Buffers are slices of a shared pool, and a view
  // on it would expose (and keep alive) whatever else was decoded next to it, keys included.
  return new Uint8Array(der);
}

function excerpt(s: string): string {
  const cut = s.length > 40 ? `${s.slice(0, 40)}…` : s;
  // Keep control characters out of messages and logs.
  // eslint-disable-next-line no-control-regex
  return cut.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
}

/**
 * Encodes DER bytes as one PEM block with 64-character lines and a trailing newline.
 *
 * @example
 * ```ts
 * await writeFile('ca.crt', toPem(certificateDer, 'CERTIFICATE'));
 * ```
 */
export function toPem(der: Uint8Array, label: string): string {
  if (!LABEL.test(label)) throw new PemError(`malformed PEM label "${excerpt(label)}"`);
  const b64 = Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString('base64');
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += 64) lines.push(b64.slice(i, i + 64));
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}
