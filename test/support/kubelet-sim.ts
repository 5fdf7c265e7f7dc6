/**
 * A kubelet, as far as `podCertificate` projected volumes go (KEP-4317), for tests. It plays one
 * node: it authenticates to the Kubernetes API test double as `system:node:<name>` (so the
 * double's node restriction applies to it), generates each volume's private key itself (the key
 * never leaves this process except into the pod's volume, as with a real kubelet), creates the
 * PodCertificateRequest in the shape its Kubernetes version uses, waits for the signer's answer
 * through a watch, writes the credential bundle (the PKCS#8 key, then the chain) atomically the
 * way the kubelet's AtomicWriter does (a timestamped directory, `..data` swapped by rename, the
 * user-visible file a symlink into it), and asks again at `beginRefreshAt` by the injected clock.
 *
 * Request shapes by version:
 * - `1.35`: certificates.k8s.io/v1beta1, `pkixPublicKey` + `proofOfPossession` (the pod UID's
 *   ASCII bytes signed with the new key);
 * - `1.36`: certificates.k8s.io/v1beta1, `stubPKCS10Request` (an empty CSR signed with the key);
 * - `1.37`: certificates.k8s.io/v1, `stubPKCS10Request`.
 *
 * `mountPod` takes a pod as stored (say, as the proxy injector left it) and mounts its projected
 * volumes from its spec: each `podCertificate` source as above, each `clusterTrustBundle` source
 * from the ClusterTrustBundles the simulator follows by a watch (kubelet-trust-bundles.ts: the
 * selected anchors de-duplicated and shuffled, as the kubelet writes them), all the files of one
 * volume written together, and the volume written again when the bundles it selects change.
 *
 * Not modelled: the kubelet's up-to-five-minutes refresh jitter (tests drive refreshes with the
 * clock), keyPath/certificateChainPath (only credentialBundlePath), pod startup gating, and other
 * projected source kinds (a pod's token, ConfigMap and Secret volumes are not written).
 */
import { createPublicKey, generateKeyPairSync, randomUUID, sign as cryptoSign } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { mkdir, readlink, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { KubernetesObjectApi, Watch } from '@kubernetes/client-node';
import type { KubernetesObject } from '@kubernetes/client-node';
import type { KubeApiServer, KubeObject } from './kube-api-server/index.js';
import { TrustBundleInformer, projectTrustBundles } from './kubelet-trust-bundles.js';
import type { ClusterTrustBundleSource } from './kubelet-trust-bundles.js';

/** The kubelet's Kubernetes version, which fixes the request shape. */
export type KubeletVersion = '1.35' | '1.36' | '1.37';

/** The key types a `podCertificate` volume may ask for. */
export type PodCertificateKeyType =
  'ECDSAP256' | 'ECDSAP384' | 'ECDSAP521' | 'RSA3072' | 'RSA4096' | 'ED25519';

/** A `podCertificate` projected volume source. */
export interface PodCertificateVolume {
  readonly signerName: string;
  readonly keyType: PodCertificateKeyType;
  readonly maxExpirationSeconds?: number;
  /** File name inside the volume; default `credentialbundle.pem`. */
  readonly credentialBundlePath?: string;
  readonly userAnnotations?: Readonly<Record<string, string>>;
}

/** A pod the simulated scheduler placed on this node. */
export interface SimPod {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  readonly serviceAccount: string;
  readonly serviceAccountUid: string;
}

/** One mounted volume: where it is and what the last request said. */
export interface MountedPodCertificate {
  readonly pod: SimPod;
  /** The volume's directory (what the pod would see at its mountPath). */
  readonly dir: string;
  /** The credential bundle file (a symlink into `..data`, as the kubelet writes it). */
  readonly bundlePath: string;
  /** The PEM chain of the current certificate (leaf first). */
  readonly chainPem: string;
  /** The PodCertificateRequest that produced it. */
  readonly requestName: string;
  readonly beginRefreshAt: number;
  readonly notAfter: number;
  /** How many certificates this volume has had (1 after the mount, +1 per refresh). */
  readonly generation: number;
}

/** What a request ended in when it was not issued. */
export class PodCertificateRefused extends Error {
  override readonly name = 'PodCertificateRefused';
  constructor(
    readonly condition: 'Denied' | 'Failed',
    readonly reason: string,
    readonly detail: string,
    readonly requestName: string,
  ) {
    super(`PodCertificateRequest ${requestName} ${condition}: ${reason}: ${detail}`);
  }
}

/** Options of {@link startKubeletSim}. */
export interface KubeletSimOptions {
  readonly api: KubeApiServer;
  readonly nodeName: string;
  readonly version: KubeletVersion;
  /** Where volumes are written (one folder per pod volume). */
  readonly dir: string;
  /** The clock refreshes are measured against; default `Date.now`. */
  readonly now?: () => number;
  /** How long to wait for the signer's answer; default 30 s. */
  readonly answerTimeoutMs?: number;
  /** The randomness of the kubelet's order of a clusterTrustBundle file; default Math.random. */
  readonly random?: () => number;
}

/** A projected volume the simulator mounted from a pod's spec. */
export interface MountedVolume {
  readonly name: string;
  /** Its directory (what the containers see at the volume's mountPath). */
  readonly dir: string;
  /** The files it holds now, by path in the volume. */
  readonly files: Readonly<Record<string, string>>;
}

/** A running simulated kubelet. */
export interface KubeletSim {
  readonly nodeName: string;
  readonly nodeUid: string;
  readonly version: KubeletVersion;
  /** Creates the pod (and its ServiceAccount when missing) bound to this node, Running. */
  createPod(namespace: string, name: string, serviceAccount: string): SimPod;
  /** Mounts a `podCertificate` volume: one request, then the bundle written. Rejects when refused. */
  mount(pod: SimPod, volume: PodCertificateVolume): Promise<MountedPodCertificate>;
  /** The request body this kubelet would send for `pod` and `key` (hostile tests edit it). */
  requestBody(pod: SimPod, volume: PodCertificateVolume, key: KeyObject): Promise<KubeObject>;
  /** Creates a request body as this node and waits for its answer (issued chain, or refusal). */
  submit(body: KubeObject): Promise<KubeObject>;
  /**
   * Mounts the projected volumes of `pod` (a Pod as stored, bound to this node) that have
   * `podCertificate` or `clusterTrustBundle` sources, as the kubelet does before starting its
   * containers; rejects when a certificate is refused or a required trust bundle selects nothing.
   */
  mountPod(pod: KubeObject): Promise<MountedVolume[]>;
  /** Refreshes every mounted volume whose beginRefreshAt has come; resolves to how many. */
  refreshDue(): Promise<number>;
  readonly mounts: readonly MountedPodCertificate[];
  /** The volumes `mountPod` mounted. */
  readonly volumes: readonly MountedVolume[];
  /** Resolves when every volume write started so far has finished. */
  settled(): Promise<void>;
  close(): void;
}

function apiVersionOf(version: KubeletVersion): string {
  return version === '1.37' ? 'certificates.k8s.io/v1' : 'certificates.k8s.io/v1beta1';
}

/**
 * Generates a key of a `podCertificate` key type, as the kubelet does.
 *
 * @example
 * ```ts
 * const key = generatePodKey('ECDSAP256');
 * ```
 */
export function generatePodKey(keyType: PodCertificateKeyType): KeyObject {
  switch (keyType) {
    case 'ECDSAP256':
      return generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    case 'ECDSAP384':
      return generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey;
    case 'ECDSAP521':
      return generateKeyPairSync('ec', { namedCurve: 'P-521' }).privateKey;
    case 'RSA3072':
      return generateKeyPairSync('rsa', { modulusLength: 3072 }).privateKey;
    case 'RSA4096':
      return generateKeyPairSync('rsa', { modulusLength: 4096 }).privateKey;
    case 'ED25519':
      return generateKeyPairSync('ed25519').privateKey;
  }
}

function der(tag: number, ...parts: Buffer[]): Buffer {
  const body = Buffer.concat(parts);
  const n = body.length;
  const len =
    n < 0x80
      ? Buffer.from([n])
      : n < 0x100
        ? Buffer.from([0x81, n])
        : n < 0x10000
          ? Buffer.from([0x82, n >> 8, n & 0xff])
          : Buffer.from([0x83, n >> 16, (n >> 8) & 0xff, n & 0xff]);
  return Buffer.concat([Buffer.from([tag]), len, body]);
}

function oid(dotted: string): Buffer {
  const [a = 0, b = 0, ...rest] = dotted.split('.').map(Number);
  const out = [40 * a + b];
  for (const v of rest) {
    const bytes = [v & 0x7f];
    for (let x = v >> 7; x > 0; x >>= 7) bytes.unshift((x & 0x7f) | 0x80);
    out.push(...bytes);
  }
  return der(0x06, Buffer.from(out));
}

/** The signature algorithm a kubelet (Go's x509.CreateCertificateRequest) uses for a key. */
function signatureAlgorithm(key: KeyObject): { algorithm: Buffer; hash: string | null } {
  const curve = key.asymmetricKeyDetails?.namedCurve;
  switch (key.asymmetricKeyType) {
    case 'ec': {
      const [o, hash] =
        curve === 'secp384r1'
          ? ['1.2.840.10045.4.3.3', 'sha384']
          : curve === 'secp521r1'
            ? ['1.2.840.10045.4.3.4', 'sha512']
            : ['1.2.840.10045.4.3.2', 'sha256'];
      return { algorithm: der(0x30, oid(o)), hash };
    }
    case 'rsa':
      return {
        algorithm: der(0x30, oid('1.2.840.113549.1.1.11'), Buffer.from([0x05, 0x00])),
        hash: 'sha256',
      };
    case 'ed25519':
      return { algorithm: der(0x30, oid('1.3.101.112')), hash: null };
    default:
      throw new Error(`no CSR signature algorithm for a ${key.asymmetricKeyType ?? '?'} key`);
  }
}

/**
 * An empty PKCS#10 request (no subject, no attributes) signed with `key`: what a 1.36+ kubelet
 * puts in `stubPKCS10Request`. `attributes` (DER, inside the [0] set) is for hostile tests only.
 *
 * @example
 * ```ts
 * const stub = stubCsr(generatePodKey('ECDSAP256'));
 * ```
 */
export function stubCsr(key: KeyObject, attributes: Buffer = Buffer.alloc(0)): Buffer {
  const spki = createPublicKey(key).export({ type: 'spki', format: 'der' });
  const info = der(0x30, der(0x02, Buffer.from([0])), der(0x30), spki, der(0xa0, attributes));
  const { algorithm, hash } = signatureAlgorithm(key);
  const signature = cryptoSign(
    hash,
    info,
    key.asymmetricKeyType === 'ec' ? { key, dsaEncoding: 'der' } : key,
  );
  return der(0x30, info, algorithm, der(0x03, Buffer.from([0]), signature));
}

/**
 * The proof of possession of a 1.35 kubelet: the pod UID's ASCII bytes signed with the key
 * (ECDSA over SHA-256 as ASN.1, RSASSA-PSS with SHA-256, Ed25519).
 *
 * @example
 * ```ts
 * const pop = proofOfPossession(key, pod.uid);
 * ```
 */
export function proofOfPossession(key: KeyObject, podUid: string): Buffer {
  const data = Buffer.from(podUid, 'ascii');
  switch (key.asymmetricKeyType) {
    case 'ed25519':
      return cryptoSign(null, data, key);
    case 'rsa':
      return cryptoSign('sha256', data, {
        key,
        padding: 6, // RSA_PKCS1_PSS_PADDING
        saltLength: 32,
      });
    default:
      return cryptoSign('sha256', data, { key, dsaEncoding: 'der' });
  }
}

/** The PEM blocks of `text`, normalized (the kubelet drops anything between blocks). */
function pemBlocks(text: string): string[] {
  return [...text.matchAll(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g)].map(
    (m) => `${m[0]}\n`,
  );
}

/**
 * Writes `files` into `dir` as the kubelet's AtomicWriter does: a new timestamped directory,
 * `..data_tmp` pointing at it renamed over `..data`, each file a symlink `name -> ..data/name`;
 * the previous timestamped directory removed. A reader never sees half a file or a mix.
 */
async function atomicWrite(
  dir: string,
  files: Readonly<Record<string, string>>,
  stamp: string,
): Promise<void> {
  await mkdir(dir, { recursive: true });
  const ts = `..${stamp}`;
  await mkdir(join(dir, ts), { mode: 0o755 });
  for (const [name, content] of Object.entries(files))
    await writeFile(join(dir, ts, name), content, { mode: 0o600 });
  let previous: string | undefined;
  try {
    previous = await readlink(join(dir, '..data'));
  } catch {
    previous = undefined;
  }
  await rm(join(dir, '..data_tmp'), { force: true });
  await symlink(ts, join(dir, '..data_tmp'));
  await rename(join(dir, '..data_tmp'), join(dir, '..data'));
  for (const name of Object.keys(files)) {
    try {
      await readlink(join(dir, name));
    } catch {
      await symlink(join('..data', name), join(dir, name));
    }
  }
  if (previous !== undefined && previous !== ts)
    await rm(join(dir, previous), { recursive: true, force: true });
}

/** A volume of a pod's spec, as far as the simulator reads it. */
interface PodSpecVolume {
  readonly name: string;
  readonly projected?: {
    readonly sources?: readonly {
      readonly podCertificate?: PodCertificateVolume;
      readonly clusterTrustBundle?: ClusterTrustBundleSource;
    }[];
  };
}

/** A mounted volume: its sources and what it holds. */
interface SimVolume {
  readonly name: string;
  readonly pod: SimPod;
  readonly dir: string;
  readonly podCertificate?: PodCertificateVolume;
  readonly trustBundles: readonly ClusterTrustBundleSource[];
  cert?: MountedPodCertificate;
  keyPem: string;
  /** Each trust bundle source's file, by path, with the anchor set it holds. */
  readonly anchors: Map<string, { key: string; pem: string }>;
  files: Record<string, string>;
  writing: Promise<void>;
}

/**
 * Starts a simulated kubelet for node `nodeName` (the Node object is created when missing).
 *
 * @example
 * ```ts
 * const api = await startKubeApiServer({ podCertificates: '1.36' });
 * const kubelet = startKubeletSim({ api, nodeName: 'node-a', version: '1.36', dir });
 * const pod = kubelet.createPod('emojivoto', 'web-0', 'web');
 * const mounted = await kubelet.mount(pod, { signerName: 'meshid.io/workload-identity', keyType: 'ECDSAP256' });
 * ```
 */
export function startKubeletSim(o: KubeletSimOptions): KubeletSim {
  const { api, nodeName, version } = o;
  const now = o.now ?? Date.now;
  const answerTimeoutMs = o.answerTimeoutMs ?? 30_000;
  const node: KubeObject =
    api.get({ apiVersion: 'v1', kind: 'Node', name: nodeName }) ??
    api.create<KubeObject>({ apiVersion: 'v1', kind: 'Node', metadata: { name: nodeName } });
  const token = api.addUser({
    username: `system:node:${nodeName}`,
    groups: ['system:nodes', 'system:authenticated'],
    rules: [
      {
        verbs: ['create', 'get', 'list', 'watch'],
        apiGroups: ['certificates.k8s.io'],
        resources: ['podcertificaterequests'],
      },
      // What a node may read for clusterTrustBundle volumes (every authenticated user may).
      {
        verbs: ['get', 'list', 'watch'],
        apiGroups: ['certificates.k8s.io'],
        resources: ['clustertrustbundles'],
      },
      { verbs: ['get'], apiGroups: [''], resources: ['serviceaccounts'] },
    ],
  });
  const kc = api.kubeConfig({ token, user: `node-${nodeName}` });
  const objects = KubernetesObjectApi.makeApiClient(kc);
  const watcher = new Watch(kc);
  const aborts = new Set<AbortController>();
  const random = o.random ?? Math.random;
  const volumes: SimVolume[] = [];
  const writeErrors: Error[] = [];
  let informer: Promise<TrustBundleInformer> | undefined;
  let stamps = 0;

  const requestBody = async (
    pod: SimPod,
    volume: PodCertificateVolume,
    key: KeyObject,
  ): Promise<KubeObject> => {
    await Promise.resolve();
    const spec: Record<string, unknown> = {
      signerName: volume.signerName,
      podName: pod.name,
      podUID: pod.uid,
      serviceAccountName: pod.serviceAccount,
      serviceAccountUID: pod.serviceAccountUid,
      nodeName,
      nodeUID: node.metadata.uid,
      ...(volume.maxExpirationSeconds === undefined
        ? {}
        : { maxExpirationSeconds: volume.maxExpirationSeconds }),
      ...(volume.userAnnotations === undefined
        ? {}
        : { unverifiedUserAnnotations: { ...volume.userAnnotations } }),
    };
    if (version === '1.35') {
      spec['pkixPublicKey'] = createPublicKey(key)
        .export({ type: 'spki', format: 'der' })
        .toString('base64');
      spec['proofOfPossession'] = proofOfPossession(key, pod.uid).toString('base64');
    } else {
      spec['stubPKCS10Request'] = stubCsr(key).toString('base64');
    }
    return {
      apiVersion: apiVersionOf(version),
      kind: 'PodCertificateRequest',
      metadata: { namespace: pod.namespace, generateName: `${pod.name}-` },
      spec,
    };
  };

  /** Waits for the request's terminal condition through a watch on its name. */
  const answer = (namespace: string, name: string): Promise<KubeObject> =>
    new Promise((resolve, reject) => {
      const abort = new AbortController();
      aborts.add(abort);
      let done = false;
      const finish = (err: Error | undefined, obj?: KubeObject): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        aborts.delete(abort);
        abort.abort();
        if (err !== undefined) reject(err);
        else resolve(obj!);
      };
      const timer = setTimeout(
        () => finish(new Error(`no answer to PodCertificateRequest ${namespace}/${name} in time`)),
        answerTimeoutMs,
      );
      const [group, v] = apiVersionOf(version).split('/') as [string, string];
      const onObject = (type: string, obj: KubeObject): void => {
        if (type !== 'ADDED' && type !== 'MODIFIED') return;
        const conds = ((obj['status'] as { conditions?: { type: string }[] } | undefined)
          ?.conditions ?? []) as { type: string }[];
        if (conds.some((c) => ['Issued', 'Denied', 'Failed'].includes(c.type)))
          finish(undefined, obj);
      };
      watcher
        .watch(
          `/apis/${group}/${v}/namespaces/${namespace}/podcertificaterequests`,
          { fieldSelector: `metadata.name=${name}` },
          (type: string, obj: unknown) => onObject(type, obj as KubeObject),
          (err: unknown) => {
            if (!done && err !== null && err !== undefined && !abort.signal.aborted)
              finish(err instanceof Error ? err : new Error(String(err)));
          },
        )
        .then(
          (c) => abort.signal.addEventListener('abort', () => c.abort(), { once: true }),
          (err: unknown) => finish(err instanceof Error ? err : new Error(String(err))),
        );
    });

  const submit = async (body: KubeObject): Promise<KubeObject> => {
    const created = (await objects.create(
      body as unknown as KubernetesObject,
    )) as unknown as KubeObject;
    return answer(created.metadata.namespace ?? '', created.metadata.name ?? '');
  };

  /** One request for `volume`'s certificate, answered: the key and chain the kubelet writes. */
  const issue = async (
    pod: SimPod,
    volume: PodCertificateVolume,
    dir: string,
    generation: number,
  ): Promise<{ cert: MountedPodCertificate; keyPem: string }> => {
    const key = generatePodKey(volume.keyType);
    const done = await submit(await requestBody(pod, volume, key));
    const status = (done['status'] ?? {}) as {
      conditions?: { type: 'Issued' | 'Denied' | 'Failed'; reason: string; message: string }[];
      certificateChain?: string;
      beginRefreshAt?: string;
      notAfter?: string;
    };
    const cond = status.conditions?.find((c) => c.type !== 'Issued');
    if (cond !== undefined && cond.type !== 'Issued')
      throw new PodCertificateRefused(cond.type, cond.reason, cond.message, done.metadata.name!);
    const chainPem = pemBlocks(status.certificateChain ?? '').join('');
    const file = volume.credentialBundlePath ?? 'credentialbundle.pem';
    return {
      keyPem: key.export({ type: 'pkcs8', format: 'pem' }).toString(),
      cert: {
        pod,
        dir,
        bundlePath: join(dir, file),
        chainPem,
        requestName: done.metadata.name!,
        beginRefreshAt: Date.parse(status.beginRefreshAt ?? ''),
        notAfter: Date.parse(status.notAfter ?? ''),
        generation,
      },
    };
  };

  /** The files of `v` as they are now. */
  const filesOf = (v: SimVolume): Record<string, string> => {
    const files: Record<string, string> = {};
    if (v.podCertificate !== undefined && v.cert !== undefined)
      files[v.podCertificate.credentialBundlePath ?? 'credentialbundle.pem'] =
        v.keyPem + v.cert.chainPem;
    for (const [path, p] of v.anchors) files[path] = p.pem;
    return files;
  };

  /** Writes all of `v`'s files at once, after any write of it still under way. */
  const write = (v: SimVolume): Promise<void> => {
    const files = filesOf(v);
    v.files = files;
    v.writing = v.writing
      .then(() => atomicWrite(v.dir, files, `${now()}_${++stamps}`))
      .catch((err: unknown) => {
        writeErrors.push(err instanceof Error ? err : new Error(String(err)));
      });
    return v.writing;
  };

  /** Projects `v`'s trust bundle sources from `bundles`; true when an anchor set changed. */
  const project = (v: SimVolume, bundles: readonly KubeObject[]): boolean => {
    let changed = false;
    for (const source of v.trustBundles) {
      const p = projectTrustBundles(source, bundles, random);
      // Nothing selected any more: the kubelet fails the volume's sync and keeps the old files.
      if (p === undefined || v.anchors.get(source.path)?.key === p.key) continue;
      v.anchors.set(source.path, p);
      changed = true;
    }
    return changed;
  };

  const trustBundles = (): Promise<TrustBundleInformer> =>
    (informer ??= TrustBundleInformer.start(kc).then((inf) => {
      inf.on('change', () => {
        for (const v of volumes)
          if (v.trustBundles.length > 0 && project(v, inf.all())) void write(v);
      });
      inf.on('error', (err) => writeErrors.push(err));
      return inf;
    }));

  const podOf = (obj: KubeObject): SimPod => {
    const namespace = obj.metadata.namespace ?? 'default';
    const spec = (obj['spec'] ?? {}) as { serviceAccountName?: string; nodeName?: string };
    if (spec.nodeName !== nodeName)
      throw new Error(
        `pod ${namespace}/${obj.metadata.name ?? '?'} is bound to ${spec.nodeName ?? 'no node'}, not ${nodeName}`,
      );
    const serviceAccount = spec.serviceAccountName ?? 'default';
    const sa = api.get({
      apiVersion: 'v1',
      kind: 'ServiceAccount',
      namespace,
      name: serviceAccount,
    });
    return {
      namespace,
      name: obj.metadata.name!,
      uid: obj.metadata.uid!,
      serviceAccount,
      serviceAccountUid: sa?.metadata.uid ?? '',
    };
  };

  return {
    nodeName,
    nodeUid: node.metadata.uid!,
    version,
    createPod(namespace, name, serviceAccount) {
      if (api.get({ apiVersion: 'v1', kind: 'Namespace', name: namespace }) === undefined)
        api.createNamespace(namespace);
      const sa =
        api.get({ apiVersion: 'v1', kind: 'ServiceAccount', namespace, name: serviceAccount }) ??
        api.createServiceAccount(namespace, serviceAccount);
      const pod = api.create<KubeObject>({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { namespace, name },
        spec: {
          nodeName,
          serviceAccountName: serviceAccount,
          containers: [{ name: 'app', image: 'app:test' }],
        },
      });
      api.updateStatus({ ...pod, status: { phase: 'Running' } });
      return {
        namespace,
        name,
        uid: pod.metadata.uid ?? randomUUID(),
        serviceAccount,
        serviceAccountUid: sa.metadata.uid!,
      };
    },
    async mount(pod, volume) {
      const dir = join(o.dir, `${pod.namespace}_${pod.name}_${pod.uid.slice(0, 8)}`);
      const { cert, keyPem } = await issue(pod, volume, dir, 1);
      const v: SimVolume = {
        name: 'podcertificate',
        pod,
        dir,
        podCertificate: volume,
        trustBundles: [],
        cert,
        keyPem,
        anchors: new Map(),
        files: {},
        writing: Promise.resolve(),
      };
      volumes.push(v);
      await write(v);
      return cert;
    },
    async mountPod(obj) {
      const pod = podOf(obj);
      const specVolumes = ((obj['spec'] ?? {}) as { volumes?: PodSpecVolume[] }).volumes ?? [];
      const mounted: SimVolume[] = [];
      for (const sv of specVolumes) {
        const sources = sv.projected?.sources ?? [];
        const pc = sources.find((x) => x.podCertificate !== undefined)?.podCertificate;
        const tbs = sources.flatMap((x) =>
          x.clusterTrustBundle === undefined ? [] : [x.clusterTrustBundle],
        );
        if (pc === undefined && tbs.length === 0) continue;
        const dir = join(o.dir, `${pod.namespace}_${pod.name}_${pod.uid.slice(0, 8)}`, sv.name);
        const v: SimVolume = {
          name: sv.name,
          pod,
          dir,
          ...(pc === undefined ? {} : { podCertificate: pc }),
          trustBundles: tbs,
          keyPem: '',
          anchors: new Map(),
          files: {},
          writing: Promise.resolve(),
        };
        if (tbs.length > 0) {
          project(v, (await trustBundles()).all());
          const missing = tbs.find((t) => t.optional !== true && !v.anchors.has(t.path));
          if (missing !== undefined)
            throw new Error(
              `volume ${sv.name}: combination of signerName and labelSelector matched zero ClusterTrustBundles (${JSON.stringify(missing)})`,
            );
        }
        if (pc !== undefined) Object.assign(v, await issue(pod, pc, dir, 1));
        mounted.push(v);
      }
      for (const v of mounted) {
        volumes.push(v);
        await write(v);
      }
      return mounted.map((v) => ({ name: v.name, dir: v.dir, files: v.files }));
    },
    requestBody,
    submit,
    async refreshDue() {
      let n = 0;
      for (const v of volumes) {
        if (v.podCertificate === undefined || v.cert === undefined) continue;
        if (now() < v.cert.beginRefreshAt) continue;
        Object.assign(v, await issue(v.pod, v.podCertificate, v.dir, v.cert.generation + 1));
        await write(v);
        n++;
      }
      return n;
    },
    get mounts() {
      return volumes.flatMap((v) => (v.cert === undefined ? [] : [v.cert]));
    },
    get volumes() {
      return volumes
        .filter((v) => v.name !== 'podcertificate')
        .map((v) => ({ name: v.name, dir: v.dir, files: v.files }));
    },
    async settled() {
      await Promise.all(volumes.map((v) => v.writing));
      if (writeErrors.length > 0) throw writeErrors[0]!;
    },
    close() {
      for (const a of [...aborts]) a.abort();
      void informer?.then((inf) => inf.close());
    },
  };
}
