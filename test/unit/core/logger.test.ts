import { strict as assert } from 'node:assert';
import { Writable } from 'node:stream';
import { createLogger } from '../../../core/index.js';
import { formatLogLine } from '../../../core/logger.js';
import { strictJsonLine } from '../../support/strict-json.js';

function capture(): { lines: string[]; stream: Writable } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(
        ...chunk
          .toString()
          .split('\n')
          .filter((l) => l !== ''),
      );
      done();
    },
  });
  return { lines, stream };
}

describe('core/logger: lines machines and people can read', () => {
  it('writes each key once: the innermost binding, then the call, wins', () => {
    const { lines, stream } = capture();
    const root = createLogger({ level: 'info', destination: stream, format: 'json' });
    // The proxy's inbound: cli binds component "inbound", proxy/inbound.ts "proxy-inbound".
    const inbound = root.child({ service: 'proxy' }).child({ component: 'inbound' });
    inbound.child({ component: 'proxy-inbound' }).info({ address: '127.0.0.1:1' }, 'accepted');
    inbound.child({ component: 'proxy-inbound' }).warn({ component: 'tls' }, 'handshake');
    assert.equal(lines.length, 2);
    const [a, b] = lines.map(strictJsonLine);
    assert.equal(a!['component'], 'proxy-inbound');
    assert.equal(b!['component'], 'tls');
    assert.equal(a!['service'], 'proxy');
    assert.equal(a!['msg'], 'accepted');
  });

  it('still redacts secrets', () => {
    const { lines, stream } = capture();
    createLogger({ level: 'info', destination: stream }).info({ token: 'eyJ.secret' }, 'x');
    assert.equal(strictJsonLine(lines[0]!)['token'], '[redacted]');
  });

  it('writes a line for people in text: time, level, where, message, fields', () => {
    const line = formatLogLine(
      '{"level":"warn","time":"2026-12-07T18:04:27.444Z","pid":7,"service":"proxy","component":"identity","component":"x","err":"Certify failed: refused","retryInMs":359,"msg":"certificate refresh failed"}\n',
      'text',
    );
    assert.equal(
      line,
      '18:04:27.444 WARN  proxy/x: certificate refresh failed retryInMs=359 err="Certify failed: refused"\n',
    );
  });

  it('shows an error object by its message in text', () => {
    const { lines, stream } = capture();
    createLogger({ level: 'info', destination: stream, format: 'text' }).error(
      { err: new Error('boom') },
      'failed',
    );
    assert.match(lines[0]!, /^\d\d:\d\d:\d\d\.\d{3} ERROR failed err=boom$/);
  });

  it('passes a line that is not JSON through unchanged', () => {
    assert.equal(formatLogLine('plain\n', 'json'), 'plain\n');
  });
});
