/**
 * `meshid init --renew-issuer`: a new issuer certificate and key under the trust anchor a local
 * state folder already has, signed with the anchor's key that `meshid init` keeps in
 * `root/tls.key`. The anchor stays, so proxies keep trusting what they trust; a running
 * `meshid ca --dir` loads the new issuer through its issuer-folder watch, without a restart.
 *
 * Refused, with nothing written: a folder without state, a key that is missing or is the key of
 * no anchor in the bundle, an anchor that has expired (an issuer under it would verify nowhere),
 * and a trust-anchor rotation in progress (it moves the issuer itself).
 */
import { createPrivateKey, createPublicKey } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MeshidError, localStateInputs, parseCertificates, shortName } from '../core/index.js';
import type { ParsedCertificate } from '../core/index.js';
import { createIntermediateCa } from '../core/pki.js';
import { readRotationStateFile, rotationInProgress } from '../trust-bundle/index.js';
import { LOCAL_ROOT_KEY, checkStateDir, writeStateFiles } from './state-dir.js';

const DAY = 86_400_000;
/** The renewed issuer's lifetime: as `meshid init`'s, cut to the anchor's end. */
const ISSUER_LIFETIME_MS = 365 * DAY;

/** A certificate as the renewal report shows it. */
export interface IssuerFacts {
  readonly name: string;
  /** Hex SHA-256 of the DER (core's parseCertificates fingerprint). */
  readonly sha256: string;
  readonly notBefore: number;
  readonly notAfter: number;
}

/** What {@link renewLocalIssuer} did. */
export interface RenewedIssuer {
  readonly anchor: IssuerFacts;
  /** The issuer replaced; a string says why it could not be read (it is replaced all the same). */
  readonly old: IssuerFacts | string;
  readonly new: IssuerFacts;
  readonly written: readonly string[];
}

function refuse(message: string): MeshidError {
  return new MeshidError('ERR_LOCAL_STATE', message);
}

function facts(c: ParsedCertificate): IssuerFacts {
  return {
    name: shortName(c),
    sha256: c.fingerprint,
    notBefore: c.notBefore,
    notAfter: c.notAfter,
  };
}

async function readOrUndefined(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw refuse(`${path} cannot be read: ${(err as Error).message}`);
  }
}

function spki(k: KeyObject): Buffer {
  return (k.type === 'public' ? k : createPublicKey(k)).export({ type: 'spki', format: 'der' });
}

/**
 * Renews the issuer of the state folder `dir` at `now`; resolves with what it replaced and
 * wrote. Rejects with ERR_LOCAL_STATE naming the file and the fix; writes nothing then.
 *
 * @example
 * ```ts
 * const r = await renewLocalIssuer({ dir: '.meshid', now: Date.now(), fallbackCommonName: 'identity.linkerd.cluster.local' });
 * r.new.sha256;
 * ```
 */
export async function renewLocalIssuer(opts: {
  readonly dir: string;
  readonly now: number;
  /** The issuer's common name when the old certificate cannot be read for it. */
  readonly fallbackCommonName: string;
}): Promise<RenewedIssuer> {
  const { dir, now } = opts;
  const inputs = localStateInputs(dir);
  const anchorsText = await readOrUndefined(inputs.trustAnchors);
  if (anchorsText === undefined)
    throw refuse(
      `no local state to renew in ${dir}: ${inputs.trustAnchors} does not exist. --renew-issuer renews the issuer of a folder "meshid init" wrote; write one first: meshid init --dir ${dir}`,
    );
  await checkStateDir(dir);
  const rotation = await readRotationStateFile(dir).catch((err: unknown) => {
    throw refuse(
      `the rotation state in ${dir} cannot be read (${(err as Error).message}); inspect it with "meshid trust status --dir ${dir}" before renewing the issuer`,
    );
  });
  if (rotation !== undefined && rotationInProgress(rotation))
    throw refuse(
      `a trust-anchor rotation (${rotation.id}, phase ${rotation.phase}) is in progress in ${dir}; it moves the issuer to the new anchor itself. Let it finish ("meshid trust status --dir ${dir}"), then renew`,
    );

  const keyPath = join(dir, LOCAL_ROOT_KEY);
  const keyPem = await readOrUndefined(keyPath);
  const anchors = parseCertificates(
    anchorsText,
    'ERR_LOCAL_STATE',
    `trust anchors ${inputs.trustAnchors}`,
  );
  const listed = anchors.map((a) => `${shortName(a)} (sha256 ${a.fingerprint})`).join(', ');
  if (keyPem === undefined)
    throw refuse(
      `the trust anchor's private key ${keyPath} is not there, so no issuer can be signed under ${listed} in ${inputs.trustAnchors} (folders written before meshid init kept it, and a local rotation's new root, hold none). Make a new trust anchor and issuer instead: meshid init --force --dir ${dir} (then restart the CA and proxies)`,
    );
  let key: KeyObject;
  try {
    key = createPrivateKey(keyPem);
  } catch {
    throw refuse(
      `${keyPath} is not a PEM private key; restore the trust anchor's key there, or make a new trust anchor: meshid init --force --dir ${dir}`,
    );
  }
  const anchor = anchors.find((a) => spki(a.x509.publicKey).equals(spki(key)));
  if (anchor === undefined)
    throw refuse(
      `${keyPath} is the key of none of the trust anchors in ${inputs.trustAnchors} (${listed}); restore the anchor's own key there, or make a new trust anchor: meshid init --force --dir ${dir}`,
    );
  const anchorName = `${shortName(anchor)} (sha256 ${anchor.fingerprint})`;
  if (now >= anchor.notAfter)
    throw refuse(
      `the trust anchor ${anchorName} in ${inputs.trustAnchors} expired at ${new Date(anchor.notAfter).toISOString()}: an issuer under it would verify nowhere. Make a new trust anchor: meshid init --force --dir ${dir} (then restart the CA and proxies)`,
    );
  if (now < anchor.notBefore)
    throw refuse(
      `the trust anchor ${anchorName} in ${inputs.trustAnchors} is not valid before ${new Date(anchor.notBefore).toISOString()}; check this machine's clock`,
    );

  const crtPath = join(inputs.issuerDir, 'tls.crt');
  const oldText = await readOrUndefined(crtPath);
  let old: IssuerFacts | string;
  try {
    const first =
      oldText === undefined ? undefined : parseCertificates(oldText, 'ERR_LOCAL_STATE')[0];
    old = first === undefined ? `${crtPath} holds no certificate` : facts(first);
  } catch (err) {
    old = `${crtPath}: ${(err as Error).message}`;
  }
  const renewed = await createIntermediateCa({
    issuer: { certificateDer: anchor.der, privateKey: key },
    commonName: typeof old === 'string' ? opts.fallbackCommonName : old.name,
    notBefore: now - 60_000,
    notAfter: Math.min(now + ISSUER_LIFETIME_MS, anchor.notAfter),
    pathLength: 0,
  });
  // The key before the certificate: the CA validates them as a pair and waits for both.
  const written = await writeStateFiles(dir, [
    { rel: 'issuer/ca.crt', content: anchor.x509.toString(), mode: 0o644 },
    { rel: 'issuer/tls.key', content: renewed.privateKeyPem, mode: 0o600 },
    { rel: 'issuer/tls.crt', content: renewed.certificatePem, mode: 0o644 },
  ]);
  return {
    anchor: facts(anchor),
    old,
    new: facts(parseCertificates(renewed.certificatePem, 'ERR_LOCAL_STATE')[0]!),
    written,
  };
}

/** The lines `meshid init --renew-issuer` prints. */
export function renewalReport(r: RenewedIssuer, dir: string): string {
  const iso = (ms: number): string => new Date(ms).toISOString();
  const line = (f: IssuerFacts): string =>
    `${f.name}  sha256 ${f.sha256}  valid ${iso(f.notBefore)} to ${iso(f.notAfter)}`;
  return (
    `meshid init: renewed the issuer in ${dir} under the trust anchor ${r.anchor.name} (sha256 ${r.anchor.sha256}, kept)\n` +
    `  old issuer: ${typeof r.old === 'string' ? `unreadable (${r.old})` : line(r.old)}\n` +
    `  new issuer: ${line(r.new)}\n` +
    r.written.map((p) => `  wrote ${p}\n`).join('') +
    `A running "meshid ca --dir ${dir}" loads the new issuer by itself (no restart); proxies keep trusting the same anchor and get leaves from the new issuer at their next renewal.\n`
  );
}
