/**
 * The trust-configuration guard (`/validate`): the seat belt for the two edits that can take the
 * mesh down at once.
 *
 * - The anchors ConfigMap (in the control-plane namespace): its bundle must parse as CA
 *   certificates, and must still hold the anchor that the current issuer chains to; otherwise
 *   every proxy would refuse the CA's certificates, and every leaf, as soon as it reloads.
 *   Which issuer is current is read from the issuer Secret through the API (its `tls.crt` and
 *   `ca.crt`; the key is never read into anything).
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
export interface TrustGuardOptions {
  readonly controlPlaneNamespace: string;
  readonly trustAnchorsConfigMap: string;
  readonly trustAnchorsKey: string;
  readonly issuerSecret: string;
}

/** What the guard needs from outside. */
export interface TrustGuardDeps {
  /**
   * The issuer's certificates as PEM (`tls.crt`, then `ca.crt`) from the issuer Secret, or
   * undefined when the Secret does not exist. Absent: the webhook has no API access, and the
   * anchor check is skipped with a warning.
   */
  readonly issuerChainPem?: () => Promise<string | undefined>;
  readonly clock: Clock;
  readonly logger: Logger;
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
 * The `/validate` handler.
 *
 * @example
 * ```ts
 * const guard = createTrustGuard(options, { issuerChainPem, clock: systemClock, logger });
 * ```
 */
export function createTrustGuard(
  options: TrustGuardOptions,
  deps: TrustGuardDeps,
): AdmissionHandler {
  const bundleOf = (o: JsonObject | undefined): string | undefined => {
    const data = o?.['data'];
    if (!isObject(data)) return undefined;
    const v = data[options.trustAnchorsKey];
    return typeof v === 'string' ? v : undefined;
  };

  const checkAnchors = async (
    object: JsonObject,
    oldObject: JsonObject | undefined,
  ): Promise<AdmissionResult> => {
    const where = `ConfigMap ${options.controlPlaneNamespace}/${options.trustAnchorsConfigMap}`;
    const pem = bundleOf(object);
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
    if (pem === bundleOf(oldObject)) return { allowed: true };
    if (deps.issuerChainPem === undefined)
      return {
        allowed: true,
        warnings: [
          'meshid trust guard: no API access configured, so it was not checked that the current issuer still chains to this bundle',
        ],
      };
    const chainPem = await deps.issuerChainPem();
    if (chainPem === undefined)
      return {
        allowed: true,
        warnings: [
          `meshid trust guard: issuer Secret ${options.controlPlaneNamespace}/${options.issuerSecret} not found; the bundle is valid but no issuer was checked against it`,
        ],
      };
    let chain: ParsedCertificate[];
    try {
      chain = parseCertificates(chainPem, 'ERR_ISSUER_INVALID', 'issuer Secret');
    } catch (err) {
      if (!isMeshidError(err)) throw err;
      return {
        allowed: true,
        warnings: [
          `meshid trust guard: the issuer Secret does not parse (${err.message.slice(0, 200)}); the bundle is valid but no issuer was checked against it`,
        ],
      };
    }
    if (chain.length === 0)
      return {
        allowed: true,
        warnings: [
          'meshid trust guard: the issuer Secret holds no certificate; the bundle is valid but no issuer was checked against it',
        ],
      };
    const found = reachAnchor(chain, anchors, now);
    if (found.anchor !== undefined) return { allowed: true };
    const issuer = chain[0]!;
    let dropped = '';
    const oldPem = bundleOf(oldObject);
    if (oldPem !== undefined) {
      try {
        const before = reachAnchor(chain, parseAnchors(oldPem, { now }).anchors, now);
        if (before.anchor !== undefined)
          dropped = ` It removes "${printable(before.anchor.subject)}" (sha256 ${before.anchor.fingerprint.slice(0, 16)}…), the anchor the issuer chains to now.`;
      } catch {
        // The old bundle was already bad: nothing to name.
      }
    }
    deps.logger.warn(
      { issuer: issuer.subject, configMap: where },
      'refused an anchors update that drops the current issuer’s anchor',
    );
    return deny(
      `${where}: the new bundle drops the anchor the current issuer chains to, so every proxy would refuse the CA and its certificates.${dropped} The issuer "${printable(issuer.subject)}" does not chain to any valid anchor of the new bundle: ${found.reason}. Add the new anchor beside the old one first, rotate the issuer, then remove the old anchor (docs/rotation.md).`,
    );
  };

  const checkIssuerCertificate = (object: JsonObject): AdmissionResult => {
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
  };

  return async (request): Promise<AdmissionResult> => {
    if (request.operation !== 'CREATE' && request.operation !== 'UPDATE') return { allowed: true };
    if (request.subResource !== undefined || request.object === undefined) return { allowed: true };
    const inControlPlane = (request.namespace ?? '') === options.controlPlaneNamespace;
    if (!inControlPlane) return { allowed: true };
    const k = request.kind;
    if (k.group === '' && k.kind === 'ConfigMap') {
      const name = request.name ?? nameOf(request.object);
      if (name !== options.trustAnchorsConfigMap) return { allowed: true };
      return checkAnchors(request.object, request.oldObject);
    }
    if (k.group === 'cert-manager.io' && k.kind === 'Certificate')
      return checkIssuerCertificate(request.object);
    return { allowed: true };
  };
}
