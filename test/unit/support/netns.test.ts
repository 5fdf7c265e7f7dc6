import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { NetnsLab } from '../../support/netns.js';

/** A one-line TCP echo of the peer's address, as a pod's app, in plain node. */
const WHO_SERVER = `
const net = require('node:net');
const s = net.createServer((c) => c.end(c.remoteAddress + '\\n'));
s.listen(Number(process.argv[1]), process.argv[2], () => console.log('listening'));
`;
const DIAL = `
const net = require('node:net');
const c = net.connect(Number(process.argv[2]), process.argv[1]);
let out = '';
c.on('data', (d) => (out += d));
c.on('end', () => process.stdout.write(out));
c.on('error', (e) => { console.error(e.code); process.exit(3); });
`;

describe('netns test harness (pods as network namespaces)', function () {
  this.timeout(60_000);
  let lab: NetnsLab;
  before(async () => {
    lab = await NetnsLab.create({ tag: 'harness' });
  });
  after(async () => {
    await lab.destroy();
  });

  it('gives each pod its own address, reachable from another pod, with its own loopback', async () => {
    const a = await lab.addPod('a');
    const b = await lab.addPod('b');
    assert.notEqual(a.ip, b.ip);
    const server = b.spawn(process.execPath, ['-e', WHO_SERVER, '8080', '::']);
    await once(server.stdout!, 'data');
    const seen = await a.run(process.execPath, ['-e', DIAL, b.ip, '8080']);
    assert.equal(seen.code, 0, seen.stderr);
    assert.equal(seen.stdout.trim(), `::ffff:${a.ip}`, 'the server sees the client pod address');
    // b's loopback is b's own: a's 127.0.0.1:8080 has nothing listening
    const refused = await a.run(process.execPath, ['-e', DIAL, '127.0.0.1', '8080']);
    assert.equal(refused.code, 3);
    assert.match(refused.stderr, /ECONNREFUSED/);
    const v6 = await a.run(process.execPath, ['-e', DIAL, b.ip6, '8080']);
    assert.equal(v6.stdout.trim(), a.ip6);
  });

  it('lets pods reach a listener of the test process on hostIp', async () => {
    const pod = await lab.addPod('c');
    const host = createServer((c) => c.end(`${c.remoteAddress}\n`));
    host.listen(0, lab.hostIp);
    await once(host, 'listening');
    try {
      const { port } = host.address() as AddressInfo;
      const seen = await pod.run(process.execPath, ['-e', DIAL, lab.hostIp, String(port)]);
      assert.equal(seen.stdout.trim(), pod.ip);
    } finally {
      host.close();
    }
  });

  it('runs a command as another UID', async () => {
    const pod = await lab.addPod('d');
    const r = await pod.run('id', ['-u'], { uid: 2102 });
    assert.equal(r.stdout.trim(), '2102');
  });

  it('removes its namespaces and kills what it started, on destroy', async () => {
    const other = await NetnsLab.create({ tag: 'gone' });
    const pod = await other.addPod('x');
    const sleeper = pod.spawn('sleep', ['600']);
    assert.ok(existsSync(`/var/run/netns/${pod.ns}`));
    await other.destroy();
    assert.ok(sleeper.signalCode !== null || sleeper.exitCode !== null, 'the child was killed');
    assert.ok(!existsSync(`/var/run/netns/${pod.ns}`), 'the namespace is gone');
  });
});
