/**
 * A Certify client that behaves like Linkerd's proxy on the wire: TLS 1.3, SNI set to the CA's
 * identity, NO ALPN offered, HTTP/2 by prior knowledge, no client certificate.
 */
import { connect as http2Connect } from 'node:http2';
import { connect as tlsConnect } from 'node:tls';
import type { Address } from '../../core/index.js';
import type { CertifyRequest, CertifyResponse } from '../../core/index.js';
import { CERTIFY_PATH, decodeCertifyResponse, encodeCertifyRequest } from '../../core/index.js';

export interface RawCertifyResult {
  readonly alpnProtocol: string | false | null;
  readonly tlsVersion: string | null;
  readonly grpcStatus: number;
  readonly grpcMessage: string;
  readonly response?: CertifyResponse;
}

/** One Certify call the way a Linkerd proxy makes it. */
export async function linkerdLikeCertify(
  address: Address,
  opts: { serverName: string; anchorsPem: string; request: CertifyRequest },
): Promise<RawCertifyResult> {
  const socket = tlsConnect({
    host: address.host,
    port: address.port,
    servername: opts.serverName,
    ca: opts.anchorsPem,
    minVersion: 'TLSv1.3',
    checkServerIdentity: (_h, cert) =>
      (cert.subjectaltname ?? '').split(', ').includes(`DNS:${opts.serverName}`)
        ? undefined
        : new Error(`CA certificate is not for ${opts.serverName}`),
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', resolve);
    socket.once('error', reject);
  });
  const alpnProtocol = socket.alpnProtocol;
  const tlsVersion = socket.getProtocol();
  // An http: authority makes node speak HTTP/2 by prior knowledge over the socket it is given.
  const session = http2Connect(`http://${opts.serverName}`, { createConnection: () => socket });
  try {
    const body = encodeCertifyRequest(opts.request);
    const frame = Buffer.alloc(5 + body.length);
    frame.writeUInt32BE(body.length, 1);
    body.copy(frame, 5);
    const stream = session.request({
      ':method': 'POST',
      ':path': CERTIFY_PATH,
      'content-type': 'application/grpc',
      te: 'trailers',
    });
    stream.end(frame);
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    let trailers: Record<string, string | string[] | undefined> = {};
    stream.on('trailers', (t) => (trailers = t));
    let headers: Record<string, string | string[] | undefined> = {};
    stream.on('response', (h) => (headers = h));
    await new Promise<void>((resolve, reject) => {
      stream.on('end', resolve);
      stream.on('error', reject);
    });
    const status = Number(trailers['grpc-status'] ?? headers['grpc-status']);
    const message = decodeURIComponent(
      String(trailers['grpc-message'] ?? headers['grpc-message'] ?? ''),
    );
    const data = Buffer.concat(chunks);
    return {
      alpnProtocol,
      tlsVersion,
      grpcStatus: status,
      grpcMessage: message,
      ...(status === 0 ? { response: decodeCertifyResponse(data.subarray(5)) } : {}),
    };
  } finally {
    session.close();
  }
}
