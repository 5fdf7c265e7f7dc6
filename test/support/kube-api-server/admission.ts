/**
 * Webhook admission, as kube-apiserver's MutatingAdmissionWebhook and ValidatingAdmissionWebhook
 * plugins do it, for writes made over HTTP (create, update, patch of a main resource): the stored
 * Mutating- and ValidatingWebhookConfigurations are matched by rules, namespaceSelector and
 * objectSelector; each matching webhook is called over HTTPS with an `admission.k8s.io/v1`
 * AdmissionReview, verifying its certificate against the configuration's `caBundle` and the
 * Service's DNS name; JSON Patches are applied in order; a denial, or a failed call under
 * `failurePolicy: Fail`, fails the write with the real API's wording.
 *
 * Differences from a cluster (docs/kube-api-test-server.md): a `clientConfig.service` is dialled
 * at the address the test's `resolveWebhookService` gives (there is no cluster network), no
 * reinvocation, no matchConditions, no matchPolicy Equivalent conversion.
 */
import { randomUUID } from 'node:crypto';
import { request as httpsRequest } from 'node:https';
import type { TLSSocket } from 'node:tls';
import { jsonPatch } from './patch.js';
import { apiVersionOf } from './resources.js';
import type { ResourceRegistry, ResourceType } from './resources.js';
import { ApiError, internalError } from './status.js';
import type { Store } from './store.js';
import type { JsonObject, KubeObject, RequestAttributes, UserInfo } from './types.js';

/** Where a webhook's Service is reached from the test: `{host, port}` for `svc.namespace/svc.name:port`. */
export type WebhookServiceResolver = (service: {
  namespace: string;
  name: string;
  port: number;
}) => { host: string; port: number } | undefined;

/** One admission attempt. */
export interface AdmissionAttributes {
  readonly type: ResourceType;
  readonly operation: 'CREATE' | 'UPDATE';
  readonly namespace: string;
  readonly object: KubeObject;
  readonly oldObject?: KubeObject | undefined;
  readonly user: UserInfo;
  readonly dryRun: boolean;
}

interface Webhook {
  name: string;
  clientConfig: {
    url?: string;
    caBundle?: string;
    service?: { namespace: string; name: string; path?: string; port?: number };
  };
  rules?: {
    operations?: string[];
    apiGroups?: string[];
    apiVersions?: string[];
    resources?: string[];
    scope?: string;
  }[];
  failurePolicy?: 'Fail' | 'Ignore';
  namespaceSelector?: LabelSelector;
  objectSelector?: LabelSelector;
  timeoutSeconds?: number;
  admissionReviewVersions?: string[];
  sideEffects?: string;
}

interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: { key: string; operator: string; values?: string[] }[];
}

/** Whether a label set matches a metav1.LabelSelector (an empty selector matches everything). */
function selects(sel: LabelSelector | undefined, labels: Record<string, string>): boolean {
  if (sel === undefined) return true;
  for (const [k, v] of Object.entries(sel.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of sel.matchExpressions ?? []) {
    const has = Object.hasOwn(labels, e.key);
    const values = e.values ?? [];
    const ok =
      e.operator === 'In'
        ? has && values.includes(labels[e.key]!)
        : e.operator === 'NotIn'
          ? !has || !values.includes(labels[e.key]!)
          : e.operator === 'Exists'
            ? has
            : e.operator === 'DoesNotExist'
              ? !has
              : false;
    if (!ok) return false;
  }
  return true;
}

const inList = (list: string[] | undefined, v: string): boolean =>
  (list ?? []).includes('*') || (list ?? []).includes(v);

function ruleMatches(w: Webhook, a: AdmissionAttributes): boolean {
  return (w.rules ?? []).some((r) => {
    const scope = r.scope ?? '*';
    if (scope === 'Namespaced' && !a.type.namespaced) return false;
    if (scope === 'Cluster' && a.type.namespaced) return false;
    return (
      inList(r.operations, a.operation) &&
      inList(r.apiGroups, a.type.group) &&
      inList(r.apiVersions, a.type.version) &&
      inList(r.resources, a.type.plural)
    );
  });
}

/** One TLS connection the server opened to a webhook: what kube-apiserver's client negotiated. */
export interface WebhookConnection {
  readonly webhook: string;
  /** The key-exchange group as the client's OpenSSL names it (e.g. X25519MLKEM768, X25519). */
  readonly group: string;
  /** The cipher suite's standard name. */
  readonly cipher: string;
  readonly protocol: string;
}

/** The admission chain of one server. */
export class Admission {
  /** Every TLS connection made to a webhook, in order. */
  readonly connections: WebhookConnection[] = [];

  constructor(
    private readonly store: Store,
    private readonly registry: ResourceRegistry,
    private readonly resolveService: () => WebhookServiceResolver | undefined,
    /** The server's authorization decision, for built-in plugins that check a verb. */
    private readonly authorize: (user: UserInfo, a: RequestAttributes) => boolean,
  ) {}

  #configs(kind: 'MutatingWebhookConfiguration' | 'ValidatingWebhookConfiguration'): Webhook[] {
    const t = this.registry
      .all()
      .find((r) => r.group === 'admissionregistration.k8s.io' && r.kind === kind);
    if (t === undefined) return [];
    return this.store
      .list(t, '')
      .flatMap((c) => (c as unknown as { webhooks?: Webhook[] }).webhooks ?? []);
  }

  /**
   * True when no webhook is configured at all and the type has no built-in admission plugin:
   * writes of `t` skip admission entirely.
   */
  idleFor(t: ResourceType): boolean {
    return (
      t.admit === undefined &&
      this.#configs('MutatingWebhookConfiguration').length === 0 &&
      this.#configs('ValidatingWebhookConfiguration').length === 0
    );
  }

  #matches(w: Webhook, a: AdmissionAttributes): boolean {
    if (!ruleMatches(w, a)) return false;
    // Webhook configurations themselves are never sent to webhooks (the API server's rule, so
    // that a broken webhook can always be removed).
    if (a.type.group === 'admissionregistration.k8s.io') return false;
    if (a.type.namespaced) {
      const nsType = this.registry.all().find((r) => r.group === '' && r.plural === 'namespaces')!;
      const ns = this.store.get(nsType, '', a.namespace);
      if (!selects(w.namespaceSelector, ns?.metadata.labels ?? {})) return false;
    } else if (a.type.group === '' && a.type.plural === 'namespaces') {
      if (!selects(w.namespaceSelector, a.object.metadata.labels ?? {})) return false;
    }
    const objectLabels = a.object.metadata.labels ?? {};
    const oldLabels = a.oldObject?.metadata.labels ?? {};
    return (
      selects(w.objectSelector, objectLabels) ||
      (a.oldObject !== undefined && selects(w.objectSelector, oldLabels))
    );
  }

  /**
   * Runs the mutating webhooks (in order, each seeing the previous one's result), then the
   * validating ones; resolves with the object to store and the warnings to return.
   */
  async admit(a: AdmissionAttributes): Promise<{ object: KubeObject; warnings: string[] }> {
    let object = a.object;
    const warnings: string[] = [];
    for (const w of this.#configs('MutatingWebhookConfiguration')) {
      if (!this.#matches(w, { ...a, object })) continue;
      const response = await this.#call(w, { ...a, object });
      if (response === undefined) continue;
      warnings.push(...response.warnings);
      if (response.patch !== undefined) {
        try {
          object = jsonPatch(object, response.patch) as KubeObject;
        } catch (err) {
          throw internalError(
            `failed calling webhook "${w.name}": the patch does not apply: ${(err as Error).message}`,
          );
        }
      }
    }
    for (const w of this.#configs('ValidatingWebhookConfiguration')) {
      if (!this.#matches(w, { ...a, object })) continue;
      const response = await this.#call(w, { ...a, object });
      if (response !== undefined) warnings.push(...response.warnings);
    }
    a.type.admit?.({
      type: a.type,
      object,
      oldObject: a.oldObject,
      can: (verb, group, resource, name) =>
        this.authorize(a.user, {
          verb,
          resourceRequest: true,
          apiGroup: group,
          resource,
          subresource: '',
          namespace: '',
          name,
          path: '',
        }),
    });
    return { object, warnings };
  }

  /** Calls one webhook; undefined when the call failed and failurePolicy is Ignore. */
  async #call(
    w: Webhook,
    a: AdmissionAttributes,
  ): Promise<{ patch?: unknown; warnings: string[] } | undefined> {
    const uid = randomUUID();
    const gvk = { group: a.type.group, version: a.type.version, kind: a.type.kind };
    const gvr = { group: a.type.group, version: a.type.version, resource: a.type.plural };
    const review = {
      apiVersion: 'admission.k8s.io/v1',
      kind: 'AdmissionReview',
      request: {
        uid,
        kind: gvk,
        resource: gvr,
        requestKind: gvk,
        requestResource: gvr,
        ...(a.object.metadata.name === undefined ? {} : { name: a.object.metadata.name }),
        ...(a.type.namespaced ? { namespace: a.namespace } : {}),
        operation: a.operation,
        userInfo: {
          username: a.user.username,
          groups: [...a.user.groups],
          ...(a.user.uid === undefined ? {} : { uid: a.user.uid }),
        },
        object: { ...a.object, apiVersion: apiVersionOf(a.type), kind: a.type.kind },
        oldObject: a.oldObject ?? null,
        dryRun: a.dryRun,
        options: {
          apiVersion: 'meta.k8s.io/v1',
          kind: a.operation === 'CREATE' ? 'CreateOptions' : 'UpdateOptions',
        },
      },
    };
    let answer: JsonObject;
    try {
      answer = await this.#post(w, JSON.stringify(review));
    } catch (err) {
      if ((w.failurePolicy ?? 'Fail') === 'Ignore') return undefined;
      throw internalError(`failed calling webhook "${w.name}": ${(err as Error).message}`);
    }
    const response = answer['response'] as JsonObject | undefined;
    const bad = (why: string): ApiError | undefined => {
      if ((w.failurePolicy ?? 'Fail') === 'Ignore') return undefined;
      return internalError(`failed calling webhook "${w.name}": ${why}`);
    };
    if (
      answer['apiVersion'] !== 'admission.k8s.io/v1' ||
      answer['kind'] !== 'AdmissionReview' ||
      response === undefined
    ) {
      const e = bad('expected response.uid and an admission.k8s.io/v1 AdmissionReview');
      if (e === undefined) return undefined;
      throw e;
    }
    if (response['uid'] !== uid) {
      const e = bad(`expected response.uid="${uid}", got "${String(response['uid'])}"`);
      if (e === undefined) return undefined;
      throw e;
    }
    const warnings = Array.isArray(response['warnings']) ? (response['warnings'] as string[]) : [];
    if (response['allowed'] !== true) {
      const status = (response['status'] ?? {}) as {
        code?: number;
        message?: string;
        reason?: string;
      };
      const code = typeof status.code === 'number' && status.code >= 400 ? status.code : 400;
      const message =
        status.message === undefined || status.message === ''
          ? `admission webhook "${w.name}" denied the request without explanation`
          : `admission webhook "${w.name}" denied the request: ${status.message}`;
      throw new ApiError({
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Failure',
        message,
        ...(status.reason === undefined ? {} : { reason: status.reason }),
        code,
      });
    }
    if (response['patch'] === undefined) return { warnings };
    if (response['patchType'] !== 'JSONPatch') {
      const e = bad(`unsupported patchType ${JSON.stringify(response['patchType'])}`);
      if (e === undefined) return undefined;
      throw e;
    }
    let patch: unknown;
    try {
      patch = JSON.parse(Buffer.from(String(response['patch']), 'base64').toString('utf8'));
    } catch (err) {
      throw internalError(
        `failed calling webhook "${w.name}": the patch is not JSON: ${(err as Error).message}`,
      );
    }
    return { patch, warnings };
  }

  #post(w: Webhook, body: string): Promise<JsonObject> {
    const cc = w.clientConfig;
    let host: string;
    let port: number;
    let path: string;
    let servername: string;
    if (cc.url !== undefined) {
      const u = new URL(cc.url);
      if (u.protocol !== 'https:') return Promise.reject(new Error('webhook URLs must be https'));
      host = u.hostname;
      port = u.port === '' ? 443 : Number(u.port);
      path = `${u.pathname}${u.search}`;
      servername = u.hostname;
    } else if (cc.service !== undefined) {
      const svcPort = cc.service.port ?? 443;
      const at = this.resolveService()?.({
        namespace: cc.service.namespace,
        name: cc.service.name,
        port: svcPort,
      });
      if (at === undefined)
        return Promise.reject(
          new Error(
            `service "${cc.service.name}" in namespace "${cc.service.namespace}" is not reachable (no address for it in the test)`,
          ),
        );
      host = at.host;
      port = at.port;
      path = cc.service.path ?? '/';
      // What kube-apiserver verifies a Service's certificate for.
      servername = `${cc.service.name}.${cc.service.namespace}.svc`;
    } else {
      return Promise.reject(new Error('clientConfig has neither url nor service'));
    }
    const ca =
      cc.caBundle === undefined ? undefined : Buffer.from(cc.caBundle, 'base64').toString('utf8');
    const timeoutMs = (w.timeoutSeconds ?? 10) * 1000;
    return new Promise((resolve, reject) => {
      const req = httpsRequest(
        {
          host,
          port,
          path,
          method: 'POST',
          servername,
          ...(ca === undefined ? {} : { ca }),
          headers: {
            'Content-Type': 'application/json',
            Accept: 'application/json',
            'Content-Length': Buffer.byteLength(body),
          },
          timeout: timeoutMs,
          // Node checks the certificate against `servername` (a Service's DNS name), not `host`.
          agent: false,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            if (res.statusCode !== 200) {
              reject(
                new Error(
                  `the server responded with HTTP ${res.statusCode}: ${text.slice(0, 300)}`,
                ),
              );
              return;
            }
            try {
              resolve(JSON.parse(text) as JsonObject);
            } catch {
              reject(new Error('the response is not JSON'));
            }
          });
          res.on('error', reject);
        },
      );
      req.on('socket', (socket) =>
        socket.once('secureConnect', () => {
          const tlsSocket = socket as TLSSocket;
          const kex = tlsSocket.getEphemeralKeyInfo() as { name?: string } | null;
          this.connections.push({
            webhook: w.name,
            group: kex?.name ?? '',
            cipher: tlsSocket.getCipher()?.standardName ?? '',
            protocol: tlsSocket.getProtocol() ?? '',
          });
        }),
      );
      req.on('timeout', () =>
        req.destroy(new Error(`context deadline exceeded (timeout ${w.timeoutSeconds ?? 10}s)`)),
      );
      req.on('error', (err) =>
        reject(new Error(`Post "https://${servername}:${port}${path}": ${err.message}`)),
      );
      req.end(body);
    });
  }
}
