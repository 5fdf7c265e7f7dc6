/**
 * Service-account tokens as a cluster issues them: RS256 JWTs with a `kid`, the projected-token
 * claims (`iss`, `sub`, `aud`, `exp`, `iat`, `nbf`, `jti`, `kubernetes.io`), several signing keys
 * for rotation drills, and verification against an injectable clock.
 */
import { createHash, generateKeyPair, randomUUID } from 'node:crypto';
import { promisify } from 'node:util';
import type { KeyObject } from 'node:crypto';
import { exportJWK, jwtVerify, SignJWT, decodeProtectedHeader } from 'jose';
import type { JWK } from 'jose';

/** The `kubernetes.io` private claim. */
export interface KubernetesClaim {
  namespace: string;
  serviceaccount: { name: string; uid: string };
  pod?: { name: string; uid: string };
  secret?: { name: string; uid: string };
}

/** The claims of a service-account token. */
export interface ServiceAccountClaims {
  iss: string;
  sub: string;
  aud: string[];
  exp: number;
  iat: number;
  nbf: number;
  jti: string;
  'kubernetes.io': KubernetesClaim;
}

interface SigningKey {
  readonly kid: string;
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  readonly jwk: JWK;
}

/** What to put in a token. */
export interface MintRequest {
  readonly namespace: string;
  readonly serviceAccount: { readonly name: string; readonly uid: string };
  readonly pod?: { readonly name: string; readonly uid: string } | undefined;
  readonly audiences: readonly string[];
  readonly expirationSeconds: number;
}

/** A verified token: its claims and the audiences it is valid for among those asked. */
export interface VerifiedToken {
  readonly claims: ServiceAccountClaims;
  readonly audiences: string[];
}

export class TokenAuthority {
  readonly #keys: SigningKey[] = [];
  #active = '';

  private constructor(
    readonly issuer: string,
    private readonly now: () => number,
  ) {}

  /** An authority with one signing key. */
  static async create(issuer: string, now: () => number): Promise<TokenAuthority> {
    const t = new TokenAuthority(issuer, now);
    t.#active = await t.addKey();
    return t;
  }

  /** Generates a new RSA key (kid = base64url SHA-256 of its SPKI, as the apiserver derives it). */
  async addKey(): Promise<string> {
    // Off the event loop: RSA generation takes hundreds of ms on a busy machine.
    const { privateKey, publicKey } = await promisify(generateKeyPair)('rsa', {
      modulusLength: 2048,
    });
    const der = publicKey.export({ type: 'spki', format: 'der' });
    const kid = createHash('sha256').update(der).digest('base64url');
    this.#keys.push({ kid, privateKey, publicKey, jwk: {} });
    return kid;
  }

  /** Makes `kid` the key new tokens are signed with. */
  useKey(kid: string): void {
    if (!this.#keys.some((k) => k.kid === kid)) throw new Error(`unknown signing key ${kid}`);
    this.#active = kid;
  }

  /** Stops serving and trusting a key (tokens it signed no longer authenticate). */
  removeKey(kid: string): void {
    if (kid === this.#active) throw new Error('cannot remove the active signing key');
    const i = this.#keys.findIndex((k) => k.kid === kid);
    if (i >= 0) this.#keys.splice(i, 1);
  }

  get activeKid(): string {
    return this.#active;
  }

  get kids(): string[] {
    return this.#keys.map((k) => k.kid);
  }

  /** The JWKS document served at /openid/v1/jwks. */
  async jwks(): Promise<{ keys: JWK[] }> {
    const keys: JWK[] = [];
    for (const k of this.#keys) {
      const jwk = await exportJWK(k.publicKey);
      keys.push({ use: 'sig', kty: jwk.kty!, kid: k.kid, alg: 'RS256', n: jwk.n!, e: jwk.e! });
    }
    return { keys };
  }

  /** Signs a token with the active key. Times come from the injectable clock. */
  async mint(r: MintRequest): Promise<{ token: string; claims: ServiceAccountClaims }> {
    const key = this.#keys.find((k) => k.kid === this.#active)!;
    const iat = Math.floor(this.now() / 1000);
    const k8s: KubernetesClaim = {
      namespace: r.namespace,
      serviceaccount: { name: r.serviceAccount.name, uid: r.serviceAccount.uid },
    };
    if (r.pod !== undefined) k8s.pod = { name: r.pod.name, uid: r.pod.uid };
    const claims: ServiceAccountClaims = {
      aud: [...r.audiences],
      exp: iat + r.expirationSeconds,
      iat,
      iss: this.issuer,
      jti: randomUUID(),
      'kubernetes.io': k8s,
      nbf: iat,
      sub: `system:serviceaccount:${r.namespace}:${r.serviceAccount.name}`,
    };
    const token = await new SignJWT({ ...claims })
      .setProtectedHeader({ alg: 'RS256', kid: key.kid })
      .sign(key.privateKey);
    return { token, claims };
  }

  /**
   * Verifies signature, issuer, time and audience. `audiences` are those the caller accepts
   * (a TokenReview's spec.audiences, or the API server's own). Throws an Error whose message is the
   * reason, worded as the apiserver's.
   */
  async verify(token: string, audiences: readonly string[]): Promise<VerifiedToken> {
    let kid: string | undefined;
    try {
      kid = decodeProtectedHeader(token).kid;
    } catch {
      throw new Error('invalid bearer token');
    }
    const candidates = this.#keys.filter((k) => kid === undefined || k.kid === kid);
    const nowSec = Math.floor(this.now() / 1000);
    for (const k of candidates) {
      let payload: Record<string, unknown>;
      try {
        // Time claims are checked below against the injectable clock.
        ({ payload } = await jwtVerify(token, k.publicKey, {
          algorithms: ['RS256'],
          currentDate: new Date(this.now()),
          clockTolerance: Number.MAX_SAFE_INTEGER,
        }));
      } catch {
        continue;
      }
      if (payload['iss'] !== this.issuer) throw new Error('invalid bearer token');
      const claims = payload as unknown as ServiceAccountClaims;
      if (typeof claims.exp === 'number' && nowSec >= claims.exp)
        throw new Error('service account token has expired');
      if (typeof claims.nbf === 'number' && nowSec < claims.nbf)
        throw new Error('service account token is not valid yet');
      const aud = Array.isArray(claims.aud) ? claims.aud : [String(claims.aud)];
      const matched = audiences.filter((a) => aud.includes(a));
      if (matched.length === 0)
        throw new Error(
          `token audiences ${JSON.stringify(aud)} is invalid for the target audiences ${JSON.stringify(audiences)}`,
        );
      return { claims: { ...claims, aud }, audiences: matched };
    }
    throw new Error('invalid bearer token');
  }
}
