/**
 * The proxy's identity client: holds the workload's private key in memory, gets and renews its
 * certificate from the CA.
 *
 * - A fresh ECDSA P-256 key for every request (Linkerd keeps one key for the pod's life); it is
 *   never written and never logged.
 * - The projected token is read from its file on every request: the kubelet rotates it.
 * - Renewal at about 70 % of the certificate's life, with jitter so that a fleet started
 *   together does not renew together.
 * - On failure, retries with capped exponential backoff (with jitter: over the whole window
 *   while it has no certificate, so that a fleet restarted together spreads out) and keeps
 *   using the current certificate until it expires; only then is there no certificate (not
 *   ready). When the CA refused with a retry hint (RESOURCE_EXHAUSTED, `retry-after-ms`),
 *   the next try is after the hint plus up to half of it again, at random, so a refused fleet
 *   does not return all at once.
 * - A response is used only after `verifyCertifyResponse` accepts it.
 * - The renewal timer runs on the monotonic clock, which a wall-clock jump does not move; the
 *   owner calls `checkClock()` every second or so, and a renewal that is due by the wall clock
 *   (the clock stepped forward, e.g. an NTP correction or a resumed VM) starts then. A held
 *   certificate found expired is logged once (the proxy is not ready until it has a new one).
 */
import { EventEmitter } from 'node:events';
import { generateKeyPairSync } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { readFile as fsReadFile } from 'node:fs/promises';
import type {
  CertifyRequest,
  CertifyResponse,
  Clock,
  Logger,
  Random,
  Timers,
} from '../../core/index.js';
import { DEFAULTS, createCsr, toPem } from '../../core/index.js';
// Timers moved to core (one home, shared with the watched files); the proxy's face keeps them.
export { systemTimers } from '../../core/index.js';
export type { Timers } from '../../core/index.js';
import { certificatesOf, verifyCertifyResponse } from './verify.js';

/**
 * A new ECDSA P-256 key and a CSR naming `identity` (CN and the one DNS SAN).
 *
 * @example
 * ```ts
 * const { privateKey, publicKey, csr } = freshRequestKey(identity);
 * ```
 */
export function freshRequestKey(identity: string): RequestKey {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return {
    privateKey,
    publicKey,
    csr: createCsr({ privateKey, commonName: identity, dnsNames: [identity] }),
  };
}

/** A workload certificate and the key it certifies, as the TLS listeners use them. */
export interface WorkloadCertificate {
  readonly identity: string;
  /** PKCS#8 PEM of the private key: in this process's memory only. */
  readonly keyPem: string;
  /** Leaf first, then the chain up to (not including) the anchor. */
  readonly certChainPem: string;
  readonly notBefore: number;
  readonly notAfter: number;
  readonly serialHex: string;
}

/** The key pair of one Certify request and the CSR for it. */
export interface RequestKey {
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  /** DER PKCS#10 for the local identity, signed with `privateKey`. */
  readonly csr: Buffer;
}

export interface IdentityClientOptions {
  readonly localIdentity: string;
  readonly tokenFile: string;
  /** One Certify call to the CA (a CertifyClient's `certify`, bound). */
  readonly certify: (req: CertifyRequest) => Promise<CertifyResponse>;
  /** The trust anchors in force now (the bundle is hot-reloaded by its owner). */
  readonly anchorsPem: () => string;
  readonly clock: Clock;
  readonly random: Random;
  readonly timers: Timers;
  readonly logger: Logger;
  /** Share of a certificate's life after which it is renewed (default 0.7). */
  readonly renewFraction?: number;
  /** Renewal jitter as a share of the renewal delay, ± (default 0.1). */
  readonly jitterFraction?: number;
  /** First retry delay after a failure (default 1 s), doubled per failure up to `maxRetryMs`. */
  readonly minRetryMs?: number;
  /** Longest retry delay (default 60 s). */
  readonly maxRetryMs?: number;
  readonly readFile?: (path: string) => Promise<Buffer>;
  /**
   * Makes the key and CSR of each request. Default: a fresh P-256 key per request. Load tests
   * pass keys made beforehand, so that key generation is not what they measure.
   */
  readonly requestKey?: (identity: string) => RequestKey;
}

interface IdentityClientEvents {
  certificate: [WorkloadCertificate];
  refreshFailed: [Error];
}

/**
 * Gets and keeps a certificate for the local identity.
 *
 * @example
 * ```ts
 * const id = new IdentityClient({ localIdentity, tokenFile, certify, anchorsPem, clock, random, timers, logger });
 * id.on('certificate', (c) => server.setSecureContext({ key: c.keyPem, cert: c.certChainPem }));
 * id.start();
 * ```
 */
export class IdentityClient extends EventEmitter<IdentityClientEvents> {
  readonly #o: Required<Omit<IdentityClientOptions, 'readFile' | 'requestKey'>> & {
    readFile: (path: string) => Promise<Buffer>;
    requestKey: (identity: string) => RequestKey;
  };
  #current: WorkloadCertificate | undefined;
  #timer: unknown;
  #failures = 0;
  #closed = false;
  #inFlight: Promise<WorkloadCertificate> | undefined;
  /** Wall-clock time the pending timer stands for (renewal or retry); Infinity when none. */
  #dueAt = Number.POSITIVE_INFINITY;
  /** The expiry of the held certificate has been logged. */
  #expiryLogged = false;
  /** Counts for metrics. */
  readonly stats = { refreshes: 0, failures: 0, lastRefreshAt: 0 };

  constructor(opts: IdentityClientOptions) {
    super();
    this.#o = {
      renewFraction: 0.7,
      jitterFraction: 0.1,
      minRetryMs: 1000,
      maxRetryMs: DEFAULTS.proxyIdentityRetryMaxMs,
      readFile: (p) => fsReadFile(p),
      requestKey: freshRequestKey,
      ...opts,
    };
  }

  /** Starts getting a certificate now, and keeps it renewed. */
  start(): void {
    this.#schedule(0);
  }

  /** The certificate to use now, or undefined when there is none valid (the proxy is not ready). */
  current(): WorkloadCertificate | undefined {
    const c = this.#current;
    return c !== undefined && this.#o.clock.now() < c.notAfter ? c : undefined;
  }

  /**
   * One attempt to get a new certificate; concurrent calls share it. Rejects with the reason on
   * failure (the current certificate stays in use).
   */
  refresh(): Promise<WorkloadCertificate> {
    this.#inFlight ??= this.#attempt().finally(() => (this.#inFlight = undefined));
    return this.#inFlight;
  }

  /**
   * Catches up with the wall clock: starts a renewal (or retry) that is due by `clock` although
   * its timer, on the monotonic clock, has not fired (the clock jumped forward), and logs once
   * when the held certificate has expired. Cheap; call it every second or so.
   */
  checkClock(): void {
    if (this.#closed || this.#inFlight !== undefined) return;
    const now = this.#o.clock.now();
    const held = this.#current;
    if (held !== undefined && now >= held.notAfter && !this.#expiryLogged) {
      this.#expiryLogged = true;
      this.#o.logger.warn(
        { serial: held.serialHex, notAfter: new Date(held.notAfter).toISOString() },
        'certificate expired; not ready and no new connections until a new one is obtained',
      );
    }
    if (now >= this.#dueAt) {
      this.#o.logger.info(
        { dueAt: new Date(this.#dueAt).toISOString() },
        'certificate refresh is due by the clock (it moved forward); refreshing now',
      );
      this.#schedule(0);
    }
  }

  close(): void {
    this.#closed = true;
    this.#o.timers.clear(this.#timer);
  }

  async #attempt(): Promise<WorkloadCertificate> {
    const o = this.#o;
    const { privateKey, publicKey, csr } = o.requestKey(o.localIdentity);
    let token: Buffer;
    try {
      token = await o.readFile(o.tokenFile);
    } catch (err) {
      throw new Error(`token file ${o.tokenFile} cannot be read: ${(err as Error).message}`, {
        cause: err,
      });
    }
    const res = await o.certify({
      identity: o.localIdentity,
      token,
      certificateSigningRequest: csr,
    });
    const leaf = verifyCertifyResponse(res, {
      identity: o.localIdentity,
      publicKey,
      anchors: certificatesOf(o.anchorsPem()),
      now: o.clock.now(),
    });
    return this.#install(privateKey, res, leaf);
  }

  #install(
    privateKey: KeyObject,
    res: CertifyResponse,
    leaf: { notBefore: number; notAfter: number; serialHex: string },
  ): WorkloadCertificate {
    const cert: WorkloadCertificate = {
      identity: this.#o.localIdentity,
      keyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
      certChainPem: [res.leafCertificate, ...res.intermediateCertificates]
        .map((der) => toPem(der, 'CERTIFICATE'))
        .join(''),
      ...leaf,
    };
    this.#current = cert;
    this.#expiryLogged = false;
    return cert;
  }

  #schedule(delayMs: number): void {
    if (this.#closed) return;
    this.#o.timers.clear(this.#timer);
    this.#dueAt = this.#o.clock.now() + delayMs;
    this.#timer = this.#o.timers.set(() => void this.#tick(), delayMs);
  }

  async #tick(): Promise<void> {
    if (this.#closed) return;
    this.#dueAt = Number.POSITIVE_INFINITY;
    try {
      const cert = await this.refresh();
      this.#failures = 0;
      this.stats.refreshes++;
      this.stats.lastRefreshAt = this.#o.clock.now();
      this.#o.logger.info(
        {
          identity: cert.identity,
          serial: cert.serialHex,
          notAfter: new Date(cert.notAfter).toISOString(),
        },
        'certificate obtained',
      );
      this.emit('certificate', cert);
      this.#schedule(this.renewalDelay(cert));
    } catch (err) {
      this.#failures++;
      this.stats.failures++;
      const hint = (err as { retryAfterMs?: unknown }).retryAfterMs;
      const delay = this.retryDelay(this.#failures, typeof hint === 'number' ? hint : undefined);
      this.#o.logger.warn(
        {
          err: (err as Error).message,
          retryInMs: delay,
          hasCertificate: this.current() !== undefined,
        },
        'certificate refresh failed; keeping the current certificate',
      );
      this.emit('refreshFailed', err as Error);
      this.#schedule(delay);
    }
  }

  /** Delay until renewal: `renewFraction` of the remaining life, ± jitter. */
  renewalDelay(cert: WorkloadCertificate): number {
    const remaining = Math.max(0, cert.notAfter - this.#o.clock.now());
    const base = remaining * this.#o.renewFraction;
    const jitter = base * this.#o.jitterFraction * (2 * this.#unit() - 1);
    return Math.max(0, Math.round(base + jitter));
  }

  /**
   * Delay before retry number `failures` (1-based). The window doubles from `minRetryMs` up to
   * `maxRetryMs`:
   * - without a valid certificate (a first certificate, or the held one expired) the delay is
   *   drawn from the whole window ("full jitter", from a tenth of `minRetryMs`): a fleet that
   *   restarted together and failed together spreads its retries over all of it, instead of
   *   coming back as one wave (docs/benchmarks.md, "The restart storm");
   * - holding a valid certificate, from the window's upper half (a renewal has time; no
   *   reason to come back early);
   * - with the CA's hint, the hint plus up to half of it again instead (still capped).
   * Never past the current certificate's expiry when one is held.
   */
  retryDelay(failures: number, hintMs?: number): number {
    const o = this.#o;
    const cap = Math.min(o.maxRetryMs, o.minRetryMs * 2 ** Math.min(failures - 1, 30));
    const c = this.current();
    let delay: number;
    if (hintMs !== undefined) {
      delay = Math.min(o.maxRetryMs, Math.round(hintMs + (hintMs / 2) * this.#unit()));
    } else if (c === undefined) {
      const floor = Math.min(cap, o.minRetryMs / 10);
      delay = Math.round(floor + (cap - floor) * this.#unit());
    } else {
      delay = Math.round(cap / 2 + (cap / 2) * this.#unit());
    }
    return c === undefined ? delay : Math.min(delay, Math.max(0, c.notAfter - o.clock.now()));
  }

  /** A uniform number in [0, 1) from the injected randomness. */
  #unit(): number {
    return this.#o.random.bytes(4).readUInt32BE(0) / 2 ** 32;
  }
}
