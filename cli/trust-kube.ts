/**
 * `meshid trust` against the Kubernetes API (placeholder until the kube backend lands).
 */
import { MeshidError } from '../core/index.js';
import type { TrustConfig } from '../core/index.js';
import type { RotationController } from '../trust-bundle/index.js';

/** A rotation controller over the configured backend, and what to release afterwards. */
export interface OpenedRotation {
  readonly controller: RotationController;
  readonly where: string;
  close(): void;
}

export function openKubeRotation(_config: TrustConfig, _options: unknown): Promise<OpenedRotation> {
  void _config;
  void _options;
  return Promise.reject(
    new MeshidError('ERR_CONFIG_INVALID', 'meshid trust: --kubeconfig is not supported yet'),
  );
}
