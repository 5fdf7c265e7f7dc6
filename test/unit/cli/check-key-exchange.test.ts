/**
 * `meshid check`'s proxies-key-exchange verdicts, over real HTTP: each fake proxy admin answers
 * `/identity` and `/metrics` as a proxy (or an old or broken one) would.
 */
import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { checkKeyExchange, handshakeGroupsFromMetrics } from '../../../cli/check/key-exchange.js';
import type { ProxyTarget } from '../../../cli/check/probes.js';

const HYBRID = 'X25519MLKEM768';

/** Prometheus lines of meshid_proxy_tls_handshakes_total. */
function metrics(
  series: readonly { direction: string; result?: string; group: string; n: number }[],
): string {
  return [
    '# HELP meshid_proxy_tls_handshakes_total TLS handshakes',
    '# TYPE meshid_proxy_tls_handshakes_total counter',
    ...series.map(
      (s) =>
        `meshid_proxy_tls_handshakes_total{direction="${s.direction}",result="${s.result ?? 'ok'}",reason="",group="${s.group}",cipher="TLS_AES_128_GCM_SHA256"} ${s.n}`,
    ),
    '',
  ].join('\n');
}

function identity(mode: string | undefined, caGroup?: string): string {
  return JSON.stringify({
    identity: 'web.emojivoto.serviceaccount.identity.linkerd.cluster.local',
    certificate: {},
    trustAnchors: {},
    ...(mode === undefined
      ? {}
      : {
          tls: {
            mode,
            groups: 'X25519MLKEM768/X25519:P-256:P-384',
            inbound: {},
            outbound: {},
            ...(caGroup === undefined
              ? {}
              : { ca: { group: caGroup, cipher: 'TLS_AES_128_GCM_SHA256' } }),
          },
        }),
  });
}

describe('meshid check: proxies-key-exchange', () => {
  const servers: Server[] = [];
  after(() => servers.forEach((s) => s.close()));

  async function proxy(
    name: string,
    identityBody: string,
    metricsBody: string,
  ): Promise<ProxyTarget> {
    const s = createServer((req, res) => {
      if (req.url === '/identity') res.end(identityBody);
      else if (req.url === '/metrics') res.end(metricsBody);
      else res.writeHead(404).end();
    }).listen(0, '127.0.0.1');
    await once(s, 'listening');
    servers.push(s);
    return { name, admin: { host: '127.0.0.1', port: (s.address() as AddressInfo).port } };
  }
  const check = (targets: ProxyTarget[], required = false) =>
    checkKeyExchange({ targets, total: targets.length, required, timeoutMs: 2000, concurrency: 4 });

  it('reads successful handshakes by direction and group, and skips failures and foreign lines', () => {
    const text = [
      metrics([
        { direction: 'inbound', group: HYBRID, n: 3 },
        { direction: 'outbound', group: 'X25519', n: 2 },
        { direction: 'inbound', result: 'failed', group: '', n: 9 },
        { direction: 'sideways', group: 'P-256', n: 1 },
      ]),
      'meshid_proxy_tls_handshakes_total_created{direction="inbound",result="ok",group="P-384"} 1700000000',
      'meshid_proxy_tls_handshakes_total{direction="inbound",result="ok",group="P-256"} NaN',
      'meshid_proxy_tls_handshakes_total{direction="inbound",result="ok",group="P-256"} -4',
      'meshid_proxy_tls_handshakes_total{direction="inbound",result="ok",group="a\\"b"} 1',
      'garbage',
    ].join('\n');
    const g = handshakeGroupsFromMetrics(text);
    assert.deepEqual(
      [...g.inbound],
      [
        [HYBRID, 3],
        ['a"b', 1],
      ],
    );
    assert.deepEqual([...g.outbound], [['X25519', 2]]);
  });

  it('✓ when every connection, the CA one included, used the hybrid', async () => {
    const p = await proxy(
      'web',
      identity('hybrid-preferred', HYBRID),
      metrics([
        { direction: 'inbound', group: HYBRID, n: 3 },
        { direction: 'outbound', group: HYBRID, n: 2 },
      ]),
    );
    const r = await check([p]);
    assert.equal(r.status, 'ok');
    assert.equal(
      r.message,
      '1 of 1 proxies used the post-quantum hybrid on every connection so far (6 connections)',
    );
  });

  it('‼ when a hybrid-preferred proxy fell back to a classic group, inbound, outbound or to the CA', async () => {
    const a = await proxy(
      'a',
      identity('hybrid-preferred', HYBRID),
      metrics([
        { direction: 'inbound', group: HYBRID, n: 3 },
        { direction: 'inbound', group: 'X25519', n: 2 },
      ]),
    );
    const b = await proxy('b', identity('hybrid-preferred', 'P-256'), metrics([]));
    const c = await proxy('c', identity('hybrid-preferred', HYBRID), metrics([]));
    const r = await check([a, b, c]);
    assert.equal(r.status, 'warn');
    assert.equal(
      r.message,
      '2 of 3 proxies fell back to a classic key-exchange group: a (inbound X25519 ×2); b (CA P-256)',
    );
    assert.match(r.fix ?? '', /OpenSSL before 3\.5/);
  });

  it('× when a hybrid-required proxy reports a classic connection', async () => {
    const p = await proxy(
      'strict',
      identity('hybrid-required', HYBRID),
      metrics([{ direction: 'outbound', group: 'P-384', n: 1 }]),
    );
    const r = await check([p]);
    assert.equal(r.status, 'error');
    assert.equal(
      r.message,
      'the post-quantum hybrid is required and missing on 1 of 1 proxies: strict (hybrid-required, yet outbound P-384 ×1)',
    );
  });

  it('× under --tls-groups hybrid-required for a proxy in another mode or too old to say, ✓ for one that requires it', async () => {
    const preferred = await proxy('preferred', identity('hybrid-preferred', HYBRID), metrics([]));
    const old = await proxy('old', identity(undefined), metrics([]));
    const strict = await proxy('strict', identity('hybrid-required', HYBRID), metrics([]));
    const r = await check([preferred, old, strict], true);
    assert.equal(r.status, 'error');
    assert.equal(
      r.message,
      'the post-quantum hybrid is required and missing on 2 of 3 proxies: preferred (tlsGroups hybrid-preferred, not hybrid-required); old (tlsGroups not reported, not hybrid-required)',
    );
    assert.equal((await check([strict], true)).status, 'ok');
  });

  it('✓ naming the proxies without the hybrid by configuration (classic, FIPS), which are no fallback', async () => {
    const classic = await proxy(
      'classic',
      identity('classic', 'X25519'),
      metrics([{ direction: 'inbound', group: 'X25519', n: 4 }]),
    );
    const fips = await proxy('fips', identity('fips', 'P-256'), metrics([]));
    const r = await check([classic, fips]);
    assert.equal(r.status, 'ok');
    assert.equal(
      r.message,
      'none of the 2 proxies uses the post-quantum hybrid; without the hybrid by configuration: classic (classic); fips (fips)',
    );
  });

  it('‼ when no proxy answered; unreachable ones are listed beside a verdict otherwise', async () => {
    const broken = await proxy('broken', '<html>', metrics([]));
    // A port that was listening a moment ago: nothing answers there now.
    const closed = createServer().listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const port = (closed.address() as AddressInfo).port;
    await new Promise((r) => closed.close(r));
    const gone: ProxyTarget = { name: 'gone', admin: { host: '127.0.0.1', port } };
    const none = await check([broken, gone]);
    assert.equal(none.status, 'warn');
    assert.match(
      none.message,
      /^none of the 2 proxies answered: broken \(\/identity is not JSON\); gone \(connection refused\)$/,
    );
    const fine = await proxy('fine', identity('hybrid-preferred', HYBRID), metrics([]));
    const some = await check([fine, gone]);
    assert.equal(some.status, 'ok');
    assert.match(some.message, /; 1 did not answer: gone \(connection refused\)$/);
  });

  it('✓ with nothing to ask', async () => {
    assert.deepEqual(await check([]), {
      id: 'proxies-key-exchange',
      group: 'Data plane',
      status: 'ok',
      message: 'no proxies to ask',
    });
  });
});
