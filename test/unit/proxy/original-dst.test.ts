import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { isMeshidError } from '../../../core/index.js';
import { loadOriginalDestination } from '../../../proxy/transparent/original-dst.js';
import { NetnsLab } from '../../support/netns.js';
import type { NetnsPod } from '../../support/netns.js';

const ECHO = fileURLToPath(new URL('./fixtures/original-dst-echo.ts', import.meta.url));
/** A raw TCP client: prints what the server sent. */
const DIAL = `
const c = require('node:net').connect(Number(process.argv[2]), process.argv[1]);
let out = '';
c.on('data', (d) => (out += d));
c.on('end', () => process.stdout.write(out));
c.on('error', (e) => { console.error(e.code); process.exit(3); });
`;

describe('original destination of a redirected connection (the N-API addon)', function () {
  this.timeout(60_000);
  let lab: NetnsLab;
  let client: NetnsPod;
  let server: NetnsPod;

  before(async () => {
    lab = await NetnsLab.create({ tag: 'odst' });
    client = await lab.addPod('client');
    server = await lab.addPod('server');
    for (const [bin, to] of [
      ['iptables', '4143'],
      ['ip6tables', '4143'],
    ] as const) {
      const r = await server.run(bin, [
        '-t',
        'nat',
        '-A',
        'PREROUTING',
        '-p',
        'tcp',
        '--dport',
        '8080',
        '-j',
        'REDIRECT',
        '--to-ports',
        to,
      ]);
      assert.equal(r.code, 0, r.stderr);
    }
    const echo = server.spawn(process.execPath, ['--import', 'tsx', ECHO, '4143']);
    const [line] = (await once(echo.stdout!, 'data')) as [Buffer];
    assert.match(line.toString(), /listening/);
  });
  after(async () => {
    await lab.destroy();
  });

  async function dial(host: string, port: number): Promise<unknown> {
    const r = await client.run(process.execPath, ['-e', DIAL, host, String(port)]);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout);
  }

  it('reads the IPv4 address and port the client dialled before REDIRECT', async () => {
    assert.deepEqual(await dial(server.ip, 8080), { address: server.ip, port: 8080, family: 4 });
  });

  it('reads the IPv6 one (IP6T_SO_ORIGINAL_DST)', async () => {
    assert.deepEqual(await dial(server.ip6, 8080), { address: server.ip6, port: 8080, family: 6 });
  });

  it('gives a connection that was not redirected its own destination', async () => {
    assert.deepEqual(await dial(server.ip, 4143), { address: server.ip, port: 4143, family: 4 });
  });

  it('refuses with ERR_TRANSPARENT_UNAVAILABLE, saying how to build it, when the addon cannot load', () => {
    assert.throws(
      () => loadOriginalDestination('/nonexistent/original_dst.node'),
      (err: unknown) =>
        isMeshidError(err) &&
        err.code === 'ERR_TRANSPARENT_UNAVAILABLE' &&
        /did not load from \/nonexistent\/original_dst\.node/.test(err.message) &&
        /npm run build:native/.test(err.message),
    );
  });
});
