/**
 * Issuance itself, shared by every way the CA hands out a workload certificate (Certify, and the
 * PodCertificateRequest signer): the validity window, the serial, the leaf profile (DNS identity
 * then SPIFFE URI, through {@link LeafSigner}), and the audit record (log line and hook). The
 * callers decide who may have which identity; this file decides what a leaf for it looks like.
 */
import { createHash } from 'node:crypto';
import type { IdentityNaming, Logger, Random } from '../../core/index.js';
import { LogKey, MeshidError, identityName, spiffeId } from '../../core/index.js';
import type { LeafSigner } from './leaf.js';
import { randomSerial } from './leaf.js';
import type { IssuerCredentials } from './material.js';

/** The pod a certificate was issued for (PodCertificateRequests), for the audit record. */
interface IssuedPod {
  readonly name: string;
  readonly uid: string;
  readonly node: string;
  /** The PodCertificateRequest's name. */
  readonly request: string;
}

/** What was issued, for logs and events. Never holds a key or a token. */
export interface IssuedLeaf {
  readonly identity: string;
  /** The workload's ServiceAccount. */
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly serialHex: string;
  readonly sha256: string;
  readonly notAfter: number;
  /** Set when the leaf answers a PodCertificateRequest: the pod it is bound to. */
  readonly pod?: IssuedPod;
}

/** One leaf to sign. */
interface LeafOrder {
  /** The subjectPublicKeyInfo (DER) of the workload's key. */
  readonly spki: Uint8Array;
  readonly workload: { readonly namespace: string; readonly serviceAccount: string };
  readonly naming: IdentityNaming;
  /** When the decision was made (ms); whole seconds are used. */
  readonly issuedAt: number;
  readonly lifetimeMs: number;
  /** notBefore is back-dated by this much (never before the issuer chain's notBefore). */
  readonly clockSkewMs: number;
  /** The longest notAfter − notBefore allowed (PodCertificateRequest maxExpirationSeconds). */
  readonly maxLifetimeMs?: number;
  readonly random: Random;
}

/** A signed leaf and its validity. */
export interface SignedLeaf {
  readonly identity: string;
  readonly leaf: Buffer;
  readonly serial: Buffer;
  readonly notBefore: number;
  readonly notAfter: number;
}

/**
 * Signs a leaf under `issuer`: notBefore back-dated by the skew (not before the chain), notAfter
 * the lifetime later from the decision (capped by `maxLifetimeMs` from notBefore) and clamped to
 * the issuer chain's expiry. Throws ERR_SIGNING_FAILED when the signer fails for an unexpected
 * reason (logged), or the signer's own MeshidError.
 */
export function signLeaf(
  issuer: IssuerCredentials,
  signer: LeafSigner,
  o: LeafOrder,
  log: Logger,
): SignedLeaf {
  const identity = identityName(o.workload, o.naming);
  // Whole seconds: X.509 times have no fractions, and valid_until must equal NotAfter.
  const issuedAt = Math.floor(o.issuedAt / 1000) * 1000;
  const notBefore = Math.max(issuedAt - o.clockSkewMs, issuer.chainNotBefore);
  const notAfter = Math.min(
    issuedAt + o.lifetimeMs,
    o.maxLifetimeMs === undefined ? Infinity : notBefore + o.maxLifetimeMs,
    Math.floor(issuer.chainNotAfter / 1000) * 1000,
  );
  const serial = randomSerial(o.random);
  try {
    const leaf = signer.sign({
      spki: o.spki,
      dnsName: identity,
      uri: spiffeId(o.workload, o.naming),
      serial,
      notBefore,
      notAfter,
    });
    return { identity, leaf, serial, notBefore, notAfter };
  } catch (err) {
    if (err instanceof MeshidError && err.code !== 'ERR_INTERNAL') throw err;
    log.error({ err }, 'signing failed');
    throw new MeshidError('ERR_SIGNING_FAILED', 'the leaf certificate could not be signed', {
      cause: err,
    });
  }
}

/**
 * The audit record of an issued leaf: one log line (serial, SHA-256, identity, expiry, and the
 * pod for a PodCertificateRequest) and the record handed to `onIssued`. Skipped entirely (no
 * hashing, no formatting) when nobody reads it.
 */
export function auditIssued(
  signed: SignedLeaf,
  workload: { readonly namespace: string; readonly serviceAccount: string },
  log: Logger,
  onIssued: ((issued: IssuedLeaf) => void) | undefined,
  pod?: IssuedPod,
): void {
  if (onIssued === undefined && !log.isLevelEnabled('info')) return;
  const issued: IssuedLeaf = {
    identity: signed.identity,
    namespace: workload.namespace,
    serviceAccount: workload.serviceAccount,
    serialHex: signed.serial.toString('hex'),
    sha256: createHash('sha256').update(signed.leaf).digest('hex'),
    notAfter: signed.notAfter,
    ...(pod === undefined ? {} : { pod }),
  };
  log.info(
    {
      [LogKey.event]: 'issued',
      [LogKey.identity]: issued.identity,
      [LogKey.serial]: issued.serialHex,
      [LogKey.sha256]: issued.sha256,
      [LogKey.notAfter]: new Date(signed.notAfter).toISOString(),
      ...(pod === undefined
        ? {}
        : {
            pod: `${workload.namespace}/${pod.name}`,
            podUid: pod.uid,
            node: pod.node,
            request: pod.request,
          }),
    },
    pod === undefined ? 'issued leaf certificate' : 'issued leaf certificate for a pod',
  );
  onIssued?.(issued);
}
