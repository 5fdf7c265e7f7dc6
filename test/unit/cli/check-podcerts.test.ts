/**
 * `meshid check`'s pod-certificates row over a faked API: not served, pending, refused, overdue,
 * expired and healthy PodCertificateRequests of meshid's signer.
 */
import { strict as assert } from 'node:assert';
import { KubeApiError } from '../../../core/index.js';
import type { CheckConfig, KubeResource } from '../../../core/index.js';
import { Cluster } from '../../../cli/check/cluster-api.js';
import { checkPodCertificates } from '../../../cli/check/cluster-podcerts.js';

const NOW = Date.parse('2026-12-07T12:00:00Z');
const MIN = 60_000;
const config = { podCertificateSigner: 'meshid.io/workload-identity' } as CheckConfig;

function pcr(
  name: string,
  o: {
    ageMs: number;
    podUID?: string;
    answer?: 'Issued' | 'Denied' | 'Failed';
    reason?: string;
    refreshInMs?: number;
    expiresInMs?: number;
  },
): KubeResource {
  const iso = (ms: number): string => new Date(ms).toISOString();
  return {
    apiVersion: 'certificates.k8s.io/v1beta1',
    kind: 'PodCertificateRequest',
    metadata: {
      name,
      namespace: 'emojivoto',
      creationTimestamp: iso(NOW - o.ageMs),
    } as KubeResource['metadata'],
    spec: { podUID: o.podUID ?? name, signerName: 'meshid.io/workload-identity' },
    ...(o.answer === undefined
      ? {}
      : {
          status: {
            conditions: [
              { type: o.answer, status: 'True', reason: o.reason ?? o.answer, message: 'why' },
            ],
            ...(o.answer === 'Issued'
              ? {
                  beginRefreshAt: iso(NOW + (o.refreshInMs ?? 12 * 60 * MIN)),
                  notAfter: iso(NOW + (o.expiresInMs ?? 20 * 60 * MIN)),
                }
              : {}),
          },
        }),
  };
}

function cluster(items: KubeResource[] | 'not-served', seen: string[] = []): Cluster {
  return new Cluster(
    {
      list: (apiVersion, _kind, _ns, _labels, fields) => {
        seen.push(`${apiVersion} ${fields ?? ''}`);
        if (items === 'not-served')
          return Promise.reject(
            new KubeApiError(
              404,
              'NotFound',
              'list PodCertificateRequest: the server could not find the requested resource',
            ),
          );
        return Promise.resolve(items);
      },
      get: () => Promise.resolve(undefined),
      create: (o) => Promise.resolve(o),
    },
    5000,
  );
}

describe('meshid check: pod-certificates', () => {
  it('is ok when the API is not served, having asked v1beta1 then v1 for the signer only', async () => {
    const seen: string[] = [];
    const r = await checkPodCertificates(cluster('not-served', seen), config, NOW);
    assert.equal(r.status, 'ok');
    assert.match(r.message, /not served/);
    assert.deepEqual(seen, [
      'certificates.k8s.io/v1beta1 spec.signerName=meshid.io/workload-identity',
      'certificates.k8s.io/v1 spec.signerName=meshid.io/workload-identity',
    ]);
  });

  it('is ok when every request is answered and fresh (a young pending one is normal)', async () => {
    const r = await checkPodCertificates(
      cluster([pcr('a', { ageMs: 60 * MIN, answer: 'Issued' }), pcr('b', { ageMs: MIN })]),
      config,
      NOW,
    );
    assert.equal(r.status, 'ok');
    assert.match(
      r.message,
      /2 request\(s\) for meshid\.io\/workload-identity: 1 issued, 0 pending/,
    );
  });

  it('fails on a request pending over 5 minutes, saying to run the signer', async () => {
    const r = await checkPodCertificates(cluster([pcr('stuck', { ageMs: 10 * MIN })]), config, NOW);
    assert.equal(r.status, 'error');
    assert.match(r.message, /oldest pending: emojivoto\/stuck/);
    assert.match(r.fix ?? '', /--pod-certificates/);
  });

  it('warns on denied requests with their reasons', async () => {
    const r = await checkPodCertificates(
      cluster([
        pcr('rsa', { ageMs: MIN, answer: 'Denied', reason: 'UnsupportedKeyType' }),
        pcr('rsa2', { ageMs: MIN, answer: 'Denied', reason: 'UnsupportedKeyType' }),
      ]),
      config,
      NOW,
    );
    assert.equal(r.status, 'warn');
    assert.match(r.message, /Denied UnsupportedKeyType: 2/);
    assert.match(r.fix ?? '', /keyType: ECDSAP256/);
  });

  it('warns on an issued certificate long past beginRefreshAt with no newer request, not when one exists', async () => {
    const old = pcr('old', {
      ageMs: 20 * 60 * MIN,
      podUID: 'p1',
      answer: 'Issued',
      refreshInMs: -60 * MIN,
    });
    const overdue = await checkPodCertificates(cluster([old]), config, NOW);
    assert.equal(overdue.status, 'warn');
    assert.match(overdue.message, /1 overdue.*overdue: emojivoto\/old/);
    const renewed = pcr('new', { ageMs: 50 * MIN, podUID: 'p1', answer: 'Issued' });
    assert.equal((await checkPodCertificates(cluster([old, renewed]), config, NOW)).status, 'ok');
  });

  it('fails on an expired certificate whose pod asked for no newer one', async () => {
    const r = await checkPodCertificates(
      cluster([
        pcr('gone', {
          ageMs: 30 * 60 * MIN,
          answer: 'Issued',
          refreshInMs: -10 * 60 * MIN,
          expiresInMs: -MIN,
        }),
      ]),
      config,
      NOW,
    );
    assert.equal(r.status, 'error');
    assert.match(r.message, /expired with no newer request: emojivoto\/gone/);
  });
});
