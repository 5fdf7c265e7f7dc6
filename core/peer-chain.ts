/**
 * The certificate chain a TLS server presents, read over a real handshake and not verified: the
 * caller checks it against what it trusts and says what is wrong. One home for `meshid check`'s
 * probes, the rotation controller's look at the CA, and the webhooks' trust guard, which learns
 * the live issuer from the chain the CA serves instead of reading the issuer Secret.
 */
import { isIP } from 'node:net';
import { connect } from 'node:tls';
import type { Address } from './config.js';
import { toPem } from './pem.js';

/** TLS settings of {@link peerChain}. */
export interface PeerChainTls {
  readonly alpn: readonly string[];
  readonly minVersion: 'TLSv1.2' | 'TLSv1.3';
}

/**
 * The chain (PEM, the server's certificate first, then what it sent after it) a TLS server
 * presents for `servername` (sent as SNI unless it is an IP address). Rejects on a network error,
 * or with an Error named TimeoutError after `timeoutMs`.
 *
 * @example
 * ```ts
 * const [leaf, ...rest] = await peerChain(caAddress, caIdentity, 3_000, { alpn: ['h2'], minVersion: 'TLSv1.3' });
 * ```
 */
export function peerChain(
  address: Address,
  servername: string,
  timeoutMs: number,
  tls: PeerChainTls,
): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const socket = connect({
      host: address.host,
      port: address.port,
      ...(isIP(servername) === 0 ? { servername } : {}),
      ALPNProtocols: [...tls.alpn],
      minVersion: tls.minVersion,
      // The caller verifies the chain (against anchors or a caBundle) and says what is wrong.
      rejectUnauthorized: false,
    });
    const timer = setTimeout(() => {
      const e = new Error('timeout');
      e.name = 'TimeoutError';
      socket.destroy(e);
    }, timeoutMs);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      const pems: string[] = [];
      let c = socket.getPeerCertificate(true);
      const seen = new Set<string>();
      while (c !== undefined && c.raw !== undefined && !seen.has(c.fingerprint256)) {
        seen.add(c.fingerprint256);
        pems.push(toPem(c.raw, 'CERTIFICATE'));
        c = c.issuerCertificate;
      }
      socket.end();
      resolve(pems);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}
