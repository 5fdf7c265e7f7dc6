import { strict as assert } from 'node:assert';
import type { EndpointSet, EndpointWatch, Resolver } from '../../../proxy/destination-client.js';
import { resolverOverDestinationClient } from '../../../proxy/index.js';
import { updatesOf } from '../../../proxy/transparent/destination-adapter.js';
import type { EndpointUpdate } from '../../../proxy/transparent/resolver.js';

const WEB = 'web.emojivoto.serviceaccount.identity.linkerd.cluster.local';
const endpoints = (stale: boolean): EndpointSet => ({
  kind: 'endpoints',
  stale,
  endpoints: new Map([
    [
      '10.0.0.7:8080',
      {
        ip: '10.0.0.7',
        port: 8080,
        identity: WEB,
        protocol: 'opaque',
        opaqueTransportPort: 4143,
        weight: 1,
        labels: {},
      },
    ],
    ['10.0.0.8:8080', { ip: '10.0.0.8', port: 8080, weight: 1, labels: {} }],
  ]),
});

describe("the transparent listener's resolver over the destination client", function () {
  it('translates endpoints (meshed with identity, inbound port and hint; unmeshed without)', function () {
    assert.deepEqual(updatesOf(endpoints(false)), [
      {
        kind: 'endpoints',
        endpoints: [
          {
            address: { host: '10.0.0.7', port: 8080 },
            meshed: true,
            identity: WEB,
            inboundPort: 4143,
            protocolHint: 'opaque',
          },
          { address: { host: '10.0.0.8', port: 8080 }, meshed: false },
        ],
      },
    ]);
  });

  it('passes a stale answer on as the endpoints, then as unavailable (kept, and counted)', function () {
    const u = updatesOf(endpoints(true));
    assert.equal(u.length, 2);
    assert.equal(u[0]!.kind, 'endpoints');
    assert.equal(u[1]!.kind, 'unavailable');
  });

  it('maps pass-through answers: unknown and invalid to unknown, unavailable to unavailable', function () {
    assert.deepEqual(updatesOf({ kind: 'pass-through', reason: 'unknown' }), [{ kind: 'unknown' }]);
    assert.deepEqual(updatesOf({ kind: 'pass-through', reason: 'invalid' }), [{ kind: 'unknown' }]);
    assert.equal(
      updatesOf({ kind: 'pass-through', reason: 'unavailable' })[0]!.kind,
      'unavailable',
    );
  });

  it('watches the original destination by IP and port, hears the first answer and changes, and closes the watch when stopped', async function () {
    const asked: unknown[] = [];
    let change: ((s: EndpointSet) => void) | undefined;
    let closed = false;
    const client: Resolver = {
      resolve(target) {
        asked.push(target);
        const watch: EndpointWatch = {
          target,
          current: () => undefined,
          answer: () => Promise.resolve({ kind: 'pass-through', reason: 'unknown' }),
          onChange: (l) => {
            change = l;
            return () => (change = undefined);
          },
          close: () => (closed = true),
        };
        return watch;
      },
    };
    const heard: EndpointUpdate[] = [];
    const stop = resolverOverDestinationClient(client).resolve(
      { host: '10.96.0.10', port: 80 },
      (u) => heard.push(u),
    );
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(asked, [{ ip: '10.96.0.10', port: 80 }]);
    change?.(endpoints(false));
    assert.deepEqual(
      heard.map((u) => u.kind),
      ['unknown', 'endpoints'],
    );
    stop();
    assert.equal(closed, true);
    assert.equal(change, undefined);
  });
});
