import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import { createServer } from 'node:net';
import type { AddressInfo, Server } from 'node:net';
import { findPortOwner, listeningInodes } from '../../../cli/port-owner.js';

// Three rows of a /proc/net/tcp table: a listener on 127.0.0.1:8080 (inode 4242), a connection
// from port 8080 (state 01, not a listener) and a listener on 9990.
const TABLE = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:2706 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 100 0 0 10 0
`;

describe('cli/port-owner: who holds a busy port', () => {
  it('reads the listening socket of a port from the kernel table, not its connections', () => {
    assert.deepEqual(listeningInodes(TABLE, 8080), ['4242']);
    assert.deepEqual(listeningInodes(TABLE, 9990), ['4444']);
    assert.deepEqual(listeningInodes(TABLE, 50000), []);
    assert.deepEqual(listeningInodes('', 8080), []);
  });

  describe('on this host', () => {
    let server: Server;
    let port: number;
    before(async () => {
      server = createServer().listen(0, '127.0.0.1');
      await once(server, 'listening');
      port = (server.address() as AddressInfo).port;
    });
    after(() => server.close());

    it('finds the process listening on a port, with its command line', async () => {
      const owner = await findPortOwner(port);
      assert.equal(owner?.pid, process.pid);
      assert.ok(owner.command.length > 0 && owner.command.length <= 120, owner.command);
    });

    it('finds nobody on a port nobody listens on, and nothing without a /proc', async () => {
      server.close();
      await once(server, 'close');
      assert.equal(await findPortOwner(port), undefined);
      assert.equal(await findPortOwner(port, '/nonexistent-proc'), undefined);
    });
  });
});
