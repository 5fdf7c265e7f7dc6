/**
 * A cluster for pod certificate tests and benchmarks: the Kubernetes API test double serving
 * PodCertificateRequests as a given Kubernetes version would, everything `meshid install
 * --pod-certificates` renders applied to it, the issuer Secret, and `meshid ca` processes that
 * authenticate as the CA's own ServiceAccount (so only the installed RBAC applies).
 */
import 'reflect-metadata';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { renderInstall } from '../../cli/install.js';
import { systemClock } from '../../core/index.js';
import { createIntermediateCa, createRootCa } from '../../core/pki.js';
import type { GeneratedCa } from '../../core/pki.js';
import { startCaProcess } from './ca-process.js';
import type { CaProcess } from './ca-process.js';
import { issuerSecret } from './issuer-secret.js';
import { generatePodKey } from './kubelet-sim.js';
import type { KubeletSim } from './kubelet-sim.js';
import { startKubeApiServer } from './kube-api-server/index.js';
import type { KubeApiServer, KubeObject, PodCertificatesMode } from './kube-api-server/index.js';
import { DAY, HOUR } from './state.js';

export const SIGNER = 'meshid.io/workload-identity';
export const NS = 'linkerd';

/** A cluster with pod certificates and the CA installed. */
export interface PodCertCluster {
  readonly api: KubeApiServer;
  readonly dir: string;
  readonly root: GeneratedCa;
  readonly issuer: GeneratedCa;
  /** The CA's arguments besides ports (kubeconfig of its ServiceAccount, issuer, anchors). */
  readonly caArgs: readonly string[];
  /** Starts one `meshid ca --pod-certificates` replica. */
  startCa(extra?: readonly string[]): Promise<CaProcess>;
  /** The PodCertificateRequests of every namespace (v1beta1 view). */
  requests(): KubeObject[];
  close(): Promise<void>;
}

/**
 * Sets the cluster up. `checks: false` plays an API server that skips the key checks (to reach
 * the signer's own).
 *
 * @example
 * ```ts
 * const cluster = await startPodCertCluster({ mode: '1.37' });
 * const ca = await cluster.startCa();
 * ```
 */
export async function startPodCertCluster(
  o: { mode?: PodCertificatesMode; checks?: boolean; namespaces?: string[] } = {},
): Promise<PodCertCluster> {
  const dir = await mkdtemp(join(tmpdir(), 'meshid-podcert-'));
  const now = systemClock.now();
  const root = await createRootCa({
    commonName: 'root.linkerd.cluster.local',
    notBefore: now - HOUR,
    notAfter: now + 365 * DAY,
  });
  const issuer = await createIntermediateCa({
    issuer: root,
    commonName: 'identity.linkerd.cluster.local',
    notBefore: now - HOUR,
    notAfter: now + 30 * DAY,
    pathLength: 0,
  });
  const api = await startKubeApiServer({
    namespaces: ['emojivoto', ...(o.namespaces ?? [])],
    podCertificates: o.mode ?? '1.37',
    podCertificateChecks: o.checks ?? true,
    watchHistory: 20_000,
  });
  const anchorsFile = join(dir, 'anchors.pem');
  await writeFile(anchorsFile, root.certificatePem);
  const yaml = renderInstall({
    argv: ['--trust-anchors', anchorsFile, '--pod-certificates'],
    env: {},
    now,
  });
  for (const doc of parseAllDocuments(yaml)) {
    const obj = doc.toJS() as KubeObject | null;
    if (obj !== null) api.create(obj);
  }
  api.create(issuerSecret({ namespace: NS, name: 'linkerd-identity-issuer' }, issuer, root));
  const { token } = await api.mintToken({
    namespace: NS,
    serviceAccount: 'linkerd-identity',
    expirationSeconds: 24 * 3600,
  });
  const kubeconfig = join(dir, 'kubeconfig');
  await api.writeKubeconfig(kubeconfig, { token });
  const caArgs = [
    '--kubeconfig',
    kubeconfig,
    '--issuer-secret',
    'linkerd-identity-issuer',
    '--trust-anchors-config-map',
    'linkerd-identity-trust-roots',
    '--namespace',
    NS,
    '--workers',
    '1',
    '--pod-certificates',
  ];
  const started: CaProcess[] = [];
  return {
    api,
    dir,
    root,
    issuer,
    caArgs,
    async startCa(extra = []) {
      const ca = await startCaProcess([...caArgs, ...extra]);
      started.push(ca);
      return ca;
    },
    requests: () => api.list<KubeObject>('certificates.k8s.io/v1beta1', 'PodCertificateRequest'),
    async close() {
      await Promise.all(started.map((c) => c.stop()));
      await api.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** The answer of a PodCertificateRequest: its terminal condition, or undefined while pending. */
export function answerOf(
  pcr: KubeObject,
): { type: string; reason: string; message: string } | undefined {
  const conds = ((pcr['status'] as { conditions?: unknown[] } | undefined)?.conditions ?? []) as {
    type: string;
    reason: string;
    message: string;
  }[];
  return conds.find((c) => ['Issued', 'Denied', 'Failed'].includes(c.type));
}

/**
 * Resolves once the double has accepted `count` PodCertificateRequest status writes from now on
 * (event-driven, from its request log: no list of every request on a timer); rejects after
 * `timeoutMs` saying how many came.
 *
 * @example
 * ```ts
 * const written = statusWrites(cluster, 1000);
 * for (const b of bodies) cluster.api.create(b);
 * await written;
 * ```
 */
export function statusWrites(
  cluster: PodCertCluster,
  count: number,
  timeoutMs = 1_500_000,
): Promise<void> {
  return new Promise((resolve, reject) => {
    let n = 0;
    const timer = setTimeout(() => {
      off();
      reject(new Error(`only ${n} of ${count} status writes in ${timeoutMs / 1000} s`));
    }, timeoutMs);
    const off = cluster.api.onRequest((e) => {
      if (
        e.verb === 'update' &&
        e.resource === 'podcertificaterequests' &&
        e.path.endsWith('/status') &&
        e.status === 200 &&
        ++n === count
      ) {
        off();
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

/** How many signer replicas a CA last logged it shares the requests with (undefined: none yet). */
export function replicasSeen(ca: CaProcess): number | undefined {
  for (let i = ca.lines.length - 1; i >= 0; i--) {
    const line = ca.lines[i]!;
    if (!line.includes('"pod certificate signer replicas"')) continue;
    return (JSON.parse(line) as { replicas?: number }).replicas;
  }
  return undefined;
}

/**
 * The bodies of `n` PodCertificateRequests for meshid's signer, named `<prefix>-<i>`, one per new
 * pod of `kubelet`'s node, as its kubelet would send them (not created yet: the caller creates
 * them at once).
 */
export async function podCertRequestBodies(
  kubelet: KubeletSim,
  prefix: string,
  n: number,
): Promise<KubeObject[]> {
  const bodies: KubeObject[] = [];
  for (let i = 0; i < n; i++) {
    const pod = kubelet.createPod('emojivoto', `${prefix}-${i}`, 'web');
    const body = await kubelet.requestBody(
      pod,
      { signerName: SIGNER, keyType: 'ECDSAP256' },
      generatePodKey('ECDSAP256'),
    );
    body.metadata.name = `${prefix}-${i}`;
    bodies.push(body);
  }
  return bodies;
}
