/**
 * What the inbound proxy reports: one event per handshake, connection and HTTP request (for
 * metrics), and the header on the answers it makes itself.
 */
import type { TlsAlgorithms } from '../core/index.js';
import type { DetectedProtocol } from './detect.js';

/**
 * The header on responses the proxy makes itself (403, 502), saying why (Linkerd's name).
 *
 * @example
 * ```ts
 * if (res.headers[PROXY_ERROR_HEADER] !== undefined) log.warn('refused by the peer proxy');
 * ```
 */
export const PROXY_ERROR_HEADER = 'l5d-proxy-error';

/** Why a connection was refused before any application byte was read. */
export type HandshakeFailureReason =
  /** The identity client has no certificate yet: there is nothing to present. */
  | 'no-certificate'
  /** Not TLS, and the policy does not allow unauthenticated peers. */
  | 'plaintext-refused'
  /** The client sent no certificate. */
  | 'client-certificate-missing'
  /** The client's certificate did not verify against the anchors, or names no DNS identity. */
  | 'client-certificate-rejected'
  /** The TLS handshake failed (version, cipher, ALPN, malformed, timeout); `detail` has the code. */
  | 'tls-error'
  /** The client closed or sent nothing before the handshake. */
  | 'closed'
  /** The peer (identity, or address before its handshake) holds its share of connections. */
  | 'too-many-connections';

/** What the inbound proxy reports for metrics. */
export type InboundEvent =
  | {
      readonly type: 'handshake-succeeded';
      /** Verified identity; undefined for plaintext. */
      readonly peer: string | undefined;
      readonly tls: boolean;
      /** The key-exchange group and cipher suite negotiated (core's negotiatedAlgorithms); TLS only. */
      readonly algorithms?: TlsAlgorithms;
    }
  | {
      readonly type: 'handshake-failed';
      readonly reason: HandshakeFailureReason;
      /** A TLS error or certificate verification code, when there is one. */
      readonly detail: string | undefined;
    }
  | {
      readonly type: 'connection-opened';
      readonly peer: string | undefined;
      readonly tls: boolean;
      readonly protocol: DetectedProtocol;
      readonly authorized: boolean;
    }
  | {
      readonly type: 'connection-closed';
      readonly peer: string | undefined;
      readonly tls: boolean;
      readonly protocol: DetectedProtocol;
      readonly authorized: boolean;
      /** Bytes received from the peer, on the wire (TLS records included). */
      readonly bytesIn: number;
      /** Bytes sent to the peer, on the wire. */
      readonly bytesOut: number;
      readonly durationMs: number;
    }
  | {
      readonly type: 'http-request';
      readonly peer: string | undefined;
      readonly protocol: 'http1' | 'http2';
      readonly method: string;
      /** Status sent to the peer; 0 when the exchange broke off before a status. */
      readonly status: number;
      readonly authorized: boolean;
      readonly durationMs: number;
    };
