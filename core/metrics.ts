/**
 * Prometheus metrics. Each component builds its metrics on a registry passed to it; nothing
 * registers at import time (prom-client's global registry is never used).
 */
import { Registry, collectDefaultMetrics } from 'prom-client';

export { Counter, Gauge, Histogram, Registry } from 'prom-client';

/**
 * A fresh registry with the process metrics (CPU, memory, event-loop lag) on it.
 *
 * @example
 * ```ts
 * const registry = createRegistry();
 * const text = await registry.metrics();
 * ```
 */
export function createRegistry(opts: { processMetrics?: boolean } = {}): Registry {
  const registry = new Registry();
  if (opts.processMetrics !== false) collectDefaultMetrics({ register: registry });
  return registry;
}
