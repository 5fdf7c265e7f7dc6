/**
 * Deployment status, as the deployment controller writes it once a rollout has finished. The test
 * double runs no controllers and no pods: a test that started what a Deployment would run (or that
 * only needs the install to look rolled out) says so with `api.rollOut(namespace, name)`, which
 * writes this status. Until then a Deployment has no status, as one the controller has not
 * observed yet; `kubectl rollout status` waits ("Waiting for deployment spec update to be
 * observed"), `kubectl wait --for=condition=Available` waits, and both finish on the watch event
 * of the status write, as they do against a cluster.
 */
import type { JsonObject, KubeObject } from './types.js';

function iso(ms: number): string {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace('.000Z', 'Z');
}

/**
 * The status of a Deployment whose current generation has fully rolled out: every replica
 * updated, ready and available, and the two conditions kubectl reads (`Available`, and
 * `Progressing` with reason `NewReplicaSetAvailable`).
 */
export function rolledOutStatus(deployment: KubeObject, now: number): JsonObject {
  const spec = (deployment['spec'] ?? {}) as { replicas?: number };
  const replicas = spec.replicas ?? 1;
  const generation = deployment.metadata.generation ?? 1;
  // The ReplicaSet's name: the Deployment's and a hash of its pod template, as the controller names it.
  const replicaSet = `${deployment.metadata.name}-${(deployment.metadata.uid ?? '').replace(/-/g, '').slice(0, 10)}`;
  const at = iso(now);
  return {
    observedGeneration: generation,
    replicas,
    updatedReplicas: replicas,
    readyReplicas: replicas,
    availableReplicas: replicas,
    conditions: [
      {
        type: 'Available',
        status: 'True',
        lastUpdateTime: at,
        lastTransitionTime: at,
        reason: 'MinimumReplicasAvailable',
        message: 'Deployment has minimum availability.',
      },
      {
        type: 'Progressing',
        status: 'True',
        lastUpdateTime: at,
        lastTransitionTime: at,
        reason: 'NewReplicaSetAvailable',
        message: `ReplicaSet "${replicaSet}" has successfully progressed.`,
      },
    ],
  };
}
