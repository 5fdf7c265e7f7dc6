/**
 * An independent judge of Certify requests for the fuzzer: it decodes the frame and the message
 * with protobufjs (loading identity.proto) and the CSR with @peculiar/x509 and WebCrypto, none of
 * which the CA uses on this path, and says whether the CA may issue. A leaf the CA issued must
 * be for exactly what this judge read: the identity, and the public key of the CSR.
 */
import { webcrypto, X509Certificate } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import * as x509 from '@peculiar/x509';
import protobuf from 'protobufjs';

const PROTO = fileURLToPath(new URL('../../identity-ca/proto/identity.proto', import.meta.url));

/** What the judge read from a valid request. */
export interface Judged {
  readonly identity: string;
  readonly spki: Buffer;
}

/** Loads the judge; `validToken` is the one token that authenticates `identity`. */
export async function loadCertifyOracle(opts: {
  readonly identity: string;
  readonly validToken: Buffer;
}): Promise<{
  /** Why the request must be refused, or what it validly asks for. */
  judge(body: Buffer): Promise<{ valid: true; judged: Judged } | { valid: false; why: string }>;
  /** Problems with an issued leaf against what the judge read (empty when it is right). */
  checkLeaf(leafDer: Uint8Array, judged: Judged): string[];
}> {
  const root = new protobuf.Root();
  root.resolvePath = (origin, target) =>
    target.startsWith('google/protobuf/')
      ? fileURLToPath(new URL(`../../node_modules/protobufjs/${target}`, import.meta.url))
      : protobuf.util.path.resolve(origin, target);
  await root.load(PROTO, { keepCase: true });
  const Req = root.lookupType('io.linkerd.proxy.identity.CertifyRequest');

  async function judge(
    body: Buffer,
  ): Promise<{ valid: true; judged: Judged } | { valid: false; why: string }> {
    const no = (why: string): { valid: false; why: string } => ({ valid: false, why });
    if (body.length < 5) return no('frame shorter than its prefix');
    if (body[0] !== 0) return no('frame flag is not 0');
    if (body.readUInt32BE(1) !== body.length - 5) return no('frame length is not the message');
    let msg: { identity?: string; token?: Uint8Array; certificate_signing_request?: Uint8Array };
    try {
      msg = Req.toObject(Req.decode(body.subarray(5))) as typeof msg;
    } catch (err) {
      return no(`protobuf: ${(err as Error).message}`);
    }
    if (msg.identity !== opts.identity) return no('identity is not the token identity');
    if (msg.token === undefined || !Buffer.from(msg.token).equals(opts.validToken))
      return no('token is not the valid token');
    const der = msg.certificate_signing_request;
    if (der === undefined || der.length === 0) return no('no CSR');
    let csr: x509.Pkcs10CertificateRequest;
    try {
      csr = new x509.Pkcs10CertificateRequest(Buffer.from(der));
    } catch (err) {
      return no(`CSR: ${(err as Error).message}`);
    }
    // DER only: what the judge re-encodes must be the bytes sent (rules out BER leniency).
    if (!Buffer.from(csr.rawData).equals(Buffer.from(der))) return no('CSR is not canonical DER');
    const alg = csr.publicKey.algorithm as { name?: string; namedCurve?: string };
    if (alg.name !== 'ECDSA' || alg.namedCurve !== 'P-256') return no('key is not ECDSA P-256');
    try {
      if (!(await csr.verify(webcrypto as unknown as Parameters<typeof csr.verify>[0])))
        return no('signature');
    } catch {
      return no('signature cannot be checked');
    }
    const sans = csr.extensions.filter((e) => e.type === '2.5.29.17');
    if (sans.length !== 1) return no(`${sans.length} SAN extensions`);
    const names = new x509.SubjectAlternativeNameExtension(sans[0]!.rawData).names.items;
    if (names.length !== 1 || names[0]!.type !== 'dns' || names[0]!.value !== opts.identity)
      return no('SANs are not exactly the identity');
    const cns = csr.subjectName.getField('CN');
    if (cns.length > 1 || (cns.length === 1 && cns[0] !== opts.identity)) return no('CN');
    return {
      valid: true,
      judged: { identity: opts.identity, spki: Buffer.from(csr.publicKey.rawData) },
    };
  }

  function checkLeaf(leafDer: Uint8Array, judged: Judged): string[] {
    const problems: string[] = [];
    const leaf = new X509Certificate(leafDer);
    if (leaf.subjectAltName?.split(', ')[0] !== `DNS:${judged.identity}`)
      problems.push(`leaf SAN ${leaf.subjectAltName}`);
    const spki = leaf.publicKey.export({ format: 'der', type: 'spki' });
    if (!spki.equals(judged.spki)) problems.push('leaf key is not the CSR key');
    return problems;
  }

  return { judge, checkLeaf };
}
