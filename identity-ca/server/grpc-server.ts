/**
 * The Certify gRPC endpoint over TLS 1.3.
 *
 * Linkerd's proxies dial the CA with TLS 1.3 and no ALPN, then speak HTTP/2 by prior knowledge.
 * Node's secure HTTP/2 server (and so grpc-js's own TLS listener) refuses a connection that did
 * not negotiate `h2`. So meshid terminates TLS itself with a `tls.Server` that offers `h2` but
 * also accepts clients that offer no ALPN at all, and hands each decrypted connection to a
 * grpc-js server through its connection injector, which speaks HTTP/2 over whatever stream it is
 * given. Ordinary gRPC clients that negotiate `h2` take the same path.
 */
import { createServer as createTlsServer } from 'node:tls';
import type { Server as TlsServer, TLSSocket, SecureContextOptions } from 'node:tls';
import { once } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import type { Address, Logger } from '../../core/index.js';
import { GrpcStatus, MeshidError, ERROR_CODES, formatAddress } from '../../core/index.js';
import type { CertifyRequest, CertifyResponse } from '../proto/codec.js';
import { decodeCertifyRequest, encodeCertifyResponse, CERTIFY_PATH } from '../proto/codec.js';

/** Turns a request into a response, or throws a MeshidError naming the refusal. */
export type CertifyHandler = (req: CertifyRequest) => Promise<CertifyResponse>;

/** Told about every call once it has ended, for metrics and logs. */
export type CallObserver = (outcome: {
  readonly status: number;
  readonly durationSeconds: number;
}) => void;

/** The key and certificate chain (PEM) the CA presents. */
export interface ServingCredentials {
  readonly keyPem: string;
  readonly certChainPem: string;
}

/** TLS settings of the CA: TLS 1.3 only, AEAD suites, modern groups. */
export const CA_TLS_SETTINGS = Object.freeze({
  minVersion: 'TLSv1.3',
  maxVersion: 'TLSv1.3',
  ciphers: 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256',
  ecdhCurve: 'X25519:P-256:P-384',
} as const);

export interface CertifyServerOptions {
  readonly handler: CertifyHandler;
  readonly logger: Logger;
  readonly maxRequestBytes: number;
  readonly credentials: ServingCredentials;
  readonly observe?: CallObserver;
  /** How long a TLS handshake may take before the connection is dropped. */
  readonly handshakeTimeoutMs?: number;
}

/**
 * A running Certify server.
 *
 * @example
 * ```ts
 * const server = new CertifyServer({ handler, logger, maxRequestBytes: 65536, credentials });
 * const bound = await server.listen({ host: '127.0.0.1', port: 0 });
 * ```
 */
export class CertifyServer {
  readonly #grpc: grpc.Server;
  readonly #tls: TlsServer;
  readonly #log: Logger;
  readonly #injector: ReturnType<grpc.Server['createConnectionInjector']>;

  constructor(opts: CertifyServerOptions) {
    this.#log = opts.logger;
    this.#grpc = new grpc.Server({
      'grpc.max_receive_message_length': opts.maxRequestBytes,
      'grpc.max_send_message_length': 1024 * 1024,
      'grpc.max_concurrent_streams': 256,
      // Proxies keep one connection to the CA for the life of the pod; idle ones are reaped.
      'grpc.max_connection_idle_ms': 10 * 60_000,
      'grpc.keepalive_time_ms': 60_000,
      'grpc.keepalive_timeout_ms': 20_000,
    });
    this.#grpc.addService(certifyServiceDefinition, {
      certify: (
        call: grpc.ServerUnaryCall<Buffer, CertifyResponse>,
        callback: grpc.sendUnaryData<CertifyResponse>,
      ) => {
        const started = process.hrtime.bigint();
        const finish = (status: number): void => {
          opts.observe?.({
            status,
            durationSeconds: Number(process.hrtime.bigint() - started) / 1e9,
          });
        };
        // Decoded here rather than in the service definition: grpc-js reports a deserializer's
        // exception as INTERNAL, and a malformed request is the caller's INVALID_ARGUMENT.
        Promise.resolve(call.request)
          .then(decodeCertifyRequest)
          .then(opts.handler)
          .then(
            (res) => {
              finish(GrpcStatus.OK);
              callback(null, res);
            },
            (err: unknown) => {
              const status = toStatus(err, this.#log);
              finish(status.code);
              callback(status);
            },
          );
      },
    });
    this.#injector = this.#grpc.createConnectionInjector(grpc.ServerCredentials.createInsecure());
    this.#tls = createTlsServer({
      ...CA_TLS_SETTINGS,
      ...toSecureContext(opts.credentials),
      ALPNProtocols: ['h2'],
      handshakeTimeout: opts.handshakeTimeoutMs ?? 10_000,
      requestCert: false,
    });
    this.#tls.on('secureConnection', (socket: TLSSocket) => {
      // `false` is the Linkerd proxy (no ALPN offered); 'h2' an ordinary gRPC client.
      if (socket.alpnProtocol !== false && socket.alpnProtocol !== 'h2') {
        socket.destroy();
        return;
      }
      // Node's HTTP/2 connection listener sends any socket whose `alpnProtocol` is `false` to
      // its HTTP/1 fallback ('unknownProtocol'), even on a cleartext server. A client that
      // offered no ALPN is speaking HTTP/2 by prior knowledge, so record that before handing
      // the connection over; the TLS session itself is not changed.
      if (socket.alpnProtocol === false) socket.alpnProtocol = 'h2';
      socket.setNoDelay(true);
      this.#injector.injectConnection(socket);
    });
    this.#tls.on('tlsClientError', (err, socket) => {
      this.#log.debug({ err: err.message, remote: socket.remoteAddress }, 'TLS handshake failed');
    });
  }

  /** Replaces the serving key and certificate for new connections. */
  setCredentials(credentials: ServingCredentials): void {
    this.#tls.setSecureContext({ ...CA_TLS_SETTINGS, ...toSecureContext(credentials) });
  }

  /** Binds and starts accepting; resolves with the bound address (port 0 allowed). */
  async listen(address: Address): Promise<Address> {
    this.#tls.listen({ host: address.host, port: address.port });
    await once(this.#tls, 'listening');
    const bound = this.#tls.address();
    if (bound === null || typeof bound === 'string') throw new Error('TLS server has no address');
    this.#log.debug(
      { address: formatAddress({ host: bound.address, port: bound.port }) },
      'TLS listener bound',
    );
    return { host: bound.address, port: bound.port };
  }

  /** Stops accepting, lets in-flight calls finish within `graceMs`, then cuts what is left. */
  async close(graceMs = 5000): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#tls.close(() => resolve()));
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.#grpc.forceShutdown();
        resolve();
      }, graceMs);
      timer.unref();
      this.#injector.drain(graceMs);
      this.#grpc.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    this.#injector.destroy();
    await closed;
  }
}

function toSecureContext(c: ServingCredentials): SecureContextOptions {
  return { key: c.keyPem, cert: c.certChainPem };
}

/**
 * Maps an error to a gRPC status at the edge. MeshidErrors carry their own status and message;
 * anything else becomes INTERNAL with the detail in the log only.
 */
function toStatus(err: unknown, log: Logger): { code: number; details: string } {
  if (err instanceof MeshidError) {
    return { code: GrpcStatus[ERROR_CODES[err.code].grpc], details: err.message };
  }
  log.error({ err }, 'Certify failed unexpectedly');
  return { code: GrpcStatus.INTERNAL, details: 'internal error' };
}

const certifyServiceDefinition: grpc.ServiceDefinition<grpc.UntypedServiceImplementation> = {
  certify: {
    path: CERTIFY_PATH,
    requestStream: false,
    responseStream: false,
    requestSerialize: () => {
      throw new Error('server does not serialize requests');
    },
    requestDeserialize: (buf: Buffer) => buf,
    responseSerialize: (res: CertifyResponse) => encodeCertifyResponse(res),
    responseDeserialize: () => {
      throw new Error('server does not deserialize responses');
    },
    originalName: 'Certify',
  },
};
