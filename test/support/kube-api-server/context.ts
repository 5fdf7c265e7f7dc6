/** Everything a request handler needs, built once by startKubeApiServer. */
import type { Admission } from './admission.js';
import type { Authenticator, Authorizer } from './auth.js';
import type { Faults } from './faults.js';
import type { Objects } from './objects.js';
import type { ResourceRegistry } from './resources.js';
import type { Store } from './store.js';
import type { TokenAuthority } from './tokens.js';
import type { RequestLogEntry } from './types.js';

export interface ServerContext {
  readonly registry: ResourceRegistry;
  readonly store: Store;
  readonly objects: Objects;
  /** Webhook admission of HTTP writes. */
  readonly admission: Admission;
  readonly authn: Authenticator;
  readonly authz: Authorizer;
  readonly tokens: TokenAuthority;
  readonly faults: Faults;
  readonly now: () => number;
  readonly minTokenExpirationSeconds: number;
  readonly bookmarkIntervalMs: number;
  /** The server's https URL (changes only if the port does). */
  readonly url: () => string;
  readonly log: (e: RequestLogEntry) => void;
  /** Enders of open watch streams, called on stop and pause. */
  readonly watches: Set<() => void>;
}
