/**
 * Events: aggregation into one object with a count, the rate limits that keep a Certify storm
 * from becoming an Event storm, and that a failing API never reaches the caller. Also the issuer
 * Secret schemes and the start-up permission check.
 */
import { strict as assert } from 'node:assert';
import { isMeshidError } from '../../../core/index.js';
import { ManualClock } from '../../../core/clock.js';
import { silentLogger } from '../../../core/logger.js';
import { issuerMaterialFromSecret } from '../../../identity-ca/issuer/kube-source.js';
import type { AccessQuery, EventRecord, KubeObject } from '../../../identity-ca/kube/api.js';
import { KubeApiError } from '../../../identity-ca/kube/api.js';
import { EventReason, EventRecorder } from '../../../identity-ca/kube/events.js';
import { caRequirements, checkPermissions } from '../../../identity-ca/kube/permissions.js';

const NOW = Date.parse('2026-11-22T10:00:00Z');
const SA = { kind: 'ServiceAccount', namespace: 'emojivoto', name: 'web' };

class FakeEventsApi {
  written: { name: string; record: EventRecord }[] = [];
  fail: Error | undefined;
  async recordEvent(name: string, record: EventRecord): Promise<void> {
    if (this.fail !== undefined) throw this.fail;
    this.written.push({ name, record });
  }
}

function recorder(api: FakeEventsApi, clock: ManualClock, dropped: string[] = []): EventRecorder {
  return new EventRecorder({
    api,
    component: 'meshid-identity',
    instance: 'linkerd-identity-abc',
    clock,
    logger: silentLogger(),
    perKeyBurst: 3,
    perKeyIntervalMs: 60_000,
    globalBurst: 10,
    globalPerSecond: 1,
    onDropped: (why) => dropped.push(why),
  });
}

describe('identity-ca/kube/events', () => {
  it('aggregates repeats into one Event object whose count grows', async () => {
    const api = new FakeEventsApi();
    const clock = new ManualClock(NOW);
    const events = recorder(api, clock);
    for (let i = 0; i < 3; i++) {
      events.record(SA, 'Normal', EventReason.issuedLeafCertificate, `Issued certificate ${i}`);
      clock.advance(1000);
    }
    await events.flush();
    assert.equal(api.written.length, 3);
    assert.equal(new Set(api.written.map((w) => w.name)).size, 1, 'one object');
    assert.deepEqual(
      api.written.map((w) => w.record.count),
      [1, 2, 3],
    );
    const last = api.written[2]!.record;
    assert.equal(last.message, 'Issued certificate 2');
    assert.equal(last.firstTimestamp.getTime(), NOW);
    assert.equal(last.lastTimestamp.getTime(), NOW + 2000);
    assert.deepEqual(last.involvedObject, {
      kind: 'ServiceAccount',
      namespace: 'emojivoto',
      name: 'web',
    });
    assert.equal(last.namespace, 'emojivoto');
    assert.match(api.written[0]!.name, /^web\.[0-9a-f]{16}$/);
  });

  it('limits each object and reason to a burst, then one per interval', async () => {
    const api = new FakeEventsApi();
    const clock = new ManualClock(NOW);
    const dropped: string[] = [];
    const events = recorder(api, clock, dropped);
    for (let i = 0; i < 50; i++)
      events.record(SA, 'Normal', EventReason.issuedLeafCertificate, 'x');
    await events.flush();
    assert.equal(api.written.length, 3);
    assert.equal(dropped.filter((d) => d === 'rate-limited').length, 47);
    clock.advance(59_000);
    events.record(SA, 'Normal', EventReason.issuedLeafCertificate, 'x');
    clock.advance(1_000);
    events.record(SA, 'Normal', EventReason.issuedLeafCertificate, 'x');
    events.record(SA, 'Normal', EventReason.issuedLeafCertificate, 'x');
    await events.flush();
    assert.equal(api.written.length, 4, 'one more after a full interval');
    // Another reason on the same object has its own bucket.
    events.record(SA, 'Warning', EventReason.issuerValidationFailed, 'y');
    await events.flush();
    assert.equal(api.written.length, 5);
  });

  it('limits the whole process: a storm over many service accounts is cut at the global burst', async () => {
    const api = new FakeEventsApi();
    const clock = new ManualClock(NOW);
    const events = recorder(api, clock);
    for (let i = 0; i < 1000; i++)
      events.record({ ...SA, name: `sa-${i}` }, 'Normal', EventReason.issuedLeafCertificate, 'x');
    await events.flush();
    assert.equal(api.written.length, 10);
    clock.advance(5_000);
    for (let i = 0; i < 1000; i++)
      events.record({ ...SA, name: `sb-${i}` }, 'Normal', EventReason.issuedLeafCertificate, 'x');
    await events.flush();
    assert.equal(api.written.length, 15, '1 per second refills');
  });

  it('never throws or waits when the API fails; counts the failure', async () => {
    const api = new FakeEventsApi();
    api.fail = new KubeApiError(403, 'Forbidden', 'events is forbidden');
    const dropped: string[] = [];
    const events = recorder(api, new ManualClock(NOW), dropped);
    events.record(SA, 'Normal', EventReason.issuedLeafCertificate, 'x');
    await events.flush();
    assert.deepEqual(dropped, ['error']);
    assert.equal(events.written, 0);
  });
});

describe('identity-ca/issuer/kube-source: the issuer Secret', () => {
  const secret = (type: string, data: Record<string, string>): KubeObject => ({
    name: 'linkerd-identity-issuer',
    namespace: 'linkerd',
    uid: 'u',
    resourceVersion: '1',
    type,
    data,
  });

  it('reads kubernetes.io/tls (tls.crt, tls.key, ca.crt) and linkerd.io/tls (crt.pem, key.pem)', () => {
    assert.deepEqual(
      issuerMaterialFromSecret(
        secret('kubernetes.io/tls', { 'tls.crt': 'C', 'tls.key': 'K', 'ca.crt': 'A' }),
      ),
      { tlsCrt: 'C', tlsKey: 'K', caCrt: 'A' },
    );
    assert.deepEqual(
      issuerMaterialFromSecret(secret('kubernetes.io/tls', { 'tls.crt': 'C', 'tls.key': 'K' })),
      { tlsCrt: 'C', tlsKey: 'K' },
    );
    assert.deepEqual(
      issuerMaterialFromSecret(secret('linkerd.io/tls', { 'crt.pem': 'C', 'key.pem': 'K' })),
      { tlsCrt: 'C', tlsKey: 'K' },
    );
  });

  it('names the missing key', () => {
    for (const [type, data, missing] of [
      ['kubernetes.io/tls', { 'tls.crt': 'C' }, 'tls.key'],
      ['kubernetes.io/tls', { 'tls.key': 'K', 'tls.crt': ' ' }, 'tls.crt'],
      ['linkerd.io/tls', { 'crt.pem': 'C' }, 'key.pem'],
      ['Opaque', {}, 'tls.crt'],
    ] as const) {
      assert.throws(
        () => issuerMaterialFromSecret(secret(type, data)),
        (err: unknown) =>
          isMeshidError(err) &&
          err.code === 'ERR_ISSUER_INVALID' &&
          err.message.includes(
            `Secret linkerd/linkerd-identity-issuer (type ${type}) lacks ${missing}`,
          ),
      );
    }
  });
});

describe('identity-ca/kube/permissions', () => {
  const reqs = caRequirements({
    tokenReview: true,
    namespace: 'linkerd',
    issuerSecret: 'linkerd-identity-issuer',
    trustAnchorsConfigMap: 'linkerd-identity-trust-roots',
    events: true,
  });
  const api = (deny: (q: AccessQuery) => boolean) => ({
    server: 'https://127.0.0.1:6443',
    async canI(q: AccessQuery) {
      return { allowed: !deny(q) };
    },
  });

  it('asks for tokenreviews, the two objects by name (get, list, watch) and events', () => {
    assert.deepEqual(
      reqs.map((r) => `${r.query.verb} ${r.query.resource} ${r.query.name ?? ''}`.trim()),
      [
        'create tokenreviews',
        'get secrets linkerd-identity-issuer',
        'list secrets linkerd-identity-issuer',
        'watch secrets linkerd-identity-issuer',
        'get configmaps linkerd-identity-trust-roots',
        'list configmaps linkerd-identity-trust-roots',
        'watch configmaps linkerd-identity-trust-roots',
        'create events',
      ],
    );
  });

  it('refuses to start without a required permission, naming each one', async () => {
    await assert.rejects(
      checkPermissions(
        api((q) => q.resource === 'tokenreviews' || q.verb === 'watch'),
        reqs,
      ),
      (err: unknown) => {
        assert.ok(isMeshidError(err));
        assert.equal(err.code, 'ERR_CONFIG_INVALID');
        assert.match(
          err.message,
          /create tokenreviews\.authentication\.k8s\.io: needed to authenticate/,
        );
        assert.match(err.message, /watch secrets "linkerd-identity-issuer" in namespace "linkerd"/);
        assert.match(err.message, /watch configmaps "linkerd-identity-trust-roots"/);
        assert.doesNotMatch(err.message, /get secrets/);
        return true;
      },
    );
  });

  it('only warns without the Events permission', async () => {
    const denied = await checkPermissions(
      api((q) => q.resource === 'events'),
      reqs,
    );
    assert.deepEqual(
      denied.map((r) => r.query.resource),
      ['events'],
    );
  });

  it('fails clearly when the API server cannot be asked', async () => {
    await assert.rejects(
      checkPermissions(
        {
          server: 'https://127.0.0.1:6443',
          canI: () => Promise.reject(new KubeApiError(0, 'Unavailable', 'ECONNREFUSED')),
        },
        reqs,
      ),
      /cannot check the CA's permissions at https:\/\/127.0.0.1:6443: ECONNREFUSED/,
    );
  });
});
