/**
 * Helpers for the webhooks' tests: a serving pair made by the `openssl` CLI (an independent
 * peer), written the way the kubelet mounts a Secret, the `meshid webhooks` process, and a plain
 * HTTPS client that trusts only the certificate the test made, as the API server trusts caBundle.
 */
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import type { TLSSocket } from 'node:tls';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Address } from '../../core/index.js';
import { parseAddress } from '../../core/index.js';
import { startMeshid } from './ca-process.js';
import type { MeshidProcess } from './ca-process.js';
import { writeIssuerDir } from './state.js';

const execFileAsync = promisify(execFile);

/** The DNS name the API server verifies the webhooks' certificate for. */
export const WEBHOOKS_DNS = 'meshid-webhooks.linkerd.svc';

/** A serving pair. */
export interface ServingPair {
  readonly certPem: string;
  readonly keyPem: string;
  /** Hex SHA-256 of the DER, as the server logs it. */
  readonly fingerprint: string;
}

/** A fresh self-signed P-256 pair for {@link WEBHOOKS_DNS} and 127.0.0.1, by `openssl req -x509`. */
export async function opensslServingPair(): Promise<ServingPair> {
  const dir = await mkdtemp(join(tmpdir(), 'meshid-openssl-'));
  try {
    await execFileAsync('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      join(dir, 'tls.key'),
      '-out',
      join(dir, 'tls.crt'),
      '-days',
      '2',
      '-subj',
      `/CN=${WEBHOOKS_DNS}`,
      '-addext',
      `subjectAltName=DNS:${WEBHOOKS_DNS},IP:127.0.0.1`,
    ]);
    const certPem = await readFile(join(dir, 'tls.crt'), 'utf8');
    const keyPem = await readFile(join(dir, 'tls.key'), 'utf8');
    return {
      certPem,
      keyPem,
      fingerprint: new X509Certificate(certPem).fingerprint256.replace(/:/g, '').toLowerCase(),
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Writes a pair into a Secret-like folder by an atomic `..data` swap. */
export function mountServingPair(dir: string, pair: ServingPair): Promise<void> {
  return writeIssuerDir(dir, { 'tls.crt': pair.certPem, 'tls.key': pair.keyPem });
}

/** A running `meshid webhooks`. */
export interface WebhooksProcess extends MeshidProcess {
  readonly address: Address;
}

/** Starts `meshid webhooks` on 127.0.0.1:0 with `args`. */
export async function startWebhooksProcess(
  args: string[],
  env: Record<string, string> = {},
): Promise<WebhooksProcess> {
  const p = await startMeshid('webhooks', ['--listen', '127.0.0.1:0', ...args], env);
  return { ...p, address: parseAddress(String(p.listening['address']))! };
}

/** An HTTPS answer. */
export interface HttpsAnswer {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
  /** The certificate the server presented. */
  readonly peer: X509Certificate;
}

/**
 * POSTs (or sends `method`) to the webhooks, trusting only `caPem` and checking the certificate
 * for {@link WEBHOOKS_DNS}, as the API server does with the configuration's caBundle.
 */
export function sendToWebhooks(
  address: Address,
  caPem: string,
  path: string,
  body: string | Buffer | undefined,
  opts: { method?: string; headers?: Record<string, string>; chunked?: boolean } = {},
): Promise<HttpsAnswer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = {
      'Content-Type': 'application/json',
      ...opts.headers,
    };
    if (body !== undefined && opts.chunked !== true)
      headers['Content-Length'] = Buffer.byteLength(body);
    const req = request(
      {
        host: address.host,
        port: address.port,
        path,
        method: opts.method ?? 'POST',
        ca: caPem,
        servername: WEBHOOKS_DNS,
        headers,
        agent: false,
      },
      (res) => {
        const peer = new X509Certificate((res.socket as TLSSocket).getPeerCertificate().raw);
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString('utf8'),
            peer,
          }),
        );
        res.on('error', reject);
      },
    );
    // Any error fails the request, also after the answer: a server that answers 413 before the
    // body is in must read the rest away (lingering close), not reset the connection under a
    // client that is still writing.
    req.on('error', reject);
    if (body === undefined) req.end();
    else if (opts.chunked === true) {
      const buf = Buffer.isBuffer(body) ? body : Buffer.from(body);
      for (let i = 0; i < buf.length; i += 64 * 1024) req.write(buf.subarray(i, i + 64 * 1024));
      req.end();
    } else req.end(body);
  });
}
