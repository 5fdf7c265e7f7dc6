/**
 * The server's own PKI: a self-signed CA and a serving certificate for 127.0.0.1, ::1, localhost
 * and the in-cluster `kubernetes.default.svc` names. Validity uses the wall clock (TLS peers check
 * it), not the server's injectable clock.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';
import type { webcrypto as WebCrypto } from 'node:crypto';
import { toPem } from '../../../core/index.js';

const crypto: WebCrypto.Crypto = webcrypto;
const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

function serial(): string {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  b[0] = b[0]! & 0x7f;
  return Buffer.from(b).toString('hex');
}

/** PEM material of the server's TLS. */
export interface ServerTls {
  readonly caPem: string;
  readonly certPem: string;
  readonly keyPem: string;
}

/** Generates a CA and a serving certificate valid for a year from now. */
export async function generateServerTls(): Promise<ServerTls> {
  const notBefore = new Date(Date.now() - 3_600_000);
  const notAfter = new Date(Date.now() + 365 * 86_400_000);
  const caKeys = (await crypto.subtle.generateKey(alg, true, [
    'sign',
    'verify',
  ])) as WebCrypto.CryptoKeyPair;
  const ca = await x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: serial(),
      name: 'CN=meshid-test-kube-apiserver-ca',
      notBefore,
      notAfter,
      keys: caKeys,
      signingAlgorithm: alg,
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(
          x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
          true,
        ),
        await x509.SubjectKeyIdentifierExtension.create(caKeys.publicKey, false, crypto),
      ],
    },
    crypto,
  );
  const keys = (await crypto.subtle.generateKey(alg, true, [
    'sign',
    'verify',
  ])) as WebCrypto.CryptoKeyPair;
  const leaf = await x509.X509CertificateGenerator.create(
    {
      serialNumber: serial(),
      subject: 'CN=kube-apiserver',
      issuer: ca.subject,
      notBefore,
      notAfter,
      publicKey: keys.publicKey,
      signingKey: caKeys.privateKey,
      signingAlgorithm: alg,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], false),
        new x509.SubjectAlternativeNameExtension([
          { type: 'ip', value: '127.0.0.1' },
          { type: 'ip', value: '::1' },
          { type: 'dns', value: 'localhost' },
          { type: 'dns', value: 'kubernetes' },
          { type: 'dns', value: 'kubernetes.default' },
          { type: 'dns', value: 'kubernetes.default.svc' },
          { type: 'dns', value: 'kubernetes.default.svc.cluster.local' },
        ]),
        await x509.AuthorityKeyIdentifierExtension.create(caKeys.publicKey, false, crypto),
      ],
    },
    crypto,
  );
  const pkcs8 = await crypto.subtle.exportKey('pkcs8', keys.privateKey);
  return {
    caPem: ca.toString('pem') + '\n',
    certPem: leaf.toString('pem') + '\n',
    keyPem: toPem(new Uint8Array(pkcs8), 'PRIVATE KEY'),
  };
}
