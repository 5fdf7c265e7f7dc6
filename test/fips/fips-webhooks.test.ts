/**
 * `meshid webhooks --fips` under the real OpenSSL 3.0 FIPS provider: the admission server the API
 * server calls negotiates only FIPS suites and groups (checked with `openssl s_client` running on
 * the default provider, so it could offer anything), refuses peers that offer nothing else, still
 * answers reviews, and keeps its last good serving pair when a new one is outside the policy.
 * Without the provider, FIPS mode refuses to start.
 */
import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { runMeshid, waitFor } from '../support/ca-process.js';
import { fipsProvider, sClient } from '../support/fips.js';
import type { FipsProvider } from '../support/fips.js';
import {
  WEBHOOKS_DNS,
  mountServingPair,
  opensslServingPair,
  sendToWebhooks,
  startWebhooksProcess,
} from '../support/webhooks.js';
import type { ServingPair, WebhooksProcess } from '../support/webhooks.js';
import { emojivotoWeb, podReview } from '../unit/webhooks/fixtures/pods.js';

const execFileAsync = promisify(execFile);
const FIPS_SUITES = ['TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384'];
const FIPS_GROUPS = ['prime256v1', 'secp384r1'];

/** A self-signed Ed25519 serving pair for the webhooks' name, by the openssl CLI. */
async function ed25519ServingPair(dir: string): Promise<ServingPair> {
  await execFileAsync('openssl', [
    ...['req', '-x509', '-newkey', 'ed25519', '-nodes', '-days', '2'],
    ...['-keyout', join(dir, 'ed.key'), '-out', join(dir, 'ed.crt')],
    ...['-subj', `/CN=${WEBHOOKS_DNS}`, '-addext', `subjectAltName=DNS:${WEBHOOKS_DNS}`],
  ]);
  return {
    certPem: await readFile(join(dir, 'ed.crt'), 'utf8'),
    keyPem: await readFile(join(dir, 'ed.key'), 'utf8'),
    fingerprint: '',
  };
}

describe('meshid webhooks in FIPS mode under the real OpenSSL FIPS provider', function () {
  this.timeout(120_000);
  let provider: FipsProvider;
  let dir: string;
  let tlsDir: string;
  let pair: ServingPair;
  let hooks: WebhooksProcess;

  const assertInjects = async (): Promise<void> => {
    const r = await sendToWebhooks(
      hooks.address,
      pair.certPem,
      '/inject',
      JSON.stringify(podReview(emojivotoWeb(), 'emojivoto')),
    );
    assert.equal(r.status, 200, r.body);
    assert.equal(r.peer.fingerprint256.replace(/:/g, '').toLowerCase(), pair.fingerprint);
    const review = JSON.parse(r.body) as { response: { allowed: boolean; patchType: string } };
    assert.equal(review.response.allowed, true);
    assert.equal(review.response.patchType, 'JSONPatch');
  };

  before(async function () {
    this.timeout(20 * 60_000); // a first run builds the provider
    provider = fipsProvider();
    dir = await mkdtemp(join(tmpdir(), 'meshid-fips-webhooks-'));
    tlsDir = join(dir, 'tls');
    pair = await opensslServingPair();
    await mountServingPair(tlsDir, pair);
    hooks = await startWebhooksProcess(
      ['--fips', '--tls-dir', tlsDir, '--tls-reload-interval', '200ms'],
      provider.env,
    );
  });
  after(async () => {
    await hooks?.stop();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it('says at start that a FIPS provider serves all crypto', () => {
    const line = hooks.lines.find((l) => l.includes('"fipsRequested":true'));
    assert.ok(line !== undefined, hooks.lines.join('\n'));
    assert.match(line, /"fips":true/);
    assert.match(line, /FIPS mode: a FIPS provider serves all crypto/);
  });

  it('answers a pod review over a connection the API server would make', async () => {
    await assertInjects();
  });

  it('negotiates a FIPS suite and group with an openssl s_client peer that offers X25519 first', () => {
    const r = sClient(hooks.address, ['-servername', WEBHOOKS_DNS]);
    assert.ok(r.connected, r.output);
    assert.equal(r.protocol, 'TLSv1.3');
    assert.ok(FIPS_SUITES.includes(r.cipher ?? ''), r.output);
    assert.ok(FIPS_GROUPS.includes(r.group ?? ''), r.output);
  });

  it('refuses an X25519-only and a ChaCha20-only client at the handshake', () => {
    for (const args of [
      ['-groups', 'X25519'],
      ['-ciphersuites', 'TLS_CHACHA20_POLY1305_SHA256'],
    ]) {
      const r = sClient(hooks.address, args);
      assert.equal(r.connected, false, `${args.join(' ')}:\n${r.output}`);
      assert.match(r.output, /handshake failure|alert/, args.join(' '));
    }
  });

  it('keeps its last good serving pair when the new one has an Ed25519 key, and says why', async () => {
    const before = hooks.lines.length;
    await mountServingPair(tlsDir, await ed25519ServingPair(dir));
    const refusal = await waitFor('the refusal to be logged', () =>
      hooks.lines.slice(before).find((l) => l.includes('the last good one stays in use')),
    );
    assert.match(refusal, /"level":"warn"/);
    assert.match(refusal, /FIPS mode refused the serving certificate .*its key is Ed25519/);
    await assertInjects();
  });

  it('refuses to start in FIPS mode on an Ed25519 serving pair, naming the certificate', async () => {
    const edDir = join(dir, 'ed-tls');
    await mountServingPair(edDir, await ed25519ServingPair(dir));
    const r = await runMeshid(
      ['webhooks', '--fips', '--tls-dir', edDir, '--listen', '127.0.0.1:0'],
      provider.env,
    );
    assert.notEqual(r.code, 0);
    assert.match(r.stderr + r.stdout, /ERR_FIPS_MATERIAL_REFUSED/);
    assert.match(r.stderr + r.stdout, /its key is Ed25519/);
  });

  it('refuses to start in FIPS mode without a FIPS provider, naming the cause', async () => {
    const r = await runMeshid([
      'webhooks',
      '--fips',
      '--tls-dir',
      tlsDir,
      '--listen',
      '127.0.0.1:0',
    ]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /ERR_FIPS_UNAVAILABLE/);
  });
});
