/**
 * A Certify client over gRPC/TLS: verifies the CA's chain against the trust anchors and its
 * certificate against the CA's identity name (SAN), as a proxy does. Used by `meshid local`'s
 * self-check and by tests; the proxy issue builds its identity client on the same calls.
 */
import { createRequire } from 'node:module';
import type * as Grpc from '@grpc/grpc-js';
import type { Address } from './config.js';
import { formatAddress } from './config.js';
import type { CertifyRequest, CertifyResponse } from './certify-wire.js';
import { CERTIFY_PATH, decodeCertifyResponse, encodeCertifyRequest } from './certify-wire.js';
import type { Logger } from './logger.js';

/** A gRPC failure as the client saw it. */
export interface CertifyCallError extends Error {
  readonly code: number;
  readonly details: string;
}

const definition = {
  certify: {
    path: CERTIFY_PATH,
    requestStream: false,
    responseStream: false,
    requestSerialize: (r: CertifyRequest) => encodeCertifyRequest(r),
    requestDeserialize: (b: Buffer) => b,
    responseSerialize: (b: Buffer) => b,
    responseDeserialize: (b: Buffer) => decodeCertifyResponse(b),
  },
} as const;

// grpc-js (about 13 MB of a process) is loaded on first use, not at import: core's index is
// imported by every command, and the proxy, which has its own HTTP/2 Certify client, must not
// carry it.
let loaded: { grpc: typeof Grpc; IdentityClient: Grpc.ServiceClientConstructor } | undefined;
function grpcJs(): NonNullable<typeof loaded> {
  if (loaded === undefined) {
    const grpc = createRequire(import.meta.url)('@grpc/grpc-js') as typeof Grpc;
    loaded = { grpc, IdentityClient: grpc.makeGenericClientConstructor(definition, 'Identity') };
  }
  return loaded;
}

/**
 * A client for one CA address.
 *
 * @example
 * ```ts
 * const client = new CertifyClient({ address, serverName: caIdentity, anchorsPem });
 * const res = await client.certify({ identity, token, certificateSigningRequest: csr });
 * client.close();
 * ```
 */
export class CertifyClient {
  readonly #client: Grpc.Client;

  constructor(opts: {
    address: Address;
    serverName: string;
    anchorsPem: string;
    /** Where grpc-js's own error lines go (process-wide); default: its console output. */
    logger?: Logger;
  }) {
    const { grpc, IdentityClient } = grpcJs();
    if (opts.logger !== undefined) {
      const grpcLog = opts.logger.child({ component: 'grpc-js' });
      grpc.setLogger({
        error: (...args: unknown[]) => grpcLog.warn(args.map(String).join(' ')),
      } as unknown as Partial<Console>);
      grpc.setLogVerbosity(grpc.logVerbosity.ERROR);
    }
    const creds = grpc.credentials.createSsl(Buffer.from(opts.anchorsPem), null, null, {
      checkServerIdentity: (_host, cert) => {
        const names = (cert.subjectaltname ?? '').split(', ');
        return names.includes(`DNS:${opts.serverName}`)
          ? undefined
          : new Error(
              `CA certificate is not for ${opts.serverName} (SANs: ${cert.subjectaltname ?? 'none'})`,
            );
      },
    });
    this.#client = new IdentityClient(formatAddress(opts.address), creds, {
      'grpc.ssl_target_name_override': opts.serverName,
      'grpc.default_authority': opts.serverName,
    });
  }

  /** Calls Certify; rejects with a CertifyCallError carrying the gRPC status. */
  certify(req: CertifyRequest, deadlineMs = 10_000): Promise<CertifyResponse> {
    return new Promise((resolve, reject) => {
      const client = this.#client as unknown as {
        certify(
          r: CertifyRequest,
          o: Grpc.CallOptions,
          cb: (e: Grpc.ServiceError | null, res?: CertifyResponse) => void,
        ): void;
      };
      client.certify(req, { deadline: Date.now() + deadlineMs }, (err, res) => {
        if (err !== null)
          reject(
            Object.assign(new Error(`Certify failed: ${err.details}`), {
              code: err.code,
              details: err.details,
            }),
          );
        else resolve(res!);
      });
    });
  }

  close(): void {
    this.#client.close();
  }
}
