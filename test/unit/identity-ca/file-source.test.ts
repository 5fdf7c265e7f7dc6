import { strict as assert } from 'node:assert';
import { EventEmitter } from 'node:events';
import { mkdir, mkdtemp, readlink, rename, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../../../core/index.js';
import { ManualClock } from '../../../core/clock.js';
import type { Logger } from '../../../core/index.js';
import type { GeneratedCa } from '../../../core/pki.js';
import { FileIssuerSource, readIssuerMaterial } from '../../../identity-ca/issuer/file-source.js';
import type { IssuerCredentials } from '../../../identity-ca/issuer/material.js';
import { IssuerStore } from '../../../identity-ca/issuer/store.js';
import type { IssuerStoreEvents } from '../../../identity-ca/issuer/store.js';
import { NOW, assertRefused, bundle, ca, root, waitForEvent } from './fixtures/pki.js';

type Updated = IssuerStoreEvents['updated'];
type Rejected = IssuerStoreEvents['rejected'];

let generation = 0;

/**
 * Writes files the way the kubelet updates a Secret or ConfigMap volume: a new hidden folder, a
 * `..data_tmp` symlink to it renamed over `..data`, visible names linking through `..data`, and
 * the old folder removed.
 */
async function kubeletWrite(dir: string, files: Record<string, string>): Promise<void> {
  await mkdir(dir, { recursive: true });
  const ts = `..2026_11_21_12_00_00.${++generation}`;
  await mkdir(join(dir, ts));
  for (const [name, text] of Object.entries(files)) await writeFile(join(dir, ts, name), text);
  let old: string | undefined;
  try {
    old = await readlink(join(dir, '..data'));
  } catch {
    old = undefined;
  }
  await symlink(ts, join(dir, '..data_tmp'));
  await rename(join(dir, '..data_tmp'), join(dir, '..data'));
  for (const name of Object.keys(files)) {
    await symlink(join('..data', name), join(dir, name)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
    });
  }
  if (old !== undefined) await rm(join(dir, old), { recursive: true });
}

/** Replaces a file the way editors and `kubectl cp`-style tools do: write aside, then rename. */
async function replaceFile(path: string, text: string): Promise<void> {
  await writeFile(`${path}.tmp`, text);
  await rename(`${path}.tmp`, path);
}

function issuerFiles(issuer: GeneratedCa, key = issuer.privateKeyPem): Record<string, string> {
  return { 'tls.crt': issuer.certificatePem, 'tls.key': key, 'ca.crt': '' };
}

/** A logger whose lines can be awaited. */
function capturingLogger(): { logger: Logger; lines: EventEmitter } {
  const lines = new EventEmitter();
  const logger = createLogger({
    level: 'debug',
    destination: { write: (s: string) => void lines.emit('line', JSON.parse(s)) },
  });
  return { logger, lines };
}

const updatedTo =
  (subject: string) =>
  (cur: IssuerCredentials): boolean =>
    cur.subject === subject;

describe('file issuer source', () => {
  let rootA: GeneratedCa;
  let rootB: GeneratedCa;
  let issuerA: GeneratedCa;
  let issuerA2: GeneratedCa;
  let issuerB: GeneratedCa;
  let tmp: string;
  let issuerDir: string;
  let anchorsFile: string;
  let store: IssuerStore;
  let source: FileIssuerSource | undefined;
  let logs: EventEmitter;
  let logger: Logger;

  before(async () => {
    rootA = await root('root-a.test');
    rootB = await root('root-b.test');
    issuerA = await ca(rootA, 'issuer-a.test');
    issuerA2 = await ca(rootA, 'issuer-a2.test');
    issuerB = await ca(rootB, 'issuer-b.test');
  });

  beforeEach(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'meshid-file-source-'));
    issuerDir = join(tmp, 'identity', 'issuer');
    anchorsFile = join(tmp, 'trust-roots', 'ca-bundle.crt');
    await kubeletWrite(issuerDir, issuerFiles(issuerA));
    await kubeletWrite(join(tmp, 'trust-roots'), { 'ca-bundle.crt': bundle(rootA) });
    ({ logger, lines: logs } = capturingLogger());
    store = new IssuerStore({ clock: new ManualClock(NOW), logger });
    source = undefined;
  });

  afterEach(async () => {
    await source?.close();
    await rm(tmp, { recursive: true, force: true });
  });

  const start = async (): Promise<FileIssuerSource> => {
    source = new FileIssuerSource({
      issuerDir,
      trustAnchorsFile: anchorsFile,
      store,
      logger,
      debounceMs: 20,
    });
    await source.start();
    return source;
  };

  it('reads a folder of issuer material, with ca.crt optional', async () => {
    const m = await readIssuerMaterial(issuerDir);
    assert.equal(m.tlsCrt, issuerA.certificatePem);
    assert.equal(m.tlsKey, issuerA.privateKeyPem);
    assert.equal(m.caCrt, '');
    const plain = join(tmp, 'plain');
    await mkdir(plain);
    await writeFile(join(plain, 'tls.crt'), issuerA.certificatePem);
    await writeFile(join(plain, 'tls.key'), issuerA.privateKeyPem);
    assert.equal('caCrt' in (await readIssuerMaterial(plain)), false);
    await assertRefused(
      readIssuerMaterial(join(tmp, 'nowhere')),
      'ERR_ISSUER_INVALID',
      /nowhere\/tls\.(crt|key)/,
    );
  });

  it('starts with valid material and makes it current', async () => {
    await start();
    assert.equal(store.current()?.subject, 'CN=issuer-a.test');
    assert.equal(store.current()?.anchors.pem, bundle(rootA));
  });

  it('refuses to start on invalid initial material, naming the folder', async () => {
    await kubeletWrite(issuerDir, issuerFiles(issuerA, issuerA2.privateKeyPem));
    await assertRefused(start(), 'ERR_ISSUER_INVALID', /does not match/, new RegExp(issuerDir));
    assert.equal(store.current(), undefined);
  });

  it('refuses to start when a file is missing, naming the file', async () => {
    await unlink(join(issuerDir, 'tls.key'));
    await assertRefused(
      start(),
      'ERR_ISSUER_INVALID',
      new RegExp(`${join(issuerDir, 'tls.key')}: ENOENT`),
    );
  });

  it('refuses to start when the issuer does not chain to the anchors file', async () => {
    await replaceFile(anchorsFile, bundle(rootB));
    await assertRefused(start(), 'ERR_ISSUER_INVALID', /does not chain/, new RegExp(anchorsFile));
  });

  it('refuses to start on an unreadable trust anchors file, with ERR_ANCHORS_INVALID', async () => {
    await rm(join(tmp, 'trust-roots'), { recursive: true });
    await assertRefused(start(), 'ERR_ANCHORS_INVALID', new RegExp(anchorsFile));
  });

  it('picks up a valid new issuer swapped in by the kubelet', async () => {
    await start();
    const updated = waitForEvent<Updated>(store, 'updated', updatedTo('CN=issuer-a2.test'));
    await kubeletWrite(issuerDir, issuerFiles(issuerA2));
    const [cur, prev] = await updated;
    assert.equal(prev?.subject, 'CN=issuer-a.test');
    assert.equal(store.current(), cur);
  });

  it('refuses a broken issuer swapped in by the kubelet and keeps the old one', async () => {
    await start();
    const good = store.current();
    const rejected = waitForEvent<Rejected>(store, 'rejected');
    await kubeletWrite(issuerDir, issuerFiles(issuerA2, issuerA.privateKeyPem));
    const [err] = await rejected;
    assert.match(err.message, /does not match/);
    assert.equal(store.current(), good);
  });

  it("refuses an anchors file replaced by a bundle without the issuer's anchor", async () => {
    await start();
    const good = store.current();
    const rejected = waitForEvent<Rejected>(store, 'rejected');
    await kubeletWrite(join(tmp, 'trust-roots'), { 'ca-bundle.crt': bundle(rootB) });
    const [err] = await rejected;
    assert.match(err.message, /does not chain to any trust anchor/);
    assert.equal(store.current(), good);
    assert.equal(store.current()?.anchors.pem, bundle(rootA));
  });

  it('follows a root rotation: the bundle gains the new root first, then the issuer moves to it', async () => {
    await start();
    const bundleUpdated = waitForEvent(
      store,
      'updated',
      (cur: IssuerCredentials) => cur.anchors.anchors.map((a) => a.subject).length === 2,
    );
    await replaceFile(anchorsFile, bundle(rootA, rootB));
    const [afterBundle] = await bundleUpdated;
    assert.equal(afterBundle.subject, 'CN=issuer-a.test');

    const issuerUpdated = waitForEvent<Updated>(store, 'updated', updatedTo('CN=issuer-b.test'));
    await kubeletWrite(issuerDir, issuerFiles(issuerB));
    await issuerUpdated;
    assert.deepEqual(
      store.current()?.anchors.anchors.map((a) => a.subject),
      ['CN=root-a.test', 'CN=root-b.test'],
    );
  });

  it('picks up plain rewrites of the files in place', async () => {
    const plain = join(tmp, 'plain-issuer');
    await mkdir(plain);
    await writeFile(join(plain, 'tls.crt'), issuerA.certificatePem);
    await writeFile(join(plain, 'tls.key'), issuerA.privateKeyPem);
    issuerDir = plain;
    await start();
    const updated = waitForEvent<Updated>(store, 'updated', updatedTo('CN=issuer-a2.test'));
    await writeFile(join(plain, 'tls.key'), issuerA2.privateKeyPem);
    await writeFile(join(plain, 'tls.crt'), issuerA2.certificatePem);
    await updated;
  });

  it('follows the issuer folder when it is replaced as a whole with mv, and keeps watching the new one', async () => {
    await start();
    const next = join(tmp, 'identity', 'issuer.next');
    await kubeletWrite(next, issuerFiles(issuerA2));
    const first = waitForEvent<Updated>(store, 'updated', updatedTo('CN=issuer-a2.test'));
    await rename(issuerDir, join(tmp, 'identity', 'issuer.old'));
    await rename(next, issuerDir);
    await first;

    // A later change inside the new folder is seen, so the watch moved to it.
    const second = waitForEvent<Updated>(store, 'updated', updatedTo('CN=issuer-a.test'));
    await kubeletWrite(issuerDir, issuerFiles(issuerA));
    await second;
  });

  it('notices an issuer folder that was deleted and then put back', async () => {
    await start();
    const readFailure = waitForEvent(logs, 'line', (l: { msg?: string }) =>
      /cannot read issuer files/.test(l.msg ?? ''),
    );
    await rm(issuerDir, { recursive: true });
    await readFailure;
    const next = join(tmp, 'identity', 'issuer.next');
    await kubeletWrite(next, issuerFiles(issuerA2));
    const updated = waitForEvent<Updated>(store, 'updated', updatedTo('CN=issuer-a2.test'));
    await rename(next, issuerDir);
    await updated;
  });

  it('logs a read failure in the middle of a change, does not throw, and recovers on the next change', async () => {
    await start();
    const good = store.current();
    const readFailure = waitForEvent(logs, 'line', (l: { msg?: string }) =>
      /cannot read issuer files/.test(l.msg ?? ''),
    );
    await unlink(join(issuerDir, 'tls.key'));
    const [line] = await readFailure;
    assert.match(String((line as { reason?: string }).reason), /tls\.key: ENOENT/);
    assert.equal(store.current(), good);

    const updated = waitForEvent<Updated>(store, 'updated', updatedTo('CN=issuer-a2.test'));
    await kubeletWrite(issuerDir, issuerFiles(issuerA2));
    await updated;
  });

  it('re-reads on an explicit reload, reporting unchanged material as unchanged', async () => {
    await start();
    assert.equal((await source!.reload()).status, 'unchanged');
    await kubeletWrite(issuerDir, issuerFiles(issuerA2));
    const result = await source!.reload();
    // The watcher may have applied the change first; either way the new issuer is current.
    assert.ok(result.status === 'updated' || result.status === 'unchanged');
    assert.equal(store.current()?.subject, 'CN=issuer-a2.test');
  });

  it('reports a read failure on reload as rejected without throwing', async () => {
    await start();
    await unlink(join(issuerDir, 'tls.crt'));
    const result = await source!.reload();
    assert.equal(result.status, 'rejected');
    assert.match(result.status === 'rejected' ? result.error.message : '', /tls\.crt: ENOENT/);
    assert.equal(store.current()?.subject, 'CN=issuer-a.test');
  });

  it('stops reloading once closed', async () => {
    await start();
    await source!.close();
    let applied = 0;
    const apply = store.apply.bind(store);
    store.apply = (...args) => {
      applied++;
      return apply(...args);
    };
    await kubeletWrite(issuerDir, issuerFiles(issuerA2));
    // Absence cannot be awaited; give the (20 ms) debounce ten times its delay to misfire.
    await assert.rejects(
      waitForEvent<Updated>(store, 'updated', () => true, 200),
      /timed out/,
    );
    assert.equal(applied, 0);
    assert.equal(store.current()?.subject, 'CN=issuer-a.test');
  });
});
