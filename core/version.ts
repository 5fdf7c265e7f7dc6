/**
 * meshid's own version (from its package.json) and the runtime it runs on, for `meshid version`
 * and the admin servers' `/version`.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** What a meshid process reports about itself. */
export interface VersionInfo {
  /** meshid's version (package.json). */
  readonly version: string;
  /** Node.js version, e.g. `v26.10.0`. */
  readonly node: string;
  /** The OpenSSL version Node.js was built with or loaded, e.g. `3.5.8`. */
  readonly openssl: string;
}

let cached: string | undefined;

/**
 * meshid's version, read once from the package.json above this module (the same file from the
 * sources and from `dist/`).
 */
function meshidVersion(): string {
  if (cached !== undefined) return cached;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === 'meshid' && typeof pkg.version === 'string') return (cached = pkg.version);
    } catch {
      // not here; look one folder up
    }
    dir = dirname(dir);
  }
  return (cached = 'unknown');
}

/**
 * This process's version report.
 *
 * @example
 * ```ts
 * versionInfo().openssl; // '3.5.8'
 * ```
 */
export function versionInfo(): VersionInfo {
  return {
    version: meshidVersion(),
    node: process.version,
    openssl: process.versions.openssl ?? 'unknown',
  };
}
