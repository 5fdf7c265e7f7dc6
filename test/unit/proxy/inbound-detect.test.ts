/**
 * Protocol detection on a connection's first bytes: HTTP/2 by its preface, HTTP/1 by its request
 * line, opaque otherwise; and a prefix of an HTTP request is never called opaque.
 */
import { strict as assert } from 'node:assert';
import { HTTP2_PREFACE, detectProtocol } from '../../../proxy/detect.js';
import type { Detection } from '../../../proxy/detect.js';

const bytes = (s: string | Buffer): Buffer =>
  typeof s === 'string' ? Buffer.from(s, 'latin1') : s;

const cases: readonly [string, string | Buffer, Detection][] = [
  ['the full HTTP/2 preface is HTTP/2', HTTP2_PREFACE, { protocol: 'http2', decided: true }],
  [
    'the preface followed by a SETTINGS frame is HTTP/2',
    Buffer.concat([HTTP2_PREFACE, Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]),
    { protocol: 'http2', decided: true },
  ],
  [
    'part of the preface is HTTP/2, undecided',
    HTTP2_PREFACE.subarray(0, 10),
    { protocol: 'http2', decided: false },
  ],
  [
    'a GET request line is HTTP/1',
    'GET / HTTP/1.1\r\nHost: a\r\n\r\n',
    { protocol: 'http1', decided: true },
  ],
  [
    'an HTTP/1.0 request line is HTTP/1',
    'POST /x?y=1 HTTP/1.0\r\n',
    { protocol: 'http1', decided: true },
  ],
  [
    'an extension method is HTTP/1',
    'M-SEARCH * HTTP/1.1\r\n',
    { protocol: 'http1', decided: true },
  ],
  [
    'empty lines before the request line are skipped',
    '\r\n\r\nGET / HTTP/1.1\r\n',
    { protocol: 'http1', decided: true },
  ],
  [
    'extra spaces between the parts still make HTTP/1',
    'GET  /  HTTP/1.1\r\n',
    { protocol: 'http1', decided: true },
  ],
  [
    'a request line cut in the target is HTTP/1, undecided',
    'GET /very/long',
    { protocol: 'http1', decided: false },
  ],
  [
    'a request line cut in the version is HTTP/1, undecided',
    'GET / HTT',
    { protocol: 'http1', decided: false },
  ],
  ['a lone token is HTTP/1, undecided', 'HELLO', { protocol: 'http1', decided: false }],
  [
    'a TLS record is opaque',
    Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05]),
    { protocol: 'opaque', decided: true },
  ],
  ['a token then CRLF is opaque', 'QUIT\r\n', { protocol: 'opaque', decided: true }],
  [
    'an SMTP-like command is opaque',
    'EHLO client.example\r\n',
    { protocol: 'opaque', decided: true },
  ],
  [
    'a request line of HTTP/2.0 in text is opaque',
    'GET / HTTP/2.0\r\n',
    { protocol: 'opaque', decided: true },
  ],
  ['binary bytes are opaque', Buffer.from([0, 1, 2, 3]), { protocol: 'opaque', decided: true }],
  ['no bytes yet is undecided', '', { protocol: 'opaque', decided: false }],
];

describe('proxy inbound protocol detection', () => {
  for (const [name, input, expected] of cases) {
    it(name, () => {
      assert.deepEqual(detectProtocol(bytes(input)), expected);
    });
  }
});
