/**
 * The default run's slice of the fault-injection suites (test/reliability/faults-*.test.ts, run
 * in full by `npm run test:reliability`): the fastest case of each fault family, with the same
 * assertions, on real processes (the CA, two proxies) and the Kubernetes API test server.
 */
import type { CaProcess } from '../support/ca-process.js';
import { benchHooks } from '../support/fault-load.js';
import { CaKillBench } from '../support/fault-cases/ca-kill.js';
import { ClockBench } from '../support/fault-cases/clock.js';
import { KubeBench } from '../support/fault-cases/kube.js';
import { MaterialBench } from '../support/fault-cases/material.js';

describe('faults, one case per family (real processes; the full suites run under test:reliability)', function () {
  this.timeout(90_000);

  describe('Kubernetes API test server', () => {
    const bench = new KubeBench();
    let ca: CaProcess;
    benchHooks(bench);
    before(async () => {
      ca = await bench.startCa('tokenreview', ['--token-review-cache-ttl', '0s']);
    });
    it('API server down (TokenReview): UNAVAILABLE naming the review, nothing issued, issues again when it is back', () =>
      bench.apiDown(ca, 'tokenreview'));
    it('issuer Secret with a mismatched key: refused with an Event, the last good issuer keeps issuing, no call fails', () =>
      bench.badSecret(
        ca,
        'a certificate with the key of another issuer (cert updated, key not yet)',
      ));
  });

  describe('CA worker killed', () => {
    const bench = new CaKillBench();
    benchHooks(bench);
    it('SIGKILL of a worker under load: zero failed proxied requests, at most one Certify call lost per connection it held (two if its reconnect raced the primary)', () =>
      bench.killWorker(4));
  });

  describe('anchors file replaced by garbage', () => {
    const bench = new MaterialBench();
    benchHooks(bench);
    it("the proxies' anchors file turned to garbage under traffic: refused, last good bundle kept, zero failed requests, then a good bundle taken", () =>
      bench.badProxyAnchors('bytes that are not PEM'));
  });

  describe('clock jump', () => {
    const bench = new ClockBench();
    benchHooks(bench);
    it('forward past the renewal time: both proxies renew within seconds, zero failed requests', () =>
      bench.forwardPastRenewal(3000));
  });
});
