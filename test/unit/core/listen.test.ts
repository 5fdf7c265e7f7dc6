/**
 * core/listen.ts, the one rule for every meshid listener: `[::]` is one socket for both
 * families, `0.0.0.0` is IPv4 only, a kernel without IPv6 gets `0.0.0.0` and one log line, and
 * every other listen error is the caller's. Real sockets on this host's loopback addresses.
 */
import { strict as assert } from 'node:assert';
import { connect, createServer } from 'node:net';
import type { ListenOptions, Server, Socket } from 'node:net';
import { listenOn } from '../../../core/index.js';
import { captureLogs } from '../../support/log-capture.js';

/** Connects to `host:port`; resolves with what the server said, or the connect error's code. */
function dial(host: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const s: Socket = connect({ host, port });
    let got = '';
    s.on('data', (d: Buffer) => (got += d.toString()));
    s.on('end', () => resolve(got));
    s.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

/** A server that tells each client the address it was reached at. */
function echoLocal(): Server {
  return createServer((c) => c.end(`reached ${c.localAddress}`));
}

/**
 * A server on a host whose kernel has no IPv6: binding `::` fails as `socket(AF_INET6)` does
 * there (EAFNOSUPPORT, syscall listen); everything else binds for real.
 */
function withoutIpv6(server: Server, code = 'EAFNOSUPPORT'): Server {
  const real = server.listen.bind(server) as (o: ListenOptions, cb?: () => void) => Server;
  server.listen = ((options: ListenOptions, cb?: () => void): Server => {
    if (options.host !== '::') return real(options, cb);
    const err = Object.assign(new Error(`listen ${code}: address family not supported :::0`), {
      code,
      syscall: 'listen',
    });
    process.nextTick(() => server.emit('error', err));
    return server;
  }) as Server['listen'];
  return server;
}

describe('listenOn: one meaning of "all addresses" for every listener', function () {
  this.timeout(10_000);
  const servers: Server[] = [];
  const track = (s: Server): Server => (servers.push(s), s);
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
  });

  it('[::] is one socket that takes IPv4 (as IPv4-mapped) and IPv6 connections', async () => {
    const server = track(echoLocal());
    const bound = await listenOn(server, { host: '::', port: 0 });
    assert.equal(bound.host, '::');
    assert.ok(bound.port > 0);
    assert.equal(await dial('127.0.0.1', bound.port), 'reached ::ffff:127.0.0.1');
    assert.equal(await dial('::1', bound.port), 'reached ::1');
  });

  it('0.0.0.0 written out is IPv4 only: ::1 is refused', async () => {
    const server = track(echoLocal());
    const bound = await listenOn(server, { host: '0.0.0.0', port: 0 });
    assert.equal(bound.host, '0.0.0.0');
    assert.equal(await dial('127.0.0.1', bound.port), 'reached 127.0.0.1');
    assert.equal(await dial('::1', bound.port), 'ECONNREFUSED');
  });

  it('a specific address is bound as written (::1 takes no IPv4)', async () => {
    const server = track(echoLocal());
    const bound = await listenOn(server, { host: '::1', port: 0 });
    assert.equal(bound.host, '::1');
    assert.equal(await dial('::1', bound.port), 'reached ::1');
    assert.equal(await dial('127.0.0.1', bound.port), 'ECONNREFUSED');
  });

  for (const code of ['EAFNOSUPPORT', 'EADDRNOTAVAIL']) {
    it(`a kernel without IPv6 (${code} for [::]): binds 0.0.0.0 and says so in one warning naming the listener`, async () => {
      const { logger, lines } = captureLogs();
      const server = track(withoutIpv6(echoLocal(), code));
      const bound = await listenOn(server, { host: '::', port: 0 }, { logger, name: 'admin' });
      assert.equal(bound.host, '0.0.0.0');
      assert.equal(await dial('127.0.0.1', bound.port), 'reached 127.0.0.1');
      const logged = lines();
      assert.equal(logged.length, 1, JSON.stringify(logged));
      assert.equal(logged[0]!['level'], 'warn');
      assert.equal(logged[0]!['msg'], 'no IPv6 on this host: listening on IPv4 addresses only');
      assert.equal(logged[0]!['listener'], 'admin');
      assert.equal(logged[0]!['err'], code);
      assert.equal(logged[0]!['asked'], '[::]:0');
      assert.equal(logged[0]!['address'], '0.0.0.0:0');
    });
  }

  it('a busy port on [::] is the caller’s error (EADDRINUSE, syscall listen), never a silent IPv4 fallback', async () => {
    const holder = track(echoLocal());
    const held = await listenOn(holder, { host: '::', port: 0 });
    const { logger, lines } = captureLogs();
    const second = track(createServer());
    await assert.rejects(
      listenOn(second, { host: '::', port: held.port }, { logger, name: 'inbound' }),
      (err: NodeJS.ErrnoException) => err.code === 'EADDRINUSE' && err.syscall === 'listen',
    );
    assert.equal(second.listening, false);
    assert.deepEqual(lines(), []);
  });

  it('an address this host lacks is the caller’s error even where IPv6 is missing: only [::] falls back', async () => {
    const server = track(withoutIpv6(echoLocal()));
    await assert.rejects(
      listenOn(server, { host: '192.0.2.1', port: 0 }),
      (err: NodeJS.ErrnoException) => err.code === 'EADDRNOTAVAIL',
    );
    assert.equal(server.listening, false);
    // The same server can still be bound afterwards (as the fallback does).
    const bound = await listenOn(server, { host: '127.0.0.1', port: 0 });
    assert.equal(await dial('127.0.0.1', bound.port), 'reached 127.0.0.1');
  });
});
