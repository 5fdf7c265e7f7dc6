/**
 * How `meshid check --kubeconfig` reaches the cluster: core's one Kubernetes client, each call
 * with a deadline and its failure as a plain message; the names of what meshid installs; and the
 * parts of the API objects the checks read.
 */
import { KubeApiError } from '../../core/index.js';
import type { KubeClient } from '../../core/index.js';

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

export interface WebhookNames {
  readonly kind: 'mutating' | 'validating';
  readonly config: string;
  readonly webhook: string;
}

/** The parts of a Pod the checks read, as the API serves it. */
export interface Pod {
  readonly metadata?: {
    readonly name?: string;
    readonly namespace?: string;
    readonly labels?: Readonly<Record<string, string>>;
    readonly annotations?: Readonly<Record<string, string>>;
  };
  readonly spec?: { readonly initContainers?: readonly { readonly name: string }[] };
  readonly status?: { readonly phase?: string; readonly podIP?: string };
}

/** The parts of a Deployment the checks read. */
export interface Deployment {
  readonly spec?: {
    readonly replicas?: number;
    readonly template?: {
      readonly spec?: {
        readonly serviceAccountName?: string;
        readonly containers?: readonly { readonly args?: readonly string[] }[];
      };
    };
  };
  readonly status?: { readonly readyReplicas?: number };
}

/** A ConfigMap's or a Secret's data (a Secret's is base64). */
export interface DataObject {
  readonly metadata?: { readonly annotations?: Readonly<Record<string, string>> };
  readonly data?: Readonly<Record<string, string>>;
}

/** What a read resolves with: the object, undefined when it does not exist, or what failed. */
export type Read<T> = T | undefined | Error;

/** The API calls the cluster checks make, each with a deadline. */
export class Cluster {
  constructor(
    readonly kube: Pick<KubeClient, 'get' | 'list' | 'create'>,
    readonly timeoutMs: number,
  ) {}

  /** Runs one call; resolves with its result, or an Error saying what went wrong. */
  async call<T>(what: string, fn: (signal: AbortSignal) => Promise<T>): Promise<T | Error> {
    const signal = AbortSignal.timeout(this.timeoutMs);
    const late = new Promise<never>((_, reject) =>
      signal.addEventListener(
        'abort',
        () => reject(new Error(`${what}: no answer within ${this.timeoutMs} ms`)),
        { once: true },
      ),
    );
    try {
      return await Promise.race([fn(signal), late]);
    } catch (err) {
      if (err instanceof KubeApiError && err.status > 0)
        return new Error(`${err.message} (HTTP ${err.status})`, { cause: err });
      return err instanceof Error ? err : new Error(`${what}: ${String(err)}`);
    } finally {
      late.catch(() => undefined);
    }
  }

  /** Reads one object (`namespace` '' for a cluster-scoped one). */
  read<T>(apiVersion: string, kind: string, namespace: string, name: string): Promise<Read<T>> {
    const what = `${kind} ${namespace === '' ? '' : `${namespace}/`}${name}`;
    return this.call(what, () => this.kube.get(apiVersion, kind, namespace, name)) as Promise<
      Read<T>
    >;
  }
}

/** A base64 field of an object (a Secret's data, a caBundle) as text. */
export const b64 = (s: string | undefined): string | undefined =>
  s === undefined ? undefined : Buffer.from(s, 'base64').toString('utf8');
