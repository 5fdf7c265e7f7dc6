/**
 * FIPS mode: the status of Node's crypto, the start-up enforcement, and the algorithm policy.
 *
 * meshid's FIPS mode is not a narrower cipher list. With `fips: true` (`--fips`,
 * `MESHID_FIPS=1`) a process first makes sure every crypto operation of Node's OpenSSL goes
 * through an OpenSSL 3 FIPS provider, and refuses to start when that is impossible; then it keeps
 * every algorithm it uses inside the policy below, which is narrower than what the OpenSSL 3.0
 * FIPS provider offers (it still serves Ed25519 and X25519, for instance).
 *
 * Whether the provider is really active is measured, not assumed: with `default_properties =
 * fips=yes` and no FIPS provider loaded, `crypto.getFips()` still returns 1 but every fetch
 * fails; with a non-FIPS provider answering default fetches, MD5 is available. So the status
 * probes SHA-256 (must work) and MD5 (must be refused) besides reading `getFips()`.
 */
import * as nodeCrypto from 'node:crypto';
import type { SecureContextOptions } from 'node:tls';
import { MeshidError } from './errors.js';
import type { Logger } from './logger.js';
import {
  DerError,
  DerReader,
  DerTag,
  contextTag,
  decodeDer,
  integerContents,
  plainView,
  readOid,
} from './der.js';
import { X509Oid, parseSpki } from './csr.js';
import { FIPS_TLS_GROUPS, TLS_GROUP_LISTS, tlsGroupList } from './tls-groups.js';
import type { TlsGroupsMode } from './tls-groups.js';

/** The part of node:crypto FIPS mode uses; tests pass a stand-in to reach every branch. */
export interface FipsCrypto {
  getFips(): number;
  setFips(on: boolean): void;
  createHash(algorithm: string): { update(data: string): { digest(): Buffer } };
}

/** What Node's crypto runs on, as `meshid version` and `meshid check` show it. */
export interface CryptoStatus {
  /** `crypto.getFips() === 1`: OpenSSL's default properties ask for `fips=yes`. */
  readonly fipsMode: boolean;
  /**
   * A FIPS provider serves the default fetches: FIPS mode is on, SHA-256 works and MD5 (which
   * only non-FIPS providers offer) is refused.
   */
  readonly fipsProviderActive: boolean;
  /** The OpenSSL library Node runs on, e.g. '3.0.19'. */
  readonly opensslVersion: string;
  /** Node's version, e.g. 'v20.20.2'. */
  readonly nodeVersion: string;
  /** One sentence for a person: what was measured. */
  readonly detail: string;
}

/**
 * Reads the crypto status of this process (no side effects).
 *
 * @example
 * ```ts
 * const s = cryptoStatus();
 * logger.info({ fips: s.fipsProviderActive, openssl: s.opensslVersion }, 'crypto');
 * ```
 */
export function cryptoStatus(crypto: FipsCrypto = nodeCrypto): CryptoStatus {
  const fipsMode = crypto.getFips() === 1;
  const sha256 = tryHash(crypto, 'sha256');
  const md5 = tryHash(crypto, 'md5');
  const fipsProviderActive = fipsMode && sha256 === undefined && md5 !== undefined;
  let detail: string;
  if (!fipsMode) detail = 'FIPS mode is off (crypto.getFips() is 0)';
  else if (sha256 !== undefined)
    detail = `crypto.getFips() is 1 but no FIPS provider is loaded: SHA-256 is unavailable (${sha256})`;
  else if (md5 === undefined)
    detail =
      'crypto.getFips() is 1 but MD5 is still available, so a non-FIPS provider answers default fetches';
  else detail = 'a FIPS provider serves all crypto: SHA-256 works, MD5 is refused';
  return Object.freeze({
    fipsMode,
    fipsProviderActive,
    opensslVersion: process.versions.openssl ?? 'unknown',
    nodeVersion: process.version,
    detail,
  });
}

/** The error message of hashing with `algorithm`, or undefined when it worked. */
function tryHash(crypto: FipsCrypto, algorithm: string): string | undefined {
  try {
    crypto.createHash(algorithm).update('meshid').digest();
    return undefined;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}

/** How to run Node with a FIPS provider; part of every refusal to start. */
export const FIPS_HOW_TO =
  'Run Node.js with an OpenSSL 3 FIPS provider: install or build fips.so (the OpenSSL 3.0 FIPS ' +
  'provider), run `openssl fipsinstall -module <dir>/fips.so -out <dir>/fipsmodule.cnf`, write an ' +
  'OpenSSL config that includes fipsmodule.cnf and activates the fips and base providers with ' +
  '`default_properties = fips=yes` (in a `nodejs_conf` section), then start meshid with ' +
  '`OPENSSL_MODULES=<dir> node --openssl-config=<config> --enable-fips bin/meshid.js ...` ' +
  '(or --force-fips, or the same flags in NODE_OPTIONS). scripts/fips-provider.sh builds such a ' +
  'provider for tests; docs/fips.md explains production use.';

/**
 * The start-up check of every meshid command. With FIPS requested, turns FIPS mode on when it is
 * off (`crypto.setFips(true)`), then proves a FIPS provider serves the crypto; when it cannot,
 * throws ERR_FIPS_UNAVAILABLE saying why and how to run Node with a provider. It never falls back
 * to non-FIPS crypto. Without FIPS requested it changes nothing. Either way it logs one line
 * with the status.
 *
 * @example
 * ```ts
 * const status = enforceFips(config.fips, logger); // throws when FIPS is requested but impossible
 * ```
 */
export function enforceFips(
  requested: boolean,
  logger: Logger,
  crypto: FipsCrypto = nodeCrypto,
): CryptoStatus {
  if (requested && crypto.getFips() !== 1) {
    try {
      crypto.setFips(true);
    } catch (err) {
      throw unavailable(
        `crypto.setFips(true) failed: ${err instanceof Error ? err.message : String(err)}`,
        err,
      );
    }
  }
  const status = cryptoStatus(crypto);
  if (requested && !status.fipsProviderActive) throw unavailable(status.detail);
  logger.info(
    {
      fips: status.fipsProviderActive,
      fipsRequested: requested,
      openssl: status.opensslVersion,
      node: status.nodeVersion,
    },
    requested
      ? `FIPS mode: ${status.detail}; algorithms limited to the FIPS policy`
      : `crypto: ${status.detail}`,
  );
  return status;
}

function unavailable(reason: string, cause?: unknown): MeshidError {
  return new MeshidError(
    'ERR_FIPS_UNAVAILABLE',
    `FIPS mode was requested (fips: true, --fips or MESHID_FIPS=1) but Node.js ${process.version} ` +
      `(OpenSSL ${process.versions.openssl ?? 'unknown'}) cannot run its crypto on a FIPS provider: ` +
      `${reason}. meshid does not fall back to non-FIPS crypto. ${FIPS_HOW_TO}`,
    cause === undefined ? undefined : { cause },
  );
}

// ---- the algorithm policy -----------------------------------------------------------------------

/**
 * TLS settings of meshid's servers and clients outside FIPS mode (TLS 1.3 only), with the default
 * `tlsGroups` (hybrid-preferred: X25519MLKEM768, then X25519, P-256, P-384; core/tls-groups.ts).
 */
export const MESH_TLS = Object.freeze({
  minVersion: 'TLSv1.3',
  maxVersion: 'TLSv1.3',
  ciphers: 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256',
  ecdhCurve: TLS_GROUP_LISTS['hybrid-preferred'],
} as const satisfies SecureContextOptions);

/** {@link MESH_TLS} with `tlsGroups: hybrid-required` (X25519MLKEM768 only). */
export const MESH_TLS_HYBRID_REQUIRED = Object.freeze({
  ...MESH_TLS,
  ecdhCurve: TLS_GROUP_LISTS['hybrid-required'],
} as const satisfies SecureContextOptions);

/** {@link MESH_TLS} with `tlsGroups: classic` (X25519, P-256, P-384). */
export const MESH_TLS_CLASSIC = Object.freeze({
  ...MESH_TLS,
  ecdhCurve: TLS_GROUP_LISTS.classic,
} as const satisfies SecureContextOptions);

/**
 * TLS settings in FIPS mode: TLS 1.3 with the two AES-GCM suites, P-256/P-384 key exchange, and
 * signatures by ECDSA P-256/P-384 with SHA-256/384 or RSA with SHA-256/384 (which also bounds
 * the signatures accepted on peer certificates). No X25519, no ChaCha20, no Ed25519.
 */
export const FIPS_TLS = Object.freeze({
  minVersion: 'TLSv1.3',
  maxVersion: 'TLSv1.3',
  ciphers: 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384',
  ecdhCurve: FIPS_TLS_GROUPS,
  sigalgs:
    'ecdsa_secp256r1_sha256:ecdsa_secp384r1_sha384:rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:' +
    'rsa_pss_pss_sha256:rsa_pss_pss_sha384:rsa_pkcs1_sha256:rsa_pkcs1_sha384',
} as const satisfies SecureContextOptions);

/** The TLS settings in force: {@link FIPS_TLS} in FIPS mode, a {@link MESH_TLS} otherwise. */
export type MeshTlsSettings =
  typeof MESH_TLS | typeof MESH_TLS_HYBRID_REQUIRED | typeof MESH_TLS_CLASSIC | typeof FIPS_TLS;

/**
 * The TLS settings for a process in or out of FIPS mode, with its `tlsGroups`. FIPS mode is
 * always {@link FIPS_TLS} (P-256/P-384); with `hybrid-required` it throws
 * ERR_TLS_GROUPS_UNAVAILABLE (as it does where OpenSSL cannot negotiate the hybrid), so a
 * process told to require the hybrid never starts on classic key exchange.
 *
 * @example
 * ```ts
 * tls.createServer({ ...meshTlsSettings(config.fips, config.tlsGroups), key, cert });
 * ```
 */
export function meshTlsSettings(
  fips: boolean,
  tlsGroups: TlsGroupsMode = 'hybrid-preferred',
  hybridAvailable?: () => boolean,
): MeshTlsSettings {
  const groups = tlsGroupList(tlsGroups, fips, hybridAvailable);
  if (fips) return FIPS_TLS;
  if (groups === MESH_TLS_HYBRID_REQUIRED.ecdhCurve) return MESH_TLS_HYBRID_REQUIRED;
  if (groups === MESH_TLS_CLASSIC.ecdhCurve) return MESH_TLS_CLASSIC;
  return MESH_TLS;
}

/** The smallest RSA modulus the FIPS policy accepts, in bits. */
const FIPS_MIN_RSA_BITS = 2048;

const SIGNATURE_NAMES: ReadonlyMap<string, string> = new Map([
  [X509Oid.ecdsaWithSha256, 'ECDSA with SHA-256'],
  [X509Oid.ecdsaWithSha384, 'ECDSA with SHA-384'],
  ['1.2.840.113549.1.1.11', 'RSA PKCS#1 v1.5 with SHA-256'],
  ['1.2.840.113549.1.1.12', 'RSA PKCS#1 v1.5 with SHA-384'],
]);
const RSA_PSS = '1.2.840.113549.1.1.10';
const REFUSED_SIGNATURE_NAMES: ReadonlyMap<string, string> = new Map([
  [X509Oid.ecdsaWithSha512, 'ECDSA with SHA-512'],
  [X509Oid.ed25519, 'Ed25519'],
  ['1.3.101.113', 'Ed448'],
  ['1.2.840.10045.4.1', 'ECDSA with SHA-1'],
  ['1.2.840.113549.1.1.5', 'RSA with SHA-1'],
  ['1.2.840.113549.1.1.4', 'RSA with MD5'],
  ['1.2.840.113549.1.1.13', 'RSA with SHA-512'],
]);

/**
 * Why a public key (DER SubjectPublicKeyInfo) is outside the FIPS policy, or undefined when it
 * is inside: ECDSA on P-256 or P-384, or RSA of at least 2048 bits.
 *
 * @example
 * ```ts
 * fipsKeyProblem(csr.publicKey.spki); // 'its key is Ed25519, not ECDSA P-256/P-384 or RSA ≥ 2048'
 * ```
 */
export function fipsKeyProblem(spki: Uint8Array): string | undefined {
  const allowed = 'not ECDSA P-256/P-384 or RSA ≥ 2048';
  let info;
  try {
    info = parseSpki(spki);
  } catch {
    return `its public key cannot be read, so it is ${allowed}`;
  }
  switch (info.algorithm) {
    case 'EC':
      if (info.curve === 'P-256' || info.curve === 'P-384') return undefined;
      return `its key is EC ${info.curve ?? 'with explicit curve parameters'}, ${allowed}`;
    case 'RSA': {
      const bits = rsaModulusBits(info.publicKey);
      if (bits !== undefined && bits >= FIPS_MIN_RSA_BITS) return undefined;
      return `its key is RSA ${bits === undefined ? 'of unreadable size' : `${bits}-bit`}, ${allowed}`;
    }
    case 'Ed25519':
      return `its key is Ed25519, ${allowed}`;
    case 'other':
      return `its key has algorithm ${info.algorithmOid}, ${allowed}`;
  }
}

function rsaModulusBits(rsaPublicKey: Uint8Array): number | undefined {
  try {
    const r = new DerReader(
      decodeDer(plainView(rsaPublicKey), DerTag.SEQUENCE, 'RSAPublicKey').contents,
      'RSAPublicKey',
    );
    const n = integerContents(r.next(DerTag.INTEGER, 'modulus'), 'modulus');
    let i = 0;
    while (i < n.length && n[i] === 0) i++;
    if (i === n.length) return 0;
    return (n.length - i - 1) * 8 + (32 - Math.clz32(n[i]!));
  } catch {
    return undefined;
  }
}

/**
 * Why a certificate (DER) is outside the FIPS policy, or undefined when it is inside: its key
 * passes {@link fipsKeyProblem} and it is signed with ECDSA or RSA (PKCS#1 v1.5 or PSS) over
 * SHA-256 or SHA-384.
 *
 * @example
 * ```ts
 * const problem = fipsCertificateProblem(anchorDer);
 * if (problem !== undefined) throw new MeshidError('ERR_FIPS_MATERIAL_REFUSED', `FIPS mode refused trust anchor #1: ${problem}`);
 * ```
 */
export function fipsCertificateProblem(der: Uint8Array): string | undefined {
  let spki: Uint8Array;
  let signatureOid: string;
  let signatureParams: Uint8Array | undefined;
  try {
    const cert = new DerReader(
      decodeDer(plainView(der), DerTag.SEQUENCE, 'certificate').contents,
      'certificate',
    );
    const tbs = new DerReader(cert.next(DerTag.SEQUENCE, 'tbsCertificate').contents, 'tbs');
    tbs.optional(contextTag(0, true), 'version');
    tbs.next(DerTag.INTEGER, 'serialNumber');
    tbs.next(DerTag.SEQUENCE, 'signature');
    tbs.next(DerTag.SEQUENCE, 'issuer');
    tbs.next(DerTag.SEQUENCE, 'validity');
    tbs.next(DerTag.SEQUENCE, 'subject');
    spki = tbs.next(DerTag.SEQUENCE, 'subjectPublicKeyInfo').raw;
    const alg = new DerReader(cert.next(DerTag.SEQUENCE, 'signatureAlgorithm').contents, 'alg');
    signatureOid = readOid(alg.next(DerTag.OID, 'algorithm'), 'signature algorithm');
    signatureParams = alg.more ? alg.next(undefined, 'parameters').raw : undefined;
  } catch (err) {
    if (err instanceof DerError) return `it cannot be read as a certificate (${err.message})`;
    throw err;
  }
  const keyProblem = fipsKeyProblem(spki);
  if (keyProblem !== undefined) return keyProblem;
  if (SIGNATURE_NAMES.has(signatureOid)) return undefined;
  if (signatureOid === RSA_PSS) {
    return pssHashProblem(signatureParams);
  }
  const name = REFUSED_SIGNATURE_NAMES.get(signatureOid) ?? `algorithm ${signatureOid}`;
  return `it is signed with ${name}, not ECDSA or RSA with SHA-256/384`;
}

/** RSA-PSS parameters name their hash; only SHA-256 and SHA-384 are inside the policy. */
function pssHashProblem(params: Uint8Array | undefined): string | undefined {
  const sha256 = '2.16.840.1.101.3.4.2.1';
  const sha384 = '2.16.840.1.101.3.4.2.2';
  try {
    // RSASSA-PSS-params: [0] hashAlgorithm (default SHA-1), ...
    const p = new DerReader(decodeDer(params ?? new Uint8Array(), DerTag.SEQUENCE).contents);
    const hashTagged = p.optional(contextTag(0, true), 'hashAlgorithm');
    const hash =
      hashTagged === undefined
        ? 'SHA-1'
        : readOid(
            new DerReader(decodeDer(hashTagged.contents, DerTag.SEQUENCE).contents).next(
              DerTag.OID,
            ),
          );
    if (hash === sha256 || hash === sha384) return undefined;
    return `it is signed with RSA-PSS over ${hash === 'SHA-1' ? 'SHA-1' : hash}, not SHA-256/384`;
  } catch {
    return 'it is signed with RSA-PSS with unreadable parameters';
  }
}
