/**
 * The cert-manager (and trust-manager) resources of the trust chain, built as typed
 * `@kubernetes-models/cert-manager` objects, following Linkerd's documented cert-manager recipe
 * (reference/linkerd-identity-contract.md §6) with everything in the control-plane namespace:
 *
 *   Issuer      linkerd-trust-root-issuer   selfSigned: signs the root
 *   Certificate linkerd-trust-anchor        the root: isCA, ECDSA P-256, 8760h/7320h → Secret linkerd-trust-anchor
 *   Issuer      linkerd-trust-anchor        ca.secretName linkerd-trust-anchor: signs the identity issuer
 *   Certificate linkerd-identity-issuer     the issuer: isCA, ECDSA P-256 → Secret linkerd-identity-issuer (kubernetes.io/tls)
 *   Bundle      linkerd-identity-trust-roots  (trust-manager only) the anchors ConfigMap from the root Secret
 *
 * A rotation adds a second root Certificate and CA Issuer named `<name>-<rotation id>`
 * ({@link rotatedRootName}) and points the issuer Certificate at the new CA Issuer.
 */
import { Certificate, Issuer } from '@kubernetes-models/cert-manager/cert-manager.io/v1';
import { Bundle } from '@kubernetes-models/cert-manager/trust.cert-manager.io/v1alpha1';
import { formatDuration } from '../core/index.js';

const HOUR = 3_600_000;

/** What the resources are named and where they live. */
export interface CertManagerSettings {
  /** Namespace of every namespaced object (the control-plane namespace). */
  readonly namespace: string;
  readonly trustDomain: string;
  readonly controlPlaneNamespace: string;
  /** The self-signed Issuer that signs roots. */
  readonly selfSignedIssuer: string;
  /** The root Certificate, and the Secret it writes. */
  readonly rootCertificate: string;
  /** The CA Issuer over the root, which signs the identity issuer. */
  readonly caIssuer: string;
  /** The identity issuer Certificate, and the Secret it writes. */
  readonly issuerSecret: string;
  readonly trustAnchorsConfigMap: string;
  readonly trustAnchorsKey: string;
  /** The CA's leaf lifetime: the issuer is renewed while it still outlives a full-length leaf. */
  readonly certLifetime: number;
  readonly labels?: Readonly<Record<string, string>>;
}

/**
 * The label on every root Certificate meshid manages (and on their Secrets).
 */
const TRUST_ANCHOR_LABEL = 'meshid.io/trust-anchor';

/**
 * The default name of the self-signed Issuer (Linkerd's recipe).
 *
 * @example
 * ```ts
 * selfSignedIssuer({ ...settings, selfSignedIssuer: SELF_SIGNED_ISSUER });
 * ```
 */
export const SELF_SIGNED_ISSUER = 'linkerd-trust-root-issuer';

/**
 * The self-signed Issuer that signs root Certificates.
 *
 * @example
 * ```ts
 * selfSignedIssuer(settings).toJSON();
 * ```
 */
export function selfSignedIssuer(s: CertManagerSettings): Issuer {
  return new Issuer({
    metadata: { name: s.selfSignedIssuer, namespace: s.namespace, ...labelled(s) },
    spec: { selfSigned: {} },
  });
}

/**
 * A root Certificate: isCA, ECDSA P-256, a fresh key on every issuance, `duration 8760h`,
 * `renewBefore 7320h` (Linkerd's recipe), written to the Secret of the same name.
 *
 * @example
 * ```ts
 * rootCertificate(settings, 'linkerd-trust-anchor-r1').spec.isCA; // true
 * ```
 */
export function rootCertificate(s: CertManagerSettings, name = s.rootCertificate): Certificate {
  const commonName = `root.${s.controlPlaneNamespace}.${s.trustDomain}`;
  return new Certificate({
    metadata: {
      name,
      namespace: s.namespace,
      labels: { ...s.labels, [TRUST_ANCHOR_LABEL]: 'true' },
    },
    spec: {
      secretName: name,
      secretTemplate: { labels: { [TRUST_ANCHOR_LABEL]: 'true' } },
      isCA: true,
      commonName,
      duration: '8760h0m0s',
      renewBefore: '7320h0m0s',
      privateKey: { algorithm: 'ECDSA', size: 256, rotationPolicy: 'Always' },
      usages: ['cert sign', 'crl sign'],
      issuerRef: { group: 'cert-manager.io', kind: 'Issuer', name: s.selfSignedIssuer },
    },
  });
}

/**
 * The CA Issuer over a root Secret.
 *
 * @example
 * ```ts
 * caIssuer(settings).spec.ca?.secretName; // 'linkerd-trust-anchor'
 * ```
 */
export function caIssuer(
  s: CertManagerSettings,
  name = s.caIssuer,
  secretName = s.rootCertificate,
): Issuer {
  return new Issuer({
    metadata: { name, namespace: s.namespace, ...labelled(s) },
    spec: { ca: { secretName } },
  });
}

/**
 * The identity issuer Certificate: an ECDSA P-256 intermediate CA in a `kubernetes.io/tls` Secret.
 * Linkerd's documented 48h/25h, stretched when leaves live longer: the issuer is renewed while it
 * still outlives a full-length leaf, so leaves are never clamped to a dying issuer.
 *
 * @example
 * ```ts
 * identityIssuerCertificate(settings).spec.renewBefore; // '25h'
 * ```
 */
export function identityIssuerCertificate(
  s: CertManagerSettings,
  issuerName = s.caIssuer,
): Certificate {
  const renewBefore = Math.max(25 * HOUR, s.certLifetime + HOUR);
  const duration = Math.max(48 * HOUR, renewBefore + 23 * HOUR);
  const commonName = `identity.${s.controlPlaneNamespace}.${s.trustDomain}`;
  return new Certificate({
    metadata: { name: s.issuerSecret, namespace: s.namespace, ...labelled(s) },
    spec: {
      secretName: s.issuerSecret,
      isCA: true,
      commonName,
      dnsNames: [commonName],
      duration: formatDuration(duration),
      renewBefore: formatDuration(renewBefore),
      privateKey: { algorithm: 'ECDSA', size: 256, rotationPolicy: 'Always' },
      usages: ['cert sign', 'crl sign'],
      issuerRef: { group: 'cert-manager.io', kind: 'Issuer', name: issuerName },
    },
  });
}

/**
 * The trust-manager Bundle that fills the anchors ConfigMap from the root Secret (and a
 * `<root>-previous` Secret kept by the operator during a manual rotation), in every namespace
 * labelled `linkerd.io/is-control-plane: "true"`. trust-manager reads its sources from its trust
 * namespace, so it must run with `app.trust.namespace` set to the control-plane namespace.
 *
 * @example
 * ```ts
 * trustManagerBundle(settings).spec.target.configMap?.key; // 'ca-bundle.crt'
 * ```
 */
export function trustManagerBundle(s: CertManagerSettings): Bundle {
  return new Bundle({
    metadata: { name: s.trustAnchorsConfigMap, ...labelled(s) },
    spec: {
      sources: [
        { secret: { name: s.rootCertificate, key: 'tls.crt' } },
        { secret: { name: `${s.rootCertificate}-previous`, key: 'tls.crt' } },
      ],
      target: {
        configMap: { key: s.trustAnchorsKey },
        namespaceSelector: { matchLabels: { 'linkerd.io/is-control-plane': 'true' } },
      },
    },
  });
}

/**
 * The name of the root Certificate (and its Secret and CA Issuer) a rotation creates.
 *
 * @example
 * ```ts
 * rotatedRootName('linkerd-trust-anchor', 'r1a2b3c'); // 'linkerd-trust-anchor-r1a2b3c'
 * ```
 */
export function rotatedRootName(base: string, rotationId: string): string {
  // A rotation of a rotated root replaces the previous suffix instead of stacking them.
  const stem = base.replace(/-r[0-9a-z]{6,12}$/, '');
  return `${stem}-${rotationId}`;
}

function labelled(s: CertManagerSettings): { labels?: Record<string, string> } {
  return s.labels === undefined ? {} : { labels: { ...s.labels } };
}
