/**
 * One address cannot hold an unbounded number of established Certify connections (issue 20):
 * a real `meshid ca` with `--certify-max-connections-per-peer 3`. Connections from 127.0.0.2
 * finish their TLS handshakes; the fourth is closed right after its handshake (the CA's HTTP/2
 * session never starts on it), counted as `per-peer` and logged once, while 127.0.0.1 and
 * 127.0.0.3 are still served; once one of 127.0.0.2's closes, it is admitted again.
 */
import { strict as assert } from 'node:assert';
import { readFile } from 'node:fs/promises';
import type { TLSSocket } from 'node:tls';
import {
  NO_RATE_LIMITS,
  adminGet,
  metricValue,
  startCaProcess,
  waitFor,
} from '../support/ca-process.js';
import type { CaProcess } from '../support/ca-process.js';
import { openFrom } from '../support/hostile-clients.js';
import type { TlsClient } from '../support/hostile-clients.js';
import { certificateFromCa } from '../support/proxy-process.js';
import { CA_IDENTITY, makeTestState } from '../support/state.js';
import type { TestState } from '../support/state.js';

const CAP = 3;

/**
 * Whether the CA served the connection: its HTTP/2 session starts by sending SETTINGS, which
 * only a connection the CA admitted after the handshake gets. `refused` when it closed first.
 */
function served(socket: TLSSocket): Promise<'served' | 'refused'> {
  if (socket.destroyed) return Promise.resolve('refused');
  return new Promise((resolve) => {
    socket.once('data', () => resolve('served'));
    socket.once('close', () => resolve('refused'));
  });
}

describe('meshid ca: established connections per client address (real process)', function () {
  this.timeout(60_000);
  let state: TestState;
  let ca: CaProcess;
  let tls: TlsClient;
  const open: TLSSocket[] = [];

  before(async () => {
    state = await makeTestState();
    ca = await startCaProcess([
      ...state.caArgs,
      '--workers',
      '1',
      '--certify-max-connections-per-peer',
      String(CAP),
      ...NO_RATE_LIMITS,
    ]);
    tls = {
      servername: CA_IDENTITY,
      ca: await readFile(state.anchorsFile, 'utf8'),
      ALPNProtocols: ['h2'],
    };
  });
  after(async () => {
    for (const s of open) s.destroy();
    await ca?.stop();
    await state?.cleanup();
  });

  async function connect(from: string): Promise<{ socket: TLSSocket; handshaken: boolean }> {
    const c = await openFrom(ca.address, from, tls);
    const socket = c.socket as TLSSocket;
    open.push(socket);
    // openFrom resolves on secureConnect, or on close when the handshake never finished.
    return { socket, handshaken: socket.alpnProtocol === 'h2' };
  }

  it("closes an address's connection beyond its share after the handshake, while other addresses are served", async () => {
    const held: TLSSocket[] = [];
    for (let i = 0; i < CAP; i++) {
      const c = await connect('127.0.0.2');
      assert.equal(c.handshaken, true);
      assert.equal(await served(c.socket), 'served', `connection ${i + 1} of ${CAP}`);
      held.push(c.socket);
    }
    const beyond = await connect('127.0.0.2');
    assert.equal(beyond.handshaken, true, 'the handshake itself is not refused');
    assert.equal(await served(beyond.socket), 'refused');

    // Another address is served meanwhile, as is the whole Certify call of a proxy on 127.0.0.1.
    const other = await connect('127.0.0.3');
    assert.equal(await served(other.socket), 'served');
    const cert = await certificateFromCa(state, ca.address, 'emojivoto', 'web');
    assert.match(cert.chainPem, /BEGIN CERTIFICATE/);

    const metrics = (await adminGet(ca.admin, '/metrics')).body;
    assert.equal(
      metricValue(metrics, 'meshid_certify_connections_refused_total', { reason: 'per-peer' }),
      1,
    );
    const warnings = ca.lines
      .map((l) => JSON.parse(l) as { msg?: string; address?: string; limit?: number })
      .filter((l) => l.msg?.startsWith('Certify connections refused after their handshake'));
    assert.deepEqual(
      warnings.map((w) => [w.address, w.limit]),
      [['127.0.0.2', CAP]],
    );

    // One of its connections closes: the address is admitted again.
    held[0]!.destroy();
    await waitFor('a connection of 127.0.0.2 admitted again', async () => {
      const again = await connect('127.0.0.2');
      return (await served(again.socket)) === 'served' ? true : undefined;
    });
  });
});
