/**
 * Property tests of the Certify decision (fast-check): for any combination of the token's
 * service account and validity window (exp, nbf, iat around the skew allowance), its issuer,
 * audience and signing key, the requested identity (another workload's, or not a workload
 * identity name at all), the CSR's key (P-256, P-384, P-521, RSA, Ed25519), DNS SANs, CN,
 * URI/IP/email SANs and signature, and the issuer's validity against the CA's clock, the CA issues
 * if and only if everything agrees and every rule holds; a refusal carries the code of the first
 * broken rule in the order docs/errors.md gives.
 *
 * The oracle is independent of the code under test: it judges the generated scenario (what the
 * test meant to build), not the bytes, from the rules as docs/errors.md states them, and CSRs are
 * built with @peculiar/x509 over WebCrypto, tokens with jose, neither of which the CA uses for
 * this. Each issued leaf is checked with node's X509Certificate: signed by the issuer, for exactly
 * the requested identity and the CSR's key, not a CA, NotBefore/NotAfter as the contract says.
 *
 * The real Certify handler with the real JWKS token validator on an injected clock; a slice goes
 * through the real gRPC server over TLS on 127.0.0.1 and checks the gRPC status against the
 * table in docs/errors.md. `MESHID_PROPERTY_RUNS` (default 150) and `MESHID_PROPERTY_WIRE_RUNS`
 * (default 25) size them; `npm run test:reliability` runs many more. A failure prints fast-check's
 * seed and the shrunk counterexample; `MESHID_PROPERTY_SEED` replays a run.
 */
import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { X509Certificate, randomUUID, webcrypto } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import fc from 'fast-check';
import { SignJWT, importPKCS8 } from 'jose';
import { GrpcStatus, isMeshidError, systemRandom, parseAnchors } from '../../../core/index.js';
import { ManualClock } from '../../../core/clock.js';
import { silentLogger } from '../../../core/logger.js';
import type { CertifyRequest, CertifyResponse } from '../../../core/index.js';
import { createIntermediateCa, createRootCa } from '../../../core/pki.js';
import { JwksTokenValidator, generateTokenSigningKey } from '../../../identity-ca/index.js';
import { issueServingCertificate } from '../../../identity-ca/server/serving-cert.js';
import { linkerdLikeCertify } from '../../support/linkerd-like-client.js';
import { KEY_KINDS, signingAlgorithm, webKeyPair } from '../core/fixtures/csr-makers.js';
import type { KeyKind } from '../core/fixtures/csr-makers.js';
import { recordReliability } from '../../support/reliability-report.js';
import { CA_IDENTITY, DAY, HOUR, TOKEN_ISSUER, idOf } from '../../support/state.js';
import { CertifyServer } from '../../../identity-ca/server/grpc-server.js';
import { SignerCache, createCertifyHandler } from '../../../identity-ca/server/certify.js';
import { validateIssuer } from '../../../identity-ca/issuer/material.js';
import type { IssuerCredentials } from '../../../identity-ca/issuer/material.js';

const RUNS = Number(process.env['MESHID_PROPERTY_RUNS'] ?? 150);
const WIRE_RUNS = Number(process.env['MESHID_PROPERTY_WIRE_RUNS'] ?? 25);
const SEED_ENV = process.env['MESHID_PROPERTY_SEED'];
const SEED = SEED_ENV === undefined ? undefined : Number(SEED_ENV);

const NAMING = { trustDomain: 'cluster.local', controlPlaneNamespace: 'linkerd' };
const AUDIENCE = 'identity.l5d.io';
const SKEW_MS = 20_000;
const LIFETIME_MS = DAY;

/** Workloads a token can be for, and a requested identity can name. */
const ACCOUNTS = [
  { namespace: 'emojivoto', serviceAccount: 'web' },
  { namespace: 'emojivoto', serviceAccount: 'voting' },
  { namespace: 'books', serviceAccount: 'web' },
] as const;
const nameOf = (a: (typeof ACCOUNTS)[number]): string => idOf(a.namespace, a.serviceAccount);

/** Requested identities that are not workload identity names of this trust domain (step 3). */
const MALFORMED = [
  'web.emojivoto.serviceaccount.identity.linkerd.other.domain',
  'web.emojivoto.serviceaccount.identity.istio.cluster.local',
  'emojivoto.serviceaccount.identity.linkerd.cluster.local',
  'a.web.emojivoto.serviceaccount.identity.linkerd.cluster.local',
  'Web.emojivoto.serviceaccount.identity.linkerd.cluster.local',
  'web_1.emojivoto.serviceaccount.identity.linkerd.cluster.local',
  'web.emojivoto.serviceaccount.identity.linkerd.cluster.local.',
] as const;

/** A name the CSR carries, relative to the requested identity and the token's. */
type NameRef = 'requested' | 'token' | 'other' | 'upper' | 'dot';
/** Where the CA's clock stands against the issuer's validity (or no issuer at all). */
type IssuerAt = 'none' | 'before' | 'valid' | 'nearEnd' | 'after';

interface Scenario {
  readonly issuerAt: IssuerAt;
  readonly tokenAccount: number;
  readonly tokenExp: 'future' | 'inSkew' | 'skewEdge' | 'past';
  readonly tokenNbf: 'absent' | 'past' | 'inSkew' | 'skewEdge' | 'future';
  readonly tokenIat: 'absent' | 'past' | 'future';
  readonly tokenAudience: 'ok' | 'inList' | 'other';
  readonly tokenIssuer: 'ok' | 'other';
  readonly tokenKey: 'jwks' | 'stranger' | 'empty';
  readonly requested: { kind: 'account'; account: number } | { kind: 'malformed'; which: number };
  readonly key: KeyKind;
  readonly keyIndex: number;
  readonly dns: readonly NameRef[];
  readonly cn: 'none' | 'empty' | 'two' | NameRef;
  readonly uri: boolean;
  readonly ip: boolean;
  readonly email: boolean;
  readonly tamperedSignature: boolean;
  /** Milliseconds past the whole second the clock reads (X.509 and JWT times are whole seconds). */
  readonly clockMs: number;
}

/** Mostly the good value, sometimes one of the bad ones: so both outcomes are common. */
function mostly<T>(good: T, ...bad: T[]): fc.Arbitrary<T> {
  return fc.oneof(
    { arbitrary: fc.constant(good), weight: 10 * bad.length },
    { arbitrary: fc.constantFrom(...bad), weight: bad.length },
  );
}

const scenarios: fc.Arbitrary<Scenario> = fc
  .record({
    issuerAt: mostly<IssuerAt>('valid', 'nearEnd', 'nearEnd', 'none', 'before', 'after'),
    tokenAccount: fc.nat({ max: ACCOUNTS.length - 1 }),
    tokenExp: mostly<Scenario['tokenExp']>('future', 'inSkew', 'inSkew', 'skewEdge', 'past'),
    tokenNbf: mostly<Scenario['tokenNbf']>(
      'past',
      'absent',
      'absent',
      'inSkew',
      'inSkew',
      'skewEdge',
      'future',
    ),
    tokenIat: mostly<Scenario['tokenIat']>('past', 'absent', 'absent', 'future'),
    tokenAudience: mostly<Scenario['tokenAudience']>('ok', 'inList', 'inList', 'other'),
    tokenIssuer: mostly<Scenario['tokenIssuer']>('ok', 'other'),
    tokenKey: mostly<Scenario['tokenKey']>('jwks', 'stranger', 'empty'),
    requested: fc.oneof(
      { arbitrary: fc.constant({ kind: 'same' as const }), weight: 12 },
      {
        arbitrary: fc
          .nat({ max: ACCOUNTS.length - 1 })
          .map((account) => ({ kind: 'account' as const, account })),
        weight: 2,
      },
      {
        arbitrary: fc
          .nat({ max: MALFORMED.length - 1 })
          .map((which) => ({ kind: 'malformed' as const, which })),
        weight: 1,
      },
    ),
    key: mostly<KeyKind>('P-256', ...KEY_KINDS.filter((k) => k !== 'P-256')),
    keyIndex: fc.nat({ max: 2 }),
    dns: fc.oneof(
      { arbitrary: fc.constant<NameRef[]>(['requested']), weight: 12 },
      {
        arbitrary: fc.array(
          fc.constantFrom<NameRef>('requested', 'token', 'other', 'upper', 'dot'),
          { maxLength: 3 },
        ),
        weight: 3,
      },
    ),
    cn: mostly<Scenario['cn']>(
      'requested',
      'none',
      'empty',
      'two',
      'token',
      'other',
      'upper',
      'dot',
    ),
    uri: mostly(false, true),
    ip: mostly(false, true),
    email: mostly(false, true),
    tamperedSignature: mostly(false, true),
    clockMs: fc.constantFrom(0, 1, 499, 999),
  })
  .map(({ requested, ...s }) => ({
    ...s,
    // A request is usually for the token's own identity; the record keeps that explicit.
    requested:
      requested.kind === 'same' ? { kind: 'account' as const, account: s.tokenAccount } : requested,
  }));

/** The requested identity string of a scenario. */
function requestedName(s: Scenario): string {
  return s.requested.kind === 'account'
    ? nameOf(ACCOUNTS[s.requested.account]!)
    : MALFORMED[s.requested.which]!;
}

function resolveName(ref: NameRef, s: Scenario): string {
  const requested = requestedName(s);
  switch (ref) {
    case 'requested':
      return requested;
    case 'token':
      return nameOf(ACCOUNTS[s.tokenAccount]!);
    case 'other':
      return idOf('emojivoto', 'admin');
    case 'upper':
      return requested.toUpperCase();
    case 'dot':
      return `${requested}.`;
  }
}

/** The issuer's validity, and where the clock is put for each position. */
interface Times {
  readonly issuerNotBefore: number;
  readonly issuerNotAfter: number;
  clockAt(at: IssuerAt): number;
}

/**
 * The oracle: what the CA must answer, from the scenario and the rules of docs/errors.md ("the
 * order of checks"), in that order. `undefined` means it must issue.
 */
function expectedRefusal(s: Scenario, times: Times): string | undefined {
  const now = times.clockAt(s.issuerAt) + s.clockMs;
  // 1. an issuer is loaded.
  if (s.issuerAt === 'none') return 'ERR_ISSUER_NOT_LOADED';
  // 2. fields present.
  if (s.tokenKey === 'empty') return 'ERR_REQUEST_INVALID';
  // 3. the identity is <sa>.<ns>.serviceaccount.identity.<cp-ns>.<trust-domain>.
  if (s.requested.kind === 'malformed') return 'ERR_IDENTITY_INVALID';
  // 4. the CSR is DER PKCS#10: always, here (the fuzzer covers malformed CSRs).
  // 5. the issuer chain is valid now.
  if (now < times.issuerNotBefore || now >= times.issuerNotAfter) return 'ERR_ISSUER_NOT_VALID_NOW';
  // 6. CSR rules: P-256, exactly one DNS SAN equal to the identity, no other SANs, CN empty or
  //    the identity, signature verifies.
  const requested = requestedName(s);
  const cnOk =
    s.cn === 'none' || s.cn === 'empty' || (s.cn !== 'two' && resolveName(s.cn, s) === requested);
  const dnsOk = s.dns.length === 1 && resolveName(s.dns[0]!, s) === requested;
  if (s.key !== 'P-256' || !dnsOk || s.uri || s.ip || s.email || !cnOk || s.tamperedSignature)
    return 'ERR_CSR_POLICY';
  // 7b. the token authenticates: a JWKS key's signature, issuer, audience, exp/nbf/iat with the
  //     skew allowance (exp at exactly now - skew has expired; nbf at exactly now + skew is fine).
  if (
    s.tokenKey === 'stranger' ||
    s.tokenIssuer !== 'ok' ||
    s.tokenAudience === 'other' ||
    s.tokenExp === 'past' ||
    s.tokenExp === 'skewEdge' ||
    s.tokenNbf === 'future' ||
    s.tokenIat === 'future'
  )
    return 'ERR_TOKEN_UNAUTHENTICATED';
  // 8. the token's identity is the requested one.
  if (nameOf(ACCOUNTS[s.tokenAccount]!) !== requested) return 'ERR_IDENTITY_MISMATCH';
  return undefined;
}

/** The gRPC status of each code, read from the table in docs/errors.md (not from core/errors.ts). */
function grpcStatusTable(): Map<string, number> {
  const doc = readFileSync(new URL('../../../docs/errors.md', import.meta.url), 'utf8');
  const table = new Map<string, number>();
  for (const m of doc.matchAll(/^\| `(ERR_[A-Z_]+)` \| ([A-Z_]+) \|/gm)) {
    const status = GrpcStatus[m[2] as keyof typeof GrpcStatus];
    assert.equal(typeof status, 'number', `docs/errors.md names gRPC status ${m[2]}`);
    table.set(m[1]!, status);
  }
  return table;
}

describe('Certify properties: issued if and only if every rule holds', function () {
  this.timeout(Math.max(60_000, RUNS * 100 + WIRE_RUNS * 500));
  let dir: string;
  let times: Times;
  let issuer: IssuerCredentials;
  let rootPem: string;
  let clock: ManualClock;
  let tokens: JwksTokenValidator;
  let signToken: (s: Scenario, now: number) => Promise<Buffer>;
  const keys = new Map<KeyKind, KeyPair[]>();
  type KeyPair = Awaited<ReturnType<typeof webKeyPair>>;
  const statusOf = grpcStatusTable();

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshid-properties-'));
    // Whole seconds: the issuer's times are X.509 times.
    const t0 = Math.floor(Date.now() / 1000) * 1000;
    const root = await createRootCa({
      commonName: 'root.linkerd.cluster.local',
      notBefore: t0 - 400 * DAY,
      notAfter: t0 + 400 * DAY,
    });
    const ca = await createIntermediateCa({
      issuer: root,
      commonName: 'identity.linkerd.cluster.local',
      notBefore: t0 - 10 * DAY,
      notAfter: t0 + 30 * DAY,
      pathLength: 0,
    });
    rootPem = root.certificatePem;
    times = {
      issuerNotBefore: t0 - 10 * DAY,
      issuerNotAfter: t0 + 30 * DAY,
      clockAt: (at) =>
        ({
          none: t0,
          before: t0 - 10 * DAY - HOUR,
          valid: t0,
          // Less than a lifetime before the issuer's end: NotAfter is clamped to it.
          nearEnd: t0 + 30 * DAY - 2 * HOUR,
          after: t0 + 30 * DAY + HOUR,
        })[at],
    };
    issuer = await validateIssuer(
      { tlsCrt: ca.certificatePem, tlsKey: ca.privateKeyPem },
      parseAnchors(root.certificatePem, { now: t0 }),
      t0,
    );
    clock = new ManualClock(t0);
    const signing = await generateTokenSigningKey();
    const stranger = await generateTokenSigningKey();
    await writeFile(join(dir, 'jwks.json'), JSON.stringify(signing.jwks));
    tokens = await JwksTokenValidator.create({
      jwks: { file: join(dir, 'jwks.json') },
      issuer: TOKEN_ISSUER,
      audience: AUDIENCE,
      clockSkewMs: SKEW_MS,
      clock,
      logger: silentLogger(),
    });
    const signingKey = await importPKCS8(signing.privateKeyPem, 'RS256');
    const strangerKey = await importPKCS8(stranger.privateKeyPem, 'RS256');
    signToken = async (s, now) => {
      if (s.tokenKey === 'empty') return Buffer.alloc(0);
      const sec = Math.floor(now / 1000);
      const skew = SKEW_MS / 1000;
      const account = ACCOUNTS[s.tokenAccount]!;
      const claims: Record<string, unknown> = {
        iss: s.tokenIssuer === 'ok' ? TOKEN_ISSUER : 'https://evil.example',
        sub: `system:serviceaccount:${account.namespace}:${account.serviceAccount}`,
        aud: {
          ok: [AUDIENCE],
          inList: ['https://kubernetes.default.svc', AUDIENCE],
          other: ['vault'],
        }[s.tokenAudience],
        exp: {
          future: sec + 3600,
          inSkew: sec - skew + 5,
          skewEdge: sec - skew,
          past: sec - skew - 60,
        }[s.tokenExp],
        jti: randomUUID(),
        'kubernetes.io': {
          namespace: account.namespace,
          serviceaccount: { name: account.serviceAccount, uid: randomUUID() },
        },
      };
      if (s.tokenNbf !== 'absent')
        claims['nbf'] = {
          past: sec - 3600,
          inSkew: sec + skew - 5,
          skewEdge: sec + skew,
          future: sec + skew + 5,
        }[s.tokenNbf];
      if (s.tokenIat !== 'absent')
        claims['iat'] = s.tokenIat === 'past' ? sec - 3600 : sec + skew + 5;
      const jwt = await new SignJWT(claims)
        .setProtectedHeader({ alg: 'RS256', kid: signing.kid })
        .sign(s.tokenKey === 'jwks' ? signingKey : strangerKey);
      return Buffer.from(jwt);
    };
    for (const kind of KEY_KINDS) {
      const pairs: KeyPair[] = [];
      for (let i = 0; i < (kind === 'P-256' ? 3 : 1); i++) pairs.push(await webKeyPair(kind));
      keys.set(kind, pairs);
    }
  });
  after(async () => {
    await tokens?.close();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  /** The request a scenario describes, built with @peculiar/x509 and jose. */
  async function buildRequest(
    s: Scenario,
    now: number,
  ): Promise<{ req: CertifyRequest; spki: Buffer }> {
    const pool = keys.get(s.key)!;
    const pair = pool[s.keyIndex % pool.length]!;
    const cnValue = (v: string): x509.JsonName => [{ '2.5.4.3': [v] }];
    const name: x509.JsonName =
      s.cn === 'none'
        ? []
        : s.cn === 'empty'
          ? cnValue('')
          : s.cn === 'two'
            ? [...cnValue(requestedName(s)), ...cnValue(requestedName(s))]
            : cnValue(resolveName(s.cn, s));
    const sans: x509.JsonGeneralName[] = s.dns.map((ref) => ({
      type: 'dns',
      value: resolveName(ref, s),
    }));
    if (s.uri) {
      const a = ACCOUNTS[s.tokenAccount]!;
      sans.push({
        type: 'url',
        value: `spiffe://cluster.local/ns/${a.namespace}/sa/${a.serviceAccount}`,
      });
    }
    if (s.ip) sans.push({ type: 'ip', value: '10.1.2.3' });
    if (s.email) sans.push({ type: 'email', value: 'web@emojivoto.example' });
    const csr = await x509.Pkcs10CertificateRequestGenerator.create(
      {
        name,
        keys: pair,
        signingAlgorithm: signingAlgorithm(s.key),
        extensions: sans.length === 0 ? [] : [new x509.SubjectAlternativeNameExtension(sans)],
      },
      webcrypto as unknown as Parameters<typeof x509.Pkcs10CertificateRequestGenerator.create>[1],
    );
    const der = Buffer.from(csr.rawData);
    // The last byte of a PKCS#10 DER is the signature's last byte: flipping it keeps the DER
    // well-formed and breaks only the proof of possession.
    if (s.tamperedSignature) der[der.length - 1]! ^= 0x01;
    return {
      req: {
        identity: requestedName(s),
        token: await signToken(s, now),
        certificateSigningRequest: der,
      },
      spki: Buffer.from(csr.publicKey.rawData),
    };
  }

  /** Problems with an issued leaf against the scenario (empty when it is right). */
  function leafProblems(s: Scenario, res: CertifyResponse, spki: Buffer, now: number): string[] {
    const problems: string[] = [];
    const leaf = new X509Certificate(res.leafCertificate);
    const account = ACCOUNTS[s.requested.kind === 'account' ? s.requested.account : 0]!;
    const want = `DNS:${requestedName(s)}, URI:spiffe://cluster.local/ns/${account.namespace}/sa/${account.serviceAccount}`;
    if (leaf.subjectAltName !== want) problems.push(`SANs ${leaf.subjectAltName}, not ${want}`);
    if (!leaf.publicKey.export({ format: 'der', type: 'spki' }).equals(spki))
      problems.push('the leaf key is not the CSR key');
    if (!leaf.verify(new X509Certificate(issuer.certificateDer).publicKey))
      problems.push('the leaf is not signed by the issuer');
    if (leaf.ca) problems.push('the leaf is a CA');
    const second = Math.floor(now / 1000) * 1000;
    const notBefore = Math.max(second - SKEW_MS, times.issuerNotBefore);
    const notAfter = Math.min(second + LIFETIME_MS, times.issuerNotAfter);
    if (Date.parse(leaf.validFrom) !== notBefore)
      problems.push(`NotBefore ${leaf.validFrom}, not ${new Date(notBefore).toISOString()}`);
    if (Date.parse(leaf.validTo) !== notAfter)
      problems.push(`NotAfter ${leaf.validTo}, not ${new Date(notAfter).toISOString()}`);
    if (res.validUntil !== notAfter) problems.push(`valid_until ${res.validUntil} is not NotAfter`);
    return problems;
  }

  /** The issuer the handler sees: none in the scenarios without one. */
  let loaded: IssuerCredentials | undefined;
  const makeHandler = (
    onIssued?: () => void,
  ): ((req: CertifyRequest) => Promise<CertifyResponse>) =>
    createCertifyHandler({
      currentIssuer: () => loaded,
      tokens,
      naming: NAMING,
      certLifetimeMs: LIFETIME_MS,
      clockSkewMs: SKEW_MS,
      clock,
      random: systemRandom,
      logger: silentLogger(),
      ...(onIssued === undefined ? {} : { onIssued }),
    });

  /**
   * Runs the property with each scenario's request sent through `call`, which answers a leaf or
   * a refusal (a code, or a gRPC status); `refusalOf` says what the oracle's code must look like
   * there. Records the suite's line even when the property failed, so a wrong issuance reaches
   * the table. Returns how many were issued.
   */
  async function checkProperty<R>(o: {
    suite: string;
    numRuns: number;
    call: (req: CertifyRequest) => Promise<{ res?: CertifyResponse; refusal?: R; why?: string }>;
    refusalOf: (code: string) => R | undefined;
  }): Promise<number> {
    let runs = 0;
    let issued = 0;
    let wronglyIssued = 0;
    try {
      await fc.assert(
        fc.asyncProperty(scenarios, async (s) => {
          runs++;
          const now = times.clockAt(s.issuerAt) + s.clockMs;
          clock.set(now);
          loaded = s.issuerAt === 'none' ? undefined : issuer;
          const { req, spki } = await buildRequest(s, now);
          const expected = expectedRefusal(s, times);
          const answer = await o.call(req);
          if (answer.res !== undefined) {
            issued++;
            if (expected !== undefined) wronglyIssued++;
            assert.deepEqual(leafProblems(s, answer.res, spki, now), []);
          }
          assert.equal(
            answer.refusal,
            expected === undefined ? undefined : o.refusalOf(expected),
            `the refusal is that of the first broken rule (${expected ?? 'none: issue'}); ${answer.why ?? ''}`,
          );
        }),
        { numRuns: o.numRuns, ...(SEED === undefined ? {} : { seed: SEED }) },
      );
    } finally {
      recordReliability({
        suite: o.suite,
        cases: o.numRuns,
        requests: runs,
        wronglyIssued,
        notes: `${issued} issued`,
      });
    }
    return issued;
  }

  it('the Certify handler (real JWKS validator, injected clock)', async () => {
    let callbacks = 0;
    const handler = makeHandler(() => callbacks++);
    const issued = await checkProperty<string>({
      suite: 'properties: Certify handler',
      numRuns: RUNS,
      async call(req) {
        try {
          return { res: await handler(req) };
        } catch (err) {
          if (!isMeshidError(err)) throw err;
          return { refusal: err.code, why: err.message };
        }
      },
      refusalOf: (code) => code,
    });
    assert.equal(callbacks, issued, 'the issuance callback (Events) saw exactly the issued leaves');
    assert.ok(issued >= RUNS / 20, `both outcomes are common (${issued} of ${RUNS} issued)`);
    assert.ok(issued <= RUNS * 0.8, `both outcomes are common (${issued} of ${RUNS} issued)`);
  });

  it('a slice over the real gRPC server over TLS: the status is the code table’s', async () => {
    const serving = issueServingCertificate(issuer, {
      identityName: CA_IDENTITY,
      naming: NAMING,
      lifetimeMs: HOUR,
      clockSkewMs: SKEW_MS,
      clock: new ManualClock(times.clockAt('valid')),
      random: systemRandom,
      signers: new SignerCache(),
    });
    const server = new CertifyServer({
      handler: makeHandler(),
      logger: silentLogger(),
      maxRequestBytes: 64 * 1024,
      credentials: serving,
    });
    const address = await server.listen({ host: '127.0.0.1', port: 0 });
    let issued: number;
    try {
      issued = await checkProperty<number>({
        suite: 'properties: Certify over gRPC/TLS',
        numRuns: WIRE_RUNS,
        async call(request) {
          const a = await linkerdLikeCertify(address, {
            serverName: CA_IDENTITY,
            anchorsPem: rootPem,
            request,
          });
          if (a.grpcStatus !== GrpcStatus.OK) return { refusal: a.grpcStatus, why: a.grpcMessage };
          // OK without a response would be a broken answer: a refusal no code maps to.
          return a.response === undefined
            ? { refusal: -1, why: 'OK without a response' }
            : { res: a.response };
        },
        refusalOf: (code) => statusOf.get(code),
      });
    } finally {
      await server.close(100);
    }
    assert.ok(issued > 0 || WIRE_RUNS < 20, `some were issued (${issued} of ${WIRE_RUNS})`);
  });
});
