/**
 * `meshid proxy` as a real process for integration tests: a development token for its service
 * account, the CA and anchors to use, the bound addresses read from its "listening" line.
 */
import { generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import { request } from 'node:http';
import type { Agent } from 'node:http';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { CertifyClient, createCsr, parseAddress, toPem } from '../../core/index.js';
import type { Address } from '../../core/index.js';
import { adminGet, startMeshid, waitFor } from './ca-process.js';
import type { MeshidProcess } from './ca-process.js';
import { CA_IDENTITY, HOUR, idOf } from './state.js';
import type { TestState } from './state.js';

/** A running proxy and its listeners. */
export interface ProxyProcess extends MeshidProcess {
  readonly identity: string;
  readonly admin: Address;
  readonly inbound?: Address;
  readonly outbound: readonly Address[];
}

/**
 * Starts the proxy of service account `emojivoto/<sa>` against the CA at `ca` (HOST:PORT), with
 * `args` added; waits until it is ready unless `ready` is false.
 */
export async function startProxyProcess(o: {
  state: TestState;
  ca: string;
  sa: string;
  anchorsFile?: string;
  args?: readonly string[];
  ready?: boolean;
  /** Environment of the process (e.g. a FIPS provider's), besides PATH. */
  env?: Record<string, string>;
  /** Node's own options, e.g. SIDECAR_NODE_OPTIONS (what the injected sidecar runs with). */
  nodeArgs?: readonly string[];
}): Promise<ProxyProcess> {
  const identity = idOf('emojivoto', o.sa);
  const tokenFile = join(o.state.dir, `${o.sa}-token`);
  await writeFile(tokenFile, await o.state.token('emojivoto', o.sa, { ttlMs: 2 * HOUR }));
  const p = await startMeshid(
    'proxy',
    [
      ...['--identity-addr', o.ca, '--identity-name', CA_IDENTITY],
      ...['--trust-anchors', o.anchorsFile ?? o.state.anchorsFile, '--token-file', tokenFile],
      ...['--local-identity', identity, '--admin', '127.0.0.1:0'],
      ...(o.args ?? []),
    ],
    o.env,
    o.nodeArgs === undefined ? {} : { nodeArgs: o.nodeArgs },
  );
  const inbound = p.listening['inbound'];
  const proxy: ProxyProcess = {
    ...p,
    identity,
    admin: parseAddress(String(p.listening['admin']))!,
    ...(typeof inbound === 'string' ? { inbound: parseAddress(inbound)! } : {}),
    outbound: ((p.listening['outbound'] as string[] | undefined) ?? []).map((a) =>
      parseAddress(a)!,
    ),
  };
  if (o.ready !== false) {
    await waitFor(`the ${o.sa} proxy to be ready`, async () =>
      (await adminGet(proxy.admin, '/ready')).status === 200 ? true : undefined,
    );
  }
  return proxy;
}

/** A loopback port that was free a moment ago (bind 0, read, release; a race we accept in tests). */
export async function freePort(): Promise<number> {
  const s = createServer().listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

/**
 * A certificate for `<ns>/<sa>` from the CA at `ca`, asked for the way a proxy does: a key made
 * here, a CSR, Certify with a development token. For clients such as curl and nginx.
 */
export async function certificateFromCa(
  state: TestState,
  ca: Address,
  ns: string,
  sa: string,
): Promise<{ keyPem: string; chainPem: string }> {
  const identity = idOf(ns, sa);
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const client = new CertifyClient({
    address: ca,
    serverName: CA_IDENTITY,
    anchorsPem: await readFile(state.anchorsFile, 'utf8'),
  });
  try {
    const res = await client.certify({
      identity,
      token: Buffer.from(await state.token(ns, sa, { ttlMs: 2 * HOUR })),
      certificateSigningRequest: createCsr({
        privateKey,
        commonName: identity,
        dnsNames: [identity],
      }),
    });
    return {
      keyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
      chainPem: [res.leafCertificate, ...res.intermediateCertificates]
        .map((der) => toPem(der, 'CERTIFICATE'))
        .join(''),
    };
  } finally {
    client.close();
  }
}

/** One plain HTTP/1.1 GET (no agent, no keep-alive): its status and body. */
export function httpGet(address: Address, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: address.host, port: address.port, path, agent: false }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/**
 * One GET of `/` through `agent` (keep-alive connections), or on a new connection with `false`:
 * its status. Fails if no answer comes within `timeoutMs`.
 */
export function getStatus(
  address: Address,
  agent: Agent | false,
  timeoutMs = 10_000,
): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: address.host, port: address.port, path: '/', agent }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}
