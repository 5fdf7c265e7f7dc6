/**
 * The rotation and FIPS checks: what `meshid check` shows of a trust-anchor rotation in progress
 * and of the crypto the processes run with.
 */
import { getFips } from 'node:crypto';
import type { CheckResult } from './model.js';
import { result } from './model.js';

/**
 * The rotation state as persisted (`<dir>/rotation.json`, or the `meshid.io/rotation` annotation
 * of the anchors ConfigMap). Undefined text: no state, so no rotation in progress.
 */
export function checkRotation(text: string | undefined, source: string): CheckResult {
  if (text === undefined || text.trim() === '') {
    return result('rotation-state', 'ok', 'no rotation in progress');
  }
  let state: Record<string, unknown>;
  try {
    const parsed: unknown = JSON.parse(text);
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed))
      throw new Error('not a JSON object');
    state = parsed as Record<string, unknown>;
  } catch (err) {
    return result(
      'rotation-state',
      'error',
      `the rotation state in ${source} cannot be read: ${(err as Error).message}`,
      'inspect it with "meshid trust status"; never edit it by hand (docs/rotation.md)',
    );
  }
  const phase = typeof state['phase'] === 'string' ? state['phase'] : undefined;
  const error = typeof state['error'] === 'string' ? state['error'] : undefined;
  if (phase === undefined || /^(idle|done|complete|completed|none)$/i.test(phase)) {
    return result(
      'rotation-state',
      'ok',
      `no rotation in progress${phase === undefined ? '' : ` (last: ${phase})`}`,
    );
  }
  if (error !== undefined || /fail|stuck|blocked|abort/i.test(phase)) {
    return result(
      'rotation-state',
      'error',
      `rotation in phase ${phase}${error === undefined ? '' : `: ${error}`}`,
      'see "meshid trust status" and the runbook for this phase (docs/rotation.md)',
    );
  }
  const since = typeof state['since'] === 'string' ? ` since ${state['since']}` : '';
  return result(
    'rotation-state',
    'warn',
    `rotation in progress: phase ${phase}${since}`,
    'let it finish; "meshid trust status" shows what it waits for (docs/rotation.md)',
  );
}

/** FIPS status of this process and, when its /metrics says, of the CA. */
export interface FipsFacts {
  readonly client: boolean;
  readonly ca?: boolean | undefined;
}

/** This process's crypto: is OpenSSL in FIPS mode. */
export function clientFips(): boolean {
  return getFips() === 1;
}

/** The CA's FIPS status from its Prometheus text (`meshid_fips_enabled` or `fips_enabled`). */
export function caFipsFromMetrics(metrics: string | undefined): boolean | undefined {
  if (metrics === undefined) return undefined;
  const m = /^(?:meshid_)?fips_enabled(?:\{[^}]*\})? ([0-9.e+-]+)$/m.exec(metrics);
  return m === null ? undefined : Number(m[1]) === 1;
}

/** Reports FIPS status (information: which side runs FIPS crypto is a policy, not a fault). */
export function checkFips(f: FipsFacts): CheckResult {
  const on = (b: boolean): string => (b ? 'on' : 'off');
  const ca = f.ca === undefined ? 'the CA does not report it' : `CA ${on(f.ca)}`;
  const text = `FIPS mode: ${ca}; this client ${on(f.client)} (OpenSSL ${process.versions.openssl ?? '?'})`;
  return result('fips-status', 'ok', text);
}
