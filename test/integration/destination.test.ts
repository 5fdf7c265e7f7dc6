/**
 * `meshid destination` as a real process against the Kubernetes API test double, running as the
 * ServiceAccount `meshid install --destination` creates (only its ClusterRole applies), with its
 * mesh certificate from a real `meshid ca`. A grpc-js client over mTLS calls Get and sees the
 * change when an EndpointSlice changes; the proxy's destination client survives the service
 * going away and coming back.
 */
import { strict as assert } from 'node:assert';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { renderInstall } from '../../cli/install.js';
import { createLogger, formatAddress, parseAddress } from '../../core/index.js';
import type { Address, DestinationUpdate } from '../../core/index.js';
import { DestinationClient } from '../../proxy/index.js';
import type { EndpointSet } from '../../proxy/destination-client.js';
import { adminGet, startCaProcess, startMeshid, waitFor } from '../support/ca-process.js';
import type { CaProcess, MeshidProcess } from '../support/ca-process.js';
import { destinationTestClient } from '../support/destination-grpc.js';
import type { DestinationTestClient } from '../support/destination-grpc.js';
import { endpointSlice, pod, service } from '../support/destination-objects.js';
import { startKubeApiServer } from '../support/kube-api-server/index.js';
import type { KubeApiServer, KubeObject } from '../support/kube-api-server/index.js';
import { certificateFromCa } from '../support/proxy-process.js';
import { CA_IDENTITY, HOUR, idOf, makeTestState } from '../support/state.js';
import type { TestState } from '../support/state.js';

const DST = idOf('linkerd', 'linkerd-destination');

describe('meshid destination (real process, Kubernetes API test double, mTLS)', function () {
  this.timeout(120_000);
  let state: TestState;
  let ca: CaProcess;
  let api: KubeApiServer;
  let dst: MeshidProcess | undefined;
  let dstArgs: string[];
  let address: Address;
  let client: DestinationTestClient;
  let cert: { keyPem: string; certChainPem: string };

  /** Creates a pod and gives it its IP, as the kubelet would (status is a subresource). */
  const createPod = (p: Record<string, unknown>): void => {
    const { status, ...rest } = p as { status: Record<string, unknown> };
    const created = api.create(rest as KubeObject);
    api.updateStatus({ ...created, status });
  };

  const startDestination = async (listen = '127.0.0.1:0'): Promise<MeshidProcess> => {
    const p = await startMeshid('destination', [...dstArgs, '--listen', listen]);
    address = parseAddress(String(p.listening['address']))!;
    return p;
  };

  before(async () => {
    state = await makeTestState();
    ca = await startCaProcess([...state.caArgs, '--workers', '1']);
    api = await startKubeApiServer({ namespaces: ['shop'] });
    // Everything `meshid install --destination` renders, applied as kubectl would.
    for (const doc of parseAllDocuments(
      renderInstall({ argv: ['--destination'], env: {}, now: Date.now() }),
    )) {
      const obj = doc.toJS() as KubeObject | null;
      if (obj !== null) api.create(obj);
    }
    // The cluster: a Service with three meshed pods behind it.
    api.create(
      service('shop', 'web', '10.96.0.10', [
        { name: 'http', port: 80, targetPort: 'http' },
      ]) as KubeObject,
    );
    for (const i of [1, 2, 3])
      createPod(pod('shop', `web-${i}`, `10.0.0.${i}`, { meshed: true, sa: 'web' }));
    api.create(
      endpointSlice(
        'shop',
        'web-abc',
        'web',
        [1, 2, 3].map((i) => ({ ip: `10.0.0.${i}`, pod: `web-${i}` })),
        [{ name: 'http', port: 8080 }],
      ) as KubeObject,
    );
    // It runs as its own ServiceAccount: only the installed ClusterRole applies.
    const { token: apiToken } = await api.mintToken({
      namespace: 'linkerd',
      serviceAccount: 'linkerd-destination',
      expirationSeconds: 3600,
    });
    const kubeconfig = join(state.dir, 'destination-kubeconfig');
    await api.writeKubeconfig(kubeconfig, { token: apiToken });
    const tokenFile = join(state.dir, 'destination-token');
    await writeFile(
      tokenFile,
      await state.token('linkerd', 'linkerd-destination', { ttlMs: 2 * HOUR }),
    );
    dstArgs = [
      ...['--kubeconfig', kubeconfig, '--admin', '127.0.0.1:0'],
      ...['--identity-addr', formatAddress(ca.address), '--identity-name', CA_IDENTITY],
      ...['--trust-anchors', state.anchorsFile, '--token-file', tokenFile],
    ];
    dst = await startDestination();
    const c = await certificateFromCa(state, ca.address, 'shop', 'client');
    cert = { keyPem: c.keyPem, certChainPem: c.chainPem };
    client = destinationTestClient(address, {
      serverName: DST,
      anchorsPem: state.root.certificatePem,
      cert,
    });
  });
  after(async () => {
    client?.close();
    await dst?.stop();
    await ca?.stop();
    await api?.stop();
    await state?.cleanup();
  });

  it('is ready once it has its certificate and its first lists, serving as linkerd-destination', async () => {
    const admin = parseAddress(String(dst!.listening['admin']))!;
    await waitFor('the destination service to be ready', async () =>
      (await adminGet(admin, '/ready')).status === 200 ? true : undefined,
    );
    assert.match(
      (await adminGet(admin, '/metrics')).body,
      /destination_index_objects\{kind="Pod"\} 3/,
    );
  });

  it('answers Get for a ClusterIP:port, and streams the removal once the EndpointSlice changes', async () => {
    const stream = client.get('10.96.0.10:80');
    await stream.until('the first add', (m) => m.length >= 1);
    const first = stream.messages[0]!;
    assert.ok('add' in first, JSON.stringify(first));
    assert.deepEqual(first.add.addrs.map((a) => `${a.addr.ip}:${a.addr.port}`).sort(), [
      '10.0.0.1:8080',
      '10.0.0.2:8080',
      '10.0.0.3:8080',
    ]);
    for (const a of first.add.addrs) {
      assert.equal(a.tlsIdentity, idOf('shop', 'web'));
      assert.deepEqual(a.protocolHint, { protocol: 'h2' });
    }
    const slice = api.get({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      namespace: 'shop',
      name: 'web-abc',
    }) as KubeObject;
    api.update({
      ...slice,
      endpoints: [1, 3].map((i) => ({
        addresses: [`10.0.0.${i}`],
        targetRef: { kind: 'Pod', namespace: 'shop', name: `web-${i}` },
      })),
    });
    // From the watch, not a relist: the stream's own bound (10 s) is the only clock here; how
    // fast is a figure for the bench, not a timed assertion a loaded machine could fail.
    await stream.until('the remove', (m) => m.length >= 2);
    assert.deepEqual(stream.messages[1], {
      remove: { addrs: [{ ip: '10.0.0.2', port: 8080 }] },
    } satisfies DestinationUpdate);
    stream.cancel();
  });

  it('refuses a client without a mesh certificate', async () => {
    const anonymous = destinationTestClient(address, {
      serverName: DST,
      anchorsPem: state.root.certificatePem,
    });
    try {
      const status = await anonymous.get('10.96.0.10:80').ended;
      assert.equal(status.code, 14);
    } finally {
      anonymous.close();
    }
  });

  it("the proxy's client keeps its last answer through an outage, passes unknown targets through, and follows the service back", async () => {
    const proxyClient = new DestinationClient({
      address,
      serverName: DST,
      anchorsPem: () => state.root.certificatePem,
      certificate: () => cert,
      logger: createLogger({ level: 'silent' }),
      backoffMs: { min: 100, max: 500 },
    });
    try {
      const watch = proxyClient.resolve({ ip: '10.96.0.10', port: 80 });
      const set = await watch.answer(10_000);
      assert.equal(set.kind, 'endpoints');
      const staleSeen = new Promise<EndpointSet>((resolve) =>
        watch.onChange((s) => {
          if (s.kind === 'endpoints' && s.stale) resolve(s);
        }),
      );
      const port = address.port;
      await dst!.stop();
      dst = undefined;
      const stale = await staleSeen;
      assert.equal(stale.kind === 'endpoints' && stale.endpoints.size, 2);
      assert.deepEqual(await proxyClient.resolve({ ip: '10.96.0.99', port: 80 }).answer(30_000), {
        kind: 'pass-through',
        reason: 'unavailable',
      });
      // Meanwhile web-2 comes back; the restarted service (same address) tells the client.
      const slice = api.get({
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        namespace: 'shop',
        name: 'web-abc',
      })!;
      api.update({
        ...slice,
        endpoints: [1, 2, 3].map((i) => ({
          addresses: [`10.0.0.${i}`],
          targetRef: { kind: 'Pod', namespace: 'shop', name: `web-${i}` },
        })),
      });
      dst = await startDestination(`127.0.0.1:${port}`);
      await waitFor('a fresh answer with three endpoints', async () => {
        const s = watch.current();
        return s?.kind === 'endpoints' && !s.stale && s.endpoints.size === 3 ? true : undefined;
      });
      assert.equal(proxyClient.available, true);
    } finally {
      proxyClient.close();
    }
  });
});
