import { strict as assert } from 'node:assert';
import { X509Certificate } from 'node:crypto';
import { PemError, parsePem, toPem } from '../../../core/index.js';
import { createRootCa } from '../../../core/pki.js';

const DAY = 86_400_000;
const NOW = Date.UTC(2026, 10, 21);

/** Asserts that `fn` throws a PemError whose message matches every pattern. */
function assertPemError(fn: () => unknown, ...patterns: RegExp[]): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof PemError, `expected a PemError, got ${String(err)}`);
    for (const p of patterns) assert.match(err.message, p);
    return true;
  });
}

describe('PEM parsing and encoding', () => {
  const der1 = Uint8Array.from({ length: 100 }, (_, i) => i);
  const der2 = Uint8Array.from({ length: 49 }, (_, i) => 255 - i);

  it('parses one block into its label and DER bytes', () => {
    const blocks = parsePem(toPem(der1, 'CERTIFICATE'));
    assert.equal(blocks.length, 1);
    assert.equal(blocks[0]!.label, 'CERTIFICATE');
    assert.deepEqual(Buffer.from(blocks[0]!.der), Buffer.from(der1));
  });

  it('returns DER in an ArrayBuffer of its own, not a view on a shared pool', () => {
    const [block] = parsePem(toPem(der1, 'CERTIFICATE'));
    assert.equal(block!.der.byteOffset, 0);
    assert.equal(block!.der.buffer.byteLength, der1.length);
  });

  it('parses several blocks in order, tolerating blank lines, indentation, CRLF and no final newline', () => {
    const text =
      '\n\n  ' +
      toPem(der1, 'CERTIFICATE').replace(/\n/g, '\r\n') +
      '\n\n\t\n' +
      toPem(der2, 'EC PRIVATE KEY')
        .split('\n')
        .map((l) => `   ${l}`)
        .join('\n')
        .trimEnd();
    const blocks = parsePem(text);
    assert.deepEqual(
      blocks.map((b) => b.label),
      ['CERTIFICATE', 'EC PRIVATE KEY'],
    );
    assert.deepEqual(Buffer.from(blocks[1]!.der), Buffer.from(der2));
  });

  it('returns no blocks for text that is only whitespace', () => {
    assert.deepEqual(parsePem(' \n\r\n\t'), []);
    assert.deepEqual(parsePem(''), []);
  });

  it('refuses text outside a block and names the line', () => {
    assertPemError(
      () => parsePem(`${toPem(der1, 'CERTIFICATE')}\nhello`),
      /line 7/,
      /outside a PEM block/,
    );
    assertPemError(() => parsePem(`Bag Attributes\n${toPem(der1, 'CERTIFICATE')}`), /line 1/);
  });

  it('refuses a body that is not base64', () => {
    const bad = toPem(der1, 'CERTIFICATE').replace(/^(-----BEGIN CERTIFICATE-----\n)./, '$1*');
    assertPemError(() => parsePem(bad), /not valid base64/);
  });

  it('refuses a truncated base64 body', () => {
    const lines = toPem(der1, 'CERTIFICATE').split('\n');
    lines[1] = lines[1]!.slice(0, 61);
    assertPemError(() => parsePem(lines.join('\n')), /not valid base64/);
  });

  it('refuses base64 with non-canonical padding bits', () => {
    // "QR==" decodes to the same byte as "QQ==", but no encoder writes it.
    assertPemError(
      () => parsePem('-----BEGIN X-----\nQR==\n-----END X-----\n'),
      /not valid base64/,
    );
    assert.deepEqual([...parsePem('-----BEGIN X-----\nQQ==\n-----END X-----\n')[0]!.der], [0x41]);
  });

  it('refuses a BEGIN whose END carries another label', () => {
    const text = toPem(der1, 'CERTIFICATE').replace('END CERTIFICATE', 'END PRIVATE KEY');
    assertPemError(() => parsePem(text), /BEGIN CERTIFICATE/, /END PRIVATE KEY/);
  });

  it('refuses a block without an END line', () => {
    const text = toPem(der1, 'CERTIFICATE').replace('-----END CERTIFICATE-----\n', '');
    assertPemError(() => parsePem(text), /no END line/);
  });

  it('refuses a BEGIN inside an open block', () => {
    const text =
      toPem(der1, 'CERTIFICATE').replace('-----END CERTIFICATE-----\n', '') +
      toPem(der2, 'CERTIFICATE');
    assertPemError(() => parsePem(text), /no END line before the next BEGIN/);
  });

  it('refuses an END line without a BEGIN', () => {
    assertPemError(() => parsePem('-----END CERTIFICATE-----\n'), /END line without a BEGIN/);
  });

  it('refuses RFC 1421 headers, as carried by legacy encrypted keys', () => {
    const text = toPem(der1, 'EC PRIVATE KEY').replace(
      '-----\n',
      '-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\n',
    );
    assertPemError(() => parsePem(text), /headers are not supported/);
  });

  it('refuses an empty block', () => {
    assertPemError(
      () => parsePem('-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n'),
      /is empty/,
    );
  });

  it('refuses a block whose label is not the expected one', () => {
    const text = toPem(der1, 'CERTIFICATE') + toPem(der2, 'PRIVATE KEY');
    assertPemError(
      () => parsePem(text, 'CERTIFICATE'),
      /expected a "CERTIFICATE" PEM block, found "PRIVATE KEY"/,
    );
  });

  it('refuses a malformed boundary line inside a block', () => {
    const text = toPem(der1, 'CERTIFICATE').replace(
      '-----END CERTIFICATE-----',
      '-----END CERTIFICATE',
    );
    assertPemError(() => parsePem(text), /malformed PEM boundary/);
  });

  it('writes 64-character lines that round-trip', () => {
    const der = Uint8Array.from({ length: 200 }, (_, i) => (i * 7) & 0xff);
    const pem = toPem(der, 'CERTIFICATE');
    const body = pem.trim().split('\n').slice(1, -1);
    assert.ok(body.slice(0, -1).every((l) => l.length === 64));
    assert.ok(body.at(-1)!.length <= 64);
    assert.ok(pem.endsWith('-----END CERTIFICATE-----\n'));
    assert.deepEqual(Buffer.from(parsePem(pem)[0]!.der), Buffer.from(der));
  });

  it('writes a certificate PEM that node:crypto reads back to the same DER', async () => {
    const root = await createRootCa({
      commonName: 'pem.test',
      notBefore: NOW - DAY,
      notAfter: NOW + DAY,
    });
    const viaNode = new X509Certificate(toPem(root.certificateDer, 'CERTIFICATE'));
    assert.deepEqual(viaNode.raw, Buffer.from(root.certificateDer));
  });
});
