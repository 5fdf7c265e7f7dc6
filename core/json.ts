/**
 * JSON from peers, with its nesting bounded. V8's JSON.parse costs time that grows with the depth
 * of a document even at a fixed size (a 5 MB body of 2.5 million nested arrays holds the event
 * loop for seconds), so every JSON a listener reads is measured first: a byte scan that counts
 * open arrays and objects outside strings, cheap enough to run on every chunk as it arrives, and
 * refused past {@link DEFAULTS.maxJsonDepth} before the parser ever sees it.
 */
import { DEFAULTS } from './defaults.js';
import { MeshidError } from './errors.js';

const OPEN_OBJECT = 0x7b; // {
const OPEN_ARRAY = 0x5b; // [
const CLOSE_OBJECT = 0x7d; // }
const CLOSE_ARRAY = 0x5d; // ]
const QUOTE = 0x22; // "
const BACKSLASH = 0x5c; // \

/** The refusal of a document that nests deeper than the bound (ERR_JSON_TOO_DEEP, HTTP 400). */
export class JsonTooDeep extends MeshidError {
  constructor(what: string, maxDepth: number) {
    super(
      'ERR_JSON_TOO_DEEP',
      `${what} nests deeper than ${maxDepth} levels of JSON arrays and objects; meshid refuses such documents before parsing them (Kubernetes objects are about 20 deep)`,
    );
  }
}

/**
 * Counts the nesting of a JSON text fed in pieces (bytes as they arrive, or a whole string),
 * without parsing it. Structural characters are ASCII and never part of a UTF-8 multi-byte
 * sequence, so bytes and UTF-16 code units are scanned alike; a piece may end anywhere, inside a
 * string or an escape. It only measures: whether the text is valid JSON is JSON.parse's verdict.
 *
 * @example
 * ```ts
 * const meter = new JsonDepthMeter(DEFAULTS.maxJsonDepth);
 * req.on('data', (chunk: Buffer) => {
 *   if (!meter.write(chunk)) refuse(new JsonTooDeep('the request body', meter.maxDepth));
 * });
 * ```
 */
export class JsonDepthMeter {
  readonly maxDepth: number;
  #depth = 0;
  #deepest = 0;
  #inString = false;
  #escaped = false;

  constructor(maxDepth: number = DEFAULTS.maxJsonDepth) {
    this.maxDepth = maxDepth;
  }

  /** The deepest nesting seen so far. */
  get deepest(): number {
    return this.#deepest;
  }

  /** Scans the next piece; false as soon as the nesting passes the bound (and from then on). */
  write(piece: Uint8Array | string): boolean {
    if (this.#deepest > this.maxDepth) return false;
    const text = typeof piece === 'string';
    const n = piece.length;
    let depth = this.#depth;
    let inString = this.#inString;
    let escaped = this.#escaped;
    for (let i = 0; i < n; i++) {
      const c = text ? piece.charCodeAt(i) : piece[i]!;
      if (inString) {
        if (escaped) escaped = false;
        else if (c === BACKSLASH) escaped = true;
        else if (c === QUOTE) inString = false;
      } else if (c === QUOTE) inString = true;
      else if (c === OPEN_OBJECT || c === OPEN_ARRAY) {
        if (++depth > this.maxDepth) {
          this.#deepest = depth;
          return false;
        }
        if (depth > this.#deepest) this.#deepest = depth;
      } else if (c === CLOSE_OBJECT || c === CLOSE_ARRAY) depth--;
    }
    this.#depth = depth;
    this.#inString = inString;
    this.#escaped = escaped;
    return true;
  }
}

/**
 * JSON.parse of a text from a peer, refused with {@link JsonTooDeep} (naming `what`) when it nests
 * deeper than `maxDepth`; JSON.parse's own SyntaxError otherwise. Every JSON a listener reads goes
 * through here (webhook reviews, the JWT a Certify call carries).
 *
 * @example
 * ```ts
 * const doc = parseJson(body, 'the request body'); // throws JsonTooDeep past 64 levels
 * ```
 */
export function parseJson(
  text: string,
  what: string,
  maxDepth: number = DEFAULTS.maxJsonDepth,
): unknown {
  if (!new JsonDepthMeter(maxDepth).write(text)) throw new JsonTooDeep(what, maxDepth);
  return JSON.parse(text) as unknown;
}
