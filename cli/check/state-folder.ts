/**
 * The local state folder itself, before what it holds: that it exists, that only this user can
 * change it (cli/state-dir.ts, the rule `meshid ca --dir` and `meshid init` apply), and the
 * token-signing key `meshid init` writes into `token-signing/`, which nothing else checks.
 */
import { createPrivateKey, createPublicKey } from 'node:crypto';
import type { JsonWebKeyInput, KeyObject } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { localStateInputs } from '../../core/index.js';
import { checkStateDir } from '../state-dir.js';
import type { CheckResult } from './model.js';
import { result } from './model.js';

/** `meshid token` signs RS256, as a cluster's service-account issuer does by default. */
const MIN_RSA_BITS = 2048;

/**
 * The folder: missing (`exists: false`, every check that reads it is skipped), unsafe, or fine.
 */
export async function checkStateFolder(
  dir: string,
): Promise<{ exists: boolean; result: CheckResult }> {
  const st = await stat(dir).catch((err: NodeJS.ErrnoException) => err);
  if (st instanceof Error || !st.isDirectory()) {
    const what =
      st instanceof Error
        ? st.code === 'ENOENT'
          ? 'does not exist'
          : `cannot be read (${st.message})`
        : 'is not a folder';
    return {
      exists: false,
      result: result(
        'state-dir',
        'error',
        `the state folder ${dir} (--dir) ${what}; nothing else was checked or asked`,
        `write it with "meshid init --dir ${dir}", or give --dir the folder meshid init wrote (a cluster: --kubeconfig or --context)`,
      ),
    };
  }
  try {
    await checkStateDir(dir);
  } catch (err) {
    return {
      exists: true,
      result: result(
        'state-dir',
        'error',
        (err as Error).message,
        'fix the folder as the message says; meshid ca --dir refuses it until then',
      ),
    };
  }
  return {
    exists: true,
    result: result(
      'state-dir',
      'ok',
      `${dir}: no links, not writable by others, private keys readable by this user only`,
    ),
  };
}

function spki(k: KeyObject): Buffer {
  return (k.type === 'public' ? k : createPublicKey(k)).export({ type: 'spki', format: 'der' });
}

/**
 * `token-signing/key.pem` (the development token-signing key `meshid token` signs with) and
 * `token-signing/jwks.json` (the keys `meshid ca --dir` checks tokens against): present, a PEM
 * RSA key of at least 2048 bits, readable by this user only, and the JWKS's first key (whose
 * kid `meshid token` puts in its tokens) is its public half.
 */
export async function checkTokenSigning(dir: string): Promise<CheckResult> {
  const inputs = localStateInputs(dir);
  const keyPath = inputs.tokenSigningKey;
  const jwksPath = inputs.jwks;
  const fix = `write a new token-signing key and JWKS with "meshid init --force --dir ${dir}" (a new trust anchor and issuer too; then restart the CA)`;
  const bad = (message: string, f = fix): CheckResult =>
    result('token-signing', 'error', message, f);
  let keyPem: string;
  try {
    keyPem = await readFile(keyPath, 'utf8');
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT'
      ? bad(`${keyPath} does not exist: "meshid token" cannot sign development tokens`)
      : bad(`${keyPath} cannot be read: ${(err as Error).message}`);
  }
  const mode = (await stat(keyPath)).mode & 0o777;
  if ((mode & 0o077) !== 0)
    return bad(
      `${keyPath} is readable by others (mode 0${mode.toString(8)}): anyone who reads it can mint tokens for any service account`,
      `run: chmod 600 ${keyPath}`,
    );
  let key: KeyObject;
  try {
    key = createPrivateKey(keyPem);
  } catch {
    return bad(`${keyPath} is not a PEM private key`);
  }
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (key.asymmetricKeyType !== 'rsa' || bits < MIN_RSA_BITS)
    return bad(
      `${keyPath} is ${key.asymmetricKeyType === 'rsa' ? `RSA ${bits}` : String(key.asymmetricKeyType).toUpperCase()}, not an RSA key of at least ${MIN_RSA_BITS} bits (meshid token signs RS256)`,
    );
  let jwks: { keys?: unknown };
  try {
    jwks = JSON.parse(await readFile(jwksPath, 'utf8')) as { keys?: unknown };
  } catch (err) {
    return bad(
      `${jwksPath} ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist' : `is not a JWKS (${(err as Error).message})`}: the CA has no key to check tokens with`,
    );
  }
  const keys = Array.isArray(jwks.keys) ? (jwks.keys as Record<string, unknown>[]) : [];
  const own = spki(key);
  const index = keys.findIndex((k) => {
    try {
      return spki(createPublicKey({ key: k as JsonWebKeyInput['key'], format: 'jwk' })).equals(own);
    } catch {
      return false;
    }
  });
  if (index !== 0) {
    return bad(
      index < 0
        ? `${keyPath} is not the key of any of the ${keys.length} keys in ${jwksPath}: the CA (meshid ca --dir ${dir}) refuses every token it signs`
        : `${keyPath} is key #${index + 1} of ${jwksPath}, but "meshid token" names the first key's kid, so the CA refuses the tokens it signs`,
    );
  }
  const kid = (keys[0] as { kid?: unknown }).kid;
  return result(
    'token-signing',
    'ok',
    `${keyPath}: RSA ${bits}, mode 0${mode.toString(8)}, the first key of ${jwksPath}${typeof kid === 'string' ? ` (kid ${kid})` : ''}`,
  );
}
