/**
 * Local mode of the rotation (`--dir D`, the folder `meshid init` writes): the bundle is
 * `D/trust-anchors.pem`, the issuer `D/issuer/{tls.crt,tls.key,ca.crt}`, the state
 * `D/rotation.json`. The new root is generated here; its key is kept (mode 0600, in
 * `D/rotation/`) only until it has signed the new issuer, then deleted, as `meshid init`
 * discards its root key. Writes go through a lock file and a version check, and every file is
 * written to a temporary name and renamed, so a watching CA or proxy never reads half a file.
 *
 * The lock file names its holder (pid, host, time). A controller killed while writing leaves it
 * behind; the next one removes it when that pid is gone on this host, or when it is older than
 * any write takes ({@link STALE_LOCK_MS}), instead of waiting on it forever. A lock held by a
 * live writer is waited on briefly, then reported (ERR_LOCAL_STATE) so the step holds and says so.
 */
import { createHash, randomBytes } from 'node:crypto';
import { link, mkdir, open, readFile, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { MeshidError } from '../core/index.js';
import type { RotationBackend, RotationSnapshot } from './rotation.js';
import { firstSubject } from './lineage.js';
import { ROTATION_FILE, parseRotationState, serializeRotationState } from './rotation-state.js';
import type { RotationState } from './rotation-state.js';

/** A generated CA (certificate and key as PEM). */
export interface GeneratedPem {
  readonly certificatePem: string;
  readonly privateKeyPem: string;
}

/** What the local backend needs besides the folder: how to make a root and an issuer. */
interface LocalBackendOptions {
  readonly dir: string;
  /** Makes a self-signed root with this common name. */
  createRoot(commonName: string): Promise<GeneratedPem>;
  /** Makes an issuer with this common name signed by the root. */
  createIssuer(root: GeneratedPem, commonName: string): Promise<GeneratedPem>;
  /** Wall-clock now, for judging a lock's age (default Date.now). */
  readonly now?: () => number;
  /** How long a write waits for a lock held by a live controller (default 2 s). */
  readonly lockWaitMs?: number;
}

/**
 * A lock older than this is stale whoever holds it: a write holds the lock for milliseconds.
 */
export const STALE_LOCK_MS = 30_000;

/** Who holds the lock, as its file says. */
interface LockHolder {
  readonly pid: number;
  readonly host: string;
  readonly at: string;
}

/**
 * The files of a local state folder the rotation reads and writes.
 */
function localTrustFiles(dir: string): {
  bundle: string;
  state: string;
  issuerCrt: string;
  issuerKey: string;
  issuerCa: string;
  pending: string;
  lock: string;
} {
  return {
    bundle: join(dir, 'trust-anchors.pem'),
    state: join(dir, ROTATION_FILE),
    issuerCrt: join(dir, 'issuer', 'tls.crt'),
    issuerKey: join(dir, 'issuer', 'tls.key'),
    issuerCa: join(dir, 'issuer', 'ca.crt'),
    pending: join(dir, 'rotation'),
    lock: join(dir, 'rotation.lock'),
  };
}

/**
 * The rotation backend over a local state folder.
 *
 * @example
 * ```ts
 * const backend = new LocalRotationBackend({ dir: '.meshid', createRoot, createIssuer });
 * ```
 */
export class LocalRotationBackend implements RotationBackend {
  readonly mode = 'local' as const;
  readonly sources: { readonly issuer: string; readonly anchors: string };
  readonly #o: LocalBackendOptions;
  readonly #f: ReturnType<typeof localTrustFiles>;

  constructor(options: LocalBackendOptions) {
    this.#o = options;
    this.#f = localTrustFiles(options.dir);
    this.sources = { issuer: `${this.#f.issuerCrt} (+ ca.crt)`, anchors: this.#f.bundle };
  }

  async read(): Promise<RotationSnapshot> {
    const bundlePem = await readText(this.#f.bundle, true);
    const stateText = await readText(this.#f.state, false);
    const crt = await readText(this.#f.issuerCrt, true);
    const ca = await readText(this.#f.issuerCa, false);
    return {
      bundlePem,
      state: stateText === '' ? undefined : parseRotationState(stateText),
      issuerChainPem: crt + ca,
      version: versionOf(bundlePem, stateText),
    };
  }

  async write(version: string, bundlePem: string, state: RotationState): Promise<void> {
    await this.#locked(async () => {
      const current = versionOf(
        await readText(this.#f.bundle, true),
        await readText(this.#f.state, false),
      );
      if (current !== version) {
        throw new MeshidError(
          'ERR_ROTATION_CONFLICT',
          `${this.#o.dir}: the trust bundle or rotation state changed since it was read`,
        );
      }
      // The bundle first: a crash between the two leaves a state whose step is then redone.
      if ((await readText(this.#f.bundle, true)) !== bundlePem) {
        await atomicWrite(this.#f.bundle, bundlePem, 0o644);
      }
      await atomicWrite(this.#f.state, `${serializeRotationState(state)}\n`, 0o644);
    });
  }

  currentRootName(): Promise<string | undefined> {
    return Promise.resolve(undefined);
  }

  planRoot(): Promise<string | undefined> {
    return Promise.resolve(undefined);
  }

  async ensureNewRoot(state: RotationState): Promise<string | undefined> {
    const { crt, key } = this.#pendingFiles(state);
    const existing = await readText(crt, false);
    if (existing !== '') return existing;
    const root = await this.#o.createRoot(commonNameOf(state.oldRoot.subject));
    await mkdir(this.#f.pending, { recursive: true, mode: 0o700 });
    // Exactly one root per rotation, even with two controllers: the certificate is linked into
    // place only if no other controller got there first; the loser discards its own root.
    const tmpCrt = await writeTemp(crt, root.certificatePem, 0o644);
    const tmpKey = await writeTemp(key, root.privateKeyPem, 0o600);
    try {
      await link(tmpCrt, crt);
    } catch (err) {
      await rm(tmpKey, { force: true });
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') return readText(crt, true);
      throw err;
    } finally {
      await rm(tmpCrt, { force: true });
    }
    await rename(tmpKey, key);
    return root.certificatePem;
  }

  async switchIssuer(state: RotationState): Promise<void> {
    const { crt, key } = this.#pendingFiles(state);
    const rootPem = await readText(crt, false);
    const keyPem = await readText(key, false);
    if (rootPem === '' || keyPem === '') {
      throw new MeshidError(
        'ERR_ROTATION_REFUSED',
        `the new root's key (${key}) is gone but the issuer does not chain to the new root yet; restore the issuer or roll forward by hand`,
      );
    }
    const current = await readText(this.#f.issuerCrt, true);
    const issuer = await this.#o.createIssuer(
      { certificatePem: rootPem, privateKeyPem: keyPem },
      commonNameOf(firstSubject(current) ?? 'CN=identity'),
    );
    // The key before the certificate; the CA validates them as a pair and waits for both.
    await atomicWrite(this.#f.issuerCa, rootPem, 0o644);
    await atomicWrite(this.#f.issuerKey, issuer.privateKeyPem, 0o600);
    await atomicWrite(this.#f.issuerCrt, issuer.certificatePem, 0o644);
    // The root key has done its one job; nothing local can mint another issuer under it.
    await unlink(key);
  }

  async discardNewRoot(state: RotationState): Promise<void> {
    const { crt, key } = this.#pendingFiles(state);
    await rm(key, { force: true });
    await rm(crt, { force: true });
  }

  async removeOldRoot(state: RotationState): Promise<void> {
    // The old root's key was never kept locally; the new root's copy is in the bundle now.
    await rm(this.#pendingFiles(state).crt, { force: true });
  }

  #pendingFiles(state: RotationState): { crt: string; key: string } {
    return {
      crt: join(this.#f.pending, `${state.id}.root.crt`),
      key: join(this.#f.pending, `${state.id}.root.key`),
    };
  }

  async #locked<T>(fn: () => Promise<T>): Promise<T> {
    const handle = await this.#acquire();
    try {
      return await fn();
    } finally {
      await handle.close();
      await rm(this.#f.lock, { force: true });
    }
  }

  async #acquire(): Promise<FileHandle> {
    const now = this.#o.now ?? Date.now;
    const deadline = now() + (this.#o.lockWaitMs ?? 2000);
    for (;;) {
      try {
        const handle = await open(this.#f.lock, 'wx', 0o600);
        const holder: LockHolder = {
          pid: process.pid,
          host: hostname(),
          at: new Date(now()).toISOString(),
        };
        await handle.writeFile(JSON.stringify(holder));
        return handle;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const held = await this.#lockHolder(now());
      if (held === 'gone') continue;
      if (held.stale !== undefined) {
        // Removed only if it is still the file judged stale (another controller may have
        // removed it and taken the lock meanwhile).
        if ((await readText(this.#f.lock, false)) === held.text)
          await unlink(this.#f.lock).catch(ignoreMissing);
        continue;
      }
      if (now() >= deadline) {
        throw new MeshidError(
          'ERR_LOCAL_STATE',
          `${this.#f.lock} is held by ${held.who}: another controller is writing (remove the file if none runs)`,
        );
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Reads the lock: gone, stale (with why) or live. */
  async #lockHolder(
    now: number,
  ): Promise<'gone' | { text: string; who: string; stale: string | undefined }> {
    let text: string;
    let mtime: number;
    try {
      [text, mtime] = await Promise.all([
        readFile(this.#f.lock, 'utf8'),
        stat(this.#f.lock).then((s) => s.mtimeMs),
      ]);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'gone';
      throw err;
    }
    let holder: LockHolder | undefined;
    try {
      holder = JSON.parse(text) as LockHolder;
    } catch {
      holder = undefined; // being written this instant, or an old-format empty lock
    }
    const who =
      holder === undefined
        ? `an unknown controller (since ${new Date(mtime).toISOString()})`
        : `pid ${holder.pid} on ${holder.host} since ${holder.at}`;
    const age = now - mtime;
    if (age > STALE_LOCK_MS) return { text, who, stale: `older than ${STALE_LOCK_MS / 1000} s` };
    if (holder !== undefined && holder.host === hostname() && !processAlive(holder.pid)) {
      return { text, who, stale: 'its process is gone' };
    }
    return { text, who, stale: undefined };
  }
}

/** Whether a process with this pid runs on this host (EPERM: it runs, as another user). */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function ignoreMissing(err: unknown): void {
  if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
}

async function readText(path: string, required: boolean): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' && !required) return '';
    throw new MeshidError(
      'ERR_LOCAL_STATE',
      `${path}: cannot read: ${(err as Error).message}${(err as NodeJS.ErrnoException).code === 'ENOENT' ? ' (run meshid init first)' : ''}`,
      { cause: err },
    );
  }
}

async function atomicWrite(path: string, text: string, mode: number): Promise<void> {
  await rename(await writeTemp(path, text, mode), path);
}

async function writeTemp(path: string, text: string, mode: number): Promise<string> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  await writeFile(tmp, text, { mode });
  return tmp;
}

function versionOf(bundle: string, state: string): string {
  return createHash('sha256').update(bundle).update('\0').update(state).digest('hex');
}

function commonNameOf(subject: string): string {
  const m = /(?:^|, )CN=([^,]+)/.exec(subject);
  return m?.[1] ?? subject;
}
