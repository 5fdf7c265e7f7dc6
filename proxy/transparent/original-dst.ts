/**
 * The original destination of a redirected connection: where the client dialled before the pod's
 * nat rules (written by `meshid proxy-init`) sent it to the proxy. Node has no API for the
 * socket option that tells it (SO_ORIGINAL_DST, IPv4; IP6T_SO_ORIGINAL_DST, IPv6), so meshid
 * builds a small N-API addon of its own on install (`native/original-dst/`). It is loaded
 * lazily, only by transparent mode: every other mode works where it could not be built.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MeshidError } from '../../core/index.js';

/** Where a redirected connection was going. */
export interface OriginalDestination {
  readonly address: string;
  readonly port: number;
  readonly family: 4 | 6;
}

/** Reads a connected socket's original destination. */
export type OriginalDestinationReader = (socket: Socket) => OriginalDestination;

interface Addon {
  originalDst(fd: number): { address: string; port: number; family: number };
}

const ADDON_PATH = join('native', 'original-dst', 'build', 'Release', 'original_dst.node');

/** The addon, found above this module in the source tree (tsx) or the build (dist/). */
function findAddon(): string | undefined {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const candidate = join(dir, ADDON_PATH);
    if (existsSync(candidate)) return candidate;
    dir = dirname(dir);
  }
  return undefined;
}

let loaded: OriginalDestinationReader | undefined;

/**
 * Loads the addon and returns a reader of original destinations. Called once when transparent
 * mode starts; the reader is then a plain synchronous call per accepted connection.
 *
 * @param path the addon file; default the one built on install (`npm run build:native`).
 * @throws MeshidError ERR_TRANSPARENT_UNAVAILABLE saying why (not Linux, not built, not loadable)
 *   and how to build it.
 * @example
 * ```ts
 * const originalDestination = loadOriginalDestination(); // at start-up: refuse if unavailable
 * server.on('connection', (socket) => {
 *   const { port } = originalDestination(socket); // the app port the client dialled
 * });
 * ```
 */
export function loadOriginalDestination(path?: string): OriginalDestinationReader {
  if (path === undefined && loaded !== undefined) return loaded;
  const fix =
    'build it with `npm run build:native` (needs python3, make, a C compiler and Node headers)';
  if (process.platform !== 'linux') {
    throw new MeshidError(
      'ERR_TRANSPARENT_UNAVAILABLE',
      `transparent mode needs Linux (iptables redirection and SO_ORIGINAL_DST); this is ${process.platform}`,
    );
  }
  const file = path ?? findAddon();
  if (file === undefined) {
    throw new MeshidError(
      'ERR_TRANSPARENT_UNAVAILABLE',
      `transparent mode needs the original-dst addon (${ADDON_PATH}), which was not built on install: ${fix}`,
    );
  }
  let addon: Addon;
  try {
    addon = createRequire(import.meta.url)(file) as Addon;
  } catch (err) {
    throw new MeshidError(
      'ERR_TRANSPARENT_UNAVAILABLE',
      `transparent mode needs the original-dst addon, which did not load from ${file} (${(err as Error).message}): ${fix}`,
      { cause: err },
    );
  }
  const reader: OriginalDestinationReader = (socket) => {
    const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
    if (fd === undefined || fd < 0) {
      throw new MeshidError('ERR_ORIGINAL_DST', 'the connection has no file descriptor (closed?)');
    }
    let r: { address: string; port: number; family: number };
    try {
      r = addon.originalDst(fd);
    } catch (err) {
      const code = (err as { code?: string }).code ?? 'EUNKNOWN';
      throw new MeshidError(
        'ERR_ORIGINAL_DST',
        `no original destination for the connection (${code}: ${(err as Error).message})`,
        { cause: err },
      );
    }
    return { address: r.address, port: r.port, family: r.family === 6 ? 6 : 4 };
  };
  if (path === undefined) loaded = reader;
  return reader;
}
