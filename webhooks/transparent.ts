/**
 * What the injector adds to a pod in transparent mode (the default for an opted-in pod; the
 * annotation `meshid.io/transparent: disabled` keeps the explicit mode): the `meshid proxy-init`
 * init container that writes the pod's nat rules, with exactly the capabilities that needs, and
 * the proxy's UID and settings that go with the rules. Annotations use Linkerd's names
 * (core/transparent.ts); each is checked here so that a bad value refuses the pod with the
 * annotation named rather than failing the init container later.
 */
import {
  INBOUND_POLICIES,
  TRANSPARENT_ANNOTATIONS,
  TRANSPARENT_DEFAULTS,
  parseCidrList,
  parsePortList,
  parsePortPolicies,
} from '../core/index.js';
import type { InboundPolicyName } from '../core/index.js';
import type { JsonObject } from './admission.js';

/** The injected init container's name. */
export const PROXY_INIT_CONTAINER = 'meshid-init';
/** iptables-legacy takes a lock file under /run; the root file system is read-only. */
export const XTABLES_LOCK_VOLUME = 'meshid-proxy-init-xtables-lock';

/** The transparent-mode settings of one pod, read from its annotations. */
export interface TransparentSettings {
  readonly proxyUid: number;
  readonly inboundPolicy: InboundPolicyName;
  /** Per-port policies, `PORT=POLICY` each (the proxy's `--inbound-port-policy`), ranges expanded. */
  readonly portPolicies: readonly string[];
  /** `meshid proxy-init`'s arguments (after the command name). */
  readonly initArgs: readonly string[];
}

/** Thrown for a bad annotation value; the injector refuses the pod with the message. */
export class BadTransparentAnnotation extends Error {
  override readonly name = 'BadTransparentAnnotation';
}

/**
 * Whether a pod is injected in transparent mode: yes unless `meshid.io/transparent` says
 * `disabled`; `enabled` says so explicitly; anything else is refused.
 *
 * @example
 * ```ts
 * transparentWanted({ 'meshid.io/transparent': 'disabled' }); // false
 * ```
 */
export function transparentWanted(annotations: Readonly<Record<string, string>>): boolean {
  const v = annotations[TRANSPARENT_ANNOTATIONS.transparent];
  if (v === undefined || v === 'enabled') return true;
  if (v === 'disabled') return false;
  throw new BadTransparentAnnotation(
    `annotation ${TRANSPARENT_ANNOTATIONS.transparent} must be "enabled" or "disabled"`,
  );
}

/**
 * Reads and checks the transparent-mode annotations of a pod.
 *
 * @throws BadTransparentAnnotation naming the annotation and what it must be.
 * @example
 * ```ts
 * transparentSettings({ 'config.linkerd.io/skip-inbound-ports': '22' }).initArgs;
 * // ['proxy-init', '--proxy-uid', '2102', '--skip-inbound-ports', '22']
 * ```
 */
export function transparentSettings(
  annotations: Readonly<Record<string, string>>,
): TransparentSettings {
  const A = TRANSPARENT_ANNOTATIONS;
  const uidText = annotations[A.proxyUid];
  let proxyUid: number = TRANSPARENT_DEFAULTS.proxyUid;
  if (uidText !== undefined) {
    proxyUid = /^\d{1,10}$/.test(uidText) ? Number(uidText) : 0;
    if (proxyUid < 1 || proxyUid > 2_147_483_646)
      throw new BadTransparentAnnotation(
        `annotation ${A.proxyUid} must be a non-root UID (1-2147483646)`,
      );
  }
  const policy = annotations[A.defaultInboundPolicy] ?? TRANSPARENT_DEFAULTS.inboundPolicy;
  if (!(INBOUND_POLICIES as readonly string[]).includes(policy))
    throw new BadTransparentAnnotation(
      `annotation ${A.defaultInboundPolicy} must be one of ${INBOUND_POLICIES.join(', ')}`,
    );
  const portPolicies: string[] = [];
  const perPort = annotations[A.inboundPortPolicy];
  if (perPort !== undefined) {
    const r = parsePortPolicies(perPort);
    if ('problem' in r)
      throw new BadTransparentAnnotation(`annotation ${A.inboundPortPolicy}: ${r.problem}`);
    for (const [port, name] of r.policies) portPolicies.push(`${port}=${name}`);
  }
  const args = ['proxy-init', '--proxy-uid', String(proxyUid)];
  for (const [annotation, flag] of [
    [A.skipInboundPorts, '--skip-inbound-ports'],
    [A.skipOutboundPorts, '--skip-outbound-ports'],
  ] as const) {
    const v = annotations[annotation];
    if (v === undefined) continue;
    const r = parsePortList(v);
    if ('problem' in r)
      throw new BadTransparentAnnotation(`annotation ${annotation}: ${r.problem}`);
    if (r.ranges.length > 0)
      args.push(
        flag,
        r.ranges.map((p) => (p.from === p.to ? p.from : `${p.from}-${p.to}`)).join(','),
      );
  }
  const subnets = annotations[A.skipSubnets];
  if (subnets !== undefined) {
    const r = parseCidrList(subnets);
    if ('problem' in r)
      throw new BadTransparentAnnotation(`annotation ${A.skipSubnets}: ${r.problem}`);
    if (r.cidrs.length > 0) args.push('--skip-subnets', r.cidrs.map((c) => c.text).join(','));
  }
  return {
    proxyUid,
    inboundPolicy: policy as InboundPolicyName,
    portPolicies,
    initArgs: args,
  };
}

/**
 * The init container running `meshid proxy-init`: root (iptables needs it) with NET_ADMIN and
 * NET_RAW and every other capability dropped, no privilege escalation, read-only root.
 */
export function proxyInitContainer(
  image: string,
  settings: TransparentSettings,
  lockVolume: string,
): JsonObject {
  return {
    name: PROXY_INIT_CONTAINER,
    image,
    imagePullPolicy: 'IfNotPresent',
    args: [...settings.initArgs],
    resources: {
      requests: { cpu: '10m', memory: '32Mi' },
      limits: { memory: '64Mi' },
    },
    securityContext: {
      runAsUser: 0,
      runAsNonRoot: false,
      allowPrivilegeEscalation: false,
      privileged: false,
      readOnlyRootFilesystem: true,
      capabilities: { add: ['NET_ADMIN', 'NET_RAW'], drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    },
    terminationMessagePolicy: 'FallbackToLogsOnError',
    volumeMounts: [{ name: lockVolume, mountPath: '/run' }],
  };
}

/** The emptyDir the init container's /run is. */
export function proxyInitVolume(name: string): JsonObject {
  return { name, emptyDir: {} };
}
