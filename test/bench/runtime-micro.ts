/**
 * The runtime microbenchmarks of `npm run bench` (part `runtimes`, see runtimes.ts), in a process
 * of their own so that the same code runs on the system Node 20 and on the pinned Node 26: only
 * `node:` modules, nothing of meshid (which refuses Node < 26). Prints one JSON object.
 *
 * `node --import tsx test/bench/runtime-micro.ts <material.json>`, where the file holds the PEM
 * keys and certificates runtimes.ts made (an anchor, two P-256 workload leaves, an RSA key).
 *
 * - raw: one P-256 sign, one P-256 verify, one RS256 verify (the raw bound of Certify);
 * - CSR key import, each way node offers, alone and followed by a P-256 verify: WebCrypto's raw
 *   import then KeyObject.from (the CA's path on Node 20), and createPublicKey of the DER SPKI
 *   (the CA's path on Node 26);
 * - full TLS 1.3 mTLS handshakes (P-256 certificates, no resumption), client and server in this
 *   process, by key-exchange group: X25519, and X25519MLKEM768 where OpenSSL has ML-KEM;
 * - the memory of this bare runtime at start (RssAnon, RssFile from /proc/self/status).
 */
import { KeyObject, createPrivateKey, createPublicKey, sign, verify, webcrypto } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { connect, createSecureContext, createServer } from 'node:tls';

/** The memory of the runtime before any work: read first. */
const startMemory = memoryKb();

// Its own reader rather than test/support/proc.ts's rssSplitMb: this figure is the bare runtime's,
// read before anything else is loaded (proc.ts would first load child_process and run getconf).
function memoryKb(): { rssAnonKb: number; rssFileKb: number } {
  const status = readFileSync('/proc/self/status', 'utf8');
  const field = (name: string): number =>
    Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rssAnonKb: field('RssAnon'), rssFileKb: field('RssFile') };
}

interface Material {
  readonly anchorPem: string;
  readonly server: { readonly keyPem: string; readonly chainPem: string; readonly name: string };
  readonly client: { readonly keyPem: string; readonly chainPem: string };
  readonly rsaKeyPem: string;
}

const material = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as Material;
const ROUNDS = 5;
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Median CPU µs per call of `fn` over ROUNDS rounds of at least `ms` each (one warm-up). */
function cpuMicros(fn: () => void, ms = 250): number {
  const rounds: number[] = [];
  for (let r = 0; r <= ROUNDS; r++) {
    const c0 = process.cpuUsage();
    const end = process.hrtime.bigint() + BigInt(ms) * 1_000_000n;
    let n = 0;
    while (process.hrtime.bigint() < end) {
      for (let i = 0; i < 20; i++) fn();
      n += 20;
    }
    const c = process.cpuUsage(c0);
    if (r > 0) rounds.push((c.user + c.system) / n);
  }
  return median(rounds);
}

async function cpuMicrosAsync(fn: () => Promise<unknown>, n: number): Promise<number> {
  const rounds: number[] = [];
  for (let r = 0; r <= ROUNDS; r++) {
    const c0 = process.cpuUsage();
    for (let i = 0; i < n; i++) await fn();
    const c = process.cpuUsage(c0);
    if (r > 0) rounds.push((c.user + c.system) / n);
  }
  return median(rounds);
}

const data = Buffer.alloc(400, 7);
const ecKey = createPrivateKey(material.client.keyPem);
const ecPub = createPublicKey(ecKey);
const rsaKey = createPrivateKey(material.rsaKeyPem);
const rsaPub = createPublicKey(rsaKey);
const ecSig = sign('sha256', data, { key: ecKey, dsaEncoding: 'der' });
const rsaSig = sign('sha256', data, rsaKey);

const raw = {
  signP256: cpuMicros(() => sign('sha256', data, ecKey)),
  verifyP256: cpuMicros(() => verify('sha256', data, { key: ecPub, dsaEncoding: 'der' }, ecSig)),
  verifyRs256: cpuMicros(() => verify('sha256', data, rsaPub, rsaSig)),
};

// Node 26 warns (DEP0204) about KeyObject.from of a non-extractable key: the old path is measured
// as it was, the warning is not what is measured.
process.noDeprecation = true;
const spki = ecPub.export({ type: 'spki', format: 'der' });
const point = new Uint8Array(spki.subarray(spki.length - 65));
const rawImport = async (): Promise<KeyObject> =>
  KeyObject.from(
    await webcrypto.subtle.importKey('raw', point, { name: 'ECDSA', namedCurve: 'P-256' }, false, [
      'verify',
    ]),
  );
const derImport = (): KeyObject => createPublicKey({ key: spki, format: 'der', type: 'spki' });
const verifyWith = (key: KeyObject): void => {
  if (!verify('sha256', data, { key, dsaEncoding: 'der' }, ecSig)) throw new Error('no verify');
};
const csrImport = {
  webcryptoRaw: await cpuMicrosAsync(rawImport, 2000),
  webcryptoRawVerify: await cpuMicrosAsync(async () => verifyWith(await rawImport()), 1000),
  derSpki: cpuMicros(derImport),
  derSpkiVerify: cpuMicros(() => verifyWith(derImport())),
};

function groupAvailable(group: string): boolean {
  try {
    createSecureContext({ minVersion: 'TLSv1.3', ecdhCurve: group });
    return true;
  } catch {
    return false;
  }
}

/**
 * CPU µs per full mTLS handshake, both ends in this process, offering and accepting only `group`.
 * The client never offers a session, so every connection is a full handshake (as the proxy's
 * inbound, which refuses resumption).
 */
async function handshakeCpu(group: string, connections: number): Promise<number> {
  const server = createServer(
    {
      minVersion: 'TLSv1.3',
      ecdhCurve: group,
      key: material.server.keyPem,
      cert: material.server.chainPem,
      ca: material.anchorPem,
      requestCert: true,
      rejectUnauthorized: true,
    },
    (s) => s.end('x'),
  );
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  // One client context for every connection, as a proxy holds one: making an SSL_CTX per
  // connection (OpenSSL 3.0's is slow) would be measured instead of the handshake.
  const clientContext = createSecureContext({
    minVersion: 'TLSv1.3',
    ecdhCurve: group,
    ca: material.anchorPem,
    key: material.client.keyPem,
    cert: material.client.chainPem,
  });
  const once1 = async (): Promise<void> => {
    const socket = connect({
      host: '127.0.0.1',
      port,
      minVersion: 'TLSv1.3',
      secureContext: clientContext,
      servername: material.server.name,
      checkServerIdentity: () => undefined,
    });
    socket.once('secureConnect', () => {
      const kex = (socket.getEphemeralKeyInfo() as { name?: string } | null)?.name;
      if (socket.authorized && kex === group) handshakes++;
    });
    socket.resume();
    socket.on('error', () => undefined);
    await once(socket, 'close');
  };
  let handshakes = 0;
  try {
    for (let i = 0; i < 20; i++) await once1(); // warm-up
    const c0 = process.cpuUsage();
    for (let i = 0; i < connections; i++) await once1();
    const c = process.cpuUsage(c0);
    // Every connection must have been an authorized handshake on `group`, or nothing was measured.
    if (handshakes !== connections + 20) {
      throw new Error(`${handshakes} good ${group} handshakes of ${connections + 20}`);
    }
    return (c.user + c.system) / connections;
  } finally {
    server.close();
  }
}

// Alternating rounds, the hybrid's ratio to X25519 taken within each: the machine drifts.
const hybridAvailable = groupAvailable('X25519MLKEM768');
const rounds: { x25519: number; hybrid: number | null }[] = [];
for (let r = 0; r < ROUNDS; r++) {
  const x25519 = await handshakeCpu('X25519', 100);
  rounds.push({
    x25519,
    hybrid: hybridAvailable ? await handshakeCpu('X25519MLKEM768', 100) : null,
  });
}
const handshake = {
  x25519: median(rounds.map((r) => r.x25519)),
  hybrid: hybridAvailable ? median(rounds.map((r) => r.hybrid!)) : null,
  hybridRatio: hybridAvailable ? median(rounds.map((r) => r.hybrid! / r.x25519)) : null,
};

process.stdout.write(
  `${JSON.stringify({
    node: process.version,
    openssl: process.versions.openssl,
    raw: { ...raw, boundPerCore: 1e6 / (raw.signP256 + raw.verifyP256 + raw.verifyRs256) },
    csrImport,
    handshake,
    memory: startMemory,
  })}\n`,
);
