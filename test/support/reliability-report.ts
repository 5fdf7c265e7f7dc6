/**
 * Figures of the reliability suites (fuzzing, properties, faults, soak), collected for the table
 * `npm run test:reliability` prints. Each suite records one line when it ends; with
 * `MESHID_RELIABILITY_REPORT` unset (a plain `npm test`) nothing is written.
 */
import { appendFileSync } from 'node:fs';

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
