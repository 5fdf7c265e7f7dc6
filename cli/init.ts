/**
 * `meshid init`: local-mode key material.
 *
 *   D/trust-anchors.pem               the root (trust anchor) certificate
 *   D/issuer/{tls.crt,tls.key,ca.crt} the issuer, laid out like a kubernetes.io/tls Secret
 *   D/token-signing/{key.pem,jwks.json} the development token-signing key and its JWKS
 *   D/root/tls.key                    the trust anchor's private key (0600)
 *
 * The root's key is kept so that `meshid init --renew-issuer` (cli/init-renew.ts) can issue a
 * new issuer under the same anchor when the issuer nears its end, without a new root that every
 * proxy would have to learn. It is as private as the issuer key beside it, and anyone who
 * must not be able to mint another issuer deletes it (renewal then refuses, naming the file).
 * A new root means `meshid init --force` or a rotation (`meshid trust rotate`).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { MeshidError, loadConfig, localStateInputs, systemClock } from '../core/index.js';
import { createIntermediateCa, createRootCa } from '../core/pki.js';
import { generateTokenSigningKey } from '../identity-ca/index.js';
import { renewLocalIssuer, renewalReport } from './init-renew.js';
import { startCrypto } from './runtime.js';
import { LOCAL_ROOT_KEY, checkStateDir, writeStateFiles } from './state-dir.js';

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
  'root/tls.key',
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
  // Write-then-rename (writeStateFiles) so a watcher (a running CA) never reads half a file.
  return writeStateFiles(opts.dir, [
    { rel: 'trust-anchors.pem', content: root.certificatePem, mode: 0o644 },
    { rel: 'issuer/tls.crt', content: issuer.certificatePem, mode: 0o644 },
    { rel: 'issuer/tls.key', content: issuer.privateKeyPem, mode: 0o600 },
    { rel: 'issuer/ca.crt', content: root.certificatePem, mode: 0o644 },
    { rel: 'token-signing/key.pem', content: signing.privateKeyPem, mode: 0o600 },
    {
      rel: 'token-signing/jwks.json',
      content: `${JSON.stringify(signing.jwks, null, 2)}\n`,
      mode: 0o644,
    },
    { rel: LOCAL_ROOT_KEY, content: root.privateKeyPem, mode: 0o600 },
  ]);
}

/** `meshid init` */
export async function runInit(argv: string[]): Promise<number> {
  const { config, given } = loadConfig('init', { argv, env: process.env });
  if (config.renewIssuer) {
    const contradicting = (['force', 'trustDomain', 'controlPlaneNamespace'] as const).filter((k) =>
      given.has(k),
    );
    if (contradicting.length > 0) {
      const flag = (k: string): string => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
      throw new MeshidError(
        'ERR_CONFIG_INVALID',
        `--renew-issuer keeps the trust anchor and the issuer's name, so it cannot be combined with ${contradicting.map(flag).join(', ')}: ${contradicting.includes('force') ? '--force writes a new trust anchor (every proxy must then learn it)' : "the naming is the existing issuer's"}; give --renew-issuer alone, or "meshid init --force --dir ${config.dir}" for a new trust anchor`,
      );
    }
    startCrypto(config);
    const renewed = await renewLocalIssuer({
      dir: config.dir,
      now: systemClock.now(),
      fallbackCommonName: `identity.${config.controlPlaneNamespace}.${config.trustDomain}`,
    });
    process.stdout.write(renewalReport(renewed, config.dir));
    return 0;
  }
  startCrypto(config);
  const written = await initLocalState(config);
  const inputs = localStateInputs(config.dir);
  process.stdout.write(
    `meshid init: wrote a new trust anchor, issuer and token-signing key in ${config.dir}\n` +
      written.map((p) => `  ${p}\n`).join('') +
      `Run the CA with: meshid ca --dir ${config.dir}\n` +
      `(trust anchors: ${inputs.trustAnchors}; its private key is kept in ${join(config.dir, LOCAL_ROOT_KEY)} to renew the issuer: meshid init --renew-issuer --dir ${config.dir})\n`,
  );
  return 0;
}
