/**
 * Every default in one place (DESIGN.md, "Names and defaults").
 */
export const DEFAULTS = Object.freeze({
  stateDir: '.meshid',
  trustDomain: 'cluster.local',
  controlPlaneNamespace: 'linkerd',
  audience: 'identity.l5d.io',
  certLifetimeMs: 24 * 3_600_000,
  clockSkewMs: 20_000,
  caListen: { host: '127.0.0.1', port: 8080 },
  caAdmin: { host: '127.0.0.1', port: 9990 },
  tokenTtlMs: 3_600_000,
  proxyInbound: { host: '127.0.0.1', port: 4143 },
  proxyOutbound: { host: '127.0.0.1', port: 4140 },
  proxyAdmin: { host: '127.0.0.1', port: 4191 },
  logLevel: 'info' as const,
  /** The `iss` of tokens minted by `meshid token` for local development. */
  localTokenIssuer: 'meshid-local-development',
  /** Upper bounds of one Certify request (the whole message, and each field). */
  maxRequestBytes: 64 * 1024,
  maxTokenBytes: 16 * 1024,
  maxCsrBytes: 8 * 1024,
  maxIdentityLength: 253,
  trustAnchorsConfigMap: 'linkerd-identity-trust-roots',
  trustAnchorsKey: 'ca-bundle.crt',
  issuerSecret: 'linkerd-identity-issuer',
  /** A positive TokenReview is reused this long (and never past the token's expiry). */
  tokenReviewCacheTtlMs: 10_000,
  tokenReviewCacheSize: 10_000,
  /**
   * Certify admission control, per CA worker process: calls decided at once (most wait on the
   * token validator), calls queued beyond that, and token buckets per peer address and per
   * requested identity (burst, then per second). A pod's proxy asks about once a day, so a
   * source over 50 a second is misbehaving; a Deployment of 3000 pods restarting at once passes
   * the identity bucket of one worker in about 10 s.
   */
  certifyMaxInFlight: 64,
  certifyMaxQueue: 2048,
  certifySourceBurst: 100,
  certifySourceRate: 50,
  certifyIdentityBurst: 1000,
  certifyIdentityRate: 200,
  /** The image `meshid install` deploys. */
  image: 'ghcr.io/meshid/meshid:v0.1.0',
  /** Identity CA replicas `meshid install` deploys: two, so that a drain or a crash is not an outage. */
  installReplicas: 2,
  /** The cert-manager Issuer holding the trust anchor's key, for `meshid install --cert-manager`. */
  certManagerIssuer: 'linkerd-trust-anchor',
});
