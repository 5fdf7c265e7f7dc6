/**
 * Backpressure on the wire: a real CertifyServer (TLS 1.3, HTTP/2) with admission control, called
 * by the proxy's own Certify client. What a refused caller sees (RESOURCE_EXHAUSTED, the
 * `retry-after-ms` trailer and the same hint in the message), and that a caller presenting a
 * valid certificate for the identity it asks for waits behind first issuance.
 */
import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { generateKeyPairSync } from 'node:crypto';
import { connect as tcpConnect } from 'node:net';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { KeyObject } from 'node:crypto';
import { GrpcStatus, systemClock, systemRandom, toPem } from '../../../core/index.js';
import { silentLogger } from '../../../core/logger.js';
import type { Address, CertifyRequest, CertifyResponse } from '../../../core/index.js';
import { LeafSigner, randomSerial } from '../../../identity-ca/issuer/leaf.js';
import { Admission } from '../../../identity-ca/server/admission.js';
import type { AdmissionSettings } from '../../../identity-ca/server/admission.js';
import { CertifyServer } from '../../../identity-ca/server/grpc-server.js';
import type { CertifyServerOptions } from '../../../identity-ca/server/grpc-server.js';
import { Http2CertifyClient } from '../../../proxy/index.js';
import { CertifyCallFailed } from '../../../proxy/identity/certify-h2.js';
import type { PresentedCertificate } from '../../../proxy/index.js';
import { captureClientHello } from '../../support/client-hello.js';
import { openFrom } from '../../support/hostile-clients.js';
import { ca, root } from './fixtures/pki.js';

const NAME = 'ca.test.example';
const HOUR = 3_600_000;

describe('identity-ca/server: backpressure on the wire', function () {
  this.timeout(20_000);
  let anchorsPem: string;
  let issuer: Awaited<ReturnType<typeof ca>>;
  let serving: { keyPem: string; certChainPem: string };
  const servers: CertifyServer[] = [];
  const clients: Http2CertifyClient[] = [];

  function leaf(dnsName: string, publicKey: KeyObject): Buffer {
    return new LeafSigner(issuer.certificateDer, issuer.privateKey).sign({
      spki: publicKey.export({ format: 'der', type: 'spki' }),
      dnsName,
      uri: 'spiffe://test/ns/a/sa/b',
      serial: randomSerial(systemRandom),
      notBefore: Date.now() - 60_000,
      notAfter: Date.now() + HOUR,
    });
  }

  /** A certificate for `identity` from the test issuer, as a proxy holds it. */
  function held(identity: string): PresentedCertificate {
    const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    return {
      keyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
      certChainPem: toPem(leaf(identity, publicKey), 'CERTIFICATE') + issuer.certificatePem,
      serialHex: identity,
    };
  }

  before(async () => {
    const r = await root('test-root', {
      notBefore: Date.now() - HOUR,
      notAfter: Date.now() + HOUR,
    });
    anchorsPem = r.certificatePem;
    issuer = await ca(r, 'issuer', { notBefore: Date.now() - HOUR, notAfter: Date.now() + HOUR });
    const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    serving = {
      keyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
      certChainPem: toPem(leaf(NAME, publicKey), 'CERTIFICATE') + issuer.certificatePem,
    };
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    await Promise.all(servers.splice(0).map((s) => s.close(100)));
  });

  /** A server whose handler holds every call until `releaseAll`, recording the order. */
  async function start(
    settings: Partial<AdmissionSettings>,
    serverOptions: Partial<CertifyServerOptions> = {},
  ): Promise<{
    address: Address;
    server: CertifyServer;
    order: string[];
    dropped: string[];
    started: () => number;
    queued: () => number;
    releaseAll: () => void;
  }> {
    const order: string[] = [];
    const dropped: string[] = [];
    const pending: (() => void)[] = [];
    let holding = true;
    let admission: Admission;
    const server = new CertifyServer({
      handler: async (req: CertifyRequest): Promise<CertifyResponse> => {
        order.push(req.identity);
        if (holding) await new Promise<void>((r) => pending.push(r));
        return {
          leafCertificate: Buffer.from(`leaf for ${req.identity}`),
          intermediateCertificates: [],
          validUntil: 1_900_000_000_000,
        };
      },
      logger: silentLogger(),
      maxRequestBytes: 4096,
      credentials: { ...serving, clientCaPem: anchorsPem },
      admission: (admission = new Admission(
        {
          maxInFlight: 1,
          maxQueue: 10,
          sourceBurst: 0,
          sourcePerSecond: 1,
          identityBurst: 0,
          identityPerSecond: 1,
          ...settings,
        },
        systemClock,
        undefined,
        (why, stage) => dropped.push(`${why}/${stage}`),
      )),
      ...serverOptions,
    });
    servers.push(server);
    const address = await server.listen({ host: '127.0.0.1', port: 0 });
    return {
      address,
      server,
      order,
      dropped,
      started: () => order.length,
      queued: () => admission.load.queued,
      releaseAll: () => {
        holding = false;
        for (const r of pending.splice(0)) r();
      },
    };
  }

  function client(address: Address, presented?: PresentedCertificate): Http2CertifyClient {
    const c = new Http2CertifyClient({
      address,
      serverName: NAME,
      anchorsPem,
      ...(presented === undefined ? {} : { clientCertificate: () => presented }),
    });
    clients.push(c);
    return c;
  }

  const req = (identity: string): CertifyRequest => ({
    identity,
    token: Buffer.from('t'),
    certificateSigningRequest: Buffer.from('c'),
  });

  async function until(what: string, cond: () => boolean): Promise<void> {
    const deadline = Date.now() + 10_000;
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  it('answers RESOURCE_EXHAUSTED with the retry-after-ms trailer and the hint in the message when the queue is full', async () => {
    const s = await start({ maxQueue: 0 });
    const c = client(s.address);
    const first = c.certify(req('a'));
    await until('the first call to run', () => s.started() === 1);
    const err = await c.certify(req('b')).then(
      () => assert.fail('admitted'),
      (e: unknown) => e as CertifyCallFailed,
    );
    assert.ok(err instanceof CertifyCallFailed);
    assert.equal(err.code, GrpcStatus.RESOURCE_EXHAUSTED);
    assert.match(err.details, /the CA is overloaded; retry after (\d+) ms/);
    const inMessage = Number(/retry after (\d+) ms/.exec(err.details)![1]);
    assert.equal(err.retryAfterMs, inMessage);
    assert.ok(inMessage >= 50 && inMessage <= 30_000);
    s.releaseAll();
    assert.match((await first).leafCertificate.toString(), /leaf for a/);
    assert.deepEqual(s.order, ['a'], 'the refused call never reached the handler');
  });

  it('drops a call whose deadline passed while it waited for admission: the handler never sees it, the caller gets DEADLINE_EXCEEDED', async () => {
    const s = await start({ maxInFlight: 1 });
    const c = client(s.address);
    const first = c.certify(req('a'));
    await until('the first call to run', () => s.started() === 1);
    const err = (await c.certify(req('b'), 300).catch((e: unknown) => e)) as CertifyCallFailed;
    assert.equal(err.code, GrpcStatus.DEADLINE_EXCEEDED);
    await until('the drop to be counted', () => s.dropped.length === 1);
    assert.match(s.dropped[0]!, /^(deadline|gone)\/queue$/);
    assert.equal(s.queued(), 0, 'it left the queue when its deadline passed');
    s.releaseAll();
    assert.match((await first).leafCertificate.toString(), /leaf for a/);
    assert.deepEqual(s.order, ['a'], 'the expired call never reached the handler');
  });

  describe('the handshake limit', () => {
    const raws: Socket[] = [];
    afterEach(() => {
      for (const r of raws.splice(0)) r.destroy();
    });

    /**
     * A TCP connection that sends a real ClientHello and then never answers the server's reply:
     * it holds a handshake slot (one that sends nothing holds none: the gate offers a connection
     * only once its ClientHello has arrived).
     */
    async function silentConnection(address: Address, from?: string): Promise<Socket> {
      const hello = await captureClientHello();
      const raw = tcpConnect({
        host: address.host,
        port: address.port,
        ...(from === undefined ? {} : { localAddress: from }),
      });
      raw.on('error', () => undefined);
      raws.push(raw);
      await new Promise<void>((resolve) => raw.once('connect', () => resolve()));
      raw.write(hello);
      return raw;
    }

    it('holds a connection beyond maxHandshakes unread until a slot frees, then serves it', async () => {
      const refused: string[] = [];
      const waited: number[] = [];
      const s = await start(
        {},
        {
          handshakes: { maxHandshakes: 1, maxWaitMs: 20_000, maxWaiting: 10 },
          observeConnections: { refused: (w) => refused.push(w), waited: (x) => waited.push(x) },
        },
      );
      s.releaseAll();
      const raw = await silentConnection(s.address);
      await until(
        'the silent connection to hold the slot',
        () => s.server.handshakeLoad.handshaking === 1,
      );
      const c = client(s.address);
      const call = c.certify(req('a'), 10_000);
      await until('the call to wait for a slot', () => s.server.handshakeLoad.waiting === 1);
      assert.equal(s.started(), 0, 'nothing reached the handler while its connection waited');
      raw.destroy();
      assert.match((await call).leafCertificate.toString(), /leaf for a/);
      assert.deepEqual(refused, []);
      assert.equal(waited.length, 2, 'both connections were counted');
      assert.ok(waited[1]! > 0, 'the second one waited');
      assert.deepEqual(s.server.handshakeLoad, { handshaking: 0, waiting: 0 });
    });

    it('resets a connection that waited longer than maxWaitMs: the caller sees UNAVAILABLE at once, not at its deadline', async () => {
      const refused: string[] = [];
      const s = await start(
        {},
        {
          handshakes: { maxHandshakes: 1, maxWaitMs: 200, maxWaiting: 10 },
          observeConnections: { refused: (w) => refused.push(w), waited: () => undefined },
        },
      );
      s.releaseAll();
      await silentConnection(s.address);
      await until(
        'the silent connection to hold the slot',
        () => s.server.handshakeLoad.handshaking === 1,
      );
      const started = Date.now();
      const err = (await client(s.address)
        .certify(req('a'), 30_000)
        .catch((e: unknown) => e)) as CertifyCallFailed;
      assert.ok(err instanceof CertifyCallFailed, String(err));
      assert.equal(err.code, GrpcStatus.UNAVAILABLE);
      assert.ok(Date.now() - started < 20_000, 'refused long before the 30 s deadline');
      assert.deepEqual(refused, ['wait-timeout']);
      assert.equal(s.started(), 0);
    });

    it('lets one source hold only its share of the slots: silent connections from one address do not keep others from their certificates', async () => {
      const s = await start(
        {},
        {
          handshakes: { maxHandshakes: 3, maxWaitMs: 20_000, maxWaiting: 100, maxPerSource: 2 },
          observeConnections: { refused: () => undefined, waited: () => undefined },
        },
      );
      s.releaseAll();
      for (let i = 0; i < 6; i++) await silentConnection(s.address, '127.0.0.2');
      await until(
        'the silent source to hold its share and queue the rest',
        () => s.server.handshakeLoad.handshaking === 2 && s.server.handshakeLoad.waiting === 4,
      );
      // The caller from 127.0.0.1 is served at once although four connections waited before it.
      const res = await client(s.address).certify(req('a'), 10_000);
      assert.match(res.leafCertificate.toString(), /leaf for a/);
      assert.equal(s.server.handshakeLoad.handshaking, 2, 'still only the silent share');
    });

    it('counts established connections per address after their handshake, closes one beyond the share, and gives each back once', async () => {
      const refused: string[] = [];
      const s = await start(
        {},
        {
          handshakes: { maxHandshakes: 4, maxWaitMs: 20_000, maxWaiting: 100 },
          maxConnectionsPerPeer: 2,
          observeConnections: { refused: (w) => refused.push(w), waited: () => undefined },
        },
      );
      s.releaseAll();
      const counts = s.server.establishedByPeer!;
      const tls = { servername: NAME, ca: anchorsPem, ALPNProtocols: ['h2'] };
      const held = [
        await openFrom(s.address, '127.0.0.2', tls),
        await openFrom(s.address, '127.0.0.2', tls),
      ];
      await until('two established', () => counts.heldBy('127.0.0.2') === 2);
      // A connection stalled mid-handshake holds a handshake slot, not an established one.
      const stalled = await silentConnection(s.address, '127.0.0.2');
      await until('the stalled handshake running', () => s.server.handshakeLoad.handshaking === 1);
      const beyond = await openFrom(s.address, '127.0.0.2', tls);
      assert.equal((beyond.socket as TLSSocket).alpnProtocol, 'h2', 'its handshake finished');
      assert.match(await beyond.closed, /^(closed|reset)$/);
      assert.deepEqual(refused, ['per-peer']);
      assert.equal(counts.heldBy('127.0.0.2'), 2);
      // Another address is served meanwhile.
      const res = await client(s.address).certify(req('a'), 10_000);
      assert.match(res.leafCertificate.toString(), /leaf for a/);
      assert.equal(counts.heldBy('127.0.0.1'), 1);
      stalled.destroy();
      held[0]!.socket.destroy();
      await until('one given back', () => counts.heldBy('127.0.0.2') === 1);
      held[1]!.socket.destroy();
      await until('both given back', () => counts.heldBy('127.0.0.2') === 0);
      assert.equal(counts.inUse, 1, 'only the Certify client from 127.0.0.1 is left');
      for (const c of clients.splice(0)) c.close();
      await until('all given back', () => counts.inUse === 0);
    });

    it('resets a newcomer at once when maxWaiting connections already wait', async () => {
      const refused: string[] = [];
      const s = await start(
        {},
        {
          handshakes: { maxHandshakes: 1, maxWaitMs: 20_000, maxWaiting: 1 },
          observeConnections: { refused: (w) => refused.push(w), waited: () => undefined },
        },
      );
      await silentConnection(s.address);
      await until('the slot to be held', () => s.server.handshakeLoad.handshaking === 1);
      await silentConnection(s.address);
      await until('one to wait', () => s.server.handshakeLoad.waiting === 1);
      const err = (await client(s.address)
        .certify(req('a'), 30_000)
        .catch((e: unknown) => e)) as CertifyCallFailed;
      assert.equal(err.code, GrpcStatus.UNAVAILABLE);
      assert.deepEqual(refused, ['queue-full']);
    });
  });

  it('answers RESOURCE_EXHAUSTED with a hint when a source is over its rate, before the handler', async () => {
    const s = await start({ sourceBurst: 2, sourcePerSecond: 1 });
    s.releaseAll();
    const c = client(s.address);
    await c.certify(req('a'));
    await c.certify(req('a'));
    const err = (await c.certify(req('a')).catch((e: unknown) => e)) as CertifyCallFailed;
    assert.equal(err.code, GrpcStatus.RESOURCE_EXHAUSTED);
    assert.match(err.details, /too many Certify calls from 127\.0\.0\.1; retry after \d+ ms/);
    assert.ok(err.retryAfterMs! > 0 && err.retryAfterMs! <= 1000, String(err.retryAfterMs));
    assert.equal(s.order.length, 2);
  });

  it('serves a first issuance before a renewal that waited longer (the renewal presents a valid certificate for its identity)', async () => {
    const s = await start({});
    const blocker = client(s.address).certify(req('blocker'));
    await until('the blocker to run', () => s.started() === 1);
    const renewal = client(s.address, held('renewing')).certify(req('renewing'));
    // A valid certificate for another identity does not make a renewal of this one.
    await until('the renewal to wait', () => s.queued() === 1);
    const other = client(s.address, held('someone-else')).certify(req('claims-renewal'));
    await until('the other to wait', () => s.queued() === 2);
    const fresh = client(s.address).certify(req('fresh'));
    await until('all three to wait', () => s.queued() === 3);
    s.releaseAll();
    await Promise.all([blocker, renewal, other, fresh]);
    assert.deepEqual(s.order, ['blocker', 'claims-renewal', 'fresh', 'renewing']);
  });

  it('takes a certificate from another CA as no renewal', async () => {
    const s = await start({});
    const foreignRoot = await root('foreign', {
      notBefore: Date.now() - HOUR,
      notAfter: Date.now() + HOUR,
    });
    const foreign = await ca(foreignRoot, 'foreign-issuer', {
      notBefore: Date.now() - HOUR,
      notAfter: Date.now() + HOUR,
    });
    const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const forged: PresentedCertificate = {
      keyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
      certChainPem:
        toPem(
          new LeafSigner(foreign.certificateDer, foreign.privateKey).sign({
            spki: publicKey.export({ format: 'der', type: 'spki' }),
            dnsName: 'renewing',
            uri: 'spiffe://test/ns/a/sa/b',
            serial: randomSerial(systemRandom),
            notBefore: Date.now() - 60_000,
            notAfter: Date.now() + HOUR,
          }),
          'CERTIFICATE',
        ) + foreign.certificatePem,
      serialHex: 'forged',
    };
    const blocker = client(s.address).certify(req('blocker'));
    await until('the blocker to run', () => s.started() === 1);
    const genuine = client(s.address, held('renewing')).certify(req('renewing'));
    await until('the genuine renewal to wait', () => s.queued() === 1);
    const forgedCall = client(s.address, forged).certify(req('renewing'));
    await until('the forged one to wait', () => s.queued() === 2);
    const fresh = client(s.address).certify(req('fresh'));
    await until('all three to wait', () => s.queued() === 3);
    s.releaseAll();
    await Promise.all([blocker, forgedCall, genuine, fresh]);
    // The forged one is first issuance (FIFO with "fresh", ahead of the genuine renewal that
    // came before it); only the genuine one waits last.
    assert.deepEqual(s.order, ['blocker', 'renewing', 'fresh', 'renewing']);
  });
});
