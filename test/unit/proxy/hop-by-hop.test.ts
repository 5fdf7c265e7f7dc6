import { strict as assert } from 'node:assert';
import { forwardableHttp2Headers } from '../../../proxy/h2-relay.js';
import {
  HOP_BY_HOP_HTTP1,
  HOP_BY_HOP_HTTP2,
  connectionOptions,
  isHopByHop,
} from '../../../proxy/hop-by-hop.js';

describe('proxy/hop-by-hop: one list per protocol', () => {
  // RFC 9110 §7.6.1 names these as describing one connection; RFC 9113 §8.2.2 makes them
  // malformed in HTTP/2.
  const rfc9110 = ['connection', 'proxy-connection', 'keep-alive', 'transfer-encoding', 'upgrade'];
  const mesh = ['l5d-orig-proto', 'l5d-require-id', 'proxy-authorization', 'proxy-authenticate'];

  it('drops the RFC 9110 connection fields, the h2c upgrade and the mesh per-hop fields on both protocols', () => {
    for (const name of [...rfc9110, 'http2-settings', ...mesh]) {
      assert.ok(isHopByHop('http/1.1', name), `HTTP/1.1 drops ${name}`);
      assert.ok(isHopByHop('h2', name), `HTTP/2 drops ${name}`);
    }
    assert.ok(!isHopByHop('http/1.1', 'l5d-client-id'), 'the identity header has its own rule');
    assert.ok(!isHopByHop('h2', 'content-type'));
  });

  it('differs in TE only: HTTP/1.1 drops it, HTTP/2 keeps exactly "te: trailers" (RFC 9113 §8.2.2)', () => {
    assert.deepEqual(
      [...HOP_BY_HOP_HTTP1].filter((n) => !HOP_BY_HOP_HTTP2.has(n)),
      ['te'],
    );
    assert.deepEqual(
      [...HOP_BY_HOP_HTTP2].filter((n) => !HOP_BY_HOP_HTTP1.has(n)),
      [],
    );
    assert.ok(isHopByHop('http/1.1', 'te', 'trailers'));
    assert.ok(!isHopByHop('h2', 'te', 'trailers'));
    assert.ok(isHopByHop('h2', 'te', 'gzip'));
    assert.ok(isHopByHop('h2', 'te', 'trailers, gzip'));
  });

  it('names what a Connection header lists, in lower case', () => {
    assert.deepEqual(
      [...connectionOptions('close, X-Trace ,,keep-alive')],
      ['close', 'x-trace', 'keep-alive'],
    );
    assert.deepEqual([...connectionOptions(['a', 'B'])], ['a', 'b']);
    assert.equal(connectionOptions(undefined).size, 0);
  });

  it('the HTTP/2 relay forwards te: trailers and the message fields, nothing of the hop', () => {
    const out = forwardableHttp2Headers(
      {
        ':method': 'POST',
        ':path': '/grpc.health.v1.Health/Check',
        te: 'trailers',
        'content-type': 'application/grpc',
        'proxy-authorization': 'Basic c2VjcmV0',
        'l5d-orig-proto': 'HTTP/1.1',
        'l5d-client-id': 'forged.identity',
        'keep-alive': 'timeout=5',
      },
      () => true,
    );
    assert.deepEqual(out, {
      ':method': 'POST',
      ':path': '/grpc.health.v1.Health/Check',
      te: 'trailers',
      'content-type': 'application/grpc',
    });
    assert.equal(
      forwardableHttp2Headers({ ':method': 'GET', te: 'gzip' }, () => true)['te'],
      undefined,
    );
  });
});
