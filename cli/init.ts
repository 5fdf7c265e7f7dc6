/**
 * `meshid init`: local-mode key material.
 *
 *   D/trust-anchors.pem               the root (trust anchor) certificate
 *   D/issuer/{tls.crt,tls.key,ca.crt} the issuer, laid out like a kubernetes.io/tls Secret
 *   D/token-signing/{key.pem,jwks.json} the development token-signing key and its JWKS
 *
 * The root's private key is used once, to sign the issuer, and never written: nothing local
 * can mint another issuer under this anchor. Rotating locally means `meshid init --force`.
 */
import { existsSync } from 'node:fs';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { MeshidError, loadConfig, localStateInputs, systemClock } from '../core/index.js';
import { createIntermediateCa, createRootCa } from '../core/pki.js';
import { generateTokenSigningKey } from '../identity-ca/index.js';
import { startCrypto } from './runtime.js';
import { checkStateDir } from './state-dir.js';

const DAY = 86_400_000;
/** Local material lifetimes: long enough not to expire under a developer. */
export const LOCAL_ROOT_LIFETIME_MS = 3650 * DAY;
export const LOCAL_ISSUER_LIFETIME_MS = 365 * DAY;

/** The files init writes, relative to the state folder. */
const LOCAL_STATE_FILES = [
  'trust-anchors.pem',
  'issuer/tls.crt',
  'issuer/tls.key',
  'issuer/ca.crt',
  'token-signing/key.pem',
  'token-signing/jwks.json',
] as const;

/**
 * Writes fresh local material into `dir`; refuses to overwrite unless `force`, and refuses a
 * folder others could change (cli/state-dir.ts), before writing anything.
 */
export async function initLocalState(opts: {
  dir: string;
  force: boolean;
  trustDomain: string;
  controlPlaneNamespace: string;
  now?: number;
}): Promise<string[]> {
  await checkStateDir(opts.dir, { create: true });
  const existing = LOCAL_STATE_FILES.map((f) => join(opts.dir, f)).filter((p) => existsSync(p));
  if (existing.length > 0 && !opts.force) {
    throw new MeshidError(
      'ERR_LOCAL_STATE',
      `refusing to overwrite existing material (${existing.join(', ')}); pass --force to replace it`,
    );
  }
  const now = opts.now ?? systemClock.now();
  const suffix = `${opts.controlPlaneNamespace}.${opts.trustDomain}`;
  const root = await createRootCa({
    commonName: `root.${suffix}`,
    notBefore: now - 60_000,
    notAfter: now + LOCAL_ROOT_LIFETIME_MS,
  });
  const issuer = await createIntermediateCa({
    issuer: root,
    commonName: `identity.${suffix}`,
    notBefore: now - 60_000,
    notAfter: now + LOCAL_ISSUER_LIFETIME_MS,
    pathLength: 0,
  });
  const signing = await generateTokenSigningKey();
  const files: [string, string, number][] = [
    ['trust-anchors.pem', root.certificatePem, 0o644],
    ['issuer/tls.crt', issuer.certificatePem, 0o644],
    ['issuer/tls.key', issuer.privateKeyPem, 0o600],
    ['issuer/ca.crt', root.certificatePem, 0o644],
    ['token-signing/key.pem', signing.privateKeyPem, 0o600],
    ['token-signing/jwks.json', `${JSON.stringify(signing.jwks, null, 2)}\n`, 0o644],
  ];
  const written: string[] = [];
  for (const [rel, content, mode] of files) {
    const path = join(opts.dir, rel);
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    // Write-then-rename so a watcher (a running CA) never reads half a file.
    const tmp = `${path}.tmp-${process.pid}`;
    await writeFile(tmp, content, { mode });
    await rename(tmp, path);
    written.push(path);
  }
  return written;
}

/** `meshid init` */
export async function runInit(argv: string[]): Promise<number> {
  const { config } = loadConfig('init', { argv, env: process.env });
  startCrypto(config);
  const written = await initLocalState(config);
  const inputs = localStateInputs(config.dir);
  process.stdout.write(
    `meshid init: wrote a new trust anchor, issuer and token-signing key in ${config.dir}\n` +
      written.map((p) => `  ${p}\n`).join('') +
      `Run the CA with: meshid ca --dir ${config.dir}\n` +
      `(trust anchors: ${inputs.trustAnchors}; the root's private key was not kept)\n`,
  );
  return 0;
}
