/**
 * Apps for the protocol tests, each recording what reached it (every `l5d-client-id` it saw, in
 * headers and trailers, whatever the case, and a digest of the body):
 *
 * - `http1`: node's HTTP/1.1 server, which cannot speak HTTP/2 (a preface gets a 400);
 * - `h2`: node's h2c server (prior knowledge only), which cannot speak HTTP/1.1;
 * - `dual`: both on one port, chosen by the first bytes (as Go's h2c servers do);
 * - `grpc`: a grpc-js server (h2c) with one unary method echoing the request and the caller's
 *   verified identity;
 * - and a WebSocket echo (the `ws` package) on the HTTP/1.1 side of `http1` and `dual`.
 *
 * Routes: `/echo` streams the body back; `/big?bytes=N` sends N deterministic bytes with
 * backpressure (counting what it managed to write); `/slow` never answers; `/reset` resets;
 * `/trailers` answers with a trailer; anything else says hello.
 */
import { createHash } from 'node:crypto';
import { EventEmitter, once } from 'node:events';
import { createServer as createHttpServer } from 'node:http';
import type { IncomingMessage, Server as HttpServer, ServerResponse } from 'node:http';
import { constants as h2, createServer as createHttp2Server } from 'node:http2';
import type {
  ClientHttp2Stream,
  Http2Server,
  Http2ServerRequest,
  Http2ServerResponse,
  IncomingHttpHeaders as Http2IncomingHeaders,
  IncomingHttpStatusHeader,
} from 'node:http2';
import { createServer as createNetServer } from 'node:net';
import type { AddressInfo, Server as NetServer, Socket } from 'node:net';
import {
  Server as GrpcServer,
  ServerCredentials,
  makeGenericClientConstructor,
} from '@grpc/grpc-js';
import type { ServiceDefinition, sendUnaryData, ServerUnaryCall } from '@grpc/grpc-js';
import { WebSocketServer } from 'ws';
import type { Address } from '../../core/index.js';

export type AppKind = 'http1' | 'h2' | 'dual' | 'grpc';

/** One request as the app saw it. */
export interface SeenRequest {
  readonly protocol: 'http1' | 'h2' | 'grpc' | 'websocket';
  readonly method: string;
  readonly path: string;
  /** Every `l5d-client-id` value among the headers, any case, in order. */
  readonly clientIds: readonly string[];
  /** Every `l5d-client-id` value among the trailers. */
  readonly trailerIds: readonly string[];
  readonly bodyLength: number;
  readonly bodySha256: string;
  readonly host: string | undefined;
  /** Every header name, lower case, in order (pseudo-headers excluded). */
  readonly headerNames: readonly string[];
}

/** The deterministic body of `/big`: byte i is i mod 251. */
export function bigBody(bytes: number): Buffer {
  const b = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i++) b[i] = i % 251;
  return b;
}

export function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Reads a stream (resuming it) to its end: how many bytes, and their SHA-256. */
export async function digestOf(
  stream: NodeJS.ReadableStream,
): Promise<{ bytes: number; sha256: string }> {
  const hash = createHash('sha256');
  let bytes = 0;
  stream.on('data', (d: Buffer) => {
    bytes += d.length;
    hash.update(d);
  });
  stream.resume();
  await once(stream as EventEmitter, 'end');
  return { bytes, sha256: hash.digest('hex') };
}

/** Reads an HTTP/2 answer: its headers, then its body as text to the end. */
export async function h2Answer(
  req: ClientHttp2Stream,
): Promise<{ headers: Http2IncomingHeaders & IncomingHttpStatusHeader; body: string }> {
  const [headers] = (await once(req, 'response')) as [
    Http2IncomingHeaders & IncomingHttpStatusHeader,
  ];
  let body = '';
  req.on('data', (d: Buffer) => (body += d.toString()));
  await once(req, 'end');
  return { headers, body };
}

function namesIn(raw: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (!raw[i]!.startsWith(':')) out.push(raw[i]!.toLowerCase());
  }
  return out;
}

function idsIn(raw: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (raw[i]!.toLowerCase() === 'l5d-client-id') out.push(raw[i + 1]!);
  }
  return out;
}

type AnyRequest = IncomingMessage | Http2ServerRequest;
type AnyResponse = ServerResponse | Http2ServerResponse;

/** The gRPC method: bytes in, bytes out (identity serialization, no proto needed). */
export const ECHO_SERVICE: ServiceDefinition = {
  say: {
    path: '/test.Echo/Say',
    requestStream: false,
    responseStream: false,
    requestSerialize: (b: Buffer) => b,
    requestDeserialize: (b: Buffer) => b,
    responseSerialize: (b: Buffer) => b,
    responseDeserialize: (b: Buffer) => b,
  },
};

/** A grpc-js client class for {@link ECHO_SERVICE}. */
export const EchoClient = makeGenericClientConstructor(ECHO_SERVICE, 'test.Echo');

/** A running test app. */
export class TestApp {
  readonly seen: SeenRequest[] = [];
  /** Emits 'request' per recorded request, 'blocked' when `/big` waits for drain. */
  readonly events = new EventEmitter();
  /** Bytes `/big` has written so far (the latest one). */
  bigWritten = 0;
  /** The latest `/big` wrote its last byte (so nothing between it and the reader held it back). */
  bigDone = false;
  address: Address = { host: '127.0.0.1', port: 0 };
  readonly #closers: (() => Promise<void>)[] = [];
  readonly #sockets = new Set<Socket>();

  private constructor(readonly kind: AppKind) {}

  static async start(kind: AppKind): Promise<TestApp> {
    const app = new TestApp(kind);
    if (kind === 'grpc') await app.#startGrpc();
    else await app.#startHttp(kind);
    return app;
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    for (const c of this.#closers.reverse()) await c();
  }

  /** Waits until `n` requests were recorded (bounded). */
  async waitForRequests(n: number): Promise<void> {
    const signal = AbortSignal.timeout(15_000);
    while (this.seen.length < n) await once(this.events, 'request', { signal });
  }

  #record(r: SeenRequest): void {
    this.seen.push(r);
    this.events.emit('request', r);
  }

  #handle(protocol: 'http1' | 'h2', req: AnyRequest, anyRes: AnyResponse): void {
    // The HTTP/2 compatibility API has the same shape; one type keeps the calls simple.
    const res = anyRes as ServerResponse;
    const url = new URL(req.url ?? '/', 'http://app');
    const hash = createHash('sha256');
    let length = 0;
    const echo = url.pathname === '/echo';
    if (url.pathname === '/reset') {
      if ('stream' in req) req.stream.close(h2.NGHTTP2_INTERNAL_ERROR);
      else req.socket.destroy();
      return;
    }
    req.on('data', (d: Buffer) => {
      hash.update(d);
      length += d.length;
      if (echo) res.write(d);
    });
    if (echo) {
      res.writeHead(200, { 'x-app': this.kind, 'x-app-protocol': protocol });
    }
    req.on('end', () => {
      this.#record({
        protocol,
        method: req.method ?? '',
        path: req.url ?? '',
        clientIds: idsIn(req.rawHeaders),
        trailerIds: idsIn(req.rawTrailers),
        bodyLength: length,
        bodySha256: hash.digest('hex'),
        host: protocol === 'h2' ? String(req.headers[':authority'] ?? '') : req.headers.host,
        headerNames: namesIn(req.rawHeaders),
      });
      switch (url.pathname) {
        case '/echo':
          res.end();
          return;
        case '/slow':
          return; // never answers; closed with the app
        case '/big':
          this.#big(res, Number(url.searchParams.get('bytes') ?? '0'));
          return;
        case '/trailers':
          res.writeHead(200, { 'x-app': this.kind, trailer: 'x-checksum' });
          res.write('with trailers\n');
          res.addTrailers({ 'x-checksum': 'abc123' });
          res.end();
          return;
        default:
          res.writeHead(200, {
            'content-type': 'text/plain',
            'x-app': this.kind,
            'x-app-protocol': protocol,
          });
          res.end(`hello from the ${this.kind} app over ${protocol}: ${req.method} ${req.url}\n`);
      }
    });
  }

  /** Writes `/big` in 64 KiB slices, waiting for drain whenever the write buffer is full. */
  #big(res: ServerResponse, bytes: number): void {
    const body = bigBody(bytes);
    res.writeHead(200, { 'x-app': this.kind, 'content-type': 'application/octet-stream' });
    let at = 0;
    this.bigWritten = 0;
    this.bigDone = false;
    const pump = (): void => {
      while (at < body.length) {
        const slice = body.subarray(at, Math.min(at + 65_536, body.length));
        at += slice.length;
        this.bigWritten = at;
        if (!res.write(slice)) {
          this.events.emit('blocked', at);
          res.once('drain', pump);
          return;
        }
      }
      this.bigDone = true;
      res.end();
    };
    pump();
  }

  /**
   * Resolves with what `/big` has written once it has been held back for `quietMs` with no
   * progress: the path to a reader that is not reading is full. Rejects if `/big` wrote its
   * whole body first (something on the path buffered it all) or nothing stalls within 30 s.
   */
  async untilStalled(quietMs = 1000): Promise<number> {
    const deadline = Date.now() + 30_000;
    let last = -1;
    let since = Date.now();
    for (;;) {
      if (this.bigDone) {
        throw new Error(`all ${this.bigWritten} bytes were written to a reader that read none`);
      }
      if (this.bigWritten !== last) {
        last = this.bigWritten;
        since = Date.now();
      } else if (last > 0 && Date.now() - since >= quietMs) {
        return last;
      }
      if (Date.now() > deadline) throw new Error(`/big never stalled (at ${this.bigWritten})`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async #listen(server: NetServer | HttpServer | Http2Server): Promise<void> {
    server.on('connection', (s: Socket) => {
      this.#sockets.add(s);
      s.once('close', () => this.#sockets.delete(s));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    this.address = { host: '127.0.0.1', port: (server.address() as AddressInfo).port };
    this.#closers.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  }

  async #startHttp(kind: 'http1' | 'h2' | 'dual'): Promise<void> {
    const http1 = createHttpServer((req, res) => this.#handle('http1', req, res));
    const http2 = createHttp2Server((req, res) => this.#handle('h2', req, res));
    const wss = new WebSocketServer({ noServer: true });
    http1.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
      if (req.url !== '/ws') {
        socket.destroy();
        return;
      }
      wss.handleUpgrade(req, socket, head, (ws) => {
        this.#record({
          protocol: 'websocket',
          method: req.method ?? '',
          path: req.url ?? '',
          clientIds: idsIn(req.rawHeaders),
          trailerIds: [],
          bodyLength: 0,
          bodySha256: '',
          host: req.headers.host,
          headerNames: namesIn(req.rawHeaders),
        });
        ws.on('message', (data: Buffer, binary: boolean) =>
          ws.send(binary ? data : `echo: ${data.toString()}`, { binary }),
        );
      });
    });
    this.#closers.push(async () => {
      for (const c of wss.clients) c.terminate();
      wss.close();
    });
    if (kind === 'http1') {
      await this.#listen(http1);
      return;
    }
    if (kind === 'h2') {
      await this.#listen(http2);
      return;
    }
    // dual: the first bytes choose the server.
    const front = createNetServer((socket) => {
      socket.once('data', (first: Buffer) => {
        socket.pause();
        socket.unshift(first);
        // (node's HTTP/2 server reads the socket itself: it must not be resumed here.)
        if (first.subarray(0, 3).toString('latin1') === 'PRI') http2.emit('connection', socket);
        else {
          http1.emit('connection', socket);
          socket.resume();
        }
      });
    });
    await this.#listen(front);
  }

  async #startGrpc(): Promise<void> {
    const server = new GrpcServer();
    server.addService(ECHO_SERVICE, {
      say: (call: ServerUnaryCall<Buffer, Buffer>, callback: sendUnaryData<Buffer>) => {
        const ids = call.metadata.get('l5d-client-id').map(String);
        this.#record({
          protocol: 'grpc',
          method: 'POST',
          path: '/test.Echo/Say',
          clientIds: ids,
          trailerIds: [],
          bodyLength: call.request.length,
          bodySha256: sha256(call.request),
          host: undefined,
          headerNames: Object.keys(call.metadata.getMap()),
        });
        callback(
          null,
          Buffer.concat([Buffer.from(`grpc app saw ${ids.join(',')}: `), call.request]),
        );
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) =>
        err === null ? resolve(p) : reject(err),
      ),
    );
    this.address = { host: '127.0.0.1', port };
    this.#closers.push(async () => {
      server.forceShutdown();
    });
  }
}
