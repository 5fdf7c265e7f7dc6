import { strict as assert } from 'node:assert';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isMeshidError } from '../../../core/index.js';
import {
  ROTATION_ANNOTATION,
  readRotationStateFile,
  rotationInProgress,
  rotationStateFromAnnotations,
} from '../../../trust-bundle/index.js';
import {
  parseRotationState,
  serializeRotationState,
} from '../../../trust-bundle/rotation-state.js';
import type { RotationState } from '../../../trust-bundle/index.js';

const T = '2026-06-01T00:00:00.000Z';
const state: RotationState = {
  version: 1,
  id: 'r1',
  mode: 'local',
  phase: 'propagate',
  paused: false,
  startedAt: T,
  phaseStartedAt: T,
  updatedAt: T,
  oldRoot: { fingerprint: 'a'.repeat(64), subject: 'CN=a', notAfter: T },
  newRoot: { fingerprint: 'b'.repeat(64), subject: 'CN=b', notAfter: T },
  waitingFor: { description: '1 of 2 proxies report the staged bundle', done: 1, total: 2 },
  history: [
    { phase: 'stage', at: T },
    { phase: 'propagate', at: T },
  ],
};

function stateError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(isMeshidError(err, 'ERR_ROTATION_STATE'), String(err));
    return err.message;
  }
  assert.fail('expected ERR_ROTATION_STATE');
}

describe('trust-bundle: rotation state', () => {
  it('round-trips through its JSON form', () => {
    assert.deepEqual(parseRotationState(serializeRotationState(state)), state);
    assert.equal(rotationInProgress(state), true);
    assert.equal(rotationInProgress({ ...state, phase: 'done' }), false);
  });

  it('reads the ConfigMap annotation, and nothing when there is none', () => {
    const s = rotationStateFromAnnotations({ [ROTATION_ANNOTATION]: JSON.stringify(state) });
    assert.equal(s?.phase, 'propagate');
    assert.equal(rotationStateFromAnnotations({}), undefined);
    assert.equal(rotationStateFromAnnotations(undefined), undefined);
  });

  it('refuses JSON that is not a state, naming the field', () => {
    assert.match(
      stateError(() => parseRotationState('{')),
      /^rotation state is not valid JSON/,
    );
    assert.match(
      stateError(() => parseRotationState(JSON.stringify({ ...state, phase: 'skip-ahead' }))),
      /^rotation state is invalid: phase: /,
    );
    assert.match(
      stateError(() => parseRotationState(JSON.stringify({ ...state, extra: 1 }))),
      /rotation state is invalid: .*extra/,
    );
    assert.match(
      stateError(() =>
        parseRotationState(
          JSON.stringify({ ...state, oldRoot: { ...state.oldRoot, fingerprint: 'x' } }),
        ),
      ),
      /oldRoot\.fingerprint: must be a hex SHA-256/,
    );
  });

  it('reads <dir>/rotation.json; no file means no rotation', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'meshid-rot-'));
    try {
      assert.equal(await readRotationStateFile(dir), undefined);
      await writeFile(join(dir, 'rotation.json'), serializeRotationState(state));
      assert.equal((await readRotationStateFile(dir))?.id, 'r1');
      await writeFile(join(dir, 'rotation.json'), 'garbage');
      await assert.rejects(readRotationStateFile(dir), (e) =>
        isMeshidError(e, 'ERR_ROTATION_STATE'),
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
