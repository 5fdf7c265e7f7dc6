/**
 * Fault injection: CA workers killed and the whole CA killed and restarted, under load, with two
 * real proxies carrying mTLS traffic (all real processes on 127.0.0.1). Runs under
 * `npm run test:reliability`; the default run has one worker kill (test/integration/faults.test.ts).
 */
import { benchHooks } from '../support/fault-load.js';
import { CaKillBench } from '../support/fault-cases/ca-kill.js';

describe('faults: CA worker and whole CA killed under load (real processes)', function () {
  this.timeout(300_000);
  const bench = new CaKillBench();
  benchHooks(bench, 'faults: CA killed');

  for (let round = 1; round <= 3; round++) {
    it(`worker kill ${round}: proxies serve on, each connection the killed worker held costs at most one Certify call (two if its reconnect raced the primary)`, async () => {
      await bench.killWorker(6);
    });
  }

  it('whole CA SIGKILLed and restarted: proxies serve on their certificates, Certify is UNAVAILABLE meanwhile, renewal succeeds after the restart', async () => {
    await bench.killCa(4);
  });
});
