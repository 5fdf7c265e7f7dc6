/**
 * The transparent outbound listener with a stand-in for iptables (each test client connects
 * from its own loopback address, which the injected original-destination reader maps to the
 * address it "dialled") and a resolver the test drives. The peers are real meshid inbound
 * proxies in front of real apps, so the mTLS, the HTTP/2 sessions between proxies and the
 * transport header are the production ones.
 */
import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import { createServer as createHttpServer, request as httpRequest, Agent } from 'node:http';
import type { IncomingHttpHeaders, Server as HttpServer } from 'node:http';
import { connect as http2Connect } from 'node:http2';
import { connect as netConnect, createServer as createNetServer } from 'node:net';
import type { AddressInfo, Server as NetServer, Socket } from 'node:net';
import { createLogger, createRegistry, formatAddress } from '../../../core/index.js';
import { silentLogger } from '../../../core/logger.js';
import type { Address, Logger } from '../../../core/index.js';
import { InboundPolicy, InboundProxy, OutboundProxy } from '../../../proxy/index.js';
import type { WorkloadCertificate } from '../../../proxy/index.js';
import type { OutboundEvent } from '../../../proxy/outbound-events.js';
import type { OutboundLimits } from '../../../proxy/outbound-accept.js';
import { registerTrafficMetrics } from '../../../proxy/metrics.js';
import type {
  EndpointUpdate,
  ResolvedEndpoint,
  Resolver,
} from '../../../proxy/transparent/resolver.js';
import { waitFor } from '../../support/ca-process.js';
import { openFrom } from '../../support/hostile-clients.js';
import { makeTrustDomain, workloadId } from '../../support/outbound-pki.js';
import type { TrustDomain } from '../../support/outbound-pki.js';

const WEB = workloadId('emojivoto', 'web');
const VOTE = workloadId('emojivoto', 'voting');
const EMOJI = workloadId('emojivoto', 'emoji');
/** A Service's ClusterIP: nothing listens there; only the resolver knows it. */
const SERVICE: Address = { host: '10.96.0.10', port: 80 };
const TCP_SERVICE: Address = { host: '10.96.0.11', port: 9000 };

/** A resolver the test drives: the current answer per address, pushed to every watcher. */
class TestResolver implements Resolver {
  readonly answers = new Map<string, EndpointUpdate>();
  readonly #listeners = new Map<string, Set<(u: EndpointUpdate) => void>>();
  silent = false;
  /** Set: new watches hear that the destination service is unreachable. */
  down: string | undefined;
  resolve(target: Address, onUpdate: (u: EndpointUpdate) => void): () => void {
    const key = formatAddress(target);
    const set = this.#listeners.get(key) ?? new Set();
    this.#listeners.set(key, set);
    set.add(onUpdate);
    const answer = this.answers.get(key);
    const down = this.down;
    if (down !== undefined) setImmediate(() => onUpdate({ kind: 'unavailable', message: down }));
    else if (!this.silent) setImmediate(() => onUpdate(answer ?? { kind: 'unknown' }));
    return () => set.delete(onUpdate);
  }
  push(target: Address, u: EndpointUpdate): void {
    this.answers.set(formatAddress(target), u);
    for (const l of this.#listeners.get(formatAddress(target)) ?? []) l(u);
  }
  broadcast(u: EndpointUpdate): void {
    for (const set of this.#listeners.values()) for (const l of set) l(u);
  }
}

interface Backend {
  name: string;
  inbound: Address;
  seen: { clientId: string | undefined; path: string }[];
}

describe('transparent outbound listener', function () {
  this.timeout(20_000);
  let mesh: TrustDomain;
  let clientCert: WorkloadCertificate;
  const backends: Backend[] = [];
  let impostor: Backend;
  let echo: Address;
  let opaqueApp: { port: number; inbound: Address };
  const closers: (() => Promise<void>)[] = [];
  const perTest: (() => Promise<void>)[] = [];

  async function httpApp(name: string, seen: Backend['seen']): Promise<Address> {
    const server: HttpServer = createHttpServer((req, res) => {
      seen.push({
        clientId: req.headers['l5d-client-id'] as string | undefined,
        path: req.url ?? '',
      });
      req.resume();
      req.on('end', () => res.end(name));
    });
    return listen(server);
  }

  async function listen(server: HttpServer | NetServer): Promise<Address> {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    closers.push(async () => {
      if ('closeAllConnections' in server) server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    });
    return { host: '127.0.0.1', port: (server.address() as AddressInfo).port };
  }

  async function inbound(identity: string, app: Address, opaque = false): Promise<Address> {
    const cert = mesh.leaf(identity);
    const proxy = new InboundProxy({
      listen: { host: '127.0.0.1', port: 0 },
      app,
      ...(opaque ? { appPorts: new Map([[app.port, 'opaque' as const]]) } : {}),
      certificate: () => cert,
      anchorsPem: () => mesh.anchorsPem,
      policy: new InboundPolicy(),
      logger: silentLogger(),
    });
    const bound = await proxy.listen();
    closers.push(() => proxy.close(0));
    return bound;
  }

  async function backend(name: string, identity = WEB): Promise<Backend> {
    const seen: Backend['seen'] = [];
    const app = await httpApp(name, seen);
    return { name, inbound: await inbound(identity, app), seen };
  }

  function meshed(b: Backend, identity = WEB): ResolvedEndpoint {
    return { address: b.inbound, meshed: true, identity };
  }

  before(async function () {
    mesh = await makeTrustDomain();
    clientCert = mesh.leaf(VOTE);
    for (const n of ['web-0', 'web-1', 'web-2']) backends.push(await backend(n));
    impostor = await backend('impostor', EMOJI);
    const echoServer = createNetServer({ allowHalfOpen: true }, (s: Socket) => s.pipe(s));
    echo = await listen(echoServer);
    const opaqueServer = createNetServer((s: Socket) => {
      s.once('data', (b: Buffer) => s.end(`opaque-app got ${b.toString()}`));
    });
    const opaquePort = (await listen(opaqueServer)).port;
    opaqueApp = {
      port: opaquePort,
      inbound: await inbound(WEB, { host: '127.0.0.1', port: opaquePort }, true),
    };
  });

  afterEach(async function () {
    for (const c of perTest.splice(0).reverse()) await c();
    for (const b of [...backends, impostor]) b.seen.length = 0;
  });

  after(async function () {
    for (const c of closers.splice(0).reverse()) await c();
  });

  /** Starts the proxy; `dialled` maps each client source address to its original destination. */
  async function start(
    resolver: Resolver,
    extra: { resolveTimeoutMs?: number } = {},
    o: { limits?: Partial<OutboundLimits>; logger?: Logger } = {},
  ): Promise<{
    listen: Address;
    events: OutboundEvent[];
    dial: Map<string, Address>;
    proxy: OutboundProxy;
  }> {
    const dial = new Map<string, Address>();
    const events: OutboundEvent[] = [];
    const proxy = new OutboundProxy({
      routes: [],
      transparent: {
        listen: { host: '127.0.0.1', port: 0 },
        originalDestination: (socket) => {
          const d = dial.get(socket.remoteAddress ?? '');
          if (d === undefined) throw new Error('not redirected');
          return { address: d.host, port: d.port, family: 4 };
        },
        resolver,
        ...extra,
      },
      certificate: () => clientCert,
      anchorsPem: () => mesh.anchorsPem,
      logger: o.logger ?? silentLogger(),
      observe: (e) => events.push(e),
      ...(o.limits === undefined ? {} : { limits: o.limits }),
    });
    const [bound] = await proxy.listen();
    perTest.push(() => proxy.close(0));
    return { listen: bound!, events, dial, proxy };
  }

  /** An app connection "to" `dst`: from its own loopback source, redirected to the proxy. */
  let nextSource = 10;
  function source(dial: Map<string, Address>, dst: Address): string {
    const from = `127.0.0.${nextSource++}`;
    dial.set(from, dst);
    return from;
  }

  function get(
    proxy: Address,
    localAddress: string,
    agent: Agent,
    path: string,
  ): Promise<{ status: number; headers: IncomingHttpHeaders; body: string }> {
    return new Promise((resolve, reject) => {
      const req = httpRequest(
        {
          host: proxy.host,
          port: proxy.port,
          localAddress,
          agent,
          path,
          headers: { host: 'web.emojivoto.svc:80' },
        },
        (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (body += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        },
      );
      req.on('error', reject);
      req.end();
    });
  }

  it('balances the HTTP/1.1 requests of one kept-alive connection per request (several endpoints serve them), each seeing the verified client identity', async function () {
    const resolver = new TestResolver();
    resolver.answers.set(formatAddress(SERVICE), {
      kind: 'endpoints',
      endpoints: backends.map((b) => meshed(b)),
    });
    const p = await start(resolver);
    const from = source(p.dial, SERVICE);
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    perTest.push(async () => agent.destroy());
    const served = new Set<string>();
    // One request at a time: P2C takes the cheaper of two random endpoints, so the fastest
    // wins every draw it is in, and the draw without it goes to another.
    for (let i = 0; i < 60 && served.size < 2; i++) {
      const r = await get(p.listen, from, agent, `/r${i}`);
      assert.equal(r.status, 200);
      served.add(r.body);
    }
    assert.ok(served.size >= 2, `one connection's requests all went to ${[...served].join()}`);
    for (const b of backends) for (const s of b.seen) assert.equal(s.clientId, VOTE);
    const requests = p.events.filter((e) => e.type === 'request');
    assert.ok(requests.length >= 1);
    for (const e of requests) {
      assert.equal(
        e.type === 'request' &&
          e.tls &&
          e.peerIdentity === WEB &&
          e.dst === '10.96.0.10:80' &&
          e.status === 200,
        true,
      );
    }
  });

  it('balances concurrent HTTP/2 streams (gRPC-style prior knowledge) on one connection across every endpoint', async function () {
    const resolver = new TestResolver();
    resolver.answers.set(formatAddress(SERVICE), {
      kind: 'endpoints',
      endpoints: backends.map((b) => meshed(b)),
    });
    const p = await start(resolver);
    const from = source(p.dial, SERVICE);
    const session = http2Connect(`http://${formatAddress(p.listen)}`, {
      createConnection: () =>
        netConnect({ host: p.listen.host, port: p.listen.port, localAddress: from }),
    });
    perTest.push(async () => void session.destroy());
    const served = new Set<string>();
    const call = async (i: number): Promise<void> => {
      const stream = session.request({ ':path': `/s${i}`, ':authority': 'web.emojivoto.svc:80' });
      stream.end();
      let body = '';
      stream.setEncoding('utf8');
      stream.on('data', (c: string) => (body += c));
      const [headers] = (await once(stream, 'response')) as [Record<string, unknown>];
      await once(stream, 'end');
      assert.equal(headers[':status'], 200);
      served.add(body);
    };
    // Calls in flight together, as a gRPC client's: requests in flight count in P2C's cost.
    for (let round = 0; round < 5 && served.size < 3; round++) {
      await Promise.all(Array.from({ length: 30 }, (_, i) => call(round * 30 + i)));
    }
    assert.deepEqual([...served].sort(), ['web-0', 'web-1', 'web-2']);
  });

  it('sends no new request to an endpoint once the resolver reports it removed', async function () {
    const resolver = new TestResolver();
    resolver.answers.set(formatAddress(SERVICE), {
      kind: 'endpoints',
      endpoints: backends.map((b) => meshed(b)),
    });
    const p = await start(resolver);
    const from = source(p.dial, SERVICE);
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    perTest.push(async () => agent.destroy());
    await get(p.listen, from, agent, '/warm');
    resolver.push(SERVICE, {
      kind: 'endpoints',
      endpoints: [meshed(backends[0]!), meshed(backends[1]!)],
    });
    backends[2]!.seen.length = 0;
    for (let i = 0; i < 30; i++)
      assert.equal((await get(p.listen, from, agent, `/after${i}`)).status, 200);
    assert.equal(backends[2]!.seen.length, 0);
    assert.ok(backends[0]!.seen.length > 0 && backends[1]!.seen.length > 0);
  });

  it('refuses an endpoint presenting another identity than the destination service gave (502 identity-mismatch, nothing reaches it)', async function () {
    const resolver = new TestResolver();
    resolver.answers.set(formatAddress(SERVICE), {
      kind: 'endpoints',
      endpoints: [meshed(impostor, WEB)],
    });
    const p = await start(resolver);
    const agent = new Agent({ keepAlive: false });
    const r = await get(p.listen, source(p.dial, SERVICE), agent, '/secret');
    assert.equal(r.status, 502);
    assert.equal(r.headers['l5d-proxy-error'], 'identity-mismatch');
    assert.match(r.body, /is not the expected identity/);
    assert.equal(impostor.seen.length, 0);
  });

  it("carries a non-HTTP connection to a meshed endpoint's inbound port with Linkerd's transport header naming the target port", async function () {
    const resolver = new TestResolver();
    resolver.answers.set(formatAddress(TCP_SERVICE), {
      kind: 'endpoints',
      endpoints: [
        {
          address: { host: '127.0.0.1', port: opaqueApp.port },
          meshed: true,
          identity: WEB,
          inboundPort: opaqueApp.inbound.port,
        },
      ],
    });
    const p = await start(resolver);
    const reply = await rawExchange(p.listen, source(p.dial, TCP_SERVICE), 'MARKER-opaque\n');
    assert.equal(reply, 'opaque-app got MARKER-opaque\n');
    const opened = p.events.find((e) => e.type === 'opened');
    assert.equal(opened?.type === 'opened' && opened.peerIdentity, WEB);
    assert.deepEqual(opened?.target, opaqueApp.inbound);
  });

  it('passes an unknown destination through as plain TCP at once, and says so', async function () {
    const resolver = new TestResolver();
    const p = await start(resolver);
    const reply = await rawExchange(p.listen, source(p.dial, echo), 'plain hello');
    assert.equal(reply, 'plain hello');
    const e = p.events.find((x) => x.type === 'passthrough');
    assert.equal(e?.type === 'passthrough' && e.reason, 'unknown');
  });

  it('passes a destination through when the destination service does not answer within the bound', async function () {
    const resolver = new TestResolver();
    resolver.silent = true;
    const p = await start(resolver, { resolveTimeoutMs: 200 });
    const started = Date.now();
    assert.equal(await rawExchange(p.listen, source(p.dial, echo), 'late'), 'late');
    assert.ok(Date.now() - started < 5_000);
    const e = p.events.find((x) => x.type === 'passthrough');
    assert.equal(e?.type === 'passthrough' && e.reason, 'timeout');
  });

  it('keeps the last answer while the destination service is unreachable, passes new unknowns through, and reports it', async function () {
    const resolver = new TestResolver();
    resolver.answers.set(formatAddress(SERVICE), {
      kind: 'endpoints',
      endpoints: [meshed(backends[0]!)],
    });
    const p = await start(resolver);
    const from = source(p.dial, SERVICE);
    const agent = new Agent({ keepAlive: false });
    assert.equal((await get(p.listen, from, agent, '/before')).body, 'web-0');
    resolver.down = 'connect ECONNREFUSED 10.96.0.5:8086';
    resolver.broadcast({ kind: 'unavailable', message: resolver.down });
    const lost = p.events.find((e) => e.type === 'discovery');
    assert.equal(lost?.type === 'discovery' && lost.available, false);
    assert.equal((await get(p.listen, source(p.dial, SERVICE), agent, '/during')).body, 'web-0');
    assert.equal(backends[0]!.seen.at(-1)?.clientId, VOTE);
    assert.equal(await rawExchange(p.listen, source(p.dial, echo), 'new one'), 'new one');
    const e = p.events.find((x) => x.type === 'passthrough');
    assert.equal(e?.type === 'passthrough' && e.reason, 'unavailable');
  });

  it("refuses the app's connections beyond the listener's cap (reset as they arrive, counted as total, one log line), and takes new ones once one has closed", async function () {
    const logs: { msg: string; hit?: string; limit?: number; refused?: number }[] = [];
    const logger = createLogger({
      level: 'warn',
      destination: { write: (line: string) => void logs.push(JSON.parse(line) as never) },
    });
    const cap = 3;
    // Nothing known: every connection passes through to the echo server and stays open.
    const p = await start(
      new TestResolver(),
      {},
      { logger, limits: { connections: { total: cap, perPeer: cap } } },
    );
    const budget = p.proxy.connections[0]!;
    const from = source(p.dial, echo);
    const open = await Promise.all(Array.from({ length: cap }, () => openFrom(p.listen, from)));
    for (const [i, c] of open.entries()) assert.equal(await echoed(c.socket, `held ${i}`), true);
    assert.equal(budget.inUse, cap);
    // The app goes on opening connections: each is reset, none reaches the echo server.
    const beyond = [await openFrom(p.listen, from), await openFrom(p.listen, from)];
    for (const b of beyond) assert.equal(await b.closed, 'reset');
    assert.equal(budget.inUse, cap);
    const refused = p.events.filter((e) => e.type === 'refused');
    assert.deepEqual(refused, [
      { type: 'refused', listener: formatAddress(p.listen), reason: 'total' },
      { type: 'refused', listener: formatAddress(p.listen), reason: 'total' },
    ]);
    // Two refusals, one line (the next one for this listener comes 10 s later at the soonest).
    assert.deepEqual(
      logs.map((l) => [l.msg, l.hit, l.limit, l.refused]),
      [['outbound listener refusing connections: limit reached', 'total', cap, 1]],
    );
    const registry = createRegistry();
    const traffic = registerTrafficMetrics(registry);
    for (const e of p.events) traffic.outbound(e);
    const text = await registry.metrics();
    assert.ok(
      text.includes(
        `meshid_proxy_outbound_connections_refused_total{listener="${formatAddress(p.listen)}",reason="total"} 2`,
      ),
      text,
    );
    open[0]!.socket.destroy();
    await waitFor('a slot freed', () => (budget.inUse === cap - 1 ? true : undefined));
    const again = await openFrom(p.listen, from);
    open.push(again);
    assert.equal(await echoed(again.socket, 'again'), true);
    for (const c of open) c.socket.destroy();
    await waitFor('every slot given back', () => (budget.inUse === 0 ? true : undefined));
  });

  it('gives back the slot of a connection closed while its destination is being looked up, exactly once', async function () {
    const resolver = new TestResolver();
    resolver.silent = true;
    const cap = 8;
    // The lookup waits for the resolver's first answer (bounded at 30 s here): the test answers.
    const p = await start(
      resolver,
      { resolveTimeoutMs: 30_000 },
      { limits: { connections: { total: cap, perPeer: cap } } },
    );
    const budget = p.proxy.connections[0]!;
    const from = source(p.dial, echo);
    const open = await Promise.all(Array.from({ length: 6 }, () => openFrom(p.listen, from)));
    await waitFor('six connections held', () => (budget.inUse === 6 ? true : undefined));
    // Four leave mid-lookup, two with a reset, two closed. A connection waiting for its lookup
    // is not read (its first bytes stay in the kernel until it is routed), so the proxy may see
    // them leave only when it routes them; either way each slot comes back once.
    open[0]!.socket.resetAndDestroy();
    open[1]!.socket.resetAndDestroy();
    open[2]!.socket.destroy();
    open[3]!.socket.destroy();
    await Promise.all(open.slice(0, 4).map((c) => c.closed));
    resolver.push(echo, { kind: 'unknown' });
    // The two still open are passed through and served; the four are given back, and nothing
    // is given back twice (the two keep their slots).
    assert.equal(await echoed(open[4]!.socket, 'still here'), true);
    assert.equal(await echoed(open[5]!.socket, 'me too'), true);
    // Once the four are closed on the proxy's side too, each has given its slot back.
    await waitFor('the four slots back', () => (budget.inUse === 2 ? true : undefined));
    assert.equal(await echoed(open[4]!.socket, 'still served'), true);
    assert.equal(budget.inUse, 2);
    assert.equal(budget.heldBy(from), 2);
    open[4]!.socket.destroy();
    open[5]!.socket.destroy();
    await waitFor('every slot given back', () => (budget.inUse === 0 ? true : undefined));
    assert.equal(budget.heldBy(from), 0);
    assert.equal(budget.refused, 0);
  });

  it("also listens on [::1] at the same port (ip6tables' REDIRECT target): an IPv6 connection to an IPv6 ClusterIP is meshed alike", async function () {
    const service6: Address = { host: 'fd00:96::10', port: 80 };
    const resolver = new TestResolver();
    resolver.answers.set(formatAddress(service6), {
      kind: 'endpoints',
      endpoints: [meshed(backends[1]!)],
    });
    const p = await start(resolver);
    assert.equal(p.listen.host, '127.0.0.1');
    p.dial.set('::1', service6);
    const agent = new Agent({ keepAlive: false });
    const r = await get({ host: '::1', port: p.listen.port }, '::1', agent, '/v6');
    assert.equal(r.status, 200);
    assert.equal(r.body, 'web-1');
    assert.equal(backends[1]!.seen.at(-1)?.clientId, VOTE);
    const e = p.events.find((x) => x.type === 'request');
    assert.equal(e?.type === 'request' && e.dst, '[fd00:96::10]:80');
    // Dialled directly on [::1] (not redirected): closed, as on 127.0.0.1.
    p.dial.set('::1', { host: '::1', port: p.listen.port });
    const s = netConnect({ host: '::1', port: p.listen.port });
    s.on('error', () => undefined);
    s.resume();
    await once(s, 'close');
    assert.equal(p.events.filter((x) => x.type === 'passthrough').length, 0);
  });

  it('closes a connection that reached the listener without being redirected', async function () {
    const p = await start(new TestResolver());
    const from = source(p.dial, p.listen);
    const s = netConnect({ host: p.listen.host, port: p.listen.port, localAddress: from });
    s.on('error', () => undefined);
    s.resume();
    await once(s, 'close');
    assert.equal(p.events.length, 0);
  });
});

/** Writes `text`, half-closes, and reads the whole answer. */
async function rawExchange(proxy: Address, localAddress: string, text: string): Promise<string> {
  const s = netConnect({ host: proxy.host, port: proxy.port, localAddress });
  let got = '';
  s.setEncoding('utf8');
  s.on('data', (c: string) => (got += c));
  await once(s, 'connect');
  s.end(text);
  await once(s, 'close');
  return got;
}

/** Writes `text` on an open connection and waits for it to come back (the echo server). */
async function echoed(socket: Socket, text: string): Promise<boolean> {
  let got = '';
  const back = new Promise<boolean>((resolve) => {
    const onData = (c: Buffer): void => {
      got += c.toString();
      if (got === text) {
        socket.off('data', onData);
        resolve(true);
      }
    };
    socket.on('data', onData);
    socket.once('close', () => resolve(got === text));
  });
  socket.write(text);
  return back;
}
