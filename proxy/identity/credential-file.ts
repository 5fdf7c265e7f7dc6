/**
 * The proxy's identity from a pod certificate (KEP-4317): the kubelet generated the key, asked
 * meshid's signer through a PodCertificateRequest, and writes the key and the chain into one
 * credential bundle file of a `podCertificate` projected volume (docs/pod-certificates.md). No
 * token and no Certify call: the proxy reads the file, and reads it again when the kubelet
 * rewrites it (core's watched file: the `..data` swap, a periodic re-read as a safety net).
 *
 * The file is checked as a Certify answer is (proxy/identity/verify.ts): the key and the leaf
 * belong together, the leaf's first name is this workload's identity, it is valid now, and its
 * chain reaches the current trust anchors. A file that fails any of these is refused and the last
 * good one stays in use; a first file that fails keeps the proxy not ready, saying why, until the
 * kubelet writes a good one. One read gives a key and a chain that belong together: the kubelet
 * writes both at once.
 */
import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { KeyObject } from 'node:crypto';
import type { Clock, Logger, Timers, WatchedFile } from '../../core/index.js';
import { MeshidError, isMeshidError, parsePem, toPem, watchFile } from '../../core/index.js';
import type { WorkloadCertificate } from './client.js';
import { certificatesOf, verifyCertifyResponse } from './verify.js';

/** What the proxy's other parts ask of an identity, whichever source holds it. */
export interface IdentitySource {
  /** The certificate to present, or undefined when none is valid now. */
  current(): WorkloadCertificate | undefined;
  readonly stats: { refreshes: number; failures: number; lastRefreshAt: number };
  start(): void;
  checkClock(): void;
  close(): void;
}

/** Options of {@link CredentialFileIdentity.open}. */
export interface CredentialFileOptions {
  readonly file: string;
  readonly localIdentity: string;
  /** The trust anchors in force now (PEM). */
  readonly anchorsPem: () => string;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly timers?: Timers;
}

interface CredentialEvents {
  certificate: [WorkloadCertificate];
  refreshFailed: [Error];
}

const KEY_TYPES = ['PRIVATE KEY', 'EC PRIVATE KEY'];

/**
 * Reads a credential bundle: one private key block, then the leaf and its chain. Throws
 * ERR_POD_CERTIFICATE_INVALID naming the first problem.
 *
 * @example
 * ```ts
 * const cert = parseCredentialBundle(bytes, { localIdentity, anchorsPem, now });
 * ```
 */
export function parseCredentialBundle(
  bytes: Buffer,
  expect: { localIdentity: string; anchorsPem: string; now: number },
): WorkloadCertificate {
  const text = bytes.toString('utf8');
  const fail = (why: string): never => {
    throw new MeshidError('ERR_POD_CERTIFICATE_INVALID', `pod certificate refused: ${why}`);
  };
  let blocks;
  try {
    blocks = parsePem(text);
  } catch (err) {
    return fail(`it is not PEM: ${(err as Error).message}`);
  }
  const keyBlocks = blocks.filter((b) => KEY_TYPES.includes(b.label));
  if (keyBlocks.length !== 1 || blocks[0] !== keyBlocks[0])
    fail(
      `the credential bundle must hold one private key, first, then the chain (found ${keyBlocks.length} keys)`,
    );
  const others = blocks.filter((b) => b.label !== 'CERTIFICATE' && !KEY_TYPES.includes(b.label));
  if (others.length > 0) fail(`unexpected PEM block "${others[0]!.label}"`);
  let chain: X509Certificate[];
  try {
    chain = blocks.filter((b) => b.label === 'CERTIFICATE').map((b) => new X509Certificate(b.der));
  } catch (err) {
    return fail(`its certificates do not parse: ${(err as Error).message}`);
  }
  if (chain.length === 0) fail('the credential bundle holds no certificate');
  let privateKey: KeyObject;
  try {
    const block = keyBlocks[0]!;
    privateKey = createPrivateKey({
      key: Buffer.from(block.der),
      format: 'der',
      type: block.label === 'EC PRIVATE KEY' ? 'sec1' : 'pkcs8',
    });
  } catch (err) {
    return fail(`its private key does not parse: ${(err as Error).message}`);
  }
  const leaf = chain[0]!;
  try {
    const verified = verifyCertifyResponse(
      {
        leafCertificate: leaf.raw,
        intermediateCertificates: chain.slice(1).map((c) => c.raw),
        validUntil: Date.parse(leaf.validTo),
      },
      {
        identity: expect.localIdentity,
        publicKey: createPublicKey(privateKey),
        anchors: certificatesOf(expect.anchorsPem),
        now: expect.now,
      },
    );
    return {
      identity: expect.localIdentity,
      keyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
      certChainPem: chain.map((c) => toPem(c.raw, 'CERTIFICATE')).join(''),
      ...verified,
    };
  } catch (err) {
    return fail((err as Error).message);
  }
}

/**
 * The identity held in a pod certificate's credential bundle file.
 *
 * @example
 * ```ts
 * const identity = await CredentialFileIdentity.open({ file, localIdentity, anchorsPem, clock, logger });
 * identity.current()?.notAfter;
 * ```
 */
export class CredentialFileIdentity
  extends EventEmitter<CredentialEvents>
  implements IdentitySource
{
  readonly stats = { refreshes: 0, failures: 0, lastRefreshAt: 0 };
  readonly #file: WatchedFile<WorkloadCertificate | MeshidError>;
  readonly #clock: Clock;
  readonly #log: Logger;
  #expiredLogged = false;

  private constructor(
    file: WatchedFile<WorkloadCertificate | MeshidError>,
    clock: Clock,
    log: Logger,
  ) {
    super();
    this.#file = file;
    this.#clock = clock;
    this.#log = log;
    const first = file.current();
    if (first instanceof MeshidError) this.#refused(first);
    else this.#loaded(first);
    file.on('change', (next) => {
      if (next instanceof MeshidError) this.#refused(next);
      else this.#loaded(next);
    });
    file.on('rejected', (err) => this.#refused(err));
  }

  /**
   * Reads the file and watches it. A missing or refused first file is not fatal (the kubelet
   * writes it before the containers start, and rewrites it): the proxy is not ready until a good
   * one is read.
   */
  static async open(o: CredentialFileOptions): Promise<CredentialFileIdentity> {
    const log = o.logger;
    let opened = false;
    const file = await watchFile<WorkloadCertificate | MeshidError>(
      o.file,
      (bytes, now) => {
        try {
          return parseCredentialBundle(bytes, {
            localIdentity: o.localIdentity,
            anchorsPem: o.anchorsPem(),
            now,
          });
        } catch (err) {
          // The first read keeps watching whatever it found; later ones keep the last good.
          if (isMeshidError(err) && !opened) return err;
          throw err;
        }
      },
      {
        clock: o.clock,
        logger: log,
        code: 'ERR_POD_CERTIFICATE_INVALID',
        what: 'pod certificate credential bundle',
        ...(o.timers === undefined ? {} : { timers: o.timers }),
      },
    );
    opened = true;
    return new CredentialFileIdentity(file, o.clock, log);
  }

  #loaded(cert: WorkloadCertificate): void {
    this.stats.refreshes++;
    this.stats.lastRefreshAt = this.#clock.now();
    this.#expiredLogged = false;
    this.#log.info(
      { notAfter: new Date(cert.notAfter).toISOString(), serial: cert.serialHex },
      'pod certificate loaded from the credential bundle',
    );
    this.emit('certificate', cert);
  }

  #refused(err: MeshidError): void {
    this.stats.failures++;
    this.#log.warn(
      { err: err.message },
      'pod certificate credential bundle refused; keeping the last good one (if any)',
    );
    this.emit('refreshFailed', err);
  }

  current(): WorkloadCertificate | undefined {
    const c = this.#good();
    if (c === undefined || this.#clock.now() >= c.notAfter) return undefined;
    return c;
  }

  #good(): WorkloadCertificate | undefined {
    const v = this.#file.current();
    return v instanceof MeshidError ? undefined : v;
  }

  start(): void {
    // Nothing to start: the kubelet renews, and the watch follows the file.
  }

  /** Logs once when the certificate held has expired (the kubelet has not renewed it). */
  checkClock(): void {
    const c = this.#good();
    if (c === undefined || this.#clock.now() < c.notAfter || this.#expiredLogged) return;
    this.#expiredLogged = true;
    this.#log.error(
      { notAfter: new Date(c.notAfter).toISOString() },
      'the pod certificate has expired and the kubelet has not written a new one: not ready (check the PodCertificateRequests of this pod and meshid check)',
    );
  }

  close(): void {
    void this.#file.close();
  }
}
