import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import { ERROR_CODES, GrpcStatus, MeshidError } from '../../../core/index.js';

describe('error code table', () => {
  const doc = readFileSync(new URL('../../../docs/errors.md', import.meta.url), 'utf8');
  const rows = new Map(
    [...doc.matchAll(/^\| `(ERR_[A-Z_]+)` \| ([A-Z_]+) \| (\d+) \| (yes|no) \|/gm)].map((m) => [
      m[1]!,
      m.slice(2),
    ]),
  );

  it('documents every code in docs/errors.md with the same gRPC status, HTTP status and retryable flag', () => {
    for (const [code, info] of Object.entries(ERROR_CODES)) {
      assert.deepEqual(
        rows.get(code),
        [info.grpc, String(info.http), info.retryable ? 'yes' : 'no'],
        code,
      );
    }
  });

  it('documents no code that does not exist', () => {
    assert.deepEqual(
      [...rows.keys()].filter((c) => !(c in ERROR_CODES)),
      [],
    );
  });

  it('maps every code to a real gRPC status', () => {
    for (const info of Object.values(ERROR_CODES)) assert.ok(info.grpc in GrpcStatus);
  });

  it('gives errors their code, class name and cause', () => {
    const cause = new Error('inner');
    const err = new MeshidError('ERR_CSR_POLICY', 'bad key', { cause });
    assert.equal(err.code, 'ERR_CSR_POLICY');
    assert.equal(err.name, 'MeshidError');
    assert.equal(err.cause, cause);
    assert.equal(err.info.grpc, 'FAILED_PRECONDITION');
  });
});
