/**
 * The two head translations of the HTTP/2 carriage to an HTTP/1.1 app (h2-to-http1.ts): an
 * HTTP/2 request's header list to the HTTP/1.1 request head written to the app, and an HTTP/1.1
 * response (or trailer) head's lines to HTTP/2 fields. Hop-by-hop fields, those the Connection
 * header lists and every `l5d-client-id` are dropped; the verified identity is added.
 */
import type {
  IncomingHttpHeaders as Http2IncomingHeaders,
  OutgoingHttpHeaders as Http2OutgoingHeaders,
} from 'node:http2';
import { equalsLower, valueTokens } from './http1-parse.js';
import type { HeaderLine } from './http1-parse.js';
import { connectionOptions } from './hop-by-hop.js';
import type { TranslateContext } from './translate.js';
import { TRANSLATION_HOP_BY_HOP } from './translate.js';

/** A CR, LF or NUL in a field would end the line early: such a request is never written. */
export const UNSAFE_FIELD = /[\r\n\0]/;

/**
 * Field names a message carries at most once (node's HTTP/2 refuses a second one): a duplicate
 * from the app is dropped, the first kept, as node's HTTP/1 client did.
 */
const SINGLE_VALUE = new Set([
  'age',
  'authorization',
  'content-encoding',
  'content-language',
  'content-length',
  'content-location',
  'content-md5',
  'content-range',
  'content-type',
  'date',
  'etag',
  'expires',
  'from',
  'last-modified',
  'location',
  'max-forwards',
  'retry-after',
  'user-agent',
]);

/**
 * HTTP/2 fields from an HTTP/1.1 head's lines: names in lower case, hop-by-hop fields and those
 * the Connection header lists dropped, repeated fields as lists (a repeated single-value field
 * keeps its first value). `status` 0 for trailers.
 */
export function fieldsOf(
  head: Buffer,
  lines: readonly HeaderLine[],
  status: number,
): Http2OutgoingHeaders {
  const out: Http2OutgoingHeaders = {};
  if (status !== 0) out[':status'] = status;
  let listed: Set<string> | undefined;
  for (const h of lines) {
    if (equalsLower(head, h.start, h.colon, 'connection'))
      for (const n of valueTokens(head, h)) (listed ??= new Set()).add(n);
  }
  for (const h of lines) {
    const name = head.toString('latin1', h.start, h.colon).toLowerCase();
    if (TRANSLATION_HOP_BY_HOP.has(name) || listed?.has(name) === true) continue;
    const value = head.toString('latin1', h.valueStart, h.valueEnd);
    const prev = out[name];
    if (prev === undefined) out[name] = value;
    else if (SINGLE_VALUE.has(name)) continue;
    else if (Array.isArray(prev)) prev.push(value);
    else out[name] = [prev as string, value];
  }
  return out;
}

/** The request head for the app, or why none can be written. */
export function requestHead(
  headers: Http2IncomingHeaders,
  ctx: TranslateContext,
  method: string,
  authority: string,
  ended: boolean,
): { head: string; chunked: boolean } | undefined {
  const path = headers[':path'] ?? '/';
  if (UNSAFE_FIELD.test(path) || UNSAFE_FIELD.test(authority) || UNSAFE_FIELD.test(method))
    return undefined;
  let head = `${method} ${path} HTTP/1.1\r\nhost: ${authority}\r\n`;
  const listed =
    headers['connection'] === undefined ? undefined : connectionOptions(headers['connection']);
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || name.charCodeAt(0) === 0x3a) continue;
    if (
      TRANSLATION_HOP_BY_HOP.has(name) ||
      name === ctx.clientIdHeader ||
      listed?.has(name) === true
    )
      continue;
    if (typeof value === 'string') {
      if (UNSAFE_FIELD.test(value)) return undefined;
      head += `${name}: ${value}\r\n`;
    } else if (name === 'cookie') {
      // HTTP/2 splits cookies into one field each (RFC 9113 §8.2.3); HTTP/1.1 wants them in one.
      const joined = value.join('; ');
      if (UNSAFE_FIELD.test(joined)) return undefined;
      head += `cookie: ${joined}\r\n`;
    } else {
      for (const v of value) {
        if (UNSAFE_FIELD.test(v)) return undefined;
        head += `${name}: ${v}\r\n`;
      }
    }
  }
  let chunked = false;
  if (headers['content-length'] === undefined) {
    if (!ended) {
      head += 'transfer-encoding: chunked\r\n';
      chunked = true;
    } else if (method === 'POST' || method === 'PUT' || method === 'PATCH') {
      // As node's client did: an empty body is said, not left to the app to guess.
      head += 'content-length: 0\r\n';
    }
  }
  if (ctx.peer !== undefined) head += `${ctx.clientIdHeader}: ${ctx.peer}\r\n`;
  return { head: `${head}\r\n`, chunked };
}
