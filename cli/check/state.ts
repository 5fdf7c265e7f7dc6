/**
 * The rotation and FIPS checks: what `meshid check` shows of a trust-anchor rotation in progress
 * and of the crypto the processes run with.
 */
import { cryptoStatus } from '../../core/index.js';
import { rotationInProgress } from '../../trust-bundle/index.js';
import type { RotationState } from '../../trust-bundle/index.js';
import type { CheckResult } from './model.js';
import { result } from './model.js';

/**
 * The trust-anchor rotation (issue 8's state: `<dir>/rotation.json`, or the `meshid.io/rotation`
 * annotation of the anchors ConfigMap). `undefined`: no rotation was ever recorded. An Error: the
 * state is there but unreadable.
 */
export function checkRotation(
  state: RotationState | undefined | Error,
  source: string,
  now: number,
): CheckResult {
  if (state instanceof Error) {
    return result(
      'rotation-state',
      'error',
      `the rotation state in ${source} cannot be read: ${state.message}`,
      'inspect it with "meshid trust status"; never edit it by hand (docs/rotation.md)',
    );
  }
  if (state === undefined) return result('rotation-state', 'ok', 'no rotation in progress');
  if (!rotationInProgress(state)) {
    return result(
      'rotation-state',
      'ok',
      `no rotation in progress (the last one, ${state.id}, ended ${state.phase} at ${state.updatedAt})`,
    );
  }
  const w = state.waitingFor;
  const waiting =
    w === undefined
      ? ''
      : `; waiting for ${w.description}${w.done !== undefined && w.total !== undefined ? ` (${w.done}/${w.total})` : ''}`;
  const what = `rotation ${state.id} in phase ${state.phase} since ${state.phaseStartedAt}${state.paused ? ', paused' : ''}${waiting}`;
  const overdue = w?.deadline !== undefined && Date.parse(w.deadline) < now;
  if (state.lastError !== undefined || overdue) {
    return result(
      'rotation-state',
      'error',
      `${what}: ${state.lastError ?? `overdue since ${w!.deadline}`}`,
      `"meshid trust status" shows what it waits for; the runbook for phase ${state.phase} is in docs/rotation.md`,
    );
  }
  return result(
    'rotation-state',
    'warn',
    what,
    state.paused
      ? 'resume it when ready ("meshid trust resume", docs/rotation.md)'
      : 'let it finish; "meshid trust status" follows it (docs/rotation.md)',
  );
}

/** FIPS status of this process and, when its /metrics says, of the CA. */
export interface FipsFacts {
  readonly client: boolean;
  readonly ca?: boolean | undefined;
}

/** This process's crypto: does a FIPS provider serve it (core/fips.ts measures it). */
export function clientFips(): boolean {
  return cryptoStatus().fipsProviderActive;
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
