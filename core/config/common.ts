/**
 * Settings several commands share, declared once: the ones every command has, the naming, and
 * those that mean the same wherever they appear. A command that gives one a narrower meaning
 * keeps the declaration and changes only the help line (`.describe()`).
 */
import { z } from 'zod';
import { DEFAULTS as D } from '../defaults.js';
import { TLS_GROUPS_MODES } from '../tls-groups.js';
import { IN_CLUSTER } from './names.js';
import {
  boolean,
  configMapKey,
  duration,
  label,
  lifetime,
  nonEmpty,
  output,
  path,
  probeTimeout,
  skew,
  string,
  subdomain,
} from './setting.js';

const LOG_LEVELS = z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

/** The settings every command has. */
export const COMMON = {
  config: path(z.string().optional()).describe('YAML or JSON configuration file'),
  logLevel: string(LOG_LEVELS, D.logLevel).describe(LOG_LEVELS.options.join('|')),
  logFormat: string(z.enum(['auto', 'json', 'text']), D.logFormat).describe(
    'log lines: json (one JSON object a line, for machines), text (for people), or auto: text on a terminal, json otherwise',
  ),
  fips: boolean().describe(
    'FIPS mode: run all crypto on a FIPS provider (or refuse to start), FIPS-approved algorithms only',
  ),
  tlsGroups: string(z.enum(TLS_GROUPS_MODES), D.tlsGroups).describe(
    'TLS key exchange: hybrid-preferred (X25519MLKEM768, then classic groups) | hybrid-required | classic; FIPS: P-256/P-384',
  ),
};

/** The naming that identity names are built from. */
export const NAMING = {
  trustDomain: string(subdomain, D.trustDomain).describe('trust domain (DNS-1123 subdomain)'),
  controlPlaneNamespace: string(label, D.controlPlaneNamespace).describe(
    'control-plane namespace in identity names',
  ),
};

/** Settings with one meaning wherever they appear. */
export const SHARED = {
  trustAnchorsKey: string(configMapKey, D.trustAnchorsKey).describe(
    'key of the bundle in the trust-anchor ConfigMap',
  ),
  trustAnchorsConfigMap: string(subdomain, D.trustAnchorsConfigMap).describe(
    'trust-anchor ConfigMap',
  ),
  issuerSecret: string(subdomain, D.issuerSecret).describe('issuer Secret'),
  /** The anchors a workload (a proxy, the destination service) verifies peers with. */
  watchedTrustAnchors: path(nonEmpty).describe('PEM bundle of trust anchors (watched)'),
  certManagerIssuer: string(subdomain, D.certManagerIssuer).describe(
    'cert-manager Issuer (in the namespace) that holds the trust-anchor key',
  ),
  certLifetime: duration(lifetime, D.certLifetimeMs).describe('leaf certificate lifetime'),
  clockSkew: duration(skew, D.clockSkewMs).describe('clock-skew allowance'),
  /** A kubeconfig file, or `in-cluster` for the pod's service account; unset: no API. */
  kubeconfig: path(nonEmpty.optional()).describe(
    `kubeconfig file for the Kubernetes API; "${IN_CLUSTER}" uses the pod's service account`,
  ),
  /** A context of the kubeconfig, as kubectl's --context; unset: its current-context. */
  context: string(nonEmpty.optional()).describe(
    "kubeconfig context to use, as kubectl's --context (default: the kubeconfig's current-context)",
  ),
  /** The namespace of the control plane's objects; the control-plane namespace unless given. */
  namespace: string(
    label,
    (g) => (g['controlPlaneNamespace'] as string | undefined) ?? D.controlPlaneNamespace,
  ).describe('namespace of the control-plane objects (default: the control-plane namespace)'),
  output: string(output, D.output).describe('text or json'),
  timeout: duration(probeTimeout, D.checkTimeoutMs).describe('deadline of a network call'),
};
