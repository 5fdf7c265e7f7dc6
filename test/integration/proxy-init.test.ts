/**
 * `meshid proxy-init` as the injected init container runs it (the real process, bin/meshid.js,
 * so `npm run build` first), inside a pod network namespace with real iptables, both back ends:
 * the rules it writes, that a second run leaves exactly the same, that traffic goes where they
 * say, and the refusal without NET_ADMIN.
 */
import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { MESHID_BIN } from '../support/ca-process.js';
import { NetnsLab } from '../support/netns.js';
import type { NetnsPod } from '../support/netns.js';

const ECHO = fileURLToPath(new URL('../unit/proxy/fixtures/original-dst-echo.ts', import.meta.url));
/** A raw TCP client: prints what the server sent, or the error code with exit 3. */
const DIAL = `
const c = require('node:net').connect(Number(process.argv[2]), process.argv[1]);
let out = '';
c.on('data', (d) => (out += d));
c.on('end', () => process.stdout.write(out));
c.on('error', (e) => { console.error(e.code); process.exit(3); });
`;
/** What the injector passes (webhooks/inject.ts), with a skipped port and subnet of the test. */
const INIT_ARGS = [
  'proxy-init',
  '--skip-inbound-ports',
  '2222',
  '--skip-outbound-ports',
  '5432',
  '--skip-subnets',
  '10.99.0.0/16,fd99::/16',
];

/** The nat table as iptables-save prints it, without its comments and counters. */
async function natRules(pod: NetnsPod, save: string): Promise<string> {
  const r = await pod.run(save, ['-t', 'nat']);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .map((l) => l.replace(/\[\d+:\d+\]/, '[0:0]'))
    .join('\n');
}

/** Dials `host:port` from pod `from` (as `uid` when given): what the server sent, or `error <code>`. */
async function dial(from: NetnsPod, host: string, port: number, uid?: number): Promise<string> {
  const r = await from.run(
    process.execPath,
    ['-e', DIAL, host, String(port)],
    uid === undefined ? {} : { uid },
  );
  return r.code === 0 ? r.stdout : `error ${r.stderr.trim()}`;
}

/** A plain listener on both families that answers `text` and closes. */
function answering(text: string, port: number): string {
  return `require('node:net').createServer((c) => c.end(${JSON.stringify(text)})).listen(${port}, '::', () => console.log('up'))`;
}

async function proxyInit(pod: NetnsPod, args: readonly string[]): Promise<void> {
  const r = await pod.run(process.execPath, [MESHID_BIN, ...args, '--log-level', 'warn']);
  assert.equal(r.code, 0, `proxy-init failed: ${r.stderr}`);
}

describe('meshid proxy-init in a pod network namespace (real iptables)', function () {
  this.timeout(120_000);
  let lab: NetnsLab;
  before(async () => {
    lab = await NetnsLab.create({ tag: 'init' });
  });
  after(async () => {
    await lab.destroy();
  });

  for (const mode of ['nft', 'legacy'] as const) {
    it(`writes the chains with iptables-${mode}, and a second run leaves identical rules (IPv4 and IPv6)`, async () => {
      const pod = await lab.addPod(`idem${mode}`);
      await proxyInit(pod, [...INIT_ARGS, '--iptables-mode', mode]);
      const first4 = await natRules(pod, `iptables-${mode}-save`);
      const first6 = await natRules(pod, `ip6tables-${mode}-save`);
      assert.match(first4, /^:MESHID_PROXY_INIT_REDIRECT /m);
      assert.match(
        first4,
        /^-A PREROUTING -p tcp .*-j MESHID_PROXY_INIT_REDIRECT$/m,
        'inbound hooked from PREROUTING',
      );
      assert.match(first4, /^-A OUTPUT -p tcp .*-j MESHID_PROXY_INIT_OUTPUT$/m);
      assert.match(first4, /--dports 2222,4143,4191 .*-j RETURN/);
      assert.match(first4, /--uid-owner 2102 .*-j RETURN/);
      assert.match(first4, /-d 10\.99\.0\.0\/16 .*-j RETURN/);
      assert.match(first4, /REDIRECT --to-ports 4143/);
      assert.match(first4, /REDIRECT --to-ports 4140/);
      assert.match(first6, /REDIRECT --to-ports 4143/);
      assert.doesNotMatch(first6, /10\.99/, 'an IPv4 subnet is not written to ip6tables');
      assert.match(first6, /-d fd99::\/16 .*-j RETURN/);
      assert.doesNotMatch(first4, /fd99/, 'an IPv6 subnet is not written to iptables');
      assert.match(first6, /^-A OUTPUT -p tcp .*-j MESHID_PROXY_INIT_OUTPUT$/m);
      assert.match(first6, /--uid-owner 2102 .*-j RETURN/);
      assert.match(first6, /REDIRECT --to-ports 4140/);

      await proxyInit(pod, [...INIT_ARGS, '--iptables-mode', mode]);
      assert.equal(await natRules(pod, `iptables-${mode}-save`), first4);
      assert.equal(await natRules(pod, `ip6tables-${mode}-save`), first6);
      // The other back end was left alone.
      const other = mode === 'nft' ? 'legacy' : 'nft';
      assert.doesNotMatch(await natRules(pod, `iptables-${other}-save`), /MESHID/);
    });
  }

  it('detects the back end already holding rules when left on auto', async () => {
    const pod = await lab.addPod('auto');
    const r = await pod.run('iptables-legacy', ['-t', 'nat', '-A', 'POSTROUTING', '-j', 'RETURN']);
    assert.equal(r.code, 0, r.stderr);
    await proxyInit(pod, INIT_ARGS);
    assert.match(await natRules(pod, 'iptables-legacy-save'), /MESHID_PROXY_INIT_OUTPUT/);
    assert.doesNotMatch(await natRules(pod, 'iptables-nft-save'), /MESHID/);
  });

  it('sends inbound and outbound TCP where the rules say', async () => {
    const server = await lab.addPod('server');
    const peer = await lab.addPod('peer');
    await proxyInit(server, INIT_ARGS);
    // Stand-ins for the proxy's listeners: each answers with the connection's original
    // destination. A plain listener on the peer answers "peer".
    for (const port of ['4143', '4140']) {
      const echo = server.spawn(process.execPath, ['--import', 'tsx', ECHO, port]);
      await once(echo.stdout!, 'data');
    }
    const plain = peer.spawn(process.execPath, ['-e', answering('peer', 5432)]);
    await once(plain.stdout!, 'data');

    // inbound: an app port goes to 4143 with its original destination; skipped ones do not
    assert.deepEqual(JSON.parse(await dial(peer, server.ip, 8080)), {
      address: server.ip,
      port: 8080,
      family: 4,
    });
    assert.equal(await dial(peer, server.ip, 2222), 'error ECONNREFUSED', 'skip-inbound-ports');
    assert.equal(await dial(peer, server.ip, 4191), 'error ECONNREFUSED', 'the admin port');
    // outbound: the app's connection goes to 4140, the proxy's UID's does not
    assert.deepEqual(JSON.parse(await dial(server, peer.ip, 5432 + 1)), {
      address: peer.ip,
      port: 5433,
      family: 4,
    });
    assert.equal(await dial(server, peer.ip, 5432), 'peer', 'skip-outbound-ports');
    assert.equal(
      await dial(server, peer.ip, 5433, 2102),
      'error ECONNREFUSED',
      'the proxy UID goes out directly',
    );
    assert.equal(await dial(server, '127.0.0.1', 8080), 'error ECONNREFUSED', 'loopback');
  });

  it('sends IPv6 inbound and outbound TCP where the ip6tables rules say (skipped ports and subnets, the proxy UID and ::1 exempt)', async () => {
    const server = await lab.addPod('server6');
    const peer = await lab.addPod('peer6');
    const skipped = await lab.addPod('skipped6');
    await proxyInit(server, [...INIT_ARGS.slice(0, -1), `10.99.0.0/16,${skipped.ip6}/128`]);
    for (const port of ['4143', '4140']) {
      const echo = server.spawn(process.execPath, ['--import', 'tsx', ECHO, port]);
      await once(echo.stdout!, 'data');
    }
    const listeners = [
      peer.spawn(process.execPath, ['-e', answering('peer', 5432)]),
      skipped.spawn(process.execPath, ['-e', answering('skipped', 5433)]),
    ];
    await Promise.all(listeners.map((l) => once(l.stdout!, 'data')));

    // inbound over IPv6: an app port goes to 4143 with its original destination (IP6T_SO_ORIGINAL_DST)
    assert.deepEqual(JSON.parse(await dial(peer, server.ip6, 8080)), {
      address: server.ip6,
      port: 8080,
      family: 6,
    });
    assert.equal(await dial(peer, server.ip6, 2222), 'error ECONNREFUSED', 'skip-inbound-ports');
    // outbound over IPv6: to [::1]:4140 with its original destination
    assert.deepEqual(JSON.parse(await dial(server, peer.ip6, 5433)), {
      address: peer.ip6,
      port: 5433,
      family: 6,
    });
    assert.equal(await dial(server, peer.ip6, 5432), 'peer', 'skip-outbound-ports');
    assert.equal(await dial(server, skipped.ip6, 5433), 'skipped', 'an IPv6 skipped subnet');
    assert.equal(
      await dial(server, peer.ip6, 5433, 2102),
      'error ECONNREFUSED',
      'the proxy UID goes out directly',
    );
    assert.equal(await dial(server, '::1', 8080), 'error ECONNREFUSED', 'loopback ::1');
  });

  it('without NET_ADMIN, fails with ERR_PROXY_INIT naming the capability and changes nothing', async () => {
    const pod = await lab.addPod('nocap');
    const r = await pod.run('capsh', [
      '--drop=cap_net_admin',
      '--',
      '-c',
      `exec "${process.execPath}" "${MESHID_BIN}" proxy-init`,
    ]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /missing: NET_ADMIN\b/);
    assert.match(r.stderr, /capabilities\.add: \[NET_ADMIN, NET_RAW\]/);
    assert.match(r.stderr, /\[ERR_PROXY_INIT\]/);
    assert.doesNotMatch(await natRules(pod, 'iptables-nft-save'), /MESHID/);
    assert.doesNotMatch(await natRules(pod, 'iptables-legacy-save'), /MESHID/);
  });

  it('without the iptables binary, fails naming it', async () => {
    const pod = await lab.addPod('nobin');
    const r = await pod.run('/usr/bin/env', [
      'PATH=/nonexistent',
      process.execPath,
      MESHID_BIN,
      'proxy-init',
    ]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no iptables binary on the PATH .*Debian package "iptables"/);
  });

  it('--dry-run prints the rules and needs no capability', async () => {
    const pod = await lab.addPod('dry');
    const r = await pod.run('capsh', [
      '--drop=cap_net_admin,cap_net_raw',
      '--',
      '-c',
      `exec "${process.execPath}" "${MESHID_BIN}" proxy-init --dry-run --proxy-uid 3000`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^-A MESHID_PROXY_INIT_OUTPUT -m owner --uid-owner 3000 /m);
    assert.doesNotMatch(await natRules(pod, 'iptables-nft-save'), /MESHID/);
  });
});
