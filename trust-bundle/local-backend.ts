/**
 * Local mode of the rotation (`--dir D`, the folder `meshid init` writes): the bundle is
 * `D/trust-anchors.pem`, the issuer `D/issuer/{tls.crt,tls.key,ca.crt}`, the state
 * `D/rotation.json`. The new root is generated here; its key is kept (mode 0600, in
 * `D/rotation/`) only until it has signed the new issuer, then deleted, as `meshid init`
 * discards its root key. Writes go through a lock file and a version check, and every file is
 * written to a temporary name and renamed, so a watching CA or proxy never reads half a file.
 */
import { createHash, randomBytes } from 'node:crypto';
import { link, mkdir, open, readFile, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { MeshidError } from '../core/index.js';
import { firstSubject } from './bundle.js';
import type { RotationBackend, RotationSnapshot } from './rotation.js';
import { ROTATION_FILE, parseRotationState, serializeRotationState } from './rotation-state.js';
import type { RotationState } from './rotation-state.js';

/** A generated CA (certificate and key as PEM). */
export interface GeneratedPem {
  readonly certificatePem: string;
  readonly privateKeyPem: string;
}

/** What the local backend needs besides the folder: how to make a root and an issuer. */
export interface LocalBackendOptions {
  readonly dir: string;
  /** Makes a self-signed root with this common name. */
  createRoot(commonName: string): Promise<GeneratedPem>;
  /** Makes an issuer with this common name signed by the root. */
  createIssuer(root: GeneratedPem, commonName: string): Promise<GeneratedPem>;
}

/**
 * The files of a local state folder the rotation reads and writes.
 *
 * @example
 * ```ts
 * localTrustFiles('.meshid').bundle; // '.meshid/trust-anchors.pem'
 * ```
 */
export function localTrustFiles(dir: string): {
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
  readonly #o: LocalBackendOptions;
  readonly #f: ReturnType<typeof localTrustFiles>;

  constructor(options: LocalBackendOptions) {
    this.#o = options;
    this.#f = localTrustFiles(options.dir);
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
    let handle;
    try {
      handle = await open(this.#f.lock, 'wx', 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new MeshidError(
          'ERR_ROTATION_CONFLICT',
          `${this.#f.lock} exists: another controller is writing (remove it if none runs)`,
        );
      }
      throw err;
    }
    try {
      return await fn();
    } finally {
      await handle.close();
      await rm(this.#f.lock, { force: true });
    }
  }
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
