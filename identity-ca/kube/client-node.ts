/**
 * The {@link KubeApi} over `@kubernetes/client-node`: the one place the CA touches the client
 * library. Every failure becomes a {@link KubeApiError} carrying the HTTP status and the
 * Status reason, so nothing above it depends on the library's exception types.
 */
import type * as https from 'node:https';
import {
  ApiException,
  AuthenticationV1Api,
  AuthorizationV1Api,
  CoreV1Api,
  Observable,
  PatchStrategy,
  Watch,
  WellKnownApi,
  setHeaderOptions,
} from '@kubernetes/client-node';
import type {
  ConfigurationOptions,
  CoreV1Event,
  KubeConfig,
  V1ConfigMap,
  V1Secret,
} from '@kubernetes/client-node';
import type {
  AccessQuery,
  EventRecord,
  KubeApi,
  KubeObject,
  TokenReviewResult,
  WatchEvent,
  WatchedKind,
} from './api.js';
import { KubeApiError } from './api.js';

/**
 * Wraps a loaded KubeConfig as the CA's {@link KubeApi}.
 *
 * @example
 * ```ts
 * const kc = new KubeConfig();
 * kc.loadFromFile('/etc/kubeconfig');
 * const api = clientNodeKubeApi(kc);
 * ```
 */
export function clientNodeKubeApi(kc: KubeConfig): KubeApi {
  const server = kc.getCurrentCluster()?.server ?? '(no cluster)';
  const core = kc.makeApiClient(CoreV1Api);
  const authn = kc.makeApiClient(AuthenticationV1Api);
  const authz = kc.makeApiClient(AuthorizationV1Api);
  const wellKnown = kc.makeApiClient(WellKnownApi);
  const watcher = new Watch(kc);
  const aborts = new Set<() => void>();

  return {
    server,

    async createTokenReview(token, audiences, signal): Promise<TokenReviewResult> {
      const review = await call(
        () =>
          authn.createTokenReview(
            {
              body: {
                apiVersion: 'authentication.k8s.io/v1',
                kind: 'TokenReview',
                spec: { token, audiences: [...audiences] },
              },
            },
            withSignal(signal),
          ),
        'TokenReview',
      );
      const s = review.status ?? {};
      return {
        authenticated: s.authenticated === true,
        username: s.user?.username,
        uid: s.user?.uid,
        audiences: s.audiences,
        error: s.error,
      };
    },

    async canI(q: AccessQuery, signal) {
      const review = await call(
        () =>
          authz.createSelfSubjectAccessReview(
            {
              body: {
                apiVersion: 'authorization.k8s.io/v1',
                kind: 'SelfSubjectAccessReview',
                spec: {
                  resourceAttributes: {
                    verb: q.verb,
                    group: q.group,
                    resource: q.resource,
                    ...(q.namespace === undefined ? {} : { namespace: q.namespace }),
                    ...(q.name === undefined ? {} : { name: q.name }),
                  },
                },
              },
            },
            withSignal(signal),
          ),
        'SelfSubjectAccessReview',
      );
      const reason = review.status?.reason;
      return {
        allowed: review.status?.allowed === true && review.status.denied !== true,
        ...(reason === undefined || reason === '' ? {} : { reason }),
      };
    },

    async listOne(kind, namespace, name, signal) {
      const fieldSelector = `metadata.name=${name}`;
      const opts = withSignal(signal);
      const list =
        kind === 'secrets'
          ? await call(
              () => core.listNamespacedSecret({ namespace, fieldSelector }, opts),
              `list secrets ${namespace}/${name}`,
            )
          : await call(
              () => core.listNamespacedConfigMap({ namespace, fieldSelector }, opts),
              `list configmaps ${namespace}/${name}`,
            );
      const item = (list.items as (V1Secret | V1ConfigMap)[]).find(
        (i) => i.metadata?.name === name,
      );
      return {
        object: item === undefined ? undefined : toKubeObject(kind, item),
        resourceVersion: list.metadata?.resourceVersion ?? '',
      };
    },

    async watchOne(kind, namespace, name, resourceVersion, onEvent, onEnd) {
      let ended = false;
      const end = (err: KubeApiError | undefined): void => {
        if (ended) return;
        ended = true;
        onEnd(err);
      };
      const controller = await watcher.watch(
        `/api/v1/namespaces/${encodeURIComponent(namespace)}/${kind}`,
        {
          fieldSelector: `metadata.name=${name}`,
          resourceVersion,
          allowWatchBookmarks: true,
        },
        (type: string, obj: unknown) => {
          if (ended) return;
          const event = toWatchEvent(kind, type, obj);
          if (event instanceof KubeApiError) {
            end(event);
            abort();
          } else if (event !== undefined) onEvent(event);
        },
        (err: unknown) => {
          aborts.delete(abort);
          end(err === null || err === undefined ? undefined : toKubeError(err, 'watch'));
        },
      );
      const abort = (): void => {
        aborts.delete(abort);
        ended = true;
        controller.abort();
      };
      aborts.add(abort);
      return abort;
    },

    async recordEvent(name, e: EventRecord, signal) {
      const opts = withSignal(signal);
      const namespace = e.namespace;
      const body: CoreV1Event = {
        apiVersion: 'v1',
        kind: 'Event',
        metadata: { name, namespace },
        involvedObject: e.involvedObject,
        type: e.type,
        reason: e.reason,
        message: e.message,
        source: { component: e.component, host: e.instance },
        reportingComponent: e.component,
        reportingInstance: e.instance,
        count: e.count,
        firstTimestamp: e.firstTimestamp,
        lastTimestamp: e.lastTimestamp,
      };
      if (e.count <= 1) {
        await call(
          () => core.createNamespacedEvent({ namespace, body }, opts),
          `create event ${namespace}/${name}`,
        );
        return;
      }
      // A repeat of a recorded event: one object with a growing count, as kubectl shows it. A
      // merge patch of the changing fields, so the CA needs create and patch on Events only.
      try {
        await call(
          () =>
            core.patchNamespacedEvent(
              {
                name,
                namespace,
                body: {
                  count: e.count,
                  message: e.message,
                  lastTimestamp: e.lastTimestamp.toISOString(),
                },
              },
              setHeaderOptions('Content-Type', PatchStrategy.MergePatch, withSignal(signal)),
            ),
          `patch event ${namespace}/${name}`,
        );
      } catch (err) {
        // The first write of this series was dropped (rate limit, outage): create it now.
        if (!(err instanceof KubeApiError) || err.status !== 404) throw err;
        await call(
          () => core.createNamespacedEvent({ namespace, body }, opts),
          `create event ${namespace}/${name}`,
        );
      }
    },

    async connection() {
      const o: https.RequestOptions = {};
      await kc.applyToHTTPSOptions(o);
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(o.headers ?? {})) {
        if (typeof v === 'string') headers[k] = v;
      }
      const caPem = o.ca === undefined ? undefined : [o.ca].flat().map(String).join('\n');
      const { cert, key } = o;
      return {
        server,
        ...(caPem === undefined ? {} : { caPem }),
        ...(cert !== undefined && key !== undefined
          ? { clientCert: { cert: cert as string | Buffer, key: key as string | Buffer } }
          : {}),
        headers,
      };
    },

    async oidcIssuer(signal) {
      const text = await call(
        () => wellKnown.getServiceAccountIssuerOpenIDConfiguration({}, withSignal(signal)),
        'GET /.well-known/openid-configuration',
      );
      let doc: unknown = text;
      if (typeof text === 'string') {
        try {
          doc = JSON.parse(text);
        } catch {
          throw new KubeApiError(200, 'BadResponse', 'OIDC discovery document is not JSON');
        }
      }
      const issuer = (doc as { issuer?: unknown } | null)?.issuer;
      if (typeof issuer !== 'string' || issuer === '') {
        throw new KubeApiError(200, 'BadResponse', 'OIDC discovery document names no issuer');
      }
      return issuer;
    },

    close() {
      for (const abort of [...aborts]) abort();
    },
  };
}

/** Per-call options carrying an abort signal (client-node puts it on the fetch). */
function withSignal(signal: AbortSignal): ConfigurationOptions {
  return {
    middleware: [
      {
        pre: (ctx) => {
          ctx.setSignal(signal);
          return new Observable(Promise.resolve(ctx));
        },
        post: (ctx) => new Observable(Promise.resolve(ctx)),
      },
    ],
    middlewareMergeStrategy: 'append',
  };
}

async function call<T>(fn: () => Promise<T>, what: string): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw toKubeError(err, what);
  }
}

/**
 * Any failure as a KubeApiError: an API Status (status code, reason, message), or status 0 for
 * a failure with no response (refused, reset, timed out, aborted).
 */
function toKubeError(err: unknown, what: string): KubeApiError {
  if (err instanceof KubeApiError) return err;
  if (err instanceof ApiException) {
    return statusError(err.code, err.body as unknown, what, err);
  }
  const statusCode = (err as { statusCode?: unknown }).statusCode;
  if (typeof statusCode === 'number') {
    return new KubeApiError(statusCode, 'Watch', `${what}: HTTP ${statusCode}`, { cause: err });
  }
  const e = err as { name?: string; code?: string; message?: string };
  const detail =
    e.name === 'AbortError' || e.name === 'TimeoutError'
      ? 'timed out or aborted'
      : (e.code ?? e.message ?? String(err));
  return new KubeApiError(0, 'Unavailable', `${what}: ${detail}`, { cause: err });
}

function statusError(code: number, body: unknown, what: string, cause?: unknown): KubeApiError {
  let parsed: unknown = body;
  if (typeof body === 'string') {
    try {
      parsed = JSON.parse(body);
    } catch {
      parsed = undefined;
    }
  }
  const status = (parsed ?? {}) as { reason?: unknown; message?: unknown };
  const reason = typeof status.reason === 'string' ? status.reason : `HTTP${code}`;
  const message = typeof status.message === 'string' ? status.message : `HTTP ${code}`;
  return new KubeApiError(code, reason, `${what}: ${message}`, { cause });
}

function toWatchEvent(
  kind: WatchedKind,
  type: string,
  obj: unknown,
): WatchEvent | KubeApiError | undefined {
  switch (type) {
    case 'ADDED':
    case 'MODIFIED':
    case 'DELETED':
      return { type, object: toKubeObject(kind, obj as V1Secret | V1ConfigMap) };
    case 'BOOKMARK':
      return {
        type,
        resourceVersion:
          (obj as { metadata?: { resourceVersion?: string } }).metadata?.resourceVersion ?? '',
      };
    case 'ERROR': {
      const s = obj as { code?: number; reason?: string; message?: string };
      if (s.code === 410) return { type: 'GONE' };
      return new KubeApiError(
        s.code ?? 500,
        s.reason ?? 'WatchError',
        `watch ${kind}: ${s.message ?? 'error event'}`,
      );
    }
    default:
      return undefined;
  }
}

function toKubeObject(kind: WatchedKind, item: V1Secret | V1ConfigMap): KubeObject {
  const meta = item.metadata ?? {};
  const data: Record<string, string> = {};
  if (kind === 'secrets') {
    for (const [k, v] of Object.entries((item as V1Secret).data ?? {})) {
      data[k] = Buffer.from(v, 'base64').toString('utf8');
    }
  } else {
    Object.assign(data, (item as V1ConfigMap).data ?? {});
  }
  return {
    name: meta.name ?? '',
    namespace: meta.namespace ?? '',
    uid: meta.uid ?? '',
    resourceVersion: meta.resourceVersion ?? '',
    type: kind === 'secrets' ? (item as V1Secret).type : undefined,
    data,
  };
}
