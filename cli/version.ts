/**
 * `meshid version`: this client's version, Node's and OpenSSL's, FIPS status, and the CA's
 * version when its admin port answers (`--ca-admin`, default the local CA's 127.0.0.1:9990) or, with a kubeconfig, the installed CA's
 * image.
 */
import type { VersionConfig, VersionInfo } from '../core/index.js';
import {
  DEFAULTS,
  cryptoStatus,
  formatAddress,
  loadConfig,
  openKubeconfig,
  versionInfo,
} from '../core/index.js';
import { getWithTimeout } from './check/probes.js';
import { startCrypto } from './runtime.js';

/** The JSON output. */
interface VersionView {
  readonly client: VersionInfo & {
    /** A FIPS provider serves this process's crypto (core/fips.ts). */
    readonly fips: boolean;
    /** What was measured, for a person. */
    readonly fipsDetail: string;
  };
  readonly server: {
    readonly address: string;
    readonly version?: VersionInfo;
    readonly error?: string;
  } | null;
  readonly installed: { readonly image?: string; readonly error?: string } | null;
}

/** Gathers what `meshid version` prints. */
async function gatherVersions(config: VersionConfig): Promise<VersionView> {
  const crypto = cryptoStatus();
  const client = { ...versionInfo(), fips: crypto.fipsProviderActive, fipsDetail: crypto.detail };
  let server: VersionView['server'] = null;
  // Without a cluster, the local CA's default admin address is asked.
  const caAdmin =
    config.caAdmin ?? (config.kubeconfig === undefined ? DEFAULTS.caAdmin : undefined);
  if (caAdmin !== undefined) {
    const address = formatAddress(caAdmin);
    const r = await getWithTimeout(`http://${address}/version`, config.timeout);
    if ('error' in r) server = { address, error: r.error };
    else if (r.status !== 200)
      server = { address, error: `/version answered ${r.status} (a CA older than this client?)` };
    else {
      try {
        server = { address, version: JSON.parse(r.body) as VersionInfo };
      } catch {
        server = { address, error: '/version is not JSON' };
      }
    }
  }
  let installed: VersionView['installed'] = null;
  if (config.kubeconfig !== undefined) {
    const kube = await openKubeconfig(config.kubeconfig, process.env);
    try {
      const d = await kube.get('apps/v1', 'Deployment', config.namespace, 'linkerd-identity');
      const spec = d?.['spec'] as
        { template?: { spec?: { containers?: { image?: string }[] } } } | undefined;
      const image = spec?.template?.spec?.containers?.[0]?.image;
      installed =
        d === undefined
          ? { error: `no Deployment linkerd-identity in ${config.namespace}` }
          : image === undefined
            ? { error: 'the Deployment has no container image' }
            : { image };
    } catch (err) {
      installed = { error: (err as Error).message };
    }
  }
  return { client, server, installed };
}

/** `meshid version` */
export async function runVersion(argv: string[]): Promise<number> {
  const { config } = loadConfig('version', { argv, env: process.env });
  startCrypto(config);
  const v = await gatherVersions(config);
  if (config.output === 'json') {
    process.stdout.write(`${JSON.stringify(v, null, 2)}\n`);
    return 0;
  }
  const lines = [
    `Client: meshid ${v.client.version} (Node.js ${v.client.node}, OpenSSL ${v.client.openssl}, FIPS ${v.client.fips ? 'on' : 'off'})`,
  ];
  if (v.server === null) lines.push('Server: not asked (give --ca-admin HOST:PORT)');
  else if (v.server.version !== undefined)
    lines.push(
      `Server: meshid ${v.server.version.version} at ${v.server.address} (Node.js ${v.server.version.node}, OpenSSL ${v.server.version.openssl})`,
    );
  else lines.push(`Server: unavailable at ${v.server.address}: ${v.server.error}`);
  if (v.installed !== null)
    lines.push(`Installed: ${v.installed.image ?? `unknown (${v.installed.error})`}`);
  process.stdout.write(`${lines.join('\n')}\n`);
  return 0;
}
