/**
 * Proof, made inside the running CA, that the crypto under @peculiar/x509 is Node's OpenSSL and
 * that FIPS mode covers it. Through the very crypto object the issuer and anchor checks hand to
 * @peculiar/x509 ({@link x509Crypto}), the probe
 *
 * - builds and verifies a self-signed ECDSA P-256/SHA-256 certificate (must work), and
 * - generates a 2048-bit RSA key with public exponent 3, which only a non-FIPS provider offers
 *   (FIPS 186 requires e ≥ 65537: the OpenSSL FIPS provider answers "pub exponent out of
 *   range"), and signs a certificate with it. (A 1024-bit modulus no longer tells: Node ≥ 22's
 *   WebCrypto refuses it itself, before any provider sees it.)
 *
 * In FIPS mode the second must fail; if it works, something other than the FIPS provider serves
 * the x509 stack (a JavaScript WebCrypto, a global provider) and the CA refuses to start.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import type { webcrypto } from 'node:crypto';
import { x509Crypto } from './material.js';

/** What the probe found. */
interface X509CryptoProbe {
  /** The approved operation (ECDSA P-256 certificate, sign and verify) worked. */
  readonly approvedWorks: boolean;
  /** Its error, when it failed. */
  readonly approvedError?: string;
  /** The non-FIPS operation (an RSA key with e = 3, and a certificate) was refused. */
  readonly nonApprovedRefused: boolean;
  /** Why it was refused (the provider's error), when it was. */
  readonly nonApprovedError?: string;
}

/**
 * Runs the probe at `now` (ms since the epoch, for the throwaway certificates' validity).
 */
export async function probeX509Crypto(now: number): Promise<X509CryptoProbe> {
  const approved = await attempt(async () => {
    const keys = await x509Crypto.subtle.generateKey(
      { name: 'ECDSA', namedCurve: 'P-256' },
      false,
      ['sign', 'verify'],
    );
    const cert = await selfSigned(keys, { name: 'ECDSA', hash: 'SHA-256' }, now);
    if (!(await cert.verify({ signatureOnly: true }, x509Crypto))) {
      throw new Error('the ECDSA P-256 self-signature does not verify');
    }
  });
  const nonApproved = await attempt(async () => {
    const algorithm = {
      name: 'RSASSA-PKCS1-v1_5',
      hash: 'SHA-256',
      modulusLength: 2048,
      publicExponent: new Uint8Array([3]),
    };
    const keys = await x509Crypto.subtle.generateKey(algorithm, false, ['sign', 'verify']);
    await selfSigned(keys, algorithm, now);
  });
  return Object.freeze({
    approvedWorks: approved === undefined,
    ...(approved === undefined ? {} : { approvedError: approved }),
    nonApprovedRefused: nonApproved !== undefined,
    ...(nonApproved === undefined ? {} : { nonApprovedError: nonApproved }),
  });
}

function selfSigned(
  keys: webcrypto.CryptoKeyPair,
  signingAlgorithm: webcrypto.Algorithm | webcrypto.EcdsaParams,
  now: number,
): Promise<x509.X509Certificate> {
  return x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: '01',
      name: 'CN=meshid FIPS probe',
      notBefore: new Date(now - 60_000),
      notAfter: new Date(now + 60_000),
      keys,
      signingAlgorithm,
    },
    x509Crypto,
  );
}

/** Runs `f`; the error text (with OpenSSL's reason, when WebCrypto wraps it) or undefined. */
async function attempt(f: () => Promise<void>): Promise<string | undefined> {
  try {
    await f();
    return undefined;
  } catch (err) {
    if (!(err instanceof Error)) return String(err);
    const cause = err.cause instanceof Error ? `: ${err.cause.message}` : '';
    return `${err.message}${cause}`;
  }
}
