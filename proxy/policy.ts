/**
 * Inbound authorization: which peers may use a listener, decided once per connection from the
 * peer's verified identity.
 *
 * With no allow-list, any meshed peer is allowed (any certificate that verified against the
 * trust anchors, which is Linkerd's `all-authenticated`). With allow-lists, a peer must match at
 * least one entry of one list: an exact identity, a service account (`namespace/name`) or a
 * namespace. Service accounts and namespaces are read from the identity with the mesh's naming,
 * so an identity of another trust domain or control plane never matches them. Unauthenticated
 * (plaintext) peers are allowed only when the listener says so; they have no identity to match,
 * so the allow-lists do not apply to them.
 */
import type { IdentityNaming } from '../core/index.js';
import {
  DEFAULTS,
  MeshidError,
  isDns1123Label,
  parseIdentityName,
  printable,
} from '../core/index.js';

/** The settings of an {@link InboundPolicy}. Every list is optional; all absent means any meshed peer. */
export interface InboundPolicyOptions {
  /** Exact identity names allowed. */
  readonly identities?: readonly string[];
  /** Service accounts allowed, each `namespace/serviceaccount`. */
  readonly serviceAccounts?: readonly string[];
  /** Namespaces whose every service account is allowed. */
  readonly namespaces?: readonly string[];
  /** How identity names are built; default `linkerd` / `cluster.local`. */
  readonly naming?: IdentityNaming;
  /** Whether peers without TLS may use the listener (default false). */
  readonly allowUnauthenticated?: boolean;
}

/** A policy's answer for one peer. */
export type PolicyDecision =
  { readonly allowed: true } | { readonly allowed: false; readonly reason: string };

const ALLOWED: PolicyDecision = Object.freeze({ allowed: true });

/**
 * An inbound listener's authorization policy. Built once and checked per connection, so the
 * lists are turned into sets up front and bad entries are refused at start-up.
 */
export class InboundPolicy {
  readonly #identities: ReadonlySet<string> | undefined;
  readonly #serviceAccounts: ReadonlySet<string> | undefined;
  readonly #namespaces: ReadonlySet<string> | undefined;
  readonly #naming: IdentityNaming;
  /** Whether peers without TLS may use the listener. */
  readonly allowUnauthenticated: boolean;

  /** @throws MeshidError ERR_CONFIG_INVALID naming every bad entry. */
  constructor(options: InboundPolicyOptions = {}) {
    const problems: string[] = [];
    for (const [i, id] of (options.identities ?? []).entries()) {
      if (id.length === 0) problems.push(`identities[${i}] is empty`);
    }
    for (const [i, sa] of (options.serviceAccounts ?? []).entries()) {
      const parts = sa.split('/');
      if (parts.length !== 2 || !parts.every(isDns1123Label)) {
        problems.push(
          `serviceAccounts[${i}] "${printable(sa)}" is not <namespace>/<serviceaccount> of DNS-1123 labels`,
        );
      }
    }
    for (const [i, ns] of (options.namespaces ?? []).entries()) {
      if (!isDns1123Label(ns)) {
        problems.push(`namespaces[${i}] "${printable(ns)}" is not a DNS-1123 label`);
      }
    }
    if (problems.length > 0) {
      throw new MeshidError('ERR_CONFIG_INVALID', `inbound policy: ${problems.join('; ')}`);
    }
    const set = (l: readonly string[] | undefined): ReadonlySet<string> | undefined =>
      l === undefined ? undefined : new Set(l);
    this.#identities = set(options.identities);
    this.#serviceAccounts = set(options.serviceAccounts);
    this.#namespaces = set(options.namespaces);
    this.#naming = options.naming ?? {
      trustDomain: DEFAULTS.trustDomain,
      controlPlaneNamespace: DEFAULTS.controlPlaneNamespace,
    };
    this.allowUnauthenticated = options.allowUnauthenticated ?? false;
  }

  /** True when no allow-list is set, so any verified peer is allowed. */
  get allowsAnyMeshed(): boolean {
    return (
      this.#identities === undefined &&
      this.#serviceAccounts === undefined &&
      this.#namespaces === undefined
    );
  }

  /**
   * Decides for a peer: `peer` is its verified identity, or undefined for a peer that did not
   * authenticate (plaintext).
   */
  authorize(peer: string | undefined): PolicyDecision {
    if (peer === undefined) {
      return this.allowUnauthenticated
        ? ALLOWED
        : { allowed: false, reason: 'unauthenticated connections are not allowed' };
    }
    if (this.allowsAnyMeshed || this.#identities?.has(peer) === true) return ALLOWED;
    if (this.#serviceAccounts !== undefined || this.#namespaces !== undefined) {
      let workload: { namespace: string; serviceAccount: string } | undefined;
      try {
        workload = parseIdentityName(peer, this.#naming);
      } catch {
        // Not a workload of this mesh: it can only have matched an exact identity.
        workload = undefined;
      }
      if (
        workload !== undefined &&
        (this.#namespaces?.has(workload.namespace) === true ||
          this.#serviceAccounts?.has(`${workload.namespace}/${workload.serviceAccount}`) === true)
      ) {
        return ALLOWED;
      }
    }
    return { allowed: false, reason: `identity ${printable(peer)} is not authorized` };
  }
}
