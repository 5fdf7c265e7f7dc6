/**
 * The JWKS validator's key source for a file (the local state folder's key set, or a mounted
 * ConfigMap), watched and hot-reloaded with core's watchFile. A new file is used only once it
 * passes the same checks as at start; until then, and when it fails them, the last good key set
 * stays in use.
 */
import { createLocalJWKSet, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose';
import { LogKey, MeshidError, watchFile } from '../../core/index.js';
import type { Clock, Logger, WatchedFile } from '../../core/index.js';
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

interface LoadedKeys {
  readonly keys: JSONWebKeySet;
  readonly keySet: JWTVerifyGetKey;
}

/**
 * Reads and checks a JWKS file (ERR_CONFIG_INVALID when unusable), then watches it: a key source
 * whose key set is the last good one.
 */
export async function openFileKeySource(
  file: string,
  log: Logger,
  clock: Clock,
): Promise<KeySource> {
  const parse = async (bytes: Buffer): Promise<LoadedKeys> => {
    try {
      let text: string;
      try {
        text = UTF8.decode(bytes);
      } catch {
        throw new Error('is not UTF-8 text');
      }
      const keys = await usableKeySet(parseKeySetJson(text), log);
      return { keys, keySet: createLocalJWKSet(keys) };
    } catch (err) {
      throw new MeshidError('ERR_CONFIG_INVALID', describe(err), { cause: err });
    }
  };
  let watched: WatchedFile<LoadedKeys>;
  try {
    watched = await watchFile(file, parse, {
      clock,
      logger: log,
      code: 'ERR_CONFIG_INVALID',
      what: 'JWKS file',
      maxBytes: MAX_JWKS_BYTES,
    });
  } catch (err) {
    const message = (err as Error).message;
    if (message.includes(file)) throw err;
    throw new MeshidError('ERR_CONFIG_INVALID', `JWKS file ${file}: ${message}`, { cause: err });
  }
  const logged = (event: string, keys: JSONWebKeySet): object => ({
    [LogKey.event]: event,
    [JwksLogKey.file]: file,
    [JwksLogKey.kids]: kids(keys),
  });
  log.info(logged(JwksLogEvent.loaded, watched.current().keys), 'JWKS loaded');
  watched.on('change', (next) =>
    log.info(logged(JwksLogEvent.reloaded, next.keys), 'JWKS reloaded'),
  );
  watched.on('rejected', (err) =>
    log.warn(
      {
        [LogKey.event]: JwksLogEvent.reloadRefused,
        [JwksLogKey.file]: file,
        [LogKey.reason]: err.message,
      },
      'new JWKS refused; keeping the last good key set',
    ),
  );
  return {
    get keySet() {
      return watched.current().keySet;
    },
    close: () => void watched.close(),
  };
}
