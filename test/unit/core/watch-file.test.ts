/**
 * core/watch-file: real files in a temporary folder, real folder watches, and the debounce and
 * re-check timers on a manual clock, so each step is driven by an event or by the test, never by
 * waiting.
 */
import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import { watch as fsWatch } from 'node:fs';
import type { FSWatcher } from 'node:fs';
import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MeshidError, isMeshidError, watchFile, watchFiles } from '../../../core/index.js';
import { silentLogger } from '../../../core/logger.js';
import type { WatchedFile } from '../../../core/index.js';
import type { WatchFileOptions, WatchFolder } from '../../../core/watch-file.js';
import { kubeletWrite } from '../../support/kubelet-volume.js';
import { ManualTimers } from '../../support/manual-timers.js';

const DEBOUNCE = 50;
const RECHECK = 60_000;

/** Folder watches that record what they made and can be made to fail. */
class Watches {
  readonly made: { dir: string; watcher: FSWatcher; closed: boolean }[] = [];
  broken = false;
  readonly watch: WatchFolder = (dir, onEvent) => {
    if (this.broken)
      throw Object.assign(new Error(`ENOSPC: no inotify watches left, ${dir}`), { code: 'ENOSPC' });
    const watcher = fsWatch(dir, { persistent: false }, (_event, name) => onEvent(name));
    const entry = { dir, watcher, closed: false };
    const close = watcher.close.bind(watcher);
    watcher.close = () => {
      entry.closed = true;
      close();
    };
    this.made.push(entry);
    return watcher;
  };
  open(dir: string): FSWatcher[] {
    return this.made.filter((m) => m.dir === dir && !m.closed).map((m) => m.watcher);
  }
}

describe('core/watch-file: one watched file with a last good value', () => {
  let dir: string;
  let file: string;
  let timers: ManualTimers;
  let watches: Watches;
  let parsed: string[];
  let watched: WatchedFile<string> | undefined;
  const warnings: string[] = [];

  /** Good content starts with "good:"; anything else is refused, as a bad bundle would be. */
  const parse = (bytes: Buffer): string => {
    const text = bytes.toString('utf8');
    parsed.push(text);
    if (!text.startsWith('good:')) throw new MeshidError('ERR_CONFIG_INVALID', `not good: ${text}`);
    return text;
  };

  const options = (): WatchFileOptions => ({
    clock: timers.clock,
    timers,
    logger: {
      ...silentLogger(),
      warn: (obj: unknown, msg?: string) => void warnings.push(`${msg} ${JSON.stringify(obj)}`),
    } as unknown as WatchFileOptions['logger'],
    code: 'ERR_CONFIG_INVALID',
    what: 'test file',
    debounceMs: DEBOUNCE,
    recheckMs: RECHECK,
    watch: watches.watch,
  });

  const start = async (path = file): Promise<WatchedFile<string>> => {
    watched = await watchFile(path, parse, options());
    return watched;
  };

  /** Fires the debounce whenever file events set it, until the value is `want`. */
  async function converge(w: WatchedFile<string>, want: string): Promise<void> {
    while (w.current() !== want) {
      await timers.pending(DEBOUNCE);
      const checked = once(w, 'checked');
      timers.advance(DEBOUNCE);
      await checked;
    }
  }

  /** Fires the debounce whenever file events set it, until a read is refused. */
  async function untilRejected(w: WatchedFile<string>): Promise<MeshidError> {
    const rejected = once(w, 'rejected') as Promise<[MeshidError]>;
    let done = false;
    void rejected.then(() => (done = true));
    while (!done) {
      await timers.pending(DEBOUNCE);
      const checked = once(w, 'checked');
      timers.advance(DEBOUNCE);
      await checked;
    }
    return (await rejected)[0];
  }

  async function replace(path: string, text: string): Promise<void> {
    await writeFile(`${path}.tmp`, text);
    await rename(`${path}.tmp`, path);
  }

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshid-watch-file-'));
    file = join(dir, 'bundle.pem');
    timers = new ManualTimers();
    watches = new Watches();
    parsed = [];
    warnings.length = 0;
    watched = undefined;
    await writeFile(file, 'good:1');
  });

  afterEach(async () => {
    await watched?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('starts with the parsed content, watching the folder and its parent, with the time of the read', async () => {
    let seenNow: number | undefined;
    const w = await watchFile(file, (b, now) => ((seenNow = now), b.toString()), options());
    watched = w;
    assert.equal(w.current(), 'good:1');
    assert.equal(seenNow, timers.clock.now());
    assert.equal(watches.open(dir).length, 1);
    assert.equal(watches.open(tmpdir()).length, 1);
    assert.equal(timers.count(RECHECK), 1);
  });

  it('follows a file replaced by rename, as an editor saves it', async () => {
    const w = await start();
    const change = once(w, 'change');
    await replace(file, 'good:2');
    await converge(w, 'good:2');
    assert.deepEqual(await change, ['good:2', 'good:1']);
  });

  it("follows the kubelet's ..data symlink swap, again and again", async () => {
    const vol = join(dir, 'trust-roots');
    await kubeletWrite(vol, { 'ca-bundle.crt': 'good:1' });
    const w = await start(join(vol, 'ca-bundle.crt'));
    await kubeletWrite(vol, { 'ca-bundle.crt': 'good:2' });
    await converge(w, 'good:2');
    // The first swap removed the folder the first link pointed into; the watch is on the volume.
    await kubeletWrite(vol, { 'ca-bundle.crt': 'good:3' });
    await converge(w, 'good:3');
  });

  it('keeps the last good value while the file is deleted, says so once, and takes it when it is written again', async () => {
    const w = await start();
    await rm(file);
    const err = await untilRejected(w);
    assert.ok(isMeshidError(err, 'ERR_CONFIG_INVALID'));
    assert.equal(err.message, `cannot read test file ${file}: ENOENT`);
    assert.equal(w.current(), 'good:1');
    await writeFile(file, 'good:2');
    await converge(w, 'good:2');
  });

  it('follows its folder deleted and made again (mv of a whole folder), watching the new one', async () => {
    const sub = join(dir, 'issuer');
    await mkdir(sub);
    await writeFile(join(sub, 'tls.crt'), 'good:1');
    const w = await start(join(sub, 'tls.crt'));
    const first = watches.open(sub)[0];
    await rm(sub, { recursive: true });
    await untilRejected(w);
    const next = join(dir, 'issuer.next');
    await mkdir(next);
    await writeFile(join(next, 'tls.crt'), 'good:2');
    await rename(next, sub);
    await converge(w, 'good:2');
    assert.equal(watches.open(sub).length, 1);
    assert.notEqual(watches.open(sub)[0], first, 'the watch was made again on the new folder');
    await writeFile(join(sub, 'tls.crt'), 'good:3');
    await converge(w, 'good:3');
  });

  it('never gives up after a watch error: it warns, watches again, and sees the next change', async () => {
    const w = await start();
    const [broken] = watches.open(dir);
    broken!.emit('error', new Error('EIO: watch failed'));
    assert.equal(watches.open(dir).length, 0, 'the failed watch is closed');
    assert.match(warnings.join('\n'), /test file folder watch failed; watching it again.*EIO/);
    // The failure triggers a read, which makes the watch again.
    const checked = once(w, 'checked');
    await timers.pending(DEBOUNCE);
    timers.advance(DEBOUNCE);
    await checked;
    assert.equal(watches.open(dir).length, 1);
    await replace(file, 'good:2');
    await converge(w, 'good:2');
  });

  it('re-reads periodically when the folder cannot be watched, and watches it once it can', async () => {
    watches.broken = true;
    const w = await start();
    assert.match(
      warnings.join('\n'),
      /cannot watch the test file folder yet; re-reading it every 60000 ms.*ENOSPC/,
    );
    await replace(file, 'good:2');
    assert.equal(timers.count(DEBOUNCE), 0, 'no watch saw it');
    let checked = once(w, 'checked');
    timers.advance(RECHECK);
    await checked;
    assert.equal(w.current(), 'good:2');

    watches.broken = false;
    checked = once(w, 'checked');
    timers.advance(RECHECK);
    await checked;
    assert.equal(watches.open(dir).length, 1);
    await replace(file, 'good:3');
    await converge(w, 'good:3');
  });

  it('reads a burst of writes once, after the burst, and ends on the last content', async () => {
    const w = await start();
    parsed.length = 0;
    for (let i = 2; i <= 30; i++) {
      if (i % 2 === 0) await writeFile(file, `good:${i}`);
      else await replace(file, `good:${i}`);
    }
    await timers.pending(DEBOUNCE);
    assert.equal(timers.count(DEBOUNCE), 1, 'each event re-set the one debounce timer');
    assert.deepEqual(parsed, [], 'nothing read during the burst');
    const checked = once(w, 'checked');
    timers.advance(DEBOUNCE);
    await checked;
    assert.equal(w.current(), 'good:30');
    assert.deepEqual(parsed, ['good:30']);
  });

  it('keeps the last good value on content that does not parse, reports it once, and recovers', async () => {
    const w = await start();
    const rejections: MeshidError[] = [];
    w.on('rejected', (e) => rejections.push(e));
    await replace(file, 'bad');
    await untilRejected(w);
    assert.equal(w.current(), 'good:1');
    assert.equal(rejections[0]?.code, 'ERR_CONFIG_INVALID');
    assert.equal(rejections[0]?.message, 'not good: bad');

    // The re-check reads the same bad bytes: not parsed again, not reported again.
    const before = parsed.length;
    const checked = once(w, 'checked') as Promise<[{ status: string }]>;
    timers.advance(RECHECK);
    assert.equal((await checked)[0].status, 'rejected');
    assert.equal(parsed.length, before);
    assert.equal(rejections.length, 1);

    await replace(file, 'good:2');
    await converge(w, 'good:2');
  });

  it('re-parses on an explicit reload even when the bytes did not change', async () => {
    const w = await start();
    parsed.length = 0;
    assert.deepEqual(await w.reload(), { status: 'unchanged', value: 'good:1' });
    assert.deepEqual(parsed, ['good:1']);
  });

  it('refuses a file over the size limit, naming the limit', async () => {
    await writeFile(file, `good:${'x'.repeat(100)}`);
    await assert.rejects(watchFile(file, parse, { ...options(), maxBytes: 64 }), (err: unknown) => {
      assert.ok(isMeshidError(err, 'ERR_CONFIG_INVALID'));
      assert.equal(err.message, `cannot read test file ${file}: it is 105 bytes, over 64`);
      return true;
    });
  });

  it('does not start on a first read that fails, and leaves nothing watching', async () => {
    await writeFile(file, 'bad');
    await assert.rejects(start(), /not good: bad/);
    await assert.rejects(
      start(join(dir, 'missing.pem')),
      (err: unknown) =>
        isMeshidError(err, 'ERR_CONFIG_INVALID') && /missing\.pem: ENOENT$/.test(err.message),
    );
    assert.equal(watches.made.filter((m) => !m.closed).length, 0);
    assert.equal(timers.count(RECHECK), 0);
  });

  it('reads several files as one value, an optional missing one as undefined, with per-file codes', async () => {
    const key = join(dir, 'tls.key');
    await writeFile(key, 'key:1');
    const files = [
      { path: file },
      { path: key, what: 'private key', code: 'ERR_ISSUER_INVALID' as const },
      { path: join(dir, 'ca.crt'), optional: true },
    ];
    const pair = await watchFiles(files, ([a, b, c]) => `${a}+${b}+${String(c)}`, options());
    try {
      assert.equal(pair.current(), 'good:1+key:1+undefined');
      await rm(key);
      const result = await pair.reload();
      assert.equal(result.status, 'rejected');
      assert.ok(result.status === 'rejected' && isMeshidError(result.error, 'ERR_ISSUER_INVALID'));
      assert.equal(result.error.message, `cannot read private key ${key}: ENOENT`);
    } finally {
      await pair.close();
    }
  });

  it('stops watching and re-checking once closed', async () => {
    const w = await start();
    await w.close();
    assert.equal(watches.made.filter((m) => !m.closed).length, 0);
    assert.equal(timers.count(RECHECK), 0);
    assert.equal(timers.count(DEBOUNCE), 0);
  });
});
