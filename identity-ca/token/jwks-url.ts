/**
 * The JWKS validator's key source for an HTTP(S) URL (the API server's `/openid/v1/jwks`), with
 * its own small HTTP client: a private CA and client certificate, a bounded response, and the
 * key-set policy applied before jose sees the keys.
 */
import * as http from 'node:http';
import * as https from 'node:https';
import {
  createRemoteJWKSet,
  customFetch,
  errors,
  type CryptoKey,
  type FetchImplementation,
  type JWTVerifyGetKey,
  type RemoteJWKSet,
} from 'jose';
import { LogKey, MeshidError, printable, type Logger } from '../../core/index.js';
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

/** Where a JWKS is fetched from, and how (see `JwksSource` in jwks.ts). */
export interface JwksUrl {
  readonly url: string;
  /** PEM CA certificate(s) to trust for an https URL (in place of the system roots). */
  readonly caPem?: string;
  /** A client certificate for the https connection (a kubeconfig's client credentials). */
  readonly clientCert?: { readonly cert: string | Buffer; readonly key: string | Buffer };
  /** Extra request headers, computed per fetch (a kubeconfig's bearer token, which rotates). */
  readonly headers?: () => Promise<Record<string, string>>;
  /** Fetch timeout; jose's default 5 s. */
  readonly timeoutMs?: number;
  /** How long after a fetch an unknown `kid` may trigger another one; jose's default 30 s. */
  readonly cooldownMs?: number;
  /** How long fetched keys are used before they are fetched again; jose's default 10 min. */
  readonly cacheMaxAgeMs?: number;
}

/**
 * A JWKS at an HTTP(S) URL, through jose's remote set (its cache, cooldown and refetch on an
 * unknown `kid`). Fetched once now if reachable; not being reachable is not fatal, because the
 * API server may come up after the CA, and tokens are refused as unavailable meanwhile.
 */
export async function openUrlKeySource(source: JwksUrl, log: Logger): Promise<KeySource> {
  let url: URL;
  try {
    url = new URL(source.url);
  } catch {
    throw new MeshidError('ERR_CONFIG_INVALID', `JWKS URL "${printable(source.url)}" is not a URL`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new MeshidError('ERR_CONFIG_INVALID', `JWKS URL ${url.href} must be https or http`);
  }
  if (source.caPem !== undefined) {
    if (url.protocol !== 'https:') {
      throw new MeshidError(
        'ERR_CONFIG_INVALID',
        `JWKS URL ${url.href}: a CA is given but the URL is not https`,
      );
    }
    if (!source.caPem.includes('-----BEGIN CERTIFICATE-----')) {
      throw new MeshidError(
        'ERR_CONFIG_INVALID',
        `JWKS URL ${url.href}: the CA is not a PEM certificate`,
      );
    }
  }
  if (url.protocol === 'http:') {
    log.warn(
      { [LogKey.address]: url.href },
      'JWKS is fetched over plain http; anyone on the path can substitute keys',
    );
  }

  // Our own agent: keep-alive off (fetches are minutes apart) and destroyed on close, so no
  // socket outlives the validator.
  const agent =
    url.protocol === 'https:'
      ? new https.Agent({
          keepAlive: false,
          ...(source.caPem !== undefined ? { ca: source.caPem } : {}),
          ...(source.clientCert ?? {}),
        })
      : new http.Agent({ keepAlive: false });
  const remote = createRemoteJWKSet(url, {
    [customFetch]: jwksFetch(agent, log, source.headers),
    ...(source.timeoutMs !== undefined ? { timeoutDuration: source.timeoutMs } : {}),
    ...(source.cooldownMs !== undefined ? { cooldownDuration: source.cooldownMs } : {}),
    ...(source.cacheMaxAgeMs !== undefined ? { cacheMaxAge: source.cacheMaxAgeMs } : {}),
  });

  let reachable = true;
  try {
    await remote.reload();
    log.info(
      {
        [LogKey.event]: JwksLogEvent.loaded,
        [LogKey.address]: url.href,
        [JwksLogKey.kids]: kids(remote.jwks()),
      },
      'JWKS fetched',
    );
  } catch (err) {
    reachable = false;
    log.warn(
      {
        [LogKey.event]: JwksLogEvent.unavailable,
        [LogKey.address]: url.href,
        [LogKey.reason]: describe(err),
      },
      'JWKS could not be fetched yet; tokens are refused as unavailable until it is',
    );
  }
  return { keySet: remoteKeySet(remote, url, log, !reachable), close: () => agent.destroy() };
}

/**
 * Wraps jose's remote set so that a failure to get the keys surfaces as "unavailable" (retryable,
 * never authenticated), distinct from "no such key" (the token is refused). Logs the transitions
 * down and up once each, not on every Certify.
 */
function remoteKeySet(
  remote: RemoteJWKSet,
  url: URL,
  log: Logger,
  initiallyDown: boolean,
): JWTVerifyGetKey {
  let down = initiallyDown;
  return async (header, token) => {
    let key: CryptoKey;
    try {
      key = await remote(header, token);
    } catch (err) {
      if (
        err instanceof errors.JWKSNoMatchingKey ||
        err instanceof errors.JWKSMultipleMatchingKeys ||
        err instanceof errors.JOSENotSupported
      ) {
        throw err;
      }
      if (!down) {
        down = true;
        log.warn(
          {
            [LogKey.event]: JwksLogEvent.unavailable,
            [LogKey.address]: url.href,
            [LogKey.reason]: describe(err),
          },
          'JWKS could not be fetched',
        );
      }
      throw new MeshidError(
        'ERR_TOKEN_VALIDATOR_UNAVAILABLE',
        `JWKS at ${url.href} could not be fetched: ${describe(err)}`,
        { cause: err },
      );
    }
    if (down) {
      down = false;
      log.info(
        { [LogKey.event]: JwksLogEvent.recovered, [LogKey.address]: url.href },
        'JWKS fetched again',
      );
    }
    return key;
  };
}

/**
 * jose's fetch hook, on node:http(s) so that a private CA can be trusted (global fetch cannot take
 * one without undici's Agent). It applies the file source's key-set policy and hands jose only the
 * usable public keys; a bad set fails the fetch, so secret material is never put to use.
 */
function jwksFetch(
  agent: http.Agent,
  log: Logger,
  extraHeaders: (() => Promise<Record<string, string>>) | undefined,
): FetchImplementation {
  return async (href, init) => {
    const headers = new Headers(init.headers);
    for (const [k, v] of Object.entries((await extraHeaders?.()) ?? {})) headers.set(k, v);
    const { status, body } = await httpGet(href, agent, headers, init.signal);
    if (status !== 200) {
      // jose refuses anything but 200; redirects are not followed (init.redirect is 'manual').
      return new Response(null, { status: status >= 200 && status <= 599 ? status : 502 });
    }
    let text: string;
    try {
      text = UTF8.decode(body);
    } catch {
      throw new Error('JWKS response is not UTF-8 text');
    }
    const keys = await usableKeySet(parseKeySetJson(text), log);
    return new Response(JSON.stringify(keys), {
      status: 200,
      headers: { 'content-type': 'application/json' },
    });
  };
}

function httpGet(
  href: string,
  agent: http.Agent,
  headers: Headers,
  signal: AbortSignal,
): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const url = new URL(href);
    const request = url.protocol === 'https:' ? https.request : http.request;
    const options = { method: 'GET', agent, headers: Object.fromEntries(headers), signal };
    const req = request(url, options, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.byteLength;
        if (size > MAX_JWKS_BYTES) {
          req.destroy(new Error(`JWKS response is over ${MAX_JWKS_BYTES} bytes`));
          return;
        }
        chunks.push(chunk);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
      res.on('error', reject);
      // A connection cut mid-body may close without 'end' or 'error'; never leave jose waiting.
      res.on('close', () => {
        if (!res.complete) reject(new Error('JWKS response ended early'));
      });
    });
    // On timeout node reports an AbortError; hand jose the signal's reason (a TimeoutError) so
    // that it reports a timeout.
    req.on('error', (err) => reject(signal.aborted ? (signal.reason as unknown) : err));
    req.end();
  });
}
