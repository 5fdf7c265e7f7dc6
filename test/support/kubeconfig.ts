/**
 * A kubeconfig that authenticates to the Kubernetes API test server as a ServiceAccount (a token
 * it minted, as TokenRequest would), so that a process run with it has exactly that account's
 * RBAC, as a pod running under it would.
 */
import { join } from 'node:path';
import type { KubeApiServer } from './kube-api-server/index.js';

/** Writes `<dir>/<sa>.kubeconfig` for `namespace/sa` (a one-hour token); resolves with its path. */
export async function serviceAccountKubeconfig(
  api: KubeApiServer,
  dir: string,
  namespace: string,
  sa: string,
): Promise<string> {
  const { token } = await api.mintToken({ namespace, serviceAccount: sa, expirationSeconds: 3600 });
  const file = join(dir, `${sa}.kubeconfig`);
  await api.writeKubeconfig(file, { token });
  return file;
}
