/**
 * Fault injection: wall-clock jumps forward and back in the real CA and proxy processes (under
 * libfaketime, which also moves OpenSSL's notion of now), with mTLS traffic through the proxies.
 * Runs under `npm run test:reliability`; the default run has the forward jump
 * (test/integration/faults.test.ts).
 */
import { benchHooks } from '../support/fault-load.js';
import { ClockBench } from '../support/fault-cases/clock.js';

describe('faults: clock jumps (real processes under libfaketime)', function () {
  this.timeout(120_000);
  const bench = new ClockBench();
  benchHooks(bench, 'faults: clock jumps');

  // First, while the CA's serving certificate is still from real time.
  it("tokens' iat/nbf: a CA 15 s behind the token issuer accepts, 60 s behind refuses naming the skew allowance", async () => {
    await bench.tokenTimesBehind(15, 60);
  });
  it('forward past the renewal time (+50 min on 1 h leaves): both proxies renew within seconds, zero failed requests', async () => {
    await bench.forwardPastRenewal(3000);
  });
  it("the proxies' clock past their certificate's expiry (+3 h): they say so, are not ready and carry nothing, then recover", async () => {
    await bench.proxiesPastExpiry(3 * 3600);
  });
  it('back by 15 s (under the 20 s skew allowance) right after renewal: no certificate is refused, zero failed requests', async () => {
    await bench.backWithinSkew(5900, 15);
  });
  it('proxies behind the CA: 15 s, the new leaf is taken; 60 s, it is refused as not yet valid and the proxies serve on', async () => {
    await bench.proxiesBehindCa(15, 60);
  });
});
