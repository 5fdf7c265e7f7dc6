/**
 * Names and places derived from the naming (trust domain, control-plane namespace) and from the
 * local state folder: what several commands' derived defaults, and cli, compute alike.
 */
import { DEFAULTS } from '../defaults.js';
import { namingProblems } from '../identity.js';
import type { Given } from './setting.js';

/** `--kubeconfig in-cluster`: the pod's service account token and the cluster's CA. */
export const IN_CLUSTER = 'in-cluster';

/** `--jwks kubernetes`: the API server's OIDC discovery document and its JWKS. */
export const KUBERNETES_JWKS = 'kubernetes';

/** The destination service's Service (Linkerd's name), which `meshid install --destination` renders. */
export const DESTINATION_SERVICE_NAME = 'linkerd-dst';

interface Naming {
  trustDomain: string;
  controlPlaneNamespace: string;
}

/** The naming a command runs with: the given trust domain and namespace, else the defaults. */
export function givenNaming(given: Given): Naming {
  return {
    trustDomain: (given['trustDomain'] as string | undefined) ?? DEFAULTS.trustDomain,
    controlPlaneNamespace:
      (given['controlPlaneNamespace'] as string | undefined) ?? DEFAULTS.controlPlaneNamespace,
  };
}

/**
 * An identity derived from the given naming, or `invalid` when the naming itself is (its own
 * settings then report why, and the derived name is not reported twice).
 */
export function derivedIdentity(name: (naming: Naming) => string): (given: Given) => string {
  return (given) => {
    const naming = givenNaming(given);
    return namingProblems(naming).length === 0 ? name(naming) : 'invalid';
  };
}

/** The CA's own identity name: `linkerd-identity.<cp>.serviceaccount.identity.<cp>.<td>`. */
export function caIdentityName(naming: Naming): string {
  const cp = naming.controlPlaneNamespace;
  return `linkerd-identity.${cp}.serviceaccount.identity.${cp}.${naming.trustDomain}`;
}

/** Where pods reach the CA: its Service in the control plane's namespace, on its port. */
export function caServiceAddress(naming: { controlPlaneNamespace: string }): string {
  return `linkerd-identity.${naming.controlPlaneNamespace}.svc:${DEFAULTS.caListen.port}`;
}

/**
 * The destination service's identity: its ServiceAccount `linkerd-destination` in the control
 * plane's namespace (Linkerd's name).
 *
 * @example
 * ```ts
 * destinationIdentityName({ trustDomain: 'cluster.local', controlPlaneNamespace: 'linkerd' });
 * // 'linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local'
 * ```
 */
export function destinationIdentityName(naming: Naming): string {
  const cp = naming.controlPlaneNamespace;
  return `linkerd-destination.${cp}.serviceaccount.identity.${cp}.${naming.trustDomain}`;
}

/**
 * Where proxies reach the destination service: its Service in the control plane's namespace, on
 * Linkerd's port.
 *
 * @example
 * ```ts
 * destinationServiceAddress({ controlPlaneNamespace: 'linkerd' }); // 'linkerd-dst.linkerd.svc:8086'
 * ```
 */
export function destinationServiceAddress(naming: { controlPlaneNamespace: string }): string {
  return `${DESTINATION_SERVICE_NAME}.${naming.controlPlaneNamespace}.svc:${DEFAULTS.destinationListen.port}`;
}

/**
 * The four CA inputs inside a local state folder (the layout `meshid init` writes).
 *
 * @example
 * ```ts
 * localStateInputs('.meshid').issuerDir; // '.meshid/issuer'
 * ```
 */
export function localStateInputs(dir: string): {
  trustAnchors: string;
  issuerDir: string;
  jwks: string;
  tokenIssuer: string;
  tokenSigningKey: string;
} {
  return {
    trustAnchors: `${dir}/trust-anchors.pem`,
    issuerDir: `${dir}/issuer`,
    jwks: `${dir}/token-signing/jwks.json`,
    tokenSigningKey: `${dir}/token-signing/key.pem`,
    tokenIssuer: DEFAULTS.localTokenIssuer,
  };
}
