/**
 * The bytes of a real TLS 1.3 ClientHello, as node's own client sends it, for tests that hold a
 * server's handshake slot with a client that sent its hello and then stalls (a connection that
 * sent nothing holds no slot: identity-ca/server/handshake-gate.ts offers a connection only once
 * its ClientHello has arrived).
 *
 * @example
 * ```ts
 * const hello = await captureClientHello();
 * const raw = net.connect(port, '127.0.0.1', () => raw.write(hello)); // then never answers
 * ```
 */
import { once } from 'node:events';
import { createServer } from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';

export async function captureClientHello(): Promise<Buffer> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const got = once(server, 'connection') as Promise<[Socket]>;
  const client = tlsConnect({
    host: '127.0.0.1',
    port: (server.address() as AddressInfo).port,
    servername: 'identity',
    minVersion: 'TLSv1.3',
  });
  client.on('error', () => undefined);
  const [socket] = await got;
  const [hello] = (await once(socket, 'data')) as [Buffer];
  client.destroy();
  socket.destroy();
  server.close();
  return hello;
}
