/**
 * Figures of the reliability suites (fuzzing, properties, faults, soak), collected for the table
 * `npm run test:reliability` prints. Each suite records one line when it ends; with
 * `MESHID_RELIABILITY_REPORT` unset (a plain `npm test`) nothing is written.
 */
import { appendFileSync, existsSync, readFileSync } from 'node:fs';

/** One suite's figures. */
export interface ReliabilityRecord {
  readonly suite: string;
  /** Generated cases tried (fuzz and property cases). */
  readonly cases?: number;
  /** Faults injected. */
  readonly faults?: number;
  /** Certify (and proxied) requests sent. */
  readonly requests: number;
  /** Certificates issued for a request that should have been refused. Must be 0. */
  readonly wronglyIssued?: number;
  /** Requests that failed while a fault was in force where none may fail. Must be 0. */
  readonly failedWhereNoneMay?: number;
  /** Anything else worth a column in the notes (slopes, times). */
  readonly notes?: string;
}

/**
 * Appends a record to the report file named by `MESHID_RELIABILITY_REPORT`, if any.
 *
 * @example
 * ```ts
 * recordReliability({ suite: 'fuzz: CSR parser', cases: 3000, requests: 0, wronglyIssued: 0 });
 * ```
 */
export function recordReliability(r: ReliabilityRecord): void {
  const file = process.env['MESHID_RELIABILITY_REPORT'];
  if (file === undefined || file === '') return;
  appendFileSync(file, `${JSON.stringify(r)}\n`);
}

/** The figures that are counts: non-negative integers, summed in the total row. */
const COUNTS = ['cases', 'faults', 'requests', 'wronglyIssued', 'failedWhereNoneMay'] as const;
type Count = (typeof COUNTS)[number];

/**
 * The records in a report file, in the order the suites ended. A line that is not a record (a
 * suite that wrote something else, a torn write) is an error: the table must not quietly lose a
 * suite.
 */
export function readReliability(file: string): ReliabilityRecord[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line, i) => {
      let r: unknown;
      try {
        r = JSON.parse(line);
      } catch {
        throw new Error(`report line ${i + 1} is not JSON: ${line.slice(0, 80)}`);
      }
      const rec = r as Partial<Record<keyof ReliabilityRecord, unknown>>;
      const bad = COUNTS.filter((k) => {
        const v = rec[k];
        return v !== undefined && !(typeof v === 'number' && Number.isInteger(v) && v >= 0);
      });
      if (typeof rec.suite !== 'string' || typeof rec.requests !== 'number' || bad.length > 0)
        throw new Error(`report line ${i + 1} is not a record (${bad.join(', ')}): ${line}`);
      return r as ReliabilityRecord;
    });
}

/** Why a run's records fail it (empty when they pass). */
export function reliabilityProblems(records: readonly ReliabilityRecord[]): string[] {
  const problems: string[] = [];
  if (records.length === 0) problems.push('no suite recorded any figures');
  for (const r of records) {
    if ((r.wronglyIssued ?? 0) > 0)
      problems.push(`${r.suite}: ${r.wronglyIssued} certificate(s) wrongly issued`);
    if ((r.failedWhereNoneMay ?? 0) > 0)
      problems.push(`${r.suite}: ${r.failedWhereNoneMay} request(s) failed where none may`);
  }
  return problems;
}

const COLUMNS = [
  'suite',
  'cases tried',
  'faults injected',
  'requests sent',
  'wrongly issued',
  'failed during faults where none may',
  'notes',
] as const;

/**
 * The table as Markdown: one row per record and a total row. A figure a suite does not measure
 * is shown as "—" and counts as 0 in the total.
 *
 * @example
 * ```ts
 * process.stdout.write(reliabilityTable(readReliability(file)));
 * ```
 */
export function reliabilityTable(records: readonly ReliabilityRecord[]): string {
  const n = (v: number | undefined): string => (v === undefined ? '—' : v.toLocaleString('en'));
  const sum = (k: Count): number => records.reduce((s, r) => s + (r[k] ?? 0), 0);
  const cell = (s: string): string => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
  const rows = records.map((r) => [
    cell(r.suite),
    n(r.cases),
    n(r.faults),
    n(r.requests),
    n(r.wronglyIssued),
    n(r.failedWhereNoneMay),
    cell(r.notes ?? ''),
  ]);
  rows.push([
    '**total**',
    n(sum('cases')),
    n(sum('faults')),
    n(sum('requests')),
    n(sum('wronglyIssued')),
    n(sum('failedWhereNoneMay')),
    `${records.length} suites`,
  ]);
  return [
    `| ${COLUMNS.join(' | ')} |`,
    `|${COLUMNS.map((_, i) => (i === 0 || i === COLUMNS.length - 1 ? '---' : '---:')).join('|')}|`,
    ...rows.map((r) => `| ${r.join(' | ')} |`),
    '',
  ].join('\n');
}
