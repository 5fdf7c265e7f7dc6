/**
 * `meshid proxy` as a real process for integration tests: a development token for its service
 * account, the CA and anchors to use, the bound addresses read from its "listening" line.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseAddress } from '../../core/index.js';
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
}): Promise<ProxyProcess> {
  const identity = idOf('emojivoto', o.sa);
  const tokenFile = join(o.state.dir, `${o.sa}-token`);
  await writeFile(tokenFile, await o.state.token('emojivoto', o.sa, { ttlMs: 2 * HOUR }));
  const p = await startMeshid('proxy', [
    ...['--identity-addr', o.ca, '--identity-name', CA_IDENTITY],
    ...['--trust-anchors', o.anchorsFile ?? o.state.anchorsFile, '--token-file', tokenFile],
    ...['--local-identity', identity, '--admin', '127.0.0.1:0'],
    ...(o.args ?? []),
  ]);
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
