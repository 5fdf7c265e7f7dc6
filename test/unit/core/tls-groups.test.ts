/**
 * The TLS group policy (core/tls-groups.ts): what each `tlsGroups` mode offers in and out of FIPS
 * mode, that `hybrid-required` fails closed where the hybrid cannot be negotiated, and that both
 * ends of a real node:tls handshake report the same negotiated group (the server reads it from
 * its session, where Node's getEphemeralKeyInfo() answers nothing).
 */
import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import { connect, createServer } from 'node:tls';
import type { TLSSocket } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  FIPS_TLS,
  MESH_TLS,
  hybridGroupAvailable,
  isMeshidError,
  meshTlsSettings,
  negotiatedAlgorithms,
  tlsGroupList,
} from '../../../core/index.js';
import { MESH_TLS_CLASSIC, MESH_TLS_HYBRID_REQUIRED } from '../../../core/fips.js';
import { TLS_GROUP_LISTS, sessionKexGroup } from '../../../core/tls-groups.js';
import type { TlsAlgorithms } from '../../../core/index.js';

describe('core/tls-groups: the group policy', () => {
  it('offers X25519MLKEM768 first, then the classic groups, by default', () => {
    assert.equal(tlsGroupList('hybrid-preferred', false), 'X25519MLKEM768/X25519:P-256:P-384');
    assert.equal(MESH_TLS.ecdhCurve, TLS_GROUP_LISTS['hybrid-preferred']);
    assert.equal(meshTlsSettings(false), MESH_TLS);
    assert.equal(meshTlsSettings(false, 'hybrid-required'), MESH_TLS_HYBRID_REQUIRED);
    assert.equal(MESH_TLS_HYBRID_REQUIRED.ecdhCurve, 'X25519MLKEM768');
    assert.equal(meshTlsSettings(false, 'classic'), MESH_TLS_CLASSIC);
    assert.equal(MESH_TLS_CLASSIC.ecdhCurve, 'X25519:P-256:P-384');
  });

  it('runs on an OpenSSL that negotiates the hybrid (the pinned Node 26, OpenSSL 3.5)', () => {
    assert.ok(hybridGroupAvailable(), `OpenSSL ${process.versions.openssl}`);
  });

  it('offers P-256/P-384 in FIPS mode (the 3.0 FIPS provider has no ML-KEM), whatever the setting', () => {
    for (const mode of ['hybrid-preferred', 'classic'] as const) {
      assert.equal(tlsGroupList(mode, true), 'P-256:P-384');
      assert.equal(meshTlsSettings(true, mode), FIPS_TLS);
    }
  });

  it('refuses hybrid-required in FIPS mode, naming the setting and the way out', () => {
    const err = thrown(() => meshTlsSettings(true, 'hybrid-required'));
    assert.equal(err.code, 'ERR_TLS_GROUPS_UNAVAILABLE');
    assert.match(err.message, /hybrid-required \(--tls-groups, MESHID_TLS_GROUPS\)/);
    assert.match(err.message, /FIPS provider has no ML-KEM/);
    assert.match(err.message, /--tls-groups hybrid-preferred or classic/);
  });

  it('refuses hybrid-required where OpenSSL cannot negotiate the hybrid; preferred falls back to classic', () => {
    const err = thrown(() => tlsGroupList('hybrid-required', false, () => false));
    assert.equal(err.code, 'ERR_TLS_GROUPS_UNAVAILABLE');
    assert.match(err.message, /cannot negotiate X25519MLKEM768/);
    assert.equal(
      tlsGroupList('hybrid-preferred', false, () => false),
      TLS_GROUP_LISTS.classic,
    );
    assert.equal(
      meshTlsSettings(false, 'hybrid-preferred', () => false),
      MESH_TLS_CLASSIC,
    );
  });

  it('reads no group from bytes that are not a session', () => {
    assert.equal(sessionKexGroup(Buffer.from('not der')), undefined);
    assert.equal(sessionKexGroup(Buffer.from([0x30, 0x03, 0x02, 0x01, 0x01])), undefined);
  });
});

describe('core/tls-groups: the negotiated group on both ends of a real handshake', function () {
  this.timeout(30_000);
  const { key, cert } = selfSigned();

  /** One handshake; what each end reports, or the client's error. */
  async function handshake(
    serverGroups: string,
    clientGroups: string,
  ): Promise<{ server?: TlsAlgorithms; client?: TlsAlgorithms; error?: string }> {
    let server: TlsAlgorithms | undefined;
    const srv = createServer(
      { key, cert, minVersion: 'TLSv1.3', ecdhCurve: serverGroups },
      (s: TLSSocket) => {
        server = negotiatedAlgorithms(s);
        s.end();
      },
    );
    srv.on('tlsClientError', () => undefined);
    srv.listen(0, '127.0.0.1');
    await once(srv, 'listening');
    try {
      const c = connect({
        host: '127.0.0.1',
        port: (srv.address() as AddressInfo).port,
        ca: cert,
        servername: 'localhost',
        ecdhCurve: clientGroups,
      });
      // once() rejects with the socket's 'error': a refused handshake.
      const outcome = await once(c, 'secureConnect').then(
        () => ({ client: negotiatedAlgorithms(c) }),
        (e: Error) => ({ error: e.message }),
      );
      if ('client' in outcome) await once(c, 'close');
      c.destroy();
      return { ...outcome, ...(server === undefined ? {} : { server }) };
    } finally {
      srv.close();
    }
  }

  for (const [client, expected] of [
    ['X25519MLKEM768:X25519', 'X25519MLKEM768'],
    ['X25519:P-256', 'X25519'],
    ['P-256', 'P-256'],
    ['P-384', 'P-384'],
  ] as const) {
    it(`a client offering ${client} gets ${expected} from a hybrid-preferred server, and both ends say so`, async () => {
      const r = await handshake(TLS_GROUP_LISTS['hybrid-preferred'], client);
      assert.equal(r.error, undefined);
      assert.equal(r.client?.group, expected);
      assert.equal(r.server?.group, expected);
      assert.equal(r.server?.cipher, r.client?.cipher);
      assert.match(r.client?.cipher ?? '', /^TLS_(AES_128_GCM|AES_256_GCM|CHACHA20_POLY1305)_SHA/);
    });
  }

  it('asks a hybrid-capable client that sent only an X25519 key share to retry with the hybrid', async () => {
    // '*' marks the groups a client sends key shares for: here X25519 only, the hybrid offered.
    const r = await handshake(TLS_GROUP_LISTS['hybrid-preferred'], '*X25519:X25519MLKEM768');
    assert.equal(r.client?.group, 'X25519MLKEM768');
    assert.equal(r.server?.group, 'X25519MLKEM768');
  });

  it('a hybrid-required server refuses a classic-only client', async () => {
    const r = await handshake(TLS_GROUP_LISTS['hybrid-required'], 'X25519:P-256:P-384');
    assert.equal(r.server, undefined);
    assert.match(r.error ?? '', /handshake failure|alert number 40/);
  });

  it('a classic server and a hybrid-preferred client agree on X25519', async () => {
    const r = await handshake(TLS_GROUP_LISTS.classic, TLS_GROUP_LISTS['hybrid-preferred']);
    assert.equal(r.client?.group, 'X25519');
    assert.equal(r.server?.group, 'X25519');
  });
});

function thrown(fn: () => unknown): Error & { code?: string } {
  try {
    fn();
  } catch (err) {
    assert.ok(isMeshidError(err), String(err));
    return err;
  }
  assert.fail('did not throw');
}

/** A self-signed P-256 certificate for localhost, PEM, made by the openssl CLI. */
function selfSigned(): { key: string; cert: string } {
  const dir = mkdtempSync(join(tmpdir(), 'meshid-tls-groups-'));
  try {
    const [keyFile, certFile] = [join(dir, 'key.pem'), join(dir, 'cert.pem')];
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-subj',
        '/CN=localhost',
        '-addext',
        'subjectAltName=DNS:localhost',
        '-days',
        '1',
        '-keyout',
        keyFile,
        '-out',
        certFile,
      ],
      { stdio: 'ignore' },
    );
    return { key: readFileSync(keyFile, 'utf8'), cert: readFileSync(certFile, 'utf8') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
