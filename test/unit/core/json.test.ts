import { strict as assert } from 'node:assert';
import {
  DEFAULTS,
  JsonDepthMeter,
  JsonTooDeep,
  isMeshidError,
  parseJson,
} from '../../../core/index.js';

const nested = (depth: number, open = '[', close = ']'): string =>
  `${open.repeat(depth)}${close.repeat(depth)}`;

describe('core/json: JSON from peers with its nesting bounded', () => {
  const cases: { name: string; text: string; deepest: number }[] = [
    { name: 'a scalar is 0 deep', text: '42', deepest: 0 },
    { name: 'an empty object is 1 deep', text: '{}', deepest: 1 },
    { name: 'objects and arrays count alike', text: '{"a":[{"b":[1]}]}', deepest: 4 },
    { name: 'siblings do not add up', text: '[[1],[2],[[3]]]', deepest: 3 },
    { name: 'brackets inside strings do not count', text: '["[[[[{{{{"]', deepest: 1 },
    { name: 'an escaped quote does not end a string', text: '["\\"[[[[", [1]]', deepest: 2 },
    { name: 'an escaped backslash does end it', text: '["\\\\", [[1]]]', deepest: 3 },
    { name: 'non-ASCII text is skipped', text: '{"é€😀":["[ü"]}', deepest: 2 },
  ];
  for (const c of cases) {
    it(`${c.name} (${c.deepest}), as one string and as bytes split at every position`, () => {
      const whole = new JsonDepthMeter(10);
      assert.equal(whole.write(c.text), true);
      assert.equal(whole.deepest, c.deepest);
      const bytes = Buffer.from(c.text, 'utf8');
      for (let cut = 0; cut <= bytes.length; cut++) {
        const split = new JsonDepthMeter(10);
        assert.equal(split.write(bytes.subarray(0, cut)), true);
        assert.equal(split.write(bytes.subarray(cut)), true);
        assert.equal(split.deepest, c.deepest, `cut at ${cut}`);
      }
      assert.deepEqual(parseJson(c.text, 'x'), JSON.parse(c.text));
    });
  }

  it(`bounds at ${DEFAULTS.maxJsonDepth} by default: that deep parses, one more is refused with ERR_JSON_TOO_DEEP naming the bound`, () => {
    assert.equal(DEFAULTS.maxJsonDepth, 64);
    assert.deepEqual(parseJson(nested(64), 'the body'), JSON.parse(nested(64)));
    assert.throws(
      () => parseJson(nested(65), 'the body'),
      (err: unknown) =>
        err instanceof JsonTooDeep &&
        isMeshidError(err, 'ERR_JSON_TOO_DEEP') &&
        err.info.http === 400 &&
        /^the body nests deeper than 64 levels/.test(err.message),
    );
  });

  it('refuses in the first piece that passes the bound, and every piece after it', () => {
    const meter = new JsonDepthMeter(3);
    assert.equal(meter.write('[[['), true);
    assert.equal(meter.write('['), false);
    assert.equal(meter.write(']]]]'), false);
  });

  it('refuses 2.5 million levels without parsing them: the scan stops one level past the bound', () => {
    const text = nested(2_500_000);
    assert.throws(() => parseJson(text, 'the body'), JsonTooDeep);
    const meter = new JsonDepthMeter();
    assert.equal(meter.write(text), false);
    assert.equal(meter.deepest, 65);
  });

  it('leaves the verdict on malformed JSON to JSON.parse', () => {
    assert.throws(() => parseJson('[1,', 'x'), SyntaxError);
    assert.throws(() => parseJson(']]]]', 'x'), SyntaxError);
  });
});
