/**
 * A protocol switch (`Connection: Upgrade`, WebSocket) carried over a fresh HTTP/1.1 connection:
 * the request head goes out as given (the caller has already put the verified identity in it),
 * the answer's head is read, and on `101 Switching Protocols` the two connections are piped both
 * ways from then on. An answer that declines the switch goes back to the client and the
 * connection ends after it (what the client sent behind the request was meant for the new
 * protocol). An answer that is not HTTP/1.x at all (an h2-only server) becomes a 502 saying so.
 *
 * The inbound uses this when the app was learned to speak HTTP/2 (an h2c app may still take
 * HTTP/1.1 upgrades, as Go's h2c servers do); the outbound HTTP listener uses it to carry a
 * WebSocket to the peer proxy over an HTTP/1.1 mTLS connection, since HTTP/2 between proxies has
 * no upgrade. The inbound's own HTTP/1.1 relay handles upgrades itself.
 */
import type { Duplex } from 'node:stream';
import type { IncomingMessage } from 'node:http';
import type { Logger } from '../core/index.js';
import { MAX_HEAD_BYTES } from './http1-parse.js';
import { proxyResponse } from './http1-body.js';

/** What {@link forwardUpgrade} needs. */
interface UpgradeOptions {
  /** The client's connection, after its request head. */
  readonly client: Duplex;
  /** What the client sent after the head (node's `upgrade` event `head`). */
  readonly clientRest: Buffer;
  /** The request head to send, CRLFCRLF included. */
  readonly requestHead: Buffer;
  /** A connection to the server (connecting is fine: writes are queued). */
  readonly upstream: Duplex;
  /** Where the upstream is, for error texts. */
  readonly where: string;
  readonly errorHeader: string;
  readonly logger: Logger;
  /** The status sent to the client (101, the server's refusal, or 502). */
  readonly onStatus?: (status: number) => void;
}

const HEAD_END = Buffer.from('\r\n\r\n', 'latin1');

/**
 * Rebuilds a request head from node's parsed request: the request line, the headers as the
 * client wrote them except every `clientIdHeader` copy, then `clientIdHeader: peer` (neither
 * when `clientIdHeader` is undefined: the outbound leaves identity to the peer's inbound).
 */
export function upgradeRequestHead(
  req: IncomingMessage,
  clientIdHeader: string | undefined,
  peer: string | undefined,
): Buffer {
  let text = `${req.method ?? 'GET'} ${req.url ?? '/'} HTTP/1.1\r\n`;
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (clientIdHeader !== undefined && raw[i]!.toLowerCase() === clientIdHeader) continue;
    text += `${raw[i]}: ${raw[i + 1]}\r\n`;
  }
  if (peer !== undefined && clientIdHeader !== undefined) text += `${clientIdHeader}: ${peer}\r\n`;
  return Buffer.from(`${text}\r\n`, 'latin1');
}

/**
 * Forwards an upgrade request and, if the server switches, splices the two connections.
 */
export function forwardUpgrade(o: UpgradeOptions): void {
  const { client, upstream } = o;
  let got: Buffer = Buffer.alloc(0);
  let decided = false;
  const fail = (message: string, reason: string): void => {
    decided = true;
    o.onStatus?.(502);
    client.end(proxyResponse(502, o.errorHeader, reason, `bad gateway: ${message}\n`));
    upstream.destroy();
  };
  upstream.on('error', (err) => {
    o.logger.debug({ err: err.message }, 'upgrade upstream failed');
    if (!decided) fail(`the connection to ${o.where} failed: ${err.message}`, 'upgrade failed');
    else client.destroy();
  });
  client.on('error', () => upstream.destroy());
  client.on('close', () => upstream.destroy());
  upstream.on('close', () => {
    if (!decided) {
      fail(
        `${o.where} closed the connection without answering the upgrade request (an application that speaks only HTTP/2 cannot take an HTTP/1.1 upgrade such as WebSocket)`,
        'upgrade not accepted',
      );
    } else if (!client.destroyed) {
      client.end();
    }
  });
  const onData = (chunk: Buffer): void => {
    got = got.length === 0 ? chunk : Buffer.concat([got, chunk]);
    if (
      !got
        .subarray(0, Math.min(got.length, 7))
        .equals(Buffer.from('HTTP/1.').subarray(0, Math.min(got.length, 7)))
    ) {
      upstream.off('data', onData);
      fail(
        `${o.where} did not answer in HTTP/1.1 (it speaks only HTTP/2?): a WebSocket or other upgrade needs an HTTP/1.1 application`,
        'upgrade not accepted',
      );
      return;
    }
    const end = got.indexOf(HEAD_END);
    if (end === -1) {
      if (got.length > MAX_HEAD_BYTES) {
        upstream.off('data', onData);
        fail(`${o.where} sent an answer head over ${MAX_HEAD_BYTES} bytes`, 'upgrade failed');
      }
      return;
    }
    upstream.off('data', onData);
    upstream.pause();
    decided = true;
    const status = Number(got.subarray(9, 12).toString('latin1'));
    o.onStatus?.(status);
    client.write(got);
    if (status === 101) {
      if (o.clientRest.length > 0) upstream.write(o.clientRest);
      client.pipe(upstream);
      upstream.pipe(client);
      return;
    }
    // Declined: the answer goes back whole when it says its length, then the connection ends.
    const length = /\r\ncontent-length:\s*(\d+)\s*\r\n/i.exec(
      got.subarray(0, end + 2).toString('latin1'),
    );
    let remaining = length === null ? Infinity : Number(length[1]) - (got.length - end - 4);
    if (remaining <= 0) {
      client.end();
      upstream.destroy();
      return;
    }
    upstream.on('data', (c: Buffer) => {
      client.write(c);
      remaining -= c.length;
      if (remaining <= 0) {
        client.end();
        upstream.destroy();
      }
    });
    upstream.resume();
  };
  upstream.on('data', onData);
  upstream.write(o.requestHead);
}
