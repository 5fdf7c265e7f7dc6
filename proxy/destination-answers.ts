/**
 * What the proxy's client of the destination service (destination-client.ts) answers: the
 * targets it resolves, the endpoint sets it hands out, the watch of one target, and the one
 * record per target that applies the Destination API's updates (`add`, `remove`,
 * `noEndpoints`) to the endpoints it holds.
 */
import type { ClientHttp2Stream } from 'node:http2';
import type { DestinationUpdate } from '../core/index.js';
import { formatAddress } from '../core/index.js';

/** What to resolve: an original destination address, or a Service name (`web.shop.svc.cluster.local`). */
export type ResolveTarget =
  { readonly ip: string; readonly port: number } | { readonly name: string; readonly port: number };

/** One endpoint of an answer. */
export interface ResolvedEndpoint {
  readonly ip: string;
  readonly port: number;
  /** Meshed: the identity its certificate must name (connect with mTLS to exactly this). Absent: plain TCP. */
  readonly identity?: string;
  /** `h2`: HTTP over the multiplexed HTTP/2 mTLS connection; `opaque`: the bytes as they are. */
  readonly protocol?: 'h2' | 'opaque';
  /** For an opaque port of a meshed endpoint: its proxy's inbound port, for the transport.l5d.io/v1 header. */
  readonly opaqueTransportPort?: number;
  readonly weight: number;
  /** Labels for metrics (`pod`, `serviceaccount`, and the set's `namespace`, `service`). */
  readonly labels: Readonly<Record<string, string>>;
}

/** Why an answer says to pass a connection through as plain TCP to its original destination. */
export type PassThroughReason =
  /** The destination service does not know the target (not a Service, not a pod). */
  | 'unknown'
  /** No answer could be had: the service is unreachable, or did not answer in time. */
  | 'unavailable'
  /** The service refused the target as malformed. */
  | 'invalid';

/** An answer. */
export type EndpointSet =
  | {
      readonly kind: 'endpoints';
      /** Every ready endpoint, by `ip:port` (IPv6 in brackets). */
      readonly endpoints: ReadonlyMap<string, ResolvedEndpoint>;
      /** True while the service is unreachable: this is the last answer it gave. */
      readonly stale: boolean;
    }
  /** The target exists (a Service) but has no ready endpoint: fail the connection, do not bypass. */
  | { readonly kind: 'no-endpoints'; readonly stale: boolean }
  | { readonly kind: 'pass-through'; readonly reason: PassThroughReason };

/**
 * A followed target. Take `current()` for the answer now, `answer()` to wait for the first one
 * (bounded: it never stalls a connection), `onChange` to hear of changes; `close()` when done.
 */
export interface EndpointWatch {
  readonly target: ResolveTarget;
  /** The answer now; undefined until the first one (or until the wait for it gave up). */
  current(): EndpointSet | undefined;
  /**
   * The first answer; pass-through (`unavailable`) at once while the service is unreachable, or
   * after `timeoutMs` (default the client's `answerTimeoutMs`) without one.
   */
  answer(timeoutMs?: number): Promise<EndpointSet>;
  /** Called with each new answer; returns the function that stops it. */
  onChange(listener: (set: EndpointSet) => void): () => void;
  /** Releases this watch (the answer is kept a while for the next caller). */
  close(): void;
}

/**
 * What the transparent outbound needs: resolve a target to a watch of its answers.
 *
 * @example
 * ```ts
 * const watch = resolver.resolve({ ip: '10.96.0.10', port: 80 });
 * const set = await watch.answer();
 * if (set.kind === 'pass-through') return plainTcp(original);
 * ```
 */
export interface Resolver {
  resolve(target: ResolveTarget): EndpointWatch;
}

/** The `path` of a GetDestination for a target: `ip:port` (IPv6 in brackets) or `name:port`. */
export function targetPath(t: ResolveTarget): string {
  if ('name' in t) return `${t.name}:${t.port}`;
  return formatAddress({ host: t.ip, port: t.port });
}

/** The key of an endpoint in a set: `ip:port`, IPv6 in brackets. */
function addrKey(ip: string, port: number): string {
  return formatAddress({ host: ip, port });
}

/** One target's stream and answer, shared by every watch of it. */
export class Entry {
  readonly path: string;
  refs = 0;
  idleTimer: NodeJS.Timeout | undefined;
  stream: ClientHttp2Stream | undefined;
  /** Endpoints held; undefined before the first answer. */
  held: Map<string, ResolvedEndpoint> | undefined;
  exists = false;
  invalid = false;
  stale = false;
  /** True until the first message of the current stream (a snapshot that replaces what is held). */
  fresh = true;
  readonly listeners = new Set<(set: EndpointSet) => void>();
  readonly waiters = new Set<(set: EndpointSet) => void>();

  constructor(readonly target: ResolveTarget) {
    this.path = targetPath(target);
  }

  get set(): EndpointSet | undefined {
    if (this.invalid) return { kind: 'pass-through', reason: 'invalid' };
    if (this.held === undefined) return undefined;
    if (!this.exists) return { kind: 'pass-through', reason: 'unknown' };
    if (this.held.size === 0) return { kind: 'no-endpoints', stale: this.stale };
    return { kind: 'endpoints', endpoints: new Map(this.held), stale: this.stale };
  }

  /** Applies one update; the first of a stream replaces what is held. */
  apply(u: DestinationUpdate): void {
    const held =
      this.fresh || this.held === undefined ? new Map<string, ResolvedEndpoint>() : this.held;
    this.fresh = false;
    this.stale = false;
    if ('add' in u) {
      this.exists = true;
      for (const a of u.add.addrs) {
        const hint = a.protocolHint;
        held.set(addrKey(a.addr.ip, a.addr.port), {
          ip: a.addr.ip,
          port: a.addr.port,
          weight: a.weight,
          labels: { ...u.add.metricLabels, ...a.metricLabels },
          ...(a.tlsIdentity === undefined ? {} : { identity: a.tlsIdentity }),
          ...(hint?.protocol === undefined ? {} : { protocol: hint.protocol }),
          ...(hint?.opaqueTransport === undefined
            ? {}
            : { opaqueTransportPort: hint.opaqueTransport.inboundPort }),
        });
      }
    } else if ('remove' in u) {
      this.exists = true;
      for (const a of u.remove.addrs) held.delete(addrKey(a.ip, a.port));
    } else {
      this.exists = u.noEndpoints.exists;
      held.clear();
    }
    this.held = held;
    this.notify();
  }

  notify(): void {
    const set = this.set;
    if (set === undefined) return;
    for (const w of [...this.waiters]) w(set);
    this.waiters.clear();
    for (const l of [...this.listeners]) l(set);
  }
}
