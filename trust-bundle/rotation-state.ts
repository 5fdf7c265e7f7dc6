/**
 * The persisted state of a trust-anchor rotation. It lives next to what it governs: as JSON in
 * the annotation `meshid.io/rotation` of the anchors ConfigMap (so a write of the bundle and of
 * the state is one object update, guarded by one resourceVersion), and as `<dir>/rotation.json`
 * in local mode. Anyone may read it (`meshid check`, `meshid trust status`); only the rotation
 * controller writes it.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { MeshidError } from '../core/index.js';

/**
 * The annotation of the anchors ConfigMap that holds the rotation state.
 *
 * @example
 * ```ts
 * configMap.metadata.annotations?.[ROTATION_ANNOTATION];
 * ```
 */
export const ROTATION_ANNOTATION = 'meshid.io/rotation';

/**
 * The file in a local state folder that holds the rotation state.
 *
 * @example
 * ```ts
 * join(dir, ROTATION_FILE); // '.meshid/rotation.json'
 * ```
 */
export const ROTATION_FILE = 'rotation.json';

/**
 * The phases, in order. `stage` → `propagate` → `switch` → `drain` → `retire` → `done`;
 * `rolled-back` ends a rotation undone from stage or propagate.
 */
const ROTATION_PHASES = [
  'stage',
  'propagate',
  'switch',
  'drain',
  'retire',
  'done',
  'rolled-back',
] as const;
export type RotationPhase = (typeof ROTATION_PHASES)[number];

/** A root as the state records it (never a key). */
export interface RootRef {
  /** Hex SHA-256 of the certificate's DER. */
  readonly fingerprint: string;
  readonly subject: string;
  /** ISO 8601. */
  readonly notAfter: string;
  /** cert-manager mode: the root Certificate (and CA Issuer) that holds this root. */
  readonly certificate?: string | undefined;
}

/** What the current phase waits for, as `meshid trust status` shows it. */
export interface RotationWait {
  /** One line, e.g. "2 of 5 proxies report the staged bundle". */
  readonly description: string;
  /** Progress so far, when it is countable. */
  readonly done?: number | undefined;
  readonly total?: number | undefined;
  /** ISO 8601: not before this time (a lifetime bound), when the wait has one. */
  readonly notBefore?: string | undefined;
  /** ISO 8601: after this the wait is reported as overdue; the rotation holds, never skips. */
  readonly deadline?: string | undefined;
}

/** The rotation state, version 1. */
export interface RotationState {
  readonly version: 1;
  /** A short id, unique per rotation. */
  readonly id: string;
  readonly mode: 'local' | 'cert-manager';
  readonly phase: RotationPhase;
  readonly paused: boolean;
  /** ISO 8601 times. */
  readonly startedAt: string;
  readonly phaseStartedAt: string;
  readonly updatedAt: string;
  /** The root the issuer chains to when the rotation started. */
  readonly oldRoot: RootRef;
  /** The root being rotated to; set once staged. */
  readonly newRoot?: RootRef | undefined;
  /**
   * cert-manager mode: the root Certificate (and CA Issuer and Secret, one name) that holds the
   * new root. Equal to `oldRoot.certificate` when cert-manager renewed the root in place.
   */
  readonly plannedRoot?: string | undefined;
  /** Hex SHA-256 of the bundle text with both roots (what propagate waits for). */
  readonly stagedBundleFingerprint?: string | undefined;
  /** When the issuer was seen chaining to the new root (drain counts leaf lifetimes from it). */
  readonly switchedAt?: string | undefined;
  readonly waitingFor?: RotationWait | undefined;
  /** Who holds the rotation: the controller instance that last wrote the state. */
  readonly holder?: string | undefined;
  /** The last problem seen (the rotation holds on it), for status. */
  readonly lastError?: string | undefined;
  /** Every phase entered, with its time. */
  readonly history: readonly { readonly phase: RotationPhase; readonly at: string }[];
}

const iso = z.string().refine((s) => !Number.isNaN(Date.parse(s)), 'must be an ISO 8601 time');
const hex64 = z.string().regex(/^[0-9a-f]{64}$/, 'must be a hex SHA-256');
const rootRef = z.strictObject({
  fingerprint: hex64,
  subject: z.string(),
  notAfter: iso,
  certificate: z.string().optional(),
});
const schema = z.strictObject({
  version: z.literal(1),
  id: z.string().regex(/^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$/, 'must be a short lowercase id'),
  mode: z.enum(['local', 'cert-manager']),
  phase: z.enum(ROTATION_PHASES),
  paused: z.boolean(),
  startedAt: iso,
  phaseStartedAt: iso,
  updatedAt: iso,
  oldRoot: rootRef,
  newRoot: rootRef.optional(),
  plannedRoot: z.string().optional(),
  stagedBundleFingerprint: hex64.optional(),
  switchedAt: iso.optional(),
  waitingFor: z
    .strictObject({
      description: z.string(),
      done: z.number().int().min(0).optional(),
      total: z.number().int().min(0).optional(),
      notBefore: iso.optional(),
      deadline: iso.optional(),
    })
    .optional(),
  holder: z.string().optional(),
  lastError: z.string().optional(),
  history: z.array(z.strictObject({ phase: z.enum(ROTATION_PHASES), at: iso })),
});

/**
 * Parses and validates the JSON of a rotation state. Throws ERR_ROTATION_STATE naming the bad
 * field.
 *
 * @example
 * ```ts
 * const state = parseRotationState(configMap.metadata.annotations['meshid.io/rotation']);
 * state.phase; // 'propagate'
 * ```
 */
export function parseRotationState(json: string): RotationState {
  let doc: unknown;
  try {
    doc = JSON.parse(json);
  } catch (err) {
    throw new MeshidError(
      'ERR_ROTATION_STATE',
      `rotation state is not valid JSON: ${(err as Error).message}`,
      { cause: err },
    );
  }
  const result = schema.safeParse(doc);
  if (!result.success) {
    const problems = result.error.issues.map(
      (i) => `${i.path.join('.') || '(state)'}: ${i.message}`,
    );
    throw new MeshidError(
      'ERR_ROTATION_STATE',
      `rotation state is invalid: ${problems.join('; ')}`,
    );
  }
  return result.data as RotationState;
}

/**
 * The JSON text a state is stored as (stable key order, no whitespace).
 *
 * @example
 * ```ts
 * annotations['meshid.io/rotation'] = serializeRotationState(state);
 * ```
 */
export function serializeRotationState(state: RotationState): string {
  return JSON.stringify(schema.parse(state));
}

/**
 * The rotation state in a ConfigMap's annotations, or undefined when no rotation was ever
 * recorded. Throws ERR_ROTATION_STATE when the annotation is there but unreadable.
 *
 * @example
 * ```ts
 * const state = rotationStateFromAnnotations(configMap.metadata?.annotations);
 * ```
 */
export function rotationStateFromAnnotations(
  annotations: Readonly<Record<string, string>> | undefined,
): RotationState | undefined {
  const text = annotations?.[ROTATION_ANNOTATION];
  return text === undefined ? undefined : parseRotationState(text);
}

/**
 * The rotation state of a local state folder (`<dir>/rotation.json`), or undefined when there is
 * none. Throws ERR_ROTATION_STATE when the file is unreadable or invalid.
 *
 * @example
 * ```ts
 * const state = await readRotationStateFile('.meshid');
 * ```
 */
export async function readRotationStateFile(dir: string): Promise<RotationState | undefined> {
  let text: string;
  try {
    text = await readFile(join(dir, ROTATION_FILE), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new MeshidError(
      'ERR_ROTATION_STATE',
      `${join(dir, ROTATION_FILE)}: cannot read: ${(err as Error).message}`,
      { cause: err },
    );
  }
  return parseRotationState(text);
}

/**
 * True when a rotation is under way (not finished, not rolled back).
 *
 * @example
 * ```ts
 * if (state !== undefined && rotationInProgress(state)) console.log(state.phase);
 * ```
 */
export function rotationInProgress(state: RotationState): boolean {
  return state.phase !== 'done' && state.phase !== 'rolled-back';
}
