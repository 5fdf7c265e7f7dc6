/**
 * A cert-manager simulator: a **test double** of cert-manager's certificates controller, acting on
 * the Kubernetes API test server. It is not cert-manager, and nothing in production uses it. It
 * does what meshid depends on, the way cert-manager does it:
 *
 * - Issuers `selfSigned` and `ca` (namespaced `Issuer`, and `ClusterIssuer` with its CA Secret in
 *   `clusterResourceNamespace`, default `cert-manager`);
 * - for each `cert-manager.io/v1` Certificate, a Secret `spec.secretName` of type
 *   `kubernetes.io/tls` with `tls.crt` (the certificate, then the signing CA when that is not
 *   self-signed), `tls.key` (PKCS#8) and `ca.crt` (the signing CA; itself when self-signed), the
 *   `cert-manager.io/*` annotations and `spec.secretTemplate` labels;
 * - issues when the Secret is missing or invalid, when the Certificate's spec changed since the
 *   last issuance (re-issue on change), when the injected clock reaches `notAfter - renewBefore`
 *   (renewal; defaults `duration` 2160h, `renewBefore` a third of it), and when the `Issuing`
 *   condition is set (a manual renewal, as `cmctl renew`); a new key each time with
 *   `rotationPolicy: Always`, the same key with `Never`;
 * - Certificate status as cert-manager writes it: `Ready`, `notBefore`, `notAfter`,
 *   `renewalTime`, `revision`.
 *
 * - cainjector: a Mutating/ValidatingWebhookConfiguration annotated
 *   `cert-manager.io/inject-ca-from: <ns>/<certificate>` gets that Certificate's Secret's `ca.crt`
 *   as every webhook's `clientConfig.caBundle`.
 *
 * Gaps: ECDSA keys only (P-256 or P-384), only `commonName`, `dnsNames`, `isCA`, `duration`,
 * `renewBefore` and `privateKey` are honoured (`usages` are fixed: a CA gets cert sign and CRL
 * sign, any other certificate digital signature with server and client auth; no other SANs,
 * subject fields or key encodings), no CertificateRequest objects, no ACME/Vault/Venafi issuers.
 */
import { createHash, createPrivateKey, X509Certificate } from 'node:crypto';
import type { Clock } from '../../core/index.js';
import { parsePem, toPem } from '../../core/index.js';
import { createIntermediateCa, createRootCa } from '../../core/pki.js';
import type { KubeApiServer, KubeObject } from './kube-api-server/index.js';
import { parseDuration } from '../../core/duration.js';

const HOUR = 3_600_000;
const SPEC_HASH = 'sim.meshid.io/spec-hash';

interface CertificateSpec {
  secretName: string;
  commonName?: string;
  dnsNames?: string[];
  isCA?: boolean;
  duration?: string;
  renewBefore?: string;
  privateKey?: { algorithm?: string; size?: number; rotationPolicy?: string };
  secretTemplate?: { labels?: Record<string, string>; annotations?: Record<string, string> };
  issuerRef: { name: string; kind?: string; group?: string };
}

/** One issuance the simulator made. */
export interface Issuance {
  readonly namespace: string;
  readonly certificate: string;
  readonly reason: 'missing' | 'spec-changed' | 'renewal' | 'manual';
  readonly at: number;
  readonly serial: string;
}

/** Options of the simulator. */
export interface CertManagerSimOptions {
  readonly api: KubeApiServer;
  /** The clock certificates are dated by and renewals are due on. */
  readonly clock: Clock;
  /** How often {@link CertManagerSimulator.start} reconciles; default 50 ms. */
  readonly intervalMs?: number;
  /** Where ClusterIssuers find their CA Secret; default `cert-manager`. */
  readonly clusterResourceNamespace?: string;
}

/**
 * The simulator. Call {@link CertManagerSimulator.reconcile} for one pass, or `start()` to run
 * passes on an interval, as cert-manager's controller runs.
 *
 * @example
 * ```ts
 * const cm = new CertManagerSimulator({ api, clock });
 * cm.start();
 * // ... apply Issuers and Certificates; their Secrets appear
 * await cm.stop();
 * ```
 */
export class CertManagerSimulator {
  readonly issued: Issuance[] = [];
  readonly #o: CertManagerSimOptions;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<unknown> = Promise.resolve();

  constructor(options: CertManagerSimOptions) {
    this.#o = options;
  }

  start(): void {
    const tick = (): void => {
      this.#running = this.reconcile()
        .catch(() => undefined)
        .finally(() => {
          if (this.#timer !== undefined) this.#timer = setTimeout(tick, this.#o.intervalMs ?? 50);
        });
    };
    this.#timer = setTimeout(tick, 0);
  }

  async stop(): Promise<void> {
    const t = this.#timer;
    this.#timer = undefined;
    if (t !== undefined) clearTimeout(t);
    await this.#running;
  }

  /** One pass over every Certificate; resolves with the issuances it made. */
  async reconcile(): Promise<Issuance[]> {
    const made: Issuance[] = [];
    const certs = this.#o.api.list('cert-manager.io/v1', 'Certificate');
    for (const cert of certs) {
      const i = await this.#reconcileOne(cert);
      if (i !== undefined) made.push(i);
    }
    this.#injectCaBundles();
    return made;
  }

  /** cainjector: `cert-manager.io/inject-ca-from` -> the Certificate's Secret's ca.crt as caBundle. */
  #injectCaBundles(): void {
    const api = this.#o.api;
    for (const kind of ['MutatingWebhookConfiguration', 'ValidatingWebhookConfiguration']) {
      for (const cfg of api.list('admissionregistration.k8s.io/v1', kind)) {
        const from = cfg.metadata.annotations?.['cert-manager.io/inject-ca-from'];
        const [ns, name] = from?.split('/') ?? [];
        if (ns === undefined || name === undefined) continue;
        const cert = api.get({
          apiVersion: 'cert-manager.io/v1',
          kind: 'Certificate',
          namespace: ns,
          name,
        });
        const secretName = (cert?.['spec'] as CertificateSpec | undefined)?.secretName;
        if (secretName === undefined) continue;
        const data = api.get({
          apiVersion: 'v1',
          kind: 'Secret',
          namespace: ns,
          name: secretName,
        })?.['data'] as Record<string, string> | undefined;
        const caBundle = data?.['ca.crt'];
        if (caBundle === undefined) continue;
        const webhooks = (cfg['webhooks'] ?? []) as { clientConfig: { caBundle?: string } }[];
        if (webhooks.every((w) => w.clientConfig.caBundle === caBundle)) continue;
        api.update({
          ...cfg,
          webhooks: webhooks.map((w) => ({ ...w, clientConfig: { ...w.clientConfig, caBundle } })),
        } as KubeObject);
      }
    }
  }

  async #reconcileOne(cert: KubeObject): Promise<Issuance | undefined> {
    const api = this.#o.api;
    const ns = cert.metadata.namespace!;
    const name = cert.metadata.name!;
    const spec = cert['spec'] as CertificateSpec;
    const now = this.#o.clock.now();
    const secret = api.get({
      apiVersion: 'v1',
      kind: 'Secret',
      namespace: ns,
      name: spec.secretName,
    });
    const data = (secret?.['data'] ?? {}) as Record<string, string>;
    const crtPem =
      data['tls.crt'] === undefined ? '' : Buffer.from(data['tls.crt'], 'base64').toString();
    const status = (cert['status'] ?? {}) as {
      conditions?: { type: string; status: string }[];
      revision?: number;
    };
    const specHash = createHash('sha256').update(JSON.stringify(spec)).digest('hex').slice(0, 16);

    let reason: Issuance['reason'] | undefined;
    let notAfter = 0;
    try {
      notAfter = Date.parse(new X509Certificate(crtPem).validTo);
    } catch {
      reason = 'missing';
    }
    const duration = parseDuration(spec.duration ?? '2160h') ?? 2160 * HOUR;
    const renewBefore = parseDuration(spec.renewBefore ?? '') ?? Math.floor(duration / 3);
    if (reason === undefined) {
      if (secret?.metadata.annotations?.[SPEC_HASH] !== specHash) reason = 'spec-changed';
      else if ((status.conditions ?? []).some((c) => c.type === 'Issuing' && c.status === 'True'))
        reason = 'manual';
      else if (now >= notAfter - renewBefore) reason = 'renewal';
    }
    if (reason === undefined) return undefined;

    const signer = this.#signer(ns, spec.issuerRef);
    if (signer === 'pending') {
      this.#setStatus(cert, { ready: false, reason: 'IssuerNotReady' });
      return undefined;
    }
    const algorithm = spec.privateKey?.size === 384 ? 'ecdsa-p384' : 'ecdsa-p256';
    const keepKey = spec.privateKey?.rotationPolicy === 'Never' && data['tls.key'] !== undefined;
    const key = keepKey
      ? createPrivateKey(Buffer.from(data['tls.key']!, 'base64').toString())
      : undefined;
    const fields = {
      commonName: spec.commonName ?? name,
      notBefore: now,
      notAfter: now + duration,
      isCa: spec.isCA === true,
      ...(spec.isCA === true
        ? {}
        : {
            keyUsage: ['digitalSignature'] as const,
            extendedKeyUsage: ['serverAuth', 'clientAuth'] as const,
          }),
      ...(spec.dnsNames === undefined ? {} : { dnsNames: spec.dnsNames }),
      keyAlgorithm: algorithm as 'ecdsa-p256' | 'ecdsa-p384',
      ...(key === undefined ? {} : { key }),
    };
    const made =
      signer === 'self'
        ? await createRootCa(fields)
        : await createIntermediateCa({
            ...fields,
            issuer: { certificateDer: signer.der, privateKey: signer.key },
          });
    const caPem = signer === 'self' ? made.certificatePem : signer.pem;
    const selfSignedCa = signer !== 'self' && signer.selfSigned;
    const tlsCrt =
      signer === 'self' || selfSignedCa ? made.certificatePem : made.certificatePem + signer.pem;
    api.apply({
      apiVersion: 'v1',
      kind: 'Secret',
      type: 'kubernetes.io/tls',
      metadata: {
        name: spec.secretName,
        namespace: ns,
        labels: { ...secret?.metadata.labels, ...spec.secretTemplate?.labels },
        annotations: {
          ...secret?.metadata.annotations,
          ...spec.secretTemplate?.annotations,
          'cert-manager.io/certificate-name': name,
          'cert-manager.io/issuer-name': spec.issuerRef.name,
          'cert-manager.io/issuer-kind': spec.issuerRef.kind ?? 'Issuer',
          'cert-manager.io/issuer-group': spec.issuerRef.group ?? 'cert-manager.io',
          'cert-manager.io/common-name': fields.commonName,
          [SPEC_HASH]: specHash,
        },
      },
      stringData: { 'tls.crt': tlsCrt, 'tls.key': made.privateKeyPem, 'ca.crt': caPem },
    });
    const serial = new X509Certificate(made.certificatePem).serialNumber;
    this.#setStatus(cert, {
      ready: true,
      notBefore: fields.notBefore,
      notAfter: fields.notAfter,
      renewalTime: fields.notAfter - renewBefore,
      revision: (status.revision ?? 0) + 1,
    });
    const issuance: Issuance = { namespace: ns, certificate: name, reason, at: now, serial };
    this.issued.push(issuance);
    return issuance;
  }

  /** The CA that signs for an issuerRef: 'self', a loaded CA, or 'pending' (not ready). */
  #signer(
    ns: string,
    ref: CertificateSpec['issuerRef'],
  ):
    | 'self'
    | 'pending'
    | {
        der: Uint8Array;
        key: ReturnType<typeof createPrivateKey>;
        pem: string;
        selfSigned: boolean;
      } {
    const api = this.#o.api;
    const cluster = ref.kind === 'ClusterIssuer';
    const issuer = api.get({
      apiVersion: 'cert-manager.io/v1',
      kind: cluster ? 'ClusterIssuer' : 'Issuer',
      name: ref.name,
      ...(cluster ? {} : { namespace: ns }),
    });
    if (issuer === undefined) return 'pending';
    const spec = issuer['spec'] as { selfSigned?: object; ca?: { secretName: string } };
    if (spec.selfSigned !== undefined) return 'self';
    if (spec.ca === undefined) return 'pending';
    const secretNs = cluster ? (this.#o.clusterResourceNamespace ?? 'cert-manager') : ns;
    const secret = api.get({
      apiVersion: 'v1',
      kind: 'Secret',
      namespace: secretNs,
      name: spec.ca.secretName,
    });
    const data = (secret?.['data'] ?? {}) as Record<string, string>;
    if (data['tls.crt'] === undefined || data['tls.key'] === undefined) return 'pending';
    const pem = Buffer.from(data['tls.crt'], 'base64').toString();
    const first = parsePem(pem, 'CERTIFICATE')[0]!;
    const cert = new X509Certificate(first.der);
    return {
      der: first.der,
      key: createPrivateKey(Buffer.from(data['tls.key'], 'base64').toString()),
      pem: toPem(first.der, 'CERTIFICATE'),
      selfSigned: cert.issuer === cert.subject && cert.verify(cert.publicKey),
    };
  }

  #setStatus(
    cert: KubeObject,
    s: {
      ready: boolean;
      reason?: string;
      notBefore?: number;
      notAfter?: number;
      renewalTime?: number;
      revision?: number;
    },
  ): void {
    const api = this.#o.api;
    const latest = api.get({
      apiVersion: 'cert-manager.io/v1',
      kind: 'Certificate',
      namespace: cert.metadata.namespace!,
      name: cert.metadata.name!,
    });
    if (latest === undefined) return;
    const iso = (t: number | undefined) =>
      t === undefined ? undefined : new Date(t).toISOString().replace(/\.\d{3}Z$/, 'Z');
    const old = (latest['status'] ?? {}) as Record<string, unknown>;
    api.updateStatus({
      ...latest,
      status: {
        ...old,
        conditions: [
          {
            type: 'Ready',
            status: s.ready ? 'True' : 'False',
            reason: s.ready ? 'Ready' : (s.reason ?? 'Pending'),
            message: s.ready
              ? 'Certificate is up to date and has not expired'
              : 'Issuing certificate as Secret does not exist',
            lastTransitionTime: iso(this.#o.clock.now()),
          },
        ],
        ...(s.notBefore === undefined
          ? {}
          : {
              notBefore: iso(s.notBefore),
              notAfter: iso(s.notAfter),
              renewalTime: iso(s.renewalTime),
              revision: s.revision,
            }),
      },
    });
  }
}
