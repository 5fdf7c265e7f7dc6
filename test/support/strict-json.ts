import { strict as assert } from 'node:assert';

/**
 * A strict reading of one JSON log line: it parses, and it is exactly what serialising its
 * parse gives, which a line holding a key twice is not (JSON.parse silently keeps the last, a
 * strict parser refuses the line).
 */
export function strictJsonLine(line: string): Record<string, unknown> {
  const record = JSON.parse(line) as Record<string, unknown>;
  assert.equal(line, JSON.stringify(record), `not strict JSON (a key twice?): ${line}`);
  return record;
}
