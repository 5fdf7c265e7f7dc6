import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import { createServer } from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import { connect } from 'node:tls';
import { peekClientHello } from '../../../proxy/transparent/client-hello.js';

/** The first bytes a real Node TLS client sends, with `servername` as its SNI (or none). */
async function clientHello(servername: string | undefined): Promise<Buffer> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const got = new Promise<Buffer>((resolve) =>
    server.once('connection', (s: Socket) => {
      let buf = Buffer.alloc(0);
      s.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length >= 5 && buf.length >= 5 + buf.readUInt16BE(3)) {
          s.destroy();
          resolve(buf);
        }
      });
    }),
  );
  const c = connect({
    host: '127.0.0.1',
    port: (server.address() as AddressInfo).port,
    ...(servername === undefined ? {} : { servername }),
  });
  c.on('error', () => undefined);
  try {
    return await got;
  } finally {
    c.destroy();
    server.close();
  }
}

describe('transparent inbound: ClientHello peek', () => {
  const id = 'web.emojivoto.serviceaccount.identity.linkerd.cluster.local';

  it('reads the SNI of a real ClientHello', async () => {
    assert.deepEqual(peekClientHello(await clientHello(id)), { kind: 'tls', sni: id });
  });

  it('says so when a ClientHello has no SNI', async () => {
    assert.deepEqual(peekClientHello(await clientHello(undefined)), {
      kind: 'tls',
      sni: undefined,
    });
  });

  it('asks for the rest of a record cut short, as many bytes as its header says', async () => {
    const hello = await clientHello(id);
    assert.deepEqual(peekClientHello(hello.subarray(0, 3)), { kind: 'need-more', need: 5 });
    assert.deepEqual(peekClientHello(hello.subarray(0, 40)), {
      kind: 'need-more',
      need: hello.length,
    });
  });

  it('tells plaintext and other records apart, and never throws on garbage', () => {
    assert.deepEqual(peekClientHello(Buffer.from('GET / HTTP/1.1\r\n')), { kind: 'not-tls' });
    assert.deepEqual(peekClientHello(Buffer.alloc(0)), { kind: 'not-tls' });
    // a handshake record whose message is a ServerHello, and one that lies about its lengths
    assert.deepEqual(peekClientHello(Buffer.from([0x16, 3, 1, 0, 4, 2, 0, 0, 0])), {
      kind: 'malformed',
    });
    const lying = Buffer.from([0x16, 3, 1, 0, 8, 1, 0, 0, 0xff, 3, 3, 0, 0]);
    assert.deepEqual(peekClientHello(lying), { kind: 'malformed' });
    for (let i = 0; i < 2000; i++) {
      const junk = Buffer.from(
        Array.from({ length: 5 + (i % 200) }, (_, j) => (i * 31 + j * 7) & 0xff),
      );
      junk[0] = 0x16;
      junk[1] = 3;
      junk.writeUInt16BE(junk.length - 5, 3);
      const r = peekClientHello(junk);
      assert.ok(['tls', 'malformed'].includes(r.kind));
    }
  });
});
