/**
 * What the destination service keeps of each Kubernetes object: a small record per Pod, Service
 * and EndpointSlice, read from the API's JSON and nothing more, so that 10,000 pods cost a few
 * megabytes (`npm run bench`) rather than the objects' full size. Each reader is total: a field
 * that is missing or of the wrong type reads as absent, and an object without a name or
 * namespace is no record at all (counted by the caller).
 */
import type { IdentityNaming } from '../core/index.js';
import { CONTROL_PLANE_NS_LABEL, canonicalIp, identityName } from '../core/index.js';

/** Linkerd's annotation naming a pod's or a Service's opaque ports: `3306,4000-4100,mysql`. */
const OPAQUE_PORTS_ANNOTATION = 'config.linkerd.io/opaque-ports';

/**
 * The names of the container port that is a meshed pod's proxy inbound port: meshid's injector
 * writes `meshid-inbound`, Linkerd's `linkerd-proxy`.
 */
const INBOUND_PORT_NAMES: readonly string[] = Object.freeze(['meshid-inbound', 'linkerd-proxy']);

/** The label of an EndpointSlice naming its Service. */
const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

/** Inclusive port ranges (a single port is [p, p]); bounded whatever the annotation says. */
type PortRanges = readonly (readonly [number, number])[];

/** The most ranges one annotation may hold; beyond it the annotation is ignored as malformed. */
const MAX_RANGES = 64;

/** What is kept of a Pod. */
export interface PodRecord {
  readonly namespace: string;
  readonly name: string;
  /** Canonical IP texts (status.podIPs, or status.podIP). Empty for host-network pods. */
  readonly ips: readonly string[];
  /** The identity its certificate names, when the pod is meshed by this control plane. */
  readonly identity?: string;
  readonly serviceAccount: string;
  /** Its proxy's inbound port, when meshed. */
  readonly inboundPort?: number;
  readonly opaquePorts: PortRanges;
}

/** One port of a Service. */
interface ServicePort {
  readonly name: string;
  readonly port: number;
  readonly protocol: string;
}

/** What is kept of a Service. */
export interface ServiceRecord {
  readonly namespace: string;
  readonly name: string;
  /** Canonical ClusterIPs; empty for a headless Service. */
  readonly clusterIps: readonly string[];
  /** spec.ipFamilies[0]: the family a name lookup answers with. */
  readonly primaryFamily: 'IPv4' | 'IPv6';
  readonly ports: readonly ServicePort[];
  /** Service ports that are opaque. */
  readonly opaquePorts: PortRanges;
  /** ExternalName Services have no endpoints of their own: lookups pass through. */
  readonly externalName: boolean;
}

/** One endpoint of an EndpointSlice. */
interface SliceEndpoint {
  readonly ip: string;
  /** `namespace/name` of the Pod behind it (targetRef), when it is one. */
  readonly pod?: string;
}

/** What is kept of an EndpointSlice: its ready endpoints only. */
export interface SliceRecord {
  readonly namespace: string;
  readonly name: string;
  /** `namespace/name` of its Service (label kubernetes.io/service-name). */
  readonly service: string;
  readonly family: 'IPv4' | 'IPv6';
  /** Port name (the Service port's name, '' when unnamed) → the endpoints' port number. */
  readonly ports: ReadonlyMap<string, number>;
  readonly endpoints: readonly SliceEndpoint[];
}

type Json = Record<string, unknown>;

function obj(v: unknown): Json | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Json) : undefined;
}
function arr(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}
function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}
function port(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 65535 ? v : undefined;
}

/** `namespace/name` of an object, or undefined when it has neither. */
export function keyOf(o: unknown): string | undefined {
  const meta = obj(obj(o)?.['metadata']);
  const ns = str(meta?.['namespace']);
  const name = str(meta?.['name']);
  return ns === undefined || name === undefined || ns === '' || name === ''
    ? undefined
    : `${ns}/${name}`;
}

function meta(o: Json): { namespace: string; name: string; labels: Json; annotations: Json } {
  const m = obj(o['metadata']) ?? {};
  return {
    namespace: str(m['namespace']) ?? '',
    name: str(m['name']) ?? '',
    labels: obj(m['labels']) ?? {},
    annotations: obj(m['annotations']) ?? {},
  };
}

/**
 * Parses an opaque-ports annotation: ports, ranges `lo-hi`, and names resolved through `named`
 * (a pod's container port names). Returns no ranges for a malformed value, as Linkerd ignores
 * one it cannot read; `onBad` hears why: `3306,4000-4100` is `[[3306, 3306], [4000, 4100]]`.
 */
function parseOpaquePorts(
  value: string | undefined,
  named: ReadonlyMap<string, number> = new Map(),
  onBad?: (why: string) => void,
): PortRanges {
  if (value === undefined || value.trim() === '') return [];
  const out: [number, number][] = [];
  for (const raw of value.split(',')) {
    const part = raw.trim();
    if (part === '') continue;
    const range = /^(\d{1,5})-(\d{1,5})$/.exec(part);
    const one = /^\d{1,5}$/.test(part) ? Number(part) : named.get(part);
    const lo = range !== null ? Number(range[1]) : one;
    const hi = range !== null ? Number(range[2]) : one;
    if (lo === undefined || hi === undefined || lo < 1 || hi > 65535 || lo > hi) {
      onBad?.(`"${part}" is not a port, a range lo-hi or a named container port`);
      return [];
    }
    out.push([lo, hi]);
    if (out.length > MAX_RANGES) {
      onBad?.(`more than ${MAX_RANGES} ports or ranges`);
      return [];
    }
  }
  return out;
}

/** Whether `p` is in one of `ranges`. */
export function inRanges(ranges: PortRanges, p: number): boolean {
  return ranges.some(([lo, hi]) => p >= lo && p <= hi);
}

/**
 * A Pod's record. `undefined` when it has no name or namespace, or holds no IP traffic can reach
 * it at: not scheduled yet, host network (its IP is the node's, shared), or finished
 * (Succeeded, Failed: the IP may already be another pod's).
 */
export function podRecord(
  o: unknown,
  naming: IdentityNaming,
  onBad?: (why: string) => void,
): PodRecord | undefined {
  const j = obj(o);
  if (j === undefined || keyOf(j) === undefined) return undefined;
  const m = meta(j);
  const spec = obj(j['spec']) ?? {};
  const status = obj(j['status']) ?? {};
  const phase = str(status['phase']);
  if (spec['hostNetwork'] === true || phase === 'Succeeded' || phase === 'Failed') return undefined;
  const ips = new Set<string>();
  for (const entry of arr(status['podIPs'])) {
    const ip = canonicalIp(str(obj(entry)?.['ip']) ?? '');
    if (ip !== undefined) ips.add(ip);
  }
  const single = canonicalIp(str(status['podIP']) ?? '');
  if (single !== undefined) ips.add(single);
  if (ips.size === 0) return undefined;
  const serviceAccount = str(spec['serviceAccountName']) ?? 'default';
  const named = new Map<string, number>();
  let inboundPort: number | undefined;
  for (const c of [...arr(spec['containers']), ...arr(spec['initContainers'])]) {
    for (const p of arr(obj(c)?.['ports'])) {
      const name = str(obj(p)?.['name']);
      const number = port(obj(p)?.['containerPort']);
      if (name === undefined || number === undefined) continue;
      named.set(name, number);
      if (INBOUND_PORT_NAMES.includes(name)) inboundPort ??= number;
    }
  }
  const meshed = m.labels[CONTROL_PLANE_NS_LABEL] === naming.controlPlaneNamespace;
  return {
    namespace: m.namespace,
    name: m.name,
    ips: [...ips],
    serviceAccount,
    ...(meshed && inboundPort !== undefined
      ? {
          identity: identityName({ namespace: m.namespace, serviceAccount }, naming),
          inboundPort,
        }
      : {}),
    opaquePorts: parseOpaquePorts(
      str(m.annotations[OPAQUE_PORTS_ANNOTATION]),
      named,
      onBad === undefined ? undefined : (why) => onBad(`pod ${m.namespace}/${m.name}: ${why}`),
    ),
  };
}

/** A Service's record; undefined without name or namespace. */
export function serviceRecord(
  o: unknown,
  onBad?: (why: string) => void,
): ServiceRecord | undefined {
  const j = obj(o);
  if (j === undefined || keyOf(j) === undefined) return undefined;
  const m = meta(j);
  const spec = obj(j['spec']) ?? {};
  const ips = new Set<string>();
  for (const v of [...arr(spec['clusterIPs']), spec['clusterIP']]) {
    const ip = canonicalIp(str(v) ?? '');
    if (ip !== undefined) ips.add(ip);
  }
  const ports: ServicePort[] = [];
  for (const p of arr(spec['ports'])) {
    const number = port(obj(p)?.['port']);
    if (number === undefined) continue;
    ports.push({
      name: str(obj(p)?.['name']) ?? '',
      port: number,
      protocol: str(obj(p)?.['protocol']) ?? 'TCP',
    });
  }
  const family = str(arr(spec['ipFamilies'])[0]);
  const firstIp = [...ips][0];
  return {
    namespace: m.namespace,
    name: m.name,
    clusterIps: [...ips],
    primaryFamily:
      family === 'IPv6' || (family === undefined && firstIp?.includes(':') === true)
        ? 'IPv6'
        : 'IPv4',
    ports,
    opaquePorts: parseOpaquePorts(
      str(m.annotations[OPAQUE_PORTS_ANNOTATION]),
      new Map(),
      onBad === undefined ? undefined : (why) => onBad(`service ${m.namespace}/${m.name}: ${why}`),
    ),
    externalName: str(spec['type']) === 'ExternalName',
  };
}

/**
 * An EndpointSlice's record, with its ready endpoints only (`conditions.ready` absent counts as
 * ready, as the API defines it); undefined without name, namespace, Service label, or for an
 * FQDN slice.
 */
export function sliceRecord(o: unknown): SliceRecord | undefined {
  const j = obj(o);
  if (j === undefined || keyOf(j) === undefined) return undefined;
  const m = meta(j);
  const service = str(m.labels[SERVICE_NAME_LABEL]);
  const family = str(j['addressType']);
  if (service === undefined || (family !== 'IPv4' && family !== 'IPv6')) return undefined;
  const ports = new Map<string, number>();
  for (const p of arr(j['ports'])) {
    const number = port(obj(p)?.['port']);
    const protocol = str(obj(p)?.['protocol']) ?? 'TCP';
    if (number !== undefined && protocol === 'TCP') ports.set(str(obj(p)?.['name']) ?? '', number);
  }
  const endpoints: SliceEndpoint[] = [];
  for (const e of arr(j['endpoints'])) {
    const ep = obj(e) ?? {};
    if (obj(ep['conditions'])?.['ready'] === false) continue;
    const ref = obj(ep['targetRef']);
    const pod =
      ref !== undefined && str(ref['kind']) === 'Pod' && str(ref['name']) !== undefined
        ? `${str(ref['namespace']) ?? m.namespace}/${str(ref['name'])}`
        : undefined;
    for (const a of arr(ep['addresses'])) {
      const ip = canonicalIp(str(a) ?? '');
      if (ip !== undefined) endpoints.push(pod === undefined ? { ip } : { ip, pod });
    }
  }
  return {
    namespace: m.namespace,
    name: m.name,
    service: `${m.namespace}/${service}`,
    family,
    ports,
    endpoints,
  };
}
