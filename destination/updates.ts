/**
 * Turns a subscription's successive answers into the Destination API's updates, following the
 * contract Linkerd's destination.proto states: the first message of a stream describes the whole
 * set (an `add`, or `no_endpoints` when there is none), later ones only what changed; an endpoint
 * sent again in an `add` replaces its earlier description; `no_endpoints` clears the set.
 */
import type { DestinationProfile, DestinationUpdate, WeightedAddr } from '../core/index.js';
import type { Resolution } from './endpoint-index.js';

/**
 * The updates of one Get stream.
 *
 * @example
 * ```ts
 * const stream = new UpdateStream();
 * index.subscribe(target, (r) => { for (const u of stream.next(r)) send(u); });
 * ```
 */
export class UpdateStream {
  /** What the client holds now: endpoint key → its description as sent. */
  #held: Map<string, string> | undefined;
  #exists = false;

  next(r: Resolution): DestinationUpdate[] {
    const first = this.#held === undefined;
    const held = this.#held ?? new Map<string, string>();
    const existed = this.#exists;
    this.#exists = r.exists;
    if (r.endpoints.size === 0) {
      const changed = first || held.size > 0 || existed !== r.exists;
      this.#held = new Map();
      return changed ? [{ noEndpoints: { exists: r.exists } }] : [];
    }
    const removed = [...held.keys()].filter((k) => !r.endpoints.has(k));
    const added: WeightedAddr[] = [];
    const next = new Map<string, string>();
    for (const [key, ep] of r.endpoints) {
      const text = JSON.stringify(ep);
      next.set(key, text);
      if (held.get(key) !== text) added.push(ep);
    }
    this.#held = next;
    const out: DestinationUpdate[] = [];
    if (removed.length > 0) {
      out.push({
        remove: {
          addrs: removed.map((k) => JSON.parse(held.get(k)!) as WeightedAddr).map((e) => e.addr),
        },
      });
    }
    if (added.length > 0) out.push({ add: { addrs: added, metricLabels: r.metricLabels } });
    return out;
  }
}

/**
 * The profile of an answer.
 *
 * @example
 * ```ts
 * profileOf(index.resolve(target)); // { fullyQualifiedName: 'web.emojivoto.svc.cluster.local', opaqueProtocol: false }
 * ```
 */
export function profileOf(r: Resolution): DestinationProfile {
  return {
    fullyQualifiedName: r.fullyQualifiedName,
    opaqueProtocol: r.opaque,
    ...(r.podEndpoint === undefined ? {} : { endpoint: r.podEndpoint }),
  };
}
