/**
 * The inbound connect stage for opaque bytes: one app connection per client connection, piped
 * both ways with half-close.
 */
import { connect as netConnect } from 'node:net';
import type { Socket } from 'node:net';
import { detectProtocol } from './detect.js';
import type { Conn, InboundContext } from './inbound-accept.js';
import { appAddress, destroyConn } from './inbound-accept.js';

/** Longest request line looked at; longer ones are left to the HTTP/1 parser's own limit. */
export const MAX_DETECT_BYTES = 16 * 1024;

/** How an opaque connection starts. */
export interface OpaqueStart {
  /** What the client sent already, written to the app first. */
  readonly first: Buffer;
  /** The client half-closed before the decision. */
  readonly ended: boolean;
  /**
   * The client said nothing before the detection timeout: the app is connected so that a
   * server that speaks first can, but if the app has said nothing either when the client's
   * first bytes come, those bytes are still checked, and an HTTP request goes to `toHttp`
   * after all. Without that, waiting out the timeout would be a way to get a header past the
   * proxy.
   */
  readonly lateDetect: boolean;
  /** Serves the connection as HTTP (late detection found a request); `held` is what was read. */
  readonly toHttp: (held: Buffer, protocol: 'http1' | 'http2') => void;
}

/** Pipes an opaque connection to the app, both ways, with half-close. */
export function forwardOpaque(
  ctx: InboundContext,
  conn: Conn,
  client: Socket,
  start: OpaqueStart,
): void {
  if (!ctx.shares.takeAppShare(conn)) {
    destroyConn(conn);
    return;
  }
  const target = appAddress(ctx, conn);
  const app = netConnect({ host: target.host, port: target.port, allowHalfOpen: true });
  conn.app = app;
  app.setNoDelay(true);
  app.on('error', (err) => {
    ctx.log.debug({ err: err.message }, 'inbound app connection failed');
    client.destroy();
  });
  app.on('close', (hadError) => {
    if (hadError) client.destroy();
  });
  client.on('close', () => {
    if (!app.writableFinished || !app.readableEnded) app.destroy();
  });
  app.pipe(client);

  const startPiping = (held: Buffer): void => {
    if (held.length > 0) app.write(held);
    client.pipe(app);
  };
  if (!start.lateDetect) {
    startPiping(start.first);
    if (start.ended) app.end();
    return;
  }
  detectLate(client, app, {
    pipe: startPiping,
    http: (held, protocol) => {
      // The app never spoke (or this would not be running): drop it and serve HTTP.
      app.unpipe(client);
      app.destroy();
      conn.app = undefined;
      ctx.log.debug('inbound late detection found HTTP');
      start.toHttp(held, protocol);
    },
  });
}

/**
 * Watches a connection that is already connected to the app: the client's first bytes decide
 * (opaque: `pipe`; an HTTP request: `http`) unless the app speaks first (`pipe`).
 */
function detectLate(
  client: Socket,
  app: Socket,
  then: {
    readonly pipe: (held: Buffer) => void;
    readonly http: (held: Buffer, protocol: 'http1' | 'http2') => void;
  },
): void {
  const chunks: Buffer[] = [];
  let length = 0;
  let detecting = true;
  const stop = (): Buffer => {
    detecting = false;
    client.off('data', onData);
    client.off('end', onEnd);
    app.off('data', onAppData);
    client.pause();
    return Buffer.concat(chunks, length);
  };
  const onData = (chunk: Buffer): void => {
    chunks.push(chunk);
    length += chunk.length;
    const d = detectProtocol(Buffer.concat(chunks, length));
    if (d.protocol === 'opaque') then.pipe(stop());
    else if (d.decided || length >= MAX_DETECT_BYTES) then.http(stop(), d.protocol);
  };
  const onEnd = (): void => then.pipe(stop());
  // Once the app speaks, this is a server-speaks-first protocol: carry the client's bytes.
  const onAppData = (): void => {
    if (detecting) then.pipe(stop());
  };
  client.on('data', onData);
  client.once('end', onEnd);
  app.on('data', onAppData);
  // Detection paused the socket; a 'data' listener alone does not undo an explicit pause.
  client.resume();
}
