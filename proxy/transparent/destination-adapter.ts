/**
 * The transparent outbound's {@link Resolver} over the proxy's client of the destination service
 * (destination-client.ts): its answers for an original destination, translated into endpoint
 * updates. The client already keeps the last answer while the service is away and bounds the
 * first wait; a stale answer is passed on as the endpoints, then as "unavailable", so the
 * listener keeps using them and counts the outage.
 */
import type {
  EndpointSet,
  ResolvedEndpoint as ClientEndpoint,
  Resolver as ClientResolver,
} from '../destination-client.js';
import type { EndpointUpdate, ResolvedEndpoint, Resolver } from './resolver.js';

/**
 * Adapts the destination client to the transparent listener's resolver.
 *
 * @example
 * ```ts
 * const resolver = resolverOverDestinationClient(new DestinationClient({ ... }));
 * ```
 */
export function resolverOverDestinationClient(client: ClientResolver): Resolver {
  return {
    resolve(target, onUpdate) {
      const watch = client.resolve({ ip: target.host, port: target.port });
      let stopped = false;
      const deliver = (set: EndpointSet): void => {
        if (stopped) return;
        for (const u of updatesOf(set)) onUpdate(u);
      };
      const stop = watch.onChange(deliver);
      void watch
        .answer()
        .then(deliver, () => deliver({ kind: 'pass-through', reason: 'unavailable' }));
      return () => {
        stopped = true;
        stop();
        watch.close();
      };
    },
  };
}

/** One client answer as the listener's updates. */
export function updatesOf(set: EndpointSet): EndpointUpdate[] {
  switch (set.kind) {
    case 'endpoints': {
      const endpoints = [...set.endpoints.values()].map(endpointOf);
      const update: EndpointUpdate = { kind: 'endpoints', endpoints };
      return set.stale ? [update, stale()] : [update];
    }
    case 'no-endpoints':
      return set.stale
        ? [{ kind: 'endpoints', endpoints: [] }, stale()]
        : [{ kind: 'endpoints', endpoints: [] }];
    case 'pass-through':
      return set.reason === 'unavailable'
        ? [{ kind: 'unavailable', message: 'the destination service gave no answer' }]
        : [{ kind: 'unknown' }];
  }
}

function stale(): EndpointUpdate {
  return {
    kind: 'unavailable',
    message: 'the destination service is unreachable (last answer kept)',
  };
}

function endpointOf(e: ClientEndpoint): ResolvedEndpoint {
  return {
    address: { host: e.ip, port: e.port },
    meshed: e.identity !== undefined,
    ...(e.identity !== undefined ? { identity: e.identity } : {}),
    ...(e.opaqueTransportPort !== undefined ? { inboundPort: e.opaqueTransportPort } : {}),
    ...(e.protocol !== undefined ? { protocolHint: e.protocol } : {}),
  };
}
