/**
 * One HTTP/2 stream carried onto another HTTP/2 session, both ways: the inbound uses it from a
 * client to an h2c app, the outbound's HTTP listener from an h2c app to the peer proxy. Bodies
 * are piped (flow control meets flow control), trailers go on in both directions (gRPC status
 * travels in them), connection-specific fields and every `l5d-client-id` are dropped (the
 * caller adds the verified one where it has one).
 *
 * When the upstream fails before answering, the caller's `failed` makes the answer (a 502 or
 * 504 with a body naming the cause) and nothing follows it; after the answer started, an
 * upstream reset becomes a reset of the client's stream. A stream that completed is never
 * cancelled afterwards: a late RST_STREAM raced node's HTTP/2 server into failing the session.
 */
import { constants as h2 } from 'node:http2';
import type {
  ClientHttp2Session,
  ClientHttp2Stream,
  IncomingHttpHeaders as Http2IncomingHeaders,
  OutgoingHttpHeaders as Http2OutgoingHeaders,
  ServerHttp2Stream,
} from 'node:http2';
import type { Logger } from '../core/index.js';
import { isHopByHop } from './hop-by-hop.js';

/**
 * The header that carries the verified peer identity to the application (Linkerd's name); never
 * taken from a client.
 */
export const CLIENT_ID_HEADER = 'l5d-client-id';

/**
 * HTTP/2 headers to re-send: pseudo-headers as `keepPseudo` says, no connection-specific ones,
 * no `l5d-client-id`.
 */
export function forwardableHttp2Headers(
  headers: Http2IncomingHeaders,
  keepPseudo: (name: string) => boolean,
): Http2OutgoingHeaders {
  const out: Http2OutgoingHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || name === CLIENT_ID_HEADER || isHopByHop('h2', name, value)) continue;
    if (name.startsWith(':') && !keepPseudo(name)) continue;
    out[name] = value;
  }
  return out;
}

/** Why the upstream did not answer. */
export type H2RelayFailure = Error | 'timeout' | { readonly rstCode: number };

/** What {@link relayH2Stream} needs besides the two ends. */
interface H2RelayOptions {
  /** How long the upstream may take to start its answer; 0 for no limit. */
  readonly timeoutMs: number;
  /** Answers the client when the upstream failed before answering; returns the status sent. */
  readonly failed: (cause: H2RelayFailure) => number;
  /** The status sent to the client, once known. */
  readonly onStatus: (status: number) => void;
  readonly logger: Logger;
}

/**
 * Relays `stream` (with its outgoing `headers`, already prepared) as a new stream on `session`.
 */
export function relayH2Stream(
  stream: ServerHttp2Stream,
  headers: Http2OutgoingHeaders,
  session: ClientHttp2Session,
  o: H2RelayOptions,
): void {
  const requestEnded = stream.endAfterHeaders;
  /** The proxy answered itself: no upstream reset may follow that answer. */
  let proxyAnswered = false;
  const fail = (cause: H2RelayFailure): void => {
    if (proxyAnswered || stream.headersSent || stream.closed) return;
    proxyAnswered = true;
    o.onStatus(o.failed(cause));
  };
  let up: ClientHttp2Stream;
  try {
    up = session.request(headers, { endStream: requestEnded, waitForTrailers: !requestEnded });
  } catch (err) {
    o.logger.debug({ err: String(err) }, 'h2 relay request failed');
    fail(err as Error);
    return;
  }
  const timer =
    o.timeoutMs > 0
      ? setTimeout(() => {
          fail('timeout');
          up.close(h2.NGHTTP2_CANCEL);
        }, o.timeoutMs)
      : undefined;

  let requestTrailers: Http2IncomingHeaders | undefined;
  stream.on('trailers', (t: Http2IncomingHeaders) => (requestTrailers = t));
  up.on('wantTrailers', () => {
    up.sendTrailers(forwardableHttp2Headers(requestTrailers ?? {}, () => false));
  });
  if (!requestEnded) stream.pipe(up);

  let responseTrailers: Http2IncomingHeaders | undefined;
  up.on('response', (upHeaders: Http2IncomingHeaders) => {
    clearTimeout(timer);
    if (stream.headersSent || stream.closed) return;
    o.onStatus(Number(upHeaders[':status'] ?? 502));
    const responseEnded = up.endAfterHeaders;
    stream.respond(
      forwardableHttp2Headers(upHeaders, (n) => n === ':status'),
      {
        endStream: responseEnded,
        waitForTrailers: !responseEnded,
      },
    );
    if (!responseEnded) up.pipe(stream);
  });
  up.on('trailers', (t: Http2IncomingHeaders) => (responseTrailers = t));
  stream.on('wantTrailers', () => {
    stream.sendTrailers(forwardableHttp2Headers(responseTrailers ?? {}, () => false));
  });
  up.on('error', (err) => {
    clearTimeout(timer);
    o.logger.debug({ err: err.message }, 'h2 relay upstream stream failed');
    if (!stream.headersSent && !stream.closed) fail(err);
    else if (!stream.closed && !proxyAnswered) stream.close(h2.NGHTTP2_INTERNAL_ERROR);
  });
  up.on('close', () => {
    clearTimeout(timer);
    if (stream.closed || up.rstCode === h2.NGHTTP2_NO_ERROR || proxyAnswered) return;
    // Reset before answering: say so; after, reset the client's stream too.
    if (!stream.headersSent) fail({ rstCode: up.rstCode });
    else stream.close(up.rstCode);
  });
  stream.on('close', () => {
    if (up.closed) return;
    // The exchange completed: nothing to cancel (see the module comment).
    if (stream.rstCode === h2.NGHTTP2_NO_ERROR && up.readableEnded) return;
    up.close(stream.rstCode === h2.NGHTTP2_NO_ERROR ? h2.NGHTTP2_CANCEL : stream.rstCode);
  });
}
