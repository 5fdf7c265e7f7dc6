/**
 * Every default in one place (DESIGN.md, "Names and defaults"). The settings tables in
 * core/config/ name these constants; a default written there as a literal is only `false` (a
 * switch off) or `[]` (nothing listed), which test/unit/core/config-settings.test.ts checks.
 */

/** The proxy's ports and UID in transparent mode (Linkerd's numbers), and its inbound policy. */
export const TRANSPARENT_DEFAULTS = Object.freeze({
  inboundPort: 4143,
  outboundPort: 4140,
  adminPort: 4191,
  proxyUid: 2102,
  inboundPolicy: 'all-unauthenticated' as const,
});

/** The defaults of meshid's settings and policies. */
export const DEFAULTS = Object.freeze({
  stateDir: '.meshid',
  trustDomain: 'cluster.local',
  /** The cluster's DNS domain (kubelet `clusterDomain`): Service names end in `svc.<this>`. */
  clusterDomain: 'cluster.local',
  controlPlaneNamespace: 'linkerd',
  audience: 'identity.l5d.io',
  certLifetimeMs: 24 * 3_600_000,
  clockSkewMs: 20_000,
  /** The signer name of meshid's PodCertificateRequest signer (KEP-4317). */
  podCertificateSigner: 'meshid.io/workload-identity',
  /** `meshid proxy`: its certificate from a token and the CA (Certify) unless told otherwise. */
  proxyIdentitySource: 'certify' as 'certify' | 'pod-certificate',
  /** `meshid trust`: publish ClusterTrustBundles when the API serves them. */
  clusterTrustBundles: 'auto' as 'auto' | 'on' | 'off',
  /** The PodCertificateRequest version the signer watches (v1beta1 also shows 1.35 kubelets' keys). */
  podCertificateApiVersion: 'v1beta1' as const,
  /** A pod certificate signer replica's Lease counts this long unrenewed (renewed every third). */
  podCertificateLeaseMs: 15_000,
  /** Another replica's pending request is answered after its owner answered nothing this long. */
  podCertificateTakeoverMs: 30_000,
  /**
   * The CA's Certify and admin addresses: loopback for local mode; the install renders `[::]`,
   * every address of both families (core/listen.ts; `0.0.0.0` is IPv4 only).
   */
  caListen: { host: '127.0.0.1', port: 8080 },
  caAdmin: { host: '127.0.0.1', port: 9990 },
  /** CA worker processes: 0 is one per core. */
  caWorkers: 0,
  /** How the CA checks a token when no JWKS is given: it asks the API server (TokenReview). */
  tokenValidator: 'tokenreview' as const,
  /** The CA records Kubernetes Events when it has a kubeconfig. */
  caEvents: true,
  /** Certify admission control (the certify* limits below) is on. */
  certifyBackpressure: true,
  tokenTtlMs: 3_600_000,
  /** The proxy's loopback defaults; the injector sets the admin and an inbound to `[::]` (both families). */
  proxyInbound: { host: '127.0.0.1', port: 4143 },
  proxyOutbound: { host: '127.0.0.1', port: 4140 },
  proxyAdmin: { host: '127.0.0.1', port: 4191 },
  /** Longest wait between a proxy's failed certificate requests (the backoff's cap). */
  proxyIdentityRetryMaxMs: 60_000,
  /** How long the app may take to start an answer before the inbound sends 504. */
  proxyAppTimeoutMs: 60_000,
  /** The inbound's limits (proxy's DEFAULT_INBOUND_LIMITS reads them; RFC 9113 §6.5.2: no less than 100 streams). */
  proxyInboundMaxStreams: 100,
  proxyInboundMaxAppConnections: 512,
  proxyInboundMaxAppConnectionsPerPeer: 128,
  proxyInboundMaxConnectionsPerPeer: 128,
  /**
   * Transparent mode: redirected inbound connections arrive on the pod's address, not loopback.
   * `[::]` is every address of both families (one dual-stack socket; `0.0.0.0` where the kernel
   * has no IPv6), so iptables' and ip6tables' redirections both land (core/listen.ts).
   */
  proxyTransparentInbound: { host: '::', port: TRANSPARENT_DEFAULTS.inboundPort },
  /** Transparent mode: the nat rules redirect the app's outbound TCP here. */
  proxyTransparentOutbound: { host: '127.0.0.1', port: TRANSPARENT_DEFAULTS.outboundPort },
  /** `meshid proxy-init`: which iptables back end (auto: the one already holding rules). */
  iptablesMode: 'auto' as const,
  logLevel: 'info' as const,
  /** Log lines: text on a terminal, JSON otherwise (core/logger.ts). */
  logFormat: 'auto' as const,
  /** TLS key exchange of every meshid endpoint (core/tls-groups.ts). */
  tlsGroups: 'hybrid-preferred' as const,
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
  /**
   * TLS handshakes a CA worker runs at once, and how long a connection beyond them may wait
   * unread before it is closed (docs/benchmarks.md, "The restart storm"): a handshake costs
   * about 1 ms of CPU, so 32 keep a core busy, and a proxy that waited 5 s still has half of
   * its 10 s deadline for the handshake and the call.
   */
  certifyMaxHandshakes: 32,
  certifyHandshakeWaitMs: 5_000,
  /**
   * Established Certify connections one client address may hold at once, per CA worker, counted
   * after the TLS handshake (issue 20). A pod's proxy holds one, for one renewal; 128 is above
   * kubelet's default of 110 pods per node, so a whole node behind one SNAT address is still
   * served, while one address can no longer hold thousands of TLS and HTTP/2 sessions.
   */
  certifyMaxConnectionsPerPeer: 128,
  /** The image `meshid install` deploys. */
  image: 'ghcr.io/meshid/meshid:v0.1.0',
  /** Identity CA replicas `meshid install` deploys: two, so that a drain or a crash is not an outage. */
  installReplicas: 2,
  /** The cert-manager Issuer holding the trust anchor's key, for `meshid install --cert-manager`. */
  certManagerIssuer: 'linkerd-trust-anchor',
  /**
   * `meshid destination`: the Destination API (Linkerd's port) and its admin server. The install
   * listens on `[::]`: every address of both families (core/listen.ts).
   */
  destinationListen: { host: '127.0.0.1', port: 8086 },
  destinationAdmin: { host: '127.0.0.1', port: 9996 },
  /** `meshid destination` runs in a pod: its service account reaches the API. */
  destinationKubeconfig: 'in-cluster',
  /** `meshid webhooks`: HTTPS listen address (the install listens on `[::]:8443`, both families). */
  webhooksListen: { host: '127.0.0.1', port: 8443 },
  /**
   * Largest AdmissionReview body the webhooks read. An object is at most ~1.5 MiB in etcd and a
   * review of an update carries two of them, with JSON's overhead; anything bigger is a 413.
   */
  maxReviewBytes: 6 * 1024 * 1024,
  /**
   * Deepest nesting of JSON arrays and objects a listener parses (webhook reviews, the JWT of a
   * Certify call). A Pod review is about 15 deep (review → request → object → metadata →
   * managedFields → fieldsV1 → f:spec → f:containers → k:{…} → f:env → k:{…} → f:valueFrom → …;
   * affinity terms about as deep), a JWT 3; 64 leaves room for what Kubernetes adds and keeps
   * parsing of anything admitted to microseconds, where 2.5 million levels in 5 MB cost seconds.
   */
  maxJsonDepth: 64,
  /** Quiet time after the last event in a watched file's folder before it is re-read. */
  fileDebounceMs: 100,
  /** How often a watched file is re-read besides watching it (the safety net of core/watch-file). */
  fileRecheckMs: 10_000,
  /** Largest watched file read (a bundle, a key set, a serving pair). */
  maxWatchedFileBytes: 1024 * 1024,
  /** How often the webhooks re-check their serving certificate files (besides watching them). */
  webhooksTlsReloadMs: 10_000,
  /** `expirationSeconds` of the projected token the injector adds (Linkerd's default). */
  proxyTokenExpirationMs: 24 * 3_600_000,
  /** Resources of the injected proxy: it runs at ~50-75 MB (docs/benchmarks.md). */
  proxyCpuRequest: '100m',
  proxyMemoryRequest: '96Mi',
  proxyMemoryLimit: '256Mi',
  /** Failure policies `meshid install` gives the webhook configurations (docs/webhooks.md). */
  injectorFailurePolicy: 'Ignore' as const,
  trustGuardFailurePolicy: 'Fail' as const,
  /** timeoutSeconds of the webhook configurations (the API server allows 1-30 s). */
  webhookTimeoutMs: 10_000,
  /** What the inspecting commands (check, identity, version, trust) print: text or json. */
  output: 'text' as const,
  /** `meshid check`: warn when a certificate has less than this left (Linkerd's check uses 60 days). */
  checkExpiryWarningMs: 60 * 24 * 3_600_000,
  /** `meshid check`: deadline of one network probe. */
  checkTimeoutMs: 3_000,
  /** `meshid check`: probes at once. */
  checkConcurrency: 16,
  /** `meshid check`: injected pods whose proxy admin endpoint is asked (annotations: all pods). */
  checkProxySample: 50,
  /** `meshid trust`: warn when an anchor expires within 60 days (as `linkerd check`). */
  anchorExpiryWarningMs: 60 * 86_400_000,
  /** A rotation wait longer than this is reported overdue (the rotation holds, never skips). */
  rotationWaitTimeoutMs: 3_600_000,
  /** How often the trust controllers re-check what they wait for. */
  rotationIntervalMs: 5_000,
});

/**
 * The node options the sidecar proxy is meant to run with: `node --max-semi-space-size=2
 * meshid.js proxy …`. A young generation bounded at 2 MB per semi-space keeps the proxy's RSS
 * under load near its idle size (about 71 MB instead of 83 MB at saturation in `npm run bench`)
 * and cost no throughput there. V8 reads the bound only at start, so it belongs on the command
 * line or in NODE_OPTIONS (the proxy injector puts it there); started without it, the proxy logs
 * that it is missing.
 *
 * @example
 * ```ts
 * spawn(process.execPath, [...SIDECAR_NODE_OPTIONS, 'bin/meshid.js', 'proxy', ...args]);
 * ```
 */
export const SIDECAR_NODE_OPTIONS: readonly string[] = Object.freeze(['--max-semi-space-size=2']);
