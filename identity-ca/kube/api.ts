/**
 * The narrow view of the Kubernetes API the CA needs: a slice of core's {@link KubeClient}, the
 * one adapter to the client library. The CA's logic (token reviews and their cache, the issuer
 * watch, Events) is written against it, and tests can fake any of it.
 *
 * Errors: every method rejects with a {@link KubeApiError}, never with the client library's own
 * exception, so an HTTP status can never leak onto the gRPC wire as a status code.
 */
import type { KubeClient } from '../../core/index.js';

export { KubeApiError } from '../../core/index.js';
export type {
  AccessQuery,
  ApiConnection,
  EventRecord,
  TokenReviewResult,
} from '../../core/index.js';

/** A Secret or ConfigMap as the issuer source needs it: decoded data and its version. */
export interface KubeObject {
  readonly name: string;
  readonly namespace: string;
  readonly uid: string;
  readonly resourceVersion: string;
  /** Secret type (`kubernetes.io/tls`, `linkerd.io/tls`, …); undefined for a ConfigMap. */
  readonly type?: string | undefined;
  /** Keys to text (Secret data is base64-decoded). */
  readonly data: Readonly<Record<string, string>>;
}

/** The kinds of object the CA reads. */
export type WatchedKind = 'secrets' | 'configmaps';

/**
 * The API calls the CA makes.
 *
 * @example
 * ```ts
 * const result = await api.createTokenReview(token, ['identity.l5d.io'], AbortSignal.timeout(5000));
 * ```
 */
export type KubeApi = Pick<
  KubeClient,
  | 'server'
  | 'createTokenReview'
  | 'canI'
  | 'list'
  | 'get'
  | 'create'
  | 'replace'
  | 'delete'
  | 'replaceStatus'
  | 'watchList'
  | 'recordEvent'
  | 'connection'
  | 'oidcIssuer'
  | 'close'
>;
