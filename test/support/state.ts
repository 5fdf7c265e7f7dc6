/**
 * Test PKI and state folders laid out as the CA reads them, with the root kept in memory so
 * tests can mint new issuers under it. The issuer folder is written the way the kubelet mounts
 * a Secret: files are symlinks through `..data`, which is swapped atomically on every update.
 */
import { mkdtemp, mkdir, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { systemClock } from '../../core/index.js';
import { ManualClock } from '../../core/clock.js';
import { createIntermediateCa, createRootCa } from '../../core/pki.js';
import { generateTokenSigningKey, mintDevelopmentToken } from '../../identity-ca/index.js';

export type Ca = Awaited<ReturnType<typeof createRootCa>>;
export const HOUR = 3_600_000;
export const DAY = 24 * HOUR;
export const TOKEN_ISSUER = 'https://kubernetes.default.svc.cluster.local';

/** A new temporary folder holding `anchors.pem`: one fresh root, valid from an hour ago for a year. */
export interface AnchorsFile {
  readonly dir: string;
  /** `<dir>/anchors.pem`, as `--trust-anchors` takes it. */
  readonly file: string;
  readonly root: Ca;
  remove(): Promise<void>;
}

/** Makes an {@link AnchorsFile} in a folder named after `prefix`. */
export async function writeAnchorsFile(prefix: string): Promise<AnchorsFile> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  const now = systemClock.now();
  const root = await createRootCa({
    commonName: 'root.linkerd.cluster.local',
    notBefore: now - HOUR,
    notAfter: now + 365 * DAY,
  });
  const file = join(dir, 'anchors.pem');
  await writeFile(file, root.certificatePem);
  return { dir, file, root, remove: () => rm(dir, { recursive: true, force: true }) };
}

let generation = 0;

/** Writes issuer material into `issuerDir` by a kubelet-style `..data` symlink swap. */
export async function writeIssuerDir(
  issuerDir: string,
  files: { 'tls.crt': string; 'tls.key': string; 'ca.crt'?: string },
): Promise<void> {
  await mkdir(issuerDir, { recursive: true });
  const stamp = `..${Date.now()}_${process.pid}_${generation++}`;
  const target = join(issuerDir, stamp);
  await mkdir(target);
  for (const [name, content] of Object.entries(files))
    await writeFile(join(target, name), content, { mode: 0o600 });
  await symlink(stamp, join(issuerDir, '..data_tmp'));
  await rename(join(issuerDir, '..data_tmp'), join(issuerDir, '..data'));
  for (const name of ['tls.crt', 'tls.key', 'ca.crt']) {
    await symlink(join('..data', name), join(issuerDir, name)).catch(() => undefined);
  }
}

/** A state folder with a root, an issuer, a token-signing key and helpers. */
export interface TestState {
  readonly dir: string;
  readonly root: Ca;
  readonly issuer: Ca;
  readonly anchorsFile: string;
  readonly issuerDir: string;
  readonly jwksFile: string;
  readonly caArgs: string[];
  newIssuer(opts?: { root?: Ca; notAfter?: number; commonName?: string }): Promise<Ca>;
  installIssuer(issuer: Ca, opts?: { root?: Ca; key?: string }): Promise<void>;
  token(
    ns: string,
    sa: string,
    opts?: { ttlMs?: number; audience?: string; issuer?: string; issuedAgoMs?: number },
  ): Promise<string>;
  cleanup(): Promise<void>;
}

/** Writes issuer files as plain files, each to a temporary name and renamed (as meshid init does). */
async function writeIssuerFiles(
  issuerDir: string,
  files: { 'tls.crt': string; 'tls.key': string; 'ca.crt'?: string },
): Promise<void> {
  await mkdir(issuerDir, { recursive: true });
  for (const name of ['ca.crt', 'tls.key', 'tls.crt'] as const) {
    const content = files[name];
    if (content === undefined) continue;
    const tmp = join(issuerDir, `.${name}.tmp-${generation++}`);
    await writeFile(tmp, content, { mode: 0o600 });
    await rename(tmp, join(issuerDir, name));
  }
}

/**
 * Makes a fresh state folder. `caArgs` runs `meshid ca` against it with the token issuer a
 * cluster would use. The issuer folder is kubelet-style (`..data` links) unless `plainFiles`:
 * then it is laid out as `meshid init` writes it, so the folder passes the state folder's rule
 * (cli/state-dir.ts, no links) and `meshid check --dir` finds it all green.
 */
export async function makeTestState(opts: { plainFiles?: boolean } = {}): Promise<TestState> {
  const dir = await mkdtemp(join(tmpdir(), 'meshid-test-'));
  const now = systemClock.now();
  const root = await createRootCa({
    commonName: 'root.linkerd.cluster.local',
    notBefore: now - HOUR,
    notAfter: now + 365 * DAY,
  });
  const newIssuer = (
    opts: { root?: Ca; notAfter?: number; commonName?: string } = {},
  ): Promise<Ca> =>
    createIntermediateCa({
      issuer: opts.root ?? root,
      commonName: opts.commonName ?? 'identity.linkerd.cluster.local',
      notBefore: now - HOUR,
      notAfter: opts.notAfter ?? now + 30 * DAY,
      pathLength: 0,
    });
  const issuer = await newIssuer();
  const signing = await generateTokenSigningKey();
  const anchorsFile = join(dir, 'trust-anchors.pem');
  const issuerDir = join(dir, 'issuer');
  const jwksFile = join(dir, 'token-signing', 'jwks.json');
  await writeFile(anchorsFile, root.certificatePem);
  await mkdir(join(dir, 'token-signing'));
  await writeFile(jwksFile, JSON.stringify(signing.jwks));
  await writeFile(join(dir, 'token-signing', 'key.pem'), signing.privateKeyPem, { mode: 0o600 });
  const write = opts.plainFiles === true ? writeIssuerFiles : writeIssuerDir;
  const installIssuer = async (i: Ca, o: { root?: Ca; key?: string } = {}): Promise<void> =>
    write(issuerDir, {
      'tls.crt': i.certificatePem,
      'tls.key': o.key ?? i.privateKeyPem,
      'ca.crt': (o.root ?? root).certificatePem,
    });
  await installIssuer(issuer);
  return {
    dir,
    root,
    issuer,
    anchorsFile,
    issuerDir,
    jwksFile,
    caArgs: [
      '--trust-anchors',
      anchorsFile,
      '--issuer-dir',
      issuerDir,
      '--jwks',
      jwksFile,
      '--token-issuer',
      TOKEN_ISSUER,
    ],
    newIssuer,
    installIssuer,
    token: (ns, sa, opts = {}) =>
      mintDevelopmentToken({
        privateKeyPem: signing.privateKeyPem,
        kid: signing.kid,
        issuer: opts.issuer ?? TOKEN_ISSUER,
        audience: opts.audience ?? 'identity.l5d.io',
        namespace: ns,
        serviceAccount: sa,
        ttlMs: opts.ttlMs ?? HOUR,
        clock: new ManualClock(systemClock.now() - (opts.issuedAgoMs ?? 0)),
      }),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

/** The identity name of `<sa>.<ns>` under the default naming. */
export function idOf(ns: string, sa: string): string {
  return `${sa}.${ns}.serviceaccount.identity.linkerd.cluster.local`;
}

export const CA_IDENTITY = 'linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local';
