/**
 * Where an injected proxy gets its identity: from the CA over Certify with a projected
 * ServiceAccount token (`certify`, the default), or from the kubelet with no token at all
 * (`pod-certificate`): a `podCertificate` projected source for meshid's signer (the key and chain
 * in one credential bundle file) and a `clusterTrustBundle` source for the anchors meshid's trust
 * sync publishes (docs/pod-certificates.md, docs/cluster-trust-bundles.md). Chosen by the
 * annotation `meshid.io/identity-source` on the pod or its namespace (the pod's wins).
 */
import type { JsonObject } from './admission.js';

/** The annotation, on the pod or its namespace. */
export const IDENTITY_SOURCE_ANNOTATION = 'meshid.io/identity-source';

/** Its values; the first is the default. */
const IDENTITY_SOURCES = Object.freeze(['certify', 'pod-certificate'] as const);
export type IdentitySource = (typeof IDENTITY_SOURCES)[number];

/** Where the proxy finds its credential bundle and anchors in `pod-certificate` mode. */
export const POD_CERTIFICATE_MOUNT = '/var/run/meshid/pod-certificate';
/** The injected volume's name (suffixed when the pod has one already). */
export const POD_CERTIFICATE_VOLUME = 'meshid-pod-certificate';

/** The files in the volume: the key then the chain (one atomic read), and the anchors. */
const CREDENTIAL_BUNDLE_FILE = 'credentialbundle.pem';
const TRUST_BUNDLE_FILE = 'ca-bundle.crt';
/** The label meshid's trust sync puts on the ClusterTrustBundle pods should trust. */
const LIVE_TRUST_BUNDLE = Object.freeze({ 'meshid.io/trust-bundle': 'live' });
/** The mesh's leaf profile is ECDSA P-256; the signer denies any other key. */
const KEY_TYPE = 'ECDSAP256';
/** 24 h, as the projected token's default; the signer never issues beyond it anyway. */
const MAX_EXPIRATION_SECONDS = 86_400;

/** The audience of the projected token the CA accepts (Linkerd's). */
const TOKEN_AUDIENCE = 'identity.l5d.io';

/** Thrown for a bad annotation value; the injector refuses the pod with the message. */
export class BadIdentitySourceAnnotation extends Error {
  override readonly name = 'BadIdentitySourceAnnotation';
}

/**
 * The identity source of a pod: the pod's annotation when present, else its namespace's, else
 * `certify`.
 *
 * @throws BadIdentitySourceAnnotation naming the annotation, where it was and the allowed values.
 * @example
 * ```ts
 * identitySourceOf({}, { 'meshid.io/identity-source': 'pod-certificate' }); // 'pod-certificate'
 * ```
 */
export function identitySourceOf(
  pod: Readonly<Record<string, string>>,
  namespace: Readonly<Record<string, string>> | undefined,
): IdentitySource {
  const onPod = pod[IDENTITY_SOURCE_ANNOTATION];
  const where = onPod === undefined ? 'namespace' : 'pod';
  const value = onPod ?? namespace?.[IDENTITY_SOURCE_ANNOTATION];
  if (value === undefined) return IDENTITY_SOURCES[0];
  if ((IDENTITY_SOURCES as readonly string[]).includes(value)) return value as IdentitySource;
  throw new BadIdentitySourceAnnotation(
    `annotation ${IDENTITY_SOURCE_ANNOTATION} on the ${where} is ${JSON.stringify(value.slice(0, 64))}: it must be one of ${IDENTITY_SOURCES.map((s) => `"${s}"`).join(', ')}`,
  );
}

/**
 * The projected volume of a `pod-certificate` proxy: the kubelet's key and certificate from
 * `signerName`, and the live ClusterTrustBundle of the same signer.
 */
export function podCertificateVolume(name: string, signerName: string): JsonObject {
  return {
    name,
    projected: {
      sources: [
        {
          podCertificate: {
            signerName,
            keyType: KEY_TYPE,
            maxExpirationSeconds: MAX_EXPIRATION_SECONDS,
            credentialBundlePath: CREDENTIAL_BUNDLE_FILE,
          },
        },
        {
          clusterTrustBundle: {
            signerName,
            labelSelector: { matchLabels: { ...LIVE_TRUST_BUNDLE } },
            path: TRUST_BUNDLE_FILE,
          },
        },
      ],
    },
  };
}

/** The proxy's settings for its identity in `pod-certificate` mode (no token, no CA address). */
export function podCertificateEnv(): { name: string; value: string }[] {
  return [
    { name: 'MESHID_IDENTITY_SOURCE', value: 'pod-certificate' },
    {
      name: 'MESHID_CREDENTIAL_BUNDLE',
      value: `${POD_CERTIFICATE_MOUNT}/${CREDENTIAL_BUNDLE_FILE}`,
    },
    { name: 'MESHID_TRUST_ANCHORS', value: `${POD_CERTIFICATE_MOUNT}/${TRUST_BUNDLE_FILE}` },
  ];
}

/** The token (for Certify) and anchors ConfigMap volumes of a `certify` proxy. */
export function certifyVolumes(
  tokenVolume: string,
  anchorsVolume: string,
  options: {
    readonly tokenExpirationSeconds: number;
    readonly trustAnchorsConfigMap: string;
    readonly trustAnchorsKey: string;
  },
): JsonObject[] {
  return [
    {
      // A projected token works whatever automountServiceAccountToken says: that setting only
      // governs the API token volume, which the proxy does not use.
      name: tokenVolume,
      projected: {
        sources: [
          {
            serviceAccountToken: {
              audience: TOKEN_AUDIENCE,
              expirationSeconds: options.tokenExpirationSeconds,
              path: 'token',
            },
          },
        ],
      },
    },
    {
      // A pod mounts ConfigMaps of its own namespace only: the anchors ConfigMap is expected in
      // every meshed namespace (`meshid trust sync` keeps copies there, or a trust-manager
      // Bundle's targets).
      name: anchorsVolume,
      configMap: {
        name: options.trustAnchorsConfigMap,
        items: [{ key: options.trustAnchorsKey, path: options.trustAnchorsKey }],
      },
    },
  ];
}
