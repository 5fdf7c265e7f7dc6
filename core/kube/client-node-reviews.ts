/**
 * The CA's typed calls of the client adapter: TokenReview, SelfSubjectAccessReview, Events and
 * OIDC discovery.
 */
import {
  AuthenticationV1Api,
  CoreV1Api,
  AuthorizationV1Api,
  PatchStrategy,
  WellKnownApi,
  setHeaderOptions,
} from '@kubernetes/client-node';
import type { CoreV1Event, KubeConfig } from '@kubernetes/client-node';
import type { EventRecord, KubeClient } from './api.js';
import { KubeApiError } from './api.js';
import { call, withSignal } from './client-node-call.js';

/** TokenReview, SelfSubjectAccessReview, Events and OIDC discovery: the CA's typed calls. */
export function reviewsAndEvents(
  kc: KubeConfig,
): Pick<KubeClient, 'createTokenReview' | 'canI' | 'recordEvent' | 'oidcIssuer'> {
  const core = kc.makeApiClient(CoreV1Api);
  const authn = kc.makeApiClient(AuthenticationV1Api);
  const authz = kc.makeApiClient(AuthorizationV1Api);
  const wellKnown = kc.makeApiClient(WellKnownApi);
  return {
    async createTokenReview(token, audiences, signal) {
      const body = {
        apiVersion: 'authentication.k8s.io/v1',
        kind: 'TokenReview',
        spec: { token, audiences: [...audiences] },
      };
      const review = await call(
        () => authn.createTokenReview({ body }, withSignal(signal)),
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

    async canI(q, signal) {
      const resourceAttributes = {
        verb: q.verb,
        group: q.group,
        resource: q.resource,
        ...(q.namespace === undefined ? {} : { namespace: q.namespace }),
        ...(q.name === undefined ? {} : { name: q.name }),
      };
      const body = {
        apiVersion: 'authorization.k8s.io/v1',
        kind: 'SelfSubjectAccessReview',
        spec: { resourceAttributes },
      };
      const review = await call(
        () => authz.createSelfSubjectAccessReview({ body }, withSignal(signal)),
        'SelfSubjectAccessReview',
      );
      const reason = review.status?.reason;
      return {
        allowed: review.status?.allowed === true && review.status.denied !== true,
        ...(reason === undefined || reason === '' ? {} : { reason }),
      };
    },

    recordEvent: (name, e, signal) => recordEvent(core, name, e, signal),

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
  };
}

/** Creates a core/v1 Event, or adds to the count of the one named `name` (see KubeClient). */
async function recordEvent(
  core: CoreV1Api,
  name: string,
  e: EventRecord,
  signal: AbortSignal,
): Promise<void> {
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
  const create = (): Promise<unknown> =>
    call(
      () => core.createNamespacedEvent({ namespace, body }, withSignal(signal)),
      `create event ${namespace}/${name}`,
    );
  if (e.count <= 1) {
    await create();
    return;
  }
  // A repeat of a recorded event: one object with a growing count, as kubectl shows it. A
  // merge patch of the changing fields, so the CA needs create and patch on Events only.
  const patch = {
    count: e.count,
    message: e.message,
    lastTimestamp: e.lastTimestamp.toISOString(),
  };
  try {
    await call(
      () =>
        core.patchNamespacedEvent(
          { name, namespace, body: patch },
          setHeaderOptions('Content-Type', PatchStrategy.MergePatch, withSignal(signal)),
        ),
      `patch event ${namespace}/${name}`,
    );
  } catch (err) {
    // The first write of this series was dropped (rate limit, outage): create it now.
    if (!(err instanceof KubeApiError) || err.status !== 404) throw err;
    await create();
  }
}
