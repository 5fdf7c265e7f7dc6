/**
 * Workloads under load for rotation tests: each holds a key made in the test, renews its leaf from
 * the real CA over Certify (verifying the CA against the bundle it has loaded), and the pairs talk
 * over direct TLS 1.3 mTLS, each side verifying the other against the bundle it has loaded.
 *
 * Each workload loads the anchors bundle the way a proxy does (re-reading its source every
 * `reloadMs`, so there is a lag like the kubelet's and the file watch's) and serves a small admin
 * endpoint with the proxy's `/identity` shape (bundle fingerprint, certificate notBefore and
 * chain), which is what the rotation controller reads. This is a test double of the proxy's
 * identity reporting; the TLS, the certificates and the CA are real.
 */
import { strict as assert } from 'node:assert';
import { createHash, generateKeyPairSync, X509Certificate } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { once } from 'node:events';
import { createServer as createHttpServer } from 'node:http';
import type { Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  connect as tlsConnect,
  createServer as createTlsServer,
  createSecureContext,
} from 'node:tls';
import type { Server as TlsServer, TLSSocket } from 'node:tls';
import { CertifyClient, createCsr, toPem } from '../../core/index.js';
import type { Address } from '../../core/index.js';
import { CA_IDENTITY } from './state.js';

/** Counters of a load run. */
export interface LoadStats {
  certifyOk: number;
  certifyFailed: number;
  /**
   * Certify calls the CA shed under load (RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, or a connection
   * reset or refused: UNAVAILABLE with no certificate problem named). The workload keeps its
   * certificate and the next renewal, {@link RotationLoadOptions.renewMs} later, tries again, as
   * a proxy retries; a trust failure (the CA's chain not verified) counts in `certifyFailed`.
   */
  certifyShed: number;
  handshakesOk: number;
  handshakesFailed: number;
  /** Requests through a real proxy's inbound (when `proxyInbound` is given). */
  proxyRequestsOk: number;
  proxyRequestsFailed: number;
  errors: string[];
  /** Distinct bundle fingerprints seen, in order. */
  bundles: string[];
}

interface Workload {
  readonly identity: string;
  keyPem: string;
  chainPem: string;
  notBefore: number;
  bundlePem: string;
}

/** What {@link startRotationLoad} needs. */
export interface RotationLoadOptions {
  readonly ca: Address;
  /** The anchors bundle text as the workloads' mounted file would show it now. */
  readonly readBundle: () => Promise<string>;
  /** A token for `<sa>` in `ns`. */
  readonly token: (ns: string, sa: string) => Promise<string>;
  readonly namespace: string;
  /** Service accounts: the first is the client, the second the server. */
  readonly serviceAccounts: readonly [string, string];
  readonly identityOf: (ns: string, sa: string) => string;
  /** Renew each leaf this often (well inside its lifetime). */
  readonly renewMs: number;
  /** Re-read the bundle this often. */
  readonly reloadMs: number;
  /** Pause between mTLS connections. */
  readonly connectMs: number;
  /**
   * A real `meshid proxy` inbound in front of an HTTP app: the client workload also sends it
   * HTTP requests over mTLS (SNI = the proxy's identity), each answered 200 by the app.
   */
  readonly proxyInbound?: { readonly port: number; readonly identity: string };
}

/** A running load. */
export interface RotationLoad {
  readonly stats: LoadStats;
  /** The admin URLs of the workloads (`--proxy-admin`). */
  readonly adminUrls: readonly string[];
  stop(): Promise<LoadStats>;
}

/**
 * Asserts a load run had no failure at all and did enough to mean something; then lets the
 * workloads run a little longer under the bundle in force (call after the rotation finished).
 *
 * @example
 * ```ts
 * await finishLoad(load);
 * ```
 */
export async function finishLoad(load: RotationLoad): Promise<LoadStats> {
  const okBefore = load.stats.handshakesOk;
  // Bounded, generously: 20 handshakes take well under a second on an idle machine.
  const deadline = Date.now() + 90_000;
  while (load.stats.handshakesOk <= okBefore + 20 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
  }
  const stats = await load.stop();
  assert.deepEqual(stats.errors, []);
  assert.equal(stats.certifyFailed, 0);
  assert.equal(stats.handshakesFailed, 0);
  assert.equal(stats.proxyRequestsFailed, 0);
  assert.ok(stats.handshakesOk > okBefore + 20, 'handshakes under the final bundle');
  assert.ok(stats.certifyOk >= 10, `Certify calls: ${stats.certifyOk}`);
  assert.ok(
    stats.certifyShed < stats.certifyOk,
    `Certify calls shed under load: ${stats.certifyShed} of ${stats.certifyShed + stats.certifyOk}`,
  );
  assert.ok(stats.handshakesOk >= 100, `handshakes: ${stats.handshakesOk}`);
  return stats;
}

/** gRPC statuses a loaded CA answers with; each is retried by the next renewal. */
const RESOURCE_EXHAUSTED = 8;
const DEADLINE_EXCEEDED = 4;
const UNAVAILABLE = 14;

/** Whether a Certify failure is the CA shedding load, not a trust failure. */
function shedUnderLoad(err: unknown): boolean {
  const { code, details } = err as { code?: number; details?: string };
  if (code === RESOURCE_EXHAUSTED || code === DEADLINE_EXCEEDED) return true;
  return (
    code === UNAVAILABLE &&
    !/certificate|verify|self[- ]signed|unknown ca|alert|handshake failure/i.test(details ?? '')
  );
}

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');

/**
 * A connection of the load that stalls this long fails (counted, with the reason) instead of
 * hanging the run. Generous: on a machine kept busy by another test run a handshake between
 * two processes can pause for seconds without anything being wrong (issue 20).
 */
const STALL_MS = 30_000;
const bound = (socket: TLSSocket): void => {
  socket.setTimeout(STALL_MS, () =>
    socket.destroy(new Error(`no progress for ${STALL_MS / 1000} s (stalled connection)`)),
  );
};

/**
 * Starts two workloads (client and server) and the load between them.
 *
 * @example
 * ```ts
 * const load = await startRotationLoad({ ca, readBundle, token, namespace: 'emojivoto', serviceAccounts: ['web', 'voting'], identityOf, renewMs: 1000, reloadMs: 200, connectMs: 20 });
 * ```
 */
export async function startRotationLoad(o: RotationLoadOptions): Promise<RotationLoad> {
  const stats: LoadStats = {
    certifyOk: 0,
    certifyFailed: 0,
    certifyShed: 0,
    handshakesOk: 0,
    handshakesFailed: 0,
    proxyRequestsOk: 0,
    proxyRequestsFailed: 0,
    errors: [],
    bundles: [],
  };
  const fail = (what: string, err: unknown): void => {
    if (stats.errors.length < 20)
      stats.errors.push(`${what}: ${err instanceof Error ? err.message : String(err)}`);
  };
  const initialBundle = await o.readBundle();
  stats.bundles.push(sha256(initialBundle));
  const tokens = await Promise.all(o.serviceAccounts.map((sa) => o.token(o.namespace, sa)));
  const workloads: Workload[] = o.serviceAccounts.map((sa) => ({
    identity: o.identityOf(o.namespace, sa),
    keyPem: '',
    chainPem: '',
    notBefore: 0,
    bundlePem: initialBundle,
  }));

  const certify = async (w: Workload, token: string): Promise<void> => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const client = new CertifyClient({
      address: o.ca,
      serverName: CA_IDENTITY,
      anchorsPem: w.bundlePem,
    });
    try {
      const res = await client.certify({
        identity: w.identity,
        token: Buffer.from(token),
        certificateSigningRequest: createCsr({
          privateKey: privateKey as KeyObject,
          commonName: w.identity,
          dnsNames: [w.identity],
        }),
      });
      w.chainPem = [res.leafCertificate, ...res.intermediateCertificates]
        .map((der) => toPem(der, 'CERTIFICATE'))
        .join('');
      w.keyPem = privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
      w.notBefore = Date.parse(new X509Certificate(w.chainPem).validFrom);
      stats.certifyOk++;
    } catch (err) {
      if (shedUnderLoad(err)) stats.certifyShed++;
      else {
        stats.certifyFailed++;
        fail(`Certify ${w.identity}`, err);
      }
    } finally {
      client.close();
    }
  };
  await Promise.all(workloads.map((w, i) => certify(w, tokens[i]!)));

  const [clientW, serverW] = workloads as [Workload, Workload];
  const contextOf = (w: Workload) =>
    createSecureContext({
      key: w.keyPem,
      cert: w.chainPem,
      ca: w.bundlePem,
      minVersion: 'TLSv1.3',
    });
  const server: TlsServer = createTlsServer(
    {
      minVersion: 'TLSv1.3',
      requestCert: true,
      rejectUnauthorized: true,
      SNICallback: (_name, cb) => cb(null, contextOf(serverW)),
      ...{ key: serverW.keyPem, cert: serverW.chainPem, ca: serverW.bundlePem },
    },
    (socket) => {
      socket.end('pong');
    },
  );
  server.on('tlsClientError', (err) => {
    stats.handshakesFailed++;
    fail('server handshake', err);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;

  const admins: HttpServer[] = [];
  const adminUrls: string[] = [];
  for (const w of workloads) {
    const admin = createHttpServer((req, res) => {
      if (req.url !== '/identity') {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end(
        JSON.stringify({
          identity: w.identity,
          certificate: { notBefore: new Date(w.notBefore).toISOString(), chainPem: w.chainPem },
          trustAnchors: { fingerprint: sha256(w.bundlePem) },
        }),
      );
    });
    admin.listen(0, '127.0.0.1');
    await once(admin, 'listening');
    admins.push(admin);
    adminUrls.push(`http://127.0.0.1:${(admin.address() as AddressInfo).port}`);
  }

  let running = true;
  const loops: Promise<void>[] = [];
  const every = (ms: number, fn: () => Promise<void>): void => {
    loops.push(
      (async () => {
        while (running) {
          await fn();
          await new Promise((r) => setTimeout(r, ms));
        }
      })(),
    );
  };
  every(o.reloadMs, async () => {
    try {
      const text = await o.readBundle();
      for (const w of workloads) w.bundlePem = text;
      const fp = sha256(text);
      if (stats.bundles[stats.bundles.length - 1] !== fp) stats.bundles.push(fp);
    } catch (err) {
      fail('bundle reload', err);
    }
  });
  workloads.forEach((w, i) => every(o.renewMs, () => certify(w, tokens[i]!)));
  every(o.connectMs, async () => {
    let socket: TLSSocket | undefined;
    try {
      socket = tlsConnect({
        host: '127.0.0.1',
        port,
        servername: serverW.identity,
        key: clientW.keyPem,
        cert: clientW.chainPem,
        ca: clientW.bundlePem,
        minVersion: 'TLSv1.3',
        checkServerIdentity: (_host, cert) =>
          (cert.subjectaltname ?? '').split(', ').includes(`DNS:${serverW.identity}`)
            ? undefined
            : new Error(`server is not ${serverW.identity}`),
      });
      bound(socket);
      await once(socket, 'secureConnect');
      const chunks: Buffer[] = [];
      socket.on('data', (d: Buffer) => chunks.push(d));
      await once(socket, 'end');
      if (Buffer.concat(chunks).toString() !== 'pong') throw new Error('no pong');
      stats.handshakesOk++;
    } catch (err) {
      stats.handshakesFailed++;
      fail('client handshake', err);
    } finally {
      socket?.destroy();
    }
  });

  const target = o.proxyInbound;
  if (target !== undefined) {
    every(o.connectMs * 5, async () => {
      let socket: TLSSocket | undefined;
      try {
        socket = tlsConnect({
          host: '127.0.0.1',
          port: target.port,
          servername: target.identity,
          key: clientW.keyPem,
          cert: clientW.chainPem,
          ca: clientW.bundlePem,
          minVersion: 'TLSv1.3',
          checkServerIdentity: (_host, cert) =>
            (cert.subjectaltname ?? '').split(', ').includes(`DNS:${target.identity}`)
              ? undefined
              : new Error(`proxy is not ${target.identity}`),
        });
        bound(socket);
        await once(socket, 'secureConnect');
        socket.write('GET /ping HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n');
        const chunks: Buffer[] = [];
        socket.on('data', (d: Buffer) => chunks.push(d));
        await once(socket, 'end');
        const head = Buffer.concat(chunks).toString('latin1');
        if (!head.startsWith('HTTP/1.1 200'))
          throw new Error(`proxy answered ${head.slice(0, 40)}`);
        stats.proxyRequestsOk++;
      } catch (err) {
        stats.proxyRequestsFailed++;
        fail('request through the proxy', err);
      } finally {
        socket?.destroy();
      }
    });
  }

  return {
    stats,
    adminUrls,
    async stop() {
      running = false;
      await Promise.all(loops);
      server.close();
      for (const a of admins) a.close();
      return stats;
    },
  };
}
