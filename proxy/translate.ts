/**
 * Translation between the client's HTTP version and the app's, on the inbound:
 *
 * - h2ToHttp1 (h2-to-http1.ts): an HTTP/2 stream (ALPN h2, prior knowledge, or a peer meshid
 *   proxy) to an HTTP/1.1 app. Pseudo-headers become the request line and Host; bodies flow both
 *   ways with backpressure, so HTTP/2 flow control and TCP backpressure meet and nothing is
 *   buffered whole. Request trailers go on as HTTP/1.1 chunked trailers when the body is chunked
 *   (no content-length) and are dropped otherwise; response trailers of a chunked answer become
 *   HTTP/2 trailers.
 * - {@link http1ToH2}: an HTTP/1.1 request (node's HTTP/1 parser) to an h2c app, the other way
 *   round, for gRPC apps and other h2-only servers.
 *
 * Both set `l5d-client-id` to the verified peer after removing every copy the client sent
 * (headers and trailers; node hands header names in lower case, duplicates under one key), drop
 * hop-by-hop fields, answer 502 with a body naming the cause when the app cannot be reached or
 * resets, and 504 when the app has not started its answer within the timeout.
 */
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { constants as h2 } from 'node:http2';
import type {
  ClientHttp2Session,
  IncomingHttpHeaders as Http2IncomingHeaders,
  OutgoingHttpHeaders as Http2OutgoingHeaders,
} from 'node:http2';
import type { Address, Logger } from '../core/index.js';
import { formatAddress } from '../core/index.js';
import { HOP_BY_HOP_HTTP1, connectionOptions } from './hop-by-hop.js';

/** What both translations need. */
export interface TranslateContext {
  readonly app: Address;
  /** The verified peer identity; undefined for plaintext (no `l5d-client-id` added). */
  readonly peer: string | undefined;
  readonly clientIdHeader: string;
  readonly errorHeader: string;
  /** How long the app may take to start its answer before a 504; 0 for no limit. */
  readonly appTimeoutMs: number;
  readonly logger: Logger;
}

/**
 * Never copied between HTTP/1.1 and HTTP/2: the hop-by-hop fields (proxy/hop-by-hop.ts; TE too,
 * neither side of a translation carries gRPC), Host (it becomes :authority and back), and
 * Trailer (the trailers are re-sent, or not, by the translation itself).
 */
export const TRANSLATION_HOP_BY_HOP: ReadonlySet<string> = new Set([
  ...HOP_BY_HOP_HTTP1,
  'host',
  'trailer',
]);

/** Why the app did not answer, for the 502 body and the `l5d-proxy-error` header. */
export interface AppFailure {
  readonly status: 502 | 504;
  /** Short, for the header. */
  readonly reason: string;
  /** A sentence, for the body. */
  readonly message: string;
}

/**
 * Describes an app-side failure so that a user can act on it.
 */
export function appFailure(
  app: Address,
  err: Error | 'timeout' | 'closed',
  timeoutMs = 0,
): AppFailure {
  const where = `${app.host.includes(':') ? `[${app.host}]` : app.host}:${app.port}`;
  if (err === 'timeout') {
    return {
      status: 504,
      reason: 'app timeout',
      message: `the application at ${where} did not start its answer within ${timeoutMs} ms`,
    };
  }
  const code = err === 'closed' ? undefined : (err as NodeJS.ErrnoException).code;
  if (code === 'ECONNREFUSED') {
    return {
      status: 502,
      reason: 'app refused connection',
      message: `the application at ${where} refused the connection (ECONNREFUSED): is it listening?`,
    };
  }
  if (code === 'ECONNRESET' || code === 'ERR_HTTP2_STREAM_ERROR' || code === 'EPIPE') {
    return {
      status: 502,
      reason: 'app reset',
      message: `the application at ${where} reset the connection before answering (${code})`,
    };
  }
  if (
    code === 'ERR_HTTP2_ERROR' ||
    code === 'ERR_HTTP2_SESSION_ERROR' ||
    code === 'HPE_INVALID_CONSTANT' ||
    code === 'ERR_HTTP1_APP_RESPONSE'
  ) {
    return {
      status: 502,
      reason: 'app protocol error',
      message: `the application at ${where} answered in a protocol the proxy could not read (${code}); check --app-protocol`,
    };
  }
  return {
    status: 502,
    reason: 'app closed connection',
    message: `the application at ${where} closed the connection without answering${code === undefined ? '' : ` (${code})`}`,
  };
}

/**
 * The body of a proxy-made error answer.
 */
export function failureBody(f: AppFailure): string {
  return `${f.status === 504 ? 'gateway timeout' : 'bad gateway'}: ${f.message}\n`;
}

/** Copies headers except pseudo-headers, hop-by-hop fields and the identity header. */
function copyHeaders(
  from: IncomingHttpHeaders | Http2IncomingHeaders,
  clientIdHeader: string,
  extraDrop: ReadonlySet<string> | undefined,
): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(from)) {
    if (value === undefined || name.startsWith(':') || TRANSLATION_HOP_BY_HOP.has(name)) continue;
    if (name === clientIdHeader || extraDrop?.has(name) === true) continue;
    out[name] = value;
  }
  return out;
}

/** A timer for the app's first answer; `stop()` when it came. */
function answerTimer(ms: number, onTimeout: () => void): { stop(): void } {
  if (ms <= 0) return { stop: () => undefined };
  const t = setTimeout(onTimeout, ms);
  return { stop: () => clearTimeout(t) };
}

/** What {@link http1ToH2} needs besides the context. */
interface Http1ToH2Options {
  /** The shared h2c session to the app (made on first use, replaced when it goes away). */
  readonly session: () => ClientHttp2Session;
}

/**
 * Carries one HTTP/1.1 request (parsed by node's server) to an h2c app. Response trailers (gRPC
 * status) go back as HTTP/1.1 chunked trailers.
 */
export function http1ToH2(
  req: IncomingMessage,
  res: ServerResponse,
  ctx: TranslateContext,
  o: Http1ToH2Options,
  onStatus: (status: number) => void,
): void {
  const fail = (f: AppFailure): void => {
    onStatus(f.status);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    res.writeHead(f.status, {
      'content-type': 'text/plain; charset=utf-8',
      [ctx.errorHeader]: f.reason,
      connection: 'close',
    });
    res.end(failureBody(f));
  };
  const headers: Http2OutgoingHeaders = copyHeaders(
    req.headers,
    ctx.clientIdHeader,
    connectionOptions(req.headers['connection']),
  );
  headers[':method'] = req.method ?? 'GET';
  headers[':path'] = req.url ?? '/';
  headers[':scheme'] = 'http';
  headers[':authority'] = req.headers.host ?? formatAddress(ctx.app);
  // gRPC needs "te: trailers" end to end; it is the one TE value HTTP/2 allows.
  if (/(^|,)\s*trailers\s*(,|$)/i.test(String(req.headers['te'] ?? ''))) headers['te'] = 'trailers';
  if (ctx.peer !== undefined) headers[ctx.clientIdHeader] = ctx.peer;
  const hasBody =
    req.headers['transfer-encoding'] !== undefined ||
    (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0');
  const chunked = req.headers['transfer-encoding'] !== undefined;

  let up;
  try {
    up = o.session().request(headers, { endStream: !hasBody, waitForTrailers: chunked });
  } catch (err) {
    fail(appFailure(ctx.app, err as Error));
    return;
  }
  const appReq = up;
  const timer = answerTimer(ctx.appTimeoutMs, () => {
    fail(appFailure(ctx.app, 'timeout', ctx.appTimeoutMs));
    appReq.close(h2.NGHTTP2_CANCEL);
  });
  if (chunked) {
    appReq.on('wantTrailers', () => {
      appReq.sendTrailers(copyHeaders(req.trailers, ctx.clientIdHeader, undefined));
    });
  }
  if (hasBody) req.pipe(appReq);
  else req.resume();

  let responded = false;
  let trailers: Http2IncomingHeaders | undefined;
  appReq.on('response', (appHeaders: Http2IncomingHeaders) => {
    timer.stop();
    const status = Number(appHeaders[':status'] ?? 502);
    if (status < 200) return; // 1xx: node's client reports the final one too
    responded = true;
    onStatus(status);
    const out = copyHeaders(appHeaders, '', undefined);
    if (appReq.endAfterHeaders) {
      // Trailers-only (a gRPC error): the status travels in the headers; give a length so
      // the HTTP/1.1 answer is complete without a body.
      if (out['content-length'] === undefined) out['content-length'] = '0';
      res.writeHead(status, out);
      res.end();
      return;
    }
    // Announce trailers for gRPC answers so that HTTP/1.1 clients expect them.
    if (
      out['content-length'] === undefined &&
      String(appHeaders['content-type'] ?? '').startsWith('application/grpc')
    ) {
      out['trailer'] = 'grpc-status, grpc-message';
    }
    res.writeHead(status, out);
    appReq.pipe(res, { end: false });
  });
  appReq.on('trailers', (t: Http2IncomingHeaders) => (trailers = t));
  appReq.on('end', () => {
    if (!responded) return;
    if (trailers !== undefined)
      res.addTrailers(copyHeaders(trailers, '', undefined) as Record<string, string>);
    res.end();
  });
  appReq.on('error', (err) => {
    timer.stop();
    ctx.logger.debug({ err: err.message }, 'inbound app h2 request failed');
    if (!responded) fail(appFailure(ctx.app, err));
    else res.destroy();
  });
  appReq.on('close', () => {
    timer.stop();
    if (!responded && !res.headersSent) {
      fail(
        appReq.rstCode !== undefined && appReq.rstCode !== h2.NGHTTP2_NO_ERROR
          ? {
              status: 502,
              reason: 'app reset',
              message: `the application at ${formatAddress(ctx.app)} reset the stream (HTTP/2 error code ${appReq.rstCode})`,
            }
          : appFailure(ctx.app, 'closed'),
      );
    }
  });
  res.on('close', () => {
    if (!appReq.closed) appReq.close(h2.NGHTTP2_CANCEL);
  });
}
