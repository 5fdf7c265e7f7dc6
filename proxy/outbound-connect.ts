/**
 * The outbound connect stage: one mTLS connection to a destination, refused unless the server
 * proves exactly the expected identity, with every failure classified by reason and reported
 * once. Each new connection asks for the current certificate and anchors, so a renewed
 * certificate or a reloaded bundle applies to the next connection; live ones keep what they
 * negotiated. No certificate yet means no connection: sending it in the clear, or as nobody,
 * would be worse.
 */
import { connect as tlsConnect } from 'node:tls';
import type { ConnectionOptions, PeerCertificate, TLSSocket } from 'node:tls';
import type { Duplex } from 'node:stream';
import type { Logger } from '../core/index.js';
import {
  FIPS_TLS,
  LogKey,
  MeshidError,
  formatAddress,
  negotiatedAlgorithms,
  printable,
} from '../core/index.js';
import type { Destination } from './routes.js';
import { ContextCache, fipsPeerProblem, identityOfCertificate } from './tls.js';
import type { MeshCredentials } from './tls.js';
import type { OutboundEvent, OutboundFailureReason } from './outbound-events.js';

/** The error `checkServerIdentity` returns: it names both identities. */
export class PeerIdentityMismatchError extends Error {
  constructor(
    readonly expected: string,
    readonly actual: string | undefined,
  ) {
    super(
      `server identity ${actual === undefined ? '(none: no DNS SAN first)' : `"${printable(actual)}"`} is not the expected identity "${expected}"`,
    );
    this.name = 'PeerIdentityMismatchError';
  }
}

/** A failed upstream attempt, classified. */
export class UpstreamError extends Error {
  constructor(
    readonly reason: OutboundFailureReason,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'UpstreamError';
  }
}

/**
 * OpenSSL's X509_V_ERR_* names as node reports them in `err.code` when the server's chain does
 * not verify. Everything else that fails after TCP connected is a TLS failure.
 */
const VERIFY_CODES = new Set([
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_CRL',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'UNABLE_TO_DECRYPT_CRL_SIGNATURE',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY',
  'CERT_SIGNATURE_FAILURE',
  'CRL_SIGNATURE_FAILURE',
  'CERT_NOT_YET_VALID',
  'CERT_HAS_EXPIRED',
  'CRL_NOT_YET_VALID',
  'CRL_HAS_EXPIRED',
  'ERROR_IN_CERT_NOT_BEFORE_FIELD',
  'ERROR_IN_CERT_NOT_AFTER_FIELD',
  'ERROR_IN_CRL_LAST_UPDATE_FIELD',
  'ERROR_IN_CRL_NEXT_UPDATE_FIELD',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'CERT_CHAIN_TOO_LONG',
  'CERT_REVOKED',
  'INVALID_CA',
  'PATH_LENGTH_EXCEEDED',
  'INVALID_PURPOSE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'HOSTNAME_MISMATCH',
]);

/** What the connect stage needs from the proxy. */
export interface ConnectorOptions extends MeshCredentials {
  readonly connectTimeoutMs: number;
  readonly now: () => number;
  readonly emit: (e: OutboundEvent) => void;
  readonly logger: Logger;
}

/** Opens and reports the outbound side's mTLS connections. */
export class Connector {
  readonly #o: ConnectorOptions;
  readonly #contexts: ContextCache;
  readonly #fips: boolean;
  /** Raw socket errors of failed attempts → their classification, for whoever hears them later. */
  readonly #failures = new WeakMap<Error, UpstreamError>();

  constructor(options: ConnectorOptions) {
    this.#o = options;
    this.#contexts = new ContextCache(options.tls);
    this.#fips = options.tls === FIPS_TLS;
  }

  /**
   * Opens one mTLS connection to a destination, or throws an {@link UpstreamError} when it
   * cannot even start (no certificate). Reports the handshake's outcome; the caller reports
   * opened/closed (it knows which byte counts matter).
   */
  originate(listener: string, dest: Destination, alpn?: readonly string[]): TLSSocket {
    const started = this.#o.now();
    const base = { listener, target: dest.target, expectedIdentity: dest.identity };
    const fail = (err: UpstreamError): never => {
      this.#o.emit({
        type: 'handshake',
        ok: false,
        ...base,
        reason: err.reason,
        message: err.message,
      });
      throw err;
    };
    const cert = this.#o.certificate();
    if (cert === undefined) {
      return fail(new UpstreamError('no-certificate', 'no workload certificate yet'));
    }
    let context;
    try {
      context = this.#contexts.get(cert, this.#o.anchorsPem());
    } catch (cause) {
      return fail(
        new UpstreamError(
          'tls-failed',
          `cannot build a TLS context from the certificate and anchors: ${messageOf(cause)}`,
          { cause },
        ),
      );
    }
    const socket = tlsConnect(this.#tlsOptions(dest, context, alpn));
    // Small frames (HTTP/2 HEADERS, WINDOW_UPDATE, a request head) go out at once: Nagle
    // would hold a second small write until the first is acknowledged.
    socket.setNoDelay(true);
    this.#watchHandshake(socket, listener, dest, started);
    return socket;
  }

  #tlsOptions(
    dest: Destination,
    secureContext: ConnectionOptions['secureContext'],
    alpn: readonly string[] | undefined,
  ): ConnectionOptions & { allowHalfOpen: boolean } {
    const expected = dest.identity;
    return {
      host: dest.target.host,
      port: dest.target.port,
      // SNI is the identity the peer must prove: Linkerd's inbound terminates only when SNI
      // names it, and our own inbound may choose a certificate by it.
      servername: expected,
      secureContext,
      rejectUnauthorized: true,
      // Node calls this only after the chain verified against the context's anchors. The
      // certificate must name exactly the expected identity as its first DNS SAN: the
      // hostname rules of RFC 6125 (wildcards, CN fallback) do not apply to identities.
      checkServerIdentity: (_host: string, peer: PeerCertificate) => {
        const actual = identityOfCertificate(peer);
        if (actual !== expected) return new PeerIdentityMismatchError(expected, actual);
        const refused = this.#fips ? fipsPeerProblem(peer) : undefined;
        return refused === undefined
          ? undefined
          : new MeshidError('ERR_FIPS_PEER_REFUSED', refused);
      },
      // The app may half-close (send FIN and keep reading); the TLS side must follow suit
      // instead of closing its write side when the server's FIN arrives.
      allowHalfOpen: true,
      ...(alpn !== undefined ? { ALPNProtocols: [...alpn] } : {}),
    };
  }

  /** Bounds the handshake and reports its outcome exactly once. */
  #watchHandshake(socket: TLSSocket, listener: string, dest: Destination, started: number): void {
    const base = { listener, target: dest.target, expectedIdentity: dest.identity };
    let tcpConnected = false;
    let settled = false;
    const timeoutMs = this.#o.connectTimeoutMs;
    const timer = setTimeout(() => {
      socket.destroy(
        new UpstreamError(
          'timeout',
          `no TLS session with ${formatAddress(dest.target)} within ${timeoutMs} ms`,
        ),
      );
    }, timeoutMs);
    socket.once('connect', () => {
      tcpConnected = true;
    });
    socket.once('secureConnect', () => {
      settled = true;
      clearTimeout(timer);
      const peerIdentity = identityOfCertificate(socket.getPeerCertificate()) ?? dest.identity;
      const durationMs = this.#o.now() - started;
      this.#o.emit({
        type: 'handshake',
        ok: true,
        ...base,
        peerIdentity,
        durationMs,
        algorithms: negotiatedAlgorithms(socket),
      });
    });
    const failed = (err: Error | undefined): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      const classified = classify(
        err ?? new Error('connection closed during the TLS handshake'),
        tcpConnected,
      );
      if (err !== undefined) this.#failures.set(err, classified);
      this.#o.emit({
        type: 'handshake',
        ok: false,
        ...base,
        reason: classified.reason,
        message: classified.message,
      });
      this.#o.logger.info(
        {
          [LogKey.reason]: classified.reason,
          [LogKey.address]: formatAddress(dest.target),
          [LogKey.identity]: dest.identity,
          err: classified.message,
        },
        'outbound connection refused',
      );
    };
    // Registered first, so the caller's own 'error' listeners find the error classified.
    socket.on('error', failed);
    // A close without an error before the handshake finished is a failure too.
    socket.once('close', () => failed(undefined));
  }

  /** The classification of an error an upstream socket emitted, when it failed its handshake. */
  failureOf(err: Error): UpstreamError | undefined {
    return err instanceof UpstreamError ? err : this.#failures.get(err);
  }

  /** The status, reason and sentence for an upstream that failed before the request went out. */
  connectFailure(err: unknown): [status: number, reason: OutboundFailureReason, message: string] {
    const failure = err instanceof Error ? this.failureOf(err) : undefined;
    const reason = failure?.reason ?? 'connect-failed';
    return [statusOf(reason), reason, failure?.message ?? messageOf(err)];
  }

  /** Reports a connection that finished its handshake: opened now, closed when both ends are. */
  reportEstablished(
    listener: string,
    dest: Destination,
    socket: TLSSocket,
    counts: () => { sent: number; received: number },
    others: readonly Duplex[] = [],
  ): void {
    const peerIdentity = identityOfCertificate(socket.getPeerCertificate()) ?? dest.identity;
    const opened = this.#o.now();
    const base = { listener, target: dest.target, expectedIdentity: dest.identity, peerIdentity };
    this.#o.emit({ type: 'opened', ...base });
    let error: string | undefined;
    const noteError = (err: Error): void => {
      error ??= messageOf(err);
    };
    socket.on('error', noteError);
    for (const o of others) o.on('error', noteError);
    void Promise.all([socket, ...others].map(closedOf)).then(() => {
      const { sent, received } = counts();
      this.#o.emit({
        type: 'closed',
        ...base,
        bytesSent: sent,
        bytesReceived: received,
        durationMs: this.#o.now() - opened,
        ...(error !== undefined ? { error } : {}),
      });
    });
  }
}

/** Resolves when the stream has closed. */
export function closedOf(s: Duplex): Promise<void> {
  if (s.closed) return Promise.resolve();
  return new Promise((resolve) => s.once('close', () => resolve()));
}

function classify(err: Error, tcpConnected: boolean): UpstreamError {
  if (err instanceof UpstreamError) return err;
  if (err instanceof PeerIdentityMismatchError) {
    return new UpstreamError('identity-mismatch', err.message, { cause: err });
  }
  const code = (err as NodeJS.ErrnoException).code;
  if (code !== undefined && VERIFY_CODES.has(code)) {
    return new UpstreamError('untrusted', `server certificate not trusted: ${err.message}`, {
      cause: err,
    });
  }
  if (!tcpConnected) {
    return new UpstreamError('connect-failed', `connect failed: ${err.message}`, { cause: err });
  }
  return new UpstreamError('tls-failed', `TLS handshake failed: ${err.message}`, { cause: err });
}

/** The error an upstream is destroyed with when its app left first. */
export function cancelled(): UpstreamError {
  return new UpstreamError(
    'cancelled',
    'the app closed its connection before the TLS handshake finished',
  );
}

export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The status the HTTP listener answers a failure with (as Linkerd: 503 not ready, 504 slow). */
export function statusOf(reason: OutboundFailureReason): number {
  return reason === 'no-certificate' ? 503 : reason === 'timeout' ? 504 : 502;
}
