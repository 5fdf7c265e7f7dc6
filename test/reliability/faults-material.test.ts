/**
 * Fault injection: bad issuer material and bad anchor bundles written under load in file mode
 * (real CA with two workers, two real proxies under mTLS traffic). Runs under
 * `npm run test:reliability`; the default run has one case of each (test/integration/faults.test.ts).
 */
import { benchHooks } from '../support/fault-load.js';
import { BAD_ANCHORS, BAD_ISSUERS, MaterialBench } from '../support/fault-cases/material.js';

describe('faults: bad issuer and anchors files under load (real processes)', function () {
  this.timeout(120_000);
  const bench = new MaterialBench();
  benchHooks(bench, 'faults: bad issuer/anchors files');

  for (const kind of BAD_ISSUERS) {
    it(`issuer folder: refuses ${kind}, keeps issuing with the last good issuer, fails no call`, async () => {
      await bench.badIssuer(kind);
    });
  }
  it('issuer folder: takes the next good issuer after the bad ones', async () => {
    await bench.goodIssuer();
  });
  for (const kind of BAD_ANCHORS) {
    it(`CA anchors file: refuses ${kind}, fails no call, then takes a good bundle`, async () => {
      await bench.badCaAnchors(kind);
    });
  }
  for (const kind of BAD_ANCHORS) {
    it(`proxy anchors file: refuses ${kind}, zero failed requests, then picks up a good bundle`, async () => {
      await bench.badProxyAnchors(kind);
    });
  }
});
