/**
 * What `meshid trust status` prints: the phase, what it waits for and for how long, and a
 * progress line through the phases.
 */
import { formatDuration } from '../core/index.js';
import type { RotationState } from './rotation-state.js';

const STEPS = ['stage', 'propagate', 'switch', 'drain', 'retire'] as const;

/**
 * The progress line: `[x] stage  [x] propagate  [>] switch  [ ] drain  [ ] retire`.
 *
 * @example
 * ```ts
 * progressLine(state); // '[x] stage  [>] propagate  [ ] switch  [ ] drain  [ ] retire'
 * ```
 */
export function progressLine(state: RotationState): string {
  const at = STEPS.indexOf(state.phase as (typeof STEPS)[number]);
  const finished = state.phase === 'done';
  return STEPS.map((s, i) => {
    const mark =
      finished || (at >= 0 && i < at)
        ? 'x'
        : i === at
          ? state.paused
            ? '='
            : '>'
          : state.phase === 'rolled-back'
            ? '-'
            : ' ';
    return `[${mark}] ${s}`;
  }).join('  ');
}

/**
 * A human summary of a rotation state, several lines, ending with a newline.
 *
 * @example
 * ```ts
 * process.stdout.write(formatRotationStatus(state, Date.now()));
 * ```
 */
export function formatRotationStatus(state: RotationState | undefined, now: number): string {
  if (state === undefined)
    return 'no rotation recorded: the trust anchors have never been rotated by meshid\n';
  const since = (t: string): string =>
    formatDuration(Math.max(0, Math.floor((now - Date.parse(t)) / 1000) * 1000));
  const headline =
    state.phase === 'done'
      ? `rotation ${state.id} (${state.mode}): done ${since(state.phaseStartedAt)} ago`
      : state.phase === 'rolled-back'
        ? `rotation ${state.id} (${state.mode}): rolled back ${since(state.phaseStartedAt)} ago`
        : `rotation ${state.id} (${state.mode}): phase ${state.phase}${state.paused ? ' (PAUSED)' : ''} for ${since(state.phaseStartedAt)} (started ${since(state.startedAt)} ago)`;
  const lines = [
    headline,
    `  ${progressLine(state)}`,
    `  old root: ${state.oldRoot.subject} sha256 ${state.oldRoot.fingerprint.slice(0, 16)}… (expires ${state.oldRoot.notAfter})${state.oldRoot.certificate === undefined ? '' : ` Certificate ${state.oldRoot.certificate}`}`,
  ];
  if (state.newRoot !== undefined) {
    lines.push(
      `  new root: ${state.newRoot.subject} sha256 ${state.newRoot.fingerprint.slice(0, 16)}… (expires ${state.newRoot.notAfter})${state.newRoot.certificate === undefined ? '' : ` Certificate ${state.newRoot.certificate}`}`,
    );
  }
  if (state.waitingFor !== undefined && state.phase !== 'done' && state.phase !== 'rolled-back') {
    const w = state.waitingFor;
    lines.push(`  waiting for: ${w.description}`);
    if (w.total !== undefined && w.done !== undefined)
      lines.push(`  progress: ${w.done}/${w.total}`);
    if (w.notBefore !== undefined) lines.push(`  not before: ${w.notBefore}`);
    if (w.deadline !== undefined)
      lines.push(
        `  overdue after: ${w.deadline} (the rotation then holds and says so; it never skips ahead)`,
      );
  }
  if (state.waitingFor === undefined && state.phase !== 'done' && state.phase !== 'rolled-back') {
    lines.push('  waiting for: (not evaluated yet in this phase)');
  }
  if (state.lastError !== undefined) lines.push(`  last error (holding): ${state.lastError}`);
  if (state.holder !== undefined)
    lines.push(`  last written by: ${state.holder} at ${state.updatedAt}`);
  return `${lines.join('\n')}\n`;
}
