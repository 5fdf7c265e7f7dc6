/**
 * The proxy's traffic metrics: the request latency histogram (its own light implementation)
 * exposes exactly what a prom-client Histogram fed the same observations exposes.
 */
import { strict as assert } from 'node:assert';
import { Histogram, Registry } from '../../../core/index.js';
import { MAX_KEPT_REQUEST_SERIES, registerTrafficMetrics } from '../../../proxy/metrics.js';

const NAME = 'meshid_proxy_request_duration_seconds';

describe('proxy traffic metrics', () => {
  it('exposes the request latency histogram as prom-client would, per protocol and status class', async () => {
    const registry = new Registry();
    const traffic = registerTrafficMetrics(registry);
    const reference = new Registry();
    const expected = new Histogram({
      name: NAME,
      help: 'HTTP request latency through the proxy, by direction, protocol and status class.',
      labelNames: ['direction', 'protocol', 'status'] as const,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [reference],
    });
    const observations: ['http1' | 'http2', number, number][] = [
      ['http1', 200, 0.3],
      ['http1', 200, 0.5],
      ['http1', 201, 2],
      ['http1', 404, 40],
      ['http2', 200, 7000],
      ['http1', 0, 1],
      ['http1', 502, 0.0001],
    ];
    for (const [protocol, status, durationMs] of observations) {
      traffic.inbound({
        type: 'http-request',
        peer: 'voting',
        protocol,
        method: 'GET',
        status,
        authorized: true,
        durationMs,
      });
      expected.observe(
        { direction: 'inbound', protocol, status: `${Math.floor(status / 100)}xx` },
        durationMs / 1000,
      );
    }
    const series = (text: string): string[] =>
      text
        .split('\n')
        .filter((l) => l.includes(NAME))
        .sort();
    const got = series(await registry.metrics());
    assert.deepEqual(got, series(await reference.metrics()));
    assert.ok(
      got.includes(
        `${NAME}_bucket{le="0.0005",direction="inbound",protocol="http1",status="2xx"} 2`,
      ),
      got.join('\n'),
    );
    assert.ok(got.includes(`${NAME}_count{direction="inbound",protocol="http1",status="2xx"} 3`));
  });

  it('counts transparent requests per destination and server identity with tls, plaintext connections by reason, and a lost destination service', async () => {
    const registry = new Registry();
    const traffic = registerTrafficMetrics(registry);
    const web = 'web.emojivoto.serviceaccount.identity.linkerd.cluster.local';
    const request = { type: 'request', listener: '127.0.0.1:4140', dst: '10.96.0.10:80' } as const;
    traffic.outbound({ ...request, peerIdentity: web, tls: true, status: 200, durationMs: 3 });
    traffic.outbound({ ...request, peerIdentity: web, tls: true, status: 503, durationMs: 1 });
    traffic.outbound({ ...request, peerIdentity: '', tls: false, status: 503, durationMs: 0 });
    const target = { host: '10.96.0.20', port: 5432 };
    traffic.outbound({ type: 'passthrough', listener: '', target, reason: 'unmeshed' });
    traffic.outbound({ type: 'discovery', listener: '', target, available: false, message: 'x' });
    const text = await registry.metrics();
    const line = (l: string) => assert.ok(text.split('\n').includes(l), `missing: ${l}\n${text}`);
    line(
      `meshid_proxy_outbound_requests_total{dst="10.96.0.10:80",server_id="${web}",tls="true",classification="success"} 1`,
    );
    line(
      `meshid_proxy_outbound_requests_total{dst="10.96.0.10:80",server_id="${web}",tls="true",classification="failure"} 1`,
    );
    line(
      'meshid_proxy_outbound_requests_total{dst="10.96.0.10:80",server_id="",tls="false",classification="failure"} 1',
    );
    line(
      'meshid_proxy_outbound_response_latency_seconds_count{dst="10.96.0.10:80",tls="true",classification="success"} 1',
    );
    line(
      'meshid_proxy_outbound_plaintext_connections_total{dst="10.96.0.20:5432",tls="false",reason="unmeshed"} 1',
    );
    line('meshid_proxy_destination_unavailable 1');
    traffic.outbound({ type: 'discovery', listener: '', target, available: true, message: '' });
    assert.ok((await registry.metrics()).includes('meshid_proxy_destination_unavailable 0'));
  });

  it('keeps counting each destination and server identity apart when their series are kept at hand, and past the number kept', async () => {
    const registry = new Registry();
    const traffic = registerTrafficMetrics(registry);
    const web = 'web.emojivoto.serviceaccount.identity.linkerd.cluster.local';
    const api = 'api.emojivoto.serviceaccount.identity.linkerd.cluster.local';
    const request = { type: 'request', listener: '127.0.0.1:4140', tls: true } as const;
    const send = (dst: string, peerIdentity: string, status: number, durationMs = 1): void =>
      traffic.outbound({ ...request, dst, peerIdentity, status, durationMs });
    // Interleaved, so a kept series handed to the wrong pair would show.
    for (let i = 0; i < 5; i++) {
      send('10.96.0.10:80', web, 200, 2);
      send('10.96.0.10:80', api, 200);
      send('10.96.0.11:80', web, 500);
    }
    send('10.96.0.10:80', web, 0);
    // More pairs than are kept: the first and the last still count exactly.
    for (let i = 0; i < MAX_KEPT_REQUEST_SERIES + 10; i++)
      send(`10.97.${i >> 8}.${i & 255}:80`, web, 200);
    const last = `10.97.${(MAX_KEPT_REQUEST_SERIES + 9) >> 8}.${(MAX_KEPT_REQUEST_SERIES + 9) & 255}:80`;
    send(last, web, 200);
    send('10.97.0.0:80', web, 200);
    const lines = (await registry.metrics()).split('\n');
    const value = (l: string): string | undefined =>
      lines.find((x) => x.startsWith(`${l} `))?.slice(l.length + 1);
    const total = (dst: string, id: string, cls: string): string | undefined =>
      value(
        `meshid_proxy_outbound_requests_total{dst="${dst}",server_id="${id}",tls="true",classification="${cls}"}`,
      );
    assert.equal(total('10.96.0.10:80', web, 'success'), '5');
    assert.equal(total('10.96.0.10:80', web, 'failure'), '1');
    assert.equal(total('10.96.0.10:80', api, 'success'), '5');
    assert.equal(total('10.96.0.11:80', web, 'failure'), '5');
    assert.equal(total('10.96.0.11:80', web, 'success'), undefined);
    assert.equal(total('10.97.0.0:80', web, 'success'), '2');
    assert.equal(total(last, web, 'success'), '2');
    const latency = (dst: string, cls: string, what: string): string | undefined =>
      value(
        `meshid_proxy_outbound_response_latency_seconds_${what}{dst="${dst}",tls="true",classification="${cls}"}`,
      );
    // web and api share the histogram series of one dst (it has no server_id label).
    assert.equal(latency('10.96.0.10:80', 'success', 'count'), '10');
    assert.equal(latency('10.96.0.10:80', 'success', 'sum'), String((5 * 2 + 5 * 1) / 1000));
    assert.equal(latency(last, 'success', 'count'), '2');
  });

  it('counts the transparent inbound\'s connections per original port, kind, port policy and result, and folds ports past 64 into port="other"', async () => {
    const registry = new Registry();
    const traffic = registerTrafficMetrics(registry);
    const event = { type: 'transparent-connection' } as const;
    traffic.transparentInbound({
      ...event,
      port: 8081,
      kind: 'plaintext',
      policy: 'all-authenticated',
      allowed: false,
    });
    traffic.transparentInbound({
      ...event,
      port: 8081,
      kind: 'plaintext',
      policy: 'all-authenticated',
      allowed: false,
    });
    traffic.transparentInbound({
      ...event,
      port: 8081,
      kind: 'mtls',
      policy: 'all-authenticated',
      allowed: true,
    });
    traffic.transparentInbound({
      ...event,
      port: 9090,
      kind: 'other-tls',
      policy: 'deny',
      allowed: false,
    });
    // A port scan: 62 more ports fill the series; those after them are counted as "other".
    for (let port = 20_000; port < 20_100; port++) {
      traffic.transparentInbound({
        ...event,
        port,
        kind: 'plaintext',
        policy: 'all-unauthenticated',
        allowed: true,
      });
    }
    const text = await registry.metrics();
    const name = 'meshid_proxy_inbound_transparent_connections_total';
    const line = (l: string) => assert.ok(text.split('\n').includes(l), `missing: ${l}\n${text}`);
    line(
      `${name}{port="8081",kind="plaintext",policy="all-authenticated",tls="false",result="refused"} 2`,
    );
    line(
      `${name}{port="8081",kind="mtls",policy="all-authenticated",tls="true",result="allowed"} 1`,
    );
    line(`${name}{port="9090",kind="other-tls",policy="deny",tls="false",result="refused"} 1`);
    line(
      `${name}{port="20061",kind="plaintext",policy="all-unauthenticated",tls="false",result="allowed"} 1`,
    );
    line(
      `${name}{port="other",kind="plaintext",policy="all-unauthenticated",tls="false",result="allowed"} 38`,
    );
    assert.ok(!text.includes(`${name}{port="20062"`), text);
    const ports = new Set(
      text
        .split('\n')
        .filter((l) => l.startsWith(`${name}{`))
        .map((l) => /port="([^"]+)"/.exec(l)?.[1]),
    );
    assert.equal(ports.size, 65, 'at most 64 ports and "other"');
  });
});
