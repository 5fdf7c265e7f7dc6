/**
 * The JWKS validator's key source for a file (the local state folder's key set, or a mounted
 * ConfigMap), watched and hot-reloaded with a last good key set.
 */
import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import {
  createLocalJWKSet,
  type JSONWebKeySet,
  type JWTVerifyGetKey,
  type LocalJWKSet,
} from 'jose';
import { LogKey, MeshidError, type Logger } from '../../core/index.js';
import { UTF8 } from './claims.js';
import {
  JwksLogEvent,
  JwksLogKey,
  MAX_JWKS_BYTES,
  describe,
  kids,
  parseKeySetJson,
  usableKeySet,
  type KeySource,
} from './jwks-keys.js';

/** Quiet time after a change to the JWKS file's folder before it is re-read. */
const RELOAD_DEBOUNCE_MS = 50;

/**
 * A JWKS file, watched and hot-reloaded. A new file is used only once it passes the same checks
 * as at start; until then, and when it fails them, the last good key set stays in use.
 *
 * It watches the file's folder rather than the file: the kubelet updates a mounted ConfigMap by
 * swapping a `..data` symlink and editors replace files by rename, and either would leave a watch
 * on the old inode deaf. Any event in the folder triggers a re-read; unchanged content is ignored.
 */
export class FileKeySource implements KeySource {
  readonly #file: string;
  readonly #log: Logger;
  #current: LocalJWKSet;
  /** The last content read, good or bad, so that a refused file is not re-parsed and re-logged. */
  #lastSeen: string | undefined;
  #watcher: FSWatcher | undefined;
  #timer: NodeJS.Timeout | undefined;
  #running = false;
  #again = false;
  #closed = false;

  private constructor(file: string, log: Logger, keys: JSONWebKeySet, text: string) {
    this.#file = file;
    this.#log = log;
    this.#current = createLocalJWKSet(keys);
    this.#lastSeen = text;
  }

  /**
   * Reads and checks the file (ERR_CONFIG_INVALID when unusable), then starts watching it.
   *
   * @example
   * ```ts
   * const source = await FileKeySource.open('.meshid/token-signing.jwks.json', logger);
   * ```
   */
  static async open(file: string, log: Logger): Promise<FileKeySource> {
    let text: string;
    let keys: JSONWebKeySet;
    try {
      text = await readJwksFile(file);
      keys = await usableKeySet(parseKeySetJson(text), log);
    } catch (err) {
      throw new MeshidError('ERR_CONFIG_INVALID', `JWKS file ${file}: ${describe(err)}`, {
        cause: err,
      });
    }
    log.info(
      {
        [LogKey.event]: JwksLogEvent.loaded,
        [JwksLogKey.file]: file,
        [JwksLogKey.kids]: kids(keys),
      },
      'JWKS loaded',
    );
    const source = new FileKeySource(file, log, keys, text);
    source.#watch();
    return source;
  }

  get keySet(): JWTVerifyGetKey {
    return this.#current;
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#watcher?.close();
  }

  #watch(): void {
    try {
      // persistent: false, so the watcher alone never keeps the process alive.
      this.#watcher = watch(dirname(this.#file), { persistent: false }, () => this.#changed());
    } catch (err) {
      this.#log.warn(
        {
          [LogKey.event]: JwksLogEvent.watchFailed,
          [JwksLogKey.file]: this.#file,
          [LogKey.reason]: describe(err),
        },
        'JWKS file cannot be watched; it will not be hot-reloaded',
      );
      return;
    }
    this.#watcher.on('error', (err) => {
      this.#log.warn(
        {
          [LogKey.event]: JwksLogEvent.watchFailed,
          [JwksLogKey.file]: this.#file,
          [LogKey.reason]: describe(err),
        },
        'JWKS file watch failed; it will not be hot-reloaded',
      );
    });
  }

  /** Editors and the kubelet write in several steps; one reload after the burst is enough. */
  #changed(): void {
    if (this.#closed) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => void this.#reload(), RELOAD_DEBOUNCE_MS);
    this.#timer.unref();
  }

  /** Reloads never overlap: a change during a reload queues exactly one more. */
  async #reload(): Promise<void> {
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = true;
    try {
      do {
        this.#again = false;
        await this.#reloadOnce();
      } while (this.#again && !this.#closed);
    } finally {
      this.#running = false;
    }
  }

  async #reloadOnce(): Promise<void> {
    let text: string;
    try {
      text = await readJwksFile(this.#file);
    } catch (err) {
      this.#lastSeen = undefined;
      this.#refused(err, 'JWKS file could not be read; keeping the last good key set');
      return;
    }
    if (text === this.#lastSeen || this.#closed) return;
    this.#lastSeen = text;
    let keys: JSONWebKeySet;
    try {
      keys = await usableKeySet(parseKeySetJson(text), this.#log);
    } catch (err) {
      this.#refused(err, 'new JWKS refused; keeping the last good key set');
      return;
    }
    if (this.#closed) return;
    this.#current = createLocalJWKSet(keys);
    this.#log.info(
      {
        [LogKey.event]: JwksLogEvent.reloaded,
        [JwksLogKey.file]: this.#file,
        [JwksLogKey.kids]: kids(keys),
      },
      'JWKS reloaded',
    );
  }

  #refused(err: unknown, msg: string): void {
    this.#log.warn(
      {
        [LogKey.event]: JwksLogEvent.reloadRefused,
        [JwksLogKey.file]: this.#file,
        [LogKey.reason]: describe(err),
      },
      msg,
    );
  }
}

async function readJwksFile(file: string): Promise<string> {
  const bytes = await readFile(file);
  if (bytes.byteLength > MAX_JWKS_BYTES) {
    throw new Error(`is ${bytes.byteLength} bytes, over ${MAX_JWKS_BYTES}`);
  }
  try {
    return UTF8.decode(bytes);
  } catch {
    throw new Error('is not UTF-8 text');
  }
}
