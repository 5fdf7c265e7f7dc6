/**
 * `meshid check --dir D`: the local state folder (written by `meshid init`), the CA it runs and
 * the proxies of the local mesh (found in `<dir>/mesh.json`, which `meshid local` writes while
 * it runs) or named with `--proxy-admin`.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Address, CheckConfig } from '../../core/index.js';
import { DEFAULTS, bundleFingerprint, localStateInputs, parseAddress } from '../../core/index.js';
import { ROTATION_FILE, readRotationStateFile } from '../../trust-bundle/index.js';
import { checkAnchors, checkIssuer } from './material.js';
import type { MaterialSources } from './material.js';
import type { CheckResult } from './model.js';
import { checkKeyExchange } from './key-exchange.js';
import { checkProxies, probeCa, probeCaAdmin } from './probes.js';
import type { ProxyTarget } from './probes.js';
import { caFipsFromMetrics, checkFips, checkRotation, clientFips } from './state.js';
import { checkStateFolder, checkTokenSigning } from './state-folder.js';

/** The file `meshid local` writes while it runs: where its CA and proxies listen. */
export const LOCAL_MESH_FILE = 'mesh.json';

/** What `<dir>/mesh.json` holds. */
export interface LocalMeshInfo {
  readonly ca: { readonly address: string; readonly admin: string };
  readonly proxies: readonly { readonly name: string; readonly admin: string }[];
}

/** Progress callback: what the check waits for now. */
export type Progress = (what: string) => void;

const read = (path: string): Promise<string | Error> =>
  readFile(path, 'utf8').catch((err: NodeJS.ErrnoException) =>
    err.code === 'ENOENT' ? new Error('no such file') : err,
  );

/** Runs every local check; resolves with the results. */
export async function checkLocal(
  config: CheckConfig,
  now: number,
  progress: Progress,
): Promise<CheckResult[]> {
  const dir = config.dir;
  progress('reading the state folder');
  const folder = await checkStateFolder(dir);
  // Without the folder there are no anchors to judge the CA or proxies by: ask nothing.
  if (!folder.exists) return [folder.result];
  const inputs = localStateInputs(dir);
  const src: MaterialSources = {
    anchors: inputs.trustAnchors,
    issuer: inputs.issuerDir,
    issuerFile: (name) => join(inputs.issuerDir, name),
    fixAnchors: `write fresh local material with "meshid init --dir ${dir} --force" (then restart the CA and proxies)`,
    fixIssuer: `put a valid issuer in ${inputs.issuerDir} (tls.crt, tls.key, ca.crt), or "meshid init --dir ${dir} --force"`,
    renewIssuer: `renew it under the same trust anchor: meshid init --renew-issuer --dir ${dir} (a running CA loads it by itself)`,
  };
  const tokenSigning = await checkTokenSigning(dir);
  progress('reading the trust anchors and the issuer');
  const anchorsText = await read(inputs.trustAnchors);
  const a = checkAnchors(anchorsText, src, now, config.expiryWarning);
  const [crt, key, ca] = await Promise.all([
    read(join(inputs.issuerDir, 'tls.crt')),
    read(join(inputs.issuerDir, 'tls.key')),
    read(join(inputs.issuerDir, 'ca.crt')),
  ]);
  const issuerFiles =
    crt instanceof Error
      ? new Error(`tls.crt: ${crt.message}`)
      : key instanceof Error
        ? new Error(`tls.key: ${key.message}`)
        : { certPem: crt, keyPem: key, caPem: ca instanceof Error ? undefined : ca };
  const i = checkIssuer(issuerFiles, a.anchors, src, now, config.expiryWarning);

  const meshText = await read(join(dir, LOCAL_MESH_FILE));
  const mesh = meshText instanceof Error ? undefined : parseMeshInfo(meshText);
  const caAddress: Address =
    config.caAddress ?? (mesh && parseAddress(mesh.ca.address)) ?? DEFAULTS.caListen;
  const caAdmin: Address =
    config.caAdmin ?? (mesh && parseAddress(mesh.ca.admin)) ?? DEFAULTS.caAdmin;
  const fix = `start the CA: "meshid ca --dir ${dir}" or "npm start" (or point --ca-address/--ca-admin at it)`;
  progress('asking the CA');
  const [caResults, admin] = await Promise.all([
    probeCa({
      address: caAddress,
      identityName: config.identityName,
      anchors: a.anchors,
      anchorsSource: inputs.trustAnchors,
      now,
      timeoutMs: config.timeout,
      fix,
    }),
    probeCaAdmin({ admin: caAdmin, timeoutMs: config.timeout, fix }),
  ]);

  const targets: ProxyTarget[] = [
    ...config.proxyAdmin.map((addr) => ({ name: addr, admin: parseAddress(addr)! })),
    ...(config.proxyAdmin.length > 0 || mesh === undefined
      ? []
      : mesh.proxies.flatMap((p) => {
          const addr = parseAddress(p.admin);
          return addr === undefined ? [] : [{ name: p.name, admin: addr }];
        })),
  ];
  progress(`asking ${targets.length} proxies`);
  const [proxies, keyExchange] = await Promise.all([
    checkProxies({
      targets,
      total: targets.length,
      anchors: a.anchors,
      anchorsSource: inputs.trustAnchors,
      bundleFingerprint: anchorsText instanceof Error ? '' : bundleFingerprint(anchorsText),
      now,
      timeoutMs: config.timeout,
      concurrency: config.concurrency,
    }),
    checkKeyExchange({
      targets,
      total: targets.length,
      required: config.tlsGroups === 'hybrid-required',
      timeoutMs: config.timeout,
      concurrency: config.concurrency,
    }),
  ]);
  const rotation = await readRotationStateFile(dir).catch((err: unknown) =>
    err instanceof Error ? err : new Error(String(err)),
  );
  return [
    folder.result,
    tokenSigning,
    ...a.results,
    ...i.results,
    ...caResults,
    ...admin.results,
    proxies,
    keyExchange,
    checkRotation(rotation, join(dir, ROTATION_FILE), now),
    checkFips({ client: clientFips(), ca: caFipsFromMetrics(admin.metrics) }),
  ];
}

function parseMeshInfo(text: string): LocalMeshInfo | undefined {
  try {
    const m = JSON.parse(text) as LocalMeshInfo;
    return typeof m.ca?.address === 'string' && Array.isArray(m.proxies) ? m : undefined;
  } catch {
    return undefined;
  }
}
