/**
 * The JSON schema of `meshid check --output json`, written out independently of the code that
 * produces it: a field renamed, retyped or removed there fails every test that parses a report.
 */
import { strict as assert } from 'node:assert';
import { z } from 'zod';
import { CHECKS } from '../../cli/check/model.js';
import { serializeRotationState } from '../../trust-bundle/rotation-state.js';
import type { RotationState } from '../../trust-bundle/index.js';

const ids = CHECKS.map((c) => c.id) as [string, ...string[]];

/** Schema version 1. New optional fields may be added; nothing here may change meaning. */
export const REPORT_SCHEMA_V1 = z.strictObject({
  schemaVersion: z.literal(1),
  mode: z.enum(['local', 'cluster', 'pre']),
  target: z.string().min(1),
  checkedAt: z.iso.datetime(),
  durationMs: z.number().int().min(0),
  success: z.boolean(),
  summary: z.strictObject({
    ok: z.number().int().min(0),
    warn: z.number().int().min(0),
    error: z.number().int().min(0),
  }),
  checks: z.array(
    z.strictObject({
      id: z.enum(ids),
      group: z.string().min(1),
      status: z.enum(['ok', 'warn', 'error']),
      message: z.string().min(1),
      fix: z.string().min(1).optional(),
    }),
  ),
});

export type Report = z.infer<typeof REPORT_SCHEMA_V1>;

/** Asserts the report matches schema v1 and is self-consistent (summary, success, fixes). */
export function assertReportShape(report: unknown): asserts report is Report {
  const parsed = REPORT_SCHEMA_V1.safeParse(report);
  assert.ok(parsed.success, parsed.success ? '' : z.prettifyError(parsed.error));
  const r = parsed.data;
  const count = (s: string): number => r.checks.filter((c) => c.status === s).length;
  assert.deepEqual(r.summary, { ok: count('ok'), warn: count('warn'), error: count('error') });
  assert.equal(r.success, r.summary.error === 0);
  for (const c of r.checks) {
    if (c.status !== 'ok') assert.ok(c.fix !== undefined, `${c.id} is ${c.status} without a fix`);
    assert.equal(c.group, CHECKS.find((x) => x.id === c.id)!.group);
  }
  assert.equal(new Set(r.checks.map((c) => c.id)).size, r.checks.length, 'an id appears twice');
}

/** The one check with this id (fails when it is missing). */
export function byId(report: Report, id: string): Report['checks'][number] {
  const c = report.checks.find((x) => x.id === id);
  assert.ok(c !== undefined, `no check ${id} in ${report.checks.map((x) => x.id).join(', ')}`);
  return c;
}

/** A valid rotation state (issue 8's schema), serialized, with the given overrides. */
export function rotationStateJson(overrides: Partial<RotationState> = {}): string {
  const at = '2026-01-01T00:00:00.000Z';
  const root = {
    fingerprint: 'a'.repeat(64),
    subject: 'CN=root.linkerd.cluster.local',
    notAfter: '2036-01-01T00:00:00.000Z',
  };
  return serializeRotationState({
    version: 1,
    id: 'r1',
    mode: 'local',
    phase: 'propagate',
    paused: false,
    startedAt: at,
    phaseStartedAt: at,
    updatedAt: at,
    oldRoot: root,
    newRoot: { ...root, fingerprint: 'b'.repeat(64) },
    history: [{ phase: 'stage', at }],
    ...overrides,
  });
}
