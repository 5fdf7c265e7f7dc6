/**
 * The least-squares slope of a series over time, which the soak judges its samples by (the
 * samples themselves come from test/support/proc.ts and the admin /metrics).
 */

/** One sample: `t` in minutes since the start, `v` the value. */
export interface Point {
  readonly t: number;
  readonly v: number;
}

/**
 * The least-squares slope of `points` (value per minute); NaN for fewer than two distinct times.
 *
 * @example
 * ```ts
 * leastSquaresSlope([{ t: 0, v: 10 }, { t: 1, v: 12 }]); // 2
 * ```
 */
export function leastSquaresSlope(points: readonly Point[]): number {
  const n = points.length;
  if (n < 2) return NaN;
  const mt = points.reduce((s, p) => s + p.t, 0) / n;
  const mv = points.reduce((s, p) => s + p.v, 0) / n;
  let num = 0;
  let den = 0;
  for (const p of points) {
    num += (p.t - mt) * (p.v - mv);
    den += (p.t - mt) ** 2;
  }
  return den === 0 ? NaN : num / den;
}
