/**
 * meshid's TLS key-exchange group policy, the one home of it: which groups every meshid TLS
 * endpoint (the CA, the proxies' inbound and outbound, the webhooks, check's probes) offers under
 * the `tlsGroups` setting, and which group a finished handshake used.
 *
 * - `hybrid-preferred` (default): the post-quantum hybrid X25519MLKEM768 first, then the classic
 *   X25519, P-256 and P-384 for peers without it (OpenSSL 3.0, older proxies).
 * - `hybrid-required`: X25519MLKEM768 only; a classic-only peer fails its handshake.
 * - `classic`: X25519, P-256, P-384 (no hybrid).
 *
 * FIPS mode offers P-256 and P-384 only, whatever the setting: the OpenSSL 3.0 FIPS provider
 * has no ML-KEM, so no hybrid group can be negotiated on it, and `hybrid-required` with FIPS
 * refuses to start (docs/fips.md).
 */
import { createSecureContext } from 'node:tls';
import type { TLSSocket } from 'node:tls';
import { DerReader, contextTag, decodeDer, readSmallInteger, DerTag } from './der.js';
import { MeshidError } from './errors.js';

/** The values of the `tlsGroups` setting. */
export const TLS_GROUPS_MODES = ['hybrid-preferred', 'hybrid-required', 'classic'] as const;

/** One of {@link TLS_GROUPS_MODES}. */
export type TlsGroupsMode = (typeof TLS_GROUPS_MODES)[number];

/** The post-quantum hybrid group meshid prefers (ML-KEM-768 with X25519, IANA 0x11EC). */
const HYBRID_GROUP = 'X25519MLKEM768';

/**
 * OpenSSL group lists (`ecdhCurve`) per mode. In `hybrid-preferred` the `/` ends the first
 * preference tier: a client that supports X25519MLKEM768 but sent a key share for X25519 only is
 * asked to retry with the hybrid, while a classic-only client is served at once.
 */
export const TLS_GROUP_LISTS: Readonly<Record<TlsGroupsMode, string>> = Object.freeze({
  'hybrid-preferred': `${HYBRID_GROUP}/X25519:P-256:P-384`,
  'hybrid-required': HYBRID_GROUP,
  classic: 'X25519:P-256:P-384',
});

/** The groups of FIPS mode: ECDH on P-256 and P-384, which the OpenSSL 3.0 FIPS provider serves. */
export const FIPS_TLS_GROUPS = 'P-256:P-384';

/**
 * Whether this process's OpenSSL (and the providers it runs on) can negotiate X25519MLKEM768:
 * OpenSSL 3.5 or later with a provider that has ML-KEM. False on Node 20's OpenSSL 3.0 and on
 * the OpenSSL 3.0 FIPS provider.
 *
 * @example
 * ```ts
 * if (!hybridGroupAvailable()) logger.warn('no post-quantum key exchange on this runtime');
 * ```
 */
export function hybridGroupAvailable(): boolean {
  try {
    createSecureContext({ minVersion: 'TLSv1.3', ecdhCurve: HYBRID_GROUP });
    return true;
  } catch {
    return false;
  }
}

/**
 * The group list for `mode`, in or out of FIPS mode; throws ERR_TLS_GROUPS_UNAVAILABLE when the
 * hybrid is required but cannot be negotiated here (FIPS mode, or an OpenSSL without ML-KEM),
 * so a process that was told to require it never serves classic key exchange.
 *
 * @example
 * ```ts
 * tls.createServer({ ecdhCurve: tlsGroupList(config.tlsGroups, config.fips), ... });
 * ```
 */
export function tlsGroupList(
  mode: TlsGroupsMode,
  fips: boolean,
  available: () => boolean = hybridGroupAvailable,
): string {
  if (mode === 'hybrid-required') {
    if (fips) {
      throw new MeshidError(
        'ERR_TLS_GROUPS_UNAVAILABLE',
        `tlsGroups is hybrid-required (--tls-groups, MESHID_TLS_GROUPS) but FIPS mode is on, and ` +
          `the OpenSSL 3.0 FIPS provider has no ML-KEM: ${HYBRID_GROUP} cannot be negotiated. ` +
          `Use --tls-groups hybrid-preferred or classic with FIPS (P-256/P-384 key exchange), ` +
          `or turn FIPS mode off (docs/fips.md).`,
      );
    }
    if (!available()) {
      throw new MeshidError(
        'ERR_TLS_GROUPS_UNAVAILABLE',
        `tlsGroups is hybrid-required (--tls-groups, MESHID_TLS_GROUPS) but this Node.js ` +
          `${process.version} (OpenSSL ${process.versions.openssl ?? 'unknown'}) cannot negotiate ` +
          `${HYBRID_GROUP}: run meshid on Node.js 26 (OpenSSL 3.5), or use --tls-groups ` +
          `hybrid-preferred.`,
      );
    }
  }
  if (fips) return FIPS_TLS_GROUPS;
  // Without the hybrid here, hybrid-preferred offers the classic groups it would fall back to.
  if (mode === 'hybrid-preferred' && !available()) return TLS_GROUP_LISTS.classic;
  return TLS_GROUP_LISTS[mode];
}

/** IANA TLS Supported Groups code points meshid can meet, by OpenSSL's names. */
const GROUP_NAMES: ReadonlyMap<number, string> = new Map([
  [0x0017, 'P-256'],
  [0x0018, 'P-384'],
  [0x0019, 'P-521'],
  [0x001d, 'X25519'],
  [0x001e, 'X448'],
  [0x0100, 'ffdhe2048'],
  [0x0101, 'ffdhe3072'],
  [0x0102, 'ffdhe4096'],
  [0x0103, 'ffdhe6144'],
  [0x0104, 'ffdhe8192'],
  [0x0200, 'MLKEM512'],
  [0x0201, 'MLKEM768'],
  [0x0202, 'MLKEM1024'],
  [0x11eb, 'SecP256r1MLKEM768'],
  [0x11ec, 'X25519MLKEM768'],
  [0x11ed, 'SecP384r1MLKEM1024'],
]);

/** OpenSSL's names for the NIST curves as getEphemeralKeyInfo() reports them. */
const CURVE_ALIASES: ReadonlyMap<string, string> = new Map([
  ['prime256v1', 'P-256'],
  ['secp384r1', 'P-384'],
  ['secp521r1', 'P-521'],
]);

/** Whether `group` (a name from {@link negotiatedGroup}) is a post-quantum hybrid or pure ML-KEM. */
export function isPostQuantumGroup(group: string | undefined): boolean {
  return group !== undefined && /MLKEM/i.test(group);
}

/** What a finished TLS handshake used. */
export interface TlsAlgorithms {
  /** The key-exchange group, e.g. `X25519MLKEM768`, `X25519`, `P-256`; '' when unknown. */
  readonly group: string;
  /** The cipher suite's standard name, e.g. `TLS_AES_128_GCM_SHA256`; '' when unknown. */
  readonly cipher: string;
}

/** The SSL_SESSION field OpenSSL 3 serializes the key-exchange group in: [19] EXPLICIT INTEGER. */
const SESSION_KEX_GROUP = contextTag(19, true);

/**
 * The key-exchange group of a session as OpenSSL serializes it (i2d_SSL_SESSION, what
 * `TLSSocket.getSession()` returns): the IANA code point in field [19]. Undefined when absent.
 */
export function sessionKexGroup(sessionDer: Uint8Array): number | undefined {
  try {
    const session = new DerReader(decodeDer(sessionDer, DerTag.SEQUENCE, 'SSL_SESSION').contents);
    while (session.more) {
      const el = session.next();
      if (el.tag === SESSION_KEX_GROUP) {
        return readSmallInteger(decodeDer(el.contents, DerTag.INTEGER, 'kex_group'), 'kex_group');
      }
    }
  } catch {
    // Not a session this code understands: the group stays unknown.
  }
  return undefined;
}

/**
 * The group and cipher a finished handshake negotiated, on either end. A client reads the group
 * from `getEphemeralKeyInfo()`. Node offers nothing for it on a server socket (that call answers
 * null there), so a server reads it from its side of the session: OpenSSL keeps the group in
 * the SSL_SESSION and `getSession()` serializes it.
 *
 * @example
 * ```ts
 * socket.on('secure', () => metrics.inc(negotiatedAlgorithms(socket)));
 * ```
 */
export function negotiatedAlgorithms(socket: TLSSocket): TlsAlgorithms {
  const cipher = socket.getCipher()?.standardName ?? '';
  return { group: negotiatedGroup(socket) ?? '', cipher };
}

/** The key-exchange group of a finished handshake, or undefined when it cannot be told. */
function negotiatedGroup(socket: TLSSocket): string | undefined {
  const info = socket.getEphemeralKeyInfo() as { name?: string } | null;
  if (info !== null && typeof info.name === 'string' && info.name !== '') {
    return CURVE_ALIASES.get(info.name) ?? info.name;
  }
  const session = socket.getSession();
  if (session === undefined) return undefined;
  const id = sessionKexGroup(session);
  if (id === undefined) return undefined;
  return GROUP_NAMES.get(id) ?? `0x${id.toString(16).padStart(4, '0')}`;
}
