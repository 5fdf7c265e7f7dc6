/**
 * The outbound connect stage for HTTP: one request, whose destination is already chosen, sent
 * to the peer proxy as a stream on the multiplexed HTTP/2 session between the proxies, or over
 * a pooled HTTP/1.1 mTLS connection when the peer is not a meshid proxy.
 */
import { request as httpRequest } from 'node:http';
import type {
  ClientRequest,
  IncomingHttpHeaders,
  IncomingMessage,
  OutgoingHttpHeaders,
  ServerResponse,
} from 'node:http';
import { constants as h2 } from 'node:http2';
import type {
  ClientHttp2Session,
  IncomingHttpHeaders as Http2IncomingHeaders,
  ServerHttp2Stream,
} from 'node:http2';
import { formatAddress } from '../core/index.js';
import type { Destination } from './routes.js';
import { forwardableHttp2Headers, relayH2Stream } from './h2-relay.js';
import { HOP_BY_HOP_HTTP1, connectionOptions } from './hop-by-hop.js';
import type { H2RelayFailure } from './h2-relay.js';
import type { OutboundContext } from './outbound-accept.js';
import { messageOf } from './outbound-connect.js';
import type { MeshRequestExtras } from './outbound-pool.js';
import type { RequestTarget } from './outbound-route.js';
import { proxyError } from './outbound-route.js';

/** Where a request goes: the listener it came in on, its destination, its authority and path. */
export interface RoutedRequest {
  readonly listener: string;
  readonly dest: Destination;
  readonly target: RequestTarget;
}

/** Forwards one HTTP/1.1 request to its destination over the mesh HTTP/2 session or the pool. */
export async function forwardRequest(
  ctx: OutboundContext,
  req: IncomingMessage,
  res: ServerResponse,
  to: RoutedRequest,
): Promise<void> {
  if (ctx.meshH2 && !ctx.pool.isHttp1Peer(to.dest)) {
    let session: ClientHttp2Session | undefined;
    try {
      session = await ctx.pool.meshSession(to.listener, to.dest);
    } catch (err) {
      proxyError(res, ...ctx.connector.connectFailure(err));
      return;
    }
    if (session !== undefined) {
      forwardAsH2(req, res, session, to.target);
      return;
    }
  }
  const upstream: ClientRequest = httpRequest({
    agent: ctx.pool.agent,
    host: to.dest.target.host,
    port: to.dest.target.port,
    method: req.method ?? 'GET',
    path: to.target.path,
    headers: withoutHopByHop(req.headers),
    // Read by MeshAgent: the identity is part of the pool key and of the TLS check.
    ...({ meshDestination: to.dest, meshListener: to.listener } satisfies MeshRequestExtras),
  });
  upstream.on('response', (up: IncomingMessage) => {
    res.writeHead(up.statusCode ?? 502, up.statusMessage, withoutHopByHop(up.headers));
    up.pipe(res);
    up.on('error', () => res.destroy());
  });
  upstream.on('error', (err: Error) => {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    proxyError(res, ...ctx.connector.connectFailure(err));
  });
  req.pipe(upstream);
  // The app hung up mid-request: abandon the upstream exchange.
  res.on('close', () => {
    if (!res.writableFinished) upstream.destroy();
  });
}

/** One HTTP/1.1 request from the app carried as an HTTP/2 stream to the peer proxy. */
function forwardAsH2(
  req: IncomingMessage,
  res: ServerResponse,
  session: ClientHttp2Session,
  target: RequestTarget,
): void {
  const headers: Record<string, string | string[] | number> = {};
  for (const [k, v] of Object.entries(withoutHopByHop(req.headers))) {
    if (v !== undefined && k !== 'host') headers[k] = typeof v === 'number' ? String(v) : v;
  }
  headers[':method'] = req.method ?? 'GET';
  headers[':path'] = target.path;
  headers[':scheme'] = 'http';
  headers[':authority'] = target.authority;
  const hasBody =
    req.headers['transfer-encoding'] !== undefined ||
    (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0');
  let up;
  try {
    up = session.request(headers, { endStream: !hasBody });
  } catch (err) {
    proxyError(res, 502, 'connect-failed', `HTTP/2 to the peer proxy failed: ${messageOf(err)}`);
    return;
  }
  if (hasBody) req.pipe(up);
  else req.resume();
  up.on('response', (h: Http2IncomingHeaders) => {
    const status = Number(h[':status'] ?? 502);
    if (status < 200) return;
    const out: OutgoingHttpHeaders = {};
    for (const [k, v] of Object.entries(h)) if (!k.startsWith(':') && v !== undefined) out[k] = v;
    res.writeHead(status, out);
    up.pipe(res);
  });
  up.on('error', (err) => {
    if (res.headersSent) res.destroy();
    else proxyError(res, 502, 'peer-failed', peerStreamFailure(err));
  });
  up.on('close', () => {
    if (!res.headersSent && up.rstCode !== h2.NGHTTP2_NO_ERROR) {
      proxyError(res, 502, 'peer-failed', peerStreamFailure({ rstCode: up.rstCode }));
    }
  });
  // Only an exchange the app gave up on is cancelled: a RST_STREAM after a complete answer
  // raced node's HTTP/2 server on the peer, which then failed the whole session with GOAWAY
  // INTERNAL_ERROR under load (every stream on it answered 502).
  res.on('close', () => {
    if (!res.writableFinished && !up.closed) up.close(h2.NGHTTP2_CANCEL);
  });
}

/** How an HTTP/2 stream's refusal is answered; returns the status sent (0 when none could be). */
export type StreamAnswer = (status: number, reason: string, message: string) => number;

/**
 * One HTTP/2 stream from the app, whose destination is chosen, carried as a stream on the
 * HTTP/2 session to the peer proxy. A peer that is not a meshid proxy (it chose HTTP/1.1) gets
 * no HTTP/2: the answer says so.
 */
export async function forwardStream(
  ctx: OutboundContext,
  stream: ServerHttp2Stream,
  headers: Http2IncomingHeaders,
  to: Omit<RoutedRequest, 'target'>,
  answer: StreamAnswer,
): Promise<void> {
  let session: ClientHttp2Session | undefined;
  if (ctx.meshH2 && !ctx.pool.isHttp1Peer(to.dest)) {
    try {
      session = await ctx.pool.meshSession(to.listener, to.dest);
    } catch (err) {
      answer(...ctx.connector.connectFailure(err));
      return;
    }
  }
  if (session === undefined) {
    answer(
      502,
      'peer-not-http2',
      `the proxy at ${formatAddress(to.dest.target)} does not take HTTP/2 from other proxies (it is not a meshid proxy): send HTTP/1.1 to this listener, or use a route listener`,
    );
    return;
  }
  if (stream.closed) return;
  const out = forwardableHttp2Headers(headers, (n) => n !== ':scheme');
  delete out['l5d-require-id'];
  out[':scheme'] = 'http';
  relayH2Stream(stream, out, session, {
    timeoutMs: 0,
    failed: (cause) => answer(502, 'peer-failed', peerStreamFailure(cause)),
    onStatus: () => undefined,
    logger: ctx.log,
  });
}

/** Why an HTTP/2 stream to the peer proxy gave no answer, for the 502 body. */
function peerStreamFailure(cause: H2RelayFailure): string {
  if (cause === 'timeout') return 'the peer proxy did not answer in time';
  if ('rstCode' in cause)
    return `the peer proxy reset the stream (HTTP/2 error code ${cause.rstCode})`;
  return `HTTP/2 stream to the peer proxy failed: ${cause.message}`;
}

/** Never forwarded: the hop-by-hop fields (proxy/hop-by-hop.ts), and Trailer (node re-frames the body here). */
const HOP_BY_HOP = new Set([...HOP_BY_HOP_HTTP1, 'trailer']);

/** The headers of an HTTP/1.1 message without hop-by-hop ones (and those `Connection` names). */
export function withoutHopByHop(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const named = new Set([...HOP_BY_HOP, ...connectionOptions(headers.connection)]);
  const out: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(headers)) {
    if (v !== undefined && !named.has(k)) out[k] = v;
  }
  return out;
}
