/**
 * The proxy's identity client against the real Certify decision (identity-ca's handler with a
 * real issuer and the JWKS validator), with the clock and timers injected: keys made in memory
 * and fresh per request, the token re-read per request, renewal at ~70 % with jitter, capped
 * backoff that keeps the current certificate until it expires, and refusal of any response that
 * is not for this workload, this key, and these anchors.
 */
import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { X509Certificate, createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { createServer as createNetServer } from 'node:net';
import { createSecureContext } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  CertifyClient,
  createCsr,
  createLogger,
  systemRandom,
  parseAnchors,
} from '../../../core/index.js';
import { ManualClock } from '../../../core/clock.js';
import { silentLogger } from '../../../core/logger.js';
import { createRootCa } from '../../../core/pki.js';
import type { CertifyRequest, CertifyResponse, Random } from '../../../core/index.js';
import { CertifyServer } from '../../../identity-ca/server/grpc-server.js';
import { JwksTokenValidator } from '../../../identity-ca/index.js';
import { Http2CertifyClient, IdentityClient } from '../../../proxy/index.js';
import { CertifyCallFailed } from '../../../proxy/identity/certify-h2.js';
import type { Timers } from '../../../proxy/identity/client.js';
import { issueServingCertificate } from '../../../identity-ca/server/serving-cert.js';
import { SignerCache } from '../../../identity-ca/server/certify.js';
import { TOKEN_ISSUER, idOf, makeTestState } from '../../support/state.js';
import type { TestState } from '../../support/state.js';
import { createCertifyHandler } from '../../../identity-ca/server/certify.js';
import { validateIssuer } from '../../../identity-ca/issuer/material.js';
import type { IssuerCredentials } from '../../../identity-ca/issuer/material.js';

const WEB = idOf('emojivoto', 'web');
const HOUR = 3_600_000;
const NAMING = { trustDomain: 'cluster.local', controlPlaneNamespace: 'linkerd' };
const CA_IDENTITY = 'linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local';

/** Timers the test fires by hand; records every delay asked for. */
class FakeTimers implements Timers {
  readonly delays: number[] = [];
  #next: (() => void) | undefined;
  set(fn: () => void, ms: number): unknown {
    this.delays.push(ms);
    this.#next = fn;
    return fn;
  }
  clear(handle: unknown): void {
    if (handle === this.#next) this.#next = undefined;
  }
  /** Runs the pending callback and lets its promise chain settle. */
  async fire(client: IdentityClient): Promise<void> {
    const fn = this.#next;
    assert.ok(fn !== undefined, 'nothing scheduled');
    this.#next = undefined;
    const settled = new Promise<void>((resolve) => {
      client.once('certificate', () => resolve());
      client.once('refreshFailed', () => resolve());
    });
    fn();
    await settled;
    client.removeAllListeners();
  }
}

/** Randomness fixed at the middle of its range: jitter 0. */
const middle: Random = { bytes: (n) => Buffer.alloc(n, 0x80).fill(0, 1) };

describe('proxy/identity: the identity client', function () {
  this.timeout(20_000);
  let state: TestState;
  let issuer: IssuerCredentials;
  let clock: ManualClock;
  let tokens: JwksTokenValidator;
  let tokenFile: string;
  let handler: (req: CertifyRequest) => Promise<CertifyResponse>;
  let anchorsPem: string;
  let otherAnchor: string;
  let t0: number;

  before(async () => {
    otherAnchor = (
      await createRootCa({
        commonName: 'other-root',
        notBefore: Date.now() - HOUR,
        notAfter: Date.now() + HOUR,
      })
    ).certificatePem;
    state = await makeTestState();
    clock = new ManualClock(Date.now());
    anchorsPem = state.root.certificatePem;
    issuer = await validateIssuer(
      { tlsCrt: state.issuer.certificatePem, tlsKey: state.issuer.privateKeyPem },
      parseAnchors(anchorsPem, { now: clock.now() }),
      clock.now(),
    );
    tokens = await JwksTokenValidator.create({
      jwks: { file: state.jwksFile },
      issuer: TOKEN_ISSUER,
      audience: 'identity.l5d.io',
      clockSkewMs: 20_000,
      clock,
      logger: silentLogger(),
    });
    tokenFile = join(state.dir, 'token');
    t0 = clock.now();
  });
  after(async () => {
    await tokens.close();
    await state.cleanup();
  });
  beforeEach(async () => {
    // Every test starts at the same instant with a token that outlives its renewals.
    clock.set(t0);
    await writeFile(tokenFile, await state.token('emojivoto', 'web', { ttlMs: 48 * HOUR }));
    handler = createCertifyHandler({
      currentIssuer: () => issuer,
      tokens,
      naming: NAMING,
      certLifetimeMs: 24 * HOUR,
      clockSkewMs: 20_000,
      clock,
      random: systemRandom,
      logger: silentLogger(),
    });
  });

  function client(o: Partial<ConstructorParameters<typeof IdentityClient>[0]> = {}): {
    id: IdentityClient;
    timers: FakeTimers;
    calls: CertifyRequest[];
  } {
    const timers = new FakeTimers();
    const calls: CertifyRequest[] = [];
    const id = new IdentityClient({
      localIdentity: WEB,
      tokenFile,
      certify: (req) => {
        calls.push(req);
        return handler(req);
      },
      anchorsPem: () => anchorsPem,
      clock,
      random: middle,
      timers,
      logger: silentLogger(),
      ...o,
    });
    return { id, timers, calls };
  }

  it('gets a certificate for its identity, for a key made in memory, and is ready', async () => {
    const { id, timers } = client();
    assert.equal(id.current(), undefined, 'not ready before the first certificate');
    id.start();
    assert.deepEqual(timers.delays, [0]);
    await timers.fire(id);
    const cert = id.current();
    assert.ok(cert !== undefined);
    const leaf = new X509Certificate(cert.certChainPem);
    assert.match(leaf.subjectAltName ?? '', new RegExp(`^DNS:${WEB.replace(/\./g, '\\.')}`));
    assert.ok(
      leaf.checkPrivateKey(createPrivateKey(cert.keyPem)),
      'the leaf certifies the held key',
    );
    id.close();
  });

  it("uses the key and CSR a load test made beforehand (requestKey), and the certificate is that key's", async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const csr = createCsr({ privateKey, commonName: WEB, dnsNames: [WEB] });
    const { id, calls } = client({ requestKey: () => ({ privateKey, publicKey, csr }) });
    const cert = await id.refresh();
    assert.deepEqual(
      Buffer.from(calls[0]!.certificateSigningRequest),
      csr,
      'the given CSR is sent',
    );
    assert.ok(new X509Certificate(cert.certChainPem).checkPrivateKey(privateKey));
    id.close();
  });

  it('renews at 70% of the remaining life (jitter 0 here), with a fresh key and a fresh read of the token', async () => {
    const { id, timers, calls } = client();
    id.start();
    await timers.fire(id);
    const first = id.current()!;
    const life = first.notAfter - clock.now();
    assert.equal(timers.delays.at(-1), Math.round(life * 0.7));
    // The kubelet rotates the token; the next request must carry the new one.
    const rotated = await state.token('emojivoto', 'web', {
      ttlMs: 2 * HOUR,
      issuedAgoMs: Date.now() - (clock.now() + timers.delays.at(-1)!),
    });
    await writeFile(tokenFile, rotated);
    clock.advance(timers.delays.at(-1)!);
    await timers.fire(id);
    const second = id.current()!;
    assert.notEqual(second.serialHex, first.serialHex);
    assert.notEqual(second.keyPem, first.keyPem, 'a fresh key for every renewal');
    assert.equal(Buffer.from(calls[1]!.token).toString(), rotated);
    id.close();
  });

  it('spreads renewals with jitter within ±10%', async () => {
    const delays = new Set<number>();
    for (const byte of [0x00, 0x40, 0xc0, 0xff]) {
      const { id, timers } = client({ random: { bytes: (n) => Buffer.alloc(n, byte) } });
      id.start();
      await timers.fire(id);
      const base = (id.current()!.notAfter - clock.now()) * 0.7;
      const d = timers.delays.at(-1)!;
      assert.ok(d >= base * 0.9 - 1 && d <= base * 1.1 + 1, `${d} outside ±10% of ${base}`);
      delays.add(d);
      id.close();
    }
    assert.ok(delays.size >= 3, 'different randomness gives different delays');
  });

  it('on failure keeps the certificate, backs off exponentially up to the cap, and recovers', async () => {
    const { id, timers } = client({ minRetryMs: 1000, maxRetryMs: 8000 });
    id.start();
    await timers.fire(id);
    const held = id.current()!;
    const good = handler;
    handler = async () => {
      throw Object.assign(new Error('CA unavailable'), { code: 14 });
    };
    const retries: number[] = [];
    for (let i = 0; i < 6; i++) {
      clock.advance(timers.delays.at(-1)!);
      await timers.fire(id);
      retries.push(timers.delays.at(-1)!);
      assert.equal(id.current()?.serialHex, held.serialHex, 'the current certificate stays in use');
    }
    // Upper half of 1, 2, 4, 8, 8, 8 s (middle randomness: 3/4 of the cap).
    assert.deepEqual(retries, [750, 1500, 3000, 6000, 6000, 6000]);
    assert.equal(id.stats.failures, 6);
    handler = good;
    clock.advance(timers.delays.at(-1)!);
    await timers.fire(id);
    assert.notEqual(id.current()!.serialHex, held.serialHex, 'recovered with a new certificate');
    id.close();
  });

  it('spreads the retries of a first certificate over the whole backoff window (full jitter), from a tenth of the first delay', async () => {
    handler = async () => {
      throw Object.assign(new Error('CA unavailable'), { code: 14 });
    };
    const retries = async (random: Random): Promise<number[]> => {
      const { id, timers } = client({ minRetryMs: 1000, maxRetryMs: 8000, random });
      id.start();
      const out: number[] = [];
      for (let i = 0; i < 5; i++) {
        await timers.fire(id);
        out.push(timers.delays.at(-1)!);
        clock.advance(out.at(-1)!);
      }
      assert.equal(id.current(), undefined, 'still no certificate');
      id.close();
      return out;
    };
    // Windows of 1, 2, 4, 8, 8 s; the lowest draw is the floor (100 ms), the highest the cap.
    const byte = (b: number): Random => ({ bytes: (n) => Buffer.alloc(n, b) });
    assert.deepEqual(await retries(byte(0x00)), [100, 100, 100, 100, 100]);
    assert.deepEqual(await retries(middle), [550, 1050, 2050, 4050, 4050]);
    assert.deepEqual(await retries(byte(0xff)), [1000, 2000, 4000, 8000, 8000]);
  });

  it('spreads a fleet failing together evenly over the whole window', () => {
    // A deterministic generator stands in for the CSPRNG: 2,000 proxies, one draw each.
    let seed = 12345;
    const lcg = {
      bytes: (n: number): Buffer => {
        seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
        const b = Buffer.alloc(n);
        b.writeUInt32BE(seed, 0);
        return b;
      },
    };
    const { id } = client({ minRetryMs: 1000, maxRetryMs: 60_000, random: lcg });
    const first = Array.from({ length: 2000 }, () => id.retryDelay(3));
    // Failure 3: a 4 s window. Every quarter of it gets about a quarter of the fleet.
    for (let q = 0; q < 4; q++) {
      const n = first.filter((d) => d >= q * 1000 && d < (q + 1) * 1000).length;
      assert.ok(n > 400 && n < 600, `quarter ${q} of the window holds ${n} of 2000`);
    }
    assert.ok(Math.min(...first) >= 100 && Math.max(...first) <= 4000);
    id.close();
  });

  it("honours the CA's retry hint with jitter (hint to 1.5× hint), instead of its own backoff", async () => {
    const delays = new Set<number>();
    for (const byte of [0x00, 0x80, 0xff]) {
      const { id, timers } = client({
        minRetryMs: 1000,
        maxRetryMs: 60_000,
        random: { bytes: (n) => Buffer.alloc(n, byte) },
      });
      handler = async () => {
        throw new CertifyCallFailed(8, 'the CA is overloaded; retry after 4000 ms', 4000);
      };
      id.start();
      // Several failures: exponential backoff would be far from the hint by now.
      for (let i = 0; i < 4; i++) {
        await timers.fire(id);
        const d = timers.delays.at(-1)!;
        assert.ok(d >= 4000 && d <= 6000, `${d} outside [4000, 6000]`);
        delays.add(d);
        clock.advance(d);
      }
      id.close();
    }
    assert.ok(delays.size >= 3, 'different randomness spreads the retries');
    // A hint over the cap is cut to the cap.
    const { id, timers } = client({ maxRetryMs: 2000 });
    handler = async () => {
      throw new CertifyCallFailed(8, 'overloaded', 30_000);
    };
    id.start();
    await timers.fire(id);
    assert.equal(timers.delays.at(-1), 2000);
    id.close();
  });

  it('reports no certificate once the held one expires while the CA is down', async () => {
    const { id, timers } = client({ minRetryMs: 1000, maxRetryMs: 8000 });
    id.start();
    await timers.fire(id);
    const held = id.current()!;
    handler = async () => {
      throw new Error('CA unavailable');
    };
    clock.set(held.notAfter - 500);
    await timers.fire(id);
    assert.ok(timers.delays.at(-1)! <= 500, 'retries no later than the expiry');
    assert.ok(id.current() !== undefined);
    clock.set(held.notAfter);
    assert.equal(id.current(), undefined, 'not ready without a valid certificate');
    id.close();
  });

  describe('wall-clock jumps (the renewal timer runs on the monotonic clock)', () => {
    /** A logger whose records the test reads. */
    function recordingLogger(): { logger: ReturnType<typeof silentLogger>; msgs: string[] } {
      const msgs: string[] = [];
      const logger = createLogger({
        level: 'info',
        destination: { write: (line: string) => void msgs.push(String(JSON.parse(line).msg)) },
      });
      return { logger, msgs };
    }

    it('does nothing while the clock has not reached the renewal time', async () => {
      const { id, timers } = client();
      id.start();
      await timers.fire(id);
      const planned = timers.delays.length;
      clock.advance(timers.delays.at(-1)! - 1);
      id.checkClock();
      assert.equal(timers.delays.length, planned, 'no new timer');
      id.close();
    });

    it('renews at once when the clock jumps past the renewal time, although its timer has not fired', async () => {
      const { id, timers } = client();
      id.start();
      await timers.fire(id);
      const first = id.current()!;
      clock.advance(timers.delays.at(-1)!);
      id.checkClock();
      assert.equal(timers.delays.at(-1), 0, 'the refresh is started now');
      await timers.fire(id);
      assert.notEqual(id.current()!.serialHex, first.serialHex);
      id.close();
    });

    it('says once that the held certificate expired, and recovers with a new one', async () => {
      const { logger, msgs } = recordingLogger();
      const { id, timers } = client({ logger });
      id.start();
      await timers.fire(id);
      const held = id.current()!;
      const expired = (): number => msgs.filter((m) => /certificate expired/.test(m)).length;
      // The CA issues on its own clock: a leaf valid only before the proxy's new now is refused.
      const real = handler;
      handler = async () => {
        throw new Error('CA unavailable');
      };
      clock.set(held.notAfter + HOUR);
      assert.equal(id.current(), undefined, 'an expired certificate is not served');
      id.checkClock();
      await timers.fire(id);
      id.checkClock();
      assert.equal(expired(), 1, 'logged once');
      assert.equal(id.current(), undefined);
      handler = real;
      clock.set(t0);
      await id.refresh();
      assert.ok(id.current() !== undefined, 'ready again with a new certificate');
      id.close();
    });
  });

  describe('refuses a response it must not trust, and keeps what it has', () => {
    async function refusedWith(
      tamper: (res: CertifyResponse) => CertifyResponse,
      words: RegExp,
    ): Promise<void> {
      const { id } = client();
      const real = handler;
      handler = async (req) => tamper(await real(req));
      await assert.rejects(id.refresh(), (err: Error) => words.test(err.message));
      assert.equal(id.current(), undefined);
    }

    it('a certificate for another identity', async () => {
      const other = idOf('emojivoto', 'voting');
      const otherToken = Buffer.from(
        await state.token('emojivoto', 'voting', { issuedAgoMs: Date.now() - clock.now() }),
      );
      const real = handler;
      // A CA that answers with a genuine certificate, but for another workload.
      handler = () => {
        const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
        return real({
          identity: other,
          token: otherToken,
          certificateSigningRequest: createCsr({ privateKey, dnsNames: [other] }),
        });
      };
      const { id } = client();
      await assert.rejects(id.refresh(), /first name is DNS:voting/);
      assert.equal(id.current(), undefined);
    });

    it('a certificate for a key it does not hold', async () => {
      let first: CertifyResponse | undefined;
      const real = handler;
      handler = async (req) => (first ??= await real(req));
      const { id } = client();
      await id.refresh();
      await assert.rejects(id.refresh(), /not for the key this proxy holds/);
    });

    it('a chain that does not lead to its anchors', async () => {
      const { id } = client({ anchorsPem: () => otherAnchor });
      await assert.rejects(id.refresh(), /chain does not lead to a trust anchor/);
    });

    it('a valid_until that is not the certificate NotAfter', async () => {
      await refusedWith((res) => ({ ...res, validUntil: res.validUntil + 1000 }), /valid_until/);
    });
  });

  it('works over gRPC/TLS against a CA server, and refuses a CA that is not the expected identity', async () => {
    const signers = new SignerCache();
    const serving = issueServingCertificate(issuer, {
      identityName: CA_IDENTITY,
      naming: NAMING,
      lifetimeMs: HOUR,
      clockSkewMs: 0,
      clock,
      random: systemRandom,
      signers,
    });
    const server = new CertifyServer({
      handler: (req) => handler(req),
      logger: silentLogger(),
      maxRequestBytes: 65536,
      credentials: serving,
    });
    const address = await server.listen({ host: '127.0.0.1', port: 0 });
    const good = new CertifyClient({ address, serverName: CA_IDENTITY, anchorsPem });
    const wrong = new CertifyClient({
      address,
      serverName: idOf('linkerd', 'impostor'),
      anchorsPem,
    });
    try {
      const { id } = client({ certify: (req) => good.certify(req) });
      const cert = await id.refresh();
      assert.equal(cert.identity, WEB);
      const { id: other } = client({ certify: (req) => wrong.certify(req) });
      await assert.rejects(other.refresh(), /not for linkerd-identity|impostor/);
    } finally {
      good.close();
      wrong.close();
      await server.close(100);
    }
  });

  describe("the proxy's Certify client on node:http2 (no grpc-js)", () => {
    let server: CertifyServer;
    let address: { host: string; port: number };
    let answer: (req: CertifyRequest) => Promise<CertifyResponse>;

    before(async () => {
      const serving = issueServingCertificate(issuer, {
        identityName: CA_IDENTITY,
        naming: NAMING,
        lifetimeMs: HOUR,
        clockSkewMs: 0,
        clock,
        random: systemRandom,
        signers: new SignerCache(),
      });
      server = new CertifyServer({
        handler: (req) => answer(req),
        logger: silentLogger(),
        maxRequestBytes: 65536,
        credentials: serving,
      });
      address = await server.listen({ host: '127.0.0.1', port: 0 });
    });
    after(async () => {
      await server.close(100);
    });
    beforeEach(() => {
      answer = (req) => handler(req);
    });

    const csrRequest = async (): Promise<CertifyRequest> => {
      const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      return {
        identity: WEB,
        token: Buffer.from(await state.token('emojivoto', 'web', { ttlMs: HOUR })),
        certificateSigningRequest: createCsr({
          privateKey,
          commonName: WEB,
          dnsNames: [WEB],
        }),
      };
    };

    it('gets a certificate the identity client accepts, over one reused connection', async () => {
      const ca = new Http2CertifyClient({ address, serverName: CA_IDENTITY, anchorsPem });
      try {
        const { id } = client({ certify: (req) => ca.certify(req) });
        assert.equal((await id.refresh()).identity, WEB);
        assert.equal((await id.refresh()).identity, WEB);
      } finally {
        ca.close();
      }
    });

    it('refuses a CA whose certificate is not the expected identity', async () => {
      const ca = new Http2CertifyClient({
        address,
        serverName: idOf('linkerd', 'impostor'),
        anchorsPem,
      });
      try {
        await assert.rejects(ca.certify(await csrRequest()), (err: CertifyCallFailed) => {
          assert.equal(err.code, 14);
          assert.match(err.details, /not for .*impostor/);
          return true;
        });
      } finally {
        ca.close();
      }
    });

    it('refuses a CA whose chain does not lead to the anchors', async () => {
      const ca = new Http2CertifyClient({
        address,
        serverName: CA_IDENTITY,
        anchorsPem: otherAnchor,
      });
      try {
        await assert.rejects(ca.certify(await csrRequest()), (err: CertifyCallFailed) => {
          assert.equal(err.code, 14);
          return true;
        });
      } finally {
        ca.close();
      }
    });

    it("reports the CA's gRPC status and message", async () => {
      const ca = new Http2CertifyClient({ address, serverName: CA_IDENTITY, anchorsPem });
      try {
        const req = { ...(await csrRequest()), identity: idOf('emojivoto', 'other') };
        await assert.rejects(ca.certify(req), (err: CertifyCallFailed) => {
          assert.ok(err instanceof CertifyCallFailed);
          assert.ok(err.code !== 0 && err.code !== 14, `status ${err.code}`);
          assert.notEqual(err.details, '');
          return true;
        });
      } finally {
        ca.close();
      }
    });

    it('gives up at the deadline with DEADLINE_EXCEEDED', async () => {
      answer = () => new Promise(() => undefined);
      const ca = new Http2CertifyClient({ address, serverName: CA_IDENTITY, anchorsPem });
      try {
        await assert.rejects(ca.certify(await csrRequest(), 200), (err: CertifyCallFailed) => {
          assert.equal(err.code, 4);
          return true;
        });
      } finally {
        ca.close();
      }
    });

    it('verifies the CA with a shared TLS context when given one (not with anchorsPem)', async () => {
      const ok = new Http2CertifyClient({
        address,
        serverName: CA_IDENTITY,
        anchorsPem: otherAnchor,
        secureContext: createSecureContext({ ca: anchorsPem }),
      });
      const wrong = new Http2CertifyClient({
        address,
        serverName: CA_IDENTITY,
        anchorsPem,
        secureContext: createSecureContext({ ca: otherAnchor }),
      });
      try {
        assert.ok((await ok.certify(await csrRequest())).leafCertificate.length > 0);
        await assert.rejects(wrong.certify(await csrRequest()), (err: CertifyCallFailed) => {
          assert.equal(err.code, 14);
          return true;
        });
      } finally {
        ok.close();
        wrong.close();
      }
    });

    it('connects from the local address it is given', async () => {
      const seen: string[] = [];
      const listener = createNetServer((socket) => {
        seen.push(socket.remoteAddress ?? '');
        socket.destroy();
      });
      await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
      const ca = new Http2CertifyClient({
        address: { host: '127.0.0.1', port: (listener.address() as AddressInfo).port },
        serverName: CA_IDENTITY,
        anchorsPem,
        localAddress: '127.0.0.2',
      });
      try {
        await assert.rejects(ca.certify(await csrRequest()));
        assert.deepEqual(seen, ['127.0.0.2']);
      } finally {
        ca.close();
        await new Promise<void>((resolve) => listener.close(() => resolve()));
      }
    });

    it('reports UNAVAILABLE when nothing listens', async () => {
      const gone = createNetServer();
      await new Promise<void>((resolve) => gone.listen(0, '127.0.0.1', resolve));
      const port = (gone.address() as AddressInfo).port;
      await new Promise<void>((resolve) => gone.close(() => resolve()));
      const ca = new Http2CertifyClient({
        address: { host: '127.0.0.1', port },
        serverName: CA_IDENTITY,
        anchorsPem,
      });
      try {
        await assert.rejects(ca.certify(await csrRequest()), (err: CertifyCallFailed) => {
          assert.equal(err.code, 14);
          return true;
        });
      } finally {
        ca.close();
      }
    });
  });
});
