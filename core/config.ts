/**
 * One configuration schema for every meshid command, validated once at start-up.
 *
 * Sources, lowest to highest precedence: a YAML or JSON file (`--config`), `MESHID_*`
 * environment variables, command-line flags. Every setting has all three spellings, derived from
 * one camelCase key: `certLifetime` ↔ `MESHID_CERT_LIFETIME` ↔ `--cert-lifetime`. Unknown keys,
 * variables and flags are errors, never silent defaults. Every problem is reported at once with
 * the field it concerns, and the result is frozen.
 */
import { readFileSync } from 'node:fs';
import type * as Yaml from 'yaml';
import { parseArgs } from 'node:util';
import { createRequire } from 'node:module';
import { z } from 'zod';
import { DEFAULTS } from './defaults.js';
import { INBOUND_POLICIES, TRANSPARENT_DEFAULTS } from './transparent.js';
import { formatDuration, parseDuration } from './duration.js';
import { MeshidError } from './errors.js';
import { TLS_GROUPS_MODES } from './tls-groups.js';
import {
  isDns1123Label,
  isDns1123Subdomain,
  namingProblems,
  parseIdentityName,
} from './identity.js';

/** A `host:port` listen or dial address. */
export interface Address {
  readonly host: string;
  readonly port: number;
}

/** How a setting is written on the command line and in the environment. */
type Kind = 'string' | 'boolean' | 'duration' | 'address' | 'integer' | 'list';

interface Setting {
  readonly kind: Kind;
  readonly help: string;
}

/** The settings every command shares. */
const COMMON = {
  config: { kind: 'string', help: 'YAML or JSON configuration file' },
  logLevel: { kind: 'string', help: 'fatal|error|warn|info|debug|trace|silent' },
  fips: {
    kind: 'boolean',
    help: 'FIPS mode: run all crypto on a FIPS provider (or refuse to start), FIPS-approved algorithms only',
  },
  tlsGroups: {
    kind: 'string',
    help: 'TLS key exchange: hybrid-preferred (X25519MLKEM768, then classic groups) | hybrid-required | classic; FIPS: P-256/P-384',
  },
} as const satisfies Record<string, Setting>;

const NAMING = {
  trustDomain: { kind: 'string', help: 'trust domain (DNS-1123 subdomain)' },
  controlPlaneNamespace: { kind: 'string', help: 'control-plane namespace in identity names' },
} as const satisfies Record<string, Setting>;

/** Settings per command. Flags are the kebab-case of the keys. */
export const COMMAND_SETTINGS = {
  init: {
    ...COMMON,
    dir: { kind: 'string', help: 'state folder to write' },
    force: { kind: 'boolean', help: 'overwrite existing material' },
    ...NAMING,
  },
  token: {
    ...COMMON,
    dir: { kind: 'string', help: 'state folder holding token-signing/key.pem' },
    ns: { kind: 'string', help: 'namespace of the service account' },
    sa: { kind: 'string', help: 'service account name' },
    ttl: { kind: 'duration', help: 'token lifetime' },
    audience: { kind: 'string', help: 'token audience' },
  },
  ca: {
    ...COMMON,
    dir: { kind: 'string', help: 'local state folder (written by meshid init)' },
    trustAnchors: { kind: 'string', help: 'PEM bundle of trust anchors' },
    issuerDir: { kind: 'string', help: 'folder with tls.crt, tls.key and optional ca.crt' },
    jwks: { kind: 'string', help: 'JWKS file path or https URL of the token issuer' },
    jwksCa: { kind: 'string', help: 'PEM CA bundle to trust for an https JWKS URL' },
    tokenIssuer: { kind: 'string', help: 'expected token issuer (iss)' },
    audience: { kind: 'string', help: 'expected token audience' },
    ...NAMING,
    identityName: { kind: 'string', help: "the CA's own TLS identity" },
    certLifetime: { kind: 'duration', help: 'leaf certificate lifetime' },
    clockSkew: { kind: 'duration', help: 'clock-skew allowance (back-dating, token leeway)' },
    listen: { kind: 'address', help: 'gRPC listen address' },
    admin: { kind: 'address', help: 'admin HTTP listen address' },
    workers: { kind: 'integer', help: 'worker processes (0 = one per core)' },
    kubeconfig: {
      kind: 'string',
      help: 'kubeconfig file for the Kubernetes API; "in-cluster" uses the pod\'s service account',
    },
    namespace: {
      kind: 'string',
      help: 'namespace of the issuer Secret, anchors ConfigMap and Events (default: the control-plane namespace)',
    },
    issuerSecret: {
      kind: 'string',
      help: 'issuer Secret (kubernetes.io/tls or linkerd.io/tls), watched through the API',
    },
    trustAnchorsConfigMap: {
      kind: 'string',
      help: 'trust-anchor ConfigMap, watched through the API (with issuerSecret)',
    },
    trustAnchorsKey: { kind: 'string', help: 'key of the bundle in the trust-anchor ConfigMap' },
    tokenValidator: {
      kind: 'string',
      help: 'tokenreview (ask the API server) or jwks (verify signatures with --jwks)',
    },
    tokenReviewCacheTtl: {
      kind: 'duration',
      help: 'how long a successful TokenReview is reused (never past the token expiry; 0s = off)',
    },
    tokenReviewCacheSize: { kind: 'integer', help: 'most TokenReview results kept' },
    tokenReviewUnsafeNoAudienceFallback: {
      kind: 'boolean',
      help: 'UNSAFE, Linkerd-compatible: retry a refused review without audience (accepts any API token)',
    },
    events: { kind: 'boolean', help: 'record Kubernetes Events (when a kubeconfig is in use)' },
    backpressure: {
      kind: 'boolean',
      help: 'admission control for Certify: the limits below (false: admit everything at once)',
    },
    certifyMaxInFlight: { kind: 'integer', help: 'Certify calls decided at once, per worker' },
    certifyMaxQueue: { kind: 'integer', help: 'Certify calls waiting beyond that, per worker' },
    certifySourceBurst: { kind: 'integer', help: 'calls one peer address may make at once' },
    certifySourceRate: { kind: 'integer', help: 'then this many per second (per worker)' },
    certifyIdentityBurst: { kind: 'integer', help: 'calls for one identity at once' },
    certifyIdentityRate: { kind: 'integer', help: 'then this many per second (per worker)' },
    certifyMaxHandshakes: {
      kind: 'integer',
      help: 'TLS handshakes in progress at once, per worker; more connections wait unread (0 = no limit)',
    },
    certifyHandshakeWait: {
      kind: 'duration',
      help: 'a connection that waited this long for a handshake is closed instead',
    },
  },
  install: {
    ...COMMON,
    ...NAMING,
    image: { kind: 'string', help: 'meshid container image' },
    replicas: { kind: 'integer', help: 'identity CA replicas' },
    trustAnchors: {
      kind: 'string',
      help: 'PEM trust-anchor bundle to put in the anchors ConfigMap (omitted: managed elsewhere)',
    },
    issuerSecret: { kind: 'string', help: 'issuer Secret the CA reads' },
    trustAnchorsConfigMap: { kind: 'string', help: 'trust-anchor ConfigMap the CA reads' },
    trustAnchorsKey: { kind: 'string', help: 'key of the bundle in the trust-anchor ConfigMap' },
    tokenValidator: {
      kind: 'string',
      help: "tokenreview (RBAC to create TokenReviews) or jwks (the cluster's OIDC discovery keys)",
    },
    certLifetime: { kind: 'duration', help: 'leaf certificate lifetime' },
    clockSkew: { kind: 'duration', help: 'clock-skew allowance' },
    certManager: {
      kind: 'boolean',
      help: 'render cert-manager resources that issue the identity issuer Secret',
    },
    certManagerIssuer: {
      kind: 'string',
      help: 'cert-manager Issuer (in the namespace) that holds the trust-anchor key',
    },
    trustManager: {
      kind: 'boolean',
      help: 'with certManager: a trust-manager Bundle fills the anchors ConfigMap',
    },
    podCertificateSigner: {
      kind: 'string',
      help: "the Kubernetes signer name of meshid's pod certificates and of the ClusterTrustBundles trust sync publishes",
    },
    webhooks: {
      kind: 'boolean',
      help: 'render the admission webhooks (proxy injector, trust guard); needs certManager for their serving certificate',
    },
    destination: {
      kind: 'boolean',
      help: 'render the destination service (meshid destination on 8086, list/watch of Services, EndpointSlices and Pods), which transparent proxies ask about their destinations; on by default with webhooks (the injector makes pods transparent), set false (MESHID_DESTINATION=false or destination: false in the config file) to leave it out',
    },
    injectorFailurePolicy: {
      kind: 'string',
      help: 'Ignore (pods start unmeshed while the injector is down) or Fail (they are refused)',
    },
    trustGuardFailurePolicy: {
      kind: 'string',
      help: 'Fail (trust edits wait for the guard) or Ignore (they go unchecked while it is down)',
    },
    webhookTimeout: { kind: 'duration', help: 'timeoutSeconds of the webhooks (1s-30s)' },
  },
  proxy: {
    ...COMMON,
    identityAddr: { kind: 'string', help: 'the CA, HOST:PORT' },
    identityName: { kind: 'string', help: "the CA's identity (its TLS certificate's name)" },
    trustAnchors: { kind: 'string', help: 'PEM bundle of trust anchors (watched)' },
    tokenFile: { kind: 'string', help: 'projected ServiceAccount token, re-read on every request' },
    localIdentity: { kind: 'string', help: "this workload's identity name" },
    inbound: { kind: 'address', help: 'inbound mTLS listen address' },
    app: { kind: 'address', help: 'the application, where inbound traffic goes' },
    outbound: { kind: 'address', help: 'outbound listen address' },
    route: {
      kind: 'list',
      help: 'LISTEN_ADDR=HOST:PORT@EXPECTED_IDENTITY, repeatable (env: comma-separated)',
    },
    destination: {
      kind: 'list',
      help: 'for the outbound HTTP listener: AUTHORITY=HOST:PORT@EXPECTED_IDENTITY, repeatable',
    },
    admin: { kind: 'address', help: 'admin HTTP listen address' },
    identityRetryMax: {
      kind: 'duration',
      help: 'longest wait between failed certificate requests (backoff cap)',
    },
    allowIdentity: { kind: 'list', help: 'inbound: identities allowed (default: any meshed peer)' },
    allowServiceAccount: { kind: 'list', help: 'inbound: service accounts allowed, ns/sa' },
    allowNamespace: { kind: 'list', help: 'inbound: namespaces allowed' },
    allowUnauthenticated: { kind: 'boolean', help: 'inbound: accept plaintext peers' },
    appProtocol: {
      kind: 'list',
      help: 'inbound: what the app speaks, http1|h2|detect|opaque, for the --app port or as PORT=PROTOCOL for another app port (repeatable; default detect)',
    },
    appTimeout: {
      kind: 'duration',
      help: 'inbound: how long the app may take to start an answer before the client gets 504 (0s = no limit; gRPC exempt)',
    },
    inboundMaxStreams: {
      kind: 'integer',
      help: 'inbound: HTTP/2 streams one connection may have open (SETTINGS_MAX_CONCURRENT_STREAMS)',
    },
    inboundMaxAppConnections: {
      kind: 'integer',
      help: 'inbound: exchanges with the app at once (requests, HTTP/1 and opaque connections), all peers together; beyond it HTTP/2 streams are refused (REFUSED_STREAM)',
    },
    inboundMaxAppConnectionsPerPeer: {
      kind: 'integer',
      help: 'inbound: exchanges with the app at once for one peer identity (or one plaintext address)',
    },
    inboundMaxConnectionsPerPeer: {
      kind: 'integer',
      help: 'inbound: connections one peer identity (or one address, before its handshake) may hold open',
    },
    transparent: {
      kind: 'boolean',
      help: 'transparent mode: inbound serves the connections the nat rules of meshid proxy-init redirect, each to its original port (needs the original-dst addon)',
    },
    inboundPolicy: {
      kind: 'string',
      help: 'transparent mode: what plaintext gets, all-unauthenticated (allowed), all-authenticated or deny (annotation config.linkerd.io/default-inbound-policy)',
    },
    inboundPortPolicy: {
      kind: 'list',
      help: 'transparent mode: PORT=POLICY, a policy for one app port, repeatable',
    },
    transparentOutbound: {
      kind: 'address',
      help: 'transparent mode: where the nat rules of meshid proxy-init redirect outbound TCP (default 127.0.0.1:4140)',
    },
    destinationAddr: {
      kind: 'string',
      help: 'transparent mode: the destination service, HOST:PORT (default linkerd-dst.<control-plane-namespace>.svc:8086)',
    },
    destinationName: {
      kind: 'string',
      help: "transparent mode: the destination service's identity (its TLS certificate's name; default derived from naming)",
    },
    ...NAMING,
  },
  'proxy-init': {
    ...COMMON,
    inboundPort: {
      kind: 'integer',
      help: "the proxy's inbound port, where inbound TCP is redirected",
    },
    outboundPort: {
      kind: 'integer',
      help: "the proxy's outbound port, where outbound TCP is redirected",
    },
    adminPort: {
      kind: 'integer',
      help: "the proxy's admin port (never redirected: probes reach it)",
    },
    proxyUid: { kind: 'integer', help: "the proxy's UID: its own connections are not redirected" },
    skipInboundPorts: {
      kind: 'list',
      help: 'inbound ports not redirected, e.g. 25,587,8000-9000 (annotation config.linkerd.io/skip-inbound-ports)',
    },
    skipOutboundPorts: {
      kind: 'list',
      help: 'outbound ports not redirected (annotation config.linkerd.io/skip-outbound-ports)',
    },
    skipSubnets: {
      kind: 'list',
      help: 'outbound destinations not redirected, CIDRs (annotation config.linkerd.io/skip-subnets)',
    },
    iptablesMode: {
      kind: 'string',
      help: 'auto (the back end already holding rules, else what iptables is), legacy or nft',
    },
    disableIpv6: { kind: 'boolean', help: 'write IPv4 rules only (no ip6tables)' },
    dryRun: {
      kind: 'boolean',
      help: 'print the rules (iptables-restore input) and change nothing',
    },
  },
  destination: {
    ...COMMON,
    listen: { kind: 'address', help: 'gRPC (mTLS) listen address of the Destination API' },
    admin: { kind: 'address', help: 'admin HTTP listen address (/metrics, /ready, /live)' },
    kubeconfig: {
      kind: 'string',
      help: 'kubeconfig for the watches of Services, EndpointSlices and Pods; "in-cluster" uses the pod\'s service account',
    },
    clusterDomain: {
      kind: 'string',
      help: "the cluster's DNS domain: Service names are <svc>.<ns>.svc.<this>",
    },
    ...NAMING,
    identityAddr: {
      kind: 'string',
      help: 'the CA it gets its certificate from, HOST:PORT (default linkerd-identity.<cp-ns>.svc:8080)',
    },
    identityName: {
      kind: 'string',
      help: "the CA's identity (default linkerd-identity.<cp-ns>...)",
    },
    trustAnchors: { kind: 'string', help: 'PEM bundle of trust anchors (watched)' },
    tokenFile: {
      kind: 'string',
      help: 'its projected ServiceAccount token (audience identity.l5d.io), re-read on every request',
    },
    localIdentity: {
      kind: 'string',
      help: 'its own identity (default linkerd-destination.<cp-ns>.serviceaccount.identity.<cp-ns>.<trust-domain>)',
    },
  },
  webhooks: {
    ...COMMON,
    listen: { kind: 'address', help: 'HTTPS listen address of /inject and /validate' },
    tlsDir: {
      kind: 'string',
      help: 'folder with tls.crt and tls.key (a mounted kubernetes.io/tls Secret), reloaded on change',
    },
    tlsReloadInterval: {
      kind: 'duration',
      help: 'how often the serving certificate files are re-checked besides watching them',
    },
    kubeconfig: {
      kind: 'string',
      help: 'kubeconfig for namespace annotations and the issuer Secret; "in-cluster" uses the pod\'s service account',
    },
    ...NAMING,
    proxyImage: { kind: 'string', help: 'image of the injected proxy (runs `meshid proxy`)' },
    identityAddr: {
      kind: 'string',
      help: "the CA's address written into injected proxies (default linkerd-identity.<cp-ns>.svc:8080)",
    },
    caAddress: {
      kind: 'string',
      help: 'where the trust guard reads the live issuer chain the CA serves (default: identityAddr)',
    },
    trustAnchors: {
      kind: 'string',
      help: 'the anchors bundle file (mounted ConfigMap): its SHA-256 is recorded on injected pods',
    },
    trustAnchorsConfigMap: {
      kind: 'string',
      help: "anchors ConfigMap: mounted into injected pods (from the pod's namespace) and guarded in the control plane",
    },
    trustAnchorsKey: { kind: 'string', help: 'key of the bundle in the trust-anchor ConfigMap' },
    issuerSecret: {
      kind: 'string',
      help: 'issuer Secret the guard reads (tls.crt, ca.crt) to know which anchor must stay',
    },
    tokenExpiration: {
      kind: 'duration',
      help: 'expirationSeconds of the projected token the injector adds',
    },
    nativeSidecar: {
      kind: 'boolean',
      help: 'inject the proxy as a native sidecar (init container, restartPolicy Always)',
    },
    excludeNamespace: {
      kind: 'list',
      help: 'namespaces never injected (kube-system and the control-plane namespace always are)',
    },
    proxyCpuRequest: { kind: 'string', help: "injected proxy's CPU request" },
    proxyMemoryRequest: { kind: 'string', help: "injected proxy's memory request" },
    proxyMemoryLimit: { kind: 'string', help: "injected proxy's memory limit" },
  },
  trust: {
    ...COMMON,
    ...NAMING,
    dir: {
      kind: 'string',
      help: 'local mode: the state folder (meshid init), files instead of API objects',
    },
    kubeconfig: {
      kind: 'string',
      help: 'kubeconfig file for the Kubernetes API; "in-cluster" uses the pod\'s service account',
    },
    namespace: {
      kind: 'string',
      help: 'namespace of the anchors ConfigMap, issuer and root Secrets (default: the control-plane namespace)',
    },
    trustAnchorsConfigMap: { kind: 'string', help: 'the anchors ConfigMap' },
    trustAnchorsKey: { kind: 'string', help: 'key of the bundle in the anchors ConfigMap' },
    issuerSecret: { kind: 'string', help: 'the identity issuer Secret' },
    issuerCertificate: {
      kind: 'string',
      help: 'the cert-manager Certificate of the identity issuer',
    },
    rootCertificate: {
      kind: 'string',
      help: 'the cert-manager Certificate (and Secret) of the trust anchor',
    },
    certManagerIssuer: {
      kind: 'string',
      help: 'the cert-manager CA Issuer over the trust anchor (signs the identity issuer)',
    },
    trustManager: {
      kind: 'boolean',
      help: 'manifests: a trust-manager Bundle fills the anchors ConfigMap (instead of meshid trust sync)',
    },
    clusterTrustBundles: {
      kind: 'string',
      help: "publish the anchors as ClusterTrustBundles (certificates.k8s.io/v1beta1) of the pod-certificate signer, a 'live' and a 'canary' one: on, off, or auto (when the API serves them)",
    },
    podCertificateSigner: {
      kind: 'string',
      help: 'the signer name the ClusterTrustBundles belong to (the pod-certificate signer)',
    },
    warnWithin: { kind: 'duration', help: 'warn when an anchor expires within this time' },
    certLifetime: {
      kind: 'duration',
      help: "the CA's leaf lifetime: drain waits this long (plus clock skew) after the switch",
    },
    clockSkew: { kind: 'duration', help: "the CA's clock-skew allowance" },
    proxyAdmin: {
      kind: 'list',
      help: 'proxy admin URLs (http://HOST:4191) whose /identity the rotation checks; repeatable',
    },
    podSelector: {
      kind: 'string',
      help: 'label selector of meshed pods whose proxies (podIP:4191/identity) the rotation checks',
    },
    caAddress: {
      kind: 'list',
      help: "CA replicas (HOST:PORT) whose serving certificate shows which issuer they sign with; in a cluster the CA's pods are found too",
    },
    propagateTimeout: {
      kind: 'duration',
      help: 'after this, a wait is reported overdue (the rotation holds; it never skips ahead)',
    },
    interval: { kind: 'duration', help: 'how often controllers re-check what they wait for' },
    once: { kind: 'boolean', help: 'rotate/sync: take the steps possible now, then exit' },
    output: { kind: 'string', help: 'text or json' },
  },
  local: {
    ...COMMON,
    dir: { kind: 'string', help: 'local state folder' },
    listen: { kind: 'address', help: 'gRPC listen address' },
    admin: { kind: 'address', help: 'admin HTTP listen address' },
    workers: { kind: 'integer', help: 'worker processes (0 = one per core)' },
  },
  check: {
    ...COMMON,
    dir: {
      kind: 'string',
      help: 'local state folder to check (the default, .meshid, when no kubeconfig is given)',
    },
    kubeconfig: { kind: 'string', help: 'kubeconfig of the cluster to check' },
    output: { kind: 'string', help: 'text (a checklist) or json (for machines)' },
    namespace: {
      kind: 'string',
      help: 'control-plane namespace of the install (default: the control-plane namespace)',
    },
    ...NAMING,
    identityName: { kind: 'string', help: "the CA's TLS identity (default: derived from naming)" },
    caAddress: {
      kind: 'address',
      help: "the CA's gRPC address (default: the local mesh's, or the Service's DNS name in a cluster)",
    },
    caAdmin: { kind: 'address', help: "the CA's admin address (/ready, /version, /metrics)" },
    clusterDomain: {
      kind: 'string',
      help: "the cluster's DNS domain: without --ca-address and --ca-admin the CA is asked at linkerd-identity.<namespace>.svc.<cluster domain> (not the trust domain)",
    },
    webhooksAddress: {
      kind: 'address',
      help: "the webhooks' HTTPS address whose served certificate the caBundle must verify (default: their Service's DNS name, port 443)",
    },
    issuerSecret: { kind: 'string', help: 'issuer Secret to check (cluster)' },
    trustAnchorsConfigMap: { kind: 'string', help: 'trust-anchor ConfigMap to check (cluster)' },
    trustAnchorsKey: { kind: 'string', help: 'key of the bundle in the trust-anchor ConfigMap' },
    expiryWarning: {
      kind: 'duration',
      help: 'warn when a certificate has less than this left (and less than a third of its life)',
    },
    timeout: { kind: 'duration', help: 'deadline of each network probe' },
    concurrency: { kind: 'integer', help: 'probes run at once' },
    proxyAdminPort: {
      kind: 'integer',
      help: "proxies' admin port, asked at each pod's IP (cluster)",
    },
    proxySample: {
      kind: 'integer',
      help: 'injected pods whose proxy is asked for its certificate (0 = all; annotations are checked on all)',
    },
    podCertificateSigner: {
      kind: 'string',
      help: "the signer name of meshid's ClusterTrustBundles, compared with the anchors (cluster)",
    },
    proxyAdmin: {
      kind: 'list',
      help: "admin address of a proxy to check, repeatable (local: the local mesh's are found by themselves)",
    },
  },
  identity: {
    ...COMMON,
    file: { kind: 'string', help: 'PEM certificate or chain to inspect (also the first argument)' },
    secret: {
      kind: 'string',
      help: 'NAMESPACE/NAME of a TLS Secret to inspect (needs kubeconfig)',
    },
    proxy: { kind: 'address', help: "a running proxy's admin address: inspect its certificate" },
    trustAnchors: {
      kind: 'string',
      help: "PEM bundle of the current anchors (default: <dir>/trust-anchors.pem, or the cluster's ConfigMap)",
    },
    dir: { kind: 'string', help: 'local state folder whose anchors to chain to' },
    kubeconfig: { kind: 'string', help: 'kubeconfig, for --secret and the anchors ConfigMap' },
    namespace: {
      kind: 'string',
      help: 'namespace of the anchors ConfigMap (default: the control-plane namespace)',
    },
    controlPlaneNamespace: NAMING.controlPlaneNamespace,
    trustAnchorsConfigMap: { kind: 'string', help: 'trust-anchor ConfigMap (with kubeconfig)' },
    trustAnchorsKey: { kind: 'string', help: 'key of the bundle in the trust-anchor ConfigMap' },
    output: { kind: 'string', help: 'text or json' },
    timeout: { kind: 'duration', help: 'deadline of a network call' },
  },
  version: {
    ...COMMON,
    caAdmin: { kind: 'address', help: "the CA's admin address, to show the server's version" },
    kubeconfig: { kind: 'string', help: "kubeconfig: also show the installed CA's image" },
    namespace: { kind: 'string', help: 'control-plane namespace (default linkerd)' },
    output: { kind: 'string', help: 'text or json' },
    timeout: { kind: 'duration', help: 'deadline of a network call' },
  },
} as const satisfies Record<string, Record<string, Setting>>;

export type CommandName = keyof typeof COMMAND_SETTINGS;

// ---- validated shapes -------------------------------------------------------------------------

const logLevel = z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);
const nonEmpty = z.string().min(1, 'must not be empty');
const label = nonEmpty.refine(isDns1123Label, 'must be a DNS-1123 label');
const subdomain = nonEmpty.refine(isDns1123Subdomain, 'must be a DNS-1123 subdomain');
/** A Kubernetes signer name: a DNS subdomain, a slash, a path (`meshid.io/workload-identity`). */
const signerName = nonEmpty.regex(
  /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/[^/\s]+$/,
  'must be a signer name of the form example.com/signer-name',
);
const positiveMs = z.number().int().positive('must be a positive duration');
const address = z.object({ host: z.string(), port: z.number().int().min(0).max(65535) });
// A Kubernetes resource quantity: 100m, 0.5, 96Mi, 1G, 1e3.
const quantity = nonEmpty.regex(
  /^[0-9]+(\.[0-9]+)?([eE][0-9]+|m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$/,
  'must be a Kubernetes quantity such as 100m or 96Mi',
);
const output = z.enum(['text', 'json']);
const port = z.number().int().min(1).max(65535);
const workers = z.number().int().min(0, 'must be 0 (one per core) or more').max(64);

const commonShape = {
  config: z.string().optional(),
  logLevel,
  fips: z.boolean(),
  tlsGroups: z.enum(TLS_GROUPS_MODES),
};

const SCHEMAS = {
  init: z.strictObject({
    ...commonShape,
    dir: nonEmpty,
    force: z.boolean(),
    trustDomain: subdomain,
    controlPlaneNamespace: label,
  }),
  token: z.strictObject({
    ...commonShape,
    dir: nonEmpty,
    ns: label,
    sa: label,
    ttl: positiveMs.max(7 * 24 * 3_600_000, 'must be at most 168h'),
    audience: nonEmpty,
  }),
  ca: z
    .strictObject({
      ...commonShape,
      dir: nonEmpty.optional(),
      trustAnchors: nonEmpty.optional(),
      issuerDir: nonEmpty.optional(),
      jwks: nonEmpty.optional(),
      jwksCa: nonEmpty.optional(),
      tokenIssuer: nonEmpty.optional(),
      audience: nonEmpty,
      kubeconfig: nonEmpty.optional(),
      namespace: label,
      issuerSecret: subdomain.optional(),
      trustAnchorsConfigMap: subdomain.optional(),
      trustAnchorsKey: nonEmpty.regex(/^[-._a-zA-Z0-9]+$/, 'must be a ConfigMap key'),
      tokenValidator: z.enum(['jwks', 'tokenreview']),
      tokenReviewCacheTtl: z.number().int().min(0).max(3_600_000, 'must be at most 1h'),
      tokenReviewCacheSize: z.number().int().min(0).max(1_000_000),
      tokenReviewUnsafeNoAudienceFallback: z.boolean(),
      events: z.boolean(),
      backpressure: z.boolean(),
      certifyMaxInFlight: z.number().int().min(1).max(100_000),
      certifyMaxQueue: z.number().int().min(0).max(1_000_000),
      certifySourceBurst: z.number().int().min(0, 'must be 0 (no limit) or more').max(1_000_000),
      certifySourceRate: z.number().int().min(1).max(1_000_000),
      certifyIdentityBurst: z.number().int().min(0, 'must be 0 (no limit) or more').max(1_000_000),
      certifyIdentityRate: z.number().int().min(1).max(1_000_000),
      certifyMaxHandshakes: z.number().int().min(0, 'must be 0 (no limit) or more').max(100_000),
      certifyHandshakeWait: positiveMs.max(60_000, 'must be at most 60s'),
      trustDomain: subdomain,
      controlPlaneNamespace: label,
      identityName: subdomain,
      certLifetime: positiveMs
        // Seconds-long lifetimes are for tests and drills of renewal; production uses hours.
        .min(5_000, 'must be at least 5s')
        .max(366 * 24 * 3_600_000, 'must be at most 8784h'),
      clockSkew: z.number().int().min(0).max(3_600_000, 'must be at most 1h'),
      listen: address,
      admin: address,
      workers,
    })
    .superRefine((c, ctx) => {
      if (c.clockSkew >= c.certLifetime) {
        ctx.addIssue({
          code: 'custom',
          path: ['clockSkew'],
          message: 'must be less than certLifetime',
        });
      }
      try {
        parseIdentityName(c.identityName, c);
      } catch (err) {
        ctx.addIssue({ code: 'custom', path: ['identityName'], message: (err as Error).message });
      }
      caSourceProblems(c).forEach((p) => ctx.addIssue({ code: 'custom', ...p }));
    }),
  install: z
    .strictObject({
      ...commonShape,
      trustDomain: subdomain,
      controlPlaneNamespace: label,
      image: nonEmpty.regex(/^[^\s]+$/, 'must be an image reference without spaces'),
      replicas: z.number().int().min(1).max(100),
      trustAnchors: nonEmpty.optional(),
      issuerSecret: subdomain,
      trustAnchorsConfigMap: subdomain,
      trustAnchorsKey: nonEmpty.regex(/^[-._a-zA-Z0-9]+$/, 'must be a ConfigMap key'),
      tokenValidator: z.enum(['jwks', 'tokenreview']),
      certLifetime: positiveMs.min(5_000, 'must be at least 5s').max(366 * 24 * 3_600_000),
      clockSkew: z.number().int().min(0).max(3_600_000, 'must be at most 1h'),
      certManager: z.boolean(),
      certManagerIssuer: subdomain,
      trustManager: z.boolean(),
      podCertificateSigner: signerName,
      webhooks: z.boolean(),
      destination: z.boolean(),
      injectorFailurePolicy: z.enum(['Fail', 'Ignore']),
      trustGuardFailurePolicy: z.enum(['Fail', 'Ignore']),
      webhookTimeout: z
        .number()
        .int()
        .min(1000, 'must be at least 1s')
        .max(30_000, 'must be at most 30s (the API server maximum)')
        .refine((ms) => ms % 1000 === 0, 'must be whole seconds'),
    })
    .superRefine((c, ctx) => {
      if (c.webhooks && !c.certManager)
        ctx.addIssue({
          code: 'custom',
          path: ['webhooks'],
          message:
            "needs certManager: the webhooks' serving certificate and the configurations' caBundle come from cert-manager",
        });
    }),
  proxy: z
    .strictObject({
      ...commonShape,
      identityAddr: nonEmpty.refine((a) => parseAddress(a) !== undefined, 'must be HOST:PORT'),
      identityName: subdomain,
      trustAnchors: nonEmpty,
      tokenFile: nonEmpty,
      localIdentity: subdomain,
      inbound: address.optional(),
      app: address.optional(),
      outbound: address.optional(),
      route: z.array(nonEmpty),
      destination: z.array(nonEmpty),
      admin: address,
      identityRetryMax: z.number().int().min(1000, 'must be at least 1s').max(3_600_000),
      allowIdentity: z.array(nonEmpty).optional(),
      allowServiceAccount: z.array(nonEmpty).optional(),
      allowNamespace: z.array(label).optional(),
      allowUnauthenticated: z.boolean(),
      appProtocol: z.array(
        nonEmpty.regex(
          /^(\d{1,5}=)?(http1|h2|detect|opaque)$/,
          'must be http1, h2, detect or opaque, optionally as PORT=PROTOCOL',
        ),
      ),
      appTimeout: z.number().int().min(0).max(3_600_000, 'must be at most 1h'),
      inboundMaxStreams: z.number().int().min(1, 'must be at least 1').max(10_000),
      inboundMaxAppConnections: z.number().int().min(1, 'must be at least 1').max(100_000),
      inboundMaxAppConnectionsPerPeer: z.number().int().min(1, 'must be at least 1').max(100_000),
      inboundMaxConnectionsPerPeer: z.number().int().min(1, 'must be at least 1').max(100_000),
      transparent: z.boolean(),
      inboundPolicy: z.enum(INBOUND_POLICIES),
      inboundPortPolicy: z.array(
        nonEmpty.regex(
          new RegExp(`^\\d{1,5}=(${INBOUND_POLICIES.join('|')})$`),
          `must be PORT=POLICY, POLICY one of ${INBOUND_POLICIES.join(', ')}`,
        ),
      ),
      transparentOutbound: address.optional(),
      destinationAddr: nonEmpty.refine((a) => parseAddress(a) !== undefined, 'must be HOST:PORT'),
      destinationName: subdomain,
      trustDomain: subdomain,
      controlPlaneNamespace: label,
    })
    .superRefine((c, ctx) => {
      if (c.transparent) {
        if (c.inbound === undefined)
          ctx.addIssue({
            code: 'custom',
            path: ['inbound'],
            message: 'is required with transparent',
          });
        const out = c.transparentOutbound;
        if (out !== undefined && c.outbound !== undefined && out.port === c.outbound.port)
          ctx.addIssue({
            code: 'custom',
            path: ['outbound'],
            message: `must not use port ${out.port}: the transparent outbound listens there (--transparent-outbound)`,
          });
      } else if ((c.inbound === undefined) !== (c.app === undefined)) {
        ctx.addIssue({ code: 'custom', path: ['app'], message: 'is required with inbound' });
      }
    }),
  'proxy-init': z.strictObject({
    ...commonShape,
    inboundPort: port,
    outboundPort: port,
    adminPort: port,
    proxyUid: z.number().int().min(1, 'must not be 0 (root)').max(2_147_483_646),
    skipInboundPorts: z.array(z.string()),
    skipOutboundPorts: z.array(z.string()),
    skipSubnets: z.array(z.string()),
    iptablesMode: z.enum(['auto', 'legacy', 'nft']),
    disableIpv6: z.boolean(),
    dryRun: z.boolean(),
  }),
  destination: z.strictObject({
    ...commonShape,
    listen: address,
    admin: address,
    kubeconfig: nonEmpty,
    clusterDomain: subdomain,
    trustDomain: subdomain,
    controlPlaneNamespace: label,
    identityAddr: nonEmpty.refine((a) => parseAddress(a) !== undefined, 'must be HOST:PORT'),
    identityName: subdomain,
    trustAnchors: nonEmpty,
    tokenFile: nonEmpty,
    localIdentity: subdomain,
  }),
  webhooks: z.strictObject({
    ...commonShape,
    listen: address,
    tlsDir: nonEmpty,
    tlsReloadInterval: z.number().int().min(100, 'must be at least 100ms').max(3_600_000),
    kubeconfig: nonEmpty.optional(),
    trustDomain: subdomain,
    controlPlaneNamespace: label,
    proxyImage: nonEmpty.regex(/^[^\s]+$/, 'must be an image reference without spaces'),
    identityAddr: nonEmpty.refine((a) => parseAddress(a) !== undefined, 'must be HOST:PORT'),
    caAddress: nonEmpty
      .refine((a) => parseAddress(a) !== undefined, 'must be HOST:PORT')
      .optional(),
    trustAnchors: nonEmpty.optional(),
    trustAnchorsConfigMap: subdomain,
    trustAnchorsKey: nonEmpty.regex(/^[-._a-zA-Z0-9]+$/, 'must be a ConfigMap key'),
    issuerSecret: subdomain,
    tokenExpiration: z
      .number()
      .int()
      // The API server refuses a projected token under 10 minutes; 2^32 s is its upper bound.
      .min(600_000, 'must be at least 10m (the API server minimum)')
      .max(366 * 24 * 3_600_000, 'must be at most 8784h')
      .refine((ms) => ms % 1000 === 0, 'must be whole seconds'),
    nativeSidecar: z.boolean(),
    excludeNamespace: z.array(label),
    proxyCpuRequest: quantity,
    proxyMemoryRequest: quantity,
    proxyMemoryLimit: quantity,
  }),
  trust: z.strictObject({
    ...commonShape,
    trustDomain: subdomain,
    controlPlaneNamespace: label,
    dir: nonEmpty.optional(),
    kubeconfig: nonEmpty.optional(),
    namespace: label,
    trustAnchorsConfigMap: subdomain,
    trustAnchorsKey: nonEmpty.regex(/^[-._a-zA-Z0-9]+$/, 'must be a ConfigMap key'),
    issuerSecret: subdomain,
    issuerCertificate: subdomain,
    rootCertificate: subdomain,
    certManagerIssuer: subdomain,
    trustManager: z.boolean(),
    clusterTrustBundles: z.enum(['auto', 'on', 'off']),
    podCertificateSigner: signerName,
    warnWithin: z.number().int().min(0),
    certLifetime: positiveMs.min(5_000, 'must be at least 5s').max(366 * 24 * 3_600_000),
    clockSkew: z.number().int().min(0).max(3_600_000, 'must be at most 1h'),
    proxyAdmin: z.array(
      nonEmpty.regex(/^https?:\/\/[^/\s]+(\/[^\s]*)?$/, 'must be an http(s) URL'),
    ),
    podSelector: nonEmpty.optional(),
    caAddress: z.array(nonEmpty.refine((a) => parseAddress(a) !== undefined, 'must be HOST:PORT')),
    propagateTimeout: positiveMs,
    interval: positiveMs.min(10, 'must be at least 10ms').max(3_600_000),
    once: z.boolean(),
    output: z.enum(['text', 'json']),
  }),
  local: z.strictObject({
    ...commonShape,
    dir: nonEmpty,
    listen: address,
    admin: address,
    workers,
  }),
  check: z.strictObject({
    ...commonShape,
    dir: nonEmpty,
    kubeconfig: nonEmpty.optional(),
    output,
    namespace: label,
    trustDomain: subdomain,
    controlPlaneNamespace: label,
    identityName: subdomain,
    caAddress: address.optional(),
    caAdmin: address.optional(),
    clusterDomain: subdomain,
    webhooksAddress: address.optional(),
    issuerSecret: subdomain,
    trustAnchorsConfigMap: subdomain,
    trustAnchorsKey: nonEmpty.regex(/^[-._a-zA-Z0-9]+$/, 'must be a ConfigMap key'),
    expiryWarning: positiveMs,
    timeout: positiveMs.max(120_000, 'must be at most 2m'),
    concurrency: z.number().int().min(1).max(256),
    proxyAdminPort: z.number().int().min(1).max(65535),
    proxySample: z.number().int().min(0).max(100_000),
    podCertificateSigner: signerName,
    proxyAdmin: z.array(nonEmpty.refine((a) => parseAddress(a) !== undefined, 'must be HOST:PORT')),
  }),
  identity: z
    .strictObject({
      ...commonShape,
      file: nonEmpty.optional(),
      secret: nonEmpty
        .regex(
          /^[a-z0-9]([-a-z0-9]*[a-z0-9])?\/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$/,
          'must be NAMESPACE/NAME',
        )
        .optional(),
      proxy: address.optional(),
      trustAnchors: nonEmpty.optional(),
      dir: nonEmpty,
      kubeconfig: nonEmpty.optional(),
      namespace: label,
      controlPlaneNamespace: label,
      trustAnchorsConfigMap: subdomain,
      trustAnchorsKey: nonEmpty.regex(/^[-._a-zA-Z0-9]+$/, 'must be a ConfigMap key'),
      output,
      timeout: positiveMs.max(120_000, 'must be at most 2m'),
    })
    .superRefine((c, ctx) => {
      const given = [c.file, c.secret, c.proxy].filter((x) => x !== undefined).length;
      if (given !== 1)
        ctx.addIssue({
          code: 'custom',
          path: ['file'],
          message: 'give exactly one of FILE, --secret NS/NAME or --proxy ADMIN_ADDR',
        });
      if (c.secret !== undefined && c.kubeconfig === undefined)
        ctx.addIssue({
          code: 'custom',
          path: ['kubeconfig'],
          message: 'is required with --secret',
        });
    }),
  version: z.strictObject({
    ...commonShape,
    caAdmin: address.optional(),
    kubeconfig: nonEmpty.optional(),
    namespace: label,
    output,
    timeout: positiveMs.max(120_000, 'must be at most 2m'),
  }),
};

export type InitConfig = Readonly<z.infer<typeof SCHEMAS.init>>;
export type TokenConfig = Readonly<z.infer<typeof SCHEMAS.token>>;
export type CaConfig = Readonly<z.infer<typeof SCHEMAS.ca>>;
export type LocalConfig = Readonly<z.infer<typeof SCHEMAS.local>>;
export type InstallConfig = Readonly<z.infer<typeof SCHEMAS.install>>;
export type ProxyConfig = Readonly<z.infer<typeof SCHEMAS.proxy>>;
export type WebhooksConfig = Readonly<z.infer<typeof SCHEMAS.webhooks>>;
export type DestinationConfig = Readonly<z.infer<typeof SCHEMAS.destination>>;
export type CheckConfig = Readonly<z.infer<typeof SCHEMAS.check>>;
export type IdentityConfig = Readonly<z.infer<typeof SCHEMAS.identity>>;
export type VersionConfig = Readonly<z.infer<typeof SCHEMAS.version>>;
export type TrustConfig = Readonly<z.infer<typeof SCHEMAS.trust>>;
export type ProxyInitConfig = Readonly<z.infer<(typeof SCHEMAS)['proxy-init']>>;
export interface CommandConfigs {
  init: InitConfig;
  token: TokenConfig;
  ca: CaConfig;
  local: LocalConfig;
  proxy: ProxyConfig;
  install: InstallConfig;
  webhooks: WebhooksConfig;
  destination: DestinationConfig;
  check: CheckConfig;
  identity: IdentityConfig;
  version: VersionConfig;
  trust: TrustConfig;
  'proxy-init': ProxyInitConfig;
}

// ---- spelling ---------------------------------------------------------------------------------

/** `certLifetime` → `cert-lifetime`. */
export function flagName(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** `certLifetime` → `MESHID_CERT_LIFETIME`. */
export function envName(key: string): string {
  return `MESHID_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;
}

/** Every `MESHID_*` name some command knows, so that a typo is caught wherever it is set. */
const KNOWN_ENV = new Set(
  Object.values(COMMAND_SETTINGS).flatMap((s) => Object.keys(s).map(envName)),
);

// ---- loading ----------------------------------------------------------------------------------

/** Where the raw values come from; `env` and `argv` are passed in so tests control them. */
export interface ConfigSources {
  readonly argv: readonly string[];
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Reads the `--config` file; defaults to the real file system. */
  readonly readFile?: (path: string) => string;
}

interface Problem {
  readonly field: string;
  readonly message: string;
}

function parseValue(kind: Kind, raw: unknown): { value?: unknown; error?: string } {
  switch (kind) {
    case 'string':
      return typeof raw === 'string'
        ? { value: raw }
        : { error: `must be a string, got ${describe(raw)}` };
    case 'boolean':
      if (typeof raw === 'boolean') return { value: raw };
      if (raw === 'true' || raw === '1') return { value: true };
      if (raw === 'false' || raw === '0' || raw === '') return { value: false };
      return { error: `must be true or false, got ${describe(raw)}` };
    case 'integer': {
      const n =
        typeof raw === 'number'
          ? raw
          : typeof raw === 'string' && /^\d+$/.test(raw)
            ? Number(raw)
            : NaN;
      return Number.isInteger(n)
        ? { value: n }
        : { error: `must be a whole number, got ${describe(raw)}` };
    }
    case 'duration': {
      const ms = typeof raw === 'string' ? parseDuration(raw) : undefined;
      return ms === undefined
        ? { error: `must be a duration such as 24h, 20s or 1h30m, got ${describe(raw)}` }
        : { value: ms };
    }
    case 'list': {
      // A flag may repeat; an environment variable lists its values comma-separated.
      const items = Array.isArray(raw) ? raw : typeof raw === 'string' ? raw.split(',') : [raw];
      return items.every((i) => typeof i === 'string' && i.trim() !== '')
        ? { value: items.map((i) => (i as string).trim()) }
        : { error: `must be a list of non-empty strings, got ${describe(raw)}` };
    }
    case 'address': {
      const a = typeof raw === 'string' ? parseAddress(raw) : undefined;
      return a === undefined
        ? { error: `must be HOST:PORT (port 0-65535; [v6]:PORT), got ${describe(raw)}` }
        : { value: a };
    }
  }
}

function describe(raw: unknown): string {
  return typeof raw === 'string' ? JSON.stringify(raw) : (JSON.stringify(raw) ?? String(raw));
}

/**
 * Parses `host:port`, `[v6]:port`.
 *
 * @example
 * ```ts
 * parseAddress('127.0.0.1:8080'); // { host: '127.0.0.1', port: 8080 }
 * ```
 */
export function parseAddress(text: string): Address | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(text);
  if (m === null) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  return { host: (m[1] ?? m[2])!, port };
}

/** Formats an address for logs and dialing. */
export function formatAddress(a: Address): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/**
 * Loads, merges and validates the configuration of one command. Throws ERR_CONFIG_INVALID
 * listing every problem with its field.
 *
 * @example
 * ```ts
 * const { config } = loadConfig('ca', { argv: ['--listen', '127.0.0.1:0'], env: process.env });
 * ```
 */
export function loadConfig<C extends CommandName>(
  command: C,
  sources: ConfigSources,
): { config: CommandConfigs[C] } {
  const settings: Record<string, Setting> = COMMAND_SETTINGS[command];
  const problems: Problem[] = [];
  const raw: Record<string, unknown> = {};
  const put = (key: string, value: unknown, where: string): void => {
    const setting = settings[key];
    if (setting === undefined) {
      problems.push({ field: where, message: `unknown setting for "meshid ${command}"` });
      return;
    }
    const parsed = parseValue(setting.kind, value);
    if (parsed.error !== undefined) problems.push({ field: where, message: parsed.error });
    else raw[key] = parsed.value;
  };

  // Flags are parsed first (to find --config) but applied last.
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean }> = {};
  for (const [key, s] of Object.entries(settings)) {
    options[flagName(key)] =
      s.kind === 'list'
        ? { type: 'string', multiple: true }
        : { type: s.kind === 'boolean' ? 'boolean' : 'string' };
  }
  const flags = parseFlags(command, sources.argv, options);

  const configPath = (flags['config'] as string | undefined) ?? sources.env[envName('config')];
  if (configPath !== undefined && configPath !== '') {
    const read = sources.readFile ?? ((p: string) => readFileSync(p, 'utf8'));
    let doc: unknown;
    try {
      doc = parseYaml(read(configPath));
    } catch (err) {
      throw new MeshidError(
        'ERR_CONFIG_INVALID',
        `config file ${configPath}: ${(err as Error).message}`,
        { cause: err },
      );
    }
    if (doc !== null && doc !== undefined) {
      if (typeof doc !== 'object' || Array.isArray(doc)) {
        problems.push({ field: configPath, message: 'must be a mapping of settings' });
      } else {
        for (const [key, value] of Object.entries(doc)) {
          if (key === 'config')
            problems.push({
              field: `${configPath}: config`,
              message: 'cannot be set in a config file',
            });
          else put(key, value, `${configPath}: ${key}`);
        }
      }
    }
  }

  for (const [name, value] of Object.entries(sources.env)) {
    if (!name.startsWith('MESHID_') || value === undefined) continue;
    const key = Object.keys(settings).find((k) => envName(k) === name);
    if (key === undefined) {
      if (!KNOWN_ENV.has(name))
        problems.push({ field: name, message: 'unknown MESHID_ environment variable' });
      continue;
    }
    if (key !== 'config') put(key, value, name);
  }

  for (const [flag, value] of Object.entries(flags)) {
    if (value === undefined || flag === 'config') continue;
    const key = Object.keys(settings).find((k) => flagName(k) === flag)!;
    put(key, value, `--${flag}`);
  }

  if (problems.length > 0) throw configError(command, problems);
  const merged = applyDefaults(command, raw);
  const result = SCHEMAS[command].safeParse(merged);
  if (!result.success) {
    throw configError(
      command,
      result.error.issues.map((i) => {
        const key = String(i.path[0] ?? '');
        return {
          field: key === '' ? '(config)' : `${key} (--${flagName(key)}, ${envName(key)})`,
          message: i.code === 'invalid_type' && i.input === undefined ? 'is required' : i.message,
        };
      }),
    );
  }
  return { config: deepFreeze(result.data) as CommandConfigs[C] };
}

/**
 * The YAML parser, loaded only when a `--config` file is given: about 9 MB of every process,
 * which a sidecar configured by flags and environment does without.
 */
function parseYaml(text: string): unknown {
  return (createRequire(import.meta.url)('yaml') as typeof Yaml).parse(text);
}

function parseFlags(
  command: string,
  argv: readonly string[],
  options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean }>,
): Record<string, unknown> {
  try {
    return parseArgs({ args: [...argv], options, strict: true, allowPositionals: false }).values;
  } catch (err) {
    throw new MeshidError('ERR_CONFIG_INVALID', `meshid ${command}: ${(err as Error).message}`);
  }
}

function configError(command: string, problems: readonly Problem[]): MeshidError {
  const lines = problems.map((p) => `  ${p.field}: ${p.message}`).join('\n');
  return new MeshidError(
    'ERR_CONFIG_INVALID',
    `invalid configuration for "meshid ${command}" (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n${lines}`,
  );
}

/**
 * Fills defaults. For `ca`, the local state folder stands in for the four inputs that `meshid
 * init` writes when none of them is given; given ones override the folder's.
 */
function applyDefaults(
  command: CommandName,
  raw: Record<string, unknown>,
): Record<string, unknown> {
  const d = DEFAULTS;
  const withCommon = { logLevel: d.logLevel, fips: false, tlsGroups: d.tlsGroups, ...raw };
  switch (command) {
    case 'init':
      return {
        dir: d.stateDir,
        force: false,
        trustDomain: d.trustDomain,
        controlPlaneNamespace: d.controlPlaneNamespace,
        ...withCommon,
      };
    case 'token':
      return { dir: d.stateDir, ttl: d.tokenTtlMs, audience: d.audience, ...withCommon };
    case 'local':
      return { dir: d.stateDir, listen: d.caListen, admin: d.caAdmin, workers: 0, ...withCommon };
    case 'proxy': {
      const cp = (raw['controlPlaneNamespace'] as string | undefined) ?? d.controlPlaneNamespace;
      const td = (raw['trustDomain'] as string | undefined) ?? d.trustDomain;
      const naming = { trustDomain: td, controlPlaneNamespace: cp };
      return {
        admin: d.proxyAdmin,
        route: [],
        destination: [],
        identityRetryMax: 60_000,
        appProtocol: [],
        appTimeout: 60_000,
        inboundMaxStreams: 100,
        inboundMaxAppConnections: 512,
        inboundMaxAppConnectionsPerPeer: 128,
        inboundMaxConnectionsPerPeer: 128,
        transparent: false,
        inboundPolicy: TRANSPARENT_DEFAULTS.inboundPolicy,
        inboundPortPolicy: [],
        // The listeners exist when what they serve is configured, on their default ports.
        ...('app' in raw && !('inbound' in raw) ? { inbound: d.proxyInbound } : {}),
        // Redirected connections arrive on the pod's address, not on loopback.
        ...(raw['transparent'] === true && !('inbound' in raw)
          ? { inbound: { host: '0.0.0.0', port: TRANSPARENT_DEFAULTS.inboundPort } }
          : {}),
        // The nat rules redirect the app's outbound TCP to loopback.
        ...(raw['transparent'] === true
          ? { transparentOutbound: { host: '127.0.0.1', port: TRANSPARENT_DEFAULTS.outboundPort } }
          : {}),
        destinationAddr: destinationServiceAddress(naming),
        destinationName:
          namingProblems(naming).length === 0 ? destinationIdentityName(naming) : 'invalid',
        ...('destination' in raw && !('outbound' in raw) ? { outbound: d.proxyOutbound } : {}),
        allowUnauthenticated: false,
        trustDomain: td,
        controlPlaneNamespace: cp,
        ...withCommon,
      };
    }
    case 'proxy-init':
      return {
        inboundPort: TRANSPARENT_DEFAULTS.inboundPort,
        outboundPort: TRANSPARENT_DEFAULTS.outboundPort,
        adminPort: TRANSPARENT_DEFAULTS.adminPort,
        proxyUid: TRANSPARENT_DEFAULTS.proxyUid,
        skipInboundPorts: [],
        skipOutboundPorts: [],
        skipSubnets: [],
        iptablesMode: 'auto',
        disableIpv6: false,
        dryRun: false,
        ...withCommon,
      };
    case 'destination': {
      const cp = (raw['controlPlaneNamespace'] as string | undefined) ?? d.controlPlaneNamespace;
      const td = (raw['trustDomain'] as string | undefined) ?? d.trustDomain;
      const naming = { trustDomain: td, controlPlaneNamespace: cp };
      const valid = namingProblems(naming).length === 0;
      return {
        listen: d.destinationListen,
        admin: d.destinationAdmin,
        kubeconfig: 'in-cluster',
        clusterDomain: d.clusterDomain,
        trustDomain: td,
        controlPlaneNamespace: cp,
        identityAddr: `linkerd-identity.${cp}.svc:${d.caListen.port}`,
        identityName: valid ? caIdentityName(naming) : 'invalid',
        localIdentity: valid ? destinationIdentityName(naming) : 'invalid',
        ...withCommon,
      };
    }
    case 'webhooks': {
      const controlPlaneNamespace =
        (raw['controlPlaneNamespace'] as string | undefined) ?? d.controlPlaneNamespace;
      return {
        listen: d.webhooksListen,
        tlsReloadInterval: d.webhooksTlsReloadMs,
        trustDomain: d.trustDomain,
        controlPlaneNamespace,
        proxyImage: d.image,
        identityAddr: `linkerd-identity.${controlPlaneNamespace}.svc:${d.caListen.port}`,
        trustAnchorsConfigMap: d.trustAnchorsConfigMap,
        trustAnchorsKey: d.trustAnchorsKey,
        issuerSecret: d.issuerSecret,
        tokenExpiration: d.proxyTokenExpirationMs,
        nativeSidecar: false,
        excludeNamespace: [],
        proxyCpuRequest: d.proxyCpuRequest,
        proxyMemoryRequest: d.proxyMemoryRequest,
        proxyMemoryLimit: d.proxyMemoryLimit,
        ...withCommon,
      };
    }
    case 'install':
      return {
        trustDomain: d.trustDomain,
        controlPlaneNamespace: d.controlPlaneNamespace,
        image: d.image,
        replicas: d.installReplicas,
        issuerSecret: d.issuerSecret,
        trustAnchorsConfigMap: d.trustAnchorsConfigMap,
        trustAnchorsKey: d.trustAnchorsKey,
        tokenValidator: 'tokenreview',
        certLifetime: d.certLifetimeMs,
        clockSkew: d.clockSkewMs,
        certManager: false,
        certManagerIssuer: d.certManagerIssuer,
        trustManager: false,
        podCertificateSigner: d.podCertificateSigner,
        webhooks: false,
        // The injector makes pods transparent by default, and their proxies ask this service.
        destination: raw['webhooks'] === true,
        injectorFailurePolicy: d.injectorFailurePolicy,
        trustGuardFailurePolicy: d.trustGuardFailurePolicy,
        webhookTimeout: d.webhookTimeoutMs,
        ...withCommon,
      };
    case 'check': {
      const cp = (raw['controlPlaneNamespace'] as string | undefined) ?? d.controlPlaneNamespace;
      const td = (raw['trustDomain'] as string | undefined) ?? d.trustDomain;
      const naming = { trustDomain: td, controlPlaneNamespace: cp };
      return {
        dir: d.stateDir,
        output: 'text',
        namespace: cp,
        trustDomain: td,
        controlPlaneNamespace: cp,
        identityName: namingProblems(naming).length === 0 ? caIdentityName(naming) : 'invalid',
        clusterDomain: d.clusterDomain,
        issuerSecret: d.issuerSecret,
        trustAnchorsConfigMap: d.trustAnchorsConfigMap,
        trustAnchorsKey: d.trustAnchorsKey,
        expiryWarning: d.checkExpiryWarningMs,
        timeout: d.checkTimeoutMs,
        concurrency: d.checkConcurrency,
        proxyAdminPort: d.proxyAdmin.port,
        proxySample: d.checkProxySample,
        podCertificateSigner: d.podCertificateSigner,
        proxyAdmin: [],
        ...withCommon,
      };
    }
    case 'identity': {
      const cp = (raw['controlPlaneNamespace'] as string | undefined) ?? d.controlPlaneNamespace;
      return {
        dir: d.stateDir,
        namespace: cp,
        controlPlaneNamespace: cp,
        trustAnchorsConfigMap: d.trustAnchorsConfigMap,
        trustAnchorsKey: d.trustAnchorsKey,
        output: 'text',
        timeout: d.checkTimeoutMs,
        ...withCommon,
      };
    }
    case 'version':
      return {
        namespace: d.controlPlaneNamespace,
        output: 'text',
        timeout: d.checkTimeoutMs,
        ...withCommon,
      };
    case 'trust': {
      const controlPlaneNamespace =
        (raw['controlPlaneNamespace'] as string | undefined) ?? d.controlPlaneNamespace;
      return {
        trustDomain: d.trustDomain,
        controlPlaneNamespace,
        namespace: controlPlaneNamespace,
        trustAnchorsConfigMap: d.trustAnchorsConfigMap,
        trustAnchorsKey: d.trustAnchorsKey,
        issuerSecret: d.issuerSecret,
        issuerCertificate: d.issuerSecret,
        rootCertificate: d.certManagerIssuer,
        certManagerIssuer: d.certManagerIssuer,
        trustManager: false,
        clusterTrustBundles: 'auto',
        podCertificateSigner: d.podCertificateSigner,
        warnWithin: d.anchorExpiryWarningMs,
        certLifetime: d.certLifetimeMs,
        clockSkew: d.clockSkewMs,
        proxyAdmin: [],
        caAddress: [],
        propagateTimeout: d.rotationWaitTimeoutMs,
        interval: d.rotationIntervalMs,
        once: false,
        output: 'text',
        ...withCommon,
      };
    }
    case 'ca': {
      const explicit = CA_INPUTS.some((k) => k in raw);
      const dir = (raw['dir'] as string | undefined) ?? (explicit ? undefined : d.stateDir);
      const fromDir = dir === undefined ? {} : caInputsFromDir(dir);
      const trustDomain = (raw['trustDomain'] as string | undefined) ?? d.trustDomain;
      const controlPlaneNamespace =
        (raw['controlPlaneNamespace'] as string | undefined) ?? d.controlPlaneNamespace;
      const naming = { trustDomain, controlPlaneNamespace };
      const jwks = raw['jwks'] ?? ('jwks' in fromDir ? fromDir['jwks'] : undefined);
      const tokenValidator = raw['tokenValidator'] ?? (jwks === undefined ? 'tokenreview' : 'jwks');
      // The Kubernetes API is needed for TokenReview, the cluster's JWKS, and the issuer and
      // anchors as API objects; inside a pod the service account's credentials reach it.
      const needsKube =
        tokenValidator === 'tokenreview' ||
        jwks === KUBERNETES_JWKS ||
        'issuerSecret' in raw ||
        'trustAnchorsConfigMap' in raw;
      return {
        ...fromDir,
        tokenValidator,
        ...(needsKube ? { kubeconfig: IN_CLUSTER } : {}),
        namespace: controlPlaneNamespace,
        trustAnchorsKey: d.trustAnchorsKey,
        tokenReviewCacheTtl: d.tokenReviewCacheTtlMs,
        tokenReviewCacheSize: d.tokenReviewCacheSize,
        tokenReviewUnsafeNoAudienceFallback: false,
        events: true,
        backpressure: true,
        certifyMaxInFlight: d.certifyMaxInFlight,
        certifyMaxQueue: d.certifyMaxQueue,
        certifySourceBurst: d.certifySourceBurst,
        certifySourceRate: d.certifySourceRate,
        certifyIdentityBurst: d.certifyIdentityBurst,
        certifyIdentityRate: d.certifyIdentityRate,
        certifyMaxHandshakes: d.certifyMaxHandshakes,
        certifyHandshakeWait: d.certifyHandshakeWaitMs,
        audience: d.audience,
        certLifetime: d.certLifetimeMs,
        clockSkew: d.clockSkewMs,
        listen: d.caListen,
        admin: d.caAdmin,
        workers: 0,
        trustDomain,
        controlPlaneNamespace,
        identityName: namingProblems(naming).length === 0 ? caIdentityName(naming) : 'invalid',
        ...(dir === undefined ? {} : { dir }),
        ...withCommon,
      };
    }
  }
}

/**
 * The four CA inputs inside a local state folder (the layout `meshid init` writes).
 *
 * @example
 * ```ts
 * localStateInputs('.meshid').issuerDir; // '.meshid/issuer'
 * ```
 */
export function localStateInputs(dir: string): {
  trustAnchors: string;
  issuerDir: string;
  jwks: string;
  tokenIssuer: string;
  tokenSigningKey: string;
} {
  return {
    trustAnchors: `${dir}/trust-anchors.pem`,
    issuerDir: `${dir}/issuer`,
    jwks: `${dir}/token-signing/jwks.json`,
    tokenSigningKey: `${dir}/token-signing/key.pem`,
    tokenIssuer: DEFAULTS.localTokenIssuer,
  };
}

/** Settings that name the CA's inputs; when none is given, the local state folder supplies them. */
const CA_INPUTS = [
  'trustAnchors',
  'issuerDir',
  'jwks',
  'tokenIssuer',
  'issuerSecret',
  'trustAnchorsConfigMap',
  'tokenValidator',
  'kubeconfig',
];

/** `--kubeconfig in-cluster`: the pod's service account token and the cluster's CA. */
export const IN_CLUSTER = 'in-cluster';

/** `--jwks kubernetes`: the API server's OIDC discovery document and its JWKS. */
export const KUBERNETES_JWKS = 'kubernetes';

/** Where the CA's issuer, anchors and token keys come from, checked as a whole. */
function caSourceProblems(c: {
  trustAnchors?: string | undefined;
  issuerDir?: string | undefined;
  issuerSecret?: string | undefined;
  trustAnchorsConfigMap?: string | undefined;
  tokenValidator: 'jwks' | 'tokenreview';
  jwks?: string | undefined;
  jwksCa?: string | undefined;
  tokenIssuer?: string | undefined;
}): { path: string[]; message: string }[] {
  const problems: { path: string[]; message: string }[] = [];
  const both = (a: keyof typeof c, b: keyof typeof c): void => {
    if (c[a] !== undefined && c[b] !== undefined)
      problems.push({ path: [b], message: `cannot be combined with ${a}: choose one source` });
    if (c[a] === undefined && c[b] === undefined)
      problems.push({ path: [a], message: `is required (or ${b})` });
  };
  both('issuerDir', 'issuerSecret');
  both('trustAnchors', 'trustAnchorsConfigMap');
  // Issuer and anchors are validated as a pair, so they come from the same kind of source: both
  // API objects (watched), or both mounted files.
  if ((c.issuerSecret === undefined) !== (c.trustAnchorsConfigMap === undefined)) {
    const missing = c.issuerSecret === undefined ? 'issuerSecret' : 'trustAnchorsConfigMap';
    if (c[missing === 'issuerSecret' ? 'issuerDir' : 'trustAnchors'] !== undefined)
      problems.push({
        path: [missing],
        message:
          'is required: the issuer Secret and the anchors ConfigMap are read together through the API (or use issuerDir with trustAnchors)',
      });
  }
  if (c.tokenValidator === 'jwks') {
    if (c.jwks === undefined)
      problems.push({ path: ['jwks'], message: 'is required with tokenValidator jwks' });
    else if (/^https?:/i.test(c.jwks) && !/^https?:\/\/[^/]/i.test(c.jwks))
      problems.push({ path: ['jwks'], message: 'is not a valid URL' });
    // The cluster's discovery document names its issuer; any other JWKS needs it spelled out.
    if (c.tokenIssuer === undefined && c.jwks !== KUBERNETES_JWKS)
      problems.push({ path: ['tokenIssuer'], message: 'is required with tokenValidator jwks' });
  } else {
    for (const k of ['jwks', 'jwksCa', 'tokenIssuer'] as const) {
      if (c[k] !== undefined)
        problems.push({ path: [k], message: 'applies only with tokenValidator jwks' });
    }
  }
  return problems;
}

function caInputsFromDir(dir: string): Record<string, string> {
  const { trustAnchors, issuerDir, jwks, tokenIssuer } = localStateInputs(dir);
  return { trustAnchors, issuerDir, jwks, tokenIssuer };
}

/** The CA's own identity name: `linkerd-identity.<cp>.serviceaccount.identity.<cp>.<td>`. */
export function caIdentityName(naming: {
  trustDomain: string;
  controlPlaneNamespace: string;
}): string {
  const cp = naming.controlPlaneNamespace;
  return `linkerd-identity.${cp}.serviceaccount.identity.${cp}.${naming.trustDomain}`;
}

/**
 * The destination service's identity: its ServiceAccount `linkerd-destination` in the control
 * plane's namespace (Linkerd's name).
 *
 * @example
 * ```ts
 * destinationIdentityName({ trustDomain: 'cluster.local', controlPlaneNamespace: 'linkerd' });
 * // 'linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local'
 * ```
 */
export function destinationIdentityName(naming: {
  trustDomain: string;
  controlPlaneNamespace: string;
}): string {
  const cp = naming.controlPlaneNamespace;
  return `linkerd-destination.${cp}.serviceaccount.identity.${cp}.${naming.trustDomain}`;
}

/** The destination service's Service (Linkerd's name), which `meshid install --destination` renders. */
export const DESTINATION_SERVICE_NAME = 'linkerd-dst';

/**
 * Where proxies reach the destination service: its Service in the control plane's namespace, on
 * Linkerd's port.
 *
 * @example
 * ```ts
 * destinationServiceAddress({ controlPlaneNamespace: 'linkerd' }); // 'linkerd-dst.linkerd.svc:8086'
 * ```
 */
export function destinationServiceAddress(naming: { controlPlaneNamespace: string }): string {
  return `${DESTINATION_SERVICE_NAME}.${naming.controlPlaneNamespace}.svc:${DEFAULTS.destinationListen.port}`;
}

/**
 * One line per setting for `--help`.
 *
 * @example
 * ```ts
 * settingsHelp('ca'); // '  --trust-anchors  (MESHID_TRUST_ANCHORS)  PEM bundle of trust anchors\n...'
 * ```
 */
export function settingsHelp(command: CommandName): string {
  return Object.entries(COMMAND_SETTINGS[command] as Record<string, Setting>)
    .map(([k, s]) => `  --${flagName(k).padEnd(26)} ${envName(k).padEnd(34)} ${s.help}`)
    .join('\n');
}

function deepFreeze<T>(o: T): T {
  if (o !== null && typeof o === 'object') {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}

/** One setting as the configuration reference (docs/configuration.md) lists it. */
export interface SettingReference {
  readonly key: string;
  readonly flag: string;
  readonly env: string;
  readonly kind: string;
  readonly help: string;
  /** The default as written on a command line; undefined when there is none. */
  readonly default?: string | undefined;
  /** The allowed values, for enumerations. */
  readonly choices?: readonly string[] | undefined;
}

/**
 * Every command's settings with their spellings, kinds, defaults and allowed values, from the
 * schema and the defaults themselves: what `npm run docs:config` writes into
 * docs/configuration.md, so the page cannot drift from the code.
 *
 * @example
 * ```ts
 * configReference().ca.find((s) => s.key === 'certLifetime')?.default; // '24h'
 * ```
 */
export function configReference(): Record<CommandName, SettingReference[]> {
  const out = {} as Record<CommandName, SettingReference[]>;
  for (const command of Object.keys(COMMAND_SETTINGS) as CommandName[]) {
    const settings = COMMAND_SETTINGS[command] as Record<string, Setting>;
    const defaults = applyDefaults(command, {});
    const shape = (SCHEMAS[command] as unknown as { shape: Record<string, z.ZodType> }).shape;
    out[command] = Object.entries(settings).map(([key, s]) => {
      let type: z.ZodType | undefined = shape[key];
      while (type instanceof z.ZodOptional || type instanceof z.ZodDefault)
        type = (type as z.ZodOptional).unwrap() as z.ZodType;
      const choices = type instanceof z.ZodEnum ? (type.options as string[]) : undefined;
      return {
        key,
        flag: `--${flagName(key)}`,
        env: envName(key),
        kind: s.kind,
        help: s.help,
        default: formatSetting(s.kind, defaults[key]),
        ...(choices === undefined ? {} : { choices }),
      };
    });
  }
  return out;
}

function formatSetting(kind: Kind, value: unknown): string | undefined {
  if (value === undefined) return undefined;
  switch (kind) {
    case 'duration':
      return typeof value === 'number' ? formatDuration(value) : String(value);
    case 'address':
      return formatAddress(value as Address);
    case 'list':
      return Array.isArray(value) && value.length === 0 ? undefined : (value as string[]).join(',');
    default:
      return String(value);
  }
}
