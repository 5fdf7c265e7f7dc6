import { strict as assert } from 'node:assert';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import {
  canonicalIp,
  decodeDestinationUpdate,
  decodeGetDestination,
  encodeDestinationProfile,
  encodeDestinationUpdate,
  encodeGetDestination,
  isMeshidError,
} from '../../../core/index.js';
import { decodeDestinationProfile } from '../../../core/destination-wire.js';
import type { WeightedAddr } from '../../../core/index.js';

const PROTO = fileURLToPath(
  new URL('../../../destination/proto/destination.proto', import.meta.url),
);
const ID = 'web.emojivoto.serviceaccount.identity.linkerd.cluster.local';

describe('Destination protobuf codec (checked against protobufjs loading destination.proto)', () => {
  let Get: protobuf.Type;
  let Update: protobuf.Type;
  let Profile: protobuf.Type;
  before(async () => {
    const root = new protobuf.Root();
    await root.load(PROTO, { keepCase: true });
    Get = root.lookupType('io.linkerd.proxy.destination.GetDestination');
    Update = root.lookupType('io.linkerd.proxy.destination.Update');
    Profile = root.lookupType('io.linkerd.proxy.destination.DestinationProfile');
  });

  it('decodes a GetDestination encoded by protobufjs, and encodes one it reads back', () => {
    const bytes = Get.encode(
      Get.create({ scheme: 'k8s', path: '10.96.0.10:80', context_token: '{"ns":"x"}' }),
    ).finish();
    assert.deepEqual(decodeGetDestination(bytes), {
      scheme: 'k8s',
      path: '10.96.0.10:80',
      contextToken: '{"ns":"x"}',
    });
    const mine = encodeGetDestination({
      scheme: 'k8s',
      path: 'web.ns.svc.cluster.local:80',
      contextToken: '',
    });
    assert.deepEqual(Get.toObject(Get.decode(mine)), {
      scheme: 'k8s',
      path: 'web.ns.svc.cluster.local:80',
    });
  });

  it('encodes an add with IPv4 and IPv6 endpoints, identity and hints exactly as protobufjs reads it', () => {
    const addrs: WeightedAddr[] = [
      {
        addr: { ip: '10.0.0.7', port: 8080 },
        weight: 10000,
        metricLabels: { pod: 'web-0', namespace: 'emojivoto' },
        tlsIdentity: ID,
        protocolHint: { protocol: 'h2' },
      },
      {
        addr: { ip: 'fd00::a:7', port: 9000 },
        weight: 10000,
        metricLabels: {},
        tlsIdentity: ID,
        protocolHint: { protocol: 'opaque', opaqueTransport: { inboundPort: 4143 } },
      },
      { addr: { ip: '255.1.2.3', port: 1 }, weight: 1, metricLabels: {} },
    ];
    const bytes = encodeDestinationUpdate({ add: { addrs, metricLabels: { service: 'web' } } });
    const theirs = Update.toObject(Update.decode(bytes), { longs: String }) as {
      remove?: unknown;
      add: { addrs: Record<string, unknown>[]; metric_labels: Record<string, string> };
    };
    assert.equal(theirs.remove, undefined);
    assert.deepEqual(theirs.add.metric_labels, { service: 'web' });
    const [a, b, c] = theirs.add.addrs as [
      Record<string, never>,
      Record<string, never>,
      Record<string, never>,
    ];
    assert.deepEqual(a['addr'], { ip: { ipv4: 0x0a000007 }, port: 8080 });
    assert.deepEqual(a['tls_identity'], { dns_like_identity: { name: ID } });
    assert.deepEqual(a['protocol_hint'], { h2: {} });
    assert.deepEqual(a['metric_labels'], { pod: 'web-0', namespace: 'emojivoto' });
    assert.equal(a['weight'], 10000);
    // fd00::a:7 → first = 0xfd00000000000000, last = 0x00000000000a0007.
    assert.deepEqual(b['addr'], {
      ip: { ipv6: { first: (0xfd00n << 48n).toString(), last: '655367' } },
      port: 9000,
    });
    assert.deepEqual(b['protocol_hint'], { opaque: {}, opaque_transport: { inbound_port: 4143 } });
    assert.deepEqual(c['addr'], { ip: { ipv4: 0xff010203 }, port: 1 });
    assert.equal(c['tls_identity'], undefined);
    // And back through our decoder, unchanged.
    assert.deepEqual(decodeDestinationUpdate(bytes), {
      add: { addrs, metricLabels: { service: 'web' } },
    });
  });

  it('decodes what protobufjs encodes: remove and no_endpoints (exists true and false)', () => {
    const remove = Update.encode(
      Update.fromObject({ remove: { addrs: [{ ip: { ipv4: 0x0a000001 }, port: 80 }] } }),
    ).finish();
    assert.deepEqual(decodeDestinationUpdate(remove), {
      remove: { addrs: [{ ip: '10.0.0.1', port: 80 }] },
    });
    for (const exists of [true, false]) {
      const bytes = Update.encode(Update.fromObject({ no_endpoints: { exists } })).finish();
      assert.deepEqual(decodeDestinationUpdate(bytes), { noEndpoints: { exists } });
      assert.deepEqual(
        Update.toObject(Update.decode(encodeDestinationUpdate({ noEndpoints: { exists } }))),
        { no_endpoints: exists ? { exists: true } : {} },
      );
    }
  });

  it('round-trips a profile with a pod endpoint through protobufjs', () => {
    const bytes = encodeDestinationProfile({
      fullyQualifiedName: 'web.emojivoto.svc.cluster.local',
      opaqueProtocol: true,
      endpoint: {
        addr: { ip: '10.0.0.7', port: 80 },
        weight: 10000,
        metricLabels: {},
        tlsIdentity: ID,
      },
    });
    const theirs = Profile.toObject(Profile.decode(bytes)) as Record<string, unknown>;
    assert.equal(theirs['fully_qualified_name'], 'web.emojivoto.svc.cluster.local');
    assert.equal(theirs['opaque_protocol'], true);
    assert.deepEqual(
      decodeDestinationProfile(Profile.encode(Profile.fromObject(theirs)).finish()),
      {
        fullyQualifiedName: 'web.emojivoto.svc.cluster.local',
        opaqueProtocol: true,
        endpoint: {
          addr: { ip: '10.0.0.7', port: 80 },
          weight: 10000,
          metricLabels: {},
          tlsIdentity: ID,
        },
      },
    );
  });

  it('refuses an Update with nothing set, a truncated message and a string that is not UTF-8', () => {
    for (const bytes of [
      Buffer.alloc(0),
      Buffer.from([0x0a, 0x05, 0x0a]),
      Buffer.from([0x12, 0x02, 0xc3, 0x28]), // GetDestination.path with invalid UTF-8
    ]) {
      assert.throws(
        () => (bytes[0] === 0x12 ? decodeGetDestination(bytes) : decodeDestinationUpdate(bytes)),
        (err: unknown) => isMeshidError(err) && err.code === 'ERR_REQUEST_INVALID',
      );
    }
  });

  it('gives one canonical text per IP address', () => {
    assert.equal(canonicalIp('FD00:0:0::1'), 'fd00::1');
    assert.equal(canonicalIp('::ffff:10.0.0.1'), '::ffff:a00:1');
    assert.equal(canonicalIp('2001:db8:0:0:1:0:0:1'), '2001:db8::1:0:0:1');
    assert.equal(canonicalIp('10.0.0.1'), '10.0.0.1');
    assert.equal(canonicalIp('web'), undefined);
    assert.equal(canonicalIp('fe80::1%eth0'), undefined);
  });
});
