/**
 * The client adapter's one translation of failures: every call runs through {@link call}, and
 * every failure of `@kubernetes/client-node` (an `ApiException`, a watch's HTTP error, a failed
 * connection) becomes a {@link KubeApiError} here, once.
 */
import { ApiException, Observable } from '@kubernetes/client-node';
import type { ConfigurationOptions } from '@kubernetes/client-node';
import type { KubeResource } from './api.js';
import { KubeApiError } from './api.js';

/** Per-call options carrying an abort signal (client-node puts it on the fetch). */
export function withSignal(signal: AbortSignal): ConfigurationOptions {
  return {
    middleware: [
      {
        pre: (ctx) => {
          ctx.setSignal(signal);
          return new Observable(Promise.resolve(ctx));
        },
        post: (ctx) => new Observable(Promise.resolve(ctx)),
      },
    ],
    middlewareMergeStrategy: 'append',
  };
}

export function timeout(ms: number): AbortSignal {
  return AbortSignal.timeout(ms);
}

/**
 * Runs one call, its failure as a KubeApiError. With `signal`, a call the library cannot abort
 * is given up (with status 0) when the signal aborts.
 */
export async function call<T>(
  fn: () => Promise<T>,
  what: string,
  signal?: AbortSignal,
): Promise<T> {
  try {
    if (signal === undefined) return await fn();
    signal.throwIfAborted();
    return await Promise.race([
      fn(),
      new Promise<never>((_, reject) =>
        signal.addEventListener('abort', () => reject(signal.reason as Error), { once: true }),
      ),
    ]);
  } catch (err) {
    throw toKubeError(err, what);
  }
}

/**
 * Any failure as a KubeApiError: an API Status (status code, reason, message), or status 0 for
 * a failure with no response (refused, reset, timed out, aborted). The one translation of the
 * library's exceptions.
 */
export function toKubeError(err: unknown, what: string): KubeApiError {
  if (err instanceof KubeApiError) return err;
  if (err instanceof ApiException) return statusError(err.code, err.body as unknown, what, err);
  const statusCode = (err as { statusCode?: unknown }).statusCode;
  if (typeof statusCode === 'number') {
    return new KubeApiError(statusCode, 'Watch', `${what}: HTTP ${statusCode}`, { cause: err });
  }
  const e = err as { name?: string; code?: string; message?: string };
  const detail =
    e.name === 'AbortError' || e.name === 'TimeoutError'
      ? 'timed out or aborted'
      : (e.code ?? e.message ?? String(err));
  return new KubeApiError(0, 'Unavailable', `${what}: ${detail}`, { cause: err });
}

function statusError(code: number, body: unknown, what: string, cause?: unknown): KubeApiError {
  let parsed: unknown = body;
  if (typeof body === 'string') {
    try {
      parsed = JSON.parse(body);
    } catch {
      parsed = undefined;
    }
  }
  const status = (parsed ?? {}) as { reason?: unknown; message?: unknown };
  const reason = typeof status.reason === 'string' ? status.reason : `HTTP${code}`;
  const message = typeof status.message === 'string' ? status.message : `HTTP ${code}`;
  return new KubeApiError(code, reason, `${what}: ${message}`, { cause });
}

/** True when `err` is the library's 404 (the object does not exist). */
export const isNotFound = (err: unknown): boolean =>
  err instanceof ApiException && err.code === 404;

/** A library object as plain JSON (its typed models carry Dates and class instances). */
export function plain(o: unknown): KubeResource {
  return JSON.parse(JSON.stringify(o)) as KubeResource;
}
