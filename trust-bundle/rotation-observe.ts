/**
 * How the rotation controller sees the mesh: proxies through their admin `/identity` endpoint,
 * CA replicas through a TLS handshake that reads their serving chain.
 */
import { formatAddress, peerChain, readIdentityReport } from '../core/index.js';

/** What one proxy reports about itself (its admin `/identity`). */
export interface ProxyObservation {
  /** Pod name or admin URL. */
  readonly name: string;
  readonly bundleFingerprint?: string | undefined;
  /**
   * The fingerprint of its bundle's canonical form (the same anchors in any order give the same
   * one), when the proxy reports it: a kubelet's clusterTrustBundle file orders them its own way.
   */
  readonly canonicalFingerprint?: string | undefined;
  /** NotBefore of its current certificate (ms). */
  readonly certNotBefore?: number | undefined;
  /** Its current chain, PEM, when the proxy reports it. */
  readonly chainPem?: string | undefined;
  /** Why it could not be read. */
  readonly error?: string | undefined;
}

/** How the controller learns what proxies have loaded. */
export interface ProxyObserver {
  /** For status: where observations come from. */
  readonly description: string;
  observe(signal: AbortSignal): Promise<ProxyObservation[]>;
}

/** What one CA replica serves. */
export interface CaObservation {
  readonly name: string;
  /** Its serving certificate chain, PEM. */
  readonly chainPem?: string | undefined;
  readonly error?: string | undefined;
}

/** How the controller learns which issuer the CA replicas sign with. */
export interface CaObserver {
  readonly description: string;
  observe(signal: AbortSignal): Promise<CaObservation[]>;
}

/**
 * Observes proxies through their admin `/identity` endpoints (the bundle fingerprint, the
 * certificate's notBefore and, when reported, its chain).
 *
 * @example
 * ```ts
 * const observer = adminUrlObserver(['http://127.0.0.1:4191'], 2000);
 * ```
 */
export function adminUrlObserver(urls: readonly string[], timeoutMs = 2000): ProxyObserver {
  return {
    description:
      urls.length === 0 ? 'no proxies configured' : `${urls.length} proxy admin endpoint(s)`,
    observe: (signal) => Promise.all(urls.map((u) => observeAdmin(u, u, timeoutMs, signal))),
  };
}

/**
 * Reads one proxy's `/identity`.
 *
 * @example
 * ```ts
 * const o = await observeAdmin('web-0', 'http://10.0.0.7:4191', 2000, signal);
 * ```
 */
export async function observeAdmin(
  name: string,
  baseUrl: string,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<ProxyObservation> {
  try {
    const res = await fetch(new URL('/identity', baseUrl), {
      signal: AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]),
    });
    if (!res.ok) return { name, error: `HTTP ${res.status}` };
    const body = readIdentityReport(await res.text());
    const nb = body.certificate.notBefore;
    return {
      name,
      bundleFingerprint: body.trustAnchors.fingerprint,
      canonicalFingerprint: body.trustAnchors.canonicalFingerprint,
      certNotBefore: nb === undefined ? undefined : Date.parse(nb),
      chainPem: body.certificate.chainPem,
    };
  } catch (err) {
    return { name, error: err instanceof Error ? err.message : String(err) };
  }
}

/**
 * Observes CA replicas at fixed addresses: a TLS handshake (nothing sent) that reads the serving
 * certificate chain. The CA's certificate is checked only for which root it chains to.
 *
 * @example
 * ```ts
 * const cas = tlsCaObserver([{ host: '10.0.0.5', port: 8080 }], 'linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local');
 * ```
 */
export function tlsCaObserver(
  addresses: readonly { host: string; port: number }[],
  serverName: string,
  timeoutMs = 2000,
): CaObserver {
  return {
    description: `${addresses.length} CA address(es)`,
    observe: () => Promise.all(addresses.map((a) => observeCa(a, serverName, timeoutMs))),
  };
}

/**
 * Reads one CA replica's serving chain.
 *
 * @example
 * ```ts
 * const o = await observeCa({ host: '127.0.0.1', port: 8080 }, caIdentity, 2000);
 * ```
 */
export function observeCa(
  address: { host: string; port: number },
  serverName: string,
  timeoutMs: number,
): Promise<CaObservation> {
  const name = formatAddress(address);
  // Only inspected: which root the chain leads to is checked by the caller.
  return peerChain(address, serverName, timeoutMs, { alpn: ['h2'], minVersion: 'TLSv1.2' }).then(
    (pems) => ({ name, chainPem: pems.join('') }),
    (err: Error) => ({ name, error: err.name === 'TimeoutError' ? 'timed out' : err.message }),
  );
}
