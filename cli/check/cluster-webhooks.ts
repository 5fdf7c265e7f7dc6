/**
 * The webhooks' check of `meshid check --kubeconfig`: each webhook configuration exists and its
 * caBundle verifies the serving certificate, both the one stored in the webhooks' Secret and the
 * one the running server presents for the Service's name.
 */
import type { CheckConfig, ParsedCertificate } from '../../core/index.js';
import {
  formatAddress,
  parseCertificates,
  peerChain,
  reachAnchor,
  shortName,
} from '../../core/index.js';
import { b64, CLUSTER_NAMES } from './cluster-api.js';
import type { Cluster, DataObject, WebhookNames } from './cluster-api.js';
import type { CheckResult } from './model.js';
import { result } from './model.js';
import { describeNetError } from './probes.js';
import { subjectAltNames } from './x509.js';

/** Where a webhook is served in the cluster. */
interface HookService {
  readonly name: string;
  readonly namespace: string;
  readonly port?: number;
}

/** The parts of a Mutating- or ValidatingWebhookConfiguration the check reads. */
interface WebhookConfiguration {
  readonly metadata?: { readonly annotations?: Readonly<Record<string, string>> };
  readonly webhooks?: readonly {
    readonly name: string;
    readonly clientConfig: { readonly caBundle?: string; readonly service?: HookService };
  }[];
}

/**
 * The webhook configuration exists, and its caBundle verifies the webhooks' serving certificate:
 * the one in their Secret, and the one the running server presents for the Service's name (what
 * the API server verifies when it calls the webhook).
 */
export async function checkWebhook(
  api: Cluster,
  id: 'webhook-injector' | 'webhook-trust-guard',
  names: WebhookNames,
  ns: string,
  now: number,
  config: Pick<CheckConfig, 'webhooksAddress' | 'timeout'>,
): Promise<CheckResult> {
  const kind =
    names.kind === 'mutating' ? 'MutatingWebhookConfiguration' : 'ValidatingWebhookConfiguration';
  const cfg = await api.read<WebhookConfiguration>(
    'admissionregistration.k8s.io/v1',
    kind,
    '',
    names.config,
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
  const stored = await checkStoredServing(
    api,
    id,
    names,
    hook.clientConfig.service,
    bundleText,
    ns,
    now,
  );
  if (!('bundle' in stored)) return stored;
  const { service, bundle } = stored;
  if (service === undefined) {
    return result(
      id,
      'ok',
      `${kind} ${names.config}: caBundle verifies the serving certificate (a URL webhook: not probed)`,
    );
  }
  return checkServedCertificate(id, names, kind, service, bundle, ns, now, config);
}

/** The certificate in the webhooks' Secret: the caBundle verifies it, for the Service's name. */
async function checkStoredServing(
  api: Cluster,
  id: 'webhook-injector' | 'webhook-trust-guard',
  names: WebhookNames,
  service: HookService | undefined,
  bundleText: string,
  ns: string,
  now: number,
): Promise<CheckResult | { service: HookService | undefined; bundle: ParsedCertificate[] }> {
  const install = 'install the webhooks (docs/webhooks.md)';
  const secretNs = service?.namespace ?? ns;
  const secret = await api.read<DataObject>('v1', 'Secret', secretNs, CLUSTER_NAMES.webhooksSecret);
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
      `${names.webhook}: the caBundle does not verify the serving certificate ${shortName(leaf)}: ${stored.reason}`,
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
  return { service, bundle };
}

/** The certificate the running webhooks present for the Service's name: the caBundle verifies it. */
async function checkServedCertificate(
  id: 'webhook-injector' | 'webhook-trust-guard',
  names: WebhookNames,
  kind: string,
  service: HookService,
  bundle: readonly ParsedCertificate[],
  ns: string,
  now: number,
  config: Pick<CheckConfig, 'webhooksAddress' | 'timeout'>,
): Promise<CheckResult> {
  const host = `${service.name}.${service.namespace}.svc`;
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
      `${names.webhook}: the caBundle does not verify the certificate served at ${where}${live === undefined ? '' : ` (${shortName(live)})`}: ${why}; the API server cannot call the webhook`,
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
