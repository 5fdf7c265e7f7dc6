/**
 * The proxy's admin surface (default 127.0.0.1:4191): `/ready` (a valid certificate is held),
 * `/live`, `/identity` (what the rotation controller reads: the identity, the certificate's serial
 * and NotAfter, the loaded anchor bundle's fingerprint), and `/metrics`, with Linkerd's names for
 * the identity metrics so existing dashboards work.
 */
import type {
  Address,
  Clock,
  Logger,
  ProxyIdentityReport,
  ProxyTlsReport,
  Readiness,
  Registry,
} from '../core/index.js';
import { Counter, Gauge, bundleFingerprint, startAdminServer } from '../core/index.js';
import type { AnchorSource } from './anchors.js';
import type { IdentitySource } from './identity/credential-file.js';

export interface ProxyAdminDeps {
  readonly localIdentity: string;
  readonly identity: IdentitySource;
  readonly anchors: AnchorSource;
  readonly clock: Clock;
  readonly registry: Registry;
  readonly logger: Logger;
  /** The TLS part of `/identity`, when the proxy reports it. */
  readonly tls?: () => ProxyTlsReport;
}

/**
 * The report behind `/identity`.
 *
 * @example
 * ```ts
 * identityReport(deps).certificate?.serial;
 * ```
 */
export function identityReport(deps: ProxyAdminDeps): ProxyIdentityReport {
  const cert = deps.identity.current();
  const bundle = deps.anchors.current();
  return {
    identity: deps.localIdentity,
    ready: cert !== undefined,
    ...(cert === undefined
      ? {}
      : {
          certificate: {
            serial: cert.serialHex,
            notBefore: new Date(cert.notBefore).toISOString(),
            notAfter: new Date(cert.notAfter).toISOString(),
            chainPem: cert.certChainPem,
          },
        }),
    trustAnchors: {
      fingerprint: bundle.fingerprint,
      canonicalFingerprint: bundleFingerprint(bundle.pem),
      subjects: bundle.anchors.map((a) => a.subject),
      loadedAt: new Date(bundle.loadedAt).toISOString(),
    },
    refreshes: { ok: deps.identity.stats.refreshes, failed: deps.identity.stats.failures },
    ...(deps.tls === undefined ? {} : { tls: deps.tls() }),
  };
}

/** Registers the identity metrics (Linkerd's names) on the proxy's registry. */
export function registerIdentityMetrics(deps: ProxyAdminDeps): void {
  const { registry, identity } = deps;
  new Gauge({
    name: 'control_identity_cert_expiration_timestamp_seconds',
    help: 'NotAfter of the current workload certificate (Unix seconds).',
    registers: [registry],
    collect() {
      const c = identity.current();
      if (c === undefined) this.reset();
      else this.set(c.notAfter / 1000);
    },
  });
  new Gauge({
    name: 'control_identity_cert_refresh_timestamp_seconds',
    help: 'When the certificate was last refreshed (Unix seconds).',
    registers: [registry],
    collect() {
      this.set(identity.stats.lastRefreshAt / 1000);
    },
  });
  new Counter({
    name: 'control_identity_cert_refreshes_total',
    help: 'Certificate refreshes by result.',
    labelNames: ['result'] as const,
    registers: [registry],
    collect() {
      this.reset();
      this.inc({ result: 'ok' }, identity.stats.refreshes);
      this.inc({ result: 'failure' }, identity.stats.failures);
    },
  });
  new Counter({
    name: 'meshid_proxy_trust_anchors_reloads_total',
    help: 'Trust-anchor bundle changes by result.',
    labelNames: ['result'] as const,
    registers: [registry],
    collect() {
      this.reset();
      this.inc({ result: 'accepted' }, deps.anchors.stats.reloads);
      this.inc({ result: 'rejected' }, deps.anchors.stats.rejected);
    },
  });
}

/** Readiness: a valid certificate is held. */
export function proxyReadiness(deps: Pick<ProxyAdminDeps, 'identity' | 'clock'>): Readiness {
  const c = deps.identity.current();
  return c === undefined
    ? {
        ready: false,
        reason: 'no valid certificate yet (or it expired while the CA was unreachable)',
      }
    : { ready: true, reason: `certificate valid until ${new Date(c.notAfter).toISOString()}` };
}

/**
 * Starts the admin server.
 *
 * @example
 * ```ts
 * const admin = await startProxyAdmin({ host: '127.0.0.1', port: 4191 }, deps);
 * ```
 */
export function startProxyAdmin(
  address: Address,
  deps: ProxyAdminDeps,
): ReturnType<typeof startAdminServer> {
  return startAdminServer(address, {
    logger: deps.logger,
    readiness: () => proxyReadiness(deps),
    metrics: async () => ({
      contentType: deps.registry.contentType,
      body: await deps.registry.metrics(),
    }),
    routes: {
      '/identity': () => ({
        status: 200,
        contentType: 'application/json',
        body: `${JSON.stringify(identityReport(deps), null, 2)}\n`,
      }),
    },
  });
}
