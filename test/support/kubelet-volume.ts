/**
 * Writes files the way the kubelet updates a Secret or ConfigMap volume: a new hidden
 * `..<timestamp>` folder, a `..data_tmp` symlink to it renamed over `..data`, visible names linking
 * through `..data`, and the old folder removed.
 */
import { mkdir, readlink, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

let generation = 0;

export async function kubeletWrite(dir: string, files: Record<string, string>): Promise<void> {
  await mkdir(dir, { recursive: true });
  const ts = `..2026_12_01_12_00_00.${++generation}`;
  await mkdir(join(dir, ts));
  for (const [name, text] of Object.entries(files)) await writeFile(join(dir, ts, name), text);
  const old = await readlink(join(dir, '..data')).catch(() => undefined);
  await symlink(ts, join(dir, '..data_tmp'));
  await rename(join(dir, '..data_tmp'), join(dir, '..data'));
  for (const name of Object.keys(files)) {
    await symlink(join('..data', name), join(dir, name)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
    });
  }
  if (old !== undefined) await rm(join(dir, old), { recursive: true });
}
