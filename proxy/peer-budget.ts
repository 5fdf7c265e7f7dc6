/**
 * The inbound's shares per peer: core's one {@link PeerBudget} (core/listener-limits.ts, shared
 * by every listener).
 */
export { PeerBudget } from '../core/index.js';
export type { PeerBudgetLimits } from '../core/index.js';
