/**
 * The checklist a person reads: the checks grouped, one line each with ✓, ‼ or ×, and under a ‼
 * or × one line that says what to do; then a summary line.
 */
import type { Styles } from '../term.js';
import type { CheckReport, CheckStatus } from './model.js';

/** The symbol of each status. */
const SYMBOLS: Readonly<Record<CheckStatus, string>> = { ok: '✓', warn: '‼', error: '×' };

/** Renders the report as text. */
export function renderReport(report: CheckReport, s: Styles): string {
  const colour = { ok: s.green, warn: s.yellow, error: s.red } as const;
  const lines: string[] = [
    s.bold(
      `meshid check: ${report.mode === 'local' ? 'local state' : report.mode === 'pre' ? 'before install, cluster' : 'cluster'} ${report.target}`,
    ),
  ];
  let group = '';
  for (const c of report.checks) {
    if (c.group !== group) {
      group = c.group;
      lines.push('', s.bold(group));
    }
    lines.push(`  ${colour[c.status](SYMBOLS[c.status])} ${c.id}: ${c.message}`);
    if (c.fix !== undefined && c.status !== 'ok') lines.push(`      ${s.dim('fix:')} ${c.fix}`);
  }
  const { ok, warn, error } = report.summary;
  const verdict =
    error > 0
      ? s.red(`${error} failed`)
      : warn > 0
        ? s.yellow('passed with warnings')
        : s.green('all checks passed');
  lines.push(
    '',
    `Status: ${verdict} (${ok} ✓, ${warn} ‼, ${error} ×) in ${(report.durationMs / 1000).toFixed(1)} s`,
  );
  return `${lines.join('\n')}\n`;
}
