/**
 * The security settings every meshid control-plane pod runs with: the Kubernetes "restricted" Pod
 * Security Standard (non-root, no privilege escalation, all capabilities dropped, RuntimeDefault
 * seccomp) plus a read-only root filesystem. One definition, so that the CA, the trust-sync
 * controller and the webhooks cannot drift apart.
 */
import type { IPodSecurityContext, ISecurityContext } from 'kubernetes-models/v1';

/** The pod-level security context for a workload running as `uid` (user and group). */
export function restrictedPodSecurity(uid: number): IPodSecurityContext {
  return {
    runAsNonRoot: true,
    runAsUser: uid,
    runAsGroup: uid,
    seccompProfile: { type: 'RuntimeDefault' },
  };
}

/** The container-level security context for a container running as `uid` (user and group). */
export function restrictedContainerSecurity(uid: number): ISecurityContext {
  return {
    ...restrictedPodSecurity(uid),
    readOnlyRootFilesystem: true,
    allowPrivilegeEscalation: false,
    privileged: false,
    capabilities: { drop: ['ALL'] },
  };
}
