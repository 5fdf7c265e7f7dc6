/**
 * `meshid check --kubeconfig F`: the install in a cluster, read through core's one Kubernetes
 * client (in tests, the project's Kubernetes API test server — a test double).
 *
 * What is read: the anchors ConfigMap (and its `meshid.io/rotation` annotation), the issuer
 * Secret, the issuer's cert-manager Certificate, the CA's Deployment (its ServiceAccount and
 * token validator), SubjectAccessReviews for that ServiceAccount, the webhook configurations
 * and the webhooks' serving Secret (cluster-webhooks.ts), the destination service's Deployment,
 * and every pod, of which the injected ones are checked by annotation and a sample is asked for
 * its certificate at `<pod IP>:<proxy admin port>` (cluster-pods.ts).
 */
import type { CheckConfig, KubeClient } from '../../core/index.js';
import { bundleFingerprint, kindNotServed } from '../../core/index.js';
import { ROTATION_ANNOTATION, rotationStateFromAnnotations } from '../../trust-bundle/index.js';
import type { RotationState } from '../../trust-bundle/index.js';
import { DESTINATION_NAMES } from '../install/destination.js';
import { b64, Cluster, CLUSTER_NAMES } from './cluster-api.js';
import type { DataObject, Deployment, Read } from './cluster-api.js';
import { checkCertificate, checkRbac, deploymentArg } from './cluster-control-plane.js';
import type { CertManagerCertificate } from './cluster-control-plane.js';
import { checkWorkloads } from './cluster-pods.js';
import { checkPodCertificates } from './cluster-podcerts.js';
import { checkWebhook } from './cluster-webhooks.js';
import type { Progress } from './local.js';
import { checkAnchors, checkIssuer } from './material.js';
import type { IssuerFiles, MaterialSources } from './material.js';
import { checkTrustBundles } from './trust-bundles.js';
import type { ListedTrustBundle } from './trust-bundles.js';
import type { CheckResult } from './model.js';
import { probeCa, probeCaAdmin } from './probes.js';
import { caFipsFromMetrics, checkFips, checkRotation, clientFips } from './state.js';

/** Runs every cluster check; resolves with the results. */
export async function checkCluster(
  kube: Pick<KubeClient, 'get' | 'list' | 'create'>,
  config: CheckConfig,
  now: number,
  progress: Progress,
): Promise<CheckResult[]> {
  const api = new Cluster(kube, Math.max(config.timeout, 5_000));
  const ns = config.namespace;
  progress('reading the trust anchors and the issuer');
  const [cm, secret, certificate, deployment, destination] = await Promise.all([
    api.read<DataObject>('v1', 'ConfigMap', ns, config.trustAnchorsConfigMap),
    api.read<DataObject>('v1', 'Secret', ns, config.issuerSecret),
    api.read<CertManagerCertificate>('cert-manager.io/v1', 'Certificate', ns, config.issuerSecret),
    api.read<Deployment>('apps/v1', 'Deployment', ns, CLUSTER_NAMES.caDeployment),
    api.read<Deployment>('apps/v1', 'Deployment', ns, DESTINATION_NAMES.deployment),
  ]);
  const anchorsText =
    cm instanceof Error
      ? cm
      : cm === undefined
        ? new Error('not found')
        : (cm.data?.[config.trustAnchorsKey] ?? new Error(`has no key ${config.trustAnchorsKey}`));
  const src = materialSources(config);
  const a = checkAnchors(anchorsText, src, now, config.expiryWarning);
  const i = checkIssuer(issuerFiles(secret), a.anchors, src, now, config.expiryWarning);
  const results: CheckResult[] = [
    ...a.results,
    ...i.results,
    ...checkCertificate(certificate, now, ns),
  ];
  progress('asking the CA and reading RBAC, webhooks and pods');
  const [ca, webhooks] = await Promise.all([
    checkCa(api, config, a.anchors, deployment, now),
    Promise.all([
      checkWebhook(api, 'webhook-injector', CLUSTER_NAMES.injector, ns, now, config),
      checkWebhook(api, 'webhook-trust-guard', CLUSTER_NAMES.trustGuard, ns, now, config),
    ]),
  ]);
  results.push(...ca.results, ...webhooks);
  const fingerprint = anchorsText instanceof Error ? '' : bundleFingerprint(anchorsText);
  const inputs = {
    anchors: a.anchors,
    fingerprint,
    anchorsReadable: !(anchorsText instanceof Error),
    destination,
  };
  results.push(...(await checkWorkloads(api, config, inputs, now, progress)));
  results.push(await checkPodCertificates(api, config, now));
  results.push(await checkClusterTrustBundles(api, config, anchorsText, cm, now));
  results.push(
    checkRotation(
      rotationOf(cm),
      `the ${ROTATION_ANNOTATION} annotation of ConfigMap ${ns}/${config.trustAnchorsConfigMap}`,
      now,
    ),
    checkFips({ client: clientFips(), ca: caFipsFromMetrics(ca.metrics) }),
  );
  return results;
}

/** meshid's ClusterTrustBundles against the anchors ConfigMap (a 404 list: the API is off). */
async function checkClusterTrustBundles(
  api: Cluster,
  config: CheckConfig,
  anchorsText: string | Error,
  cm: Read<DataObject>,
  now: number,
): Promise<CheckResult> {
  const listed = await api.call('list ClusterTrustBundles', async (signal) => {
    try {
      return await api.kube.list(
        'certificates.k8s.io/v1beta1',
        'ClusterTrustBundle',
        undefined,
        undefined,
        `spec.signerName=${config.podCertificateSigner}`,
        signal,
      );
    } catch (err) {
      if (kindNotServed(err)) return 'unserved' as const;
      throw err;
    }
  });
  return checkTrustBundles({
    bundles: listed as readonly ListedTrustBundle[] | 'unserved' | Error,
    anchorsText,
    anchorsAnnotations: cm instanceof Error ? undefined : cm?.metadata?.annotations,
    signerName: config.podCertificateSigner,
    now,
  });
}

/** Where the material comes from and how to fix it, for the material checks' messages. */
function materialSources(config: CheckConfig): MaterialSources {
  const ns = config.namespace;
  return {
    anchors: `ConfigMap ${ns}/${config.trustAnchorsConfigMap} key ${config.trustAnchorsKey}`,
    issuer: `Secret ${ns}/${config.issuerSecret}`,
    fixAnchors: `update the ConfigMap (trust-manager or "meshid install --trust-anchors"), see docs/install.md`,
    fixIssuer: `renew or replace the Secret (cert-manager: "cmctl renew -n ${ns} ${config.issuerSecret}"), see docs/install.md`,
  };
}

/** The CA over its Service (Certify and admin) and its RBAC. */
async function checkCa(
  api: Cluster,
  config: CheckConfig,
  anchors: Parameters<typeof probeCa>[0]['anchors'],
  deployment: Read<Deployment>,
  now: number,
): Promise<{
  results: CheckResult[];
  metrics: Awaited<ReturnType<typeof probeCaAdmin>>['metrics'];
}> {
  const ns = config.namespace;
  const caPort = deploymentArg(deployment, 'listen')?.split(':').pop() ?? '8080';
  // The Service's name in cluster DNS: the cluster domain, which is not the trust domain.
  const caHost = `${CLUSTER_NAMES.caService}.${ns}.svc.${config.clusterDomain}`;
  const fix = `check the CA's pods ("kubectl -n ${ns} get pods -l app.kubernetes.io/name=meshid,app.kubernetes.io/component=identity" and their logs); from outside the cluster: "kubectl -n ${ns} port-forward deploy/linkerd-identity 8080 9990" with --ca-address 127.0.0.1:8080 --ca-admin 127.0.0.1:9990`;
  const [certify, admin, rbac] = await Promise.all([
    probeCa({
      address: config.caAddress ?? { host: caHost, port: Number(caPort) },
      identityName: config.identityName,
      anchors,
      now,
      timeoutMs: config.timeout,
      fix,
    }),
    probeCaAdmin({
      admin: config.caAdmin ?? { host: caHost, port: 9990 },
      timeoutMs: config.timeout,
      fix,
    }),
    checkRbac(api, config, deployment),
  ]);
  return { results: [...certify, ...admin.results, rbac], metrics: admin.metrics };
}

/** The rotation state in the anchors ConfigMap's annotation, if any. */
function rotationOf(cm: Read<DataObject>): RotationState | undefined | Error {
  if (cm instanceof Error || cm === undefined) return undefined;
  try {
    return rotationStateFromAnnotations(cm.metadata?.annotations);
  } catch (err) {
    return err instanceof Error ? err : new Error(String(err));
  }
}

/** The issuer Secret as files: `kubernetes.io/tls` (tls.*, ca.crt) or `linkerd.io/tls` (crt.pem, key.pem). */
function issuerFiles(secret: Read<DataObject>): IssuerFiles | Error {
  if (secret instanceof Error) return secret;
  if (secret === undefined) return new Error('not found');
  const d = secret.data ?? {};
  const cert = b64(d['tls.crt'] ?? d['crt.pem']);
  const key = b64(d['tls.key'] ?? d['key.pem']);
  if (cert === undefined) return new Error('has no tls.crt');
  if (key === undefined) return new Error('has no tls.key');
  return { certPem: cert, keyPem: key, caPem: b64(d['ca.crt']) };
}
