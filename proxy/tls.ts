/**
 * The proxy's TLS profile and the pieces inbound and outbound share: TLS 1.3 only, ECDSA P-256
 * certificates, AES-GCM and ChaCha20-Poly1305 suites, X25519/P-256/P-384 key exchange; secure
 * contexts built from the current workload certificate and trust anchors (and cached until
 * either changes); and the peer identity as the first DNS SAN of a verified certificate, which is
 * how Linkerd's proxies read it.
 */
import { createSecureContext } from 'node:tls';
import type { DetailedPeerCertificate, PeerCertificate, SecureContext, TLSSocket } from 'node:tls';
import type { MeshTlsSettings } from '../core/index.js';
import { MESH_TLS, NO_RESUMPTION, fipsCertificateProblem } from '../core/index.js';
import type { WorkloadCertificate } from './identity/client.js';

/**
 * TLS settings every proxy connection uses outside FIPS mode (core's MESH_TLS); FIPS mode passes
 * core's FIPS_TLS as the `tls` option of the listeners and clients.
 */
export const PROXY_TLS: MeshTlsSettings = MESH_TLS;

/** What a proxy listener or connector speaks mTLS with. */
export interface MeshCredentials {
  /** The workload certificate in force now (renewed by the identity client); undefined before the first. */
  readonly certificate: () => WorkloadCertificate | undefined;
  /** The trust anchors in force now, PEM (hot-reloaded by their owner). */
  readonly anchorsPem: () => string;
  /**
   * TLS settings (core's meshTlsSettings); default {@link PROXY_TLS}. With FIPS_TLS, peers
   * whose certificates are outside the FIPS policy are also refused.
   */
  readonly tls?: MeshTlsSettings | undefined;
}

/**
 * No TLS session resumption on mesh connections (core's {@link NO_RESUMPTION}, which the CA and
 * the destination service use too): every connection is a full handshake verified now. The cost
 * is one full handshake per connection instead of a resumption (test/bench, "inbound
 * handshake"); mesh connections are long-lived and multiplexed, so it is paid rarely.
 */
export { NO_RESUMPTION };

/**
 * FIPS mode's check of a verified peer: every certificate it presented (leaf and chain) must have
 * a key and signature inside the FIPS policy. The handshake's signature algorithms are already
 * limited; this also covers the keys. Returns the refusal message, or undefined.
 */
export function fipsPeerProblem(leaf: PeerCertificate): string | undefined {
  let cert: PeerCertificate | undefined = leaf;
  const seen = new Set<PeerCertificate>();
  for (let depth = 0; cert !== undefined && !seen.has(cert) && depth < 8; depth++) {
    seen.add(cert);
    if (cert.raw === undefined) break;
    const problem = fipsCertificateProblem(cert.raw);
    if (problem !== undefined) {
      return `FIPS mode refused the peer's ${depth === 0 ? 'certificate' : `chain certificate ${depth}`} "${cert.subject?.CN ?? ''}": ${problem}`;
    }
    const next: DetailedPeerCertificate | undefined = (cert as DetailedPeerCertificate)
      .issuerCertificate;
    cert = next === cert ? undefined : next;
  }
  return undefined;
}

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
  readonly #tls: MeshTlsSettings;

  /** `tls`: the settings in force (core's meshTlsSettings); default {@link PROXY_TLS}. */
  constructor(tls: MeshTlsSettings = PROXY_TLS) {
    this.#tls = tls;
  }

  get(cert: WorkloadCertificate, anchorsPem: string): SecureContext {
    const key = `${cert.serialHex}\u0000${anchorsPem}`;
    if (this.#context === undefined || key !== this.#key) {
      this.#context = createSecureContext({
        ...this.#tls,
        ...NO_RESUMPTION,
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
