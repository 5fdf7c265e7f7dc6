/**
 * Settings of the control plane's other servers: `meshid destination` (the Destination API) and
 * `meshid webhooks` (the proxy injector and the trust guard).
 */
import { z } from 'zod';
import { DEFAULTS as D } from '../defaults.js';
import { COMMON, NAMING, SHARED } from './common.js';
import {
  caIdentityName,
  caServiceAddress,
  derivedIdentity,
  destinationIdentityName,
  givenNaming,
} from './names.js';
import {
  addr,
  address,
  boolean,
  duration,
  hostPort,
  imageRef,
  label,
  list,
  nonEmpty,
  path,
  quantity,
  signerName,
  string,
  subdomain,
} from './setting.js';

/** The CA's address as pods reach it, from the given control-plane namespace. */
const caService = string(hostPort, (g) => caServiceAddress(givenNaming(g))).describe(
  'the CA it gets its certificate from, HOST:PORT (default linkerd-identity.<cp-ns>.svc:8080)',
);

export const DESTINATION = {
  ...COMMON,
  listen: address(addr, D.destinationListen).describe(
    'gRPC (mTLS) listen address of the Destination API',
  ),
  admin: address(addr, D.destinationAdmin).describe(
    'admin HTTP listen address (/metrics, /ready, /live)',
  ),
  kubeconfig: path(nonEmpty, D.destinationKubeconfig).describe(
    'kubeconfig for the watches of Services, EndpointSlices and Pods; "in-cluster" uses the pod\'s service account',
  ),
  clusterDomain: string(subdomain, D.clusterDomain).describe(
    "the cluster's DNS domain: Service names are <svc>.<ns>.svc.<this>",
  ),
  ...NAMING,
  identityAddr: caService,
  identityName: string(subdomain, derivedIdentity(caIdentityName)).describe(
    "the CA's identity (default linkerd-identity.<cp-ns>...)",
  ),
  trustAnchors: SHARED.watchedTrustAnchors,
  tokenFile: path(nonEmpty).describe(
    'its projected ServiceAccount token (audience identity.l5d.io), re-read on every request',
  ),
  localIdentity: string(subdomain, derivedIdentity(destinationIdentityName)).describe(
    'its own identity (default linkerd-destination.<cp-ns>.serviceaccount.identity.<cp-ns>.<trust-domain>)',
  ),
};

export const WEBHOOKS = {
  ...COMMON,
  listen: address(addr, D.webhooksListen).describe('HTTPS listen address of /inject and /validate'),
  tlsDir: path(nonEmpty).describe(
    'folder with tls.crt and tls.key (a mounted kubernetes.io/tls Secret), reloaded on change',
  ),
  tlsReloadInterval: duration(
    z.number().int().min(100, 'must be at least 100ms').max(3_600_000),
    D.webhooksTlsReloadMs,
  ).describe('how often the serving certificate files are re-checked besides watching them'),
  kubeconfig: SHARED.kubeconfig.describe(
    'kubeconfig for namespace annotations and the issuer Secret; "in-cluster" uses the pod\'s service account',
  ),
  ...NAMING,
  proxyImage: string(imageRef, D.image).describe(
    'image of the injected proxy (runs `meshid proxy`)',
  ),
  identityAddr: caService.describe(
    "the CA's address written into injected proxies (default linkerd-identity.<cp-ns>.svc:8080)",
  ),
  caAddress: string(hostPort.optional()).describe(
    'where the trust guard reads the live issuer chain the CA serves (default: identityAddr)',
  ),
  trustAnchors: path(nonEmpty.optional()).describe(
    'the anchors bundle file (mounted ConfigMap): its SHA-256 is recorded on injected pods',
  ),
  trustAnchorsConfigMap: SHARED.trustAnchorsConfigMap.describe(
    "anchors ConfigMap: mounted into injected pods (from the pod's namespace) and guarded in the control plane",
  ),
  trustAnchorsKey: SHARED.trustAnchorsKey,
  issuerSecret: SHARED.issuerSecret.describe(
    'issuer Secret the guard reads (tls.crt, ca.crt) to know which anchor must stay',
  ),
  podCertificateSigner: string(signerName, D.podCertificateSigner).describe(
    'the pod-certificate signer named in the volumes of pods with meshid.io/identity-source: pod-certificate',
  ),
  tokenExpiration: duration(
    z
      .number()
      .int()
      // The API server refuses a projected token under 10 minutes; 2^32 s is its upper bound.
      .min(600_000, 'must be at least 10m (the API server minimum)')
      .max(366 * 24 * 3_600_000, 'must be at most 8784h')
      .refine((ms) => ms % 1000 === 0, 'must be whole seconds'),
    D.proxyTokenExpirationMs,
  ).describe('expirationSeconds of the projected token the injector adds'),
  nativeSidecar: boolean().describe(
    'inject the proxy as a native sidecar (init container, restartPolicy Always)',
  ),
  excludeNamespace: list(z.array(label), []).describe(
    'namespaces never injected (kube-system and the control-plane namespace always are)',
  ),
  proxyCpuRequest: string(quantity, D.proxyCpuRequest).describe("injected proxy's CPU request"),
  proxyMemoryRequest: string(quantity, D.proxyMemoryRequest).describe(
    "injected proxy's memory request",
  ),
  proxyMemoryLimit: string(quantity, D.proxyMemoryLimit).describe("injected proxy's memory limit"),
};
