/** The HTTP plumbing of the test server: JSON and text replies, bodies, bearer tokens, warnings. */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { parse as parseYaml } from 'yaml';
import { withoutNulls } from './nulls.js';
import { ApiError, badRequest } from './status.js';

export const MAX_BODY = 3 * 1024 * 1024;

export function sendJson(
  res: ServerResponse,
  code: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(code, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

export function sendText(res: ServerResponse, code: number, text: string): void {
  res.writeHead(code, {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': Buffer.byteLength(text),
  });
  res.end(text);
}

export async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > MAX_BODY)
      throw new ApiError({
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Failure',
        message: 'Request entity too large: limit is 3145728',
        reason: 'RequestEntityTooLarge',
        code: 413,
      });
    chunks.push(c);
  }
  return Buffer.concat(chunks).toString('utf8');
}

export function decodeBody(text: string, contentType: string | undefined): unknown {
  if (text.trim() === '')
    throw badRequest("couldn't get version/kind; json parse error: unexpected end of JSON input");
  try {
    if ((contentType ?? '').includes('yaml'))
      return withoutNulls(parseYaml(text, { uniqueKeys: false }));
    return withoutNulls(JSON.parse(text));
  } catch (e) {
    throw badRequest(`couldn't get version/kind; json parse error: ${(e as Error).message}`);
  }
}

export function bearer(req: IncomingMessage): string | undefined {
  const h = req.headers.authorization;
  if (h === undefined) return undefined;
  const m = /^Bearer\s+(.+)$/i.exec(h.trim());
  return m === null ? '' : m[1]!.trim();
}

/**
 * `Warning: 299 - "..."` headers, as kube-apiserver returns a webhook's warnings and field
 * validation's.
 */
export function warningHeaders(warnings: readonly string[]): Record<string, string> {
  if (warnings.length === 0) return {};
  return {
    Warning: warnings
      .map((w) => `299 - ${JSON.stringify(w.replace(/[^\x20-\x7e]/g, '?'))}`)
      .join(', '),
  };
}
