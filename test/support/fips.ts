/**
 * The real OpenSSL 3.0 FIPS provider for the FIPS suite, built (once, cached) by the project's
 * scripts/fips-provider.sh from Debian's openssl source, and the openssl CLI as a peer that runs
 * with the default provider.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Address } from '../../core/index.js';

const SCRIPT = fileURLToPath(new URL('../../scripts/fips-provider.sh', import.meta.url));

/** Where the provider is and how a meshid process runs on it. */
export interface FipsProvider {
  /** Environment for a meshid process: OPENSSL_MODULES and NODE_OPTIONS (--openssl-config, --enable-fips). */
  readonly env: Record<string, string>;
  /** The Debian source version the provider was built from. */
  readonly version: string;
}

let cached: FipsProvider | undefined;

/** Runs the script (which builds the provider when it is not cached) and reads its KEY=VALUE lines. */
export function fipsProvider(): FipsProvider {
  if (cached !== undefined) return cached;
  const out = execFileSync('bash', [SCRIPT, '--env'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    timeout: 15 * 60_000,
  });
  const vars = new Map(
    out
      .split('\n')
      .filter((l) => l.includes('='))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)] as const),
  );
  const get = (k: string): string => {
    const v = vars.get(k);
    if (v === undefined) throw new Error(`scripts/fips-provider.sh --env printed no ${k}`);
    return v;
  };
  cached = {
    env: { OPENSSL_MODULES: get('OPENSSL_MODULES'), NODE_OPTIONS: get('NODE_OPTIONS') },
    version: get('MESHID_FIPS_PROVIDER_VERSION'),
  };
  return cached;
}

/** What an `openssl s_client` handshake showed. */
export interface SClientResult {
  readonly connected: boolean;
  readonly protocol?: string;
  readonly cipher?: string;
  /** The key-exchange group, as OpenSSL names it (prime256v1, secp384r1, X25519). */
  readonly group?: string;
  readonly output: string;
}

/**
 * One `openssl s_client` handshake to `address` with `args` added, run with the default provider
 * (no OPENSSL_CONF, no OPENSSL_MODULES): an independent peer that could offer anything.
 */
export function sClient(address: Address, args: readonly string[]): SClientResult {
  const r = spawnSync(
    'openssl',
    ['s_client', '-connect', `${address.host}:${address.port}`, '-tls1_3', ...args],
    {
      input: '',
      encoding: 'utf8',
      timeout: 20_000,
      env: { PATH: process.env['PATH'] ?? '' },
    },
  );
  const output = `${r.stdout}\n${r.stderr}`;
  const newLine = /New, (TLSv[\d.]+), Cipher is (\S+)/.exec(output);
  const group = /Server Temp Key: \w+, (\w+)/.exec(output)?.[1];
  return {
    connected: newLine !== null && !/alert|handshake failure/i.test(r.stderr),
    ...(newLine === null ? {} : { protocol: newLine[1]!, cipher: newLine[2]! }),
    ...(group === undefined ? {} : { group }),
    output,
  };
}
