/**
 * Whether anyone still waits for a Certify call's answer. The server knows (the caller's
 * `grpc-timeout`, the stream's state); admission control and the handler ask before each
 * expensive step, so that no token is checked and nothing is signed for a caller that has gone
 * (in a restart storm that was most of the CA's work: docs/benchmarks.md).
 */
import { MeshidError } from '../../core/index.js';

/** Why nobody will read a call's answer any more. */
export type CallAbandoned = 'deadline' | 'gone';

/** Where a call was dropped: waiting for admission, or before the handler's steps. */
type DropStage = 'queue' | 'start' | 'token' | 'sign';

/** What a handler may ask about the call it is deciding. */
export interface CallState {
  /**
   * Undefined while the caller still waits for the answer; 'deadline' once the caller's
   * `grpc-timeout` has passed, 'gone' once the stream is closed or reset (the caller cancelled
   * or its connection is gone). Cheap: asked before each expensive step.
   */
  abandoned(): CallAbandoned | undefined;
}

/** Told about every call dropped because its caller had gone, for metrics. */
export type DropObserver = (why: CallAbandoned, stage: DropStage) => void;

/**
 * The refusal of an abandoned call: DEADLINE_EXCEEDED (answered if the stream is still open)
 * or CANCELLED (nobody can read it).
 */
export function abandonedError(why: CallAbandoned, stage: DropStage): MeshidError {
  const where = stage === 'queue' ? 'while waiting for admission' : `before the ${stage} step`;
  return why === 'deadline'
    ? new MeshidError('ERR_CERTIFY_DEADLINE_EXCEEDED', `the caller's deadline passed ${where}`)
    : new MeshidError('ERR_CERTIFY_CALLER_GONE', `the caller left ${where}`);
}

/**
 * Throws the refusal of `call` when its caller has gone, telling `onDropped`; does nothing
 * otherwise (or without a call state).
 */
export function checkWanted(
  call: CallState | undefined,
  stage: DropStage,
  onDropped?: DropObserver,
): void {
  const why = call?.abandoned();
  if (why === undefined) return;
  onDropped?.(why, stage);
  throw abandonedError(why, stage);
}
