import { strict as assert } from 'node:assert';
import { parseCidrList, parsePortList } from '../../../core/index.js';
import {
  OUTPUT_CHAIN,
  REDIRECT_CHAIN,
  chainRules,
  restoreInput,
} from '../../../cli/proxy-init/rules.js';
import type { ProxyInitSettings } from '../../../cli/proxy-init/rules.js';

const BASE: ProxyInitSettings = {
  inboundPort: 4143,
  outboundPort: 4140,
  proxyUid: 2102,
  skipInboundPorts: [
    { from: 4143, to: 4143 },
    { from: 4191, to: 4191 },
  ],
  skipOutboundPorts: [],
  skipSubnets: [],
};

describe('proxy-init rules (pure)', () => {
  it('redirects inbound TCP to the inbound port after returning the skipped ports', () => {
    const rules = chainRules(BASE, 4);
    assert.deepEqual(
      rules.filter((r) => r.startsWith(`-A ${REDIRECT_CHAIN}`)),
      [
        `-A ${REDIRECT_CHAIN} -p tcp -m multiport --dports 4143,4191 -m comment --comment "meshid/skip-inbound-ports" -j RETURN`,
        `-A ${REDIRECT_CHAIN} -p tcp -m comment --comment "meshid/redirect-inbound" -j REDIRECT --to-ports 4143`,
      ],
    );
  });

  it('exempts the proxy UID and loopback before redirecting outbound TCP, the redirect last', () => {
    const out = chainRules({ ...BASE, proxyUid: 3000 }, 4).filter((r) =>
      r.startsWith(`-A ${OUTPUT_CHAIN}`),
    );
    assert.match(out[0] ?? '', /--uid-owner 3000 .*-j RETURN$/);
    assert.match(out[1] ?? '', /-o lo .*-j RETURN$/);
    assert.match(out.at(-1) ?? '', /-j REDIRECT --to-ports 4140$/);
  });

  it('splits more than 15 ports (a range counting two) over several multiport rules', () => {
    const ports = Array.from({ length: 20 }, (_, i) => ({ from: 1000 + i, to: 1000 + i }));
    const rules = chainRules(
      { ...BASE, skipOutboundPorts: [...ports, { from: 8000, to: 9000 }] },
      4,
    ).filter((r) => r.includes('skip-outbound-ports'));
    assert.equal(rules.length, 2);
    for (const r of rules) {
      const list = /--dports (\S+)/.exec(r)?.[1] ?? '';
      const weight = list.split(',').reduce((w, p) => w + (p.includes(':') ? 2 : 1), 0);
      assert.ok(weight <= 15, r);
    }
    assert.match(rules[1] ?? '', /8000:9000/);
  });

  it('writes each skipped subnet to its own family only', () => {
    const c = parseCidrList('10.96.0.0/12, fd00::/8');
    assert.ok('cidrs' in c);
    const settings = { ...BASE, skipSubnets: c.cidrs };
    assert.ok(chainRules(settings, 4).some((r) => r.includes('-d 10.96.0.0/12')));
    assert.ok(!chainRules(settings, 4).some((r) => r.includes('fd00')));
    assert.ok(chainRules(settings, 6).some((r) => r.includes('-d fd00::/8')));
  });

  it('adds the hooks from PREROUTING and OUTPUT only when iptables-save does not show them', () => {
    const fresh = restoreInput(BASE, 4, '');
    assert.match(fresh, /^-A PREROUTING .*-j MESHID_PROXY_INIT_REDIRECT$/m);
    assert.match(fresh, /^-A OUTPUT .*-j MESHID_PROXY_INIT_OUTPUT$/m);
    const saved = `*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -p tcp -m comment --comment meshid/proxy-init-inbound -j ${REDIRECT_CHAIN}\n-A OUTPUT -p tcp -j ${OUTPUT_CHAIN}\nCOMMIT\n`;
    const again = restoreInput(BASE, 4, saved);
    assert.doesNotMatch(again, /^-A PREROUTING/m);
    assert.doesNotMatch(again, /^-A OUTPUT /m);
    // the chains are declared, so iptables-restore --noflush empties them before refilling
    assert.match(again, new RegExp(`^:${REDIRECT_CHAIN} - \\[0:0\\]$`, 'm'));
  });

  it('parses Linkerd-style port lists and names a bad entry', () => {
    assert.deepEqual(parsePortList(' 25,587 , 8000-9000'), {
      ranges: [
        { from: 25, to: 25 },
        { from: 587, to: 587 },
        { from: 8000, to: 9000 },
      ],
    });
    for (const bad of ['0', '70000', '9000-8000', 'http', '1-2-3']) {
      const r = parsePortList(bad);
      assert.ok('problem' in r && r.problem.includes(`"${bad}"`), bad);
    }
    const c = parseCidrList('10.0.0.0/33');
    assert.ok('problem' in c && c.problem.includes('"10.0.0.0/33"'));
  });
});
