/**
 * Test PKI for the outbound proxy: a trust domain (root → issuer) that mints workload leaves the
 * way meshid's CA does (LeafSigner), plus peers to talk to: `openssl s_server` as an
 * independent TLS 1.3 server, and small helpers around ports and child processes.
 */
import { generateKeyPairSync } from 'node:crypto';
import { X509Certificate } from 'node:crypto';
import { spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './proxy-process.js';
import { systemRandom, toPem } from '../../core/index.js';
import { createIntermediateCa, createRootCa } from '../../core/pki.js';
import type { GeneratedCa } from '../../core/pki.js';
import { LeafSigner, randomSerial } from '../../identity-ca/issuer/leaf.js';
import type { WorkloadCertificate } from '../../proxy/index.js';

const HOUR = 3_600_000;
const PEM_BLOCK = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----\n?/g;

/** The first certificate of a PEM chain (the leaf). */
export function leafPemOf(chainPem: string): string {
  return (chainPem.match(PEM_BLOCK) ?? [])[0] ?? '';
}

/** The identity of `<sa>` in `<ns>` under Linkerd's default naming. */
export function workloadId(ns: string, sa: string): string {
  return `${sa}.${ns}.serviceaccount.identity.linkerd.cluster.local`;
}

/** A root and an issuer under it; `leaf()` mints workload certificates. */
export interface TrustDomain {
  readonly root: GeneratedCa;
  readonly issuer: GeneratedCa;
  readonly anchorsPem: string;
  leaf(identity: string, opts?: { notAfter?: number }): WorkloadCertificate;
}

/** Makes a trust domain whose root is named `rootName`. */
export async function makeTrustDomain(
  rootName = 'root.linkerd.cluster.local',
): Promise<TrustDomain> {
  const now = Date.now();
  const root = await createRootCa({
    commonName: rootName,
    notBefore: now - HOUR,
    notAfter: now + 365 * 24 * HOUR,
  });
  const issuer = await createIntermediateCa({
    issuer: root,
    commonName: `identity.${rootName}`,
    notBefore: now - HOUR,
    notAfter: now + 48 * HOUR,
    pathLength: 0,
  });
  return {
    root,
    issuer,
    anchorsPem: root.certificatePem,
    leaf: (identity, opts = {}) => mintLeaf(issuer, identity, opts),
  };
}

/**
 * A workload certificate for `identity` signed by `issuer` the way meshid's CA signs (LeafSigner),
 * its key made here: for peers that must present a mesh-valid certificate of their choosing.
 */
export function mintLeaf(
  issuer: GeneratedCa,
  identity: string,
  opts: { notAfter?: number } = {},
): WorkloadCertificate {
  const signer = new LeafSigner(issuer.certificateDer, issuer.privateKey);
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const serial = randomSerial(systemRandom);
  const notBefore = Date.now() - 20_000;
  const notAfter = opts.notAfter ?? Date.now() + 24 * HOUR;
  const der = signer.sign({
    spki: publicKey.export({ type: 'spki', format: 'der' }),
    dnsName: identity,
    uri: `spiffe://cluster.local/ns/test/sa/${identity.split('.')[0] ?? 'x'}`,
    serial,
    notBefore,
    notAfter,
  });
  const leafPem = toPem(der, 'CERTIFICATE');
  return {
    identity,
    keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    certChainPem: leafPem + issuer.certificatePem,
    notBefore,
    notAfter,
    serialHex: new X509Certificate(der).serialNumber.toLowerCase(),
  };
}

/** A fresh temporary directory. */
export function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'meshid-outbound-'));
}

export { freePort };

/** A running `openssl s_server` and everything it printed. */
export interface OpensslServer {
  readonly port: number;
  readonly process: ChildProcessWithoutNullStreams;
  output(): string;
  /** Writes to s_server's stdin, which it sends to the connected client. */
  send(text: string): void;
  /** Resolves when the output contains `text` (rejects if the process exits first). */
  waitFor(text: string | RegExp): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Starts `openssl s_server` on 127.0.0.1 serving `cert` (a workload certificate, leaf then
 * issuer), requiring a client certificate that verifies against `anchorsPem`
 * (`-Verify 1 -verify_return_error`). What the client sends appears in `output()`, after the
 * client certificate's PEM; what is `send()` goes to the client. Resolves once it prints ACCEPT.
 */
export async function startOpensslServer(
  dir: string,
  name: string,
  cert: WorkloadCertificate,
  anchorsPem: string,
  extraArgs: readonly string[] = ['-tls1_3'],
): Promise<OpensslServer> {
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  const chainFile = join(dir, `${name}-chain.crt`);
  const caFile = join(dir, `${name}-anchors.crt`);
  // s_server's -cert takes only the first certificate of a file; the issuer goes in -cert_chain.
  const [leafPem, ...chainPems] = cert.certChainPem.match(PEM_BLOCK) ?? [];
  await writeFile(certFile, leafPem ?? '');
  await writeFile(chainFile, chainPems.join(''));
  await writeFile(keyFile, cert.keyPem, { mode: 0o600 });
  await writeFile(caFile, anchorsPem);
  const port = await freePort();
  const child = spawn(
    'openssl',
    [
      's_server',
      '-accept',
      `127.0.0.1:${port}`,
      '-cert',
      certFile,
      '-cert_chain',
      chainFile,
      '-key',
      keyFile,
      '-Verify',
      '1',
      '-verify_return_error',
      '-CAfile',
      caFile,
      ...extraArgs,
    ],
    { stdio: 'pipe' },
  );
  let out = '';
  const waiters = new Set<() => void>();
  const onData = (b: Buffer): void => {
    out += b.toString('latin1');
    for (const w of [...waiters]) w();
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  let exited = false;
  child.once('exit', () => {
    exited = true;
    for (const w of [...waiters]) w();
  });
  const waitFor = (text: string | RegExp): Promise<void> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        const hit = typeof text === 'string' ? out.includes(text) : text.test(out);
        if (hit) {
          waiters.delete(check);
          resolve();
        } else if (exited) {
          waiters.delete(check);
          reject(new Error(`openssl s_server exited before printing ${String(text)}:\n${out}`));
        }
      };
      waiters.add(check);
      check();
    });
  await waitFor('ACCEPT');
  return {
    port,
    process: child,
    output: () => out,
    send: (text) => {
      child.stdin.write(text);
    },
    waitFor,
    stop: async () => {
      if (exited) return;
      const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      await gone;
    },
  };
}
