/**
 * The per-request X.509 hot path, measured: parsing and verifying a CSR and signing a leaf with
 * meshid's own DER code and node:crypto, against @peculiar/x509's generic builder doing the same
 * work for the same leaf profile.
 *
 * Standalone: `node --import tsx test/bench/hot-path.ts` prints a table. As a module,
 * {@link measureHotPath} returns the numbers (median µs per operation over 5 rounds).
 */
import 'reflect-metadata';
import { generateKeyPairSync, KeyObject, createPublicKey } from 'node:crypto';
import type { webcrypto as WebCrypto } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import * as x509 from '@peculiar/x509';
import { createCsr, parseCsr, systemRandom, verifyCsrSignature } from '../../core/index.js';
import { checkCsrPolicy } from '../../identity-ca/issuer/csr-policy.js';
import { LeafSigner, randomSerial, type LeafFields } from '../../identity-ca/issuer/leaf.js';
import {
  ECDSA_P256_SHA256,
  peculiarLeaf,
  webCrypto,
} from '../unit/identity-ca/fixtures/leaf-profile.js';

const ROUNDS = 5;
const IDENTITY = 'web.emojivoto.serviceaccount.identity.linkerd.cluster.local';
const SPIFFE = 'spiffe://cluster.local/ns/emojivoto/sa/web';

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** Median µs per call of `fn` over ROUNDS rounds of `n` calls, after one warm-up round. */
function timeSync(n: number, fn: () => unknown): number {
  const rounds: number[] = [];
  for (let r = 0; r <= ROUNDS; r++) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < n; i++) fn();
    const us = Number(process.hrtime.bigint() - start) / 1000 / n;
    if (r > 0) rounds.push(us);
  }
  return median(rounds);
}

async function timeAsync(n: number, fn: () => Promise<unknown>): Promise<number> {
  const rounds: number[] = [];
  for (let r = 0; r <= ROUNDS; r++) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < n; i++) await fn();
    const us = Number(process.hrtime.bigint() - start) / 1000 / n;
    if (r > 0) rounds.push(us);
  }
  return median(rounds);
}

/**
 * Measures the hot path. Keys, the issuer and the request are made once beforehand; every
 * number is the median over 5 rounds of µs per operation.
 *
 * @example
 * ```ts
 * const t = await measureHotPath();
 * t['LeafSigner.sign']; // e.g. 45
 * ```
 */
export async function measureHotPath(): Promise<Record<string, number>> {
  const issuerKeys = (await webCrypto.subtle.generateKey(ECDSA_P256_SHA256, true, [
    'sign',
    'verify',
  ])) as WebCrypto.CryptoKeyPair;
  const issuer = await x509.X509CertificateGenerator.createSelfSigned(
    {
      name: 'CN=identity.linkerd.cluster.local',
      keys: issuerKeys,
      signingAlgorithm: ECDSA_P256_SHA256,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true),
        await x509.SubjectKeyIdentifierExtension.create(issuerKeys.publicKey, false, webCrypto),
      ],
    },
    webCrypto,
  );
  const signer = new LeafSigner(
    new Uint8Array(issuer.rawData),
    KeyObject.from(issuerKeys.privateKey),
  );

  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const csrDer = createCsr({ privateKey, commonName: IDENTITY, dnsNames: [IDENTITY] });
  const csr = parseCsr(csrDer);
  const now = Date.now();
  const fields = (): LeafFields => ({
    spki: csr.publicKey.spki,
    dnsName: IDENTITY,
    uri: SPIFFE,
    serial: randomSerial(systemRandom),
    notBefore: now - 20_000,
    notAfter: now + 86_400_000,
  });
  const peculiarFields = fields();
  const spki = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });

  const results: Record<string, number> = {};
  results['parseCsr'] = timeSync(20_000, () => parseCsr(csrDer));
  results['verifyCsrSignature (key import + verify)'] = await timeAsync(2_000, () =>
    verifyCsrSignature(csr),
  );
  results['checkCsrPolicy (incl. verify)'] = await timeAsync(2_000, () =>
    checkCsrPolicy(csr, IDENTITY),
  );
  results['LeafSigner.sign'] = timeSync(2_000, () => signer.sign(fields()));
  results['hot path: parse + policy + sign'] = await timeAsync(2_000, async () => {
    const c = parseCsr(csrDer);
    await checkCsrPolicy(c, IDENTITY);
    return signer.sign(fields());
  });
  results['@peculiar/x509 CSR parse + verify'] = await timeAsync(300, async () => {
    const theirs = new x509.Pkcs10CertificateRequest(csrDer);
    return theirs.verify(webCrypto);
  });
  results['@peculiar/x509 X509CertificateGenerator.create'] = await timeAsync(300, () =>
    peculiarLeaf(issuer, issuerKeys.privateKey, { ...peculiarFields, spki }),
  );
  return results;
}

function table(results: Record<string, number>): string {
  const width = Math.max(...Object.keys(results).map((k) => k.length));
  const lines = Object.entries(results).map(([name, us]) => {
    const perSecond = Math.round(1e6 / us);
    return `${name.padEnd(width)}  ${us.toFixed(1).padStart(8)} µs/op  ${String(perSecond).padStart(8)} op/s`;
  });
  return [`${'operation'.padEnd(width)}  ${'median'.padStart(8)}`, ...lines].join('\n') + '\n';
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const results = await measureHotPath();
  process.stdout.write(`hot path, median of ${ROUNDS} rounds (Node ${process.version})\n`);
  process.stdout.write(table(results));
}
