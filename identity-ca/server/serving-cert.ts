/**
 * The CA's own TLS certificate: a leaf for the CA's identity name, issued by the current issuer
 * to a key made in this process (never written anywhere), renewed at 70% of its life and
 * whenever the issuer changes, so clients that verify the CA against the anchors keep working
 * across issuer rotations.
 */
import { generateKeyPairSync } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import type { Clock, IdentityNaming, Logger, Random } from '../../core/index.js';
import { parseIdentityName, spiffeId, toPem } from '../../core/index.js';
import { randomSerial } from '../issuer/leaf.js';
import type { IssuerCredentials } from '../issuer/material.js';
import type { SignerCache } from './certify.js';
import type { ServingCredentials } from './grpc-server.js';

/** A serving certificate with the facts needed to decide when to renew it. */
export interface ServingCertificate extends ServingCredentials {
  readonly notBefore: number;
  readonly notAfter: number;
  readonly renewAt: number;
  readonly issuerFingerprint: string;
  readonly serialHex: string;
}

export interface ServingCertOptions {
  readonly identityName: string;
  readonly naming: IdentityNaming;
  readonly lifetimeMs: number;
  readonly clockSkewMs: number;
  readonly clock: Clock;
  readonly random: Random;
  readonly signers: SignerCache;
}

/** The share of a certificate's life after which it is renewed. */
const RENEW_AT_FRACTION = 0.7;

/**
 * Issues a serving certificate for the CA's identity from `issuer`.
 */
export function issueServingCertificate(
  issuer: IssuerCredentials,
  opts: ServingCertOptions,
): ServingCertificate {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const now = Math.floor(opts.clock.now() / 1000) * 1000;
  const notBefore = Math.max(now - opts.clockSkewMs, issuer.chainNotBefore);
  const notAfter = Math.min(now + opts.lifetimeMs, Math.floor(issuer.chainNotAfter / 1000) * 1000);
  const serial = randomSerial(opts.random);
  const leaf = opts.signers.get(issuer).sign({
    spki: spkiOf(publicKey),
    dnsName: opts.identityName,
    uri: spiffeId(parseIdentityName(opts.identityName, opts.naming), opts.naming),
    serial,
    notBefore,
    notAfter,
  });
  const chain = [leaf, ...issuer.intermediatesDer].map((der) => toPem(der, 'CERTIFICATE')).join('');
  return {
    keyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    certChainPem: chain,
    notBefore,
    notAfter,
    renewAt: now + Math.floor((notAfter - now) * RENEW_AT_FRACTION),
    issuerFingerprint: issuer.fingerprint,
    serialHex: serial.toString('hex'),
  };
}

/** True when `cert` should be replaced: its issuer changed, or it reached its renewal time. */
export function servingCertNeedsRenewal(
  cert: ServingCertificate,
  issuer: IssuerCredentials,
  now: number,
): boolean {
  // Also when the clock stepped back before its NotBefore: clients would refuse it as not yet valid.
  return (
    cert.issuerFingerprint !== issuer.fingerprint || now >= cert.renewAt || now < cert.notBefore
  );
}

function spkiOf(key: KeyObject): Buffer {
  return key.export({ format: 'der', type: 'spki' });
}

/** Options of {@link ServingCertRenewal}. */
interface ServingCertRenewalOptions {
  /** The issuer in force. */
  readonly current: () => IssuerCredentials | undefined;
  readonly options: ServingCertOptions;
  readonly logger: Logger;
  /** Called with each renewed certificate (not the first). */
  readonly onRenewed: (cert: ServingCertificate) => void;
}

/**
 * Keeps the CA's serving certificate current: issued at start from the current issuer, renewed
 * when the issuer changes or at 70% of its life. The timer only wakes the check; the decision
 * reads the injected clock. It wakes every second (the check is a comparison), so a wall-clock
 * step forward past the certificate's expiry is noticed at once: the timer runs on the monotonic
 * clock, which the step does not move.
 */
export class ServingCertRenewal {
  readonly #o: ServingCertRenewalOptions;
  #cert: ServingCertificate;
  #timer: NodeJS.Timeout | undefined;

  /** Issues the first certificate (throws when there is no issuer). */
  constructor(o: ServingCertRenewalOptions) {
    this.#o = o;
    const issuer = o.current();
    if (issuer === undefined) throw new Error('no issuer to issue the serving certificate');
    this.#cert = issueServingCertificate(issuer, o.options);
  }

  get certificate(): ServingCertificate {
    return this.#cert;
  }

  /** Renews now when due; a failure is logged and the current certificate kept. */
  check(): void {
    const issuer = this.#o.current();
    const now = this.#o.options.clock.now();
    if (issuer === undefined || !servingCertNeedsRenewal(this.#cert, issuer, now)) return;
    try {
      this.#cert = issueServingCertificate(issuer, this.#o.options);
    } catch (err) {
      this.#o.logger.error({ err }, 'serving certificate renewal failed; keeping the current one');
      return;
    }
    this.#o.logger.info(
      { serial: this.#cert.serialHex, notAfter: new Date(this.#cert.notAfter).toISOString() },
      'serving certificate renewed',
    );
    this.#o.onRenewed(this.#cert);
  }

  start(): void {
    this.#timer ??= setInterval(() => this.check(), 1000);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}
