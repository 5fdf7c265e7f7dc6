/**
 * A generic HTTPS server for admission webhooks (linkerd's `controller/webhook/server.go`): one
 * path per handler, AdmissionReview v1 in and out, a bounded body (413 past it), a bounded nesting
 * (400 as soon as the body nests past core's maxJsonDepth, measured as it arrives, so a deep body
 * never reaches the parser), a clear 400 for a malformed review, a 500 for a handler that throws (the server carries on), and the serving
 * certificate reloaded from its folder when it changes, without a restart.
 */
import { createHash, createPrivateKey, X509Certificate } from 'node:crypto';
import { createServer } from 'node:https';
import type { Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createSecureContext } from 'node:tls';
import type { SecureContextOptions, TLSSocket } from 'node:tls';
import { join } from 'node:path';
import {
  DEFAULTS,
  JsonDepthMeter,
  JsonTooDeep,
  LISTENER_LIMITS,
  LogKey,
  MeshidError,
  applyHttpTimeouts,
  fipsCertificateProblem,
  isMeshidError,
  systemClock,
  watchFiles,
  limitConnections,
  listenOn,
  negotiatedAlgorithms,
} from '../core/index.js';
import type {
  Address,
  Clock,
  HttpListenerLimits,
  Logger,
  PeerBudget,
  Timers,
  TlsAlgorithms,
  WatchedFile,
} from '../core/index.js';
import { admissionResponse, parseAdmissionReview } from './admission.js';
import type { AdmissionHandler } from './admission.js';

/** Options of {@link AdmissionServer.start}. */
interface AdmissionServerOptions {
  readonly listen: Address;
  /** Folder holding `tls.crt` (the certificate first, then its chain) and `tls.key`. */
  readonly tlsDir: string;
  /** Handlers by path, e.g. `{ '/inject': injector, '/validate': guard }`. */
  readonly handlers: Readonly<Record<string, AdmissionHandler>>;
  readonly logger: Logger;
  /** Largest body read; default {@link DEFAULTS.maxReviewBytes}. */
  readonly maxBodyBytes?: number;
  /** Re-check of the certificate files besides watching the folder; default 10 s. */
  readonly reloadIntervalMs?: number;
  /** For the re-check and the reload debounce; default the system's. */
  readonly clock?: Clock;
  readonly timers?: Timers;
  /**
   * TLS settings (versions, suites, curves); default TLS 1.2 and up, which every supported API
   * server speaks. In FIPS mode the CLI passes core's FIPS_TLS.
   */
  readonly tls?: Readonly<SecureContextOptions>;
  /**
   * FIPS mode: a serving certificate outside the FIPS policy (its key or signature) is refused
   * like a broken pair: at start the server does not start, on reload the last good pair stays.
   */
  readonly fips?: boolean;
  /** Connections per peer address and in all, and request times; default LISTENER_LIMITS.webhooks. */
  readonly limits?: HttpListenerLimits;
}

interface ServingPair {
  /** The TLS options the server is serving with (the certificate and key included). */
  readonly context: SecureContextOptions;
  /** Hex SHA-256 of the certificate (DER), for logs. */
  readonly fingerprint: string;
  readonly notAfter: string;
}

class BodyTooLarge extends MeshidError {
  constructor(limit: number) {
    super('ERR_WEBHOOK_REVIEW_TOO_LARGE', `the request body is larger than ${limit} bytes`);
  }
}

/**
 * Checks the serving pair read from `dir`: the certificate parses, the key parses and belongs to
 * it, and TLS accepts them with the server's settings. Throws ERR_WEBHOOK_TLS_INVALID naming the
 * problem, or in FIPS mode ERR_FIPS_MATERIAL_REFUSED for a certificate outside the policy.
 */
function servingPair(
  dir: string,
  [certBytes, keyBytes]: readonly (Buffer | undefined)[],
  options: AdmissionServerOptions,
): ServingPair {
  const cert = certBytes!.toString('utf8');
  const key = keyBytes!.toString('utf8');
  const invalid = (message: string, cause?: unknown): MeshidError =>
    new MeshidError('ERR_WEBHOOK_TLS_INVALID', message, { cause });
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch (err) {
    throw invalid(`${dir}/tls.crt does not hold a certificate: ${(err as Error).message}`, err);
  }
  let matches: boolean;
  try {
    matches = x509.checkPrivateKey(createPrivateKey(key));
  } catch (err) {
    throw invalid(`${dir}/tls.key does not hold a private key: ${(err as Error).message}`, err);
  }
  if (!matches) throw invalid(`${dir}/tls.key is not the key of the certificate in ${dir}/tls.crt`);
  const problem = options.fips === true ? fipsCertificateProblem(x509.raw) : undefined;
  if (problem !== undefined)
    throw new MeshidError(
      'ERR_FIPS_MATERIAL_REFUSED',
      `FIPS mode refused the serving certificate in ${dir}/tls.crt: ${problem}`,
    );
  const context: SecureContextOptions = { minVersion: 'TLSv1.2', ...options.tls, cert, key };
  try {
    createSecureContext(context);
  } catch (err) {
    throw invalid(`TLS refused the serving pair in ${dir}: ${(err as Error).message}`, err);
  }
  return {
    context,
    fingerprint: createHash('sha256').update(x509.raw).digest('hex'),
    notAfter: new Date(x509.validTo).toISOString(),
  };
}

/**
 * The running admission server.
 *
 * @example
 * ```ts
 * const server = await AdmissionServer.start({
 *   listen: { host: '::', port: 8443 },
 *   tlsDir: '/var/run/meshid/tls',
 *   handlers: { '/inject': injector, '/validate': guard },
 *   logger,
 * });
 * server.address.port;
 * ```
 */
export class AdmissionServer {
  readonly #server: Server;
  readonly #options: AdmissionServerOptions;
  readonly #log: Logger;
  readonly #maxBody: number;
  readonly #pair: WatchedFile<ServingPair>;
  readonly #connections: PeerBudget;
  /** What each connection's handshake negotiated, read once when it finishes (for the log). */
  readonly #algorithms = new WeakMap<object, TlsAlgorithms>();

  private constructor(options: AdmissionServerOptions, pair: WatchedFile<ServingPair>) {
    this.#options = options;
    this.#log = options.logger;
    this.#maxBody = options.maxBodyBytes ?? DEFAULTS.maxReviewBytes;
    this.#pair = pair;
    this.#server = createServer(pair.current().context, (req, res) => {
      void this.#handle(req, res);
    });
    // Slow or stalled clients are cut off (the API server's own timeout is at most 30 s), and
    // one peer cannot hold every connection the server will take.
    const limits = options.limits ?? LISTENER_LIMITS.webhooks;
    applyHttpTimeouts(this.#server, limits.http);
    this.#connections = limitConnections(
      this.#server,
      limits.connections,
      (peer, hit, limit, refused) =>
        this.#log.warn(
          { [LogKey.address]: peer, hit, limit, refused },
          'webhooks refusing connections: limit reached',
        ),
    );
    this.#server.on('secureConnection', (socket: TLSSocket) =>
      this.#algorithms.set(socket, negotiatedAlgorithms(socket)),
    );
    this.#server.on('tlsClientError', (err) =>
      this.#log.debug({ err: err.message }, 'TLS handshake failed'),
    );
  }

  /**
   * Loads the serving pair (refusing to start without a valid one), listens, and starts watching
   * the folder.
   */
  static async start(options: AdmissionServerOptions): Promise<AdmissionServer> {
    const dir = options.tlsDir;
    // A mounted Secret changes by an atomic swap of the folder's `..data` link; files written in
    // place show too; the periodic re-read is the guarantee.
    const pair = await watchFiles(
      [{ path: join(dir, 'tls.crt') }, { path: join(dir, 'tls.key') }],
      (contents) => servingPair(dir, contents, options),
      {
        clock: options.clock ?? systemClock,
        logger: options.logger,
        code: 'ERR_WEBHOOK_TLS_INVALID',
        what: 'serving certificate',
        recheckMs: options.reloadIntervalMs ?? DEFAULTS.webhooksTlsReloadMs,
        ...(options.timers === undefined ? {} : { timers: options.timers }),
      },
    );
    const server = new AdmissionServer(options, pair);
    try {
      await listenOn(server.#server, options.listen, { logger: server.#log, name: 'webhooks' });
    } catch (err) {
      await pair.close();
      throw err;
    }
    pair.on('change', (next, previous) => {
      server.#server.setSecureContext(next.context);
      server.#log.info(
        { fingerprint: next.fingerprint, previous: previous.fingerprint, notAfter: next.notAfter },
        'serving certificate reloaded',
      );
    });
    pair.on('rejected', (err) =>
      // Mid-rotation (one file written, not the other) is normal for a moment; the next read
      // picks up the finished pair.
      server.#log.warn(
        { err: err.message, fingerprint: pair.current().fingerprint },
        'serving certificate not reloaded; the last good one stays in use',
      ),
    );
    const first = pair.current();
    server.#log.info(
      { fingerprint: first.fingerprint, notAfter: first.notAfter },
      'serving certificate loaded',
    );
    return server;
  }

  /** The bound address. */
  get address(): Address {
    const a = this.#server.address() as AddressInfo;
    return { host: a.address, port: a.port };
  }

  /** The server's count of open connections, per peer address. */
  get connections(): PeerBudget {
    return this.#connections;
  }

  /** SHA-256 (hex, of the DER) of the certificate being served. */
  get certificateFingerprint(): string {
    return this.#pair.current().fingerprint;
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = Date.now();
    const path = (req.url ?? '/').split('?')[0]!;
    try {
      if (req.method === 'GET' && (path === '/live' || path === '/ready')) {
        send(res, 200, { status: 'ok' });
        return;
      }
      const handler = Object.hasOwn(this.#options.handlers, path)
        ? this.#options.handlers[path]
        : undefined;
      if (handler === undefined) {
        send(res, 404, { message: `no webhook at ${path.slice(0, 100)}` });
        return drain(req);
      }
      if (req.method !== 'POST') {
        res.setHeader('Allow', 'POST');
        send(res, 405, { message: `${path} takes POST with an AdmissionReview` });
        return drain(req);
      }
      const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
      if (type !== 'application/json') {
        send(res, 415, {
          message: `the body must be application/json (an AdmissionReview), got ${JSON.stringify(type.slice(0, 60))}`,
        });
        return drain(req);
      }
      const body = await readBody(req, this.#maxBody);
      const request = parseAdmissionReview(body);
      const result = await handler(request);
      send(res, 200, admissionResponse(request.uid, result));
      this.#log.debug(
        {
          path,
          uid: request.uid,
          operation: request.operation,
          namespace: request.namespace,
          name: request.name,
          allowed: result.allowed,
          patched: (result.patch?.length ?? 0) > 0,
          ms: Date.now() - started,
          // The key exchange the API server's connection negotiated (X25519MLKEM768 by default).
          tls: this.#algorithms.get(req.socket),
        },
        'review answered',
      );
    } catch (err) {
      this.#fail(req, res, path, err);
    }
  }

  #fail(req: IncomingMessage, res: ServerResponse, path: string, err: unknown): void {
    if (isMeshidError(err) && err.code !== 'ERR_INTERNAL') {
      this.#log.info({ path, code: err.code, err: err.message }, 'review refused');
      if (err instanceof BodyTooLarge || err instanceof JsonTooDeep) {
        res.setHeader('Connection', 'close');
        lingeringClose(req);
      }
      if (!res.headersSent) send(res, err.info.http, { code: err.code, message: err.message });
      return;
    }
    // A handler that throws is a bug or a dependency down (the API server); the review fails
    // (the webhook's failurePolicy decides) and the server carries on with the next one.
    this.#log.error(
      { path, err: err instanceof Error ? (err.stack ?? err.message) : String(err) },
      'webhook handler failed',
    );
    if (!res.headersSent)
      send(res, 500, {
        code: 'ERR_INTERNAL',
        message: `the ${path} webhook failed: ${err instanceof Error ? err.message.slice(0, 300) : 'unexpected error'}`,
      });
    else res.destroy();
  }

  /** Stops listening, watching and polling; open connections are closed. */
  async close(): Promise<void> {
    await this.#pair.close();
    await new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
  }
}

function send(res: ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(code, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(text),
  });
  res.end(text);
}

/**
 * After a 413 (or a 400 for a too deep body): how much more of the body is read away, for how long in all, and how long the
 * client may stay silent, before the cut (nginx's lingering_time and lingering_timeout).
 */
const LINGER_BYTES = 16 * 1024 * 1024;
const LINGER_MS = 30_000;
const LINGER_IDLE_MS = 5_000;

/**
 * Reads the rest of a refused body away for a bounded time and size, then closes the connection:
 * a client still writing its body then reads the 413 instead of a reset (nginx's lingering
 * close), and a client that never stops, or stops writing without finishing, is cut off.
 */
function lingeringClose(req: IncomingMessage): void {
  const socket = req.socket;
  // Node ends a `Connection: close` response with socket.destroySoon(), which destroys the socket
  // as soon as the response is written, while the client is still sending: it then gets a reset
  // (EPIPE) instead of the 413. Only our write side closes then; the reads below decide the cut.
  socket.destroySoon = () => socket.end();
  let discarded = 0;
  const cut = (): void => {
    clearTimeout(total);
    clearTimeout(idle);
    socket.destroy();
  };
  const total = setTimeout(cut, LINGER_MS);
  total.unref();
  const idle = setTimeout(cut, LINGER_IDLE_MS);
  idle.unref();
  req.on('data', (c: Buffer) => {
    discarded += c.length;
    if (discarded > LINGER_BYTES) {
      cut();
      return;
    }
    idle.refresh();
  });
  req.once('end', cut);
  req.once('error', cut);
  req.resume();
}

/** Reads a refused request's (small) body away so that the connection can be reused. */
function drain(req: IncomingMessage): void {
  req.resume();
}

function readBody(req: IncomingMessage, limit: number): Promise<string> {
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (Number.isFinite(declared) && declared > limit) return Promise.reject(new BodyTooLarge(limit));
  const meter = new JsonDepthMeter();
  // Listeners rather than an async iterator: leaving an iterator early destroys the stream,
  // and a refused body is still read away (lingeringClose) so that the client sees the 413 (or 400).
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > limit) {
        done();
        reject(new BodyTooLarge(limit));
        return;
      }
      if (!meter.write(chunk)) {
        done();
        reject(new JsonTooDeep('the request body', meter.maxDepth));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = (): void => {
      done();
      resolve(Buffer.concat(chunks).toString('utf8'));
    };
    const onError = (err: Error): void => {
      done();
      reject(err);
    };
    const done = (): void => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
  });
}
