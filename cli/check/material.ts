/**
 * The checks of the trust anchors and the issuer: pure functions of the PEM texts and the time,
 * the same for a state folder and for the cluster's ConfigMap and Secret.
 */
import type { CheckResult } from './model.js';
import { result } from './model.js';
import { createPublicKey } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import {
  PemError,
  chainFingerprints,
  parseAnchors,
  parseCertificates,
  parsePem,
  reachAnchor,
  shortName,
} from '../../core/index.js';
import type { ParsedCertificate } from '../../core/index.js';
import { parseIssuerKey } from '../../identity-ca/index.js';
import { judgeExpiry } from './x509.js';

/** Where the material was read from, for messages and fixes. */
export interface MaterialSources {
  /** `.meshid/trust-anchors.pem`, `ConfigMap linkerd/linkerd-identity-trust-roots`. */
  readonly anchors: string;
  /** `.meshid/issuer`, `Secret linkerd/linkerd-identity-issuer`. */
  readonly issuer: string;
  /** One file of the issuer: `.meshid/issuer/tls.key`, `Secret linkerd/… key tls.key`. */
  issuerFile(name: 'tls.crt' | 'tls.key' | 'ca.crt'): string;
  /** How to replace the anchors (one line). */
  readonly fixAnchors: string;
  /** How to replace the issuer (one line). */
  readonly fixIssuer: string;
  /** How to renew the issuer under the same anchor, when there is a way (local: --renew-issuer). */
  readonly renewIssuer?: string;
}

const KEY_LABELS = ['EC PRIVATE KEY', 'PRIVATE KEY', 'RSA PRIVATE KEY', 'ENCRYPTED PRIVATE KEY'];

/**
 * The issuer key by the CA's rule (identity-ca's parseIssuerKey), or what is wrong with it, naming
 * the file: not a PEM private key at all, or not the ECDSA P-256 key the CA signs with.
 */
function readIssuerKey(pem: string, file: string): KeyObject | string {
  let labels: string[];
  try {
    labels = parsePem(pem).map((b) => b.label);
  } catch (err) {
    if (!(err instanceof PemError)) throw err;
    return `${file} is not a PEM private key (${err.message})`;
  }
  if (!labels.some((l) => KEY_LABELS.includes(l)))
    return `${file} is not a PEM private key (${labels.length === 0 ? 'it is empty' : `it holds ${labels.map((l) => `"${l}"`).join(', ')}`})`;
  try {
    return parseIssuerKey(pem);
  } catch (err) {
    return `${file} is not a usable issuer key: ${(err as Error).message}`;
  }
}

/** The issuer as read: the certificate (with chain), key and optional ca.crt. */
export interface IssuerFiles {
  readonly certPem: string;
  readonly keyPem: string;
  readonly caPem?: string | undefined;
}

/**
 * Checks the anchors bundle; returns the results and the anchors that parsed (empty when the
 * bundle is unusable).
 */
export function checkAnchors(
  pem: string | Error,
  src: MaterialSources,
  now: number,
  warnWithinMs: number,
): { results: CheckResult[]; anchors: readonly ParsedCertificate[] } {
  if (pem instanceof Error) {
    return {
      results: [
        result(
          'anchors-valid',
          'error',
          `cannot read ${src.anchors}: ${pem.message}`,
          src.fixAnchors,
        ),
      ],
      anchors: [],
    };
  }
  let anchors: readonly ParsedCertificate[];
  try {
    // The bundle rule every component applies (core's parseAnchors): check says what they say.
    anchors = parseAnchors(pem, { now }).anchors;
  } catch (err) {
    return {
      results: [
        result(
          'anchors-valid',
          'error',
          `${src.anchors}: ${(err as Error).message}`,
          src.fixAnchors,
        ),
      ],
      anchors: [],
    };
  }
  const results = [
    result(
      'anchors-valid',
      'ok',
      `${anchors.length} anchor${anchors.length === 1 ? '' : 's'} in ${src.anchors}: ${anchors.map(shortName).join(', ')}`,
    ),
  ];
  const verdicts = anchors.map((a) => ({ a, v: judgeExpiry(a.x509, now, warnWithinMs) }));
  const worst =
    verdicts.find((x) => x.v.status === 'error') ?? verdicts.find((x) => x.v.status === 'warn');
  if (worst === undefined) {
    const soonest = verdicts.reduce((m, x) => (x.v.remainingMs < m.v.remainingMs ? x : m));
    results.push(
      result(
        'anchors-expiry',
        'ok',
        anchors.length === 1
          ? `${shortName(soonest.a)} ${soonest.v.text}`
          : `all ${anchors.length} valid; the first to expire, ${shortName(soonest.a)}, is ${soonest.v.text}`,
      ),
    );
  } else {
    const valid = verdicts.filter((x) => x.v.status !== 'error').length;
    results.push(
      result(
        'anchors-expiry',
        worst.v.status,
        `${shortName(worst.a)} ${worst.v.text}${anchors.length > 1 ? ` (${valid} of ${anchors.length} anchors still valid)` : ''}`,
        worst.v.status === 'error'
          ? `rotate the trust anchor now (docs/rotation.md); ${src.fixAnchors}`
          : 'plan the trust-anchor rotation before it expires (docs/rotation.md)',
      ),
    );
  }
  return { results, anchors };
}

/** Checks the issuer against the anchors; returns the results and the parsed issuer chain. */
export function checkIssuer(
  files: IssuerFiles | Error,
  anchors: readonly ParsedCertificate[],
  src: MaterialSources,
  now: number,
  warnWithinMs: number,
): { results: CheckResult[]; issuer?: ParsedCertificate } {
  if (files instanceof Error) {
    return {
      results: [
        result(
          'issuer-valid',
          'error',
          `cannot read ${src.issuer}: ${files.message}`,
          src.fixIssuer,
        ),
      ],
    };
  }
  let chain: ParsedCertificate[];
  try {
    chain = parseCertificates(files.certPem, 'ERR_INSPECT_TARGET');
    if (chain.length === 0) throw new Error('tls.crt holds no certificate');
  } catch (err) {
    return {
      results: [
        result('issuer-valid', 'error', `${src.issuer}: ${(err as Error).message}`, src.fixIssuer),
      ],
    };
  }
  const issuer = chain[0]!;
  let extra: ParsedCertificate[] = [];
  try {
    if (files.caPem !== undefined && files.caPem.trim() !== '')
      extra = parseCertificates(files.caPem, 'ERR_INSPECT_TARGET');
  } catch {
    // ca.crt is only a hint for building the chain; a bad one is reported by the chain check.
  }
  const key = readIssuerKey(files.keyPem, src.issuerFile('tls.key'));
  if (typeof key === 'string') {
    return { results: [result('issuer-valid', 'error', key, src.fixIssuer)] };
  }
  const spki = (k: KeyObject): Buffer => k.export({ type: 'spki', format: 'der' });
  const keyOk = spki(createPublicKey(key)).equals(spki(issuer.x509.publicKey));
  const name = shortName(issuer);
  const results: CheckResult[] = [
    result('issuer-valid', 'ok', `${name} from ${src.issuer}`),
    issuer.x509.ca
      ? result('issuer-is-ca', 'ok', `${name} is a CA certificate`)
      : result(
          'issuer-is-ca',
          'error',
          `${name} is not a CA certificate (basicConstraints cA is false): it cannot sign workload certificates`,
          `issue the issuer with isCA: true (cert-manager Certificate spec.isCA); ${src.fixIssuer}`,
        ),
    keyOk
      ? result('issuer-key', 'ok', "tls.key is the certificate's key")
      : result(
          'issuer-key',
          'error',
          `${src.issuerFile('tls.key')} does not match the issuer certificate ${src.issuerFile('tls.crt')} (${name}, sha256 ${issuer.fingerprint})`,
          `put the key that was certified with the certificate; ${src.fixIssuer}`,
        ),
  ];
  if (anchors.length === 0) {
    results.push(
      result(
        'issuer-chain',
        'error',
        'no usable trust anchors to chain to',
        'fix the trust anchors first (anchors-valid)',
      ),
    );
  } else {
    // Expiry has its own check: judge the chain's signatures at a moment the issuer is valid.
    const v = judgeExpiry(issuer.x509, now, warnWithinMs);
    const at = v.status === 'error' ? Math.max(v.notBefore, Math.min(now, v.notAfter)) : now;
    const c = reachAnchor([...chain, ...extra], anchors, at);
    results.push(
      c.anchor !== undefined
        ? result('issuer-chain', 'ok', `${name} chains to the anchor ${shortName(c.anchor)}`)
        : result(
            'issuer-chain',
            'error',
            `${name} does not chain to the current trust anchors: ${c.reason} (${chainFingerprints([...chain, ...extra], anchors, { chain: src.issuerFile('tls.crt'), anchors: src.anchors })})`,
            `issue the issuer from a current anchor, or add its root to the anchors bundle first (docs/rotation.md)`,
          ),
    );
  }
  const v = judgeExpiry(issuer.x509, now, warnWithinMs);
  results.push(
    result(
      'issuer-expiry',
      v.status,
      `${name} ${v.text}`,
      v.status === 'ok'
        ? undefined
        : src.renewIssuer !== undefined
          ? `${v.status === 'error' ? 'replace the issuer now' : 'renew the issuer soon'}: ${src.renewIssuer}; or, for a new trust anchor too, ${src.fixIssuer}`
          : v.status === 'error'
            ? `replace the issuer now: ${src.fixIssuer}`
            : `renew the issuer soon (cert-manager renews it by itself when it manages it): ${src.fixIssuer}`,
    ),
  );
  return { results, issuer };
}
