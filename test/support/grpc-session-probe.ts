/**
 * A small process that counts, by heap snapshot, the server-side HTTP/2 sessions a CertifyServer
 * keeps after its connections close: it opens and closes `SESSIONS` connections (as proxies
 * do, one per renewal), waits until the server's own accounting has seen each close, and snapshots
 * its own heap before and after. Run by the gRPC server test as a child process so that a
 * snapshot covers a heap of a few MB, not the test runner's (seconds on a loaded machine).
 * Prints `{"before":N,"after":N,"sessions":N}`.
 *
 *   node --import tsx test/support/grpc-session-probe.ts
 */
import 'reflect-metadata';
import { generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import { rm } from 'node:fs/promises';
import { connect as http2Connect } from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { writeHeapSnapshot } from 'node:v8';
import { MeshidError, systemRandom, toPem } from '../../core/index.js';
import { silentLogger } from '../../core/logger.js';
import { createIntermediateCa, createRootCa } from '../../core/pki.js';
import { LeafSigner, randomSerial } from '../../identity-ca/issuer/leaf.js';
import { CertifyServer } from '../../identity-ca/server/grpc-server.js';
import { summarizeHeapFile } from './heap-snapshot.js';

const NAME = 'ca.test.example';
const SESSIONS = 20;

async function sessionsInHeap(): Promise<number> {
  const file = writeHeapSnapshot(join(tmpdir(), `meshid-grpc-probe-${process.pid}.heapsnapshot`));
  try {
    return (await summarizeHeapFile(file)).get('object:ServerHttp2Session')?.count ?? 0;
  } finally {
    await rm(file, { force: true });
  }
}

const now = Date.now();
const root = await createRootCa({
  commonName: 'probe-root',
  notBefore: now - 3_600_000,
  notAfter: now + 3_600_000,
});
const issuer = await createIntermediateCa({
  issuer: root,
  commonName: NAME,
  notBefore: now - 3_600_000,
  notAfter: now + 3_600_000,
});
const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const leaf = new LeafSigner(issuer.certificateDer, issuer.privateKey).sign({
  spki: publicKey.export({ format: 'der', type: 'spki' }),
  dnsName: NAME,
  uri: 'spiffe://test/ns/a/sa/b',
  serial: randomSerial(systemRandom),
  notBefore: now - 60_000,
  notAfter: now + 3_600_000,
});
const server = new CertifyServer({
  handler: () => Promise.reject(new MeshidError('ERR_REQUEST_INVALID', 'probe')),
  logger: silentLogger(),
  maxRequestBytes: 1024,
  credentials: {
    keyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    certChainPem: toPem(leaf, 'CERTIFICATE') + issuer.certificatePem,
  },
});
const address = await server.listen({ host: '127.0.0.1', port: 0 });

async function openAndClose(): Promise<void> {
  const socket = tlsConnect({
    host: address.host,
    port: address.port,
    servername: NAME,
    ca: root.certificatePem,
    ALPNProtocols: ['h2'],
  });
  await once(socket, 'secureConnect');
  const session = http2Connect(`https://${NAME}`, { createConnection: () => socket });
  await once(session, 'remoteSettings');
  await new Promise<void>((resolve) => session.close(resolve));
}

/** Until the server's accounting has seen every session close (a condition, not a time). */
async function serverSawEveryClose(): Promise<void> {
  while (server.openSessions > 0) await new Promise((r) => setTimeout(r, 10));
}

// One connection first, so that whatever node makes once per server is in the baseline.
await openAndClose();
await serverSawEveryClose();
const before = await sessionsInHeap();
for (let i = 0; i < SESSIONS; i++) await openAndClose();
await serverSawEveryClose();
const after = await sessionsInHeap();
await server.close(100);
process.stdout.write(`${JSON.stringify({ before, after, sessions: SESSIONS })}\n`);
