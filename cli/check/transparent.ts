/**
 * The transparent-mode checks of `meshid check --kubeconfig`: which injected pods of this control
 * plane bypass the mesh (no `meshid-init` init container, so nothing redirects their traffic to
 * the proxy), and whether the destination service that transparent proxies ask is up. Pure
 * functions of what cluster.ts read; docs/troubleshooting.md has a section per id.
 */
import { CONTROL_PLANE_NS_LABEL, TRANSPARENT_ANNOTATIONS } from '../../core/index.js';
import { PROXY_INIT_CONTAINER } from '../../webhooks/index.js';
import { DESTINATION_NAMES } from '../install/destination.js';
import type { Deployment, Pod, Read } from './cluster-api.js';
import type { CheckResult } from './model.js';
import { result } from './model.js';

/** How many pod names a message lists before "and N more". */
const LISTED = 5;

const podName = (p: Pod): string => `${p.metadata?.namespace}/${p.metadata?.name}`;

const listed = (pods: readonly Pod[]): string =>
  `${pods.slice(0, LISTED).map(podName).join(', ')}${pods.length > LISTED ? ` and ${pods.length - LISTED} more` : ''}`;

/** The pods of this control plane, split by whether their traffic is redirected to the proxy. */
interface TransparentPods<P extends Pod = Pod> {
  /** Injected with the `meshid-init` init container. */
  readonly transparent: readonly P[];
  /** Annotated `meshid.io/transparent: disabled`: the explicit mode, by request. */
  readonly disabled: readonly P[];
  /** Neither: injected without transparent mode (before it existed, or by an older injector). */
  readonly missingInit: readonly P[];
}

/**
 * Sorts the pods labelled `linkerd.io/control-plane-ns=<controlPlaneNamespace>`.
 */
export function transparentPods<P extends Pod>(
  pods: readonly P[],
  controlPlaneNamespace: string,
): TransparentPods<P> {
  const transparent: P[] = [];
  const disabled: P[] = [];
  const missingInit: P[] = [];
  for (const p of pods) {
    if (p.metadata?.labels?.[CONTROL_PLANE_NS_LABEL] !== controlPlaneNamespace) continue;
    if (p.metadata.annotations?.[TRANSPARENT_ANNOTATIONS.transparent] === 'disabled')
      disabled.push(p);
    else if ((p.spec?.initContainers ?? []).some((c) => c.name === PROXY_INIT_CONTAINER))
      transparent.push(p);
    else missingInit.push(p);
  }
  return { transparent, disabled, missingInit };
}

/** ‼ when injected pods of this control plane send their traffic around the proxy. */
export function checkTransparentPods(sorted: TransparentPods): CheckResult {
  const { transparent, disabled, missingInit } = sorted;
  const total = transparent.length + disabled.length + missingInit.length;
  if (total === 0)
    return result('proxies-transparent', 'ok', 'no injected pods of this control plane');
  if (disabled.length === 0 && missingInit.length === 0) {
    return result(
      'proxies-transparent',
      'ok',
      `all ${total} injected pods redirect their traffic through the proxy (${PROXY_INIT_CONTAINER})`,
    );
  }
  const parts: string[] = [];
  const fixes: string[] = [];
  if (missingInit.length > 0) {
    parts.push(
      `${missingInit.length} have no ${PROXY_INIT_CONTAINER} init container: ${listed(missingInit)}`,
    );
    fixes.push(
      `restart those workloads ("kubectl rollout restart") so the injector adds ${PROXY_INIT_CONTAINER}`,
    );
  }
  if (disabled.length > 0) {
    parts.push(
      `${disabled.length} are annotated ${TRANSPARENT_ANNOTATIONS.transparent}: disabled: ${listed(disabled)}`,
    );
    fixes.push(
      `remove the annotation ${TRANSPARENT_ANNOTATIONS.transparent}: disabled from their pod templates (unless their applications dial the proxy's listeners themselves), then restart them`,
    );
  }
  return result(
    'proxies-transparent',
    'warn',
    `${disabled.length + missingInit.length} of ${total} injected pods bypass the mesh unless their applications dial the proxy themselves; ${parts.join('; ')}`,
    `${fixes.join('; ')} (docs/troubleshooting.md#proxies-transparent)`,
  );
}

/**
 * × when transparent pods exist and the destination service's Deployment is missing or has no
 * ready replica: their proxies then pass their outbound traffic as plain TCP.
 */
export function checkDestinationReady(
  deployment: Read<Deployment>,
  transparentCount: number,
  namespace: string,
): CheckResult {
  const name = `Deployment ${namespace}/${DESTINATION_NAMES.deployment}`;
  const ready = deployment instanceof Error ? 0 : (deployment?.status?.readyReplicas ?? 0);
  if (deployment !== undefined && !(deployment instanceof Error) && ready > 0) {
    return result(
      'destination-ready',
      'ok',
      `${name}: ${ready} of ${deployment.spec?.replicas ?? 1} replicas ready`,
    );
  }
  if (transparentCount === 0) {
    return result(
      'destination-ready',
      'ok',
      `no transparent pods ask the destination service (${name} ${deployment instanceof Error ? 'unreadable' : deployment === undefined ? 'not installed' : 'not ready'})`,
    );
  }
  if (deployment instanceof Error) {
    return result(
      'destination-ready',
      'warn',
      `cannot read ${name}: ${deployment.message}`,
      `give the checking user "get deployments" in namespace ${namespace}`,
    );
  }
  const why = deployment === undefined ? 'is not installed' : 'has no ready replica';
  return result(
    'destination-ready',
    'error',
    `${name} ${why} while ${transparentCount} transparent pods ask it: their outbound traffic leaves as plain TCP, without mTLS`,
    deployment === undefined
      ? `install it: "meshid install --webhooks" renders it unless destination is set false (docs/install.md); or set meshid.io/transparent: disabled on those pods`
      : `check its pods ("kubectl -n ${namespace} get pods -l app.kubernetes.io/component=destination" and their logs)`,
  );
}
