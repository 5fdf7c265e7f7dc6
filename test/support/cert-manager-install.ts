/**
 * `meshid install --cert-manager` applied to the Kubernetes API test server, with the
 * cert-manager simulator run until the root and the issuer are issued: the starting point of the
 * trust controllers' integration tests.
 */
import { parseAllDocuments } from 'yaml';
import type { Clock } from '../../core/index.js';
import { renderInstall } from '../../cli/install.js';
import { CertManagerSimulator } from './cert-manager-sim.js';
import type { KubeApiServer, KubeObject } from './kube-api-server/index.js';

/**
 * Creates every object of the install in `server` and returns the simulator that issued them
 * (stop it after the test).
 *
 * @example
 * ```ts
 * const sim = await applyCertManagerInstall(server, clock);
 * ```
 */
export async function applyCertManagerInstall(
  server: KubeApiServer,
  clock: Clock,
): Promise<CertManagerSimulator> {
  const sim = new CertManagerSimulator({ api: server, clock });
  for (const doc of parseAllDocuments(
    renderInstall({ argv: ['--cert-manager'], env: {}, now: Date.now() }),
  )) {
    const obj = doc.toJS() as KubeObject | null;
    if (obj !== null) server.create(obj);
  }
  // The root first, then the issuer it signs.
  await sim.reconcile();
  await sim.reconcile();
  return sim;
}
