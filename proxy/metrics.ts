/**
 * The proxy's traffic metrics: TLS handshakes and failures by reason, connections and bytes by
 * direction and peer identity, and HTTP request latency. Fed from the listeners' events.
 */
import type { Metric } from 'prom-client';
import type { Registry } from '../core/index.js';
import { Counter, Gauge, formatAddress } from '../core/index.js';
import type { InboundEvent } from './inbound-events.js';
import type { OutboundEvent } from './outbound-events.js';
import type { TransparentInboundEvent } from './transparent/inbound.js';

/** One label combination of a {@link LatencyHistogram}: plain counters, no lookups. */
class Series {
  /** Per bucket, not cumulative (made cumulative when scraped). */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  constructor(
    readonly labels: Readonly<Record<string, string>>,
    private readonly bounds: readonly number[],
  ) {
    this.counts = new Float64Array(bounds.length);
  }
  observe(value: number): void {
    this.sum += value;
    this.count++;
    const b = this.bounds;
    for (let i = 0; i < b.length; i++) {
      if (value <= b[i]!) {
        this.counts[i]!++;
        return;
      }
    }
  }
}

/**
 * A Prometheus histogram for the per-request latency, with the same exposition as
 * prom-client's, but observed through a {@link Series} held by the caller: prom-client's
 * `observe(labels, v)` validates and hashes the labels on every call, which showed in profiles
 * of the inbound proxy at tens of thousands of requests per second.
 */
class LatencyHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  readonly #series = new Map<string, Series>();
  constructor(
    readonly name: string,
    readonly help: string,
    readonly bounds: readonly number[],
  ) {}

  /** The series for `labels` (made on first use; callers keep it). */
  series(labels: Readonly<Record<string, string>>): Series {
    const key = JSON.stringify(labels);
    let s = this.#series.get(key);
    if (s === undefined) {
      s = new Series(labels, this.bounds);
      this.#series.set(key, s);
    }
    return s;
  }

  // What prom-client's Registry asks of a metric.
  get(): Promise<{
    name: string;
    help: string;
    type: string;
    aggregator: string;
    values: { labels: Record<string, string | number>; value: number; metricName: string }[];
  }> {
    const values = [];
    for (const s of this.#series.values()) {
      let cumulative = 0;
      for (let i = 0; i < this.bounds.length; i++) {
        cumulative += s.counts[i]!;
        values.push({
          labels: { le: this.bounds[i]!, ...s.labels },
          value: cumulative,
          metricName: `${this.name}_bucket`,
        });
      }
      values.push({
        labels: { le: '+Inf', ...s.labels },
        value: s.count,
        metricName: `${this.name}_bucket`,
      });
      values.push({ labels: { ...s.labels }, value: s.sum, metricName: `${this.name}_sum` });
      values.push({ labels: { ...s.labels }, value: s.count, metricName: `${this.name}_count` });
    }
    return Promise.resolve({
      name: this.name,
      help: this.help,
      type: this.type,
      aggregator: this.aggregator,
      values,
    });
  }

  reset(): void {
    for (const s of this.#series.values()) {
      s.counts.fill(0);
      s.sum = 0;
      s.count = 0;
    }
  }
}

/** Records inbound events. */
interface TrafficMetrics {
  inbound(e: InboundEvent): void;
  outbound(e: OutboundEvent): void;
  /** How the transparent inbound classified a redirected connection, and whether it let it in. */
  transparentInbound(e: TransparentInboundEvent): void;
  /** Successful TLS handshakes so far by direction and key-exchange group (for /identity). */
  groups(): TlsGroupCounts;
}

/** Successful TLS handshakes by direction and key-exchange group, e.g. `{ X25519MLKEM768: 3 }`. */
interface TlsGroupCounts {
  readonly inbound: Readonly<Record<string, number>>;
  readonly outbound: Readonly<Record<string, number>>;
}

/**
 * Registers the traffic metrics on `registry`.
 */
export function registerTrafficMetrics(registry: Registry): TrafficMetrics {
  const handshakes = new Counter({
    name: 'meshid_proxy_tls_handshakes_total',
    help: 'TLS handshakes by direction, result and failure reason; a successful one by its key-exchange group and cipher suite.',
    labelNames: ['direction', 'result', 'reason', 'group', 'cipher'] as const,
    registers: [registry],
  });
  const connections = new Counter({
    name: 'meshid_proxy_connections_total',
    help: 'Connections opened, by direction and verified peer identity ("" when unauthenticated).',
    labelNames: ['direction', 'peer', 'protocol'] as const,
    registers: [registry],
  });
  const bytes = new Counter({
    name: 'meshid_proxy_bytes_total',
    help: 'Bytes on the wire by direction, peer identity and flow (read from or written to the peer).',
    labelNames: ['direction', 'peer', 'flow'] as const,
    registers: [registry],
  });
  const requests = new LatencyHistogram(
    'meshid_proxy_request_duration_seconds',
    'HTTP request latency through the proxy, by direction, protocol and status class.',
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
  );
  registry.registerMetric(requests as unknown as Metric);
  // Inbound series by protocol and status class, made on first use.
  const inboundSeries: (Series | undefined)[] = [];
  const inboundRequest = (protocol: 'http1' | 'http2', status: number): Series => {
    const statusClass = Math.min(9, Math.max(0, Math.floor(status / 100)));
    const i = (protocol === 'http1' ? 0 : 10) + statusClass;
    return (inboundSeries[i] ??= requests.series({
      direction: 'inbound',
      protocol,
      status: `${statusClass}xx`,
    }));
  };
  const groups = { inbound: new Map<string, number>(), outbound: new Map<string, number>() };
  const countGroup = (direction: 'inbound' | 'outbound', group: string): void => {
    groups[direction].set(group, (groups[direction].get(group) ?? 0) + 1);
  };
  const outbound = registerOutboundMetrics(registry);
  const transparentInbound = registerTransparentInboundMetrics(registry);
  return {
    transparentInbound,
    groups: () => ({
      inbound: Object.fromEntries(groups.inbound),
      outbound: Object.fromEntries(groups.outbound),
    }),
    inbound(e) {
      switch (e.type) {
        case 'handshake-succeeded':
          if (e.algorithms !== undefined) countGroup('inbound', e.algorithms.group);
          handshakes.inc({
            direction: 'inbound',
            result: 'ok',
            reason: '',
            group: e.algorithms?.group ?? '',
            cipher: e.algorithms?.cipher ?? '',
          });
          return;
        case 'handshake-failed':
          handshakes.inc({
            direction: 'inbound',
            result: 'failed',
            reason: e.reason,
            group: '',
            cipher: '',
          });
          return;
        case 'connection-opened':
          connections.inc({ direction: 'inbound', peer: e.peer ?? '', protocol: e.protocol });
          return;
        case 'connection-closed':
          bytes.inc({ direction: 'inbound', peer: e.peer ?? '', flow: 'read' }, e.bytesIn);
          bytes.inc({ direction: 'inbound', peer: e.peer ?? '', flow: 'written' }, e.bytesOut);
          return;
        case 'http-request':
          inboundRequest(e.protocol, e.status).observe(e.durationMs / 1000);
          return;
      }
    },
    outbound(e) {
      switch (e.type) {
        case 'handshake':
          if (e.ok) countGroup('outbound', e.algorithms.group);
          handshakes.inc({
            direction: 'outbound',
            result: e.ok ? 'ok' : 'failed',
            reason: e.ok ? '' : e.reason,
            group: e.ok ? e.algorithms.group : '',
            cipher: e.ok ? e.algorithms.cipher : '',
          });
          return;
        case 'opened':
          connections.inc({ direction: 'outbound', peer: e.peerIdentity, protocol: 'tls' });
          return;
        case 'closed':
          bytes.inc({ direction: 'outbound', peer: e.peerIdentity, flow: 'written' }, e.bytesSent);
          bytes.inc({ direction: 'outbound', peer: e.peerIdentity, flow: 'read' }, e.bytesReceived);
          return;
        default:
          outbound(e);
      }
    },
  };
}

/** Most (destination, server identity) pairs whose series {@link RequestSeries} keeps at hand. */
export const MAX_KEPT_REQUEST_SERIES = 1024;

/** The counter child and latency series of one (dst, server_id, tls, classification). */
interface RequestPair {
  readonly count: { inc(): void };
  readonly latency: Series;
}

/**
 * The transparent listener's per-request series, kept by destination and server identity so a
 * request costs two map lookups on strings the listener already holds, not a label hash in
 * prom-client and a JSON key for the histogram. At most {@link MAX_KEPT_REQUEST_SERIES} pairs are
 * kept; requests for further pairs are counted the same way, looked up each time.
 */
class RequestSeries {
  readonly #requests: Counter<'dst' | 'server_id' | 'tls' | 'classification'>;
  readonly #latency: LatencyHistogram;
  /** dst → server_id → [tls false/true × failure/success]. */
  readonly #kept = new Map<string, Map<string, (RequestPair | undefined)[]>>();
  #size = 0;

  constructor(
    requests: Counter<'dst' | 'server_id' | 'tls' | 'classification'>,
    latency: LatencyHistogram,
  ) {
    this.#requests = requests;
    this.#latency = latency;
  }

  of(dst: string, serverId: string, tls: boolean, ok: boolean): RequestPair {
    let byId = this.#kept.get(dst);
    let pairs = byId?.get(serverId);
    const i = (tls ? 2 : 0) + (ok ? 1 : 0);
    const kept = pairs?.[i];
    if (kept !== undefined) return kept;
    const tlsLabel = tls ? 'true' : 'false';
    const classification = ok ? 'success' : 'failure';
    const pair: RequestPair = {
      count: this.#requests.labels({ dst, server_id: serverId, tls: tlsLabel, classification }),
      latency: this.#latency.series({ dst, tls: tlsLabel, classification }),
    };
    if (this.#size >= MAX_KEPT_REQUEST_SERIES) return pair;
    this.#size++;
    if (byId === undefined) this.#kept.set(dst, (byId = new Map()));
    if (pairs === undefined) byId.set(serverId, (pairs = []));
    pairs[i] = pair;
    return pair;
  }
}

/**
 * The outbound listeners' refused connections, and the transparent listener's metrics, with
 * Linkerd's label names: `dst` (the address the app
 * dialled), `server_id` (the identity the endpoint proved), `tls` ("true" when meshed), and
 * `classification` (`success` below 500, `failure` otherwise or when no answer came).
 */
function registerOutboundMetrics(registry: Registry): (e: OutboundEvent) => void {
  const latency = new LatencyHistogram(
    'meshid_proxy_outbound_response_latency_seconds',
    'HTTP request latency through the transparent outbound, by destination, tls and classification.',
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
  );
  registry.registerMetric(latency as unknown as Metric);
  const requests = new Counter({
    name: 'meshid_proxy_outbound_requests_total',
    help: 'HTTP requests through the transparent outbound, by destination, server identity, tls and classification.',
    labelNames: ['dst', 'server_id', 'tls', 'classification'] as const,
    registers: [registry],
  });
  const passthrough = new Counter({
    name: 'meshid_proxy_outbound_plaintext_connections_total',
    help: 'Connections the transparent outbound passed through without TLS, by destination and reason.',
    labelNames: ['dst', 'tls', 'reason'] as const,
    registers: [registry],
  });
  const unavailable = new Gauge({
    name: 'meshid_proxy_destination_unavailable',
    help: 'Destinations whose watch has lost the destination service now (last answers kept).',
    registers: [registry],
  });
  const lost = new Counter({
    name: 'meshid_proxy_destination_unavailable_total',
    help: 'Times a destination watch lost the destination service.',
    registers: [registry],
  });
  const requestSeries = new RequestSeries(requests, latency);
  const refused = new Counter({
    name: 'meshid_proxy_outbound_connections_refused_total',
    help: "Connections from the app refused by an outbound listener's connection cap, by listener and reason (total: the listener is full; per-peer: the address holds its share).",
    labelNames: ['listener', 'reason'] as const,
    registers: [registry],
  });
  return (e) => {
    switch (e.type) {
      case 'refused':
        refused.inc({ listener: e.listener, reason: e.reason });
        return;
      case 'request': {
        const s = requestSeries.of(e.dst, e.peerIdentity, e.tls, e.status > 0 && e.status < 500);
        s.count.inc();
        s.latency.observe(e.durationMs / 1000);
        return;
      }
      case 'passthrough':
        passthrough.inc({
          dst: formatAddress(e.target),
          tls: 'false',
          reason: e.reason,
        });
        return;
      case 'discovery':
        if (e.available) unavailable.dec();
        else {
          unavailable.inc();
          lost.inc();
        }
        return;
      default:
        return;
    }
  };
}

/**
 * Distinct `port` label values of the transparent inbound's counter; connections to further
 * ports (a port scan of the pod) are counted under `port="other"`, so one peer cannot grow the
 * series without bound.
 */
const MAX_TRANSPARENT_PORT_SERIES = 64;

/**
 * The transparent inbound's connections by original port, kind (`mtls`, `plaintext`,
 * `other-tls`), the port's policy and the result (`allowed`, `refused`), with `tls` ("true" for
 * meshid mTLS), so a refused plaintext connection shows which port and policy refused it.
 */
function registerTransparentInboundMetrics(
  registry: Registry,
): (e: TransparentInboundEvent) => void {
  const connections = new Counter({
    name: 'meshid_proxy_inbound_transparent_connections_total',
    help: 'Redirected inbound connections by original port, kind, port policy, tls and result (allowed or refused).',
    labelNames: ['port', 'kind', 'policy', 'tls', 'result'] as const,
    registers: [registry],
  });
  const ports = new Set<number>();
  return (e) => {
    if (!ports.has(e.port) && ports.size < MAX_TRANSPARENT_PORT_SERIES) ports.add(e.port);
    connections.inc({
      port: ports.has(e.port) ? String(e.port) : 'other',
      kind: e.kind,
      policy: e.policy,
      tls: e.kind === 'mtls' ? 'true' : 'false',
      result: e.allowed ? 'allowed' : 'refused',
    });
  };
}
