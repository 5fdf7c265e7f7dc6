/**
 * Settings of the identity CA's commands: `meshid init` and `meshid token` (the local state
 * folder), `meshid ca`, and `meshid local` (the local mesh's CA).
 */
import { z } from 'zod';
import { DEFAULTS as D } from '../defaults.js';
import { parseIdentityName } from '../identity.js';
import { COMMON, NAMING, SHARED } from './common.js';
import {
  caIdentityName,
  derivedIdentity,
  IN_CLUSTER,
  KUBERNETES_JWKS,
  localStateInputs,
} from './names.js';
import type { Given } from './setting.js';
import {
  addr,
  address,
  boolean,
  count,
  duration,
  integer,
  label,
  nonEmpty,
  path,
  positiveMs,
  schemaOf,
  signerName,
  string,
  subdomain,
  tokenValidator,
  workers,
} from './setting.js';

export const INIT = {
  ...COMMON,
  dir: path(nonEmpty, D.stateDir).describe('state folder to write'),
  force: boolean().describe('overwrite existing material'),
  renewIssuer: boolean().describe(
    "issue a new issuer under the folder's existing trust anchor (root/tls.key), keeping the anchor",
  ),
  ...NAMING,
};

export const TOKEN = {
  ...COMMON,
  dir: path(nonEmpty, D.stateDir).describe('state folder holding token-signing/key.pem'),
  ns: string(label).describe('namespace of the service account'),
  sa: string(label).describe('service account name'),
  ttl: duration(positiveMs.max(7 * 24 * 3_600_000, 'must be at most 168h'), D.tokenTtlMs).describe(
    'token lifetime',
  ),
  audience: string(nonEmpty, D.audience).describe('token audience'),
};

/** The inputs the local state folder supplies (`meshid init` writes them). */
type DirInput = 'trustAnchors' | 'issuerDir' | 'jwks' | 'tokenIssuer';
const DIR_INPUTS: DirInput[] = ['trustAnchors', 'issuerDir', 'jwks', 'tokenIssuer'];
/** With these, the CA's inputs, the local state folder supplies them only when none is given. */
const API_INPUTS = ['issuerSecret', 'trustAnchorsConfigMap', 'tokenValidator', 'kubeconfig'];

/** The local state folder the CA reads its inputs from: given, or the default when no input is. */
function caDir(g: Given): string | undefined {
  const explicit = [...DIR_INPUTS, ...API_INPUTS].some((k) => k in g);
  return (g['dir'] as string | undefined) ?? (explicit ? undefined : D.stateDir);
}

/** An input from the local state folder, when the CA reads one. */
const fromDir =
  (key: DirInput) =>
  (g: Given): string | undefined => {
    const dir = caDir(g);
    return dir === undefined ? undefined : localStateInputs(dir)[key];
  };

const caJwks = (g: Given): unknown => g['jwks'] ?? fromDir('jwks')(g);

const caTokenValidator = (g: Given): 'jwks' | 'tokenreview' =>
  (g['tokenValidator'] as 'jwks' | 'tokenreview' | undefined) ??
  (caJwks(g) === undefined ? D.tokenValidator : 'jwks');

/**
 * The Kubernetes API is needed for TokenReview, the cluster's JWKS, and the issuer and anchors
 * as API objects; inside a pod the service account's credentials reach it.
 */
const needsKube = (g: Given): boolean =>
  caTokenValidator(g) === 'tokenreview' ||
  caJwks(g) === KUBERNETES_JWKS ||
  'issuerSecret' in g ||
  'trustAnchorsConfigMap' in g ||
  g['podCertificates'] === true;

const limit = (min: number, max: number, help: string, dflt: number) =>
  integer(count(min, max, min === 0 ? 'must be 0 (no limit) or more' : undefined), dflt).describe(
    help,
  );

export const CA = {
  ...COMMON,
  dir: path(nonEmpty.optional(), caDir).describe('local state folder (written by meshid init)'),
  trustAnchors: path(nonEmpty.optional(), fromDir('trustAnchors')).describe(
    'PEM bundle of trust anchors',
  ),
  issuerDir: path(nonEmpty.optional(), fromDir('issuerDir')).describe(
    'folder with tls.crt, tls.key and optional ca.crt',
  ),
  jwks: path(nonEmpty.optional(), fromDir('jwks')).describe(
    'JWKS file path or https URL of the token issuer',
  ),
  jwksCa: path(nonEmpty.optional()).describe('PEM CA bundle to trust for an https JWKS URL'),
  tokenIssuer: string(nonEmpty.optional(), fromDir('tokenIssuer')).describe(
    'expected token issuer (iss)',
  ),
  audience: string(nonEmpty, D.audience).describe('expected token audience'),
  ...NAMING,
  identityName: string(subdomain, derivedIdentity(caIdentityName)).describe(
    "the CA's own TLS identity",
  ),
  certLifetime: SHARED.certLifetime,
  clockSkew: SHARED.clockSkew.describe('clock-skew allowance (back-dating, token leeway)'),
  listen: address(addr, D.caListen).describe('gRPC listen address'),
  admin: address(addr, D.caAdmin).describe('admin HTTP listen address'),
  workers: integer(workers, D.caWorkers).describe('worker processes (0 = one per core)'),
  kubeconfig: SHARED.kubeconfig
    .derive((g) => (needsKube(g) ? IN_CLUSTER : undefined))
    .describe(
      `kubeconfig file for the Kubernetes API; "${IN_CLUSTER}" (the pod's service account) is the default when the API is needed: tokenreview, --jwks ${KUBERNETES_JWKS}, issuerSecret or trustAnchorsConfigMap`,
    ),
  namespace: SHARED.namespace.describe(
    'namespace of the issuer Secret, anchors ConfigMap and Events (default: the control-plane namespace)',
  ),
  issuerSecret: string(subdomain.optional()).describe(
    'issuer Secret (kubernetes.io/tls or linkerd.io/tls), watched through the API',
  ),
  trustAnchorsConfigMap: string(subdomain.optional()).describe(
    'trust-anchor ConfigMap, watched through the API (with issuerSecret)',
  ),
  trustAnchorsKey: SHARED.trustAnchorsKey,
  tokenValidator: string(tokenValidator, caTokenValidator).describe(
    'tokenreview (ask the API server) or jwks (verify signatures with --jwks)',
  ),
  tokenReviewCacheTtl: duration(
    z.number().int().min(0).max(3_600_000, 'must be at most 1h'),
    D.tokenReviewCacheTtlMs,
  ).describe('how long a successful TokenReview is reused (never past the token expiry; 0s = off)'),
  tokenReviewCacheSize: integer(count(0, 1_000_000), D.tokenReviewCacheSize).describe(
    'most TokenReview results kept',
  ),
  tokenReviewUnsafeNoAudienceFallback: boolean().describe(
    'UNSAFE, Linkerd-compatible: retry a refused review without audience (accepts any API token)',
  ),
  events: boolean(D.caEvents).describe('record Kubernetes Events (when a kubeconfig is in use)'),
  backpressure: boolean(D.certifyBackpressure).describe(
    'admission control for Certify: the limits below (false: admit everything at once)',
  ),
  certifyMaxInFlight: limit(
    1,
    100_000,
    'Certify calls decided at once, per worker',
    D.certifyMaxInFlight,
  ),
  certifyMaxQueue: integer(count(0, 1_000_000), D.certifyMaxQueue).describe(
    'Certify calls waiting beyond that, per worker',
  ),
  certifySourceBurst: limit(
    0,
    1_000_000,
    'calls one peer address may make at once',
    D.certifySourceBurst,
  ),
  certifySourceRate: limit(
    1,
    1_000_000,
    'then this many per second (per worker)',
    D.certifySourceRate,
  ),
  certifyIdentityBurst: limit(
    0,
    1_000_000,
    'calls for one identity at once',
    D.certifyIdentityBurst,
  ),
  certifyIdentityRate: limit(
    1,
    1_000_000,
    'then this many per second (per worker)',
    D.certifyIdentityRate,
  ),
  certifyMaxHandshakes: limit(
    0,
    100_000,
    'TLS handshakes in progress at once, per worker; more connections wait unread (0 = no limit)',
    D.certifyMaxHandshakes,
  ),
  certifyHandshakeWait: duration(
    positiveMs.max(60_000, 'must be at most 60s'),
    D.certifyHandshakeWaitMs,
  ).describe('a connection that waited this long for a handshake is closed instead'),
  certifyMaxConnectionsPerPeer: limit(
    0,
    1_000_000,
    'established connections one client address may hold, per worker; one beyond is closed right after its handshake (0 = no limit)',
    D.certifyMaxConnectionsPerPeer,
  ),
  podCertificates: boolean().describe(
    'sign PodCertificateRequests addressed to podCertificateSigner (needs kubeconfig; docs/pod-certificates.md)',
  ),
  podCertificateSigner: string(signerName, D.podCertificateSigner).describe(
    'the signer name the pod certificate signer answers for',
  ),
  podCertificateApiVersion: string(z.enum(['v1beta1', 'v1']), D.podCertificateApiVersion).describe(
    'PodCertificateRequest version watched: v1beta1 (Kubernetes 1.35+) or v1 (1.37+)',
  ),
  podCertificateLeaseDuration: duration(
    positiveMs
      .min(3000, 'must be at least 3s')
      .max(300_000, 'must be at most 5m')
      .refine((ms) => ms % 1000 === 0, 'must be whole seconds'),
    D.podCertificateLeaseMs,
  ).describe(
    "each signer replica's Lease in the CA's namespace: it is renewed every third of this, and a replica whose Lease was not renewed this long is dropped from the replicas sharing the requests",
  ),
  podCertificateTakeover: duration(
    positiveMs.min(1000, 'must be at least 1s').max(600_000, 'must be at most 10m'),
    D.podCertificateTakeoverMs,
  ).describe(
    "a request another live signer replica owns is answered by this one after it waited this long while that replica answered nothing (it is stuck); the status write's resourceVersion keeps it to one answer",
  ),
};

export const CA_SCHEMA = schemaOf(CA).superRefine((c, ctx) => {
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
  if (c.podCertificates && c.kubeconfig === undefined)
    ctx.addIssue({
      code: 'custom',
      path: ['podCertificates'],
      message: 'needs the Kubernetes API: set kubeconfig (in a pod, "in-cluster")',
    });
});

export const LOCAL = {
  ...COMMON,
  dir: path(nonEmpty, D.stateDir).describe('local state folder'),
  listen: CA.listen,
  admin: CA.admin,
  workers: CA.workers,
};

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
