/**
 * IPv6 and dual-stack listeners, as `meshid install` and the proxy injector render them: every
 * listener that binds all addresses is `[::]` (core/listen.ts), one socket for both families.
 *
 * 1. On this host: `meshid ca`, `meshid destination` and `meshid webhooks` started with the
 *    hosts of their rendered `--listen`/`--admin` flags (port 0 in place of the fixed port), and
 *    `meshid proxy` with the injector's `MESHID_ADMIN`/`MESHID_INBOUND` hosts, each answer a real
 *    client (Certify over TLS, the Destination API over mTLS, HTTPS, mTLS to the app) on
 *    127.0.0.1 and on ::1. The destination service and the proxy reach the CA at `[::1]`.
 * 2. In an IPv6-only network namespace (a pod with no IPv4 address): the proxy gets its
 *    certificate from a CA it reaches at an IPv6 address only, and its admin `[::]:4191` answers
 *    `/ready` on the pod's IPv6 address, as the kubelet's probe does; an admin written out as
 *    `0.0.0.0` is unreachable there, as docs/install.md says.
 */
import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { IncomingHttpHeaders, Server } from 'node:http';
import { request } from 'node:https';
import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { renderInstall } from '../../cli/install.js';
import { formatAddress, parseAddress } from '../../core/index.js';
import type { Address } from '../../core/index.js';
import { adminGet, startCaProcess, startMeshid, waitFor } from '../support/ca-process.js';
import type { CaProcess, MeshidProcess } from '../support/ca-process.js';
import { destinationTestClient } from '../support/destination-grpc.js';
import { endpointSlice, pod, service } from '../support/destination-objects.js';
import { startKubeApiServer } from '../support/kube-api-server/index.js';
import type { KubeApiServer, KubeObject } from '../support/kube-api-server/index.js';
import { NetnsLab } from '../support/netns.js';
import type { NetnsPod } from '../support/netns.js';
import { certificateFromCa } from '../support/proxy-process.js';
import { CA_IDENTITY, HOUR, idOf, makeTestState } from '../support/state.js';
import type { TestState } from '../support/state.js';
import { mountServingPair, opensslServingPair, sendToWebhooks } from '../support/webhooks.js';
import type { ServingPair } from '../support/webhooks.js';

const LOOPBACKS = ['127.0.0.1', '::1'] as const;
const WEB = idOf('emojivoto', 'web');
const VOTING = idOf('emojivoto', 'voting');
const DST = idOf('linkerd', 'linkerd-destination');

interface Container {
  name: string;
  args?: string[];
}

/** The `--<flag>=` values of each rendered Deployment's first container, by Deployment name. */
function renderedFlags(): Map<string, Map<string, string>> {
  const text = renderInstall({
    argv: ['--cert-manager', '--webhooks', '--destination'],
    env: {},
    now: Date.now(),
  });
  const byDeployment = new Map<string, Map<string, string>>();
  for (const doc of parseAllDocuments(text)) {
    const o = doc.toJS() as {
      kind?: string;
      metadata?: { name: string };
      spec?: { template: { spec: { containers: Container[] } } };
    } | null;
    if (o?.kind !== 'Deployment') continue;
    const flags = new Map<string, string>();
    for (const a of o.spec!.template.spec.containers[0]!.args ?? []) {
      const m = /^--([a-z-]+)=(.*)$/.exec(a);
      if (m !== null) flags.set(m[1]!, m[2]!);
    }
    byDeployment.set(o.metadata!.name, flags);
  }
  return byDeployment;
}

/** The rendered address with port 0: the same host, a free port. */
function onPortZero(rendered: string | undefined): string {
  const a = parseAddress(rendered ?? '');
  assert.ok(a !== undefined, `not an address: ${rendered}`);
  return formatAddress({ host: a.host, port: 0 });
}

/** `address` with its host replaced (a wildcard listener dialed at a loopback address). */
const at = (host: string, address: Address): Address => ({ host, port: address.port });

/** One mTLS HTTP/1.1 GET to the proxy's inbound, as a meshed peer with `cert`. */
function meshedGet(
  inbound: Address,
  anchorsPem: string,
  cert: { keyPem: string; chainPem: string },
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: inbound.host,
        port: inbound.port,
        path: '/hello',
        servername: WEB,
        ca: anchorsPem,
        key: cert.keyPem,
        cert: cert.chainPem,
        agent: false,
      },
      (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

describe('the rendered [::] listeners take IPv4 and IPv6 connections (real processes on 127.0.0.1 and ::1)', function () {
  this.timeout(180_000);
  const flags = renderedFlags();
  let state: TestState;
  let ca: CaProcess;
  let api: KubeApiServer;
  let dst: MeshidProcess;
  let hooks: MeshidProcess;
  let proxy: MeshidProcess;
  let pair: ServingPair;
  let app: Server;
  const seen: IncomingHttpHeaders[] = [];

  before(async () => {
    state = await makeTestState();
    const ca6 = flags.get('linkerd-identity');
    ca = await startCaProcess([
      ...state.caArgs,
      ...['--workers', '1'],
      ...['--listen', onPortZero(ca6?.get('listen')), '--admin', onPortZero(ca6?.get('admin'))],
    ]);
    // Everything dials the CA at its IPv6 loopback address.
    const caAt6 = formatAddress(at('::1', ca.address));

    api = await startKubeApiServer({ namespaces: ['shop', 'emojivoto'] });
    for (const doc of parseAllDocuments(
      renderInstall({ argv: ['--destination'], env: {}, now: Date.now() }),
    )) {
      const obj = doc.toJS() as KubeObject | null;
      if (obj !== null) api.create(obj);
    }
    api.create(
      service('shop', 'web', '10.96.0.10', [
        { name: 'http', port: 80, targetPort: 'http' },
      ]) as KubeObject,
    );
    const web = pod('shop', 'web-1', '10.0.0.1', { meshed: true, sa: 'web' }) as {
      status: Record<string, unknown>;
    };
    const { status, ...rest } = web;
    api.updateStatus({ ...api.create(rest as KubeObject), status });
    api.create(
      endpointSlice(
        'shop',
        'web-abc',
        'web',
        [{ ip: '10.0.0.1', pod: 'web-1' }],
        [{ name: 'http', port: 8080 }],
      ) as KubeObject,
    );
    const { token: apiToken } = await api.mintToken({
      namespace: 'linkerd',
      serviceAccount: 'linkerd-destination',
      expirationSeconds: 3600,
    });
    const kubeconfig = join(state.dir, 'destination-kubeconfig');
    await api.writeKubeconfig(kubeconfig, { token: apiToken });
    const dstToken = join(state.dir, 'destination-token');
    await writeFile(dstToken, await state.token('linkerd', 'linkerd-destination', { ttlMs: HOUR }));
    const dst6 = flags.get('linkerd-destination');
    dst = await startMeshid('destination', [
      ...['--listen', onPortZero(dst6?.get('listen')), '--admin', onPortZero(dst6?.get('admin'))],
      ...['--kubeconfig', kubeconfig, '--identity-addr', caAt6, '--identity-name', CA_IDENTITY],
      ...['--trust-anchors', state.anchorsFile, '--token-file', dstToken],
    ]);

    const tlsDir = join(state.dir, 'webhooks-tls');
    await mkdir(tlsDir);
    pair = await opensslServingPair();
    await mountServingPair(tlsDir, pair);
    hooks = await startMeshid('webhooks', [
      ...['--listen', onPortZero(flags.get('meshid-webhooks')?.get('listen'))],
      ...['--tls-dir', tlsDir],
    ]);

    app = createServer((req, res) => {
      seen.push(req.headers);
      res.end('hello from the app\n');
    });
    app.listen(0, '127.0.0.1');
    await once(app, 'listening');
    const token = join(state.dir, 'web-token');
    await writeFile(token, await state.token('emojivoto', 'web', { ttlMs: 2 * HOUR }));
    // The injector's values (test/unit/webhooks/inject*.test.ts pin them): [::]:4191, [::]:4143.
    proxy = await startMeshid(
      'proxy',
      [
        ...['--identity-addr', caAt6, '--identity-name', CA_IDENTITY],
        ...['--trust-anchors', state.anchorsFile, '--token-file', token],
        ...['--local-identity', WEB, '--app', `127.0.0.1:${(app.address() as AddressInfo).port}`],
      ],
      { MESHID_ADMIN: '[::]:0', MESHID_INBOUND: '[::]:0' },
    );
  });

  after(async () => {
    await Promise.all([proxy, hooks, dst].map((p) => p?.stop()));
    await ca?.stop();
    await api?.stop();
    app?.close();
    await state?.cleanup();
  });

  it('meshid install renders [::] for every listener of the CA, the destination service and the webhooks', () => {
    assert.equal(flags.get('linkerd-identity')?.get('listen'), '[::]:8080');
    assert.equal(flags.get('linkerd-identity')?.get('admin'), '[::]:9990');
    assert.equal(flags.get('linkerd-destination')?.get('listen'), '[::]:8086');
    assert.equal(flags.get('linkerd-destination')?.get('admin'), '[::]:9996');
    assert.equal(flags.get('meshid-webhooks')?.get('listen'), '[::]:8443');
  });

  it('the CA issues over Certify and answers its admin /ready on both 127.0.0.1 and ::1', async () => {
    assert.equal(ca.address.host, '::');
    for (const host of LOOPBACKS) {
      const { chainPem } = await certificateFromCa(state, at(host, ca.address), 'emojivoto', 'a');
      assert.match(chainPem, /^-----BEGIN CERTIFICATE-----/, host);
      assert.equal((await adminGet(at(host, ca.admin), '/ready')).status, 200, host);
    }
  });

  it('the destination service (its certificate from the CA at [::1]) answers Get over mTLS on both, and its admin', async () => {
    const address = parseAddress(String(dst.listening['address']))!;
    const admin = parseAddress(String(dst.listening['admin']))!;
    assert.equal(address.host, '::');
    await waitFor('the destination service to be ready', async () =>
      (await adminGet(at('::1', admin), '/ready')).status === 200 ? true : undefined,
    );
    const c = await certificateFromCa(state, ca.address, 'shop', 'client');
    for (const host of LOOPBACKS) {
      assert.equal((await adminGet(at(host, admin), '/ready')).status, 200, host);
      const client = destinationTestClient(at(host, address), {
        serverName: DST,
        anchorsPem: state.root.certificatePem,
        cert: { keyPem: c.keyPem, certChainPem: c.chainPem },
      });
      try {
        const stream = client.get('10.96.0.10:80');
        await stream.until(`the add over ${host}`, (m) => m.length >= 1);
        const first = stream.messages[0]!;
        assert.ok('add' in first, JSON.stringify(first));
        assert.deepEqual(
          first.add.addrs.map((a) => [`${a.addr.ip}:${a.addr.port}`, a.tlsIdentity]),
          [['10.0.0.1:8080', idOf('shop', 'web')]],
        );
        stream.cancel();
      } finally {
        client.close();
      }
    }
  });

  it('the webhooks answer HTTPS on both', async () => {
    const address = parseAddress(String(hooks.listening['address']))!;
    assert.equal(address.host, '::');
    for (const host of LOOPBACKS) {
      const r = await sendToWebhooks(at(host, address), pair.certPem, '/ready', undefined, {
        method: 'GET',
      });
      assert.equal(r.status, 200, `${host}: ${r.body}`);
      assert.equal(r.peer.fingerprint256.replace(/:/g, '').toLowerCase(), pair.fingerprint);
    }
  });

  it("the proxy (injector's [::] admin and inbound, its CA at [::1]) is ready and carries mTLS to the app on both", async () => {
    const admin = parseAddress(String(proxy.listening['admin']))!;
    const inbound = parseAddress(String(proxy.listening['inbound']))!;
    assert.deepEqual([admin.host, inbound.host], ['::', '::']);
    await waitFor('the proxy to be ready', async () =>
      (await adminGet(at('::1', admin), '/ready')).status === 200 ? true : undefined,
    );
    const voting = await certificateFromCa(state, ca.address, 'emojivoto', 'voting');
    const anchorsPem = state.root.certificatePem;
    for (const host of LOOPBACKS) {
      assert.equal((await adminGet(at(host, admin), '/ready')).status, 200, host);
      seen.length = 0;
      const r = await meshedGet(at(host, inbound), anchorsPem, voting);
      assert.equal(r.status, 200, `${host}: ${r.body}`);
      assert.equal(r.body, 'hello from the app\n');
      assert.equal(seen.length, 1);
      assert.equal(seen[0]!['l5d-client-id'], VOTING, host);
    }
  });
});

/** Connects to `address`; resolves with the connect error's code, or 'connected'. */
function tryConnect(address: Address): Promise<string> {
  return new Promise((resolve) => {
    const s = connect({ host: address.host, port: address.port });
    s.once('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

describe('an IPv6-only pod (network namespace): the proxy gets its certificate over IPv6 and its [::]:4191 admin answers the probe on the pod IPv6 address', function () {
  this.timeout(120_000);
  let lab: NetnsLab;
  let state: TestState;
  let ca: CaProcess;
  let v6: NetnsPod;
  const procs: MeshidProcess[] = [];

  before(async () => {
    lab = await NetnsLab.create({ tag: 'v6only' });
    state = await makeTestState();
    v6 = await lab.addPod('v6');
    // An IPv6-only pod: its IPv4 address and route go.
    const flush = await v6.run('ip', ['-4', 'addr', 'flush', 'dev', 'eth0']);
    assert.equal(flush.code, 0, flush.stderr);
    // The CA listens as installed ([::]); the pod can reach it only at the host's IPv6 address.
    ca = await startCaProcess([...state.caArgs, '--workers', '1', '--listen', '[::]:0']);
  });

  after(async () => {
    await Promise.all(procs.map((p) => p.stop()));
    await ca?.stop();
    await lab?.destroy();
    await state?.cleanup();
  });

  const startPodProxy = async (adminListen: string): Promise<MeshidProcess> => {
    const token = join(state.dir, 'web-token');
    await writeFile(token, await state.token('emojivoto', 'web', { ttlMs: 2 * HOUR }));
    const p = await startMeshid(
      'proxy',
      [
        ...['--identity-addr', formatAddress(at(lab.hostIp6, ca.address))],
        ...['--identity-name', CA_IDENTITY, '--local-identity', WEB],
        ...['--trust-anchors', state.anchorsFile, '--token-file', token],
      ],
      { MESHID_ADMIN: adminListen },
      { prefix: v6.prefix() },
    );
    procs.push(p);
    return p;
  };

  it('has no IPv4 address but its loopback', async () => {
    const r = await v6.run('ip', ['-4', '-o', 'addr', 'show']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(
      r.stdout
        .trim()
        .split('\n')
        .map((l) => l.split(/\s+/)[1]),
      ['lo'],
    );
  });

  it("the proxy's certificate comes from the CA at [host IPv6]; /ready and /identity answer at [pod IPv6]:4191", async () => {
    const proxy = await startPodProxy('[::]:4191');
    const admin = { host: v6.ip6, port: 4191 };
    await waitFor(
      'the proxy ready on the pod IPv6 address',
      async () => ((await adminGet(admin, '/ready')).status === 200 ? true : undefined),
      60_000,
    );
    const identity = await adminGet(admin, '/identity');
    assert.equal(identity.status, 200);
    assert.ok(identity.body.includes(WEB), identity.body);
    assert.equal(proxy.listening['admin'], '[::]:4191');
  });

  it('an admin written out as 0.0.0.0 is IPv4 only: nothing reaches it on the pod IPv6 address', async () => {
    const proxy = await startPodProxy('0.0.0.0:4192');
    assert.equal(proxy.listening['admin'], '0.0.0.0:4192');
    assert.equal(await tryConnect({ host: v6.ip6, port: 4192 }), 'ECONNREFUSED');
    assert.equal(await tryConnect({ host: v6.ip6, port: 4191 }), 'connected');
  });
});
