/**
 * Opaque outbound connections: a route listener's connection (or a transparent one that is not
 * HTTP) carried byte for byte over one mTLS connection of its own, half-closes included.
 */
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { LogKey, resetSocket } from '../core/index.js';
import type { Destination, Route } from './routes.js';
import { detectProtocol } from './detect.js';
import type { OutboundContext, Tracked } from './outbound-accept.js';
import { splice } from './outbound-accept.js';
import { UpstreamError, cancelled, messageOf, statusOf } from './outbound-connect.js';
import type { OutboundFailureReason } from './outbound-events.js';
import type { FirstBytes } from './outbound-detect.js';
import { opensWithH2Preface, sniffFirstBytes } from './outbound-detect.js';
import { rawProxyError } from './outbound-route.js';

/** Attempts at an opaque connection's upstream (TCP + TLS) before the app is told it failed. */
const CONNECT_ATTEMPTS = 3;
/**
 * Failures worth another attempt: transient ones in TCP or TLS. A timeout has already waited
 * long; an untrusted or wrong peer, or a missing certificate, would fail the same way again.
 */
const RETRIED: ReadonlySet<OutboundFailureReason> = new Set(['connect-failed', 'tls-failed']);

/** A route listener's connection: detect, then carry to the route's one destination. */
export function acceptRouteConnection(
  ctx: OutboundContext,
  app: Socket,
  listener: string,
  route: Route,
): void {
  const tracked = ctx.tracker.track([app]);
  app.setNoDelay(true);
  app.on('error', (err) => {
    ctx.log.debug({ err: messageOf(err), listener }, 'outbound app connection error');
  });
  if (ctx.closing()) {
    app.destroy();
    return;
  }
  void sniffFirstBytes(app, ctx.detectTimeoutMs).then((early) => {
    if (app.destroyed) return;
    const dest: Destination = { target: route.target, identity: route.identity };
    // A TLS server that speaks HTTP/2 needs ALPN `h2` offered before any byte is carried.
    const alpn = opensWithH2Preface(early.bytes) ? ['h2'] : undefined;
    carryOpaque(ctx, app, early, { listener, dest, alpn, tracked });
  });
}

/** Where an opaque connection goes and how. */
export interface OpaqueUpstream {
  readonly listener: string;
  readonly dest: Destination;
  readonly alpn: readonly string[] | undefined;
  readonly tracked: Tracked;
  /** Written before the app's bytes once the session is up (Linkerd's transport header). */
  readonly preamble?: Buffer;
}

/**
 * Opens the upstream for an opaque connection and splices the two once it is verified.
 * Nothing of the app's goes upstream before the handshake has finished, so an attempt that
 * failed in TCP or TLS (a reset, a peer closing mid-handshake) is tried again, up to
 * {@link CONNECT_ATTEMPTS} in all, as Linkerd retries a failed connect. When every attempt
 * failed, an app that sent an HTTP/1 request gets the proxy's own answer (502, or 503 without a
 * certificate, 504 on a timeout) with `l5d-proxy-error` naming the cause; any other app gets a
 * reset, which cannot pass for an empty answer as a clean FIN could.
 */
export function carryOpaque(
  ctx: OutboundContext,
  app: Socket,
  early: FirstBytes,
  up: OpaqueUpstream,
): void {
  let established = false;
  let current: TLSSocket | undefined;
  // The app gave up before the handshake finished: nothing to carry.
  app.once('close', () => {
    if (!established) current?.destroy(cancelled());
  });
  const giveUp = (failure: UpstreamError): void => {
    if (app.destroyed) return;
    if (detectProtocol(early.bytes).protocol !== 'http1') {
      resetSocket(app);
      return;
    }
    app.on('finish', () => app.destroy());
    app.end(rawProxyError(statusOf(failure.reason), failure.reason, `${failure.message}\n`));
  };
  const attempt = (n: number): void => {
    let socket: TLSSocket;
    try {
      socket = ctx.connector.originate(up.listener, up.dest, up.alpn);
    } catch (err) {
      // The event is out (no certificate, or no TLS context from it): no retry helps.
      const e = err as Error;
      giveUp(ctx.connector.failureOf(e) ?? new UpstreamError('tls-failed', messageOf(e)));
      return;
    }
    current = socket;
    up.tracked.sockets.add(socket);
    let failedOnce = false;
    const failed = (err: Error | undefined): void => {
      if (established || failedOnce) return;
      failedOnce = true;
      up.tracked.sockets.delete(socket);
      socket.destroy();
      const failure =
        (err === undefined ? undefined : ctx.connector.failureOf(err)) ??
        new UpstreamError('tls-failed', 'connection closed during the TLS handshake');
      if (app.destroyed || ctx.closing()) {
        resetSocket(app);
        return;
      }
      if (n < CONNECT_ATTEMPTS && RETRIED.has(failure.reason)) {
        ctx.log.debug(
          { [LogKey.reason]: failure.reason, attempt: n, err: failure.message },
          'outbound connect failed before anything was sent; trying again',
        );
        attempt(n + 1);
        return;
      }
      giveUp(failure);
    };
    socket.on('error', failed);
    socket.once('close', () => failed(undefined));
    socket.once('secureConnect', () => {
      established = true;
      ctx.connector.reportEstablished(
        up.listener,
        up.dest,
        socket,
        () => ({ sent: app.bytesRead, received: app.bytesWritten }),
        [app],
      );
      if (up.preamble !== undefined) socket.write(up.preamble);
      if (early.bytes.length > 0) socket.write(early.bytes);
      splice(app, socket, early.ended);
    });
  };
  attempt(1);
}
