/**
 * What the outbound side reports for metrics and logs, shared by every outbound stage and
 * listener (re-exported by outbound.ts, which is the public surface).
 */
import type { Address, ConnectionLimitHit, TlsAlgorithms } from '../core/index.js';

/** Why an outbound connection was not established. */
export type OutboundFailureReason =
  /** The identity client has no valid certificate yet. */
  | 'no-certificate'
  /** The HTTP listener found no destination for the request's authority. */
  | 'no-route'
  /** TCP to the target failed (refused, unreachable, reset before TLS began). */
  | 'connect-failed'
  /** TCP plus the TLS handshake took longer than `connectTimeoutMs`. */
  | 'timeout'
  /** The server's chain does not verify against the current anchors (or is expired). */
  | 'untrusted'
  /** The chain verified but names another identity than the expected one. */
  | 'identity-mismatch'
  /** The TLS handshake failed otherwise (protocol version, alert, reset mid-handshake). */
  | 'tls-failed'
  /** The app closed its connection before the handshake finished. */
  | 'cancelled';

/** Which listener a connection came in on: `route` listeners are named by their address. */
export interface OutboundEventBase {
  /** `formatAddress` of the listener the app connected to. */
  readonly listener: string;
  readonly target?: Address;
  readonly expectedIdentity?: string;
}

/**
 * What the outbound side reports for metrics and logs. Every upstream connection attempt gets
 * exactly one `handshake` event; every established one then gets `opened` and, later, exactly
 * one `closed`.
 */
export type OutboundEvent =
  | (OutboundEventBase & {
      readonly type: 'handshake';
      readonly ok: true;
      readonly target: Address;
      readonly expectedIdentity: string;
      readonly peerIdentity: string;
      readonly durationMs: number;
      /** The key-exchange group and cipher suite negotiated (core's negotiatedAlgorithms). */
      readonly algorithms: TlsAlgorithms;
    })
  | (OutboundEventBase & {
      readonly type: 'handshake';
      readonly ok: false;
      readonly reason: OutboundFailureReason;
      readonly message: string;
    })
  | (OutboundEventBase & {
      readonly type: 'opened';
      readonly target: Address;
      readonly peerIdentity: string;
    })
  | (OutboundEventBase & {
      readonly type: 'closed';
      readonly target: Address;
      readonly peerIdentity: string;
      /** Plaintext bytes sent to the peer. */
      readonly bytesSent: number;
      /** Plaintext bytes received from the peer. */
      readonly bytesReceived: number;
      readonly durationMs: number;
      /** Set when the connection ended on an error rather than by both sides closing. */
      readonly error?: string;
    })
  /** A transparent connection carried in plaintext to its original destination, and why. */
  | (OutboundEventBase & {
      readonly type: 'passthrough';
      readonly target: Address;
      readonly reason: 'unknown' | 'unmeshed' | 'unavailable' | 'timeout';
    })
  /** One HTTP request through the transparent listener, answered (by the peer or the proxy). */
  | (OutboundEventBase & {
      readonly type: 'request';
      /** The endpoint it went to (undefined when the proxy answered before choosing one). */
      readonly target?: Address;
      /** The original destination the app dialled (a ClusterIP:port or a pod IP:port). */
      readonly dst: string;
      /** The identity the endpoint proved ("" when none). */
      readonly peerIdentity: string;
      readonly tls: boolean;
      /** The status the app got (0 when the exchange broke before one). */
      readonly status: number;
      readonly durationMs: number;
    })
  /**
   * A connection from the app refused by the listener's connection cap (reset as it arrived),
   * and which limit: `total` when the listener is full.
   */
  | (OutboundEventBase & {
      readonly type: 'refused';
      readonly reason: ConnectionLimitHit;
    })
  /** The destination service stopped (`available: false`) or resumed answering for an address. */
  | (OutboundEventBase & {
      readonly type: 'discovery';
      readonly target: Address;
      readonly available: boolean;
      readonly message: string;
    });
