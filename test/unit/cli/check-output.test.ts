/**
 * The human side of `meshid check`: colour only on a terminal and never with NO_COLOR, the
 * progress line only on a terminal, the checklist layout, durations and expiry verdicts.
 */
import { strict as assert } from 'node:assert';
import { Writable } from 'node:stream';
import { buildReport, CHECKS, result } from '../../../cli/check/model.js';
import { renderReport } from '../../../cli/check/render.js';
import { humanDuration } from '../../../cli/check/x509.js';
import { ProgressLine, styles, useColor } from '../../../cli/term.js';
import { assertReportShape } from '../../support/check-report.js';

class Sink extends Writable {
  text = '';
  constructor(readonly isTTY: boolean) {
    super();
  }
  override _write(chunk: Buffer, _enc: string, cb: () => void): void {
    this.text += chunk.toString();
    cb();
  }
}

const ESC = '\u001b[';

describe('meshid check output', () => {
  it('uses colour on a terminal only, and never with NO_COLOR or TERM=dumb', () => {
    assert.equal(useColor(new Sink(true), {}), true);
    assert.equal(useColor(new Sink(false), {}), false);
    assert.equal(useColor(new Sink(true), { NO_COLOR: '1' }), false);
    assert.equal(
      useColor(new Sink(true), { NO_COLOR: '' }),
      true,
      'an empty NO_COLOR is unset (no-color.org)',
    );
    assert.equal(useColor(new Sink(true), { TERM: 'dumb' }), false);
  });

  const report = buildReport({
    mode: 'local',
    target: '.meshid',
    startedAt: 0,
    finishedAt: 1234,
    results: [
      result('issuer-expiry', 'error', 'identity expired 2h ago', 'replace the issuer'),
      result('anchors-valid', 'ok', '1 anchor'),
      result('anchors-expiry', 'warn', 'root valid for 3d more', 'plan the rotation'),
    ],
  });

  it('renders groups in catalog order, ✓ ‼ ×, a fix line under failures and warnings, and a summary', () => {
    assertReportShape(report);
    assert.equal(report.success, false);
    const plain = renderReport(report, styles(false));
    assert.equal(
      plain,
      [
        'meshid check: local state .meshid',
        '',
        'Trust anchors',
        '  ✓ anchors-valid: 1 anchor',
        '  ‼ anchors-expiry: root valid for 3d more',
        '      fix: plan the rotation',
        '',
        'Issuer',
        '  × issuer-expiry: identity expired 2h ago',
        '      fix: replace the issuer',
        '',
        'Status: 1 failed (1 ✓, 1 ‼, 1 ×) in 1.2 s',
        '',
      ].join('\n'),
    );
    assert.ok(!plain.includes(ESC));
    const coloured = renderReport(report, styles(true));
    assert.ok(coloured.includes(`${ESC}31m×${ESC}39m`), 'red ×');
    assert.ok(coloured.includes(`${ESC}32m✓${ESC}39m`), 'green ✓');
    assert.ok(coloured.includes(`${ESC}33m‼${ESC}39m`), 'yellow ‼');
  });

  it('draws the progress line on a terminal and clears it; writes nothing elsewhere', () => {
    const tty = new Sink(true);
    const p = new ProgressLine(tty, {});
    p.update('asking the CA');
    p.done();
    assert.ok(tty.text.startsWith(`\r${ESC}K`) && tty.text.endsWith(`\r${ESC}K`), tty.text);
    assert.ok(tty.text.includes(' asking the CA…'));
    const pipe = new Sink(false);
    const q = new ProgressLine(pipe, {});
    q.update('asking the CA');
    q.done();
    assert.equal(pipe.text, '');
  });

  it('has unique check ids, each in kebab-case', () => {
    const ids = CHECKS.map((c) => c.id);
    assert.equal(new Set(ids).size, ids.length);
    for (const id of ids) assert.match(id, /^[a-z]+(-[a-z]+)*$/);
  });

  it('writes durations as their two largest units', () => {
    assert.equal(humanDuration(0), '0s');
    assert.equal(humanDuration(42_000), '42s');
    assert.equal(humanDuration(3 * 86_400_000 + 4 * 3_600_000 + 5 * 60_000), '3d 4h');
    assert.equal(humanDuration(3 * 86_400_000 + 5 * 60_000), '3d');
    assert.equal(humanDuration(-(2 * 3_600_000 + 60_000)), '2h 1m');
  });
});
