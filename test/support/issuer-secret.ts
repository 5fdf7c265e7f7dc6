/**
 * Issuer Secrets for the Kubernetes API test server, in the two schemes the CA reads:
 * `kubernetes.io/tls` (as cert-manager writes it) and Linkerd's `linkerd.io/tls`.
 */
import type { GeneratedCa } from '../../core/pki.js';
import type { KubeApiServer, KubeObject } from './kube-api-server/index.js';

/** Where an issuer Secret lives. */
export interface SecretRef {
  readonly namespace: string;
  readonly name: string;
}

/**
 * An issuer Secret object. `type` other than the two schemes (e.g. `Opaque`) gets the
 * `kubernetes.io/tls` keys.
 */
export function issuerSecret(
  ref: SecretRef,
  issuer: GeneratedCa,
  root: GeneratedCa,
  type = 'kubernetes.io/tls',
): KubeObject {
  const data: Record<string, string> =
    type === 'linkerd.io/tls'
      ? { 'crt.pem': issuer.certificatePem, 'key.pem': issuer.privateKeyPem }
      : {
          'tls.crt': issuer.certificatePem,
          'tls.key': issuer.privateKeyPem,
          'ca.crt': root.certificatePem,
        };
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name: ref.name, namespace: ref.namespace },
    type,
    data: Object.fromEntries(
      Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString('base64')]),
    ),
  } as KubeObject;
}

/** Writes the Secret as an update of the current one (a new resourceVersion), or creates it. */
export function putIssuerSecret(
  api: KubeApiServer,
  ref: SecretRef,
  issuer: GeneratedCa,
  root: GeneratedCa,
  type?: string,
): void {
  const next = issuerSecret(ref, issuer, root, type);
  const current = api.get({ apiVersion: 'v1', kind: 'Secret', ...ref });
  if (current === undefined) api.create(next);
  else api.update({ ...next, metadata: current.metadata });
}
