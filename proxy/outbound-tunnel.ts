/**
 * The HTTP listener's two ways out of HTTP: `Connection: Upgrade` (WebSocket), carried over an
 * HTTP/1.1 mTLS connection of its own (HTTP/2 between proxies has no upgrade), and CONNECT
 * host:port, an opaque tunnel for protocols that are not HTTP/1.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ServerResponse as HttpServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { LogKey, formatAddress } from '../core/index.js';
import type { Destination, DestinationResolver } from './routes.js';
import { forwardUpgrade, upgradeRequestHead } from './upgrade.js';
import type { OutboundContext } from './outbound-accept.js';
import { splice } from './outbound-accept.js';
import { cancelled, messageOf, statusOf } from './outbound-connect.js';
import type { Refuse } from './outbound-route.js';
import { destinationFor, rawProxyError, requestTarget } from './outbound-route.js';

/** A request that leaves HTTP, with the socket it came on. */
export interface RawRequest {
  readonly req: IncomingMessage;
  readonly app: Socket;
  readonly head: Buffer;
  readonly listener: string;
  readonly resolver: DestinationResolver;
}

/**
 * An upgrade request: carried over an mTLS connection of its own. An h2c upgrade is ignored and
 * the request served as any other, by `serve`.
 */
export async function upgrade(
  ctx: OutboundContext,
  r: RawRequest,
  serve: (req: IncomingMessage, res: ServerResponse) => Promise<void>,
): Promise<void> {
  const { req, app, head, listener } = r;
  ctx.tracker.track([app]);
  app.on('error', () => undefined);
  if (/(^|,)\s*h2c/i.test(String(req.headers.upgrade ?? ''))) {
    const res = new HttpServerResponse(req);
    res.assignSocket(app);
    res.shouldKeepAlive = false;
    res.once('finish', () => app.end());
    delete req.headers.upgrade;
    await serve(req, res);
    return;
  }
  const refuse: Refuse = (status, reason, message) =>
    app.end(rawProxyError(status, reason, `${message}\n`));
  const target = requestTarget(req);
  if (target === undefined) {
    refuse(400, 'bad-request', 'request has no usable authority (Host header or absolute URI)');
    return;
  }
  const required = req.headers['l5d-require-id'];
  const dest = await destinationFor(
    ctx.emit,
    { required, authority: target.authority, listener },
    r.resolver,
    refuse,
  );
  if (dest === undefined) return;
  const up = originate(ctx, listener, dest, refuse);
  if (up === undefined) return;
  up.once('secureConnect', () =>
    ctx.connector.reportEstablished(listener, dest, up, () => ({
      sent: up.bytesWritten,
      received: up.bytesRead,
    })),
  );
  req.url = target.path;
  forwardUpgrade({
    client: app,
    clientRest: head,
    requestHead: upgradeRequestHead(req, undefined, undefined),
    upstream: up,
    where: `the peer proxy at ${formatAddress(dest.target)}`,
    errorHeader: 'l5d-proxy-error',
    logger: ctx.log,
  });
}

/** CONNECT host:port: an opaque tunnel to the destination, for protocols that are not HTTP/1. */
export async function tunnel(ctx: OutboundContext, r: RawRequest): Promise<void> {
  const { req, app, head, listener } = r;
  const tracked = ctx.tracker.track([app]);
  app.on('error', () => undefined);
  const fail: Refuse = (status, reason, message) => {
    app.end(rawProxyError(status, reason, ''));
    ctx.log.debug({ [LogKey.reason]: reason, err: message }, 'outbound CONNECT refused');
  };
  const authority = req.url ?? '';
  const required = req.headers['l5d-require-id'];
  const dest = await destinationFor(ctx.emit, { required, authority, listener }, r.resolver, fail);
  if (dest === undefined) return;
  const up = originate(ctx, listener, dest, fail);
  if (up === undefined) return;
  tracked.sockets.add(up);
  let established = false;
  app.once('close', () => {
    if (!established) up.destroy(cancelled());
  });
  up.on('error', (err: Error) => {
    if (established) return;
    const reason = ctx.connector.failureOf(err)?.reason ?? 'tls-failed';
    fail(statusOf(reason), reason, messageOf(err));
  });
  up.once('secureConnect', () => {
    established = true;
    const sentBefore = app.bytesWritten;
    app.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    if (head.length > 0) up.write(head);
    ctx.connector.reportEstablished(
      listener,
      dest,
      up,
      () => ({ sent: app.bytesRead, received: app.bytesWritten - sentBefore }),
      [app],
    );
    splice(app, up);
  });
}

/** The mTLS connection to `dest`, or undefined when it cannot start (refused with the reason). */
function originate(
  ctx: OutboundContext,
  listener: string,
  dest: Destination,
  refuse: Refuse,
): TLSSocket | undefined {
  try {
    return ctx.connector.originate(listener, dest);
  } catch (err) {
    const reason = ctx.connector.failureOf(err as Error)?.reason ?? 'tls-failed';
    refuse(statusOf(reason), reason, messageOf(err));
    return undefined;
  }
}
