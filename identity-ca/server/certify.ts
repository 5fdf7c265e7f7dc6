/**
 * The Certify decision: who asks, for which identity, with which key, and what they get.
 *
 * Checks run in the contract's order (docs/errors.md): issuer loaded → fields present and
 * bounded → identity well-formed → CSR is DER PKCS#10 → issuer chain valid now → CSR policy
 * (including proof of possession) → token authenticates → token identity equals the requested
 * one → sign. Nothing is issued on any doubt; every refusal is a MeshidError whose code fixes the
 * gRPC status.
 */
import type {
  CertifyRequest,
  CertifyResponse,
  Clock,
  IdentityNaming,
  Logger,
  Random,
} from '../../core/index.js';
import {
  DEFAULTS,
  MeshidError,
  identityName,
  parseCsr,
  parseIdentityName,
} from '../../core/index.js';
import { checkCsrPolicy, checkFipsCsr } from '../issuer/csr-policy.js';
import { auditIssued, signLeaf } from '../issuer/issue.js';
import type { IssuedLeaf } from '../issuer/issue.js';
import { LeafSigner } from '../issuer/leaf.js';
import type { IssuerCredentials } from '../issuer/material.js';
import type { TokenValidator } from '../token/validator.js';
import { checkWanted } from './call-state.js';
import type { CallState, DropObserver } from './call-state.js';

/** What the handler needs; all of it passed in. */
export interface CertifyDeps {
  /** The issuer in use now (the store's last good), or undefined before one is loaded. */
  readonly currentIssuer: () => IssuerCredentials | undefined;
  readonly tokens: TokenValidator;
  readonly naming: IdentityNaming;
  readonly certLifetimeMs: number;
  readonly clockSkewMs: number;
  readonly clock: Clock;
  readonly random: Random;
  readonly logger: Logger;
  /** Called after each issuance (for Events in the Kubernetes issue). */
  readonly onIssued?: (issued: IssuedLeaf) => void;
  /** Called when a request meets an issuer whose chain is not valid now (for an Event). */
  readonly onIssuerNotValid?: (message: string) => void;
  /** FIPS mode: CSRs outside the FIPS policy are refused with ERR_FIPS_CSR_REFUSED. */
  readonly fips?: boolean;
  /** Told about every call dropped because its caller had gone (for metrics). */
  readonly onDropped?: DropObserver;
}

export type { IssuedLeaf } from '../issuer/issue.js';

/**
 * A signer per issuer, built once: the issuer's constant parts are encoded when it is loaded, not
 * per request. Keyed weakly so a replaced issuer's signer goes with it.
 */
export class SignerCache {
  readonly #signers = new WeakMap<IssuerCredentials, LeafSigner>();

  get(issuer: IssuerCredentials): LeafSigner {
    let signer = this.#signers.get(issuer);
    if (signer === undefined) {
      signer = new LeafSigner(issuer.certificateDer, issuer.privateKey);
      this.#signers.set(issuer, signer);
    }
    return signer;
  }
}

/**
 * Makes the Certify handler.
 */
export function createCertifyHandler(
  deps: CertifyDeps,
  signers: SignerCache = new SignerCache(),
): (req: CertifyRequest, call?: CallState) => Promise<CertifyResponse> {
  const log = deps.logger;
  const dropped = deps.onDropped;
  return async (req, call) => {
    // Before each expensive step: nothing is verified, checked or signed for a caller that
    // has gone (its deadline passed, its stream closed).
    checkWanted(call, 'start', dropped);
    // The issuer is taken once: a reload during this call does not change what it signs with.
    const issuer = deps.currentIssuer();
    if (issuer === undefined) {
      throw new MeshidError('ERR_ISSUER_NOT_LOADED', 'no issuer is loaded; try again later');
    }
    checkFields(req);
    const workload = parseIdentityName(req.identity, deps.naming);
    const csr = parseCsr(req.certificateSigningRequest);

    const now = deps.clock.now();
    if (now < issuer.chainNotBefore || now >= issuer.chainNotAfter) {
      const message = `issuer chain is not valid now: valid from ${iso(issuer.chainNotBefore)} to ${iso(issuer.chainNotAfter)}`;
      deps.onIssuerNotValid?.(message);
      throw new MeshidError('ERR_ISSUER_NOT_VALID_NOW', message);
    }
    if (deps.fips === true) checkFipsCsr(csr);
    await checkCsrPolicy(csr, req.identity);

    checkWanted(call, 'token', dropped);
    const tokenIdentity = await deps.tokens.validate(req.token);
    const tokenName = identityName(tokenIdentity, deps.naming);
    if (tokenName !== req.identity) {
      throw new MeshidError(
        'ERR_IDENTITY_MISMATCH',
        `token is for service account ${tokenIdentity.namespace}/${tokenIdentity.serviceAccount} (${tokenName}), not for the requested identity`,
      );
    }

    checkWanted(call, 'sign', dropped);
    const signed = signLeaf(
      issuer,
      signers.get(issuer),
      {
        spki: csr.publicKey.spki,
        workload,
        naming: deps.naming,
        issuedAt: deps.clock.now(),
        lifetimeMs: deps.certLifetimeMs,
        clockSkewMs: deps.clockSkewMs,
        random: deps.random,
      },
      log,
    );
    auditIssued(signed, workload, log, deps.onIssued);
    return {
      leafCertificate: signed.leaf,
      intermediateCertificates: issuer.intermediatesDer,
      validUntil: signed.notAfter,
    };
  };
}

function checkFields(req: CertifyRequest): void {
  if (req.identity.length === 0) throw new MeshidError('ERR_REQUEST_INVALID', 'identity is empty');
  if (req.token.length === 0) throw new MeshidError('ERR_REQUEST_INVALID', 'token is empty');
  if (req.certificateSigningRequest.length === 0) {
    throw new MeshidError('ERR_REQUEST_INVALID', 'certificate_signing_request is empty');
  }
  if (req.identity.length > DEFAULTS.maxIdentityLength) {
    throw new MeshidError(
      'ERR_REQUEST_INVALID',
      `identity is ${req.identity.length} characters, over the limit of ${DEFAULTS.maxIdentityLength}`,
    );
  }
  if (req.token.length > DEFAULTS.maxTokenBytes) {
    throw new MeshidError(
      'ERR_REQUEST_INVALID',
      `token is ${req.token.length} bytes, over the limit of ${DEFAULTS.maxTokenBytes}`,
    );
  }
  if (req.certificateSigningRequest.length > DEFAULTS.maxCsrBytes) {
    throw new MeshidError(
      'ERR_REQUEST_INVALID',
      `certificate_signing_request is ${req.certificateSigningRequest.length} bytes, over the limit of ${DEFAULTS.maxCsrBytes}`,
    );
  }
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
