/** Fault injection: the next N requests matching a method and path fail, stall or are cut off. */

/** A fault to inject. */
export interface Fault {
  /** HTTP method to match (any when absent). */
  readonly method?: string;
  /** Path to match: a string matches exactly or as a prefix followed by `/` or `?`; a RegExp is tested. */
  readonly path: string | RegExp;
  /** How many matching requests it applies to; default 1. */
  readonly times?: number;
  /** Answer with this status (a Status body: 500 InternalError, 503 ServiceUnavailable, 429 TooManyRequests...). */
  readonly status?: number;
  /** Wait this long before answering (or before serving normally when no status is set). */
  readonly delayMs?: number;
  /** Destroy the connection instead of answering. */
  readonly reset?: boolean;
  /** Message of the Status body. */
  readonly message?: string;
}

interface Pending {
  readonly fault: Fault;
  remaining: number;
}

function pathMatches(p: string | RegExp, path: string): boolean {
  if (typeof p !== 'string') return p.test(path);
  return path === p || path.startsWith(`${p}/`) || path.startsWith(`${p}?`);
}

export class Faults {
  readonly #pending: Pending[] = [];

  add(fault: Fault): void {
    this.#pending.push({ fault, remaining: fault.times ?? 1 });
  }

  clear(): void {
    this.#pending.length = 0;
  }

  /** The first pending fault matching the request, consumed by one. */
  take(method: string, path: string): Fault | undefined {
    const i = this.#pending.findIndex(
      (p) =>
        (p.fault.method === undefined || p.fault.method.toUpperCase() === method) &&
        pathMatches(p.fault.path, path),
    );
    if (i < 0) return undefined;
    const p = this.#pending[i]!;
    if (--p.remaining <= 0) this.#pending.splice(i, 1);
    return p.fault;
  }
}

const REASONS: Record<number, string> = {
  429: 'TooManyRequests',
  500: 'InternalError',
  502: 'BadGateway',
  503: 'ServiceUnavailable',
  504: 'Timeout',
};

/** The Status body of an injected failure. */
export function faultStatus(f: Fault): Record<string, unknown> {
  const code = f.status ?? 500;
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message: f.message ?? `injected fault (${code})`,
    reason: REASONS[code] ?? 'Unknown',
    code,
  };
}
