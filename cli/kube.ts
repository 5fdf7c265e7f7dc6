/**
 * The CA's Kubernetes dependencies, built from its configuration (the composition root's job).
 */
import { hostname } from 'node:os';
import type { CaConfig, Logger } from '../core/index.js';
import { openKubeconfig } from '../core/index.js';
import { caRequirements, checkPermissions, describeAccess } from '../identity-ca/index.js';
import type { KubeApi } from '../identity-ca/index.js';

/** The API and this instance's name, or undefined when the configuration uses no API. */
export async function caKube(
  config: CaConfig,
): Promise<{ api: KubeApi; instance: string } | undefined> {
  if (config.kubeconfig === undefined) return undefined;
  const api = await openKubeconfig(config.kubeconfig, process.env);
  // In a pod the hostname is the pod name, which is what `reportingInstance` should say.
  return { api, instance: process.env['POD_NAME'] ?? hostname() };
}

/**
 * Checks with SelfSubjectAccessReviews that the CA may do what its configuration asks; throws a
 * clear error naming each missing permission, warns for optional ones (Events).
 */
export async function checkCaPermissions(
  api: KubeApi,
  config: CaConfig,
  logger: Logger,
): Promise<void> {
  const denied = await checkPermissions(
    api,
    caRequirements({
      tokenReview: config.tokenValidator === 'tokenreview',
      namespace: config.namespace,
      issuerSecret: config.issuerSecret,
      trustAnchorsConfigMap: config.trustAnchorsConfigMap,
      events: config.events,
      podCertificates: config.podCertificates
        ? { signerName: config.podCertificateSigner, version: config.podCertificateApiVersion }
        : undefined,
    }),
  );
  for (const r of denied) {
    logger.warn(
      { permission: describeAccess(r.query) },
      `permission missing: ${r.why} will not work`,
    );
  }
}
