/**
 * The JWKS validator fed from the cluster itself: the API server's OIDC discovery document names
 * the token issuer, and its `/openid/v1/jwks` holds the service-account signing keys. The keys
 * are fetched through the API server (with the kubeconfig's credentials) rather than from the
 * document's `jwks_uri`, which may name an external host the CA cannot reach; they are cached and
 * fetched again when a token names an unknown `kid` (a key rotation), as for any JWKS URL.
 */
import { LogKey, MeshidError } from '../../core/index.js';
import type { Clock, Logger } from '../../core/index.js';
import type { KubeApi } from '../kube/api.js';
import { JwksTokenValidator } from './jwks.js';

/** Where the API server publishes its discovery document and keys. */
const OIDC_DISCOVERY_PATH = '/.well-known/openid-configuration';
const OIDC_JWKS_PATH = '/openid/v1/jwks';

/**
 * Builds a JwksTokenValidator for the cluster's service-account tokens.
 *
 * @example
 * ```ts
 * const tokens = await kubernetesJwksValidator({ api, audience: 'identity.l5d.io',
 *   clockSkewMs: 20_000, clock, logger });
 * ```
 */
export async function kubernetesJwksValidator(opts: {
  api: Pick<KubeApi, 'oidcIssuer' | 'connection' | 'server'>;
  audience: string;
  /** The expected `iss`; default: the discovery document's issuer. */
  issuer?: string | undefined;
  clockSkewMs: number;
  clock: Clock;
  logger: Logger;
  /** How soon after a fetch an unknown `kid` may fetch again; jose's default 30 s. */
  cooldownMs?: number;
}): Promise<JwksTokenValidator> {
  const { api } = opts;
  let issuer = opts.issuer;
  if (issuer === undefined) {
    try {
      issuer = await api.oidcIssuer(AbortSignal.timeout(10_000));
    } catch (err) {
      throw new MeshidError(
        'ERR_CONFIG_INVALID',
        `cannot read the token issuer from ${api.server}${OIDC_DISCOVERY_PATH}: ${err instanceof Error ? err.message : String(err)} (set tokenIssuer to start without it)`,
        { cause: err },
      );
    }
    opts.logger.info({ [LogKey.issuer]: issuer }, 'token issuer from OIDC discovery');
  }
  const conn = await api.connection();
  return JwksTokenValidator.create({
    jwks: {
      url: new URL(OIDC_JWKS_PATH, conn.server).href,
      ...(conn.caPem === undefined ? {} : { caPem: conn.caPem }),
      ...(conn.clientCert === undefined ? {} : { clientCert: conn.clientCert }),
      // Re-read per fetch: an in-cluster service-account token rotates.
      headers: async () => ({ ...(await api.connection()).headers }),
      ...(opts.cooldownMs === undefined ? {} : { cooldownMs: opts.cooldownMs }),
    },
    issuer,
    audience: opts.audience,
    clockSkewMs: opts.clockSkewMs,
    clock: opts.clock,
    logger: opts.logger,
  });
}
