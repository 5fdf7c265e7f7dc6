/**
 * The inbound policy: any meshed peer by default; allow-lists of identities, service accounts and
 * namespaces; unauthenticated peers only when allowed; bad entries refused at construction.
 */
import { strict as assert } from 'node:assert';
import { isMeshidError } from '../../../core/index.js';
import { InboundPolicy } from '../../../proxy/policy.js';

const WEB = 'web.emojivoto.serviceaccount.identity.linkerd.cluster.local';
const VOTE = 'voting.emojivoto.serviceaccount.identity.linkerd.cluster.local';
const EMOJI = 'emoji.emojivoto.serviceaccount.identity.linkerd.cluster.local';
const OTHER_NS = 'web.books.serviceaccount.identity.linkerd.cluster.local';
const OTHER_DOMAIN = 'web.emojivoto.serviceaccount.identity.linkerd.example.org';

describe('proxy inbound policy', () => {
  it('allows any meshed identity and no unauthenticated peer by default', () => {
    const p = new InboundPolicy();
    assert.equal(p.allowsAnyMeshed, true);
    assert.deepEqual(p.authorize(WEB), { allowed: true });
    assert.deepEqual(p.authorize(OTHER_DOMAIN), { allowed: true });
    const d = p.authorize(undefined);
    assert.equal(d.allowed, false);
    assert.equal(p.allowUnauthenticated, false);
  });

  it('allows exactly the listed identities', () => {
    const p = new InboundPolicy({ identities: [WEB] });
    assert.deepEqual(p.authorize(WEB), { allowed: true });
    const d = p.authorize(VOTE);
    assert.ok(!d.allowed);
    assert.match(d.reason, /voting\.emojivoto/);
  });

  it('allows the listed service accounts and no other account of their namespace', () => {
    const p = new InboundPolicy({ serviceAccounts: ['emojivoto/web', 'emojivoto/voting'] });
    assert.deepEqual(p.authorize(WEB), { allowed: true });
    assert.deepEqual(p.authorize(VOTE), { allowed: true });
    assert.equal(p.authorize(EMOJI).allowed, false);
    assert.equal(p.authorize(OTHER_NS).allowed, false);
  });

  it('does not match a service account of another trust domain', () => {
    const p = new InboundPolicy({ serviceAccounts: ['emojivoto/web'], namespaces: ['emojivoto'] });
    assert.equal(p.authorize(OTHER_DOMAIN).allowed, false);
    const q = new InboundPolicy({
      serviceAccounts: ['emojivoto/web'],
      naming: { trustDomain: 'example.org', controlPlaneNamespace: 'linkerd' },
    });
    assert.deepEqual(q.authorize(OTHER_DOMAIN), { allowed: true });
    assert.equal(q.authorize(WEB).allowed, false);
  });

  it('allows every service account of the listed namespaces', () => {
    const p = new InboundPolicy({ namespaces: ['emojivoto'] });
    assert.deepEqual(p.authorize(EMOJI), { allowed: true });
    assert.equal(p.authorize(OTHER_NS).allowed, false);
  });

  it('allows a peer that matches any one of several lists', () => {
    const p = new InboundPolicy({ identities: [OTHER_DOMAIN], namespaces: ['books'] });
    assert.deepEqual(p.authorize(OTHER_DOMAIN), { allowed: true });
    assert.deepEqual(p.authorize(OTHER_NS), { allowed: true });
    assert.equal(p.authorize(WEB).allowed, false);
  });

  it('treats an empty allow-list as allowing no meshed peer', () => {
    const p = new InboundPolicy({ identities: [] });
    assert.equal(p.allowsAnyMeshed, false);
    assert.equal(p.authorize(WEB).allowed, false);
  });

  it('allows unauthenticated peers only when told, whatever the lists', () => {
    const p = new InboundPolicy({ identities: [WEB], allowUnauthenticated: true });
    assert.deepEqual(p.authorize(undefined), { allowed: true });
    assert.equal(p.authorize(VOTE).allowed, false);
  });

  it('refuses malformed entries, naming each', () => {
    assert.throws(
      () =>
        new InboundPolicy({
          identities: [''],
          serviceAccounts: ['web', 'emojivoto/Web', 'a/b/c'],
          namespaces: ['Emoji_Voto'],
        }),
      (err: unknown) => {
        assert.ok(isMeshidError(err, 'ERR_CONFIG_INVALID'));
        for (const field of [
          'identities[0]',
          'serviceAccounts[0]',
          'serviceAccounts[1]',
          'serviceAccounts[2]',
          'namespaces[0]',
        ]) {
          assert.ok(err.message.includes(field), `${field} in ${err.message}`);
        }
        return true;
      },
    );
  });
});
