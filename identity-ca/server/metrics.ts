/**
 * The CA's metrics. In a multi-process CA every worker has these on its own registry and the
 * primary aggregates them: counters and histograms add up; the issuer gauges take the minimum
 * across workers (the worst case is what an alert should see).
 */
import type { Clock, Registry } from '../../core/index.js';
import { Counter, Gauge, GrpcStatus, Histogram } from '../../core/index.js';
import type { IssuerCredentials } from '../issuer/material.js';

const STATUS_NAMES = Object.fromEntries(
  Object.entries(GrpcStatus).map(([k, v]) => [v, k]),
) as Record<number, string>;

/** The CA's instruments. */
export interface CaMetrics {
  /** Counts a finished Certify call and records its latency. */
  observeCall(status: number, durationSeconds: number): void;
  /** Counts an issuer update, accepted or rejected. */
  issuerUpdate(result: 'accepted' | 'rejected'): void;
  /** Records the serving certificate's expiry. */
  servingCertificate(notAfter: number): void;
  /** Counts a Kubernetes Event not written (rate limit, full queue, API error). */
  eventDropped(why: 'rate-limited' | 'queue-full' | 'error'): void;
  /** Counts a Certify call refused by admission control, by why. */
  admissionRefused(why: string): void;
  /** Counts a Certify call dropped because its caller had gone (deadline, stream closed). */
  callDropped(why: string, stage: string): void;
  /** Counts a connection closed by the handshake gate without a handshake, by why. */
  connectionRefused(why: string): void;
  /** Records how long a connection waited for a handshake slot. */
  handshakeWaited(seconds: number): void;
  /** Counts a finished TLS handshake by its key-exchange group and cipher suite. */
  handshake(algorithms: { group: string; cipher: string }): void;
  /** Counts an answered (or contended) PodCertificateRequest by outcome and reason. */
  podCertificate(outcome: string, reason: string): void;
}

/** What the CA's metrics read when scraped. */
export interface CaMetricsDeps {
  readonly clock: Clock;
  readonly currentIssuer: () => IssuerCredentials | undefined;
  /** Calls admitted and running, and waiting, now (with admission control). */
  readonly admissionLoad?: () => { inFlight: number; queued: number };
  /** TLS handshakes in progress, and connections waiting for one, now (with the gate). */
  readonly handshakeLoad?: () => { handshaking: number; waiting: number };
}

/** Registers the CA's metrics on `registry`: one group per job, each with its instruments. */
export function registerCaMetrics(registry: Registry, deps: CaMetricsDeps): CaMetrics {
  return {
    ...callMetrics(registry, deps),
    ...handshakeMetrics(registry, deps),
    ...issuerMetrics(registry, deps),
    ...kubernetesMetrics(registry),
  };
}

/** A counter only ever incremented: a method adding one under its label values, in order. */
function counting(
  registry: Registry,
  name: string,
  help: string,
  labelNames: readonly string[],
): (...values: string[]) => void {
  const metric = new Counter({ name, help, labelNames, registers: [registry] });
  return (...values) => metric.labels(...values).inc();
}

/** A gauge read when scraped; `min` is the aggregate across workers (the worst case). */
function gauge(
  registry: Registry,
  name: string,
  help: string,
  value: () => number | undefined,
  aggregator?: 'min',
): void {
  new Gauge({
    name,
    help,
    registers: [registry],
    ...(aggregator === undefined ? {} : { aggregator }),
    collect() {
      const v = value();
      if (v === undefined) this.reset();
      else this.set(v);
    },
  });
}

/** Gauges of one load source, when there is one: name, help, the field each reads. */
function loadGauges<K extends string>(
  registry: Registry,
  load: (() => Record<K, number>) | undefined,
  defs: readonly [string, string, K][],
): void {
  if (load === undefined) return;
  for (const [name, help, key] of defs) gauge(registry, name, help, () => load()[key]);
}

/** Certify calls: answered, refused by admission control, dropped; the admission load. */
function callMetrics(
  registry: Registry,
  deps: CaMetricsDeps,
): Pick<CaMetrics, 'observeCall' | 'admissionRefused' | 'callDropped'> {
  const requests = new Counter({
    name: 'meshid_certify_requests_total',
    help: 'Certify calls by outcome (issued, refused, error) and gRPC status code.',
    labelNames: ['outcome', 'code'] as const,
    registers: [registry],
  });
  const latency = new Histogram({
    name: 'meshid_certify_duration_seconds',
    help: 'Time to answer a Certify call, from request decoded to response ready.',
    labelNames: ['outcome'] as const,
    buckets: [0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });
  const admissionRefused = counting(
    registry,
    'meshid_certify_admission_refused_total',
    'Certify calls refused with RESOURCE_EXHAUSTED by admission control, by reason (source-rate, identity-rate, queue-full, displaced).',
    ['reason'],
  );
  const callDropped = counting(
    registry,
    'meshid_certify_dropped_total',
    'Certify calls dropped unanswered or answered DEADLINE_EXCEEDED/CANCELLED because the caller had gone, by reason (deadline, gone) and stage (queue, start, token, sign); none of them was signed.',
    ['reason', 'stage'],
  );
  loadGauges(registry, deps.admissionLoad, [
    ['meshid_certify_in_flight', 'Certify calls admitted and being decided now.', 'inFlight'],
    ['meshid_certify_queued', 'Certify calls waiting for admission now.', 'queued'],
  ]);
  const byStatus = new Map<
    number,
    { count: ReturnType<typeof requests.labels>; latency: ReturnType<typeof latency.labels> }
  >();
  return {
    observeCall(status, durationSeconds) {
      // Label lookups hash their strings on every call; the children are looked up once per
      // status instead (this runs on every Certify).
      let child = byStatus.get(status);
      if (child === undefined) {
        const outcome =
          status === GrpcStatus.OK
            ? 'issued'
            : status === GrpcStatus.INTERNAL || status === GrpcStatus.UNKNOWN
              ? 'error'
              : 'refused';
        child = {
          count: requests.labels(outcome, STATUS_NAMES[status] ?? String(status)),
          latency: latency.labels(outcome),
        };
        byStatus.set(status, child);
      }
      child.count.inc();
      child.latency.observe(durationSeconds);
    },
    admissionRefused,
    callDropped,
  };
}

/** TLS connections: refused by the handshake gate, waits for a slot, finished handshakes. */
function handshakeMetrics(
  registry: Registry,
  deps: CaMetricsDeps,
): Pick<CaMetrics, 'connectionRefused' | 'handshakeWaited' | 'handshake'> {
  const connectionsRefused = counting(
    registry,
    'meshid_certify_connections_refused_total',
    'Connections closed by the handshake limit, by reason (wait-timeout, queue-full, hello-timeout, handshake-stalled), or right after their handshake because the client address held its share of connections (per-peer).',
    ['reason'],
  );
  const tlsHandshakes = counting(
    registry,
    'meshid_certify_tls_handshakes_total',
    'Finished TLS handshakes with Certify clients, by key-exchange group (X25519MLKEM768 is the post-quantum hybrid) and cipher suite.',
    ['group', 'cipher'],
  );
  const handshakeWait = new Histogram({
    name: 'meshid_certify_handshake_wait_seconds',
    help: 'Time a connection waited for a TLS handshake slot (0 when one was free).',
    buckets: [0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  loadGauges(registry, deps.handshakeLoad, [
    [
      'meshid_certify_handshakes_in_progress',
      'TLS handshakes of Certify connections in progress now.',
      'handshaking',
    ],
    [
      'meshid_certify_connections_waiting',
      'Connections waiting for a TLS handshake slot now.',
      'waiting',
    ],
  ]);
  return {
    connectionRefused: connectionsRefused,
    handshakeWaited: (seconds) => handshakeWait.observe(seconds),
    handshake: ({ group, cipher }) => tlsHandshakes(group, cipher),
  };
}

/** The issuer gauges: name, help, value from the issuer in use and now (ms). */
const ISSUER_GAUGES: readonly [string, string, (i: IssuerCredentials, now: number) => number][] = [
  [
    'meshid_issuer_not_after_timestamp_seconds',
    'NotAfter of the issuer in use (Unix seconds).',
    (i) => i.notAfter / 1000,
  ],
  [
    'meshid_issuer_cert_ttl_seconds',
    'Seconds until the issuer in use expires.',
    (i, now) => (i.notAfter - now) / 1000,
  ],
  [
    'issuer_cert_ttl_seconds',
    'Seconds until the issuer in use expires (Linkerd-compatible name).',
    (i, now) => (i.notAfter - now) / 1000,
  ],
  [
    'meshid_issuer_chain_not_after_timestamp_seconds',
    'Earliest NotAfter over the issuer, its chain and its anchor (Unix seconds); leaves are clamped to it.',
    (i) => i.chainNotAfter / 1000,
  ],
  [
    'meshid_trust_anchors_earliest_not_after_timestamp_seconds',
    'Earliest NotAfter among the loaded trust anchors (Unix seconds).',
    (i) => i.anchors.earliestNotAfter / 1000,
  ],
];

/** The issuer and serving certificate in use: their expiry, and issuer updates. */
function issuerMetrics(
  registry: Registry,
  deps: CaMetricsDeps,
): Pick<CaMetrics, 'issuerUpdate' | 'servingCertificate'> {
  const issuerUpdates = counting(
    registry,
    'meshid_issuer_updates_total',
    'Issuer or trust-anchor changes seen, by result.',
    ['result'],
  );
  for (const [name, help, value] of ISSUER_GAUGES) {
    const read = (): number | undefined => {
      const issuer = deps.currentIssuer();
      return issuer === undefined ? undefined : value(issuer, deps.clock.now());
    };
    gauge(registry, name, help, read, 'min');
  }
  const serving = new Gauge({
    name: 'meshid_serving_cert_not_after_timestamp_seconds',
    help: "NotAfter of the CA's own serving certificate (Unix seconds).",
    registers: [registry],
    aggregator: 'min',
  });
  return {
    issuerUpdate: issuerUpdates,
    servingCertificate: (notAfter) => serving.set(notAfter / 1000),
  };
}

/** Kubernetes work: Events not written, PodCertificateRequests answered. */
function kubernetesMetrics(registry: Registry): Pick<CaMetrics, 'eventDropped' | 'podCertificate'> {
  const eventDropped = counting(
    registry,
    'meshid_kubernetes_events_dropped_total',
    'Kubernetes Events not written, by reason (rate-limited, queue-full, error).',
    ['reason'],
  );
  const podCertificate = counting(
    registry,
    'meshid_podcert_requests_total',
    'PodCertificateRequests handled by the pod certificate signer, by outcome (issued, denied, failed; conflict: another replica answered first; error: the API failed, retried) and reason.',
    ['outcome', 'reason'],
  );
  return { eventDropped, podCertificate };
}
