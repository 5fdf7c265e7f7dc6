/**
 * The inbound TLS stage: terminates mutual TLS 1.3. The server certificate is the workload
 * certificate of the moment and client certificates are verified against the anchors of the
 * moment (both read per connection, so a renewal or an anchor reload applies to new connections
 * without cutting existing ones). A client certificate is required; the peer identity is its
 * first DNS SAN. A connection leaves this stage verified, with its peer's connection share
 * taken, or refused with the reason reported.
 */
import { createServer as createTlsServer } from 'node:tls';
import type { Server as TlsServer, TLSSocket } from 'node:tls';
import type { MeshTlsSettings } from '../core/index.js';
import { FIPS_TLS, LogKey, negotiatedAlgorithms } from '../core/index.js';
import type { WorkloadCertificate } from './identity/client.js';
import {
  MESH_H2_ALPN,
  NO_RESUMPTION,
  ContextCache,
  fipsPeerProblem,
  verifiedPeerIdentity,
} from './tls.js';
import type { MeshCredentials } from './tls.js';
import { TRANSPORT_HEADER_ALPN } from './l5d-transport.js';
import type { Conn, InboundContext } from './inbound-accept.js';
import { peerKey, refuseConn } from './inbound-accept.js';

/** What the TLS stage needs besides the shared context. */
export interface HandshakeOptions extends MeshCredentials {
  readonly tls: MeshTlsSettings;
  readonly handshakeTimeoutMs: number;
  /** Receives each connection whose peer verified, with its TLS socket. */
  readonly verified: (conn: Conn, socket: TLSSocket) => void;
}

/** The TLS server that connections are handed to once their first byte said TLS. */
export class InboundHandshake {
  readonly #ctx: InboundContext;
  readonly #o: HandshakeOptions;
  readonly #contexts: ContextCache;
  readonly #server: TlsServer;
  /** Connections between the raw 'connection' and 'secureConnection', by peer address. */
  readonly #handshaking = new Map<string, Conn>();
  /** (serial, anchors) of the TLS server's default context, for clients that send no SNI. */
  #defaultContextKey = '';

  constructor(ctx: InboundContext, options: HandshakeOptions) {
    this.#ctx = ctx;
    this.#o = options;
    this.#contexts = new ContextCache(options.tls);
    this.#server = createTlsServer({
      ...options.tls,
      ...NO_RESUMPTION,
      allowHalfOpen: true,
      handshakeTimeout: options.handshakeTimeoutMs,
      requestCert: true,
      // Verification results are checked on 'secureConnection' instead, so that a refusal can
      // be reported with its reason (node would otherwise drop the socket silently).
      rejectUnauthorized: false,
      SNICallback: (_servername, cb) => {
        const cert = this.#o.certificate();
        if (cert === undefined) {
          cb(new Error('no workload certificate yet'), undefined);
          return;
        }
        cb(null, this.#contexts.get(cert, this.#o.anchorsPem()));
      },
      // HTTP/2 over TLS needs `h2` selected by ALPN (curl and gRPC clients insist); the
      // protocol is still detected from the bytes. A client offering only protocols this
      // proxy does not speak gets a no_application_protocol alert rather than a wrong answer.
      // Linkerd's opaque transport and meshid's proxy-to-proxy HTTP/2 are chosen first: a
      // peer proxy that offers them means it.
      ALPNCallback: ({ protocols }) =>
        [TRANSPORT_HEADER_ALPN, MESH_H2_ALPN, 'h2', 'http/1.1'].find((p) => protocols.includes(p)),
    });
    this.#server.on('secureConnection', (socket: TLSSocket) => this.#onSecure(socket));
    this.#server.on('tlsClientError', (err: Error & { code?: string }, socket: TLSSocket) => {
      this.#handshaking.delete(peerKey(socket));
      ctx.emit({ type: 'handshake-failed', reason: 'tls-error', detail: err.code ?? err.message });
      ctx.log.debug({ err: err.message }, 'inbound TLS handshake failed');
      socket.destroy();
    });
  }

  /** Starts the handshake of a connection whose first byte (`first`, not yet put back) said TLS. */
  begin(conn: Conn, first: Buffer): void {
    const cert = this.#o.certificate();
    if (cert === undefined) {
      refuseConn(this.#ctx, conn, 'no-certificate', undefined);
      return;
    }
    this.#syncDefaultContext(cert);
    conn.raw.unshift(first);
    this.#handshaking.set(peerKey(conn.raw), conn);
    // The TLS server wraps the socket and reads the bytes put back first.
    this.#server.emit('connection', conn.raw);
  }

  /** Forgets a connection that closed during its handshake. */
  forget(conn: Conn): void {
    const key = peerKey(conn.raw);
    if (this.#handshaking.get(key) === conn) this.#handshaking.delete(key);
  }

  /**
   * Keeps the TLS server's default context (used when a client sends no SNI, so SNICallback is
   * not called) in step with the certificate and anchors; rebuilt only when either changed.
   */
  #syncDefaultContext(cert: WorkloadCertificate): void {
    const anchors = this.#o.anchorsPem();
    const key = `${cert.serialHex}\u0000${anchors}`;
    if (key === this.#defaultContextKey) return;
    this.#server.setSecureContext({
      ...this.#o.tls,
      ...NO_RESUMPTION,
      key: cert.keyPem,
      cert: cert.certChainPem,
      ca: anchors,
    });
    this.#defaultContextKey = key;
  }

  /** The handshake finished; the client certificate must have verified. */
  #onSecure(socket: TLSSocket): void {
    const key = peerKey(socket);
    const conn = this.#handshaking.get(key);
    this.#handshaking.delete(key);
    if (conn === undefined || this.#ctx.closing()) {
      socket.destroy();
      return;
    }
    socket.on('error', (err) => this.#ctx.log.debug({ err: err.message }, 'inbound TLS error'));
    conn.stream = socket;
    conn.tls = true;
    const verdict = this.#verify(socket);
    if (verdict.refused !== undefined) {
      refuseConn(this.#ctx, conn, 'client-certificate-rejected', verdict.refused);
      return;
    }
    if (verdict.peer === undefined) {
      refuseConn(this.#ctx, conn, 'client-certificate-missing', undefined);
      return;
    }
    const peer = verdict.peer;
    this.#ctx.shares.handshakeDone(conn);
    if (!this.#ctx.shares.takeConnection(conn, peer)) {
      refuseConn(this.#ctx, conn, 'too-many-connections', peer);
      return;
    }
    conn.peer = peer;
    this.#ctx.emit({
      type: 'handshake-succeeded',
      peer,
      tls: true,
      algorithms: negotiatedAlgorithms(socket),
    });
    this.#o.verified(conn, socket);
  }

  /**
   * The peer's verified identity, or why it is refused (`refused`); neither when it presented
   * no certificate at all.
   */
  #verify(socket: TLSSocket): { peer?: string; refused?: string } {
    if (socket.isSessionReused()) {
      // Never offered (NO_RESUMPTION); a resumed session would carry an old verification.
      return { refused: 'TLS session resumption is not accepted' };
    }
    if (!socket.authorized) {
      const presented = Object.keys(socket.getPeerCertificate()).length > 0;
      return presented ? { refused: String(socket.authorizationError) } : {};
    }
    const peer = verifiedPeerIdentity(socket);
    if (peer === undefined) return { refused: 'no DNS identity in the first SAN' };
    if (this.#o.tls === FIPS_TLS) {
      const refused = fipsPeerProblem(socket.getPeerCertificate(true));
      if (refused !== undefined) {
        this.#ctx.log.warn({ [LogKey.code]: 'ERR_FIPS_PEER_REFUSED', peer }, refused);
        return { refused };
      }
    }
    return { peer };
  }
}
