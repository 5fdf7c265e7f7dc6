/**
 * `meshid token`: a ServiceAccount-like JWT signed by the local development key. For local
 * development only: in a cluster, tokens come from the kubelet's projected volume.
 */
import { readFile } from 'node:fs/promises';
import { MeshidError, loadConfig, localStateInputs, systemClock } from '../core/index.js';
import { mintDevelopmentToken } from '../identity-ca/index.js';
import { startCrypto } from './runtime.js';

/**
 * Mints a development token from the key in a local state folder.
 */
export async function localToken(opts: {
  dir: string;
  ns: string;
  sa: string;
  ttl: number;
  audience: string;
  podName?: string;
}): Promise<string> {
  const inputs = localStateInputs(opts.dir);
  let privateKeyPem: string;
  let kid: string;
  try {
    privateKeyPem = await readFile(inputs.tokenSigningKey, 'utf8');
    const jwks = JSON.parse(await readFile(inputs.jwks, 'utf8')) as { keys?: { kid?: string }[] };
    kid = jwks.keys?.[0]?.kid ?? '';
  } catch (err) {
    throw new MeshidError(
      'ERR_LOCAL_STATE',
      `no token-signing key in ${opts.dir}/token-signing (run "meshid init --dir ${opts.dir}" first): ${(err as Error).message}`,
      { cause: err },
    );
  }
  return mintDevelopmentToken({
    privateKeyPem,
    kid,
    issuer: inputs.tokenIssuer,
    audience: opts.audience,
    namespace: opts.ns,
    serviceAccount: opts.sa,
    ttlMs: opts.ttl,
    clock: systemClock,
    ...(opts.podName === undefined ? {} : { podName: opts.podName }),
  });
}

/** `meshid token` */
export async function runToken(argv: string[]): Promise<number> {
  const { config } = loadConfig('token', { argv, env: process.env });
  startCrypto(config);
  const jwt = await localToken(config);
  process.stderr.write(
    `meshid token: development only: signed by the local key in ${config.dir}, trusted by no cluster\n`,
  );
  process.stdout.write(`${jwt}\n`);
  return 0;
}
