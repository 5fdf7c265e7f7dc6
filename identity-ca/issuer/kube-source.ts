/**
 * Issuer and trust anchors from the Kubernetes API: the issuer Secret (`kubernetes.io/tls` as
 * cert-manager writes it, or Linkerd's `linkerd.io/tls`) and the anchors ConfigMap, each listed
 * and then watched by name.
 *
 * Both are read with a `metadata.name` field selector, so RBAC can restrict the CA to these two
 * objects with `resourceNames`. Each is followed by core's one list + watch loop (`watchList`:
 * resume, relist on 410 Gone, jittered backoff while the API server is away); meanwhile the last
 * good pair stays in use.
 * Every change goes to the {@link IssuerStore}, which validates issuer and anchors as a pair and
 * keeps the last good one, exactly as for files. A deleted Secret or ConfigMap is logged and
 * ignored: the CA keeps issuing from what it has.
 */
import { LogKey, MeshidError } from '../../core/index.js';
import type { KubeResource, Logger, WatchListEvent } from '../../core/index.js';
import type { KubeApi, KubeObject, WatchedKind } from '../kube/api.js';
import type { IssuerCredentials, IssuerMaterial } from './material.js';
import type { ApplyResult, IssuerStore } from './store.js';

/** What a {@link KubeIssuerSource} needs. */
interface KubeIssuerSourceOptions {
  readonly api: Pick<KubeApi, 'list' | 'watchList' | 'server'>;
  readonly namespace: string;
  readonly secretName: string;
  readonly configMapName: string;
  /** Key of the PEM bundle in the ConfigMap (`ca-bundle.crt`). */
  readonly anchorsKey: string;
  readonly store: IssuerStore;
  readonly logger: Logger;
  /** Told when a Secret or ConfigMap went away (the CA records an Event). */
  readonly onDeleted?: (kind: WatchedKind, name: string) => void;
  /** First and longest wait before retrying after an API error; default 500 ms and 30 s. */
  readonly backoffMs?: { readonly min: number; readonly max: number };
  /** Time allowed for a list; default 10 s. */
  readonly timeoutMs?: number;
}

/** Key names inside the two issuer Secret schemes. */
const SCHEMES = {
  'kubernetes.io/tls': { crt: 'tls.crt', key: 'tls.key', ca: 'ca.crt' },
  'linkerd.io/tls': { crt: 'crt.pem', key: 'key.pem', ca: undefined },
} as const;

/**
 * Reads issuer material out of a Secret. Throws ERR_ISSUER_INVALID naming the missing key.
 */
export function issuerMaterialFromSecret(secret: KubeObject): IssuerMaterial {
  const where = `Secret ${secret.namespace}/${secret.name}`;
  const type = secret.type ?? '';
  // cert-manager writes kubernetes.io/tls; an Opaque Secret holding the same keys is accepted too.
  const scheme =
    type === 'linkerd.io/tls' || (!('tls.crt' in secret.data) && 'crt.pem' in secret.data)
      ? SCHEMES['linkerd.io/tls']
      : SCHEMES['kubernetes.io/tls'];
  const crt = secret.data[scheme.crt];
  const key = secret.data[scheme.key];
  if (crt === undefined || crt.trim() === '' || key === undefined || key.trim() === '') {
    throw new MeshidError(
      'ERR_ISSUER_INVALID',
      `${where} (type ${type === '' ? 'unset' : type}) lacks ${crt === undefined || crt.trim() === '' ? scheme.crt : scheme.key}: an issuer Secret holds ${scheme.crt} and ${scheme.key}`,
    );
  }
  const ca = scheme.ca === undefined ? undefined : secret.data[scheme.ca];
  return ca === undefined || ca.trim() === ''
    ? { tlsCrt: crt, tlsKey: key }
    : { tlsCrt: crt, tlsKey: key, caCrt: ca };
}

/**
 * Loads the issuer and anchors from the API into an {@link IssuerStore} and keeps them current.
 *
 * @example
 * ```ts
 * const source = new KubeIssuerSource({ api, namespace: 'linkerd',
 *   secretName: 'linkerd-identity-issuer', configMapName: 'linkerd-identity-trust-roots',
 *   anchorsKey: 'ca-bundle.crt', store, logger });
 * await source.start(); // throws when the objects are missing or invalid
 * ```
 */
export class KubeIssuerSource {
  readonly #o: KubeIssuerSourceOptions;
  readonly #log: Logger;
  readonly #latest: { secrets?: KubeObject | undefined; configmaps?: KubeObject | undefined } = {};
  readonly #stop = new AbortController();
  readonly #loops: Promise<void>[] = [];
  #pending: Promise<unknown> = Promise.resolve();
  #started = false;

  constructor(options: KubeIssuerSourceOptions) {
    this.#o = options;
    this.#log = options.logger;
  }

  /** The objects' names, for messages. */
  get #names(): string {
    const { namespace: ns, secretName, configMapName } = this.#o;
    return `Secret ${ns}/${secretName}, ConfigMap ${ns}/${configMapName}`;
  }

  /**
   * Lists both objects and applies them, and keeps watching them. Throws (the CA refuses to
   * start) when either object is missing, unreadable or the pair is invalid.
   */
  async start(): Promise<IssuerCredentials> {
    try {
      const [secret, configMap] = await Promise.all([
        this.#follow('secrets', this.#o.secretName),
        this.#follow('configmaps', this.#o.configMapName),
      ]);
      this.#latest.secrets = secret;
      this.#latest.configmaps = configMap;
      const result = await this.#apply('start');
      if (result.status === 'rejected') {
        throw new MeshidError(result.error.code, `${result.error.message} (${this.#names})`, {
          cause: result.error,
        });
      }
      this.#started = true;
      return result.credentials;
    } catch (err) {
      await this.close();
      throw err;
    }
  }

  /** Re-lists both objects now and applies them (SIGHUP). */
  async reload(): Promise<ApplyResult> {
    try {
      const [s, c] = await Promise.all([
        this.#list('secrets', this.#o.secretName),
        this.#list('configmaps', this.#o.configMapName),
      ]);
      if (s !== undefined) this.#latest.secrets = s;
      if (c !== undefined) this.#latest.configmaps = c;
    } catch (err) {
      const error =
        err instanceof MeshidError
          ? err
          : new MeshidError('ERR_ISSUER_INVALID', String(err), { cause: err });
      return { status: 'rejected', error, current: this.#o.store.current() };
    }
    return this.#apply('reload');
  }

  /** Stops the watches and waits for an apply in progress. */
  async close(): Promise<void> {
    this.#stop.abort();
    await Promise.all(this.#loops);
    await this.#pending;
  }

  /** What `kind` is called in messages, and the code of its failures. */
  #what(
    kind: WatchedKind,
    name: string,
  ): { text: string; code: 'ERR_ISSUER_INVALID' | 'ERR_ANCHORS_INVALID' } {
    return kind === 'secrets'
      ? { text: `issuer Secret ${this.#o.namespace}/${name}`, code: 'ERR_ISSUER_INVALID' }
      : {
          text: `trust-anchor ConfigMap ${this.#o.namespace}/${name}`,
          code: 'ERR_ANCHORS_INVALID',
        };
  }

  async #list(kind: WatchedKind, name: string): Promise<KubeObject | undefined> {
    try {
      const items = await this.#o.api.list(
        'v1',
        KINDS[kind],
        this.#o.namespace,
        undefined,
        `metadata.name=${name}`,
        AbortSignal.timeout(this.#o.timeoutMs ?? 10_000),
      );
      return objectNamed(items, name);
    } catch (err) {
      const { text, code } = this.#what(kind, name);
      throw new MeshidError(code, `cannot read ${text}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  /** Validates the latest pair, one apply at a time. */
  #apply(reason: string): Promise<ApplyResult> {
    const run = this.#pending.then(() => this.#applyNow(reason));
    this.#pending = run.catch(() => undefined);
    return run;
  }

  async #applyNow(reason: string): Promise<ApplyResult> {
    const secret = this.#latest.secrets;
    const configMap = this.#latest.configmaps;
    const source = `kubernetes (${reason}): ${this.#names}`;
    let material: IssuerMaterial;
    let anchors: string;
    try {
      if (secret === undefined || configMap === undefined) {
        throw new MeshidError('ERR_ISSUER_INVALID', `not found: ${this.#names}`);
      }
      material = issuerMaterialFromSecret(secret);
      const bundle = configMap.data[this.#o.anchorsKey];
      if (bundle === undefined || bundle.trim() === '') {
        throw new MeshidError(
          'ERR_ANCHORS_INVALID',
          `ConfigMap ${configMap.namespace}/${configMap.name} has no "${this.#o.anchorsKey}" key`,
        );
      }
      anchors = bundle;
    } catch (err) {
      const error = err as MeshidError;
      if (reason === 'start') throw error;
      return this.#o.store.reject(error, source);
    }
    return this.#o.store.apply(material, anchors, source);
  }

  /**
   * Follows one object with core's list + watch loop. Resolves with the first list's object;
   * rejects when the first list fails or finds nothing (the loop is then stopped by close()).
   */
  #follow(kind: WatchedKind, name: string): Promise<KubeObject> {
    const { text, code } = this.#what(kind, name);
    return new Promise((resolve, reject) => {
      let first = true;
      const changed = (object: KubeObject, why: string): void => {
        const prev = this.#latest[kind];
        if (prev !== undefined && prev.resourceVersion === object.resourceVersion) return;
        this.#latest[kind] = object;
        if (!this.#started) return;
        this.#apply(why).catch((err: unknown) =>
          this.#log.error({ err }, 'applying issuer material failed'),
        );
      };
      const onEvent = (event: WatchListEvent<KubeResource>): void => {
        if (event.type === 'SYNC') {
          const object = objectNamed(event.items, name);
          if (first) {
            first = false;
            if (object === undefined)
              reject(new MeshidError(code, `${text} not found at ${this.#o.api.server}`));
            else resolve(object);
          } else if (object === undefined) this.#deleted(kind, name);
          else changed(object, 'relist');
        } else if (event.object.metadata.name === name) {
          if (event.type === 'DELETED') this.#deleted(kind, name);
          else changed(kubeObjectOf(event.object), 'watch');
        }
      };
      const loop = this.#o.api.watchList({
        kind: KINDS[kind],
        namespace: this.#o.namespace,
        fieldSelector: `metadata.name=${name}`,
        signal: this.#stop.signal,
        listTimeoutMs: this.#o.timeoutMs ?? 10_000,
        ...(this.#o.backoffMs === undefined ? {} : { backoffMs: this.#o.backoffMs }),
        onEvent,
        onRetry: (err) => {
          if (first) {
            first = false;
            reject(new MeshidError(code, `cannot read ${text}: ${err.message}`, { cause: err }));
            return;
          }
          this.#log.warn(
            { [LogKey.reason]: err.message, kind, name },
            'issuer watch failed; retrying',
          );
        },
      });
      this.#loops.push(loop);
    });
  }

  #deleted(kind: WatchedKind, name: string): void {
    this.#log.warn(
      { [LogKey.event]: 'IssuerUpdateSkipped', kind, name, namespace: this.#o.namespace },
      `${kind === 'secrets' ? 'issuer Secret' : 'trust-anchor ConfigMap'} was deleted; keeping the last good issuer`,
    );
    this.#o.onDeleted?.(kind, name);
  }
}

const KINDS = { secrets: 'Secret', configmaps: 'ConfigMap' } as const;

/** The object of this name in a list, decoded. */
function objectNamed(items: readonly KubeResource[], name: string): KubeObject | undefined {
  const item = items.find((i) => i.metadata.name === name);
  return item === undefined ? undefined : kubeObjectOf(item);
}

/** A Secret or ConfigMap as the issuer source reads it (Secret data base64-decoded). */
function kubeObjectOf(item: KubeResource): KubeObject {
  const meta = item.metadata;
  const raw = (item['data'] ?? {}) as Record<string, string>;
  const secret = item.kind === 'Secret';
  const data: Record<string, string> = {};
  for (const [k, v] of Object.entries(raw))
    data[k] = secret ? Buffer.from(v, 'base64').toString('utf8') : v;
  return {
    name: meta.name,
    namespace: meta.namespace ?? '',
    uid: meta.uid ?? '',
    resourceVersion: meta.resourceVersion ?? '',
    type: secret ? (item['type'] as string | undefined) : undefined,
    data,
  };
}
