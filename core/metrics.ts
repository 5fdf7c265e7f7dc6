/**
 * Prometheus metrics. Each component builds its metrics on a registry passed to it; nothing
 * registers at import time (prom-client's global registry is never used).
 */
import { Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { cryptoStatus } from './fips.js';

export { Counter, Gauge, Histogram, Registry } from 'prom-client';

/**
 * A fresh registry with `fips_enabled` and the process metrics (CPU, memory, event-loop lag) on
 * it. Every admin endpoint serves a registry made here, so every one reports `fips_enabled`.
 *
 * @example
 * ```ts
 * const registry = createRegistry();
 * const text = await registry.metrics();
 * ```
 */
export function createRegistry(opts: { processMetrics?: boolean } = {}): Registry {
  const registry = new Registry();
  registerFipsMetric(registry);
  if (opts.processMetrics !== false) collectDefaultMetrics({ register: registry });
  return registry;
}

/**
 * `fips_enabled`: 1 when this process's crypto runs on a FIPS provider (measured at each scrape,
 * see core/fips.ts), else 0. Across the CA's worker processes the lowest value is reported, so 1
 * means every worker is in FIPS mode.
 */
function registerFipsMetric(registry: Registry): void {
  new Gauge({
    name: 'fips_enabled',
    help: 'Whether all crypto of this process runs on a FIPS provider (meshid FIPS mode): 1 or 0',
    registers: [registry],
    aggregator: 'min',
    collect() {
      this.set(cryptoStatus().fipsProviderActive ? 1 : 0);
    },
  });
}
