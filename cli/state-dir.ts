/**
 * The local state folder's safety check, before `meshid init`, `meshid ca --dir` and `meshid
 * local` write or read it. Whoever can write the folder decides whom the mesh trusts (they can
 * replace `trust-anchors.pem` or the issuer), so:
 *
 * - the folder and every folder inside it must not be writable by group or others and must be
 *   owned by this user (or root); 0755, what `mkdir` makes under the usual umask 022, is fine:
 *   what the folder lists is public, the keys are protected by their own modes;
 * - nothing inside it may be a symbolic link: a planted `issuer` link would send the issuer key
 *   into a folder someone else controls, or feed the CA an issuer of their choosing;
 * - the private keys (`issuer/tls.key`, `token-signing/key.pem`, `root/tls.key`) must be
 *   readable by this user only (0600).
 *
 * An unsafe folder is refused, never tightened: a folder others could write may already hold
 * what they wrote, and only its owner can tell. The error names the path and the command that
 * fixes it.
 */
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, readdir, readlink, rename, rm, stat, writeFile } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { dirname, join } from 'node:path';
import { MeshidError } from '../core/index.js';

/** Where `meshid init` keeps the trust anchor's private key, relative to the state folder. */
export const LOCAL_ROOT_KEY = 'root/tls.key';

/** The state folder's private keys, relative to it. */
const LOCAL_PRIVATE_KEYS = ['issuer/tls.key', 'token-signing/key.pem', LOCAL_ROOT_KEY] as const;

/** How deep the walk goes: the layout is two levels (rotation's pending folder included). */
const MAX_DEPTH = 4;

function unsafe(message: string): MeshidError {
  return new MeshidError('ERR_LOCAL_STATE', message);
}

function octal(mode: number): string {
  return `0${(mode & 0o777).toString(8).padStart(3, '0')}`;
}

function checkFolder(path: string, st: Stats, uid: number | undefined): void {
  if (!st.isDirectory())
    throw unsafe(`the state folder ${path} is not a folder; pass --dir with a folder`);
  if ((st.mode & 0o022) !== 0)
    throw unsafe(
      `the state folder ${path} is writable by ${(st.mode & 0o002) !== 0 ? 'anyone' : 'its group'} (mode ${octal(st.mode)}), so others could replace the trust anchors or the issuer; run: chmod go-w ${path}`,
    );
  if (uid !== undefined && st.uid !== uid && st.uid !== 0)
    throw unsafe(
      `the state folder ${path} belongs to user ${st.uid}, not to this user (${uid}), who could replace the trust anchors or the issuer; use a folder of your own, or run: chown ${uid} ${path}`,
    );
}

async function walk(
  dir: string,
  rel: string,
  uid: number | undefined,
  depth: number,
): Promise<void> {
  if (depth > MAX_DEPTH) return;
  for (const name of await readdir(dir)) {
    const path = join(dir, name);
    const st = await lstat(path);
    if (st.isSymbolicLink()) {
      const target = await readlink(path).catch(() => '?');
      throw unsafe(
        `${path} is a symbolic link (to ${target}); meshid follows no links inside its state folder. Remove it (rm ${path}) and run meshid init again`,
      );
    }
    if (st.isDirectory()) {
      checkFolder(path, st, uid);
      await walk(path, join(rel, name), uid, depth + 1);
    } else if (
      (LOCAL_PRIVATE_KEYS as readonly string[]).includes(join(rel, name)) &&
      (st.mode & 0o077) !== 0
    )
      throw unsafe(
        `the private key ${path} is readable by others (mode ${octal(st.mode)}); run: chmod 600 ${path}`,
      );
  }
}

/**
 * Checks the state folder as described above; with `create`, makes it (0700) when it does not
 * exist. Resolves when it is safe; rejects with ERR_LOCAL_STATE naming the path and the fix. A
 * folder that does not exist (without `create`) passes: reading it then fails on its own.
 */
export async function checkStateDir(dir: string, opts: { create?: boolean } = {}): Promise<void> {
  if (opts.create === true) await mkdir(dir, { recursive: true, mode: 0o700 });
  let st: Stats;
  try {
    // The folder itself may be a link the user made (e.g. to another disk); its target is checked.
    st = await stat(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  const uid = process.getuid?.();
  checkFolder(dir, st, uid);
  await walk(dir, '', uid, 1);
}

/** One file for {@link writeStateFiles}: its path relative to the state folder, text and mode. */
export interface StateFile {
  readonly rel: string;
  readonly content: string;
  /** 0o600 for a private key, 0o644 otherwise. */
  readonly mode: number;
}

/**
 * Writes files into a state folder that {@link checkStateDir} passed, in the order given: a
 * missing folder is made 0700, and each file is written to a temporary name (with its mode from
 * the start, so a key is never readable by others) and renamed over the old one, so a watcher
 * (a running CA) never reads half a file. Resolves with the paths written.
 *
 * @example
 * ```ts
 * await writeStateFiles('.meshid', [{ rel: 'issuer/tls.key', content: keyPem, mode: 0o600 }]);
 * ```
 */
export async function writeStateFiles(dir: string, files: readonly StateFile[]): Promise<string[]> {
  const written: string[] = [];
  for (const f of files) {
    const path = join(dir, f.rel);
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
    try {
      await writeFile(tmp, f.content, { mode: f.mode, flag: 'wx' });
      await rename(tmp, path);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
    written.push(path);
  }
  return written;
}
