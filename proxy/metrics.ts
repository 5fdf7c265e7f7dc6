/**
 * The proxy's traffic metrics: TLS handshakes and failures by reason, connections and bytes by
 * direction and peer identity, and HTTP request latency. Fed from the listeners' events.
 */
import type { Registry } from '../core/index.js';
import { Counter, Histogram } from '../core/index.js';
import type { InboundEvent } from './inbound.js';
import type { OutboundEvent } from './outbound.js';

/** Records inbound events. */
export interface TrafficMetrics {
  inbound(e: InboundEvent): void;
  outbound(e: OutboundEvent): void;
}

/**
 * Registers the traffic metrics on `registry`.
 *
 * @example
 * ```ts
 * const traffic = registerTrafficMetrics(registry);
 * new InboundProxy({ ..., observe: (e) => traffic.inbound(e) });
 * ```
 */
export function registerTrafficMetrics(registry: Registry): TrafficMetrics {
  const handshakes = new Counter({
    name: 'meshid_proxy_tls_handshakes_total',
    help: 'TLS handshakes by direction, result and failure reason.',
    labelNames: ['direction', 'result', 'reason'] as const,
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
  const requests = new Histogram({
    name: 'meshid_proxy_request_duration_seconds',
    help: 'HTTP request latency through the proxy, by direction, protocol and status class.',
    labelNames: ['direction', 'protocol', 'status'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });
  return {
    inbound(e) {
      switch (e.type) {
        case 'handshake-succeeded':
          handshakes.inc({ direction: 'inbound', result: 'ok', reason: '' });
          return;
        case 'handshake-failed':
          handshakes.inc({ direction: 'inbound', result: 'failed', reason: e.reason });
          return;
        case 'connection-opened':
          connections.inc({ direction: 'inbound', peer: e.peer ?? '', protocol: e.protocol });
          return;
        case 'connection-closed':
          bytes.inc({ direction: 'inbound', peer: e.peer ?? '', flow: 'read' }, e.bytesIn);
          bytes.inc({ direction: 'inbound', peer: e.peer ?? '', flow: 'written' }, e.bytesOut);
          return;
        case 'http-request':
          requests.observe(
            {
              direction: 'inbound',
              protocol: e.protocol,
              status: `${Math.floor(e.status / 100)}xx`,
            },
            e.durationMs / 1000,
          );
          return;
      }
    },
    outbound(e) {
      switch (e.type) {
        case 'handshake':
          handshakes.inc({
            direction: 'outbound',
            result: e.ok ? 'ok' : 'failed',
            reason: e.ok ? '' : e.reason,
          });
          return;
        case 'opened':
          connections.inc({ direction: 'outbound', peer: e.peerIdentity, protocol: 'tls' });
          return;
        case 'closed':
          bytes.inc({ direction: 'outbound', peer: e.peerIdentity, flow: 'written' }, e.bytesSent);
          bytes.inc({ direction: 'outbound', peer: e.peerIdentity, flow: 'read' }, e.bytesReceived);
          return;
      }
    },
  };
}
