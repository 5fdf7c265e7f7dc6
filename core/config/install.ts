/**
 * Settings of `meshid install` (the manifests) and `meshid trust` (anchors and rotation).
 */
import { z } from 'zod';
import { DEFAULTS as D } from '../defaults.js';
import { COMMON, NAMING, SHARED } from './common.js';
import {
  boolean,
  count,
  duration,
  failurePolicy,
  hostPort,
  imageRef,
  integer,
  list,
  nonEmpty,
  path,
  positiveMs,
  schemaOf,
  signerName,
  string,
  subdomain,
  tokenValidator,
} from './setting.js';

export const INSTALL = {
  ...COMMON,
  ...NAMING,
  image: string(imageRef, D.image).describe('meshid container image'),
  replicas: integer(count(1, 100), D.installReplicas).describe('identity CA replicas'),
  podCertificates: boolean().describe(
    'the CA also signs PodCertificateRequests (RBAC and flags; docs/pod-certificates.md)',
  ),
  podCertificateSigner: string(signerName, D.podCertificateSigner).describe('its signer name'),
  trustAnchors: path(nonEmpty.optional()).describe(
    'PEM trust-anchor bundle to put in the anchors ConfigMap (omitted: managed elsewhere)',
  ),
  issuerSecret: SHARED.issuerSecret.describe('issuer Secret the CA reads'),
  trustAnchorsConfigMap: SHARED.trustAnchorsConfigMap.describe(
    'trust-anchor ConfigMap the CA reads',
  ),
  trustAnchorsKey: SHARED.trustAnchorsKey,
  tokenValidator: string(tokenValidator, D.tokenValidator).describe(
    "tokenreview (RBAC to create TokenReviews) or jwks (the cluster's OIDC discovery keys)",
  ),
  certLifetime: SHARED.certLifetime,
  clockSkew: SHARED.clockSkew,
  certManager: boolean().describe(
    'render cert-manager resources that issue the identity issuer Secret',
  ),
  certManagerIssuer: SHARED.certManagerIssuer,
  trustManager: boolean().describe(
    'with certManager: a trust-manager Bundle fills the anchors ConfigMap',
  ),
  webhooks: boolean().describe(
    'render the admission webhooks (proxy injector, trust guard); needs certManager for their serving certificate',
  ),
  destination: boolean((g) => g['webhooks'] === true).describe(
    'render the destination service (meshid destination on 8086, list/watch of Services, EndpointSlices and Pods), which transparent proxies ask about their destinations; on by default with webhooks (the injector makes pods transparent), set false (MESHID_DESTINATION=false or destination: false in the config file) to leave it out',
  ),
  injectorFailurePolicy: string(failurePolicy, D.injectorFailurePolicy).describe(
    'Ignore (pods start unmeshed while the injector is down) or Fail (they are refused)',
  ),
  trustGuardFailurePolicy: string(failurePolicy, D.trustGuardFailurePolicy).describe(
    'Fail (trust edits wait for the guard) or Ignore (they go unchecked while it is down)',
  ),
  webhookTimeout: duration(
    z
      .number()
      .int()
      .min(1000, 'must be at least 1s')
      .max(30_000, 'must be at most 30s (the API server maximum)')
      .refine((ms) => ms % 1000 === 0, 'must be whole seconds'),
    D.webhookTimeoutMs,
  ).describe('timeoutSeconds of the webhooks (1s-30s)'),
};

export const INSTALL_SCHEMA = schemaOf(INSTALL).superRefine((c, ctx) => {
  if (c.webhooks && !c.certManager)
    ctx.addIssue({
      code: 'custom',
      path: ['webhooks'],
      message:
        "needs certManager: the webhooks' serving certificate and the configurations' caBundle come from cert-manager",
    });
});

export const TRUST = {
  ...COMMON,
  ...NAMING,
  dir: path(nonEmpty.optional()).describe(
    'local mode: the state folder (meshid init), files instead of API objects',
  ),
  kubeconfig: SHARED.kubeconfig,
  namespace: SHARED.namespace.describe(
    'namespace of the anchors ConfigMap, issuer and root Secrets (default: the control-plane namespace)',
  ),
  trustAnchorsConfigMap: SHARED.trustAnchorsConfigMap.describe('the anchors ConfigMap'),
  trustAnchorsKey: SHARED.trustAnchorsKey,
  issuerSecret: SHARED.issuerSecret.describe('the identity issuer Secret'),
  issuerCertificate: string(subdomain, D.issuerSecret).describe(
    'the cert-manager Certificate of the identity issuer',
  ),
  rootCertificate: string(subdomain, D.certManagerIssuer).describe(
    'the cert-manager Certificate (and Secret) of the trust anchor',
  ),
  certManagerIssuer: SHARED.certManagerIssuer.describe(
    'the cert-manager CA Issuer over the trust anchor (signs the identity issuer)',
  ),
  trustManager: boolean().describe(
    'manifests: a trust-manager Bundle fills the anchors ConfigMap (instead of meshid trust sync)',
  ),
  clusterTrustBundles: string(z.enum(['auto', 'on', 'off']), D.clusterTrustBundles).describe(
    "publish the anchors as ClusterTrustBundles (certificates.k8s.io/v1beta1) of the pod-certificate signer, a 'live' and a 'canary' one: on, off, or auto (when the API serves them; docs/cluster-trust-bundles.md)",
  ),
  podCertificateSigner: string(signerName, D.podCertificateSigner).describe(
    'the signer name the ClusterTrustBundles belong to (the pod-certificate signer)',
  ),
  warnWithin: duration(z.number().int().min(0), D.anchorExpiryWarningMs).describe(
    'warn when an anchor expires within this time',
  ),
  certLifetime: SHARED.certLifetime.describe(
    "the CA's leaf lifetime: drain waits this long (plus clock skew) after the switch",
  ),
  clockSkew: SHARED.clockSkew.describe("the CA's clock-skew allowance"),
  proxyAdmin: list(
    z.array(nonEmpty.regex(/^https?:\/\/[^/\s]+(\/[^\s]*)?$/, 'must be an http(s) URL')),
    [],
  ).describe('proxy admin URLs (http://HOST:4191) whose /identity the rotation checks; repeatable'),
  podSelector: string(nonEmpty.optional()).describe(
    'label selector of meshed pods whose proxies (podIP:4191/identity) the rotation checks',
  ),
  caAddress: list(z.array(hostPort), []).describe(
    "CA replicas (HOST:PORT) whose serving certificate shows which issuer they sign with; in a cluster the CA's pods are found too",
  ),
  propagateTimeout: duration(positiveMs, D.rotationWaitTimeoutMs).describe(
    'after this, a wait is reported overdue (the rotation holds; it never skips ahead)',
  ),
  interval: duration(
    positiveMs.min(10, 'must be at least 10ms').max(3_600_000),
    D.rotationIntervalMs,
  ).describe('how often controllers re-check what they wait for'),
  once: boolean().describe('rotate/sync: take the steps possible now, then exit'),
  output: SHARED.output,
};
