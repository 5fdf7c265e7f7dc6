/**
 * `meshid local` (what `npm start` runs): the embedded default with no cluster. Initialises the
 * state folder if it is empty, runs the CA on 127.0.0.1, and shows it working: it mints a
 * development token, makes a key and CSR in memory, calls Certify over TLS (verifying the CA
 * against the anchors), and verifies the returned chain.
 */
import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { Logger } from '../core/index.js';
import {
  CertifyClient,
  DEFAULTS,
  caIdentityName,
  createCsr,
  formatAddress,
  identityName,
  loadConfig,
  localStateInputs,
} from '../core/index.js';
import type { RunningCa } from '../identity-ca/index.js';
import { startCa } from './ca.js';
import { initLocalState } from './init.js';
import { processLogger, untilStopSignal } from './runtime.js';
import { localToken } from './token.js';

const NAMING = {
  trustDomain: DEFAULTS.trustDomain,
  controlPlaneNamespace: DEFAULTS.controlPlaneNamespace,
};

/**
 * Calls the CA once for a workload and checks the answer; resolves with a one-line summary.
 *
 * @example
 * ```ts
 * const line = await selfCheck(ca, config.dir, { ns: 'default', sa: 'web' });
 * ```
 */
export async function selfCheck(
  ca: RunningCa,
  dir: string,
  who: { ns: string; sa: string },
): Promise<string> {
  const inputs = localStateInputs(dir);
  const anchorsPem = await readFile(inputs.trustAnchors, 'utf8');
  const identity = identityName({ namespace: who.ns, serviceAccount: who.sa }, NAMING);
  const token = await localToken({
    dir,
    ns: who.ns,
    sa: who.sa,
    ttl: 600_000,
    audience: DEFAULTS.audience,
  });
  // The workload's key is made here, in memory, and never leaves this process.
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const csr = createCsr({ privateKey, commonName: identity, dnsNames: [identity] });
  const client = new CertifyClient({
    address: ca.address,
    serverName: caIdentityName(NAMING),
    anchorsPem,
  });
  try {
    const res = await client.certify({
      identity,
      token: Buffer.from(token),
      certificateSigningRequest: csr,
    });
    const leaf = new X509Certificate(res.leafCertificate);
    const chain = res.intermediateCertificates.map((d) => new X509Certificate(d));
    const anchors = anchorsPem
      .split(/(?=-----BEGIN CERTIFICATE-----)/)
      .map((p) => new X509Certificate(p));
    let cursor = leaf;
    for (const next of [...chain]) {
      if (!cursor.verify(next.publicKey)) throw new Error('returned chain does not verify');
      cursor = next;
    }
    if (!anchors.some((a) => cursor.verify(a.publicKey)))
      throw new Error('returned chain does not reach the anchors');
    return `issued ${identity}\n    ${leaf.subjectAltName}\n    serial ${leaf.serialNumber}, valid until ${new Date(res.validUntil).toISOString()}, chain verified to the trust anchor`;
  } finally {
    client.close();
  }
}

/** `meshid local` */
export async function runLocal(argv: string[]): Promise<number> {
  const { config } = loadConfig('local', { argv, env: process.env });
  const out = (s: string): boolean => process.stdout.write(`${s}\n`);
  const inputs = localStateInputs(config.dir);
  if (!existsSync(inputs.trustAnchors)) {
    await initLocalState({ dir: config.dir, force: false, ...NAMING });
    out(
      `meshid: initialised local state in ${config.dir} (trust anchor, issuer, token-signing key)`,
    );
  }
  const { config: caConfig } = loadConfig('ca', {
    argv: [
      '--dir',
      config.dir,
      '--listen',
      formatAddress(config.listen),
      '--admin',
      formatAddress(config.admin),
      '--workers',
      String(config.workers),
      '--log-level',
      config.logLevel === 'info' ? 'warn' : config.logLevel,
    ],
    env: {},
  });
  const logger: Logger = processLogger(caConfig.logLevel, { service: 'identity-ca' });
  const stopped = untilStopSignal();
  const ca = await startCa(caConfig, logger);
  out(`meshid: CA listening on ${formatAddress(ca.address)} as ${caConfig.identityName}`);
  out(`meshid: admin on http://${formatAddress(ca.adminAddress)} (/metrics, /ready, /live)`);
  for (const who of [
    { ns: 'default', sa: 'web' },
    { ns: 'emojivoto', sa: 'voting' },
  ]) {
    try {
      out(`meshid: self-check: ${await selfCheck(ca, config.dir, who)}`);
    } catch (err) {
      out(`meshid: self-check FAILED: ${(err as Error).message}`);
      await ca.close();
      return 1;
    }
  }
  out(
    `meshid: try it: npx meshid token --dir ${config.dir} --ns default --sa web   (a development token)`,
  );
  out('meshid: Ctrl-C stops the CA');
  await stopped;
  out('meshid: stopping');
  await ca.close();
  return 0;
}
