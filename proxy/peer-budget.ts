/**
 * Bounded shares of one resource (the inbound's exchanges with the app, or its connections) per
 * peer and in total. A peer is its verified identity, or its address when it has none
 * (plaintext, or before its handshake). One peer can take at most `perPeer` units, all peers
 * together at most `total`: whatever one peer does, the others keep `total - perPeer` units.
 * Counting only; what a refusal means (REFUSED_STREAM, a 503, a closed connection) is the
 * caller's.
 */

/** Limits of a {@link PeerBudget}. */
export interface PeerBudgetLimits {
  readonly total: number;
  readonly perPeer: number;
}

/**
 * Counts units in use per peer.
 *
 * @example
 * ```ts
 * const budget = new PeerBudget({ total: 512, perPeer: 128 });
 * if (!budget.acquire(peer)) return stream.close(h2.NGHTTP2_REFUSED_STREAM);
 * stream.once('close', () => budget.release(peer));
 * ```
 */
export class PeerBudget {
  readonly #limits: PeerBudgetLimits;
  readonly #byPeer = new Map<string, number>();
  #inUse = 0;
  /** Refusals so far (for metrics and tests). */
  refused = 0;

  constructor(limits: PeerBudgetLimits) {
    this.#limits = limits;
  }

  /** Units in use, all peers together. */
  get inUse(): number {
    return this.#inUse;
  }

  /** Units `peer` holds. */
  heldBy(peer: string): number {
    return this.#byPeer.get(peer) ?? 0;
  }

  /** Takes one unit for `peer`; false (and nothing taken) when a limit is reached. */
  acquire(peer: string): boolean {
    const held = this.#byPeer.get(peer) ?? 0;
    if (held >= this.#limits.perPeer || this.#inUse >= this.#limits.total) {
      this.refused++;
      return false;
    }
    this.#byPeer.set(peer, held + 1);
    this.#inUse++;
    return true;
  }

  /** Gives back one unit of `peer`'s. */
  release(peer: string): void {
    const held = this.#byPeer.get(peer);
    if (held === undefined) return;
    if (held <= 1) this.#byPeer.delete(peer);
    else this.#byPeer.set(peer, held - 1);
    this.#inUse--;
  }
}
