import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { createLogger } from '../../../core/index.js';
import { ManualClock } from '../../../core/clock.js';
import { silentLogger } from '../../../core/logger.js';
import type { Clock, MeshidError } from '../../../core/index.js';
import type { GeneratedCa } from '../../../core/pki.js';
import type { IssuerCredentials } from '../../../identity-ca/issuer/material.js';
import { IssuerStore } from '../../../identity-ca/issuer/store.js';
import { NOW, bundle, ca, material, root } from './fixtures/pki.js';

const sha256 = (b: Uint8Array | string): string => createHash('sha256').update(b).digest('hex');

/** Records the store's events in order. */
function recordEvents(store: IssuerStore): string[] {
  const seen: string[] = [];
  store.on('updated', (cur, prev, source) =>
    seen.push(`updated ${cur.subject} prev=${prev?.subject ?? '-'} from ${source}`),
  );
  store.on('rejected', (err, source) => seen.push(`rejected ${err.code} from ${source}`));
  return seen;
}

describe('issuer store', () => {
  let rootA: GeneratedCa;
  let rootB: GeneratedCa;
  let issuerA: GeneratedCa;
  let issuerA2: GeneratedCa;
  let issuerB: GeneratedCa;
  const newStore = (clock: Clock = new ManualClock(NOW)) =>
    new IssuerStore({ clock, logger: silentLogger() });

  before(async () => {
    rootA = await root('root-a.test');
    rootB = await root('root-b.test');
    issuerA = await ca(rootA, 'issuer-a.test');
    issuerA2 = await ca(rootA, 'issuer-a2.test');
    issuerB = await ca(rootB, 'issuer-b.test');
  });

  it('holds nothing before the first pair', () => {
    const store = newStore();
    assert.equal(store.current(), undefined);
    assert.equal(store.version, 0);
  });

  it('accepts a first valid pair and emits updated with no previous', async () => {
    const store = newStore();
    const events = recordEvents(store);
    const result = await store.apply(material(issuerA), bundle(rootA), 'test');
    assert.equal(result.status, 'updated');
    assert.equal(store.current()?.fingerprint, sha256(issuerA.certificateDer));
    assert.equal(store.version, 1);
    assert.deepEqual(events, ['updated CN=issuer-a.test prev=- from test']);
  });

  it('refuses a bad update, emits rejected and keeps the last good pair', async () => {
    const store = newStore();
    await store.apply(material(issuerA), bundle(rootA), 'first');
    const good = store.current();
    const events = recordEvents(store);
    const mismatched = { ...material(issuerA2), tlsKey: issuerA.privateKeyPem };
    const result = await store.apply(mismatched, bundle(rootA), 'second');
    assert.equal(result.status, 'rejected');
    assert.equal(result.status === 'rejected' && result.error.code, 'ERR_ISSUER_INVALID');
    assert.equal(result.status === 'rejected' && result.current, good);
    assert.equal(store.current(), good);
    assert.equal(store.version, 1);
    assert.deepEqual(events, ['rejected ERR_ISSUER_INVALID from second']);
  });

  it('refuses an unparseable bundle with ERR_ANCHORS_INVALID and keeps the last good pair', async () => {
    const store = newStore();
    await store.apply(material(issuerA), bundle(rootA), 'first');
    const good = store.current();
    const result = await store.apply(material(issuerA), 'not pem', 'second');
    assert.equal(result.status === 'rejected' && result.error.code, 'ERR_ANCHORS_INVALID');
    assert.equal(store.current(), good);
  });

  it('validates issuer and bundle as a pair through a root rotation', async () => {
    const store = newStore();
    const events = recordEvents(store);
    // 1. Running on root A.
    assert.equal((await store.apply(material(issuerA), bundle(rootA), 'step1')).status, 'updated');
    // 2. The issuer under the new root arrives before the bundle that holds it: refused.
    assert.equal((await store.apply(material(issuerB), bundle(rootA), 'step2')).status, 'rejected');
    assert.equal(store.current()?.subject, 'CN=issuer-a.test');
    // 3. The bundle gains root B; the current issuer still chains (to A).
    assert.equal(
      (await store.apply(material(issuerA), bundle(rootA, rootB), 'step3')).status,
      'updated',
    );
    // 4. The issuer under root B is now consistent with the bundle.
    assert.equal(
      (await store.apply(material(issuerB), bundle(rootA, rootB), 'step4')).status,
      'updated',
    );
    // 5. A bundle dropping root B would orphan the issuer: refused.
    assert.equal((await store.apply(material(issuerB), bundle(rootA), 'step5')).status, 'rejected');
    // 6. Dropping root A is fine.
    assert.equal((await store.apply(material(issuerB), bundle(rootB), 'step6')).status, 'updated');
    assert.equal(store.current()?.subject, 'CN=issuer-b.test');
    assert.deepEqual(
      store.current()?.anchors.anchors.map((a) => a.subject),
      ['CN=root-b.test'],
    );
    assert.equal(store.version, 4);
    assert.deepEqual(events, [
      'updated CN=issuer-a.test prev=- from step1',
      'rejected ERR_ISSUER_INVALID from step2',
      'updated CN=issuer-a.test prev=CN=issuer-a.test from step3',
      'updated CN=issuer-b.test prev=CN=issuer-a.test from step4',
      'rejected ERR_ISSUER_INVALID from step5',
      'updated CN=issuer-b.test prev=CN=issuer-b.test from step6',
    ]);
  });

  it('reports an identical pair as unchanged, without an event or a new version', async () => {
    const store = newStore();
    await store.apply(material(issuerA), bundle(rootA), 'first');
    const first = store.current();
    const events = recordEvents(store);
    const result = await store.apply(material(issuerA), bundle(rootA), 'again');
    assert.equal(result.status, 'unchanged');
    assert.equal(store.current(), first);
    assert.equal(store.version, 1);
    assert.deepEqual(events, []);
  });

  it('treats a bundle whose text changed (whitespace included) as an update, since its fingerprint changed', async () => {
    const store = newStore();
    await store.apply(material(issuerA), bundle(rootA), 'first');
    const result = await store.apply(material(issuerA), `${bundle(rootA)}\n`, 'second');
    assert.equal(result.status, 'updated');
    assert.equal(store.current()?.anchors.fingerprint, sha256(`${bundle(rootA)}\n`));
  });

  it('reports the same issuer and chain given another way (ca.crt instead of tls.crt) as unchanged', async () => {
    const inter = await ca(rootA, 'inter.test');
    const under = await ca(inter, 'under.test');
    const store = newStore();
    await store.apply(material(under, [inter]), bundle(rootA), 'first');
    const result = await store.apply(material(under, [], [inter, rootA]), bundle(rootA), 'same');
    assert.equal(result.status, 'unchanged');
  });

  it('treats the same issuer reached through a different chain as an update', async () => {
    // One intermediate key, certified by root A and cross-signed by root B.
    const interA = await ca(rootA, 'inter.test');
    const interB = await ca(rootB, 'inter.test', { key: interA.privateKey });
    const under = await ca(interA, 'under.test');
    const store = newStore();
    await store.apply(material(under, [interA]), bundle(rootA, rootB), 'via A');
    const result = await store.apply(material(under, [interB]), bundle(rootA, rootB), 'via B');
    assert.equal(result.status, 'updated');
    assert.equal(Buffer.compare(store.current()!.intermediatesDer[1]!, interB.certificateDer), 0);
  });

  it("validates with the clock's time: an issuer that expired by then is refused", async () => {
    const clock = new ManualClock(NOW);
    const store = newStore(clock);
    await store.apply(material(issuerA), bundle(rootA), 'first');
    clock.advance(3 * 86_400_000); // past issuerA's two-day validity
    const result = await store.apply(material(issuerA2), bundle(rootA), 'later');
    assert.equal(result.status, 'rejected');
    assert.match(result.status === 'rejected' ? result.error.message : '', /expired/);
  });

  it('serialises concurrent apply calls: no interleaving, and the later call wins', async () => {
    const order: string[] = [];
    let n = 0;
    // The store reads the clock once at the start of each validation; events mark each end.
    const clock: Clock = {
      now: () => {
        order.push(`start ${++n}`);
        return NOW;
      },
    };
    const store = newStore(clock);
    store.on('updated', (cur) => order.push(`end ${cur.subject}`));
    store.on('rejected', () => order.push('end rejected'));
    // The first pair is the slower one to validate (a longer chain): without the queue it would
    // finish last and overwrite the second.
    const i1 = await ca(rootA, 'i1.test');
    const i2 = await ca(i1, 'i2.test');
    const slow = await ca(i2, 'slow.test');
    const results = await Promise.all([
      store.apply(material(slow, [], [i2, i1]), bundle(rootA), 'slow'),
      store.apply({ ...material(issuerA), tlsKey: 'junk' }, bundle(rootA), 'bad'),
      store.apply(material(issuerA), bundle(rootA), 'fast'),
    ]);
    assert.deepEqual(
      results.map((r) => r.status),
      ['updated', 'rejected', 'updated'],
    );
    assert.deepEqual(order, [
      'start 1',
      'end CN=slow.test',
      'start 2',
      'end rejected',
      'start 3',
      'end CN=issuer-a.test',
    ]);
    assert.equal(store.current()?.subject, 'CN=issuer-a.test');
  });

  it('keeps working when a listener throws', async () => {
    const store = newStore();
    store.on('updated', () => {
      throw new Error('listener bug');
    });
    const result = await store.apply(material(issuerA), bundle(rootA), 'first');
    assert.equal(result.status, 'updated');
    assert.equal(
      (await store.apply(material(issuerA2), bundle(rootA), 'second')).status,
      'updated',
    );
    assert.equal(store.current()?.subject, 'CN=issuer-a2.test');
  });

  it('logs updates at info with subject, serial, fingerprint and notAfter, refusals at warn, and never key material', async () => {
    const lines: Record<string, unknown>[] = [];
    const logger = createLogger({
      level: 'debug',
      destination: {
        write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>),
      },
    });
    const store = new IssuerStore({ clock: new ManualClock(NOW), logger });
    await store.apply(material(issuerA), bundle(rootA), 'first');
    await store.apply(
      { ...material(issuerA2), tlsKey: issuerA.privateKeyPem },
      bundle(rootA),
      'second',
    );

    const info = lines.find((l) => l.level === 'info');
    const creds = store.current() as IssuerCredentials;
    assert.equal(info?.issuer, 'CN=issuer-a.test');
    assert.equal(info?.serial, creds.serial);
    assert.equal(info?.sha256, creds.fingerprint);
    assert.equal(info?.notAfter, new Date(creds.notAfter).toISOString());
    const warn = lines.find((l) => l.level === 'warn');
    assert.match(String(warn?.reason), /does not match/);
    assert.equal(warn?.code, 'ERR_ISSUER_INVALID');

    const all = JSON.stringify(lines);
    const keyBody = (k: GeneratedCa) => k.privateKeyPem.split('\n')[1]!;
    assert.ok(!all.includes('PRIVATE KEY'));
    assert.ok(!all.includes(keyBody(issuerA)) && !all.includes(keyBody(issuerA2)));
  });

  it('passes the refusal error to rejected listeners', async () => {
    const store = newStore();
    const errors: MeshidError[] = [];
    store.on('rejected', (err) => errors.push(err));
    await store.apply(material(issuerB), bundle(rootA), 'orphan');
    assert.equal(errors.length, 1);
    assert.match(errors[0]!.message, /does not chain to any trust anchor/);
  });
});
