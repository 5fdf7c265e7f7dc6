/**
 * Workload certificates for proxy tests, minted the way the CA mints them (core's PKI helpers for
 * the anchor and issuer, identity-ca's LeafSigner for the leaves), valid against the real clock
 * because the TLS stacks under test (node, openssl, curl) check validity against it.
 */
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import type { ConnectionOptions, TLSSocket } from 'node:tls';
import { identityName, spiffeId, systemRandom, toPem } from '../../core/index.js';
import { createIntermediateCa, createRootCa } from '../../core/pki.js';
import type { GeneratedCa } from '../../core/pki.js';
import { LeafSigner, randomSerial } from '../../identity-ca/issuer/leaf.js';
import type { WorkloadCertificate } from '../../proxy/index.js';

export const HOUR = 3_600_000;
export const DAY = 24 * HOUR;
export const NAMING = { trustDomain: 'cluster.local', controlPlaneNamespace: 'linkerd' } as const;

/** The identity name of `sa` in `ns` under the default naming. */
export function workloadId(ns: string, sa: string): string {
  return identityName({ namespace: ns, serviceAccount: sa }, NAMING);
}

/** One trust anchor, one issuer under it, and a way to mint workload leaves. */
export interface WorkloadPki {
  readonly root: GeneratedCa;
  readonly issuer: GeneratedCa;
  /** The anchor bundle: the root alone. */
  readonly anchorsPem: string;
  /**
   * A leaf for `identity` (DNS SAN, then the SPIFFE URI SAN), chained to the issuer. Valid from an
   * hour ago for a day unless told otherwise.
   */
  workload(
    identity: string,
    validity?: { notBefore?: number; notAfter?: number },
  ): WorkloadCertificate;
}

/** Makes a fresh anchor and issuer (different key material every call). */
export async function createWorkloadPki(
  rootCommonName = 'root.linkerd.cluster.local',
): Promise<WorkloadPki> {
  const now = Date.now();
  const root = await createRootCa({
    commonName: rootCommonName,
    notBefore: now - DAY,
    notAfter: now + 365 * DAY,
  });
  const issuer = await createIntermediateCa({
    issuer: root,
    commonName: 'identity.linkerd.cluster.local',
    notBefore: now - DAY,
    notAfter: now + 30 * DAY,
  });
  return {
    root,
    issuer,
    anchorsPem: root.certificatePem,
    workload: workloadSigner(issuer),
  };
}

/**
 * Mints workload leaves under `issuer` the way the CA does: a fresh P-256 key, the DNS identity
 * then the SPIFFE URI SAN. Valid from an hour ago for a day unless told otherwise.
 */
export function workloadSigner(issuer: GeneratedCa): WorkloadPki['workload'] {
  const signer = new LeafSigner(issuer.certificateDer, issuer.privateKey);
  return (identity, validity = {}) => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const [sa, ns] = identity.split('.');
    const leaf = signer.sign({
      spki: publicKey.export({ type: 'spki', format: 'der' }),
      dnsName: identity,
      uri: spiffeId({ namespace: ns ?? 'default', serviceAccount: sa ?? 'default' }, NAMING),
      serial: randomSerial(systemRandom),
      notBefore: validity.notBefore ?? Date.now() - HOUR,
      notAfter: validity.notAfter ?? Date.now() + DAY,
    });
    const x509 = new X509Certificate(leaf);
    return {
      identity,
      keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
      certChainPem: toPem(leaf, 'CERTIFICATE') + issuer.certificatePem,
      notBefore: Date.parse(x509.validFrom),
      notAfter: Date.parse(x509.validTo),
      serialHex: x509.serialNumber,
    };
  };
}

/** PEM files of a workload certificate, for openssl and curl. */
export interface WorkloadFiles {
  /** Leaf then issuer: what `curl --cert` sends. */
  readonly chainFile: string;
  /** The leaf alone (`openssl s_client -cert`). */
  readonly leafFile: string;
  /** The issuer alone (`openssl s_client -cert_chain`). */
  readonly issuerFile: string;
  readonly keyFile: string;
}

/** A temporary folder for PEM files; `remove()` deletes it. */
export interface PemDir {
  readonly dir: string;
  write(name: string, cert: WorkloadCertificate): Promise<WorkloadFiles>;
  writeText(name: string, text: string): Promise<string>;
  remove(): Promise<void>;
}

/** Makes a temporary folder for PEM files. */
export async function pemDir(): Promise<PemDir> {
  const dir = await mkdtemp(join(tmpdir(), 'meshid-proxy-'));
  const writeText = async (name: string, text: string): Promise<string> => {
    const file = join(dir, name);
    await writeFile(file, text, { mode: 0o600 });
    return file;
  };
  return {
    dir,
    writeText,
    async write(name, cert) {
      const blocks =
        cert.certChainPem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----\n?/g) ??
        [];
      return {
        chainFile: await writeText(`${name}-chain.pem`, cert.certChainPem),
        leafFile: await writeText(`${name}-leaf.pem`, blocks[0] ?? ''),
        issuerFile: await writeText(`${name}-issuer.pem`, blocks.slice(1).join('')),
        keyFile: await writeText(`${name}-key.pem`, cert.keyPem),
      };
    },
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}

/**
 * A TLS client to 127.0.0.1:`port` that trusts `anchorsPem`, names `servername`, and presents
 * `cert` (or no certificate); resolves once the handshake is done. The caller destroys it.
 */
export async function connectTls(
  port: number,
  opts: {
    servername: string;
    anchorsPem: string;
    cert?: WorkloadCertificate | undefined;
    extra?: ConnectionOptions;
  },
): Promise<TLSSocket> {
  const socket = tlsConnect({
    host: '127.0.0.1',
    port,
    servername: opts.servername,
    ca: opts.anchorsPem,
    ...(opts.cert !== undefined ? { key: opts.cert.keyPem, cert: opts.cert.certChainPem } : {}),
    ...opts.extra,
  });
  try {
    await once(socket, 'secureConnect');
  } catch (err) {
    socket.destroy();
    throw err;
  }
  return socket;
}

/** Reads a socket until it closes; the bytes as latin1 text. */
export async function readAll(socket: Socket): Promise<string> {
  const chunks: Buffer[] = [];
  socket.on('data', (d: Buffer) => chunks.push(d));
  await once(socket, 'close');
  return Buffer.concat(chunks).toString('latin1');
}
