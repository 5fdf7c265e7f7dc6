/**
 * The proxy's Certify client: one unary gRPC call over node's own HTTP/2 and TLS, instead of
 * grpc-js. A sidecar makes this call once a day or so, and grpc-js (its channel machinery,
 * resolvers, load balancers, protobuf helpers) costs about 10 MB of every proxy's memory for it.
 *
 * The wire is gRPC's (PROTOCOL-HTTP2.md): `POST /io.linkerd.proxy.identity.Identity/Certify`,
 * `content-type: application/grpc`, `te: trailers`, a `grpc-timeout`, and the message with its
 * 5-byte prefix (uncompressed flag, big-endian length). The answer is one prefixed message and
 * `grpc-status` (with `grpc-message`) in the trailers, or in the headers of a trailers-only
 * answer. The CA's certificate must chain to the trust anchors and name the CA's identity, as
 * with grpc-js.
 */
import { connect as http2Connect, constants as h2 } from 'node:http2';
import type { ClientHttp2Session, ClientHttp2Stream, IncomingHttpHeaders } from 'node:http2';
import type { PeerCertificate, SecureContext, TLSSocket } from 'node:tls';
import type {
  Address,
  CertifyRequest,
  CertifyResponse,
  MeshTlsSettings,
  TlsAlgorithms,
} from '../../core/index.js';
import {
  CERTIFY_PATH,
  chainFingerprints,
  decodeCertifyResponse,
  decodeGrpcMessage,
  encodeCertifyRequest,
  formatAddress,
  frameGrpcMessage,
  negotiatedAlgorithms,
  parseCertificates,
  peerChain,
  retryAfterMsOf,
  unframeGrpcMessage,
} from '../../core/index.js';

/** gRPC status codes this client produces itself. */
const INTERNAL = 13;
const UNAVAILABLE = 14;
const DEADLINE_EXCEEDED = 4;
/**
 * OpenSSL's verdicts on a chain that does not verify against the anchors (node's error codes).
 * Every state folder names its certificates alike, so these get the fingerprints added.
 */
const CHAIN_REFUSALS = new Set([
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_SIGNATURE_FAILURE',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
]);
/** The look at a refused chain gets this long; past it the refusal is reported as it was. */
const EXPLAIN_TIMEOUT_MS = 2_000;
/** Larger answers are refused: a leaf and a few intermediates are a few kilobytes. */
const MAX_RESPONSE_BYTES = 1024 * 1024;

/** A failed call: the gRPC status and its message, as the CA (or the transport) gave them. */
export class CertifyCallFailed extends Error {
  constructor(
    readonly code: number,
    readonly details: string,
    /** The CA's hint (RESOURCE_EXHAUSTED): milliseconds to wait before trying again. */
    readonly retryAfterMs?: number,
  ) {
    super(`Certify failed: ${details}`);
    this.name = 'CertifyCallFailed';
  }
}

/** The certificate the proxy holds now, presented to the CA so that it sees a renewal. */
export interface PresentedCertificate {
  readonly keyPem: string;
  readonly certChainPem: string;
  readonly serialHex: string;
}

/** Settings of a {@link Http2CertifyClient}. */
export interface Http2CertifyClientOptions {
  readonly address: Address;
  /** The identity the CA's certificate must name (a DNS SAN); also the TLS server name. */
  readonly serverName: string;
  /** The trust anchors the CA's chain must lead to. */
  readonly anchorsPem: string;
  /** Where the anchors came from (the proxy's --trust-anchors file), named when the chain is refused. */
  readonly anchorsSource?: string;
  /** TLS settings (core's meshTlsSettings): FIPS mode passes FIPS_TLS; default node's. */
  readonly tls?: MeshTlsSettings;
  /**
   * The certificate held now, if any: presented as the TLS client certificate, so that a CA
   * under load serves first issuance (no certificate) before renewals. A new one opens a new
   * connection.
   */
  readonly clientCertificate?: () => PresentedCertificate | undefined;
  /** The local address to connect from (default: the system's choice). */
  readonly localAddress?: string;
  /**
   * A TLS context made beforehand with `ca: anchorsPem` (and the TLS settings), shared by many
   * clients: a load test simulating thousands of proxies in one process would otherwise spend
   * most of its time making one per connection (OpenSSL 3.0's SSL_CTX_new takes milliseconds).
   * Not with `clientCertificate`.
   */
  readonly secureContext?: SecureContext;
  /** Told the key-exchange group and cipher suite of each new connection to the CA. */
  readonly onHandshake?: (algorithms: TlsAlgorithms) => void;
}

/** The server's name check: the CA must present its identity as a DNS SAN. */
function checkCaIdentity(serverName: string, cert: PeerCertificate): Error | undefined {
  const names = (cert.subjectaltname ?? '').split(', ');
  return names.includes(`DNS:${serverName}`)
    ? undefined
    : new Error(`CA certificate is not for ${serverName} (SANs: ${cert.subjectaltname ?? 'none'})`);
}

/**
 * Calls Certify on one CA address over HTTP/2 and TLS. One session is kept and reused; a new
 * one is made when it closes or fails.
 *
 * @example
 * ```ts
 * const ca = new Http2CertifyClient({ address, serverName: caIdentity, anchorsPem });
 * const res = await ca.certify({ identity, token, certificateSigningRequest: csr });
 * ca.close();
 * ```
 */
export class Http2CertifyClient {
  readonly #o: Http2CertifyClientOptions;
  #session: ClientHttp2Session | undefined;
  #sessionSerial: string | undefined;
  #closed = false;

  constructor(options: Http2CertifyClientOptions) {
    this.#o = options;
  }

  #sessionNow(): ClientHttp2Session {
    const current = this.#session;
    const presented = this.#o.clientCertificate?.();
    if (
      current !== undefined &&
      !current.closed &&
      !current.destroyed &&
      this.#sessionSerial === presented?.serialHex
    )
      return current;
    current?.close();
    const { address, serverName, anchorsPem, tls, localAddress, secureContext } = this.#o;
    const session = http2Connect(`https://${formatAddress(address)}`, {
      ...tls,
      ...(localAddress === undefined ? {} : { localAddress }),
      ...(secureContext === undefined || presented !== undefined ? {} : { secureContext }),
      ca: anchorsPem,
      servername: serverName,
      checkServerIdentity: (_host, cert) => checkCaIdentity(serverName, cert),
      ...(presented === undefined ? {} : { key: presented.keyPem, cert: presented.certChainPem }),
    });
    this.#sessionSerial = presented?.serialHex;
    // A renewal a day must not keep the process alive, nor an idle connection open.
    session.unref();
    session.setTimeout(60_000, () => session.close());
    session.on('error', () => undefined); // reported through the call that was using it
    const onHandshake = this.#o.onHandshake;
    if (onHandshake !== undefined) {
      session.once('connect', (_s, socket) =>
        onHandshake(negotiatedAlgorithms(socket as TLSSocket)),
      );
    }
    const forget = (): void => {
      if (this.#session === session) this.#session = undefined;
    };
    session.on('close', forget);
    session.on('goaway', forget);
    this.#session = session;
    return session;
  }

  /**
   * OpenSSL's verdict on a CA chain that does not verify ("unable to get local issuer
   * certificate") with what a person compares: the anchors file, and the fingerprints of the
   * CA's certificate, its issuer and the anchors, read over one more handshake that verifies
   * nothing (core's peerChain; only after a refusal, so at the retry pace). The verdict alone
   * when that look fails.
   */
  async #explainRefusal(message: string): Promise<string> {
    const { address, serverName, anchorsPem, anchorsSource } = this.#o;
    try {
      const served = await peerChain(address, serverName, EXPLAIN_TIMEOUT_MS, {
        alpn: ['h2'],
        minVersion: 'TLSv1.3',
      });
      const seen = chainFingerprints(
        parseCertificates(served.join(''), 'ERR_INSPECT_TARGET'),
        parseCertificates(anchorsPem, 'ERR_ANCHORS_INVALID'),
        {
          chain: `the CA at ${formatAddress(address)} serves`,
          anchors: anchorsSource ?? 'the trust anchors',
        },
      );
      return `${message}: the CA's chain does not verify against the trust anchors${anchorsSource === undefined ? '' : ` in ${anchorsSource}`} (${seen})`;
    } catch {
      return message;
    }
  }

  /**
   * One Certify call. Rejects with {@link CertifyCallFailed}: the CA's status, or UNAVAILABLE
   * (transport, TLS, identity of the CA), DEADLINE_EXCEEDED or INTERNAL (a malformed answer).
   */
  certify(req: CertifyRequest, deadlineMs = 10_000): Promise<CertifyResponse> {
    if (this.#closed) return Promise.reject(new CertifyCallFailed(UNAVAILABLE, 'client closed'));
    return new Promise((resolve, reject) => {
      let settled = false;
      let session: ClientHttp2Session | undefined;
      const done = (err: CertifyCallFailed | undefined, res?: CertifyResponse): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        session?.off('connect', send);
        if (stream === undefined) session?.off('error', onSessionError);
        if (err !== undefined) reject(err);
        else resolve(res!);
      };
      // The deadline counts the connection: a CA under a restart storm may take seconds to
      // start the handshake, and the call's grpc-timeout then says what is left of it (so the
      // CA does not work for a caller that has gone).
      const deadlineAt = performance.now() + deadlineMs;
      let stream: ClientHttp2Stream | undefined;
      const timer = setTimeout(() => {
        stream?.close(h2.NGHTTP2_CANCEL);
        done(new CertifyCallFailed(DEADLINE_EXCEEDED, 'Deadline exceeded'));
      }, deadlineMs);
      const onSessionError = (err: Error): void => {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === undefined || !CHAIN_REFUSALS.has(code))
          return done(new CertifyCallFailed(UNAVAILABLE, err.message));
        void this.#explainRefusal(err.message).then((m) =>
          done(new CertifyCallFailed(UNAVAILABLE, m)),
        );
      };
      const frame = frameGrpcMessage(encodeCertifyRequest(req));
      const send = (): void => {
        if (settled) return;
        const s = session!;
        const left = Math.max(1, Math.ceil(deadlineAt - performance.now()));
        stream = s.request({
          [h2.HTTP2_HEADER_METHOD]: 'POST',
          [h2.HTTP2_HEADER_PATH]: CERTIFY_PATH,
          [h2.HTTP2_HEADER_AUTHORITY]: this.#o.serverName,
          [h2.HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc',
          [h2.HTTP2_HEADER_TE]: 'trailers',
          'grpc-timeout': `${left}m`,
        });
        readAnswer(stream, s);
      };
      /** Reads the answer on `call`, a stream of `conn`. */
      const readAnswer = (call: ClientHttp2Stream, conn: ClientHttp2Session): void => {
        let headers: IncomingHttpHeaders = {};
        const chunks: Buffer[] = [];
        let received = 0;
        call.on('response', (h) => (headers = h));
        call.on('data', (d: Buffer) => {
          received += d.length;
          if (received > MAX_RESPONSE_BYTES) {
            call.close(h2.NGHTTP2_CANCEL);
            done(new CertifyCallFailed(INTERNAL, 'response too large'));
            return;
          }
          chunks.push(d);
        });
        let trailers: IncomingHttpHeaders | undefined;
        call.on('trailers', (t) => (trailers = t));
        call.on('error', (err) => done(new CertifyCallFailed(UNAVAILABLE, err.message)));
        call.on('close', () => {
          conn.off('error', onSessionError);
          if (settled) return;
          const status = headers[h2.HTTP2_HEADER_STATUS];
          if (status === undefined) {
            done(new CertifyCallFailed(UNAVAILABLE, `stream closed (code ${call.rstCode})`));
            return;
          }
          if (Number(status) !== 200) {
            done(new CertifyCallFailed(UNAVAILABLE, `HTTP status ${status} from the CA`));
            return;
          }
          // Trailers, or the headers of a trailers-only answer.
          const final = trailers ?? headers;
          const code = final['grpc-status'];
          if (code === undefined) {
            done(new CertifyCallFailed(INTERNAL, 'no grpc-status in the answer'));
            return;
          }
          if (code !== '0') {
            done(
              new CertifyCallFailed(
                Number(code),
                decodeGrpcMessage(final['grpc-message']),
                retryAfterMsOf(final),
              ),
            );
            return;
          }
          try {
            const message = unframeGrpcMessage(Buffer.concat(chunks), 'response');
            done(undefined, decodeCertifyResponse(message));
          } catch (err) {
            done(new CertifyCallFailed(INTERNAL, (err as Error).message));
          }
        });
        call.end(frame);
      };
      try {
        session = this.#sessionNow();
      } catch (err) {
        done(new CertifyCallFailed(UNAVAILABLE, (err as Error).message));
        return;
      }
      session.once('error', onSessionError);
      if (session.connecting) session.once('connect', send);
      else send();
    });
  }

  close(): void {
    this.#closed = true;
    this.#session?.close();
    this.#session = undefined;
  }
}
