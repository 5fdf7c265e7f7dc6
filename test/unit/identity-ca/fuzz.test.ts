/**
 * Fuzzing Certify: structure-aware mutations of the CSR, the protobuf message, the gRPC frame
 * and the headers, sent to a real CertifyServer (TLS 1.3, HTTP/2, the real decision with a real
 * issuer and JWKS token validation) over 127.0.0.1, and the CSR parser and policy on their own.
 *
 * Invariants, for every case: no crash, no hang (every call answers within its deadline), every
 * answer a defined gRPC status (or 405/415 for a request that is not gRPC), nothing issued
 * unless an independent judge (protobufjs, @peculiar/x509, WebCrypto) finds the request exactly
 * valid, and every leaf is for exactly the identity and key that judge read. The CA's issued
 * counter and its issuance callback (what Events are recorded from) must both equal the number
 * of OK answers. The CA must still issue afterwards.
 *
 * `MESHID_FUZZ_CASES` sets the number of wire cases (default 1500, a bounded slice for
 * `npm test`); the parser runs twice as many. `npm run test:reliability` runs 100k and more.
 * `MESHID_FUZZ_SEED` replays a run.
 */
import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { generateKeyPairSync } from 'node:crypto';
import { connect as http2Connect } from 'node:http2';
import type { ClientHttp2Session, IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http2';
import { Writable } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import {
  CERTIFY_PATH,
  GrpcStatus,
  createCsr,
  createLogger,
  createRegistry,
  isMeshidError,
  parseCsr,
  systemClock,
  systemRandom,
  parseAnchors,
} from '../../../core/index.js';
import { Admission } from '../../../identity-ca/server/admission.js';
import { createCertifyHandler } from '../../../identity-ca/server/certify.js';
import { CertifyServer } from '../../../identity-ca/server/grpc-server.js';
import { registerCaMetrics } from '../../../identity-ca/server/metrics.js';
import { issueServingCertificate } from '../../../identity-ca/server/serving-cert.js';
import { SignerCache } from '../../../identity-ca/server/certify.js';
import { JwksTokenValidator } from '../../../identity-ca/token/jwks.js';
import { loadCertifyOracle } from '../../support/certify-oracle.js';
import {
  Rng,
  encodeRequest,
  frame,
  mutateCsr,
  mutateFrame,
  mutateMessage,
} from '../../support/fuzz.js';
import type { RequestParts } from '../../support/fuzz.js';
import { recordReliability } from '../../support/reliability-report.js';
import { CA_IDENTITY, TOKEN_ISSUER, idOf, makeTestState } from '../../support/state.js';
import type { TestState } from '../../support/state.js';
import { checkCsrPolicy } from '../../../identity-ca/issuer/csr-policy.js';
import { validateIssuer } from '../../../identity-ca/issuer/material.js';
import type { IssuerCredentials } from '../../../identity-ca/issuer/material.js';

const WEB = idOf('emojivoto', 'web');
const OTHER = idOf('emojivoto', 'admin');
const WIRE_CASES = Number(process.env['MESHID_FUZZ_CASES'] ?? 1500);
const SEED = Number(process.env['MESHID_FUZZ_SEED'] ?? Date.now() % 1_000_000);
const NAMING = { trustDomain: 'cluster.local', controlPlaneNamespace: 'linkerd' };

describe(`Certify fuzzing (seed ${SEED}, ${WIRE_CASES} wire cases)`, function () {
  this.timeout(Math.max(120_000, WIRE_CASES * 20));
  let state: TestState;
  let issuer: IssuerCredentials;
  let tokens: JwksTokenValidator;
  let validToken: Buffer;
  let otherToken: Buffer;
  let csrs: Buffer[];
  let otherCsrs: Buffer[];
  let oracle: Awaited<ReturnType<typeof loadCertifyOracle>>;

  before(async () => {
    state = await makeTestState();
    const now = systemClock.now();
    issuer = await validateIssuer(
      { tlsCrt: state.issuer.certificatePem, tlsKey: state.issuer.privateKeyPem },
      parseAnchors(state.root.certificatePem, { now: now }),
      now,
    );
    tokens = await JwksTokenValidator.create({
      jwks: { file: state.jwksFile },
      issuer: TOKEN_ISSUER,
      audience: 'identity.l5d.io',
      clockSkewMs: 20_000,
      clock: systemClock,
      logger: createLogger({ level: 'silent' }),
    });
    validToken = Buffer.from(await state.token('emojivoto', 'web'));
    otherToken = Buffer.from(await state.token('emojivoto', 'admin'));
    const make = (identity: string, n: number): Buffer[] =>
      Array.from({ length: n }, () => {
        const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
        return createCsr({ privateKey, commonName: identity, dnsNames: [identity] });
      });
    csrs = make(WEB, 40);
    otherCsrs = make(OTHER, 5);
    oracle = await loadCertifyOracle({ identity: WEB, validToken });
  });
  after(async () => {
    await tokens?.close();
    await state?.cleanup();
  });

  it('the CSR parser and policy: a defined refusal or a CSR the judge finds valid, never anything else', async () => {
    const rng = new Rng(SEED);
    const cases = WIRE_CASES * 2;
    let accepted = 0;
    let slowestMs = 0;
    const wrong: string[] = [];
    for (let i = 0; i < cases; i++) {
      const csr = i % 50 === 0 ? rng.pick(csrs) : mutateCsr(rng.pick(csrs), rng, WEB);
      // CPU time of this process, not wall time: a machine kept busy by other work must not
      // make a case look slow (issue 20). A pathological input costs CPU either way.
      const cpu = process.cpuUsage();
      const cpuMs = (): number => {
        const used = process.cpuUsage(cpu);
        return (used.user + used.system) / 1000;
      };
      try {
        await checkCsrPolicy(parseCsr(csr), WEB);
        slowestMs = Math.max(slowestMs, cpuMs());
        accepted++;
        const verdict = await oracle.judge(
          frame(encodeRequest({ identity: Buffer.from(WEB), token: validToken, csr })),
        );
        if (!verdict.valid)
          wrong.push(
            `case ${i}: accepted a CSR the judge refuses (${verdict.why}): ${csr.toString('base64')}`,
          );
      } catch (err) {
        slowestMs = Math.max(slowestMs, cpuMs());
        if (!isMeshidError(err, 'ERR_CSR_MALFORMED') && !isMeshidError(err, 'ERR_CSR_POLICY'))
          wrong.push(`case ${i}: ${String(err)} for ${csr.toString('base64')}`);
      }
    }
    recordReliability({
      suite: 'fuzz: CSR parser and policy',
      cases,
      requests: 0,
      wronglyIssued: wrong.length,
    });
    assert.deepEqual(wrong.slice(0, 5), []);
    assert.ok(accepted >= cases / 50, `the unmutated CSRs pass (${accepted})`);
    assert.ok(slowestMs < 2000, `no case took long (slowest ${slowestMs.toFixed(0)} ms of CPU)`);
  });

  it('the whole request on the wire: defined statuses, nothing issued unless exactly valid, counters agree', async () => {
    const rng = new Rng(SEED + 1);
    const registry = createRegistry();
    const metrics = registerCaMetrics(registry, {
      clock: systemClock,
      currentIssuer: () => issuer,
    });
    let unexpectedErrors = 0;
    const logger = createLogger({
      level: 'error',
      destination: new Writable({
        write(chunk: Buffer, _enc, cb) {
          if (/Certify failed unexpectedly|signing failed/.test(chunk.toString()))
            unexpectedErrors++;
          cb();
        },
      }),
    });
    let issuedCallbacks = 0;
    const handler = createCertifyHandler({
      currentIssuer: () => issuer,
      tokens,
      naming: NAMING,
      certLifetimeMs: 3_600_000,
      clockSkewMs: 20_000,
      clock: systemClock,
      random: systemRandom,
      logger,
      onIssued: () => issuedCallbacks++,
    });
    const signers = new SignerCache();
    const serving = issueServingCertificate(issuer, {
      identityName: CA_IDENTITY,
      naming: NAMING,
      lifetimeMs: 3_600_000,
      clockSkewMs: 20_000,
      clock: systemClock,
      random: systemRandom,
      signers,
    });
    const server = new CertifyServer({
      handler,
      logger,
      maxRequestBytes: 64 * 1024,
      credentials: { ...serving, clientCaPem: state.root.certificatePem },
      observe: ({ status, durationSeconds }) => metrics.observeCall(status, durationSeconds),
      admission: new Admission(
        {
          maxInFlight: 64,
          maxQueue: 10_000,
          sourceBurst: 0,
          sourcePerSecond: 1,
          identityBurst: 0,
          identityPerSecond: 1,
        },
        systemClock,
      ),
    });
    const address = await server.listen({ host: '127.0.0.1', port: 0 });
    const socket = tlsConnect({
      host: address.host,
      port: address.port,
      servername: CA_IDENTITY,
      ca: state.root.certificatePem,
      ALPNProtocols: ['h2'],
    });
    await new Promise<void>((resolve, reject) => {
      socket.once('secureConnect', resolve);
      socket.once('error', reject);
    });
    let session: ClientHttp2Session = http2Connect(`https://${CA_IDENTITY}`, {
      createConnection: () => socket,
    });
    const newSession = async (): Promise<ClientHttp2Session> => {
      const s = tlsConnect({
        host: address.host,
        port: address.port,
        servername: CA_IDENTITY,
        ca: state.root.certificatePem,
        ALPNProtocols: ['h2'],
      });
      await new Promise<void>((resolve, reject) => {
        s.once('secureConnect', resolve);
        s.once('error', reject);
      });
      return http2Connect(`https://${CA_IDENTITY}`, { createConnection: () => s });
    };

    const call = (
      headers: OutgoingHttpHeaders,
      body: Buffer,
    ): Promise<{ headers: IncomingHttpHeaders; data: Buffer }> =>
      new Promise((resolve, reject) => {
        const stream = session.request(
          {
            ':method': 'POST',
            ':path': CERTIFY_PATH,
            'content-type': 'application/grpc',
            te: 'trailers',
            'grpc-timeout': '10S',
            ...headers,
          },
          { endStream: false },
        );
        const timer = setTimeout(() => {
          stream.close();
          reject(new Error('no answer within 15 s (a hang)'));
        }, 15_000);
        let h: IncomingHttpHeaders = {};
        const chunks: Buffer[] = [];
        stream.on('response', (r) => (h = r));
        stream.on('trailers', (t) => (h = { ...h, ...t }));
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('error', (err) => {
          clearTimeout(timer);
          reject(err);
        });
        stream.on('close', () => {
          clearTimeout(timer);
          resolve({ headers: h, data: Buffer.concat(chunks) });
        });
        stream.end(body);
      });

    /** One case: the headers and framed body to send, and a label for reports. */
    const makeCase = (): { kind: string; headers: OutgoingHttpHeaders; body: Buffer } => {
      const parts: RequestParts = {
        identity: Buffer.from(WEB),
        token: validToken,
        csr: rng.pick(csrs),
      };
      const r = rng.next();
      if (r < 0.05) return { kind: 'valid', headers: {}, body: frame(encodeRequest(parts)) };
      if (r < 0.4) {
        parts.csr = mutateCsr(parts.csr, rng, WEB);
        return { kind: 'csr', headers: {}, body: frame(encodeRequest(parts)) };
      }
      if (r < 0.6) return { kind: 'message', headers: {}, body: frame(mutateMessage(parts, rng)) };
      if (r < 0.7)
        return { kind: 'frame', headers: {}, body: mutateFrame(encodeRequest(parts), rng) };
      if (r < 0.85) {
        // Valid parts in the wrong combination, or hostile values.
        rng.pick([
          () => (parts.token = otherToken),
          () => (parts.identity = Buffer.from(OTHER)),
          () => ((parts.identity = Buffer.from(OTHER)), (parts.csr = rng.pick(otherCsrs))),
          () => (parts.csr = rng.pick(otherCsrs)),
          () => (parts.token = Buffer.from(validToken.toString().slice(0, -2))),
          () => (parts.token = rng.bytes(rng.int(300))),
          () => (parts.token = Buffer.alloc(17 * 1024, 0x41)),
          () => (parts.identity = Buffer.from(`${WEB}\u0000`)),
          () => (parts.identity = Buffer.from([0xc3, 0x28])), // invalid UTF-8
          () => (parts.identity = Buffer.alloc(300, 0x61)),
          () =>
            (parts.csr = Buffer.from(
              `-----BEGIN CERTIFICATE REQUEST-----\n${parts.csr.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`,
            )),
        ])();
        return { kind: 'combination', headers: {}, body: frame(encodeRequest(parts)) };
      }
      // Hostile headers around a valid request.
      const headers = rng.pick<OutgoingHttpHeaders>([
        { 'content-type': 'application/json' },
        { 'content-type': 'application/grpc+json' },
        { 'grpc-encoding': 'gzip' },
        { 'grpc-encoding': 'identity' },
        { 'grpc-timeout': '99999999999S' },
        { 'grpc-timeout': '1n' },
        { 'grpc-timeout': 'x' },
        { ':path': '/io.linkerd.proxy.identity.Identity/CertifyX' },
        { ':path': '/' },
        { ':method': 'GET' },
        { ':method': 'PUT' },
        { ':method': 'DELETE' },
      ]);
      return { kind: 'headers', headers, body: frame(encodeRequest(parts)) };
    };

    const problems: string[] = [];
    let ok = 0;
    let sent = 0;
    const statuses = new Map<string, number>();
    const concurrency = 16;
    const workers = Array.from({ length: concurrency }, async () => {
      while (sent < WIRE_CASES) {
        const n = sent++;
        const c = makeCase();
        let res: { headers: IncomingHttpHeaders; data: Buffer };
        try {
          res = await call(c.headers, c.body);
        } catch (err) {
          // A stream reset by the server is a defined answer to a broken request only if the
          // session survives; a session that died is replaced and counted.
          if (session.destroyed || session.closed) session = await newSession();
          problems.push(`case ${n} (${c.kind}): ${(err as Error).message}`);
          continue;
        }
        const http = Number(res.headers[':status']);
        const grpcStatus = res.headers['grpc-status'];
        const key = grpcStatus === undefined ? `http ${http}` : `grpc ${String(grpcStatus)}`;
        if (Number.isNaN(http))
          problems.push(
            `case ${n} (${c.kind}): ${JSON.stringify(c.headers)} no answer: ${c.body.subarray(0, 20).toString('hex')}`,
          );
        statuses.set(key, (statuses.get(key) ?? 0) + 1);
        if (grpcStatus === undefined) {
          if (!(http === 405 || http === 415) || c.kind !== 'headers')
            problems.push(`case ${n} (${c.kind}): HTTP ${http} without grpc-status`);
          continue;
        }
        const code = Number(grpcStatus);
        if (!Number.isInteger(code) || code < 0 || code > 16)
          problems.push(`case ${n} (${c.kind}): undefined status ${String(grpcStatus)}`);
        if (code !== GrpcStatus.OK) continue;
        ok++;
        const verdict = await oracle.judge(c.body);
        if (!verdict.valid) {
          problems.push(
            `case ${n} (${c.kind}): ISSUED for a request the judge refuses (${verdict.why}): ${c.body.toString('base64')}`,
          );
          continue;
        }
        // The answer: one frame with leaf_certificate (field 1) first.
        const leafLen = res.data.length > 8 ? readLeaf(res.data.subarray(5)) : undefined;
        if (leafLen === undefined) problems.push(`case ${n}: OK without a leaf`);
        else
          problems.push(...oracle.checkLeaf(leafLen, verdict.judged).map((p) => `case ${n}: ${p}`));
      }
    });
    await Promise.all(workers);

    // Still issuing afterwards.
    const after = await call(
      {},
      frame(encodeRequest({ identity: Buffer.from(WEB), token: validToken, csr: csrs[0]! })),
    );
    assert.equal(after.headers['grpc-status'], '0', 'the CA still issues after the fuzzing');
    ok++;
    session.close();
    await server.close(100);

    const issuedMetric = (await registry.getSingleMetricAsString('meshid_certify_requests_total'))
      .split('\n')
      .filter((l) => l.includes('outcome="issued"'))
      .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
    const wronglyIssued = problems.filter((p) => p.includes('ISSUED')).length;
    recordReliability({
      suite: 'fuzz: Certify on the wire',
      cases: WIRE_CASES,
      requests: WIRE_CASES + 1,
      wronglyIssued,
    });
    assert.deepEqual(
      problems.slice(0, 5),
      [],
      `${problems.length} problems; statuses ${JSON.stringify([...statuses])}`,
    );
    assert.equal(unexpectedErrors, 0, 'no unexpected failure was logged');
    assert.equal(issuedCallbacks, ok, 'the issuance callback (Events) saw exactly the OK answers');
    assert.equal(issuedMetric, ok, 'the issued counter is exactly the OK answers');
    assert.ok(ok > WIRE_CASES * 0.02, `valid requests were issued (${ok})`);
  });
});

/** The leaf_certificate bytes of an encoded CertifyResponse (field 1, length-delimited). */
function readLeaf(msg: Buffer): Buffer | undefined {
  if (msg[0] !== 0x0a) return undefined;
  let len = 0;
  let shift = 0;
  let i = 1;
  for (; i < msg.length; i++) {
    const b = msg[i]!;
    len += (b & 0x7f) * 2 ** shift;
    shift += 7;
    if (!(b & 0x80)) break;
  }
  return msg.subarray(i + 1, i + 1 + len);
}
