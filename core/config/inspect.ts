/**
 * Settings of the commands that look at a mesh: `meshid check`, `meshid identity` and
 * `meshid version`.
 */
import { DEFAULTS as D } from '../defaults.js';
import { COMMON, NAMING, SHARED } from './common.js';
import { caIdentityName, derivedIdentity } from './names.js';
import {
  addr,
  address,
  boolean,
  count,
  duration,
  hostPort,
  integer,
  label,
  list,
  nonEmpty,
  path,
  positiveMs,
  schemaOf,
  signerName,
  string,
  subdomain,
} from './setting.js';
import { z } from 'zod';

export const CHECK = {
  ...COMMON,
  dir: path(nonEmpty, D.stateDir).describe(
    'local state folder to check (the default, .meshid, only when there is no kubeconfig)',
  ),
  kubeconfig: SHARED.kubeconfig.describe(
    'kubeconfig of the cluster to check (default, as kubectl: $KUBECONFIG, else ~/.kube/config)',
  ),
  context: SHARED.context,
  pre: boolean(false).describe(
    'before an install: the API answers, these credentials may install, cert-manager is there, and whether Linkerd or meshid already runs in the namespace',
  ),
  output: SHARED.output.describe('text (a checklist) or json (for machines)'),
  namespace: SHARED.namespace.describe(
    'control-plane namespace of the install (default: the control-plane namespace)',
  ),
  ...NAMING,
  identityName: string(subdomain, derivedIdentity(caIdentityName)).describe(
    "the CA's TLS identity (default: derived from naming)",
  ),
  caAddress: address(addr.optional()).describe(
    "the CA's gRPC address (default: the local mesh's, or the Service's DNS name in a cluster)",
  ),
  caAdmin: address(addr.optional()).describe("the CA's admin address (/ready, /version, /metrics)"),
  clusterDomain: string(subdomain, D.clusterDomain).describe(
    "the cluster's DNS domain: without --ca-address and --ca-admin the CA is asked at linkerd-identity.<namespace>.svc.<cluster domain> (not the trust domain)",
  ),
  webhooksAddress: address(addr.optional()).describe(
    "the webhooks' HTTPS address whose served certificate the caBundle must verify (default: their Service's DNS name, port 443)",
  ),
  issuerSecret: SHARED.issuerSecret.describe('issuer Secret to check (cluster)'),
  trustAnchorsConfigMap: SHARED.trustAnchorsConfigMap.describe(
    'trust-anchor ConfigMap to check (cluster)',
  ),
  trustAnchorsKey: SHARED.trustAnchorsKey,
  expiryWarning: duration(positiveMs, D.checkExpiryWarningMs).describe(
    'warn when a certificate has less than this left (and less than a third of its life)',
  ),
  timeout: SHARED.timeout.describe('deadline of each network probe'),
  concurrency: integer(count(1, 256), D.checkConcurrency).describe('probes run at once'),
  proxyAdminPort: integer(count(1, 65535), D.proxyAdmin.port).describe(
    "proxies' admin port, asked at each pod's IP (cluster)",
  ),
  proxySample: integer(count(0, 100_000), D.checkProxySample).describe(
    'injected pods whose proxy is asked for its certificate (0 = all; annotations are checked on all)',
  ),
  podCertificateSigner: string(signerName, D.podCertificateSigner).describe(
    "the signer name of meshid's ClusterTrustBundles (compared with the anchors) and PodCertificateRequests (checked) (cluster)",
  ),

  proxyAdmin: list(z.array(hostPort), []).describe(
    "admin address of a proxy to check, repeatable (local: the local mesh's are found by themselves)",
  ),
};

export const IDENTITY = {
  ...COMMON,
  file: path(nonEmpty.optional()).describe(
    'PEM certificate or chain to inspect (also the first argument)',
  ),
  secret: string(
    nonEmpty
      .regex(
        /^[a-z0-9]([-a-z0-9]*[a-z0-9])?\/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$/,
        'must be NAMESPACE/NAME',
      )
      .optional(),
  ).describe('NAMESPACE/NAME of a TLS Secret to inspect (needs kubeconfig)'),
  proxy: address(addr.optional()).describe(
    "a running proxy's admin address: inspect its certificate",
  ),
  trustAnchors: path(nonEmpty.optional()).describe(
    "PEM bundle of the current anchors (default: <dir>/trust-anchors.pem, or the cluster's ConfigMap)",
  ),
  dir: path(nonEmpty, D.stateDir).describe('local state folder whose anchors to chain to'),
  kubeconfig: SHARED.kubeconfig.describe('kubeconfig, for --secret and the anchors ConfigMap'),
  namespace: SHARED.namespace.describe(
    'namespace of the anchors ConfigMap (default: the control-plane namespace)',
  ),
  controlPlaneNamespace: NAMING.controlPlaneNamespace,
  trustAnchorsConfigMap: SHARED.trustAnchorsConfigMap.describe(
    'trust-anchor ConfigMap (with kubeconfig)',
  ),
  trustAnchorsKey: SHARED.trustAnchorsKey,
  output: SHARED.output,
  timeout: SHARED.timeout,
};

export const IDENTITY_SCHEMA = schemaOf(IDENTITY).superRefine((c, ctx) => {
  const given = [c.file, c.secret, c.proxy].filter((x) => x !== undefined).length;
  if (given !== 1)
    ctx.addIssue({
      code: 'custom',
      path: ['file'],
      message: 'give exactly one of FILE, --secret NS/NAME or --proxy ADMIN_ADDR',
    });
  if (c.secret !== undefined && c.kubeconfig === undefined)
    ctx.addIssue({ code: 'custom', path: ['kubeconfig'], message: 'is required with --secret' });
});

export const VERSION = {
  ...COMMON,
  caAdmin: CHECK.caAdmin.describe("the CA's admin address, to show the server's version"),
  kubeconfig: SHARED.kubeconfig.describe("kubeconfig: also show the installed CA's image"),
  namespace: string(label, D.controlPlaneNamespace).describe(
    'control-plane namespace (default linkerd)',
  ),
  output: SHARED.output,
  timeout: SHARED.timeout,
};
