/**
 * Fault injection against the Kubernetes API test server (a test double of kube-apiserver,
 * through @kubernetes/client-node by the real `meshid ca`): the API server down and slow in
 * TokenReview and cluster-JWKS modes, and the issuer Secret corrupted mid-update. Runs under
 * `npm run test:reliability`; the default run has one case of each (test/integration/faults.test.ts).
 */
import type { CaProcess } from '../support/ca-process.js';
import { benchHooks } from '../support/fault-load.js';
import { BAD_ISSUERS, KubeBench } from '../support/fault-cases/kube.js';

const LIMITS = { inFlight: 4, queue: 4 };

describe('faults: Kubernetes API server down and slow, issuer Secret corrupted (real CA, API test server)', function () {
  this.timeout(120_000);
  const bench = new KubeBench();
  let reviewCa: CaProcess;
  let jwksCa: CaProcess;
  benchHooks(bench, 'faults: Kubernetes API, issuer Secret');
  before(async () => {
    // Reviews are not cached, so that every call asks the API server.
    reviewCa = await bench.startCa('tokenreview', [
      ...['--token-review-cache-ttl', '0s'],
      ...[
        '--certify-max-in-flight',
        String(LIMITS.inFlight),
        '--certify-max-queue',
        String(LIMITS.queue),
      ],
    ]);
    jwksCa = await bench.startCa('jwks');
  });

  it('TokenReview mode, API server down: UNAVAILABLE naming the review, nothing issued, issues again when it is back', async () => {
    await bench.apiDown(reviewCa, 'tokenreview');
  });
  it('TokenReview mode, API server slower than the deadline: UNAVAILABLE within the bound, the excess refused with a retry hint, no pile-up at the API server', async () => {
    await bench.apiSlow(reviewCa, 'tokenreview', LIMITS, 16);
  });
  it('JWKS mode, API server down: the cached keys keep validating (zero failures); an unseen key gets nothing until the server is back', async () => {
    await bench.apiDown(jwksCa, 'jwks');
  });
  it('JWKS mode, API server slow: calls on cached keys do not wait for it and none fails', async () => {
    await bench.apiSlow(jwksCa, 'jwks', LIMITS, 16);
  });
  it('JWKS mode, API server down past the key-set cache life (CA clock +11 min): UNAVAILABLE naming the JWKS, then issues again when it is back', async () => {
    await bench.apiDownStaleJwks();
  });
  for (const kind of BAD_ISSUERS) {
    it(`issuer Secret: refuses ${kind} with an Event, keeps issuing with the last good issuer, fails no call`, async () => {
      await bench.badSecret(reviewCa, kind);
    });
  }
  it('issuer Secret: a later good update is picked up', async () => {
    await bench.goodSecret(reviewCa);
  });
});
