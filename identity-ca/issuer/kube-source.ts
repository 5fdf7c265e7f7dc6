/**
 * Issuer and trust anchors from the Kubernetes API: the issuer Secret (`kubernetes.io/tls` as
 * cert-manager writes it, or Linkerd's `linkerd.io/tls`) and the anchors ConfigMap, each listed
 * and then watched by name.
 *
 * Both are read with a `metadata.name` field selector, so RBAC can restrict the CA to these two
 * objects with `resourceNames`. A watch that ends is resumed from the last resourceVersion seen; a
 * watch the server refuses as too old (410 Gone) is replaced by a fresh list; an error (the API
 * server away) is retried with jittered, capped backoff. Meanwhile the last good pair stays in use.
 * Every change goes to the {@link IssuerStore}, which validates issuer and anchors as a pair and
 * keeps the last good one, exactly as for files. A deleted Secret or ConfigMap is logged and
 * ignored: the CA keeps issuing from what it has.
 */
import { LogKey, MeshidError } from '../../core/index.js';
import type { Logger } from '../../core/index.js';
import type { KubeApi, KubeObject, WatchedKind } from '../kube/api.js';
import { KubeApiError } from '../kube/api.js';
import type { IssuerCredentials, IssuerMaterial } from './material.js';
import type { ApplyResult, IssuerStore } from './store.js';

/** What a {@link KubeIssuerSource} needs. */
export interface KubeIssuerSourceOptions {
  readonly api: Pick<KubeApi, 'listOne' | 'watchOne' | 'server'>;
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
 *
 * @example
 * ```ts
 * issuerMaterialFromSecret({ type: 'kubernetes.io/tls', data: { 'tls.crt': pem, 'tls.key': key }, ... });
 * ```
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
  readonly #stops: (() => void)[] = [];
  readonly #timers = new Set<NodeJS.Timeout>();
  #pending: Promise<unknown> = Promise.resolve();
  #closed = false;

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
   * Lists both objects and applies them, then starts the watches. Throws (the CA refuses to
   * start) when either object is missing, unreadable or the pair is invalid.
   */
  async start(): Promise<IssuerCredentials> {
    try {
      const [secret, configMap] = await Promise.all([
        this.#listInitial('secrets', this.#o.secretName),
        this.#listInitial('configmaps', this.#o.configMapName),
      ]);
      this.#latest.secrets = secret.object;
      this.#latest.configmaps = configMap.object;
      const result = await this.#apply('start');
      if (result.status === 'rejected') {
        throw new MeshidError(result.error.code, `${result.error.message} (${this.#names})`, {
          cause: result.error,
        });
      }
      this.#follow('secrets', this.#o.secretName, secret.resourceVersion);
      this.#follow('configmaps', this.#o.configMapName, configMap.resourceVersion);
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
      if (s.object !== undefined) this.#latest.secrets = s.object;
      if (c.object !== undefined) this.#latest.configmaps = c.object;
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
    this.#closed = true;
    for (const stop of this.#stops.splice(0)) stop();
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    await this.#pending;
  }

  async #listInitial(
    kind: WatchedKind,
    name: string,
  ): Promise<{ object: KubeObject; resourceVersion: string }> {
    const { object, resourceVersion } = await this.#list(kind, name);
    if (object === undefined) {
      const what = kind === 'secrets' ? 'issuer Secret' : 'trust-anchor ConfigMap';
      throw new MeshidError(
        kind === 'secrets' ? 'ERR_ISSUER_INVALID' : 'ERR_ANCHORS_INVALID',
        `${what} ${this.#o.namespace}/${name} not found at ${this.#o.api.server}`,
      );
    }
    return { object, resourceVersion };
  }

  async #list(
    kind: WatchedKind,
    name: string,
  ): Promise<{ object: KubeObject | undefined; resourceVersion: string }> {
    try {
      return await this.#o.api.listOne(
        kind,
        this.#o.namespace,
        name,
        AbortSignal.timeout(this.#o.timeoutMs ?? 10_000),
      );
    } catch (err) {
      const what = kind === 'secrets' ? 'issuer Secret' : 'trust-anchor ConfigMap';
      throw new MeshidError(
        kind === 'secrets' ? 'ERR_ISSUER_INVALID' : 'ERR_ANCHORS_INVALID',
        `cannot read ${what} ${this.#o.namespace}/${name}: ${err instanceof KubeApiError ? err.message : String(err)}`,
        { cause: err },
      );
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

  /** Watches one object for good: resume, relist on 410, back off on errors. */
  #follow(kind: WatchedKind, name: string, fromVersion: string): void {
    let version = fromVersion;
    let failures = 0;
    const { min, max } = this.#o.backoffMs ?? { min: 500, max: 30_000 };

    const later = (ms: number, fn: () => void): void => {
      if (this.#closed) return;
      const t = setTimeout(() => {
        this.#timers.delete(t);
        if (!this.#closed) fn();
      }, ms);
      t.unref();
      this.#timers.add(t);
    };
    const retry = (): void => {
      failures++;
      const cap = Math.min(max, min * 2 ** Math.min(failures - 1, 16));
      // Full jitter keeps replicas that lost the API server together from returning together.
      later(cap / 2 + Math.random() * (cap / 2), () => void relist());
    };
    const changed = (object: KubeObject | undefined, why: string): void => {
      if (object === undefined) return;
      const prev = this.#latest[kind];
      if (prev !== undefined && prev.resourceVersion === object.resourceVersion) return;
      this.#latest[kind] = object;
      this.#apply(why).catch((err: unknown) =>
        this.#log.error({ err }, 'applying issuer material failed'),
      );
    };
    const relist = async (): Promise<void> => {
      try {
        const { object, resourceVersion } = await this.#list(kind, name);
        if (this.#closed) return;
        version = resourceVersion;
        if (object === undefined) this.#deleted(kind, name);
        changed(object, 'relist');
        await watch();
      } catch (err) {
        this.#log.warn(
          { [LogKey.reason]: err instanceof Error ? err.message : String(err), kind, name },
          'cannot list issuer object; retrying',
        );
        retry();
      }
    };
    const watch = async (): Promise<void> => {
      if (this.#closed) return;
      let stop: (() => void) | undefined;
      try {
        stop = await this.#o.api.watchOne(
          kind,
          this.#o.namespace,
          name,
          version,
          (event) => {
            switch (event.type) {
              case 'ADDED':
              case 'MODIFIED':
                failures = 0;
                version = event.object.resourceVersion;
                changed(event.object, 'watch');
                break;
              case 'DELETED':
                version = event.object.resourceVersion;
                this.#deleted(kind, name);
                break;
              case 'BOOKMARK':
                if (event.resourceVersion !== '') version = event.resourceVersion;
                break;
              case 'GONE':
                // Our version fell out of the server's history: start again from a list.
                version = '';
                break;
            }
          },
          (err) => {
            const i = stop === undefined ? -1 : this.#stops.indexOf(stop);
            if (i >= 0) this.#stops.splice(i, 1);
            if (this.#closed) return;
            if (err !== undefined) {
              this.#log.warn(
                { [LogKey.reason]: err.message, kind, name },
                'issuer watch failed; retrying',
              );
              retry();
            } else if (version === '') {
              void relist();
            } else {
              // The server ended the watch (its timeout): resume where we were.
              failures = 0;
              later(0, () => void watch());
            }
          },
        );
        if (this.#closed) stop();
        else this.#stops.push(stop);
      } catch (err) {
        this.#log.warn(
          { [LogKey.reason]: err instanceof Error ? err.message : String(err), kind, name },
          'cannot watch issuer object; retrying',
        );
        retry();
      }
    };
    void watch();
  }

  #deleted(kind: WatchedKind, name: string): void {
    this.#log.warn(
      { [LogKey.event]: 'IssuerUpdateSkipped', kind, name, namespace: this.#o.namespace },
      `${kind === 'secrets' ? 'issuer Secret' : 'trust-anchor ConfigMap'} was deleted; keeping the last good issuer`,
    );
    this.#o.onDeleted?.(kind, name);
  }
}
