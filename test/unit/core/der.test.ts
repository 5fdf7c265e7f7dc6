import { strict as assert } from 'node:assert';
import {
  DerError,
  DerReader,
  DerTag,
  contextTag,
  decodeDer,
  derOid,
  derTime,
  derUnsignedInteger,
  plainView,
  readOid,
  tlv,
} from '../../../core/index.js';
import { seededBytes } from './fixtures/csr-makers.js';
import { encodeLength } from '../../../core/der-write.js';
import {
  integerContents,
  oidToString,
  readAll,
  readBitString,
  readBoolean,
  readElement,
  readOctetAlignedBitString,
  readSmallInteger,
  readString,
} from '../../../core/der.js';

const hex = (h: string): Buffer => Buffer.from(h.replace(/\s+/g, ''), 'hex');

function throwsDer(fn: () => unknown, message: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof DerError, `expected a DerError, got ${String(err)}`);
    assert.match(err.message, message);
    return true;
  });
}

describe('core/der', () => {
  describe('reading a TLV', () => {
    it('reads a short-form length and points at the contents without copying', () => {
      const buf = hex('04 03 aa bb cc ff');
      const el = readElement(buf, 0);
      assert.equal(el.tag, DerTag.OCTET_STRING);
      assert.deepEqual([...el.contents], [0xaa, 0xbb, 0xcc]);
      assert.equal(el.end, 5);
      assert.equal(el.contents.buffer, buf.buffer, 'contents is a view of the input');
    });

    it('views a Buffer as a plain Uint8Array over the same memory', () => {
      const buf = Buffer.from('3003020105', 'hex');
      const view = plainView(buf);
      assert.equal(Object.getPrototypeOf(view), Uint8Array.prototype);
      assert.equal(view.buffer, buf.buffer);
      assert.equal(view.byteOffset, buf.byteOffset);
      assert.deepEqual([...view], [...buf]);
      const plain = Uint8Array.of(1, 2);
      assert.equal(plainView(plain), plain);
    });

    it('reads a long-form length of 200 bytes', () => {
      const buf = Buffer.concat([hex('04 81 c8'), Buffer.alloc(200, 7)]);
      const el = decodeDer(buf, DerTag.OCTET_STRING);
      assert.equal(el.contents.length, 200);
      assert.equal(el.raw.length, 203);
    });

    it('reads a two-byte long-form length', () => {
      const buf = Buffer.concat([hex('04 82 01 2c'), Buffer.alloc(300)]);
      assert.equal(decodeDer(buf).contents.length, 300);
    });

    const bad: [string, Buffer, RegExp][] = [
      ['an empty input', Buffer.alloc(0), /truncated/],
      ['a tag with no length', hex('30'), /truncated/],
      ['an indefinite length', hex('30 80 02 01 00 00 00'), /indefinite length/],
      ['a long form for a length under 128', hex('04 81 05 0102030405'), /non-minimal length/],
      [
        'a long form with a leading zero length byte',
        Buffer.concat([hex('04 82 00 c8'), Buffer.alloc(200)]),
        /non-minimal length/,
      ],
      ['a five-byte length field', hex('04 85 00 00 00 00 01 00'), /5-byte length field/],
      ['the reserved length byte 0xff', hex('04 ff'), /127-byte length field/],
      [
        'a length running past the end',
        hex('04 05 01 02 03'),
        /says 5 byte\(s\) but only 3 remain/,
      ],
      ['a length field cut short', hex('04 82 01'), /truncated inside its length field/],
      ['a multi-byte (high-tag-number) tag', hex('1f 81 00 00'), /multi-byte tag/],
      ['a context-specific multi-byte tag', hex('bf 1f 00'), /multi-byte tag/],
    ];
    for (const [name, buf, message] of bad) {
      it(`rejects ${name}`, () => throwsDer(() => readElement(buf, 0, 'thing'), message));
    }

    it('rejects trailing bytes after a whole structure', () => {
      throwsDer(
        () => decodeDer(hex('05 00 00'), DerTag.NULL, 'thing'),
        /thing has 1 trailing byte/,
      );
    });

    it('rejects an unexpected tag where a whole structure is expected', () => {
      throwsDer(() => decodeDer(hex('31 00'), DerTag.SEQUENCE, 'thing'), /tag 0x31, expected 0x30/);
    });

    it('throws only DerError on a thousand random inputs', () => {
      const random = seededBytes('der-fuzz');
      for (let i = 0; i < 1000; i++) {
        const buf = random(1 + (i % 40));
        try {
          const el = decodeDer(buf);
          readAll(el.contents);
        } catch (err) {
          assert.ok(err instanceof DerError, `input ${buf.toString('hex')} threw ${String(err)}`);
        }
      }
    });
  });

  describe('walking a structure', () => {
    const seq = decodeDer(hex('30 08 02 01 05 05 00 04 01 ff'), DerTag.SEQUENCE);

    it('reads elements in order, optional ones only when their tag is next', () => {
      const r = new DerReader(seq.contents, 'seq');
      assert.equal(readSmallInteger(r.next(DerTag.INTEGER)), 5);
      assert.equal(r.optional(DerTag.BOOLEAN), undefined);
      assert.equal(r.optional(DerTag.NULL)?.contents.length, 0);
      assert.equal(r.peekTag(), DerTag.OCTET_STRING);
      r.next(DerTag.OCTET_STRING);
      assert.equal(r.more, false);
      r.finish();
    });

    it('names the element when a tag does not match', () => {
      const r = new DerReader(seq.contents, 'seq');
      throwsDer(() => r.next(DerTag.OID, 'algorithm'), /seq algorithm has tag 0x02, expected 0x06/);
    });

    it('refuses to finish with bytes left over', () => {
      const r = new DerReader(seq.contents, 'seq');
      r.next();
      throwsDer(() => r.finish(), /seq has 5 unexpected trailing byte/);
    });

    it('says what is missing when a structure ends early', () => {
      const r = new DerReader(new Uint8Array(0), 'seq');
      throwsDer(() => r.next(DerTag.INTEGER, 'version'), /seq version is missing/);
    });

    it('lists every element of a SEQUENCE OF', () => {
      assert.deepEqual(
        readAll(seq.contents).map((e) => e.tag),
        [DerTag.INTEGER, DerTag.NULL, DerTag.OCTET_STRING],
      );
    });
  });

  describe('primitive values', () => {
    it('accepts minimal INTEGERs, including a 0x00 before a high byte', () => {
      assert.deepEqual([...integerContents(decodeDer(hex('02 02 00 80')))], [0x00, 0x80]);
      assert.deepEqual([...integerContents(decodeDer(hex('02 01 ff')))], [0xff]);
    });

    for (const [name, h] of [
      ['a redundant leading 0x00', '02 02 00 7f'],
      ['a redundant leading 0xff', '02 02 ff 80'],
      ['empty contents', '02 00'],
    ] as const) {
      it(`rejects an INTEGER with ${name}`, () =>
        throwsDer(() => integerContents(decodeDer(hex(h))), /not minimally encoded|empty/));
    }

    it('reads small INTEGERs and refuses negative or oversized ones', () => {
      assert.equal(readSmallInteger(decodeDer(hex('02 02 01 00'))), 256);
      throwsDer(() => readSmallInteger(decodeDer(hex('02 01 80'))), /negative/);
      throwsDer(() => readSmallInteger(decodeDer(hex('02 05 01 00 00 00 00'))), /too large/);
    });

    it('reads DER BOOLEANs and refuses any other true value', () => {
      assert.equal(readBoolean(decodeDer(hex('01 01 ff'))), true);
      assert.equal(readBoolean(decodeDer(hex('01 01 00'))), false);
      throwsDer(() => readBoolean(decodeDer(hex('01 01 01'))), /0x00 or 0xff/);
      throwsDer(() => readBoolean(decodeDer(hex('01 02 ff ff'))), /0x00 or 0xff/);
    });

    it('reads BIT STRINGs and enforces the DER padding rules', () => {
      assert.deepEqual(readBitString(decodeDer(hex('03 02 07 80'))), {
        unusedBits: 7,
        bytes: hex('80'),
      });
      throwsDer(() => readBitString(decodeDer(hex('03 02 08 00'))), /8 unused bits/);
      throwsDer(() => readBitString(decodeDer(hex('03 02 07 81'))), /non-zero padding/);
      throwsDer(() => readBitString(decodeDer(hex('03 01 03'))), /empty but claims 3/);
      throwsDer(() => readBitString(decodeDer(hex('03 00'))), /no unused-bits byte/);
      throwsDer(
        () => readOctetAlignedBitString(decodeDer(hex('03 02 01 80'))),
        /not a whole number of bytes/,
      );
    });
  });

  describe('object identifiers', () => {
    // Expected encodings from `openssl asn1parse -genstr OID:<dotted>`.
    const vectors: [string, string][] = [
      ['2.5.29.17', '551d11'],
      ['1.2.840.10045.3.1.7', '2a8648ce3d030107'],
      ['1.2.840.113549.1.9.14', '2a864886f70d01090e'],
      ['1.3.6.1.5.5.7.3.1', '2b06010505070301'],
      ['2.999.3', '883703'],
      ['0.9.2342.19200300.100.1.1', '0992268993f22c640101'],
      ['2.25.329800735698586629295641978511506172918', '6983f09da7ebcfdee0c7a1a7b2c0948cc8f9d776'],
    ];
    for (const [dotted, h] of vectors) {
      it(`decodes and encodes ${dotted}`, () => {
        assert.equal(oidToString(hex(h)), dotted);
        assert.equal(
          derOid(dotted).toString('hex'),
          `06${(h.length / 2).toString(16).padStart(2, '0')}${h}`,
        );
        assert.equal(readOid(decodeDer(derOid(dotted))), dotted);
      });
    }

    it('rejects a sub-identifier with a leading 0x80 byte', () =>
      throwsDer(() => oidToString(hex('2a 80 01')), /non-minimal sub-identifier/));
    it('rejects an OID that ends inside a sub-identifier', () =>
      throwsDer(() => oidToString(hex('2a 86')), /ends inside a sub-identifier/));
    it('rejects an empty OID', () => throwsDer(() => oidToString(new Uint8Array(0)), /empty/));

    for (const bad of ['3.1', '1', '1.40', '1..2', '01.2', '1.2.', 'a.b']) {
      it(`refuses to encode "${bad}"`, () =>
        throwsDer(() => derOid(bad), /OBJECT IDENTIFIER|below 40/));
    }
  });

  describe('character strings', () => {
    it('decodes UTF8String, PrintableString, IA5String, BMPString and UniversalString', () => {
      assert.equal(readString(decodeDer(tlv(DerTag.UTF8_STRING, Buffer.from('héllo')))), 'héllo');
      assert.equal(
        readString(decodeDer(tlv(DerTag.PRINTABLE_STRING, Buffer.from('Ab 1')))),
        'Ab 1',
      );
      assert.equal(readString(decodeDer(tlv(DerTag.IA5_STRING, Buffer.from('a@b')))), 'a@b');
      assert.equal(readString(decodeDer(tlv(DerTag.BMP_STRING, hex('00 68 00 e9')))), 'hé');
      assert.equal(readString(decodeDer(tlv(DerTag.UNIVERSAL_STRING, hex('0001f600')))), '😀');
    });

    it('rejects invalid UTF-8', () =>
      throwsDer(
        () => readString(decodeDer(tlv(DerTag.UTF8_STRING, hex('c3 28')))),
        /not valid UTF-8/,
      ));
    it('rejects characters outside PrintableString', () =>
      throwsDer(
        () => readString(decodeDer(tlv(DerTag.PRINTABLE_STRING, Buffer.from('a@b')))),
        /not allowed in a PrintableString/,
      ));
    it('rejects non-ASCII bytes in an IA5String', () =>
      throwsDer(() => readString(decodeDer(tlv(DerTag.IA5_STRING, hex('61 80')))), /IA5String/));
    it('rejects a non-string tag', () =>
      throwsDer(() => readString(decodeDer(hex('02 01 00'))), /not a character string/));
  });

  describe('writing', () => {
    for (const n of [0, 1, 127, 128, 255, 256, 65535, 65536, 16777216]) {
      it(`encodes length ${n} minimally and reads it back`, () => {
        const len = encodeLength(n);
        const expectedBytes = n < 128 ? 1 : 1 + Math.ceil(Math.log2(n + 1) / 8);
        assert.equal(len.length, expectedBytes);
        if (n <= 65536) {
          const buf = Buffer.concat([Uint8Array.of(0x04), len, Buffer.alloc(n)]);
          assert.equal(decodeDer(buf).contents.length, n);
        }
      });
    }

    it('nests TLVs', () => {
      assert.equal(
        tlv(DerTag.SEQUENCE, tlv(DerTag.INTEGER, Uint8Array.of(1)), tlv(DerTag.NULL)).toString(
          'hex',
        ),
        '30050201010500',
      );
      assert.equal(tlv(contextTag(0, true)).toString('hex'), 'a000');
      assert.equal(contextTag(2), 0x82);
    });

    it('refuses multi-byte tags', () => {
      throwsDer(() => tlv(0x1f), /single-byte tags/);
      throwsDer(() => contextTag(31), /multi-byte tag/);
    });

    const ints: [string, string][] = [
      ['', '020100'],
      ['000000', '020100'],
      ['000005', '020105'],
      ['80', '02020080'],
      ['0080', '02020080'],
      ['7fff', '02027fff'],
      ['00ff01', '020300ff01'],
    ];
    for (const [magnitude, expected] of ints) {
      it(`encodes the unsigned magnitude "${magnitude}" as the positive INTEGER ${expected}`, () => {
        const enc = derUnsignedInteger(hex(magnitude));
        assert.equal(enc.toString('hex'), expected);
        integerContents(decodeDer(enc)); // and it is minimal by the reader's rules
      });
    }

    const times: [string, number, string][] = [
      ['the first UTCTime instant, 1950', Date.UTC(1950, 0, 1), '170d3530303130313030303030305a'],
      [
        'the last second of 2049 as UTCTime, dropping milliseconds',
        Date.UTC(2049, 11, 31, 23, 59, 59, 999),
        '170d3439313233313233353935395a',
      ],
      [
        'the first second of 2050 as GeneralizedTime',
        Date.UTC(2050, 0, 1),
        '180f32303530303130313030303030305a',
      ],
      [
        '1949 as GeneralizedTime (UTCTime cannot hold it)',
        Date.UTC(1949, 11, 31, 23, 59, 59),
        '180f31393439313233313233353935395a',
      ],
      [
        'a 2026 instant as UTCTime',
        Date.UTC(2026, 10, 21, 8, 5, 3),
        '170d3236313132313038303530335a',
      ],
    ];
    for (const [name, ms, expected] of times) {
      it(`encodes ${name}`, () => assert.equal(derTime(ms).toString('hex'), expected));
    }

    it('refuses times it cannot encode', () => {
      throwsDer(() => derTime(Number.NaN), /cannot be encoded/);
      throwsDer(() => derTime(Date.UTC(10000, 0, 1)), /cannot be encoded/);
      throwsDer(() => derTime(Date.UTC(-1, 0, 1)), /before year 0/);
    });
  });
});
