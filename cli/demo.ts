/**
 * The two demo services of the local mesh (`npm start`): `web` answers HTTP/1.1 and a gRPC
 * method on one port (it tells the protocols apart by the HTTP/2 preface, as the inbound proxy
 * forwards each as it came), and `voting` calls web every second over both, through its proxy.
 * They are applications, not meshid components: they know nothing of TLS or identities, and
 * read the caller's verified identity from the `l5d-client-id` header the proxy sets.
 */
import { once } from 'node:events';
import { createServer as createHttpServer, request } from 'node:http';
import { connect as http2Connect, createServer as createH2Server } from 'node:http2';
import type { ClientHttp2Session, IncomingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import { createServer as createNetServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import { Duplex } from 'node:stream';
import type { Address } from '../core/index.js';
import { formatAddress } from '../core/index.js';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
const DEMO_GRPC_PATH = '/meshid.demo.Web/Hello';

/** What web saw of one call. */
export interface WebCall {
  readonly protocol: 'http' | 'grpc';
  readonly clientId: string | undefined;
}

/** Starts `web` on 127.0.0.1 (port 0); `onCall` is told about every call it serves. */
export async function startWebService(
  onCall: (c: WebCall) => void,
): Promise<{ address: Address; close: () => Promise<void> }> {
  const h1 = createHttpServer((req, res) => {
    const clientId = req.headers['l5d-client-id'] as string | undefined;
    onCall({ protocol: 'http', clientId });
    res.setHeader('content-type', 'application/json');
    res.end(`${JSON.stringify({ service: 'web', youAre: clientId ?? null })}\n`);
  });
  const h2 = createH2Server();
  h2.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
    const clientId = headers['l5d-client-id'] as string | undefined;
    stream.resume();
    // A proxy may carry a plain HTTP request (curl's) to web over HTTP/2: the same JSON answer.
    if (headers[':path'] !== DEMO_GRPC_PATH) {
      stream.on('end', () => {
        onCall({ protocol: 'http', clientId });
        stream.respond({ ':status': 200, 'content-type': 'application/json' });
        stream.end(`${JSON.stringify({ service: 'web', youAre: clientId ?? null })}\n`);
      });
      return;
    }
    stream.on('end', () => {
      onCall({ protocol: 'grpc', clientId });
      const text = Buffer.from(`hello, ${clientId ?? 'stranger'}`);
      // One protobuf string field (1), gRPC-framed.
      const msg = Buffer.concat([Buffer.from([0x0a, text.length]), text]);
      const frame = Buffer.alloc(5 + msg.length);
      frame.writeUInt32BE(msg.length, 1);
      msg.copy(frame, 5);
      stream.respond(
        { ':status': 200, 'content-type': 'application/grpc' },
        { waitForTrailers: true },
      );
      stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(frame);
    });
  });
  const server: Server = createNetServer((socket) => {
    socket.once('data', (first: Buffer) => {
      socket.pause();
      const n = Math.min(first.length, PREFACE.length);
      if (first.subarray(0, n).equals(PREFACE.subarray(0, n))) {
        // Node's HTTP/2 server reads the socket's native handle, which would skip bytes already
        // read in JavaScript; a stream that replays them goes through JavaScript instead.
        h2.emit('connection', replaying(socket, first));
      } else {
        socket.unshift(first);
        h1.emit('connection', socket);
        socket.resume();
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const a = server.address();
  if (a === null || typeof a === 'string') throw new Error('web has no address');
  return {
    address: { host: a.address, port: a.port },
    close: () =>
      new Promise<void>((resolve) => {
        h1.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A duplex over `socket` that first yields `first`, the bytes already read from it. */
function replaying(socket: Socket, first: Buffer): Duplex {
  const d = new Duplex({
    read() {
      socket.resume();
    },
    write(chunk: Buffer, _enc, cb) {
      socket.write(chunk, cb);
    },
    final(cb) {
      socket.end();
      cb();
    },
    destroy(err, cb) {
      socket.destroy(err ?? undefined);
      cb(err);
    },
  });
  d.push(first);
  socket.on('data', (c: Buffer) => {
    if (!d.push(c)) socket.pause();
  });
  socket.on('end', () => d.push(null));
  socket.on('error', (e) => d.destroy(e));
  return d;
}

/** One HTTP/1.1 GET through `via`; resolves with the status. */
export function demoHttpCall(via: Address): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: via.host, port: via.port, path: '/', agent: false, timeout: 5000 },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

/** A gRPC caller over h2c through `via`; each call resolves with the grpc-status. */
export class DemoGrpcClient {
  #session: ClientHttp2Session | undefined;
  constructor(private readonly via: Address) {}

  call(): Promise<number> {
    if (this.#session === undefined || this.#session.destroyed || this.#session.closed) {
      this.#session = http2Connect(`http://${formatAddress(this.via)}`);
      this.#session.on('error', () => undefined);
    }
    const session = this.#session;
    return new Promise((resolve, reject) => {
      const stream = session.request({
        ':method': 'POST',
        ':path': DEMO_GRPC_PATH,
        'content-type': 'application/grpc',
        te: 'trailers',
      });
      stream.setTimeout(5000, () => stream.close());
      let status = -1;
      stream.on('trailers', (t) => (status = Number(t['grpc-status'])));
      stream.on('response', (h) => {
        if (h['grpc-status'] !== undefined) status = Number(h['grpc-status']);
      });
      stream.on('data', () => undefined);
      stream.on('end', () => resolve(status));
      stream.on('error', reject);
      stream.end(Buffer.from([0, 0, 0, 0, 0]));
    });
  }

  close(): void {
    this.#session?.close();
  }
}
