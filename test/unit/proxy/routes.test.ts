/**
 * Route and destination specs: `LISTEN=HOST:PORT@IDENTITY` and `AUTHORITY=HOST:PORT@IDENTITY`,
 * refused with ERR_CONFIG_INVALID naming the part that is wrong; and the static resolver.
 */
import { strict as assert } from 'node:assert';
import { MeshidError } from '../../../core/index.js';
import {
  StaticDestinationResolver,
  normalizeAuthority,
  parseDestination,
  parseRoute,
} from '../../../proxy/routes.js';

const WEB = 'web.emojivoto.serviceaccount.identity.linkerd.cluster.local';

function refused(fn: () => unknown, part: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof MeshidError);
    assert.equal(err.code, 'ERR_CONFIG_INVALID');
    assert.match(err.message, part);
    return true;
  });
}

describe('parseRoute', function () {
  it('parses a loopback listener, an IPv4 target and an identity', function () {
    assert.deepEqual(parseRoute(`127.0.0.1:7001=10.0.0.7:4143@${WEB}`), {
      listen: { host: '127.0.0.1', port: 7001 },
      target: { host: '10.0.0.7', port: 4143 },
      identity: WEB,
    });
  });

  it('parses IPv6 and DNS-name targets and port 0 listeners', function () {
    assert.deepEqual(parseRoute(`[::1]:0=[fd00::7]:4143@${WEB}`), {
      listen: { host: '::1', port: 0 },
      target: { host: 'fd00::7', port: 4143 },
      identity: WEB,
    });
    assert.deepEqual(
      parseRoute(`localhost:7001=web.emojivoto.svc.cluster.local:4143@${WEB}`).target,
      {
        host: 'web.emojivoto.svc.cluster.local',
        port: 4143,
      },
    );
  });

  const bad: [string, string, RegExp][] = [
    ['has no "=" at all', `127.0.0.1:7001`, /no "="/],
    ['has no identity', `127.0.0.1:7001=10.0.0.7:4143`, /no "@identity"/],
    ['has an empty listen address', `=10.0.0.7:4143@${WEB}`, /empty LISTEN_ADDR/],
    [
      'has a listen address without a port',
      `127.0.0.1=10.0.0.7:4143@${WEB}`,
      /listen address "127\.0\.0\.1" is not host:port/,
    ],
    ['listens beyond loopback', `0.0.0.0:7001=10.0.0.7:4143@${WEB}`, /must be loopback/],
    ['listens on a pod address', `10.1.2.3:7001=10.0.0.7:4143@${WEB}`, /must be loopback/],
    [
      'has a target without a port',
      `127.0.0.1:7001=10.0.0.7@${WEB}`,
      /target "10\.0\.0\.7" is not host:port/,
    ],
    [
      'has a target port over 65535',
      `127.0.0.1:7001=10.0.0.7:70000@${WEB}`,
      /target "10\.0\.0\.7:70000"/,
    ],
    ['has target port 0', `127.0.0.1:7001=10.0.0.7:0@${WEB}`, /non-zero port/],
    [
      'has an empty identity',
      `127.0.0.1:7001=10.0.0.7:4143@`,
      /identity "" is not a DNS-1123 subdomain/,
    ],
    ['has an upper-case identity', `127.0.0.1:7001=10.0.0.7:4143@Web.ns`, /identity "Web\.ns"/],
    [
      'has an identity with a trailing dot',
      `127.0.0.1:7001=10.0.0.7:4143@${WEB}.`,
      /not a DNS-1123 subdomain/,
    ],
    [
      'has a SPIFFE identity',
      `127.0.0.1:7001=10.0.0.7:4143@spiffe://cluster.local/ns/a/sa/b`,
      /not a DNS-1123 subdomain/,
    ],
  ];
  for (const [what, text, part] of bad) {
    it(`refuses a route that ${what}`, function () {
      refused(() => parseRoute(text), part);
    });
  }
});

describe('parseDestination and StaticDestinationResolver', function () {
  it('normalizes authorities: lower case, HTTP default port', function () {
    assert.equal(normalizeAuthority('Web.Emojivoto'), 'web.emojivoto:80');
    assert.equal(normalizeAuthority('web.emojivoto:8080'), 'web.emojivoto:8080');
    assert.equal(normalizeAuthority('[::1]:80'), '[::1]:80');
  });

  it('refuses authorities with userinfo, a path, or no host', function () {
    assert.equal(normalizeAuthority('user@web:80'), undefined);
    assert.equal(normalizeAuthority('web/path'), undefined);
    assert.equal(normalizeAuthority(''), undefined);
    assert.equal(normalizeAuthority(':80'), undefined);
  });

  it('resolves a configured authority however the Host header spells it', async function () {
    const resolver = new StaticDestinationResolver([
      parseDestination(`web.emojivoto.svc.cluster.local=10.0.0.7:4143@${WEB}`),
    ]);
    const want = { target: { host: '10.0.0.7', port: 4143 }, identity: WEB };
    assert.deepEqual(await resolver.resolve('WEB.emojivoto.svc.cluster.local'), want);
    assert.deepEqual(await resolver.resolve('web.emojivoto.svc.cluster.local:80'), want);
    assert.equal(await resolver.resolve('web.emojivoto.svc.cluster.local:8080'), undefined);
    assert.equal(await resolver.resolve('other:80'), undefined);
  });

  it('refuses the same authority configured twice', function () {
    refused(
      () =>
        new StaticDestinationResolver([
          parseDestination(`web:80=10.0.0.7:4143@${WEB}`),
          parseDestination(`WEB=10.0.0.8:4143@${WEB}`),
        ]),
      /"web:80" is configured twice/,
    );
  });

  it('refuses a destination whose identity is not a DNS-1123 subdomain', function () {
    refused(() => parseDestination('web:80=10.0.0.7:4143@not_valid'), /identity "not_valid"/);
  });
});
