/**
 * The endpoint index: an in-memory model of the cluster's Services, EndpointSlices and Pods,
 * fed by watch events, that answers "what are the endpoints of this address or Service port"
 * and tells each subscriber when its answer changes.
 *
 * It is pure (no I/O, no timers): the Kubernetes watches call {@link EndpointIndex.apply} and
 * {@link EndpointIndex.markSynced}; the gRPC server subscribes. Each subscription remembers what
 * it depends on (the address it asked about, the Service it resolved to, the Pods behind its
 * endpoints), so an event recomputes only the answers it can change.
 */
import type { IdentityNaming, WeightedAddr } from '../core/index.js';
import { formatAddress } from '../core/index.js';
import { inRanges, keyOf, podRecord, serviceRecord, sliceRecord } from './model.js';
import type { PodRecord, ServiceRecord, SliceRecord } from './model.js';
import type { Target } from './target.js';

/** The kinds the index watches. */
export type WatchedKind = 'Service' | 'EndpointSlice' | 'Pod';
/** A watch event's type. */
export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

/** The weight of every endpoint (Linkerd's default): all are equal. */
export const ENDPOINT_WEIGHT = 10_000;

/** One answer: what a target resolves to now. */
export interface Resolution {
  /** False when the target is unknown (no such Service, no pod at that address): pass through. */
  readonly exists: boolean;
  /** The endpoints by `ip:port` (IPv6 in brackets), ready ones only. */
  readonly endpoints: ReadonlyMap<string, WeightedAddr>;
  /** `<svc>.<ns>.svc.<cluster-domain>` when the target is (the ClusterIP of) a Service. */
  readonly fullyQualifiedName: string;
  /** Labels of the whole set: `namespace` and `service` for a Service. */
  readonly metricLabels: Readonly<Record<string, string>>;
  /** Whether the asked port is opaque (a Service port or a pod port so annotated). */
  readonly opaque: boolean;
  /** For a pod address: that pod's endpoint. */
  readonly podEndpoint?: WeightedAddr;
}

/** Told each time the answer of its target changes (first when the index is synced). */
export type ResolutionListener = (r: Resolution) => void;

/** An open subscription. */
export interface IndexSubscription {
  close(): void;
}

export interface EndpointIndexOptions {
  readonly naming: IdentityNaming;
  /** The cluster's DNS domain: a Service's name is `<svc>.<ns>.svc.<this>`. */
  readonly clusterDomain: string;
  /** Told about objects it could not read in full (a bad annotation); for a log line. */
  readonly onBadObject?: (why: string) => void;
  /** Most subscriptions at once; beyond it `subscribe` throws (the server answers RESOURCE_EXHAUSTED). */
  readonly maxSubscriptions?: number;
}

interface Sub {
  readonly target: Target;
  readonly listener: ResolutionListener;
  signature: string | undefined;
  /** The Service it resolved to last, and the pods behind its endpoints. */
  service: string | undefined;
  pods: Set<string>;
  closed: boolean;
}

const EMPTY: ReadonlyMap<string, WeightedAddr> = new Map();
const UNKNOWN: Resolution = Object.freeze({
  exists: false,
  endpoints: EMPTY,
  fullyQualifiedName: '',
  metricLabels: {},
  opaque: false,
});

function addrKey(ip: string, port: number): string {
  return formatAddress({ host: ip, port });
}

function addTo<K, V>(map: Map<K, Set<V>>, key: K, value: V): void {
  let set = map.get(key);
  if (set === undefined) map.set(key, (set = new Set()));
  set.add(value);
}
function removeFrom<K, V>(map: Map<K, Set<V>>, key: K, value: V): void {
  const set = map.get(key);
  if (set === undefined) return;
  set.delete(value);
  if (set.size === 0) map.delete(key);
}

/**
 * The index. Feed it events; subscribe to targets.
 *
 * @example
 * ```ts
 * const index = new EndpointIndex({ naming, clusterDomain: 'cluster.local' });
 * index.apply('Service', 'ADDED', service);
 * for (const kind of ['Service', 'EndpointSlice', 'Pod'] as const) index.markSynced(kind);
 * const sub = index.subscribe({ kind: 'address', ip: '10.96.0.10', port: 80 }, (r) => console.log(r.endpoints));
 * ```
 */
export class EndpointIndex {
  readonly #o: EndpointIndexOptions;
  readonly #pods = new Map<string, PodRecord>();
  readonly #podByIp = new Map<string, string>();
  readonly #services = new Map<string, ServiceRecord>();
  readonly #serviceByIp = new Map<string, string>();
  readonly #slices = new Map<string, SliceRecord>();
  readonly #slicesByService = new Map<string, Set<string>>();
  readonly #subsByIp = new Map<string, Set<Sub>>();
  readonly #subsByService = new Map<string, Set<Sub>>();
  readonly #subsByPod = new Map<string, Set<Sub>>();
  readonly #subs = new Set<Sub>();
  readonly #synced = new Set<WatchedKind>();
  #ignored = 0;

  constructor(options: EndpointIndexOptions) {
    this.#o = options;
  }

  /** True once the first full list of every kind is in. */
  get synced(): boolean {
    return this.#synced.size === 3;
  }

  /** Sizes, for metrics and the memory bench. */
  get stats(): {
    pods: number;
    services: number;
    slices: number;
    subscriptions: number;
    ignored: number;
  } {
    return {
      pods: this.#pods.size,
      services: this.#services.size,
      slices: this.#slices.size,
      subscriptions: this.#subs.size,
      ignored: this.#ignored,
    };
  }

  /**
   * Applies one watch event. Objects it cannot use (no name, no IP yet, host network, finished)
   * are treated as absent: an ADDED or MODIFIED one removes what was kept under its name.
   */
  apply(kind: WatchedKind, type: EventType, object: unknown): void {
    const key = keyOf(object);
    if (key === undefined) {
      this.#ignored++;
      return;
    }
    const affected = new Set<Sub>();
    if (kind === 'Pod') this.#applyPod(key, type, object, affected);
    else if (kind === 'Service') this.#applyService(key, type, object, affected);
    else this.#applySlice(key, type, object, affected);
    if (this.synced) for (const sub of affected) this.#refresh(sub);
  }

  /**
   * Replaces every object of a kind with `objects` (a fresh list, as after a watch that had to
   * start over): what is missing from it is deleted.
   */
  replaceAll(kind: WatchedKind, objects: readonly unknown[]): void {
    const store = kind === 'Pod' ? this.#pods : kind === 'Service' ? this.#services : this.#slices;
    const fresh = new Set<string>();
    for (const o of objects) {
      const key = keyOf(o);
      if (key !== undefined) fresh.add(key);
    }
    for (const key of [...store.keys()]) {
      if (!fresh.has(key)) {
        const [namespace, name] = key.split('/') as [string, string];
        this.apply(kind, 'DELETED', { metadata: { namespace, name } });
      }
    }
    for (const o of objects) this.apply(kind, 'MODIFIED', o);
    this.markSynced(kind);
  }

  /** Marks the first list of a kind as complete; once all three are, subscribers get answers. */
  markSynced(kind: WatchedKind): void {
    const was = this.synced;
    this.#synced.add(kind);
    if (!was && this.synced) for (const sub of [...this.#subs]) this.#refresh(sub);
  }

  /**
   * Subscribes to a target: `listener` is called with its answer as soon as the index is synced
   * (at once when it already is), then on each change. Throws a RangeError when the index holds
   * its most subscriptions.
   */
  subscribe(target: Target, listener: ResolutionListener): IndexSubscription {
    if (this.#subs.size >= (this.#o.maxSubscriptions ?? 100_000))
      throw new RangeError(
        `the destination index holds its most subscriptions (${this.#subs.size})`,
      );
    const sub: Sub = {
      target,
      listener,
      signature: undefined,
      service: undefined,
      pods: new Set(),
      closed: false,
    };
    this.#subs.add(sub);
    if (target.kind === 'address') addTo(this.#subsByIp, target.ip, sub);
    if (target.kind === 'service')
      addTo(this.#subsByService, `${target.namespace}/${target.service}`, sub);
    if (this.synced) this.#refresh(sub);
    return {
      close: () => {
        if (sub.closed) return;
        sub.closed = true;
        this.#subs.delete(sub);
        if (target.kind === 'address') removeFrom(this.#subsByIp, target.ip, sub);
        if (target.kind === 'service')
          removeFrom(this.#subsByService, `${target.namespace}/${target.service}`, sub);
        this.#setDeps(sub, undefined, new Set());
      },
    };
  }

  /** The answer for a target now (UNKNOWN-like before the index is synced). */
  resolve(target: Target): Resolution {
    return this.#resolve(target).resolution;
  }

  // ---- events ---------------------------------------------------------------------------------

  #applyPod(key: string, type: EventType, object: unknown, affected: Set<Sub>): void {
    const old = this.#pods.get(key);
    const next =
      type === 'DELETED' ? undefined : podRecord(object, this.#o.naming, this.#o.onBadObject);
    if (old !== undefined) {
      for (const ip of old.ips) if (this.#podByIp.get(ip) === key) this.#podByIp.delete(ip);
      this.#pods.delete(key);
    }
    if (next !== undefined) {
      this.#pods.set(key, next);
      for (const ip of next.ips) this.#podByIp.set(ip, key);
    }
    for (const ip of [...(old?.ips ?? []), ...(next?.ips ?? [])])
      this.#collect(this.#subsByIp, ip, affected);
    this.#collect(this.#subsByPod, key, affected);
  }

  #applyService(key: string, type: EventType, object: unknown, affected: Set<Sub>): void {
    const old = this.#services.get(key);
    const next = type === 'DELETED' ? undefined : serviceRecord(object, this.#o.onBadObject);
    if (old !== undefined) {
      for (const ip of old.clusterIps)
        if (this.#serviceByIp.get(ip) === key) this.#serviceByIp.delete(ip);
      this.#services.delete(key);
    }
    if (next !== undefined) {
      this.#services.set(key, next);
      for (const ip of next.clusterIps) this.#serviceByIp.set(ip, key);
    }
    for (const ip of [...(old?.clusterIps ?? []), ...(next?.clusterIps ?? [])])
      this.#collect(this.#subsByIp, ip, affected);
    this.#collect(this.#subsByService, key, affected);
  }

  #applySlice(key: string, type: EventType, object: unknown, affected: Set<Sub>): void {
    const old = this.#slices.get(key);
    const next = type === 'DELETED' ? undefined : sliceRecord(object);
    if (old !== undefined) {
      removeFrom(this.#slicesByService, old.service, key);
      this.#slices.delete(key);
      this.#collect(this.#subsByService, old.service, affected);
    }
    if (next !== undefined) {
      this.#slices.set(key, next);
      addTo(this.#slicesByService, next.service, key);
      this.#collect(this.#subsByService, next.service, affected);
    }
  }

  #collect(map: Map<string, Set<Sub>>, key: string, into: Set<Sub>): void {
    for (const sub of map.get(key) ?? []) into.add(sub);
  }

  // ---- answers --------------------------------------------------------------------------------

  #refresh(sub: Sub): void {
    if (sub.closed) return;
    const { resolution, service, pods } = this.#resolve(sub.target);
    this.#setDeps(sub, service, pods);
    const signature = signatureOf(resolution);
    if (signature === sub.signature) return;
    sub.signature = signature;
    sub.listener(resolution);
  }

  /** Moves a subscription's entries in the Service and Pod maps to what it depends on now. */
  #setDeps(sub: Sub, service: string | undefined, pods: Set<string>): void {
    const own =
      sub.target.kind === 'service' ? `${sub.target.namespace}/${sub.target.service}` : undefined;
    if (sub.service !== service) {
      if (sub.service !== undefined && sub.service !== own)
        removeFrom(this.#subsByService, sub.service, sub);
      if (service !== undefined && service !== own && !sub.closed)
        addTo(this.#subsByService, service, sub);
      sub.service = service;
    }
    for (const pod of sub.pods) if (!pods.has(pod)) removeFrom(this.#subsByPod, pod, sub);
    if (!sub.closed)
      for (const pod of pods) if (!sub.pods.has(pod)) addTo(this.#subsByPod, pod, sub);
    sub.pods = sub.closed ? new Set() : pods;
  }

  #resolve(target: Target): {
    resolution: Resolution;
    service?: string | undefined;
    pods: Set<string>;
  } {
    const pods = new Set<string>();
    if (!this.synced || target.kind === 'external') return { resolution: UNKNOWN, pods };
    if (target.kind === 'service') {
      const key = `${target.namespace}/${target.service}`;
      const svc = this.#services.get(key);
      if (svc === undefined) return { resolution: UNKNOWN, pods };
      return {
        resolution: this.#serviceEndpoints(svc, target.port, svc.primaryFamily, pods),
        service: key,
        pods,
      };
    }
    const svcKey = this.#serviceByIp.get(target.ip);
    const svc = svcKey === undefined ? undefined : this.#services.get(svcKey);
    if (svc !== undefined) {
      const family = target.ip.includes(':') ? 'IPv6' : 'IPv4';
      return {
        resolution: this.#serviceEndpoints(svc, target.port, family, pods),
        service: svcKey,
        pods,
      };
    }
    const podKey = this.#podByIp.get(target.ip);
    const pod = podKey === undefined ? undefined : this.#pods.get(podKey);
    if (pod === undefined) return { resolution: UNKNOWN, pods };
    pods.add(podKey!);
    const ep = this.#endpoint(target.ip, target.port, pod, inRanges(pod.opaquePorts, target.port));
    return {
      resolution: {
        exists: true,
        endpoints: new Map([[addrKey(target.ip, target.port), ep]]),
        fullyQualifiedName: '',
        metricLabels: { namespace: pod.namespace },
        opaque: inRanges(pod.opaquePorts, target.port),
        podEndpoint: ep,
      },
      pods,
    };
  }

  /**
   * The ready endpoints of a Service port: each EndpointSlice of the family maps the Service
   * port's name to its endpoints' port (the targetPort, resolved per pod for a named one).
   */
  #serviceEndpoints(
    svc: ServiceRecord,
    port: number,
    family: 'IPv4' | 'IPv6',
    pods: Set<string>,
  ): Resolution {
    const base = {
      exists: !svc.externalName,
      fullyQualifiedName: svc.externalName
        ? ''
        : `${svc.name}.${svc.namespace}.svc.${this.#o.clusterDomain}`,
      metricLabels: { namespace: svc.namespace, service: svc.name },
      opaque: inRanges(svc.opaquePorts, port),
    };
    const sp = svc.ports.find((p) => p.port === port && p.protocol === 'TCP');
    if (sp === undefined || svc.externalName) return { ...base, endpoints: EMPTY };
    const endpoints = new Map<string, WeightedAddr>();
    for (const sliceKey of this.#slicesByService.get(`${svc.namespace}/${svc.name}`) ?? []) {
      const slice = this.#slices.get(sliceKey)!;
      const targetPort = slice.family === family ? slice.ports.get(sp.name) : undefined;
      if (targetPort === undefined) continue;
      for (const e of slice.endpoints) {
        const podKey = e.pod ?? this.#podByIp.get(e.ip);
        const pod = podKey === undefined ? undefined : this.#pods.get(podKey);
        if (podKey !== undefined) pods.add(podKey);
        const opaque = base.opaque || (pod !== undefined && inRanges(pod.opaquePorts, targetPort));
        endpoints.set(addrKey(e.ip, targetPort), this.#endpoint(e.ip, targetPort, pod, opaque));
      }
    }
    return { ...base, endpoints };
  }

  /** One endpoint as the Destination API describes it. */
  #endpoint(ip: string, port: number, pod: PodRecord | undefined, opaque: boolean): WeightedAddr {
    const labels: Record<string, string> =
      pod === undefined ? {} : { pod: pod.name, serviceaccount: pod.serviceAccount };
    if (pod?.identity === undefined || pod.inboundPort === undefined) {
      return { addr: { ip, port }, weight: ENDPOINT_WEIGHT, metricLabels: labels };
    }
    return {
      addr: { ip, port },
      weight: ENDPOINT_WEIGHT,
      metricLabels: labels,
      tlsIdentity: pod.identity,
      protocolHint: opaque
        ? { protocol: 'opaque', opaqueTransport: { inboundPort: pod.inboundPort } }
        : { protocol: 'h2' },
    };
  }
}

/** A resolution as a string that changes exactly when what a subscriber is told would. */
function signatureOf(r: Resolution): string {
  const eps = [...r.endpoints.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return JSON.stringify([r.exists, r.fullyQualifiedName, r.opaque, r.metricLabels, eps]);
}
