/**
 * A transparent mesh in network namespaces, for the end-to-end tests of transparent mode (IPv4
 * and IPv6): a {@link NetnsLab}, a real `meshid ca` and a real `meshid destination` (its own mesh
 * certificate, reading the Kubernetes API test double with `meshid install --destination`'s
 * objects) on the lab's host address of the chosen family, and helpers that do what the injected
 * pod does: `meshid proxy-init` as its init container, `meshid proxy --transparent` as UID 2102,
 * unmodified clients as the app's UID, and a tcpdump on the pod's link.
 */
import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { chmod, copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { renderInstall } from '../../cli/install.js';
import type { Address } from '../../core/index.js';
import { formatAddress } from '../../core/index.js';
import { MESHID_BIN, adminGet, startCaProcess, startMeshid, waitFor } from './ca-process.js';
import type { CaProcess, MeshidProcess } from './ca-process.js';
import { startKubeApiServer } from './kube-api-server/index.js';
import type { KubeApiServer, KubeObject } from './kube-api-server/index.js';
import { NetnsLab } from './netns.js';
import type { NetnsPod } from './netns.js';
import { CA_IDENTITY, HOUR, idOf, makeTestState } from './state.js';
import type { TestState } from './state.js';

/**
 * The server app: an HTTP server on 8080 of the host in argv[1] (default 0.0.0.0) that answers
 * with who it saw: the peer address and the l5d-client-id header.
 */
export const WHO_APP = `
const http = require('node:http');
http.createServer((req, res) => {
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ remote: req.socket.remoteAddress, clientId: req.headers['l5d-client-id'] ?? null }));
}).listen(8080, process.argv[1] ?? '0.0.0.0', () => console.log('up'));
`;

/** What {@link WHO_APP} answers. */
export interface Seen {
  remote: string;
  clientId: string | null;
}

/** Settings of {@link TransparentMesh.start}. */
export interface TransparentMeshOptions {
  /** The lab's tag (a-z0-9, ≤ 8). */
  readonly tag: string;
  /** The family of the control plane's addresses (CA, destination service) and the proxies' admin. */
  readonly family: 4 | 6;
}

/**
 * The mesh. `start`, add pods with `lab.addPod`, their objects with `createPod`/`api`, their
 * proxies with `startPodProxy`; `stop` in `after()`.
 *
 * @example
 * ```ts
 * const mesh = await TransparentMesh.start({ tag: 'tout6', family: 6 });
 * const server = await mesh.lab.addPod('server');
 * mesh.createPod(pod('emojivoto', 'web-0', [server.ip, server.ip6], { meshed: true, sa: 'web' }));
 * await mesh.startPodProxy(server, 'web');
 * ```
 */
export class TransparentMesh {
  readonly lab: NetnsLab;
  readonly state: TestState;
  readonly api: KubeApiServer;
  readonly ca: CaProcess;
  readonly dst: MeshidProcess;
  /** A folder every pod's UID can read: anchors, tokens, captures. */
  readonly dir: string;
  readonly family: 4 | 6;
  readonly #procs: MeshidProcess[] = [];

  private constructor(o: {
    lab: NetnsLab;
    state: TestState;
    api: KubeApiServer;
    ca: CaProcess;
    dst: MeshidProcess;
    dir: string;
    family: 4 | 6;
  }) {
    this.lab = o.lab;
    this.state = o.state;
    this.api = o.api;
    this.ca = o.ca;
    this.dst = o.dst;
    this.dir = o.dir;
    this.family = o.family;
  }

  /** Brings up the lab, the CA, the API test double and the destination service (ready). */
  static async start(o: TransparentMeshOptions): Promise<TransparentMesh> {
    const undo: (() => Promise<unknown>)[] = [];
    try {
      const lab = await NetnsLab.create({ tag: o.tag });
      undo.push(() => lab.destroy());
      const state = await makeTestState();
      undo.push(() => state.cleanup());
      const dir = await mkdtemp(join(tmpdir(), `meshid-${o.tag}-`));
      undo.push(() => rm(dir, { recursive: true, force: true }));
      await chmod(dir, 0o755);
      await copyFile(state.anchorsFile, join(dir, 'anchors.pem'));
      await chmod(join(dir, 'anchors.pem'), 0o644);
      const host = o.family === 4 ? lab.hostIp : `[${lab.hostIp6}]`;
      const ca = await startCaProcess([...state.caArgs, '--workers', '1', '--listen', `${host}:0`]);
      undo.push(() => ca.stop());
      const api = await startKubeApiServer({ namespaces: ['emojivoto'] });
      undo.push(() => api.stop());
      for (const doc of parseAllDocuments(
        renderInstall({ argv: ['--destination'], env: {}, now: Date.now() }),
      )) {
        const obj = doc.toJS() as KubeObject | null;
        if (obj !== null) api.create(obj);
      }
      const { token: apiToken } = await api.mintToken({
        namespace: 'linkerd',
        serviceAccount: 'linkerd-destination',
        expirationSeconds: 3600,
      });
      const kubeconfig = join(dir, 'destination-kubeconfig');
      await api.writeKubeconfig(kubeconfig, { token: apiToken });
      const dstToken = join(dir, 'destination-token');
      await writeFile(
        dstToken,
        await state.token('linkerd', 'linkerd-destination', { ttlMs: HOUR }),
      );
      const dst = await startMeshid('destination', [
        ...['--kubeconfig', kubeconfig, '--admin', '127.0.0.1:0', '--listen', `${host}:0`],
        ...['--identity-addr', formatAddress(ca.address), '--identity-name', CA_IDENTITY],
        ...['--trust-anchors', state.anchorsFile, '--token-file', dstToken],
      ]);
      undo.push(() => dst.stop());
      const dstAdmin = String(dst.listening['admin']);
      const [dstHost = '', dstPort = ''] = dstAdmin.split(/:(?=\d+$)/);
      await waitFor('the destination service ready', async () =>
        (await adminGet({ host: dstHost, port: Number(dstPort) }, '/ready')).status === 200
          ? true
          : undefined,
      );
      return new TransparentMesh({ lab, state, api, ca, dst, dir, family: o.family });
    } catch (err) {
      for (const u of undo.reverse()) await u().catch(() => undefined);
      throw err;
    }
  }

  /** Creates a pod object and gives it its IPs, as the kubelet would (status is a subresource). */
  createPod(p: Record<string, unknown>): void {
    const { status, ...rest } = p as { status: Record<string, unknown> };
    const created = this.api.create(rest as KubeObject);
    this.api.updateStatus({ ...created, status });
  }

  /** A pod's proxy admin address (its IP of the mesh's family, 4191). */
  admin(p: NetnsPod): Address {
    return { host: this.family === 4 ? p.ip : p.ip6, port: 4191 };
  }

  /**
   * Does what the injector's containers do in pod `p`: `meshid proxy-init` (root, as the init
   * container), then `meshid proxy --transparent` as UID 2102 with `sa`'s token; resolves once
   * the proxy is ready.
   */
  async startPodProxy(p: NetnsPod, sa: string): Promise<MeshidProcess> {
    const token = join(this.dir, `${sa}-token`);
    await writeFile(token, await this.state.token('emojivoto', sa, { ttlMs: 2 * HOUR }));
    await chmod(token, 0o644);
    const init = await p.run(process.execPath, [MESHID_BIN, 'proxy-init', '--proxy-uid', '2102']);
    assert.equal(init.code, 0, init.stderr);
    const proxy = await startMeshid(
      'proxy',
      [
        ...['--identity-addr', formatAddress(this.ca.address), '--identity-name', CA_IDENTITY],
        ...['--trust-anchors', join(this.dir, 'anchors.pem'), '--token-file', token],
        ...['--local-identity', idOf('emojivoto', sa), '--admin', formatAddress(this.admin(p))],
        // The destination's identity is left to its default, derived from the naming.
        ...['--transparent', '--destination-addr', String(this.dst.listening['address'])],
      ],
      {},
      { prefix: p.prefix(2102) },
    );
    this.#procs.push(proxy);
    await waitFor(`${sa}'s proxy ready`, async () => {
      const r = await adminGet(this.admin(p), '/ready');
      return r.status === 200 ? true : undefined;
    });
    return proxy;
  }

  /** The last log lines of the destination service and every proxy, for assertion messages. */
  logs(): string {
    return [this.dst, ...this.#procs].map((p) => p.lines.slice(-10).join('\n')).join('\n---\n');
  }

  /**
   * An unmodified curl in pod `from`, as the app (UID 1000, which the nat rules redirect), to a
   * {@link WHO_APP}; `body` is POSTed when given. Returns what the app saw.
   */
  async curl(
    from: NetnsPod,
    url: string,
    o: { body?: string; args?: readonly string[] } = {},
  ): Promise<Seen> {
    const data = o.body === undefined ? [] : ['--data-binary', o.body];
    const r = await from.run('curl', ['-sS', '--max-time', '10', ...(o.args ?? []), ...data, url], {
      uid: 1000,
    });
    assert.equal(r.code, 0, `curl ${url}: ${r.stderr}\n${this.logs()}`);
    try {
      return JSON.parse(r.stdout) as Seen;
    } catch {
      throw new Error(`curl ${url}: not the app's answer: ${r.stdout}\n${this.logs()}`);
    }
  }

  /**
   * Runs `fn` while tcpdump records every TCP packet on pod `on`'s eth0 (the link to the other
   * pods), and returns the capture file's bytes and tcpdump's reading of it. Waits for tcpdump's
   * "listening on" line before `fn`, stops it with SIGINT and waits for its exit, so every
   * packet is flushed; asserts that the kernel dropped none.
   */
  async capture(
    on: NetnsPod,
    fn: () => Promise<void>,
  ): Promise<{ bytes: Buffer; summary: string }> {
    const file = join(this.dir, `capture-${randomBytes(4).toString('hex')}.pcap`);
    const dump = on.spawn('tcpdump', [
      ...['-i', 'eth0', '-n'],
      // Every packet handed to tcpdump at once and written at once, so SIGINT loses none.
      ...['--immediate-mode', '-U', '-Z', 'root', '-w', file, 'tcp'],
    ]);
    const exited = once(dump, 'exit');
    let stderr = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`tcpdump not listening: ${stderr}`)), 15_000);
      dump.stderr!.on('data', (d: Buffer) => {
        stderr += d.toString();
        if (stderr.includes('listening on')) {
          clearTimeout(timer);
          resolve();
        }
      });
      dump.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`tcpdump exited ${String(code)}: ${stderr}`));
      });
    });
    try {
      await fn();
    } finally {
      dump.kill('SIGINT');
      await exited;
    }
    const summary = await on.run('tcpdump', ['-n', '-r', file]);
    assert.equal(summary.code, 0, summary.stderr);
    assert.match(stderr, /\b0 packets dropped by kernel/, 'the capture lost packets');
    return { bytes: await readFile(file), summary: summary.stdout };
  }

  /** Stops every process and removes the lab, the API test double and the files. */
  async stop(): Promise<void> {
    for (const p of this.#procs) await p.stop().catch(() => undefined);
    await this.dst.stop().catch(() => undefined);
    await this.ca.stop();
    await this.api.stop();
    await this.lab.destroy();
    await this.state.cleanup();
    await rm(this.dir, { recursive: true, force: true });
  }
}
