/**
 * `meshid check --kubeconfig F`: the install in a cluster, read through the Kubernetes API with
 * `@kubernetes/client-node` (in tests, the project's Kubernetes API test server — a test double).
 *
 * What is read: the anchors ConfigMap (and its `meshid.io/rotation` annotation), the issuer
 * Secret, the issuer's cert-manager Certificate, the CA's Deployment (its ServiceAccount and
 * token validator), SubjectAccessReviews for that ServiceAccount, the webhook configurations
 * and the webhooks' serving Secret, the destination service's Deployment, and every pod (paged), of which the injected ones are checked
 * by annotation and a sample is asked for its certificate at `<pod IP>:<proxy admin port>`.
 */
import type { KubeConfig } from '@kubernetes/client-node';
import {
  AdmissionregistrationV1Api,
  AppsV1Api,
  AuthorizationV1Api,
  CoreV1Api,
  CustomObjectsApi,
} from '@kubernetes/client-node';
import type { V1Pod } from '@kubernetes/client-node';
import type { CheckConfig, ParsedCertificate } from '../../core/index.js';
import {
  bundleFingerprint,
  formatAddress,
  parseCertificates,
  peerChain,
  reachAnchor,
} from '../../core/index.js';
import { caRequirements, describeAccess } from '../../identity-ca/index.js';
import { ROTATION_ANNOTATION, rotationStateFromAnnotations } from '../../trust-bundle/index.js';
import type { RotationState } from '../../trust-bundle/index.js';
import type { Progress } from './local.js';
import { checkAnchors, checkIssuer } from './material.js';
import type { IssuerFiles, MaterialSources } from './material.js';
import type { CheckId, CheckResult } from './model.js';
import { result } from './model.js';
import { checkProxies, describeNetError, mapLimit, probeCa, probeCaAdmin } from './probes.js';
import { caFipsFromMetrics, checkFips, checkRotation, clientFips } from './state.js';
import { checkDestinationReady, checkTransparentPods, transparentPods } from './transparent.js';
import { DESTINATION_NAMES } from '../install/destination.js';
import { shortName, subjectAltNames } from './x509.js';
import { checkTrustBundles } from './trust-bundles.js';
import type { ListedTrustBundle } from './trust-bundles.js';

/** Names shared with the other components (COMMON contracts). */
export const CLUSTER_NAMES = Object.freeze({
  caDeployment: 'linkerd-identity',
  caServiceAccount: 'linkerd-identity',
  caService: 'linkerd-identity',
  injector: {
    kind: 'mutating',
    config: 'meshid-proxy-injector',
    webhook: 'proxy-injector.meshid.io',
  } as WebhookNames,
  trustGuard: {
    kind: 'validating',
    config: 'meshid-trust-guard',
    webhook: 'trust-guard.meshid.io',
  } as WebhookNames,
  webhooksSecret: 'meshid-webhooks-tls',
  proxyVersionAnnotation: 'meshid.io/proxy-version',
  trustRootAnnotation: 'meshid.io/trust-root-sha256',
});

/** The API calls the cluster checks make, each with a deadline. */
class Cluster {
  readonly core: CoreV1Api;
  readonly apps: AppsV1Api;
  readonly authz: AuthorizationV1Api;
  readonly admission: AdmissionregistrationV1Api;
  readonly custom: CustomObjectsApi;
  constructor(
    kc: KubeConfig,
    readonly timeoutMs: number,
  ) {
    this.core = kc.makeApiClient(CoreV1Api);
    this.apps = kc.makeApiClient(AppsV1Api);
    this.authz = kc.makeApiClient(AuthorizationV1Api);
    this.admission = kc.makeApiClient(AdmissionregistrationV1Api);
    this.custom = kc.makeApiClient(CustomObjectsApi);
  }

  /** Resolves with the object, `undefined` on 404, or an Error saying what went wrong. */
  async get<T>(what: string, call: () => Promise<T>): Promise<T | undefined | Error> {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        call(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`no answer within ${this.timeoutMs} ms`)),
            this.timeoutMs,
          );
        }),
      ]);
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (code === 404) return undefined;
      const body = (err as { body?: unknown }).body;
      const message =
        typeof body === 'string' && body.includes('"message"')
          ? String((JSON.parse(body) as { message?: string }).message)
          : err instanceof Error
            ? err.message
            : String(err);
      return new Error(`${what}: ${typeof code === 'number' ? `HTTP ${code}: ` : ''}${message}`);
    } finally {
      clearTimeout(timer);
    }
  }
}

const b64 = (s: string | undefined): string | undefined =>
  s === undefined ? undefined : Buffer.from(s, 'base64').toString('utf8');

/** Runs every cluster check; resolves with the results. */
export async function checkCluster(
  kc: KubeConfig,
  config: CheckConfig,
  now: number,
  progress: Progress,
): Promise<CheckResult[]> {
  const api = new Cluster(kc, Math.max(config.timeout, 5_000));
  const ns = config.namespace;
  const cmName = config.trustAnchorsConfigMap;
  const src: MaterialSources = {
    anchors: `ConfigMap ${ns}/${cmName} key ${config.trustAnchorsKey}`,
    issuer: `Secret ${ns}/${config.issuerSecret}`,
    fixAnchors: `update the ConfigMap (trust-manager or "meshid install --trust-anchors"), see docs/install.md`,
    fixIssuer: `renew or replace the Secret (cert-manager: "cmctl renew -n ${ns} ${config.issuerSecret}"), see docs/install.md`,
  };

  progress('reading the trust anchors and the issuer');
  const [cm, secret, certificate, deployment, destination] = await Promise.all([
    api.get(`ConfigMap ${ns}/${cmName}`, () =>
      api.core.readNamespacedConfigMap({ name: cmName, namespace: ns }),
    ),
    api.get(`Secret ${ns}/${config.issuerSecret}`, () =>
      api.core.readNamespacedSecret({ name: config.issuerSecret, namespace: ns }),
    ),
    api.get(
      `Certificate ${ns}/${config.issuerSecret}`,
      () =>
        api.custom.getNamespacedCustomObject({
          group: 'cert-manager.io',
          version: 'v1',
          namespace: ns,
          plural: 'certificates',
          name: config.issuerSecret,
        }) as Promise<CertManagerCertificate>,
    ),
    api.get(`Deployment ${ns}/${CLUSTER_NAMES.caDeployment}`, () =>
      api.apps.readNamespacedDeployment({ name: CLUSTER_NAMES.caDeployment, namespace: ns }),
    ),
    api.get(`Deployment ${ns}/${DESTINATION_NAMES.deployment}`, () =>
      api.apps.readNamespacedDeployment({ name: DESTINATION_NAMES.deployment, namespace: ns }),
    ),
  ]);
  const anchorsText =
    cm instanceof Error
      ? cm
      : cm === undefined
        ? new Error('not found')
        : (cm.data?.[config.trustAnchorsKey] ?? new Error(`has no key ${config.trustAnchorsKey}`));
  const a = checkAnchors(anchorsText, src, now, config.expiryWarning);
  const i = checkIssuer(issuerFiles(secret), a.anchors, src, now, config.expiryWarning);
  const results: CheckResult[] = [
    ...a.results,
    ...i.results,
    ...checkCertificate(certificate, now, ns),
  ];

  const caPort = deploymentArg(deployment, 'listen')?.split(':').pop() ?? '8080';
  // The Service's name in cluster DNS: the cluster domain, which is not the trust domain.
  const caHost = `${CLUSTER_NAMES.caService}.${ns}.svc.${config.clusterDomain}`;
  const fix = `check the CA's pods ("kubectl -n ${ns} get pods -l app.kubernetes.io/name=meshid,app.kubernetes.io/component=identity" and their logs); from outside the cluster: "kubectl -n ${ns} port-forward deploy/linkerd-identity 8080 9990" with --ca-address 127.0.0.1:8080 --ca-admin 127.0.0.1:9990`;
  progress('asking the CA and reading RBAC, webhooks and pods');
  const [caResults, admin, rbac, webhooks, pods] = await Promise.all([
    probeCa({
      address: config.caAddress ?? { host: caHost, port: Number(caPort) },
      identityName: config.identityName,
      anchors: a.anchors,
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
    Promise.all([
      checkWebhook(api, 'webhook-injector', CLUSTER_NAMES.injector, ns, now, config),
      checkWebhook(api, 'webhook-trust-guard', CLUSTER_NAMES.trustGuard, ns, now, config),
    ]),
    listPods(api),
  ]);
  results.push(...caResults, ...admin.results, rbac, ...webhooks);

  const fingerprint = anchorsText instanceof Error ? '' : bundleFingerprint(anchorsText);
  if (pods instanceof Error) {
    const r = (id: CheckId): CheckResult =>
      result(
        id,
        'error',
        `cannot list pods: ${pods.message}`,
        'give the checking user "list pods" in every namespace',
      );
    results.push(
      r('proxies-trust-root'),
      r('anchors-namespaces'),
      r('proxies-transparent'),
      r('destination-ready'),
      r('proxies-certificates'),
    );
  } else {
    const injected = pods.filter((p) => {
      const ann = p.metadata?.annotations ?? {};
      return (
        CLUSTER_NAMES.proxyVersionAnnotation in ann || CLUSTER_NAMES.trustRootAnnotation in ann
      );
    });
    results.push(
      checkTrustRootAnnotations(injected, fingerprint),
      await checkNamespaceAnchors(
        api,
        config,
        injected,
        anchorsText instanceof Error ? undefined : fingerprint,
      ),
    );
    const sorted = transparentPods(pods, ns);
    results.push(
      checkTransparentPods(sorted),
      checkDestinationReady(destination, sorted.transparent.length, ns),
    );
    const running = injected.filter(
      (p) => p.status?.phase === 'Running' && typeof p.status.podIP === 'string',
    );
    const sample = spread(running, config.proxySample);
    progress(`asking ${sample.length} of ${injected.length} injected pods' proxies`);
    results.push(
      await checkProxies({
        targets: sample.map((p) => ({
          name: `${p.metadata?.namespace}/${p.metadata?.name}`,
          admin: { host: p.status!.podIP!, port: config.proxyAdminPort },
        })),
        total: injected.length,
        anchors: a.anchors,
        bundleFingerprint: fingerprint,
        now,
        timeoutMs: config.timeout,
        concurrency: config.concurrency,
      }),
    );
  }
  const ctbs = await api.get(
    'list ClusterTrustBundles',
    () =>
      api.custom.listClusterCustomObject({
        group: 'certificates.k8s.io',
        version: 'v1beta1',
        plural: 'clustertrustbundles',
        fieldSelector: `spec.signerName=${config.podCertificateSigner}`,
      }) as Promise<{ items: ListedTrustBundle[] }>,
  );
  results.push(
    checkTrustBundles({
      bundles: ctbs === undefined ? 'unserved' : ctbs instanceof Error ? ctbs : ctbs.items,
      anchorsText,
      anchorsAnnotations: cm instanceof Error ? undefined : cm?.metadata?.annotations,
      signerName: config.podCertificateSigner,
      now,
    }),
  );
  let rotation: RotationState | undefined | Error;
  try {
    rotation =
      cm instanceof Error || cm === undefined
        ? undefined
        : rotationStateFromAnnotations(cm.metadata?.annotations);
  } catch (err) {
    rotation = err instanceof Error ? err : new Error(String(err));
  }
  results.push(
    checkRotation(
      rotation,
      `the ${ROTATION_ANNOTATION} annotation of ConfigMap ${ns}/${cmName}`,
      now,
    ),
    checkFips({ client: clientFips(), ca: caFipsFromMetrics(admin.metrics) }),
  );
  return results;
}

/** The issuer Secret as files: `kubernetes.io/tls` (tls.*, ca.crt) or `linkerd.io/tls` (crt.pem, key.pem). */
function issuerFiles(
  secret: { data?: Record<string, string> } | undefined | Error,
): IssuerFiles | Error {
  if (secret instanceof Error) return secret;
  if (secret === undefined) return new Error('not found');
  const d = secret.data ?? {};
  const cert = b64(d['tls.crt'] ?? d['crt.pem']);
  const key = b64(d['tls.key'] ?? d['key.pem']);
  if (cert === undefined) return new Error('has no tls.crt');
  if (key === undefined) return new Error('has no tls.key');
  return { certPem: cert, keyPem: key, caPem: b64(d['ca.crt']) };
}

/** The parts of a cert-manager Certificate the checks read. */
interface CertManagerCertificate {
  readonly spec?: { readonly issuerRef?: { readonly name?: string; readonly kind?: string } };
  readonly status?: {
    readonly conditions?: readonly {
      type?: string;
      status?: string;
      reason?: string;
      message?: string;
    }[];
    readonly notAfter?: string;
    readonly renewalTime?: string;
  };
}

function checkCertificate(
  c: CertManagerCertificate | undefined | Error,
  now: number,
  ns: string,
): CheckResult[] {
  if (c instanceof Error) {
    return [
      result(
        'cert-manager-ready',
        'warn',
        `cannot read the issuer Certificate: ${c.message}`,
        'give the checking user "get certificates.cert-manager.io"',
      ),
    ];
  }
  if (c === undefined) {
    const text =
      'no cert-manager Certificate for the issuer: it is not managed by cert-manager (renew it yourself)';
    return [
      result('cert-manager-ready', 'ok', text),
      result('cert-manager-renewal', 'ok', 'not managed by cert-manager'),
    ];
  }
  const ready = c.status?.conditions?.find((x) => x.type === 'Ready');
  const issuerRef = `${c.spec?.issuerRef?.kind ?? 'Issuer'} ${c.spec?.issuerRef?.name ?? '?'}`;
  const out: CheckResult[] = [
    ready?.status === 'True'
      ? result(
          'cert-manager-ready',
          'ok',
          `Ready (${ready.reason ?? 'Ready'}), issued by ${issuerRef}`,
        )
      : result(
          'cert-manager-ready',
          'error',
          `not Ready${ready === undefined ? ' (no Ready condition yet)' : `: ${ready.reason ?? ''} ${ready.message ?? ''}`.trimEnd()}`,
          `"kubectl -n ${ns} describe certificate" and check ${issuerRef} (it must hold the trust anchor's key)`,
        ),
  ];
  const notAfter = c.status?.notAfter === undefined ? NaN : Date.parse(c.status.notAfter);
  const renewal = c.status?.renewalTime === undefined ? NaN : Date.parse(c.status.renewalTime);
  if (Number.isNaN(notAfter) || Number.isNaN(renewal)) {
    out.push(
      result(
        'cert-manager-renewal',
        'warn',
        'cert-manager reports no notAfter/renewalTime yet',
        `wait for cert-manager to issue it, or "kubectl -n ${ns} describe certificate"`,
      ),
    );
  } else if (renewal >= notAfter) {
    out.push(
      result(
        'cert-manager-renewal',
        'error',
        `renewal at ${new Date(renewal).toISOString()} is not before expiry at ${new Date(notAfter).toISOString()}`,
        'lower spec.renewBefore (or raise spec.duration) so cert-manager renews before the issuer expires',
      ),
    );
  } else if (renewal < now - 3_600_000) {
    out.push(
      result(
        'cert-manager-renewal',
        'error',
        `renewal was due at ${new Date(renewal).toISOString()} and has not happened`,
        `"kubectl -n ${ns} describe certificate" and the cert-manager logs say why`,
      ),
    );
  } else {
    out.push(
      result(
        'cert-manager-renewal',
        'ok',
        `renews at ${new Date(renewal).toISOString()}, before expiry at ${new Date(notAfter).toISOString()}`,
      ),
    );
  }
  return out;
}

/** A `--name=value` argument of the CA container, if the Deployment has it. */
function deploymentArg(d: unknown, name: string): string | undefined {
  if (d === undefined || d instanceof Error) return undefined;
  const containers =
    (d as { spec?: { template?: { spec?: { containers?: { args?: string[] }[] } } } }).spec
      ?.template?.spec?.containers ?? [];
  for (const c of containers) {
    for (const arg of c.args ?? [])
      if (arg.startsWith(`--${name}=`)) return arg.slice(name.length + 3);
  }
  return undefined;
}

/** SubjectAccessReviews for the CA's ServiceAccount: what its configuration needs. */
async function checkRbac(
  api: Cluster,
  config: CheckConfig,
  deployment: unknown,
): Promise<CheckResult> {
  const ns = config.namespace;
  const sa =
    deployment === undefined || deployment instanceof Error
      ? CLUSTER_NAMES.caServiceAccount
      : ((deployment as { spec?: { template?: { spec?: { serviceAccountName?: string } } } }).spec
          ?.template?.spec?.serviceAccountName ?? 'default');
  const requirements = caRequirements({
    tokenReview: deploymentArg(deployment, 'token-validator') !== 'jwks',
    namespace: ns,
    issuerSecret: deploymentArg(deployment, 'issuer-secret') ?? config.issuerSecret,
    trustAnchorsConfigMap:
      deploymentArg(deployment, 'trust-anchors-config-map') ?? config.trustAnchorsConfigMap,
    events: deploymentArg(deployment, 'events') !== 'false',
  });
  const user = `system:serviceaccount:${ns}:${sa}`;
  const answers = await mapLimit(requirements, 8, async (r) => ({
    r,
    a: await api.get(`SubjectAccessReview for ${user}`, () =>
      api.authz.createSubjectAccessReview({
        body: {
          apiVersion: 'authorization.k8s.io/v1',
          kind: 'SubjectAccessReview',
          spec: {
            user,
            groups: [
              'system:serviceaccounts',
              `system:serviceaccounts:${ns}`,
              'system:authenticated',
            ],
            resourceAttributes: {
              verb: r.query.verb,
              group: r.query.group,
              resource: r.query.resource,
              ...(r.query.namespace === undefined ? {} : { namespace: r.query.namespace }),
              ...(r.query.name === undefined ? {} : { name: r.query.name }),
            },
          },
        },
      }),
    ),
  }));
  const failed = answers.find((x) => x.a instanceof Error || x.a === undefined);
  if (failed !== undefined) {
    return result(
      'ca-rbac',
      'warn',
      `cannot ask SubjectAccessReviews: ${failed.a instanceof Error ? failed.a.message : 'not found'}`,
      'run the check as a user who may create subjectaccessreviews.authorization.k8s.io',
    );
  }
  const denied = answers.filter(
    (x) => !(x.a as { status?: { allowed?: boolean } }).status?.allowed,
  );
  const required = denied.filter((x) => x.r.required);
  if (required.length > 0) {
    return result(
      'ca-rbac',
      'error',
      `${user} may not ${required.map((x) => describeAccess(x.r.query)).join('; ')} (needed ${required[0]!.r.why})`,
      'apply the RBAC of "meshid install" (ClusterRoleBinding to create tokenreviews, Role to read the issuer and anchors)',
    );
  }
  if (denied.length > 0) {
    return result(
      'ca-rbac',
      'warn',
      `${user} may not ${denied.map((x) => describeAccess(x.r.query)).join('; ')}: ${denied[0]!.r.why} will not work`,
      'apply the RBAC of "meshid install"',
    );
  }
  return result(
    'ca-rbac',
    'ok',
    `${user} may ${requirements.map((r) => describeAccess(r.query)).join(', ')}`,
  );
}

interface WebhookNames {
  readonly kind: 'mutating' | 'validating';
  readonly config: string;
  readonly webhook: string;
}

/**
 * The webhook configuration exists, and its caBundle verifies the webhooks' serving certificate:
 * the one in their Secret, and the one the running server presents for the Service's name (what
 * the API server verifies when it calls the webhook).
 */
async function checkWebhook(
  api: Cluster,
  id: 'webhook-injector' | 'webhook-trust-guard',
  names: WebhookNames,
  ns: string,
  now: number,
  config: Pick<CheckConfig, 'webhooksAddress' | 'timeout'>,
): Promise<CheckResult> {
  const kind =
    names.kind === 'mutating' ? 'MutatingWebhookConfiguration' : 'ValidatingWebhookConfiguration';
  const cfg = await api.get(`${kind} ${names.config}`, () =>
    names.kind === 'mutating'
      ? api.admission.readMutatingWebhookConfiguration({ name: names.config })
      : api.admission.readValidatingWebhookConfiguration({ name: names.config }),
  );
  const install = 'install the webhooks (docs/webhooks.md)';
  if (cfg instanceof Error)
    return result(
      id,
      'error',
      cfg.message,
      'give the checking user "get" on admission webhook configurations',
    );
  if (cfg === undefined)
    return result(id, 'warn', `${kind} ${names.config} is not installed`, install);
  const hook = (cfg.webhooks ?? []).find((w) => w.name === names.webhook);
  if (hook === undefined)
    return result(id, 'error', `${kind} ${names.config} has no webhook ${names.webhook}`, install);
  const bundleText = b64(hook.clientConfig.caBundle);
  const injectFrom = cfg.metadata?.annotations?.['cert-manager.io/inject-ca-from'];
  if (bundleText === undefined || bundleText.trim() === '') {
    return result(
      id,
      'error',
      `${names.webhook} has no caBundle: the API server cannot verify the webhook`,
      injectFrom === undefined
        ? "set clientConfig.caBundle to the CA of the webhooks' serving certificate (or re-run the install)"
        : `cert-manager's cainjector fills it from Certificate ${injectFrom}: check that cainjector runs and "kubectl -n ${injectFrom.split('/')[0]} describe certificate ${injectFrom.split('/')[1] ?? ''}" is Ready`,
    );
  }
  const service = hook.clientConfig.service;
  const secretNs = service?.namespace ?? ns;
  const secret = await api.get(`Secret ${secretNs}/${CLUSTER_NAMES.webhooksSecret}`, () =>
    api.core.readNamespacedSecret({ name: CLUSTER_NAMES.webhooksSecret, namespace: secretNs }),
  );
  if (secret instanceof Error)
    return result(
      id,
      'error',
      secret.message,
      'give the checking user "get secrets" in the control-plane namespace',
    );
  if (secret === undefined)
    return result(
      id,
      'error',
      `the webhooks' serving Secret ${secretNs}/${CLUSTER_NAMES.webhooksSecret} does not exist`,
      install,
    );
  let bundle: ParsedCertificate[];
  let serving: ParsedCertificate[];
  try {
    bundle = parseCertificates(bundleText, 'ERR_INSPECT_TARGET');
    serving = parseCertificates(b64(secret.data?.['tls.crt']) ?? '', 'ERR_INSPECT_TARGET');
  } catch (err) {
    return result(id, 'error', `${names.webhook}: ${(err as Error).message}`, install);
  }
  const [leaf, ...rest] = serving;
  if (leaf === undefined)
    return result(
      id,
      'error',
      `Secret ${secretNs}/${CLUSTER_NAMES.webhooksSecret} has no tls.crt`,
      install,
    );
  const host = service === undefined ? undefined : `${service.name}.${service.namespace}.svc`;
  const stored = servingProblem(leaf, rest, bundle, host, now);
  if (stored?.kind === 'chain') {
    return result(
      id,
      'error',
      `${names.webhook}: the caBundle does not verify the serving certificate ${shortName(leaf.x509)}: ${stored.reason}`,
      'the caBundle is stale: update it from the CA that issued meshid-webhooks-tls (cert-manager cainjector does it by itself)',
    );
  }
  if (stored?.kind === 'name') {
    return result(
      id,
      'error',
      `${names.webhook}: the serving certificate is not for ${host}`,
      `reissue ${CLUSTER_NAMES.webhooksSecret} with the DNS name ${host}`,
    );
  }
  if (service === undefined || host === undefined) {
    return result(
      id,
      'ok',
      `${kind} ${names.config}: caBundle verifies the serving certificate (a URL webhook: not probed)`,
    );
  }
  const address = config.webhooksAddress ?? { host, port: service.port ?? 443 };
  const where = formatAddress(address);
  let served: ParsedCertificate[];
  try {
    const pems = await peerChain(address, host, config.timeout, {
      alpn: ['http/1.1'],
      minVersion: 'TLSv1.2',
    });
    served = parseCertificates(pems.join(''), 'ERR_INSPECT_TARGET');
  } catch (err) {
    return result(
      id,
      'error',
      `cannot reach the webhooks at ${where}: ${describeNetError(err, config.timeout)}`,
      `check the pods ("kubectl -n ${ns} get pods -l app.kubernetes.io/component=webhooks" and their logs); from outside the cluster: "kubectl -n ${ns} port-forward svc/${service.name} 8443:443" with --webhooks-address 127.0.0.1:8443`,
    );
  }
  const [live, ...liveRest] = served;
  const why =
    live === undefined
      ? 'it presented no certificate'
      : servingProblem(live, liveRest, bundle, host, now)?.reason;
  if (why !== undefined) {
    return result(
      id,
      'error',
      `${names.webhook}: the caBundle does not verify the certificate served at ${where}${live === undefined ? '' : ` (${shortName(live.x509)})`}: ${why}; the API server cannot call the webhook`,
      `restart the webhooks' pods so they serve ${CLUSTER_NAMES.webhooksSecret}, or update the caBundle from the CA that issued what they serve`,
    );
  }
  return result(
    id,
    'ok',
    `${kind} ${names.config}: caBundle verifies the certificate served at ${where} for ${host}`,
  );
}

/**
 * What keeps `bundle` from verifying `leaf` (with `rest` as intermediates) as the serving
 * certificate for `host` (any name when undefined): the chain or the name; undefined when nothing.
 */
function servingProblem(
  leaf: ParsedCertificate,
  rest: readonly ParsedCertificate[],
  bundle: readonly ParsedCertificate[],
  host: string | undefined,
  now: number,
): { kind: 'chain' | 'name'; reason: string } | undefined {
  const c = reachAnchor([leaf, ...rest], bundle, now);
  if (c.anchor === undefined) return { kind: 'chain', reason: c.reason };
  if (host !== undefined && !subjectAltNames(leaf.x509).dns.includes(host))
    return { kind: 'name', reason: `it is not for ${host}` };
  return undefined;
}

/** Every pod, paged. */
async function listPods(api: Cluster): Promise<V1Pod[] | Error> {
  const pods: V1Pod[] = [];
  let cont: string | undefined;
  do {
    const page = await api.get('list pods', () =>
      api.core.listPodForAllNamespaces({
        limit: 500,
        ...(cont === undefined ? {} : { _continue: cont }),
      }),
    );
    if (page instanceof Error) return page;
    if (page === undefined) return new Error('list pods: not found');
    pods.push(...page.items);
    cont = page.metadata?._continue || undefined;
  } while (cont !== undefined);
  return pods;
}

function checkTrustRootAnnotations(injected: readonly V1Pod[], fingerprint: string): CheckResult {
  if (injected.length === 0) return result('proxies-trust-root', 'ok', 'no injected pods');
  const stale = injected.filter(
    (p) => p.metadata?.annotations?.[CLUSTER_NAMES.trustRootAnnotation] !== fingerprint,
  );
  if (stale.length === 0) {
    return result(
      'proxies-trust-root',
      'ok',
      `all ${injected.length} injected pods were injected with the current bundle`,
    );
  }
  const names = stale
    .slice(0, 5)
    .map((p) => `${p.metadata?.namespace}/${p.metadata?.name}`)
    .join(', ');
  return result(
    'proxies-trust-root',
    'warn',
    `${stale.length} of ${injected.length} injected pods were injected with another trust bundle: ${names}${stale.length > 5 ? ` and ${stale.length - 5} more` : ''}`,
    'restart those workloads ("kubectl rollout restart") once the rotation allows it, so they are injected with the current bundle',
  );
}

/**
 * Injected pods mount the anchors ConfigMap of their own namespace (a pod cannot mount another
 * namespace's), so every namespace with injected pods needs a copy; without one its pods stay in
 * ContainerCreating. A copy with other anchors than the control plane's is a warning (in a
 * rotation the copies lag the original for a moment).
 */
async function checkNamespaceAnchors(
  api: Cluster,
  config: CheckConfig,
  injected: readonly V1Pod[],
  /** The fingerprint of the control plane's anchors text; undefined when it cannot be read. */
  current: string | undefined,
): Promise<CheckResult> {
  const name = config.trustAnchorsConfigMap;
  const namespaces = [
    ...new Set(
      injected.map((p) => p.metadata?.namespace ?? 'default').filter((n) => n !== config.namespace),
    ),
  ].sort();
  if (namespaces.length === 0)
    return result('anchors-namespaces', 'ok', 'no injected pods outside the control plane');
  const copies = await mapLimit(namespaces, config.concurrency, async (namespace) => ({
    namespace,
    cm: await api.get(`ConfigMap ${namespace}/${name}`, () =>
      api.core.readNamespacedConfigMap({ name, namespace }),
    ),
  }));
  const unreadable = copies.find((c) => c.cm instanceof Error);
  const missing = copies.filter((c) => c.cm === undefined).map((c) => c.namespace);
  const list = (ns: readonly string[]): string =>
    `${ns.slice(0, 5).join(', ')}${ns.length > 5 ? ` and ${ns.length - 5} more` : ''}`;
  const copyFix = `meshid trust sync copies it into namespaces annotated meshid.io/inject=enabled or holding pods labelled linkerd.io/control-plane-ns=${config.namespace}: check that it runs, or annotate those namespaces; or copy it by hand ("kubectl -n ${config.namespace} get configmap ${name} -o jsonpath='{.data.${config.trustAnchorsKey.replace(/\./g, '\\.')}}'", then "kubectl -n NS create configmap ${name} --from-file=${config.trustAnchorsKey}=FILE"); with trust-manager, make its Bundle target those namespaces (docs/install.md)`;
  if (missing.length > 0) {
    return result(
      'anchors-namespaces',
      'error',
      `${missing.length} of ${namespaces.length} namespaces with injected pods have no ConfigMap ${name}, so their pods cannot start: ${list(missing)}`,
      copyFix,
    );
  }
  if (unreadable !== undefined) {
    return result(
      'anchors-namespaces',
      'warn',
      `cannot read the anchors ConfigMap of namespace ${unreadable.namespace}: ${(unreadable.cm as Error).message}`,
      `give the checking user "get configmaps" in the namespaces of injected pods`,
    );
  }
  const stale = copies
    .filter((c) => {
      const text = (c.cm as { data?: Record<string, string> }).data?.[config.trustAnchorsKey];
      return text === undefined || (current !== undefined && bundleFingerprint(text) !== current);
    })
    .map((c) => c.namespace);
  if (stale.length > 0) {
    return result(
      'anchors-namespaces',
      'warn',
      `${stale.length} of ${namespaces.length} namespaces hold other anchors in ConfigMap ${name} than ${config.namespace}/${name}: ${list(stale)}`,
      `update those copies from ${config.namespace}/${name} (a trust-manager Bundle keeps them in step)`,
    );
  }
  return result(
    'anchors-namespaces',
    'ok',
    `all ${namespaces.length} namespaces with injected pods hold ConfigMap ${name} with the current anchors`,
  );
}

/** At most `n` items spread evenly over the list (all when n is 0 or the list is short). */
function spread<T>(items: readonly T[], n: number): T[] {
  if (n === 0 || items.length <= n) return [...items];
  const step = items.length / n;
  return Array.from({ length: n }, (_, k) => items[Math.floor(k * step)]!);
}
