/**
 * The proxy's TLS profile and the pieces inbound and outbound share: TLS 1.3 only, ECDSA P-256
 * certificates, AES-GCM and ChaCha20-Poly1305 suites, X25519/P-256/P-384 key exchange; secure
 * contexts built from the current workload certificate and trust anchors (and cached until
 * either changes); and the peer identity as the first DNS SAN of a verified certificate, which is
 * how Linkerd's proxies read it.
 */
import { createSecureContext } from 'node:tls';
import type { PeerCertificate, SecureContext, SecureContextOptions, TLSSocket } from 'node:tls';
import type { WorkloadCertificate } from './identity/client.js';

/** TLS settings every proxy connection uses. */
export const PROXY_TLS = Object.freeze({
  minVersion: 'TLSv1.3',
  maxVersion: 'TLSv1.3',
  ciphers: 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256',
  ecdhCurve: 'X25519:P-256:P-384',
} as const satisfies SecureContextOptions);

/**
 * The ALPN protocol a meshid outbound offers to say "I am a meshid proxy: HTTP/2 between us,
 * whatever the apps speak". The bytes are plain HTTP/2; the inbound downgrades for its app.
 * A server that does not know it (not a meshid proxy) never selects it, and the outbound falls
 * back to HTTP/1.1.
 *
 * @example
 * ```ts
 * tls.connect({ ALPNProtocols: [MESH_H2_ALPN, 'http/1.1'], ... });
 * ```
 */
export const MESH_H2_ALPN = 'meshid.io/h2';

/**
 * Secure contexts for (certificate, anchors) pairs, rebuilt only when either changes: a context
 * costs a key parse and a chain parse, too much for every connection.
 *
 * @example
 * ```ts
 * const contexts = new ContextCache();
 * const ctx = contexts.get(identity.current()!, anchors());
 * ```
 */
export class ContextCache {
  #key = '';
  #context: SecureContext | undefined;

  get(cert: WorkloadCertificate, anchorsPem: string): SecureContext {
    const key = `${cert.serialHex}\u0000${anchorsPem}`;
    if (this.#context === undefined || key !== this.#key) {
      this.#context = createSecureContext({
        ...PROXY_TLS,
        key: cert.keyPem,
        cert: cert.certChainPem,
        ca: anchorsPem,
      });
      this.#key = key;
    }
    return this.#context;
  }
}

/** The identity a certificate names: its first SAN, when that is a DNS name. */
export function identityOfCertificate(cert: PeerCertificate | undefined): string | undefined {
  const first = (cert?.subjectaltname ?? '').split(', ')[0];
  return first !== undefined && first.startsWith('DNS:') ? first.slice(4) : undefined;
}

/**
 * The verified peer identity of a TLS socket, or undefined when the peer presented no
 * certificate or one that did not verify against the anchors.
 */
export function verifiedPeerIdentity(socket: TLSSocket): string | undefined {
  if (!socket.authorized) return undefined;
  return identityOfCertificate(socket.getPeerCertificate());
}
