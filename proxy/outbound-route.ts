/**
 * The outbound route stage for the HTTP listener: the authority a request names, the
 * destination it resolves to (and whom to expect there), and how a refusal is answered.
 */
import { STATUS_CODES } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { printable } from '../core/index.js';
import type { Destination, DestinationResolver } from './routes.js';
import type { OutboundEvent } from './outbound-events.js';
import { messageOf } from './outbound-connect.js';

/** How a request path answers a refusal: the status, the `l5d-proxy-error` reason, a message. */
export type Refuse = (status: number, reason: string, message: string) => void;

/**
 * A refusal written straight to a client socket (upgrades and CONNECT, which have no response
 * object), closing the connection; `body` empty sends no content type.
 */
export function rawProxyError(status: number, reason: string, body: string): string {
  const type = body.length > 0 ? 'content-type: text/plain; charset=utf-8\r\n' : '';
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\n${type}l5d-proxy-error: ${reason}\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`;
}

/**
 * An error the proxy itself answers, marked with `l5d-proxy-error` as Linkerd's proxy does so
 * that the app (and a human) can tell it from the destination's own errors.
 */
export function proxyError(
  res: ServerResponse,
  status: number,
  reason: string,
  message: string,
): void {
  res.writeHead(status, {
    'content-type': 'text/plain; charset=utf-8',
    'l5d-proxy-error': reason,
  });
  res.end(`${message}\n`);
}

/** The authority to route by and the origin-form path to send upstream. */
export interface RequestTarget {
  readonly authority: string;
  readonly path: string;
}

/** The authority to route by and the origin-form path, or undefined when there is none. */
export function requestTarget(req: IncomingMessage): RequestTarget | undefined {
  const url = req.url ?? '/';
  if (url.startsWith('/') || url === '*') {
    const host = req.headers.host;
    return host === undefined || host.length === 0 ? undefined : { authority: host, path: url };
  }
  // Absolute form, as clients configured with an HTTP proxy send it.
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return undefined;
  }
  if (parsed.protocol !== 'http:' || parsed.host.length === 0) return undefined;
  return { authority: parsed.host, path: `${parsed.pathname}${parsed.search}` };
}

/**
 * The destination of a request on the HTTP listener, or the sentence for its 502 no-route
 * (reported as a failed handshake). `required` is the request's `l5d-require-id`.
 */
export async function destinationFor(
  emit: (e: OutboundEvent) => void,
  req: { required: unknown; authority: string; listener: string },
  resolver: DestinationResolver,
  refuse: Refuse,
): Promise<Destination | undefined> {
  let dest: Destination | undefined;
  try {
    dest = await resolveFor(req.required, req.authority, resolver);
  } catch (err) {
    refuse(502, 'no-route', `destination lookup failed: ${messageOf(err)}`);
    return undefined;
  }
  if (dest !== undefined) return dest;
  emit({
    type: 'handshake',
    ok: false,
    listener: req.listener,
    reason: 'no-route',
    message: `no destination for ${printable(req.authority)}`,
  });
  refuse(502, 'no-route', `no meshed destination for ${printable(req.authority)}`);
  return undefined;
}

/** Resolves an authority; `l5d-require-id` (Linkerd's header) overrides the expected identity. */
async function resolveFor(
  required: unknown,
  authority: string,
  resolver: DestinationResolver,
): Promise<Destination | undefined> {
  const dest = await resolver.resolve(authority);
  if (dest === undefined || typeof required !== 'string' || required.length === 0) return dest;
  return { target: dest.target, identity: required };
}
