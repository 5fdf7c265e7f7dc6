/**
 * The trust-configuration guard (`/validate`): the seat belt for the two edits that can take the
 * mesh down at once.
 *
 * - The anchors ConfigMap (in the control-plane namespace): its bundle must parse as CA
 *   certificates, and must still hold the anchor that the current issuer chains to; otherwise
 *   every proxy would refuse the CA's certificates, and every leaf, as soon as it reloads.
 *   Which issuer is live is learnt from the CA itself, without the issuer Secret (which holds
 *   the issuer's key, so the webhooks have no right to read it): the CA serves a certificate for
 *   its own identity signed by the issuer it signs with, followed by the issuer's chain. The
 *   guard reads that chain over TLS, checks the first certificate is for the CA's identity and
 *   signed by the next, and that the chain reaches the anchors in force (the ConfigMap as it is
 *   before the edit), so that only the real CA can make the guard refuse or allow an edit.
 * - The cert-manager Certificate that issues the identity issuer (the one whose `secretName` is
 *   the issuer Secret): it must be a CA with an ECDSA P-256 key, or the CA would refuse the Secret
 *   cert-manager writes.
 *
 * Everything else is allowed. Refusals explain themselves in the response's status message.
 */
import {
  isMeshidError,
  parseAnchors,
  parseCertificates,
  printable,
  reachAnchor,
} from '../core/index.js';
import type { Anchor, Clock, Logger, ParsedCertificate } from '../core/index.js';
import type { AdmissionHandler, AdmissionResult, JsonObject } from './admission.js';

/** Options of the guard; from the `meshid webhooks` configuration. */
interface TrustGuardOptions {
  readonly controlPlaneNamespace: string;
  readonly trustAnchorsConfigMap: string;
  readonly trustAnchorsKey: string;
  readonly issuerSecret: string;
  /** The CA's identity name: the DNS SAN of the certificate it serves. */
  readonly caIdentityName: string;
  /** Where the CA is (HOST:PORT), for messages. */
  readonly caAddress: string;
}

/** What the guard needs from outside. */
interface TrustGuardDeps {
  /**
   * The chain the CA serves on its Certify port, as PEM, its own certificate first, unverified
   * (core's `peerChain`); rejects when the CA cannot be reached. Absent: the anchor check is
   * skipped with a warning.
   */
  readonly caChainPem?: () => Promise<string[]>;
  readonly clock: Clock;
  readonly logger: Logger;
}

/** The live issuer's chain (the issuer first), or why it is not known. */
type LiveIssuer =
  | { readonly chain: ParsedCertificate[] }
  | { readonly chain?: undefined; readonly unknown: string };

/** True when `parent` issued `child`: names and signature. */
function signedBy(child: ParsedCertificate, parent: ParsedCertificate): boolean {
  try {
    return child.x509.checkIssued(parent.x509) && child.x509.verify(parent.x509.publicKey);
  } catch {
    return false;
  }
}

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function deny(message: string): AdmissionResult {
  return { allowed: false, status: { code: 422, reason: 'Invalid', message } };
}

function nameOf(o: JsonObject | undefined): string | undefined {
  const m = o?.['metadata'];
  return isObject(m) && typeof m['name'] === 'string' ? m['name'] : undefined;
}

/**
 * The `/validate` handler: the anchors ConfigMap and the identity issuer's Certificate in the
 * control-plane namespace are checked; everything else is allowed.
 *
 * @example
 * ```ts
 * const guard = createTrustGuard(options, {
 *   caChainPem: () => peerChain(caAddress, options.caIdentityName, 3_000, { alpn: ['h2'], minVersion: 'TLSv1.3' }),
 *   clock: systemClock,
 *   logger,
 * });
 * ```
 */
export function createTrustGuard(
  options: TrustGuardOptions,
  deps: TrustGuardDeps,
): AdmissionHandler {
  return async (request): Promise<AdmissionResult> => {
    if (request.operation !== 'CREATE' && request.operation !== 'UPDATE') return { allowed: true };
    if (request.subResource !== undefined || request.object === undefined) return { allowed: true };
    const inControlPlane = (request.namespace ?? '') === options.controlPlaneNamespace;
    if (!inControlPlane) return { allowed: true };
    const k = request.kind;
    if (k.group === '' && k.kind === 'ConfigMap') {
      const name = request.name ?? nameOf(request.object);
      if (name !== options.trustAnchorsConfigMap) return { allowed: true };
      return checkAnchors(options, deps, request.object, request.oldObject);
    }
    if (k.group === 'cert-manager.io' && k.kind === 'Certificate')
      return checkIssuerCertificate(options, request.object);
    return { allowed: true };
  };
}

/** The bundle a ConfigMap holds under the anchors key. */
function bundleOf(options: TrustGuardOptions, o: JsonObject | undefined): string | undefined {
  const data = o?.['data'];
  if (!isObject(data)) return undefined;
  const v = data[options.trustAnchorsKey];
  return typeof v === 'string' ? v : undefined;
}

/**
 * The issuer the CA signs with now, from the chain it serves: its own certificate (for
 * caIdentityName) signed by the next one, the issuer. When the anchors in force are known (the
 * ConfigMap before this edit), the chain must reach them, or it proves nothing.
 */
async function liveIssuer(
  options: TrustGuardOptions,
  deps: TrustGuardDeps,
  inForce: string | undefined,
  now: number,
): Promise<LiveIssuer> {
  const where = `the CA at ${options.caAddress}`;
  if (deps.caChainPem === undefined) return { unknown: 'no CA address configured' };
  let served: ParsedCertificate[];
  try {
    served = parseCertificates(
      (await deps.caChainPem()).join(''),
      'ERR_ISSUER_INVALID',
      `${where} serves a chain that`,
    );
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    return { unknown: `cannot read the live issuer from ${where}: ${message.slice(0, 200)}` };
  }
  const [leaf, ...rest] = served;
  if (leaf === undefined) return { unknown: `${where} presented no certificate` };
  const names = (leaf.x509.subjectAltName ?? '').split(', ');
  if (!names.includes(`DNS:${options.caIdentityName}`))
    return {
      unknown: `${where} serves a certificate for ${printable(leaf.x509.subjectAltName ?? leaf.subject, 120)}, not for ${options.caIdentityName}`,
    };
  const issuer = rest.find((c) => c.x509.ca && signedBy(leaf, c));
  if (issuer === undefined)
    return { unknown: `${where} serves its certificate without the issuer that signed it` };
  const chain = [issuer, ...rest.filter((c) => c !== issuer)];
  if (inForce !== undefined) {
    const reached = reachAnchors(chain, inForce, now);
    if (reached !== undefined && reached.anchor === undefined)
      return {
        unknown: `the chain ${where} serves does not reach the anchors in force (${reached.reason.slice(0, 200)})`,
      };
  }
  return { chain };
}

/** Which anchor of a bundle the chain reaches; undefined when the bundle itself is broken. */
function reachAnchors(chain: ParsedCertificate[], pem: string, now: number) {
  let anchors: readonly Anchor[];
  try {
    anchors = parseAnchors(pem, { now }).anchors;
  } catch {
    // The bundle is already broken: nothing to verify against, nothing to name.
    return undefined;
  }
  return reachAnchor(chain, anchors, now);
}

/** An anchors edit: a valid bundle that still holds the anchor the live issuer chains to. */
async function checkAnchors(
  options: TrustGuardOptions,
  deps: TrustGuardDeps,
  object: JsonObject,
  oldObject: JsonObject | undefined,
): Promise<AdmissionResult> {
  const where = `ConfigMap ${options.controlPlaneNamespace}/${options.trustAnchorsConfigMap}`;
  const pem = bundleOf(options, object);
  if (pem === undefined)
    return deny(
      `${where} must hold the trust-anchor bundle under the key "${options.trustAnchorsKey}"`,
    );
  const now = deps.clock.now();
  let anchors: readonly Anchor[];
  try {
    anchors = parseAnchors(pem, { now }).anchors;
  } catch (err) {
    if (isMeshidError(err)) return deny(`${where}: ${err.message}`);
    throw err;
  }
  const oldPem = bundleOf(options, oldObject);
  if (pem === oldPem) return { allowed: true };
  const live = await liveIssuer(options, deps, oldPem, now);
  if (live.chain === undefined) {
    deps.logger.warn(
      { configMap: where, reason: live.unknown },
      'allowed an anchors update without checking the live issuer',
    );
    return {
      allowed: true,
      warnings: [
        `meshid trust guard: ${live.unknown}; the bundle is valid but no issuer was checked against it`,
      ],
    };
  }
  const chain = live.chain;
  const found = reachAnchor(chain, anchors, now);
  if (found.anchor !== undefined) return { allowed: true };
  const issuer = chain[0]!;
  const before = oldPem === undefined ? undefined : reachAnchors(chain, oldPem, now)?.anchor;
  const dropped =
    before === undefined
      ? ''
      : ` It removes "${printable(before.subject)}" (sha256 ${before.fingerprint.slice(0, 16)}…), the anchor the issuer chains to now.`;
  deps.logger.warn(
    { issuer: issuer.subject, configMap: where },
    'refused an anchors update that drops the current issuer’s anchor',
  );
  return deny(
    `${where}: the new bundle drops the anchor the current issuer chains to, so every proxy would refuse the CA and its certificates.${dropped} The issuer "${printable(issuer.subject)}" does not chain to any valid anchor of the new bundle: ${found.reason}. Add the new anchor beside the old one first, rotate the issuer, then remove the old anchor (docs/rotation.md).`,
  );
}

/** The identity issuer's Certificate: a CA with an ECDSA P-256 key, or the CA refuses it. */
function checkIssuerCertificate(options: TrustGuardOptions, object: JsonObject): AdmissionResult {
  const spec = isObject(object['spec']) ? object['spec'] : {};
  if (spec['secretName'] !== options.issuerSecret) return { allowed: true };
  const problems: string[] = [];
  if (spec['isCA'] !== true)
    problems.push('spec.isCA must be true (the identity issuer signs workload certificates)');
  const key = isObject(spec['privateKey']) ? spec['privateKey'] : {};
  const algorithm = key['algorithm'];
  if (algorithm === undefined)
    problems.push(
      'spec.privateKey.algorithm is not set, and cert-manager defaults it to RSA: set it to ECDSA (with size 256)',
    );
  else if (algorithm !== 'ECDSA')
    problems.push(
      `spec.privateKey.algorithm must be ECDSA, got ${JSON.stringify(printable(String(algorithm)))}`,
    );
  if (
    key['size'] !== undefined &&
    key['size'] !== 256 &&
    (algorithm === 'ECDSA' || algorithm === undefined)
  )
    problems.push(`spec.privateKey.size must be 256 (P-256), got ${JSON.stringify(key['size'])}`);
  if (problems.length === 0) return { allowed: true };
  return deny(
    `Certificate ${options.controlPlaneNamespace}/${nameOf(object) ?? '?'} issues the identity issuer (Secret ${options.issuerSecret}), which meshid uses only as an ECDSA P-256 CA: ${problems.join('; ')}`,
  );
}
