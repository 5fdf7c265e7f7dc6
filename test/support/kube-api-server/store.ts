/**
 * In-memory storage: objects per resource type, one global resourceVersion counter bumped on every
 * write (as etcd's revision), and a bounded per-type event history that watches resume from.
 */
import type { ResourceType } from './resources.js';
import type { KubeObject } from './types.js';

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

/** A stored change. `previous` is the object before a MODIFIED or DELETED, for selector moves. */
export interface StoredEvent {
  readonly type: WatchEventType;
  readonly rv: number;
  readonly object: KubeObject;
  readonly previous?: KubeObject;
}

export type StoreListener = (e: StoredEvent) => void;

interface TypeState {
  readonly objects: Map<string, KubeObject>;
  readonly history: StoredEvent[];
  /** Events after this RV are all in `history`; a watch from an older RV gets 410 Expired. */
  historyStart: number;
  readonly listeners: Set<StoreListener>;
}

/** Storage key of a type: versions of one group/resource share storage, as in the real API. */
export function typeKey(t: Pick<ResourceType, 'group' | 'plural'>): string {
  return `${t.group}/${t.plural}`;
}

function objectKey(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

export class Store {
  #rv = 0;
  readonly #types = new Map<string, TypeState>();

  constructor(private readonly historySize: number) {}

  /** The current global resourceVersion. */
  get resourceVersion(): number {
    return this.#rv;
  }

  #state(t: Pick<ResourceType, 'group' | 'plural'>): TypeState {
    const k = typeKey(t);
    let s = this.#types.get(k);
    if (s === undefined) {
      s = { objects: new Map(), history: [], historyStart: 0, listeners: new Set() };
      this.#types.set(k, s);
    }
    return s;
  }

  get(t: ResourceType, namespace: string, name: string): KubeObject | undefined {
    const o = this.#state(t).objects.get(objectKey(namespace, name));
    return o === undefined ? undefined : structuredClone(o);
  }

  /** Objects of a type, sorted by namespace then name (etcd key order); `namespace` '' = all. */
  list(t: ResourceType, namespace: string): KubeObject[] {
    const out: KubeObject[] = [];
    for (const [k, o] of this.#state(t).objects) {
      if (namespace === '' || k.startsWith(`${namespace}/`)) out.push(structuredClone(o));
    }
    return out.sort((a, b) => {
      const ka = objectKey(a.metadata.namespace ?? '', a.metadata.name ?? '');
      const kb = objectKey(b.metadata.namespace ?? '', b.metadata.name ?? '');
      return ka < kb ? -1 : ka > kb ? 1 : 0;
    });
  }

  /** Writes an object, stamping a new resourceVersion; returns the stored copy. */
  put(t: ResourceType, obj: KubeObject): KubeObject {
    const s = this.#state(t);
    const key = objectKey(obj.metadata.namespace ?? '', obj.metadata.name ?? '');
    const previous = s.objects.get(key);
    const rv = ++this.#rv;
    const stored = structuredClone(obj);
    stored.metadata.resourceVersion = String(rv);
    s.objects.set(key, stored);
    const e: StoredEvent =
      previous === undefined
        ? { type: 'ADDED', rv, object: stored }
        : { type: 'MODIFIED', rv, object: stored, previous };
    this.#record(s, e);
    return structuredClone(stored);
  }

  /** Removes an object; the DELETED event carries the object with the deletion's resourceVersion. */
  remove(t: ResourceType, namespace: string, name: string): KubeObject | undefined {
    const s = this.#state(t);
    const key = objectKey(namespace, name);
    const previous = s.objects.get(key);
    if (previous === undefined) return undefined;
    s.objects.delete(key);
    const rv = ++this.#rv;
    const object = structuredClone(previous);
    object.metadata.resourceVersion = String(rv);
    this.#record(s, { type: 'DELETED', rv, object, previous });
    return structuredClone(object);
  }

  #record(s: TypeState, e: StoredEvent): void {
    s.history.push(e);
    while (s.history.length > this.historySize) {
      const evicted = s.history.shift()!;
      s.historyStart = evicted.rv;
    }
    for (const l of [...s.listeners]) l(e);
  }

  /**
   * Events of a type after `rv`, or `undefined` when some of them have left the history window
   * (the caller answers 410 Expired). The second value is the oldest RV still resumable.
   */
  eventsSince(t: ResourceType, rv: number): { events: StoredEvent[] | undefined; oldest: number } {
    const s = this.#state(t);
    if (rv < s.historyStart) return { events: undefined, oldest: s.historyStart };
    return { events: s.history.filter((e) => e.rv > rv), oldest: s.historyStart };
  }

  /** Subscribes to future events of a type; returns the unsubscribe function. */
  subscribe(t: ResourceType, l: StoreListener): () => void {
    const s = this.#state(t);
    s.listeners.add(l);
    return () => s.listeners.delete(l);
  }

  /** Forgets all history of every type (tests force a 410 for any earlier resourceVersion). */
  compact(): void {
    for (const s of this.#types.values()) {
      s.history.length = 0;
      s.historyStart = this.#rv;
    }
  }
}
