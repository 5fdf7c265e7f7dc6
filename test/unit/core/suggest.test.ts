import { strict as assert } from 'node:assert';
import { closest, didYouMean, editDistance } from '../../../core/suggest.js';

describe('core/suggest: did you mean', () => {
  it('counts a swap of neighbours as one edit', () => {
    assert.equal(editDistance('chcek', 'check'), 1);
    assert.equal(editDistance('check', 'check'), 0);
    assert.equal(editDistance('', 'ca'), 2);
    assert.equal(editDistance('kitten', 'sitting'), 3);
  });

  const commands = ['init', 'token', 'ca', 'proxy', 'proxy-init', 'local', 'check', 'trust'];
  for (const [typed, meant] of [
    ['chek', 'check'],
    ['chcek', 'check'],
    ['CHECK', 'check'],
    ['proxy-int', 'proxy-init'],
    ['trsut', 'trust'],
    ['locl', 'local'],
  ] as const) {
    it(`suggests "${meant}" for "${typed}"`, () => assert.equal(closest(typed, commands), meant));
  }

  for (const typed of ['xyz', 'deploy', '', 'zz']) {
    it(`suggests nothing for "${typed}", which is near no command`, () =>
      assert.equal(closest(typed, commands), undefined));
  }

  it('suggests the one flag a prefix starts', () => {
    assert.equal(closest('trust-anch', ['trust-anchors', 'trust-domain']), 'trust-anchors');
    assert.equal(closest('trust', ['trust-anchors', 'trust-domain']), undefined);
  });

  it('writes the suffix an error message appends, or nothing', () => {
    assert.equal(didYouMean('chek', commands), '; did you mean "check"?');
    assert.equal(
      didYouMean('dri', ['dir'], (f) => `--${f}`),
      '; did you mean --dir?',
    );
    assert.equal(didYouMean('zzz', commands), '');
  });
});
