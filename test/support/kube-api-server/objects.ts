/**
 * The storage verbs with the real API's semantics on top of the store: defaulting, validation,
 * generateName, optimistic concurrency, status subresources, generation, finalizers, namespace
 * lifecycle. Both the HTTP handlers and the programmatic helpers go through here.
 */
import { randomUUID, randomInt } from 'node:crypto';
import { parse as parseYaml } from 'yaml';
import { checkApply, checkBody, checkPatch } from './field-validation.js';
import type { FieldCheck } from './field-validation.js';
import { validateLease } from './leases.js';
import { jsonPatch, mergePatch } from './patch.js';
import { apiVersionOf } from './resources.js';
import type { ResourceRegistry, ResourceType } from './resources.js';
import { parseFieldSelector, parseLabelSelector } from './selectors.js';
import {
  alreadyExists,
  badRequest,
  conflict,
  notFound,
  success,
  unsupportedMediaType,
} from './status.js';
import type { StatusBody } from './status.js';
import type { Store } from './store.js';
import { isObject } from './types.js';
import type { JsonObject, KubeObject } from './types.js';
import { isPodCertificateRequest, validatePodCertificateRequest } from './pod-certificates.js';
import { validatePodCertificateRequestStatus } from './pod-certificate-status.js';
import {
  checkMicroTimes,
  defaultAndValidatePod,
  normalizeSecret,
  validateConfigMap,
  validateEndpointSlice,
  validateEventsV1,
  validateMeta,
  validateSecret,
} from './validation.js';

/** Options of a list call. */
export interface ListOptions {
  readonly labelSelector?: string | undefined;
  readonly fieldSelector?: string | undefined;
  readonly limit?: number | undefined;
  readonly continue?: string | undefined;
}

/** A list answer before it is wrapped in a `XList`. */
export interface ListResult {
  readonly items: KubeObject[];
  readonly resourceVersion: string;
  readonly continue?: string;
  readonly remainingItemCount?: number;
}

/** Options of a write. */
export interface WriteOptions {
  /** `dryRun=All`: validate and answer, store nothing. */
  readonly dryRun?: boolean;
  /** The request's field validation (an HTTP write); programmatic writes are not checked. */
  readonly fields?: FieldCheck | undefined;
}

const NAMESPACE_TYPE = { group: '', plural: 'namespaces' } as const;
const GENERATE_ALPHABET = 'bcdfghjklmnpqrstvwxz2456789';

/** RFC 3339 with second precision, as metav1.Time is serialized. */
export function timestamp(ms: number): string {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace('.000Z', 'Z');
}

function withoutMetaAndStatus(o: KubeObject): JsonObject {
  const rest: JsonObject = { ...o };
  delete rest['metadata'];
  delete rest['status'];
  delete rest['apiVersion'];
  delete rest['kind'];
  return rest;
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

export interface ObjectsOptions {
  readonly now: () => number;
  /** Called after a namespace is created, to seed it (default ServiceAccount, root CA ConfigMap). */
  readonly onNamespaceCreated?: (name: string) => void;
}

export class Objects {
  constructor(
    private readonly store: Store,
    private readonly registry: ResourceRegistry,
    private readonly options: ObjectsOptions,
  ) {}

  /** Throws the real API's `namespaces "x" not found` when a namespaced write targets a missing namespace. */
  requireNamespace(namespace: string): void {
    const nsType = this.registry.byPlural('', 'v1', 'namespaces')!;
    if (this.store.get(nsType, '', namespace) === undefined)
      throw notFound(NAMESPACE_TYPE, namespace);
  }

  /** Decodes a request body against the type: kind, apiVersion, namespace agreement. */
  #decode(t: ResourceType, namespace: string, body: unknown): KubeObject {
    if (!isObject(body))
      throw badRequest(
        `${t.kind} in version "${t.version}" cannot be handled as a ${t.kind}: the body is not a JSON object`,
      );
    const obj = structuredClone(body) as KubeObject;
    const apiVersion = apiVersionOf(t);
    if (obj.apiVersion !== undefined && obj.apiVersion !== '' && obj.apiVersion !== apiVersion)
      throw badRequest(
        `the API version in the data (${String(obj.apiVersion)}) does not match the expected API version (${apiVersion})`,
      );
    if (obj.kind !== undefined && obj.kind !== '' && obj.kind !== t.kind)
      throw badRequest(
        `the kind in the data (${String(obj.kind)}) does not match the expected kind (${t.kind})`,
      );
    obj.apiVersion = apiVersion;
    obj.kind = t.kind;
    if (!isObject(obj.metadata)) obj.metadata = {};
    if (t.namespaced) {
      const bodyNs = obj.metadata.namespace ?? '';
      if (bodyNs !== '' && namespace !== '' && bodyNs !== namespace)
        throw badRequest(
          'the namespace of the provided object does not match the namespace sent on the request',
        );
      if (namespace !== '') obj.metadata.namespace = namespace;
    } else if (obj.metadata.namespace === '') {
      delete obj.metadata.namespace;
    }
    return obj;
  }

  /** Type-specific defaulting and validation; `old` is set on update. */
  #prepare(t: ResourceType, obj: KubeObject, old: KubeObject | undefined): void {
    checkMicroTimes(t, obj);
    if (t.group === '' && t.plural === 'secrets') {
      normalizeSecret(obj);
      validateSecret(obj, old);
    }
    if (t.group === '' && t.plural === 'configmaps') validateConfigMap(obj, old);
    if (t.group === '' && t.plural === 'pods' && old === undefined) defaultAndValidatePod(obj);
    if (t.group === '' && t.plural === 'namespaces') {
      obj['status'] = { phase: 'Active', ...(isObject(obj['status']) ? obj['status'] : {}) };
      obj.metadata.labels = {
        ...obj.metadata.labels,
        'kubernetes.io/metadata.name': obj.metadata.name ?? '',
      };
    }
    if (t.group === 'events.k8s.io') validateEventsV1(obj);
    if (isPodCertificateRequest(t)) validatePodCertificateRequest(t, obj, old);
    if (t.group === 'discovery.k8s.io' && t.plural === 'endpointslices')
      validateEndpointSlice(obj, old);
    if (t.group === 'coordination.k8s.io' && t.plural === 'leases') validateLease(t, obj);
    t.validate?.(t, obj, old);
  }

  create(t: ResourceType, namespace: string, body: unknown, opts: WriteOptions = {}): KubeObject {
    const obj = this.#decode(t, namespace, body);
    if (opts.fields !== undefined) checkBody(t, obj, opts.fields);
    const meta = obj.metadata;
    if ((meta.name ?? '') === '' && (meta.generateName ?? '') !== '') {
      let suffix = '';
      for (let i = 0; i < 5; i++) suffix += GENERATE_ALPHABET[randomInt(GENERATE_ALPHABET.length)];
      meta.name = meta.generateName!.slice(0, 58) + suffix;
    }
    validateMeta(t, obj);
    if (t.namespaced) this.requireNamespace(meta.namespace!);
    if (this.store.get(t, meta.namespace ?? '', meta.name!) !== undefined)
      throw alreadyExists(t, meta.name!);
    // Server-owned fields are never taken from the client.
    meta.uid = randomUUID();
    meta.creationTimestamp = timestamp(this.options.now());
    delete meta.resourceVersion;
    delete meta.deletionTimestamp;
    delete meta['deletionGracePeriodSeconds'];
    delete meta['selfLink'];
    if (t.generation === true) meta.generation = 1;
    else delete meta.generation;
    if (t.subresources?.includes('status') === true) delete obj['status'];
    this.#prepare(t, obj, undefined);
    if (opts.dryRun === true) return obj;
    const stored = this.store.put(t, obj);
    if (t.group === '' && t.plural === 'namespaces') this.options.onNamespaceCreated?.(meta.name!);
    return stored;
  }

  get(t: ResourceType, namespace: string, name: string): KubeObject {
    const o = this.store.get(t, t.namespaced ? namespace : '', name);
    if (o === undefined) throw notFound(t, name);
    return o;
  }

  /** Objects matching the selectors; `limit`/`continue` page through them (not snapshot-consistent). */
  list(t: ResourceType, namespace: string, opts: ListOptions = {}): ListResult {
    const labels = parseLabelSelector(opts.labelSelector);
    const fields = parseFieldSelector(opts.fieldSelector, t.fieldLabels ?? []);
    const rv = String(this.store.resourceVersion);
    let items = this.store
      .list(t, t.namespaced ? namespace : '')
      .filter((o) => labels(o) && fields(o));
    if (opts.continue !== undefined && opts.continue !== '') {
      let after: string;
      try {
        after = (
          JSON.parse(Buffer.from(opts.continue, 'base64url').toString('utf8')) as { k: string }
        ).k;
      } catch {
        throw badRequest('continue key is not valid: illegal base64 data at input byte 0');
      }
      items = items.filter((o) => `${o.metadata.namespace ?? ''}/${o.metadata.name ?? ''}` > after);
    }
    if (opts.limit !== undefined && opts.limit > 0 && items.length > opts.limit) {
      const page = items.slice(0, opts.limit);
      const last = page[page.length - 1]!;
      const k = `${last.metadata.namespace ?? ''}/${last.metadata.name ?? ''}`;
      return {
        items: page,
        resourceVersion: rv,
        continue: Buffer.from(JSON.stringify({ k, rv }), 'utf8').toString('base64url'),
        remainingItemCount: items.length - page.length,
      };
    }
    return { items, resourceVersion: rv };
  }

  /** PUT of the object or of its `status` subresource. */
  update(
    t: ResourceType,
    namespace: string,
    name: string,
    body: unknown,
    subresource: '' | 'status' = '',
    opts: WriteOptions = {},
  ): KubeObject {
    const incoming = this.#decode(t, t.namespaced ? namespace : '', body);
    if ((incoming.metadata.name ?? '') === '') incoming.metadata.name = name;
    if (incoming.metadata.name !== name)
      throw badRequest(
        `the name of the object (${incoming.metadata.name}) does not match the name on the URL (${name})`,
      );
    const old = this.store.get(t, t.namespaced ? namespace : '', name);
    if (old === undefined) {
      if (t.allowCreateOnUpdate === true && subresource === '')
        return this.create(t, namespace, incoming, opts);
      throw notFound(t, name);
    }
    if (opts.fields !== undefined) checkBody(t, incoming, opts.fields);
    return this.#replace(t, old, incoming, subresource, opts);
  }

  #replace(
    t: ResourceType,
    old: KubeObject,
    incoming: KubeObject,
    subresource: '' | 'status',
    opts: WriteOptions,
  ): KubeObject {
    const name = old.metadata.name!;
    const rv = incoming.metadata.resourceVersion ?? '';
    if (rv !== '' && rv !== old.metadata.resourceVersion) throw conflict(t, name);
    const uid = incoming.metadata.uid ?? '';
    if (uid !== '' && uid !== old.metadata.uid)
      throw conflict(
        t,
        name,
        `Precondition failed: UID in precondition: ${uid}, UID in object meta: ${old.metadata.uid ?? ''}`,
      );

    let next: KubeObject;
    if (subresource === 'status') {
      next = structuredClone(old);
      if (incoming['status'] === undefined) delete next['status'];
      else next['status'] = incoming['status'];
      if (isPodCertificateRequest(t))
        validatePodCertificateRequestStatus(t, next, old, this.options.now());
    } else {
      next = incoming;
      // Server-owned metadata stays as stored.
      next.metadata.uid = old.metadata.uid!;
      next.metadata.creationTimestamp = old.metadata.creationTimestamp!;
      if (old.metadata.namespace !== undefined) next.metadata.namespace = old.metadata.namespace;
      if (old.metadata.deletionTimestamp !== undefined)
        next.metadata.deletionTimestamp = old.metadata.deletionTimestamp;
      else delete next.metadata.deletionTimestamp;
      if (old.metadata.generation !== undefined) next.metadata.generation = old.metadata.generation;
      else delete next.metadata.generation;
      if (t.subresources?.includes('status') === true) {
        if (old['status'] === undefined) delete next['status'];
        else next['status'] = old['status'];
      }
      validateMeta(t, next);
      this.#prepare(t, next, old);
      if (t.generation === true && !sameJson(withoutMetaAndStatus(next), withoutMetaAndStatus(old)))
        next.metadata.generation = (old.metadata.generation ?? 0) + 1;
    }
    delete next.metadata.resourceVersion;
    if (opts.dryRun === true) return next;
    // Nothing changed: the real API does not write, and the resourceVersion stays.
    const probe = structuredClone(next);
    probe.metadata.resourceVersion = old.metadata.resourceVersion!;
    if (sameJson(probe, old)) return old;
    // The last finalizer of an object being deleted is gone: the deletion completes.
    if (
      next.metadata.deletionTimestamp !== undefined &&
      (next.metadata.finalizers ?? []).length === 0
    ) {
      return this.store.remove(t, next.metadata.namespace ?? '', name)!;
    }
    return this.store.put(t, next);
  }

  /** PATCH with any of the four content types the real API accepts. */
  patch(
    t: ResourceType,
    namespace: string,
    name: string,
    contentType: string,
    rawBody: string,
    subresource: '' | 'status' = '',
    opts: WriteOptions & { fieldManager?: string | undefined; force?: boolean } = {},
  ): { object: KubeObject; created: boolean } {
    const ct = contentType.split(';')[0]!.trim().toLowerCase();
    const ns = t.namespaced ? namespace : '';
    if (ct === 'application/apply-patch+yaml') {
      if ((opts.fieldManager ?? '') === '')
        throw badRequest(
          'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch',
        );
      let applied: unknown;
      try {
        // Repeated keys: the last counts (field validation names them).
        applied = parseYaml(rawBody, { uniqueKeys: false });
      } catch (e) {
        throw badRequest(`error decoding YAML: ${(e as Error).message}`);
      }
      if (opts.fields !== undefined) checkApply(t, ns, name, applied, opts.fields);
      const old = this.store.get(t, ns, name);
      if (old === undefined) {
        if (subresource !== '') throw notFound(t, name);
        const obj = this.#decode(t, ns, applied);
        obj.metadata.name ??= name;
        return {
          object: this.create(t, namespace, obj, { ...opts, fields: undefined }),
          created: true,
        };
      }
      const merged = mergePatch(old, applied) as KubeObject;
      return { object: this.#patched(t, old, merged, subresource, opts), created: false };
    }
    let patch: unknown;
    try {
      patch = JSON.parse(rawBody);
    } catch (e) {
      throw badRequest(`error decoding patch: ${(e as Error).message}`);
    }
    const old = this.store.get(t, ns, name);
    if (old === undefined) throw notFound(t, name);
    let merged: KubeObject;
    if (ct === 'application/json-patch+json') merged = jsonPatch(old, patch) as KubeObject;
    else if (
      ct === 'application/merge-patch+json' ||
      ct === 'application/strategic-merge-patch+json'
    ) {
      if (!isObject(patch))
        throw badRequest(
          'json: cannot unmarshal array into Go value of type map[string]interface {}',
        );
      merged = mergePatch(old, patch) as KubeObject;
    } else throw unsupportedMediaType(contentType);
    if (opts.fields !== undefined) checkPatch(t, ct, patch, merged, opts.fields);
    return { object: this.#patched(t, old, merged, subresource, opts), created: false };
  }

  #patched(
    t: ResourceType,
    old: KubeObject,
    merged: KubeObject,
    subresource: '' | 'status',
    opts: WriteOptions,
  ): KubeObject {
    if (!isObject(merged) || !isObject(merged.metadata))
      throw badRequest('the patch removed metadata');
    if (merged.metadata.name !== old.metadata.name)
      throw badRequest(
        `the name of the object (${String(merged.metadata.name)}) does not match the name on the URL (${String(old.metadata.name)})`,
      );
    const decoded = this.#decode(t, old.metadata.namespace ?? '', merged);
    // A patch that leaves metadata.resourceVersion as stored is unconditional; one that sets
    // another value is a precondition, as on a real server.
    return this.#replace(t, old, decoded, subresource, opts);
  }

  /** DELETE: immediate, or marks the object for deletion while finalizers remain. */
  delete(
    t: ResourceType,
    namespace: string,
    name: string,
    options: { preconditions?: { uid?: string; resourceVersion?: string } } & WriteOptions = {},
  ): KubeObject | StatusBody {
    const ns = t.namespaced ? namespace : '';
    const old = this.store.get(t, ns, name);
    if (old === undefined) throw notFound(t, name);
    const pre = options.preconditions ?? {};
    if (pre.uid !== undefined && pre.uid !== '' && pre.uid !== old.metadata.uid)
      throw conflict(
        t,
        name,
        `Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${old.metadata.uid ?? ''}`,
      );
    if (
      pre.resourceVersion !== undefined &&
      pre.resourceVersion !== '' &&
      pre.resourceVersion !== old.metadata.resourceVersion
    )
      throw conflict(
        t,
        name,
        `Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in object meta: ${old.metadata.resourceVersion ?? ''}`,
      );
    if (options.dryRun === true)
      return t.deleteReturnsObject === true ? old : success(t, name, old.metadata.uid);
    if ((old.metadata.finalizers ?? []).length > 0) {
      if (old.metadata.deletionTimestamp !== undefined) return old;
      const marked = structuredClone(old);
      marked.metadata.deletionTimestamp = timestamp(this.options.now());
      marked.metadata['deletionGracePeriodSeconds'] = 0;
      return this.store.put(t, marked);
    }
    if (t.group === '' && t.plural === 'namespaces') this.#emptyNamespace(name);
    const removed = this.store.remove(t, ns, name)!;
    return t.deleteReturnsObject === true ? removed : success(t, name, removed.metadata.uid);
  }

  /** DELETE of a collection: every object matching the selectors. Answers the deleted list. */
  deleteCollection(
    t: ResourceType,
    namespace: string,
    opts: ListOptions & WriteOptions,
  ): ListResult {
    const { items } = this.list(t, namespace, {
      labelSelector: opts.labelSelector,
      fieldSelector: opts.fieldSelector,
    });
    const deleted: KubeObject[] = [];
    for (const o of items) {
      const r = this.delete(t, o.metadata.namespace ?? '', o.metadata.name!, opts);
      if (r.kind !== 'Status') deleted.push(r as KubeObject);
      else deleted.push(o);
    }
    return { items: deleted, resourceVersion: String(this.store.resourceVersion) };
  }

  /** The namespace controller's work, done at once: everything in the namespace goes. */
  #emptyNamespace(ns: string): void {
    const seen = new Set<string>();
    for (const t of this.registry.all()) {
      if (!t.namespaced || t.virtual === true) continue;
      const k = `${t.group}/${t.plural}`;
      if (seen.has(k)) continue;
      seen.add(k);
      for (const o of this.store.list(t, ns)) this.store.remove(t, ns, o.metadata.name!);
    }
  }
}
