/**
 * The inbound HTTP/1.1 path: one client connection relayed to one application connection,
 * request heads rewritten on the way, everything else forwarded as it came.
 *
 * Per request: the head is parsed strictly (http1-parse.ts); every `l5d-client-id` the client
 * wrote is dropped, whatever its case and however many, together with hop-by-hop fields; the
 * verified identity is added as `l5d-client-id: <peer>`; the body follows by its framing
 * (Content-Length, or chunked: decoded only to find its end, forwarded unchanged, trailers
 * filtered the same way). Requests that could be read two ways are refused with 400 and the
 * connection closed, nothing of them forwarded. Keep-alive and pipelining carry over: requests go
 * to the app in order on its connection, and its answers come back in the same order.
 *
 * Per response: the head is parsed for status and framing (HEAD, 1xx, 204, 304, Content-Length,
 * chunked, until close) so that each exchange is timed for the latency histogram and the
 * connection closes when either side says so; the bytes go back unchanged (except for
 * `connection: close` while the proxy shuts down).
 *
 * Bodies are delimited by http1-body.ts. Compared with re-issuing each request through node's HTTP server and client, there are no
 * per-request streams, header objects or agent sockets, and most bytes are never copied.
 */
import { connect as netConnect } from 'node:net';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Address, Logger } from '../core/index.js';
import {
  Body,
  CRLF,
  HEAD,
  Out,
  UNTIL_CLOSE,
  consumeBody,
  proxyResponse,
  writeAll,
} from './http1-body.js';
import {
  Collector,
  Http1ParseError,
  MAX_HEAD_BYTES,
  equalsLower,
  parseRequestHead,
  parseResponseHead,
} from './http1-parse.js';
import type { RequestHead } from './http1-parse.js';
import { appFailure, failureBody } from './translate.js';

/** Settings of one {@link Http1Relay}. */
export interface Http1RelayOptions {
  /** The client's stream (decrypted TLS, or plaintext when allowed). */
  readonly client: Socket;
  readonly app: Address;
  /** The verified peer identity; undefined for plaintext (then no `l5d-client-id` is added). */
  readonly peer: string | undefined;
  /** Why the policy denied this connection; undefined when allowed. */
  readonly denied: string | undefined;
  /** The header name carrying the identity (lower case). */
  readonly clientIdHeader: string;
  /** The header on responses the proxy makes itself. */
  readonly errorHeader: string;
  readonly logger: Logger;
  /** The `appTimeoutMs` the owner checks with {@link Http1Relay.expire}, for the 504 text. */
  readonly appTimeoutMs?: number;
  /** One call per finished exchange; status 0 when it broke off before a status. */
  readonly onExchange: (method: string, status: number, durationMs: number) => void;
}

/** One request sent to the app, waiting for its answer. */
interface Exchange {
  readonly method: string;
  readonly started: number;
  /** When the whole request had gone to the app (0 while its body is still going). */
  sent: number;
  /** The request asks to switch protocols (WebSocket) and the proxy forwarded that. */
  readonly upgrade: boolean;
  /** The status of the final response, once its head came. */
  status: number;
  /** The connection ends after this exchange. */
  closeAfter: boolean;
}

/**
 * Relays one HTTP/1.1 client connection to the app.
 *
 * @example
 * ```ts
 * const relay = new Http1Relay({ client: tlsSocket, app, peer, denied: undefined, ... });
 * relay.start(firstBytes);
 * // on shutdown:
 * relay.drain();
 * ```
 */
export class Http1Relay {
  readonly #o: Http1RelayOptions;
  readonly #client: Socket;
  #app: Socket | undefined;
  /** `l5d-client-id: <peer>\r\n\r\n`, or `\r\n` for plaintext: the end of every request head. */
  readonly #headTail: Buffer;
  readonly #queue: Exchange[] = [];

  readonly #reqHead = new Collector('block', MAX_HEAD_BYTES, true);
  readonly #req = new Body();
  readonly #resHead = new Collector('block', MAX_HEAD_BYTES);
  readonly #res = new Body();
  readonly #reqOut = new Out();
  readonly #resOut = new Out();

  /** No more requests are read (one asked to close, was refused, or the proxy is draining). */
  #noMoreRequests = false;
  /** A refusal to send once the answers before it are out. */
  #refusal: Http1ParseError | undefined;
  #clientEnded = false;
  #draining = false;
  #finished = false;
  /** When the head being read started arriving, if it spans chunks (for the stall sweep). */
  #headSince = 0;
  #clientPaused = false;
  #appPaused = false;
  /** An upgrade request is out: client bytes wait here until the app answers it. */
  #held: Buffer[] | undefined;
  /** Switched protocols: bytes are piped both ways, nothing parsed. */
  #tunnel = false;
  /** The app connection's error, to name the cause in a 502. */
  #appError: Error | undefined;
  readonly #onClient = (chunk: Buffer): void => this.#onClientData(chunk);
  readonly #onApp = (chunk: Buffer): void => this.#onAppData(chunk);

  constructor(options: Http1RelayOptions) {
    this.#o = options;
    this.#client = options.client;
    this.#headTail =
      options.peer === undefined
        ? CRLF
        : Buffer.from(`${options.clientIdHeader}: ${options.peer}\r\n\r\n`, 'latin1');
  }

  /** The app-side socket, once connected (for the owner's cleanup). */
  get appSocket(): Socket | undefined {
    return this.#app;
  }

  /** Starts relaying; `first` are bytes already read from the client. */
  start(first: Buffer): void {
    const client = this.#client;
    if (this.#o.denied === undefined) this.#connectApp();
    client.on('data', this.#onClient);
    client.on('end', () => this.#onClientEnd());
    client.on('close', () => this.#onClientClose());
    if (first.length > 0) this.#onClientData(first);
    client.resume();
  }

  /** The proxy is shutting down: finish the exchange in progress, then close. */
  drain(): void {
    if (this.#tunnel) return; // no boundary to stop at, as for opaque connections
    this.#draining = true;
    this.#noMoreRequests = true;
    // A head still arriving is dropped: it was not a request yet.
    if (this.#idle()) this.#finish();
  }

  /** How long a request head has been arriving, ms (0 when none is). */
  stalledFor(now: number): number {
    return this.#headSince === 0 ? 0 : now - this.#headSince;
  }

  /**
   * Answers 504 when the oldest exchange's request went out more than `timeoutMs` ago and
   * nothing of its answer came; the connection closes after it. Returns whether it did.
   */
  expire(now: number, timeoutMs: number): boolean {
    const first = this.#queue[0];
    if (
      this.#finished ||
      this.#tunnel ||
      first === undefined ||
      first.upgrade ||
      first.sent === 0 ||
      first.status !== 0 ||
      this.#resHead.length > 0 ||
      now - first.sent <= timeoutMs
    ) {
      return false;
    }
    this.#failExchange(first, 'timeout');
    return true;
  }

  /** Closes both sides now. */
  destroy(): void {
    this.#finished = true;
    this.#app?.destroy();
    this.#client.destroy();
  }

  #connectApp(): void {
    const app = netConnect({ host: this.#o.app.host, port: this.#o.app.port });
    this.#app = app;
    app.setNoDelay(true);
    app.on('data', this.#onApp);
    app.on('drain', () => {
      if (this.#clientPaused) {
        this.#clientPaused = false;
        if (!this.#finished) this.#client.resume();
      }
    });
    app.on('error', (err) => {
      this.#appError ??= err;
      this.#o.logger.debug({ err: err.message }, 'inbound app connection');
    });
    app.on('end', () => this.#onAppGone());
    app.on('close', () => this.#onAppGone());
    this.#client.on('drain', () => {
      if (this.#appPaused) {
        this.#appPaused = false;
        if (!this.#finished) app.resume();
      }
    });
  }

  #idle(): boolean {
    return this.#queue.length === 0 && this.#req.state === HEAD && this.#refusal === undefined;
  }

  // ---- client → app ----

  #onClientData(buf: Buffer): void {
    if (this.#held !== undefined) {
      // Bytes behind an upgrade request belong to the new protocol (or, if the app declines,
      // to nobody: the connection closes after its answer). Wait for the answer.
      this.#held.push(buf);
      this.#client.pause();
      return;
    }
    if (this.#finished || this.#noMoreRequests) {
      // Between a request that closes the connection and the close, bytes are ignored; but a
      // body still being forwarded goes on.
      if (this.#finished || this.#req.state === HEAD) return;
    }
    const out = this.#reqOut;
    out.reset(buf);
    let pos = 0;
    const len = buf.length;
    try {
      while (pos < len) {
        if (this.#req.state === HEAD) {
          if (this.#noMoreRequests) {
            out.skip(len);
            pos = len;
            break;
          }
          pos = this.#requestHead(buf, pos, out);
          if (this.#finished) return;
          // (#requestHead may have started holding: TypeScript's narrowing cannot see that.)
          const holding = this.#held as Buffer[] | undefined;
          if (holding !== undefined) {
            out.flush(pos);
            if (pos < len) holding.push(buf.subarray(pos));
            this.#client.pause();
            this.#toApp(out.parts);
            return;
          }
        } else {
          pos = consumeBody(this.#req, buf, pos, out, this.#o.clientIdHeader);
          if (this.#req.state === HEAD) this.#sentAll();
        }
      }
      out.flush(len);
    } catch (err) {
      if (!(err instanceof Http1ParseError)) throw err;
      this.#refuse(err, out, pos);
      return;
    }
    this.#toApp(out.parts);
  }

  /** Reads a request head starting at `pos`; returns where its bytes end in `buf`. */
  #requestHead(buf: Buffer, pos: number, out: Out): number {
    const collector = this.#reqHead;
    const held = collector.length;
    const end = collector.feed(buf, pos);
    if (end === -1) {
      if (this.#headSince === 0) this.#headSince = performance.now();
      out.flush(pos);
      out.skip(buf.length);
      return buf.length;
    }
    this.#headSince = 0;
    const head = collector.take(buf, pos, end);
    const req = parseRequestHead(head, head.length, this.#o.clientIdHeader);
    if (this.#o.denied !== undefined) {
      this.#deny(req.method);
      return buf.length;
    }
    const now = performance.now();
    const upgrade = req.upgrade !== undefined;
    this.#queue.push({
      method: req.method,
      started: now,
      sent: req.framing.kind === 'none' ? now : 0,
      upgrade,
      status: 0,
      closeAfter: req.close,
    });
    if (req.close) this.#noMoreRequests = true;
    this.#rewriteHead(head, req, held === 0 ? pos : -1, end, out);
    this.#req.start(req.framing);
    if (upgrade) this.#held = [];
    return end;
  }

  /**
   * Forwards a request head without any `l5d-client-id` or hop-by-hop line, with the verified
   * one added. `inPlaceAt` is where the head starts in the chunk being forwarded, or -1 when it
   * was collected from several chunks (then it is not in the chunk's run at all).
   */
  #rewriteHead(head: Buffer, req: RequestHead, inPlaceAt: number, end: number, out: Out): void {
    // Empty lines before the request line are not passed on.
    const startLine = leadingEmpty(head);
    if (req.drop.size === 0 && req.connection === undefined) {
      // The usual case: the head as sent, up to its empty line, then the verified identity.
      if (inPlaceAt >= 0) {
        out.flush(inPlaceAt);
        out.skip(inPlaceAt + startLine);
        out.replace(inPlaceAt + head.length - 2, [this.#headTail], end);
      } else {
        out.replace(0, [head.subarray(startLine, head.length - 2), this.#headTail], end);
      }
      return;
    }
    const parts: Buffer[] = [head.subarray(startLine, req.headersStart)];
    let runStart = req.headersStart;
    for (const h of req.headers) {
      if (!req.drop.has(h)) continue;
      if (h.start > runStart) parts.push(head.subarray(runStart, h.start));
      runStart = h.end;
    }
    if (head.length - 2 > runStart) parts.push(head.subarray(runStart, head.length - 2));
    if (req.connection !== undefined && req.connection !== '')
      parts.push(Buffer.from(`connection: ${req.connection}\r\n`, 'latin1'));
    parts.push(this.#headTail);
    out.replace(inPlaceAt >= 0 ? inPlaceAt : 0, parts, end);
  }

  /** The request being read has gone to the app whole: its answer's clock starts. */
  #sentAll(): void {
    const last = this.#queue[this.#queue.length - 1];
    if (last !== undefined && last.sent === 0) last.sent = performance.now();
  }

  #toApp(parts: readonly Buffer[]): void {
    const app = this.#app;
    if (parts.length === 0 || app === undefined || app.destroyed) return;
    if (!writeAll(app, parts) && !this.#clientPaused) {
      this.#clientPaused = true;
      this.#client.pause();
    }
  }

  /** A denied connection: 403 to its first request, the app never contacted. */
  #deny(method: string): void {
    const reason = this.#o.denied ?? '';
    this.#noMoreRequests = true;
    this.#finished = true;
    const started = performance.now();
    this.#client.end(proxyResponse(403, this.#o.errorHeader, reason, `forbidden: ${reason}\n`));
    this.#o.onExchange(method, 403, performance.now() - started);
  }

  /**
   * A request the proxy will not forward. If its head was the problem, nothing of it went to the
   * app: the answers to earlier requests go out first, then the refusal. If its chunked body was
   * (part of it already forwarded), the app connection is reset so that it can never read on.
   */
  #refuse(err: Http1ParseError, out: Out, pos: number): void {
    this.#o.logger.debug({ err: err.message }, 'inbound HTTP/1 request refused');
    this.#noMoreRequests = true;
    this.#client.pause();
    if (this.#req.state === HEAD) {
      // Bytes before the bad head were whole requests: they go on.
      out.flush(pos);
      this.#toApp(out.parts);
      this.#refusal = err;
      if (this.#queue.length === 0) this.#sendRefusal();
      return;
    }
    this.#req.state = HEAD;
    this.#app?.destroy();
    const current = this.#queue[this.#queue.length - 1];
    if (
      this.#queue.length === 1 &&
      current !== undefined &&
      this.#res.state === HEAD &&
      this.#resHead.length === 0
    ) {
      this.#queue.pop();
      this.#refusal = err;
      this.#sendRefusal();
      return;
    }
    this.destroy();
  }

  #sendRefusal(): void {
    const err = this.#refusal!;
    this.#finished = true;
    this.#client.end(
      proxyResponse(err.status, this.#o.errorHeader, err.message, `${err.detail ?? err.message}\n`),
    );
    this.#app?.end();
  }

  #onClientEnd(): void {
    this.#clientEnded = true;
    if (this.#finished || this.#tunnel) return;
    if (this.#req.state !== HEAD || this.#reqHead.length > 0) {
      // A request cut short can never be completed.
      this.destroy();
      return;
    }
    this.#noMoreRequests = true;
    if (this.#queue.length === 0 && this.#refusal === undefined) this.#finish();
  }

  #onClientClose(): void {
    if (this.#tunnel) {
      this.#app?.destroy();
      return;
    }
    this.#finished = true;
    this.#app?.destroy();
    for (const e of this.#queue.splice(0)) {
      this.#o.onExchange(e.method, e.status, performance.now() - e.started);
    }
  }

  // ---- app → client ----

  #onAppData(buf: Buffer): void {
    if (this.#finished) return;
    const out = this.#resOut;
    out.reset(buf);
    let pos = 0;
    const len = buf.length;
    let closeAfter = false;
    let tunnelAt = -1;
    try {
      while (pos < len && !closeAfter && tunnelAt === -1) {
        const body = this.#res;
        if (body.state === HEAD) {
          if (this.#queue.length === 0) {
            // The app spoke with no request outstanding: nothing to relate it to.
            throw new Http1ParseError(400, 'response without a request');
          }
          pos = this.#responseHead(buf, pos, out);
          if (this.#queue[0]?.status === 101) {
            tunnelAt = pos;
          } else if (
            body.state === HEAD &&
            this.#resHead.length === 0 &&
            this.#queue[0]!.status !== 0
          ) {
            closeAfter = this.#complete();
          }
        } else if (body.state === UNTIL_CLOSE) {
          pos = len;
        } else {
          pos = consumeBody(body, buf, pos, out, undefined);
          if (body.state === HEAD) closeAfter = this.#complete();
        }
      }
      out.flush(pos);
    } catch (err) {
      if (!(err instanceof Http1ParseError)) throw err;
      this.#o.logger.debug({ err: err.message }, 'inbound app response unreadable');
      this.destroy();
      return;
    }
    const client = this.#client;
    if (tunnelAt !== -1) {
      if (out.parts.length > 0) writeAll(client, out.parts);
      this.#startTunnel(buf.subarray(tunnelAt));
      return;
    }
    if (out.parts.length > 0 && !writeAll(client, out.parts) && !this.#appPaused) {
      this.#appPaused = true;
      this.#app?.pause();
    }
    if (closeAfter) this.#finish();
    else if (this.#queue.length === 0) this.#afterLastAnswer();
  }

  /** Reads a response head; returns where its bytes end. Sets the exchange's status. */
  #responseHead(buf: Buffer, pos: number, out: Out): number {
    const collector = this.#resHead;
    const held = collector.length;
    const end = collector.feed(buf, pos);
    if (end === -1) {
      out.flush(pos);
      out.skip(buf.length);
      return buf.length;
    }
    const head = collector.take(buf, pos, end);
    const exchange = this.#queue[0]!;
    const res = parseResponseHead(head, head.length, exchange.method);
    if (res.status === 101) {
      // Only an upgrade the proxy forwarded may be accepted.
      if (!exchange.upgrade) throw new Http1ParseError(400, 'unexpected 101');
      exchange.status = 101;
      if (held > 0) out.replace(pos, [head], end);
      return end;
    }
    if (res.status < 200) {
      // An interim answer (100 Continue): passed on; the final one follows.
      if (held > 0) out.replace(pos, [head], end);
      return end;
    }
    exchange.status = res.status;
    // The app declined the upgrade: whatever the client sent behind it was meant for the new
    // protocol, so the connection ends with this answer.
    if (res.close || exchange.upgrade) exchange.closeAfter = true;
    if (this.#draining) {
      exchange.closeAfter = true;
      const parts: Buffer[] = [head.subarray(0, res.headersStart)];
      for (const h of res.headers) {
        if (
          !equalsLower(head, h.start, h.colon, 'connection') &&
          !equalsLower(head, h.start, h.colon, 'keep-alive')
        )
          parts.push(head.subarray(h.start, h.end));
      }
      parts.push(Buffer.from('connection: close\r\n\r\n', 'latin1'));
      out.replace(held > 0 ? 0 : pos, parts, end);
    } else if (held > 0) {
      out.replace(0, [head], end);
    }
    this.#res.start(res.framing);
    return end;
  }

  /** The response to the oldest request is complete. Returns whether the connection ends. */
  #complete(): boolean {
    const e = this.#queue.shift()!;
    this.#o.onExchange(e.method, e.status, performance.now() - e.started);
    return e.closeAfter;
  }

  #afterLastAnswer(): void {
    if (this.#refusal !== undefined) this.#sendRefusal();
    else if ((this.#draining || this.#clientEnded) && this.#idle()) this.#finish();
  }

  /**
   * The app accepted a protocol switch: from here the bytes are piped both ways unparsed (the
   * identity was added to the upgrade request), with half-close, until either side closes.
   */
  #startTunnel(fromApp: Buffer): void {
    const app = this.#app!;
    const client = this.#client;
    this.#tunnel = true;
    this.#complete();
    client.off('data', this.#onClient);
    app.off('data', this.#onApp);
    if (fromApp.length > 0) client.write(fromApp);
    for (const b of this.#held ?? []) app.write(b);
    this.#held = undefined;
    this.#clientPaused = false;
    this.#appPaused = false;
    client.pipe(app);
    app.pipe(client);
    app.on('close', () => {
      if (client.writableFinished || client.destroyed) client.destroy();
      else client.once('finish', () => client.destroy());
    });
  }

  /** Ends the oldest exchange with a proxy-made 502 or 504 and closes the connection. */
  #failExchange(first: Exchange, cause: Error | 'timeout' | 'closed'): void {
    this.#queue.shift();
    this.#finished = true;
    const f = appFailure(this.#o.app, cause, this.#o.appTimeoutMs ?? 0);
    this.#client.end(proxyResponse(f.status, this.#o.errorHeader, f.reason, failureBody(f)));
    this.#app?.destroy();
    this.#o.onExchange(first.method, f.status, performance.now() - first.started);
  }

  #onAppGone(): void {
    if (this.#finished || this.#tunnel) return;
    if (this.#res.state === UNTIL_CLOSE) {
      this.#complete();
      this.#finish();
      return;
    }
    const first = this.#queue[0];
    if (first !== undefined && first.status === 0 && this.#resHead.length === 0) {
      // Nothing of the answer came: the app is unreachable or closed on the request.
      this.#failExchange(first, this.#appError ?? 'closed');
      return;
    }
    if (first === undefined && this.#req.state === HEAD && this.#reqHead.length === 0) {
      // Between exchanges: the app closed its keep-alive connection; so does the proxy.
      this.#finish();
      return;
    }
    this.destroy();
  }

  #finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#client.end();
    this.#app?.end();
  }
}

/** Length of the empty lines before a request line. */
function leadingEmpty(head: Buffer): number {
  let i = 0;
  while (head[i] === 0x0d && head[i + 1] === 0x0a) i += 2;
  return i;
}
