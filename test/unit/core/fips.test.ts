import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  FIPS_TLS,
  MESH_TLS,
  cryptoStatus,
  enforceFips,
  fipsCertificateProblem,
  fipsKeyProblem,
  isMeshidError,
  meshTlsSettings,
  parsePem,
} from '../../../core/index.js';
import type { FipsCrypto } from '../../../core/fips.js';
import { inTempDir } from './fixtures/csr-makers.js';
import { captureLogs } from '../../support/log-capture.js';

/** A stand-in for node:crypto in each state the enforcement must tell apart. */
function fakeCrypto(o: {
  fips: boolean;
  setFips?: 'works' | 'throws';
  sha256?: boolean;
  md5?: boolean;
}): FipsCrypto & { setCalls: number } {
  let fips = o.fips;
  const fake = {
    setCalls: 0,
    getFips: () => (fips ? 1 : 0),
    setFips: (on: boolean) => {
      fake.setCalls++;
      if (o.setFips === 'throws')
        throw new Error('error:12800067:DSO support routines::could not load the shared library');
      fips = on;
    },
    createHash: (algorithm: string) => ({
      update: () => ({
        digest: () => {
          const available = algorithm === 'md5' ? (o.md5 ?? !fips) : (o.sha256 ?? true);
          if (!available) throw new Error('error:0308010C:digital envelope routines::unsupported');
          return Buffer.alloc(1);
        },
      }),
    }),
  };
  return fake;
}

function refusal(f: () => unknown): Error & { code: string } {
  try {
    f();
  } catch (err) {
    assert.ok(isMeshidError(err, 'ERR_FIPS_UNAVAILABLE'), String(err));
    return err;
  }
  assert.fail('expected ERR_FIPS_UNAVAILABLE');
}

describe('FIPS mode: status and start-up enforcement', () => {
  it('reports this process (no provider loaded) as not in FIPS mode, with its OpenSSL version', () => {
    const s = cryptoStatus();
    assert.equal(s.fipsMode, false);
    assert.equal(s.fipsProviderActive, false);
    assert.equal(s.opensslVersion, process.versions.openssl);
    assert.equal(s.nodeVersion, process.version);
  });

  it('changes nothing and logs one status line when FIPS is not requested', () => {
    const crypto = fakeCrypto({ fips: false });
    const { logger, lines } = captureLogs('info');
    const s = enforceFips(false, logger, crypto);
    assert.equal(s.fipsProviderActive, false);
    assert.equal(crypto.setCalls, 0);
    assert.equal(lines().length, 1);
    assert.equal(lines()[0]!['fips'], false);
    assert.match(String(lines()[0]!['msg']), /crypto: FIPS mode is off/);
  });

  it('turns FIPS mode on with setFips(true) when a provider can serve it', () => {
    const crypto = fakeCrypto({ fips: false });
    const { logger, lines } = captureLogs('info');
    const s = enforceFips(true, logger, crypto);
    assert.equal(crypto.setCalls, 1);
    assert.equal(s.fipsProviderActive, true);
    assert.equal(lines()[0]!['fips'], true);
    assert.match(String(lines()[0]!['msg']), /^FIPS mode: a FIPS provider serves all crypto/);
  });

  it('does not call setFips when FIPS mode is already on (--enable-fips, --force-fips)', () => {
    const crypto = fakeCrypto({ fips: true, setFips: 'throws' });
    assert.equal(enforceFips(true, captureLogs('info').logger, crypto).fipsProviderActive, true);
    assert.equal(crypto.setCalls, 0);
  });

  it('refuses to start when setFips(true) throws, saying why and how to run Node with a provider', () => {
    const err = refusal(() =>
      enforceFips(true, captureLogs('info').logger, fakeCrypto({ fips: false, setFips: 'throws' })),
    );
    assert.match(err.message, /FIPS mode was requested .*MESHID_FIPS=1/);
    assert.match(
      err.message,
      /crypto\.setFips\(true\) failed: .*could not load the shared library/,
    );
    assert.match(err.message, /does not fall back to non-FIPS crypto/);
    assert.match(err.message, /--openssl-config=<config> --enable-fips/);
    assert.match(err.message, /OPENSSL_MODULES=/);
    assert.match(err.message, /openssl fipsinstall/);
  });

  it('refuses to start when FIPS mode is on but no FIPS provider is loaded (nothing can hash)', () => {
    const err = refusal(() =>
      enforceFips(
        true,
        captureLogs('info').logger,
        fakeCrypto({ fips: false, sha256: false, md5: false }),
      ),
    );
    assert.match(err.message, /no FIPS provider is loaded: SHA-256 is unavailable/);
  });

  it('refuses to start when MD5 is still served: a non-FIPS provider answers default fetches', () => {
    const err = refusal(() =>
      enforceFips(true, captureLogs('info').logger, fakeCrypto({ fips: true, md5: true })),
    );
    assert.match(err.message, /MD5 is still available/);
  });

  it('refuses in a real process without a FIPS provider, where Node accepts setFips(true) and getFips() says 1', () => {
    // The real node:crypto: setFips(true) is accepted by Node. What can be fetched after it
    // depends on what the process used before: nothing new, but some Node versions keep digests
    // fetched before setFips (tsx hashes at start-up) usable. Either way the check must refuse,
    // not trust getFips().
    const script =
      "import('./core/index.js').then((c) => { try { c.enforceFips(true, c.createLogger({ level: 'silent' })); process.exit(0); } catch (e) { process.stdout.write(e.code + ' ' + e.message); process.exit(3); } })";
    let out = '';
    try {
      execFileSync(process.execPath, ['--import', 'tsx', '-e', script], {
        cwd: new URL('../../../', import.meta.url),
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      assert.fail('the check passed without a FIPS provider');
    } catch (err) {
      const e = err as { status?: number; stdout?: string };
      assert.equal(e.status, 3, String(err));
      out = e.stdout ?? '';
    }
    assert.match(
      out,
      /^ERR_FIPS_UNAVAILABLE .*crypto\.getFips\(\) is 1 but (no FIPS provider is loaded|MD5 is still available)/,
    );
  });
});

describe('FIPS mode: the TLS settings', () => {
  it('offers only the AES-GCM TLS 1.3 suites and P-256/P-384 in FIPS mode', () => {
    assert.equal(meshTlsSettings(true), FIPS_TLS);
    assert.equal(FIPS_TLS.minVersion, 'TLSv1.3');
    assert.equal(FIPS_TLS.ciphers, 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384');
    assert.equal(FIPS_TLS.ecdhCurve, 'P-256:P-384');
    assert.doesNotMatch(FIPS_TLS.sigalgs, /ed25519|ed448|sha1|sha512/i);
  });

  it('is unchanged outside FIPS mode', () => {
    assert.equal(meshTlsSettings(false), MESH_TLS);
    assert.match(MESH_TLS.ciphers, /CHACHA20/);
    assert.match(MESH_TLS.ecdhCurve, /X25519/);
  });
});

function spki(key: KeyObject): Buffer {
  return key.export({ type: 'spki', format: 'der' });
}

/** A self-signed certificate made by the openssl CLI (default provider), DER. */
function opensslCert(keyArgs: string[], signArgs: string[] = ['-sha256']): Buffer {
  return inTempDir((dir) => {
    const keyPath = join(dir, 'k.pem');
    const certPath = join(dir, 'c.pem');
    execFileSync('openssl', ['genpkey', ...keyArgs, '-out', keyPath], { stdio: 'ignore' });
    const sign = keyArgs.includes('ED25519') ? [] : signArgs;
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-new',
        '-key',
        keyPath,
        '-subj',
        '/CN=fips-test',
        '-days',
        '1',
        ...sign,
        '-out',
        certPath,
      ],
      { stdio: 'ignore' },
    );
    return Buffer.from(parsePem(readFileSync(certPath, 'utf8'))[0]!.der);
  });
}

describe('FIPS mode: the key and certificate policy', () => {
  const cases: [string, KeyObject, RegExp | undefined][] = [
    [
      'ECDSA P-256 is allowed',
      generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey,
      undefined,
    ],
    [
      'ECDSA P-384 is allowed',
      generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey,
      undefined,
    ],
    [
      'RSA 2048 is allowed',
      generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey,
      undefined,
    ],
    [
      'RSA 1024 is refused',
      generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey,
      /RSA 1024-bit/,
    ],
    [
      'RSA 2047 is refused',
      generateKeyPairSync('rsa', { modulusLength: 2047 }).publicKey,
      /RSA 2047-bit/,
    ],
    [
      'ECDSA P-521 is refused',
      generateKeyPairSync('ec', { namedCurve: 'P-521' }).publicKey,
      /EC P-521/,
    ],
    [
      'secp256k1 is refused',
      generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).publicKey,
      /EC 1\.3\.132\.0\.10/,
    ],
    ['Ed25519 is refused', generateKeyPairSync('ed25519').publicKey, /its key is Ed25519/],
    ['X25519 is refused', generateKeyPairSync('x25519').publicKey, /algorithm 1\.3\.101\.110/],
  ];
  for (const [name, key, problem] of cases) {
    it(name, () => {
      const got = fipsKeyProblem(spki(key));
      if (problem === undefined) assert.equal(got, undefined);
      else assert.match(got ?? '', problem);
    });
  }

  it('refuses an unreadable key', () => {
    assert.match(fipsKeyProblem(Uint8Array.of(0x30, 0x00)) ?? '', /cannot be read/);
  });

  it('accepts certificates with approved keys and SHA-256/384 signatures (openssl-made)', () => {
    for (const args of [
      ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'],
      ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384'],
      ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'],
    ]) {
      assert.equal(fipsCertificateProblem(opensslCert(args)), undefined, args.join(' '));
    }
    assert.equal(
      fipsCertificateProblem(
        opensslCert(['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384'], ['-sha384']),
      ),
      undefined,
    );
  });

  it('refuses certificates with a key or signature outside the policy, naming it', () => {
    const p256 = ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'];
    assert.match(
      fipsCertificateProblem(opensslCert(['-algorithm', 'ED25519'])) ?? '',
      /its key is Ed25519/,
    );
    assert.match(
      fipsCertificateProblem(opensslCert(p256, ['-sha512'])) ?? '',
      /signed with ECDSA with SHA-512/,
    );
    assert.match(
      fipsCertificateProblem(opensslCert(p256, ['-sha1'])) ?? '',
      /signed with ECDSA with SHA-1/,
    );
    assert.match(
      fipsCertificateProblem(
        opensslCert(['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:1024']),
      ) ?? '',
      /RSA 1024-bit/,
    );
    assert.match(
      fipsCertificateProblem(Uint8Array.of(0x30, 0x00)) ?? '',
      /cannot be read as a certificate/,
    );
  });

  it('reads RSA-PSS signature parameters: SHA-256 is inside the policy', () => {
    const rsa = ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'];
    const der = opensslCert(rsa, ['-sha256', '-sigopt', 'rsa_padding_mode:pss']);
    assert.equal(fipsCertificateProblem(der), undefined);
  });
});
