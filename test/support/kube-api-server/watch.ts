/**
 * Watch streams: one JSON event per line, resumed from a resourceVersion out of the bounded
 * history, with synthetic ADDED events for a watch from "" or "0", selector-aware transitions
 * (an object leaving the selector is a DELETED), bookmarks, timeoutSeconds, and an ERROR event with
 * a 410 Expired Status when the resourceVersion is older than the history window.
 */
import type { ServerResponse } from 'node:http';
import { isPodCertificateRequest, presentPodCertificateRequest } from './pod-certificates.js';
import { apiVersionOf } from './resources.js';
import type { ResourceType } from './resources.js';
import { expired } from './status.js';
import type { Selector } from './selectors.js';
import type { Store, StoredEvent } from './store.js';
import type { KubeObject } from './types.js';

export interface WatchParams {
  readonly type: ResourceType;
  /** '' for all namespaces. */
  readonly namespace: string;
  readonly selector: Selector;
  readonly resourceVersion: string | undefined;
  readonly timeoutSeconds: number | undefined;
  readonly allowBookmarks: boolean;
  readonly sendInitialEvents: boolean | undefined;
  readonly bookmarkIntervalMs: number;
}

type WireEvent = { type: string; object: unknown };

function convert(e: StoredEvent, match: (o: KubeObject) => boolean): WireEvent | undefined {
  const now = match(e.object);
  if (e.type === 'ADDED') return now ? { type: 'ADDED', object: e.object } : undefined;
  if (e.type === 'DELETED')
    return match(e.previous ?? e.object) ? { type: 'DELETED', object: e.object } : undefined;
  const before = e.previous !== undefined && match(e.previous);
  if (now && before) return { type: 'MODIFIED', object: e.object };
  if (now) return { type: 'ADDED', object: e.object };
  if (before) {
    // The object left the selection: the watcher sees its last matching state go away.
    const gone = structuredClone(e.previous!);
    gone.metadata.resourceVersion = String(e.rv);
    return { type: 'DELETED', object: gone };
  }
  return undefined;
}

/**
 * Serves one watch on `res`. Returns a function that ends it (used by stop/pause). The caller
 * has already authorized the request and validated the selectors.
 */
export function serveWatch(
  store: Store,
  p: WatchParams,
  res: ServerResponse,
  onEnd: () => void,
): () => void {
  const match = (o: KubeObject): boolean =>
    (p.namespace === '' || o.metadata.namespace === p.namespace) && p.selector(o);
  res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private' });
  res.flushHeaders();
  let ended = false;
  const timers: NodeJS.Timeout[] = [];
  let unsubscribe = (): void => undefined;
  const end = (): void => {
    if (ended) return;
    ended = true;
    unsubscribe();
    for (const t of timers) clearTimeout(t);
    res.end();
    onEnd();
  };
  // Versions of one kind share storage: each watcher sees the version it asked for.
  const versioned = isPodCertificateRequest(p.type);
  const send = (e: WireEvent): void => {
    if (ended) return;
    const out =
      versioned && e.type !== 'BOOKMARK' && e.type !== 'ERROR'
        ? { type: e.type, object: presentPodCertificateRequest(p.type, e.object as KubeObject) }
        : e;
    res.write(`${JSON.stringify(out)}\n`);
  };
  const bookmark = (annotations?: Record<string, string>): void => {
    const metadata: Record<string, unknown> = { resourceVersion: String(store.resourceVersion) };
    if (annotations !== undefined) metadata['annotations'] = annotations;
    send({
      type: 'BOOKMARK',
      object: { kind: p.type.kind, apiVersion: apiVersionOf(p.type), metadata },
    });
  };

  const rv = p.resourceVersion ?? '';
  const fromScratch = rv === '' || rv === '0';
  if (!fromScratch) {
    const n = Number(rv);
    const { events, oldest } = store.eventsSince(p.type, n);
    if (events === undefined) {
      // What a real server does: a 200 stream carrying one ERROR event, then the end.
      send({ type: 'ERROR', object: expired(`too old resource version: ${n} (${oldest})`).status });
      end();
      return end;
    }
    unsubscribe = store.subscribe(p.type, (e) => {
      const w = convert(e, match);
      if (w !== undefined) send(w);
    });
    for (const e of events) {
      const w = convert(e, match);
      if (w !== undefined) send(w);
    }
  } else {
    // Subscribe first: everything is synchronous, so no write can fall between list and watch.
    unsubscribe = store.subscribe(p.type, (e) => {
      const w = convert(e, match);
      if (w !== undefined) send(w);
    });
    if (p.sendInitialEvents !== false) {
      for (const o of store.list(p.type, p.namespace))
        if (match(o)) send({ type: 'ADDED', object: o });
      if (p.sendInitialEvents === true && p.allowBookmarks)
        bookmark({ 'k8s.io/initial-events-end': 'true' });
    }
  }
  if (p.allowBookmarks) {
    const tick = (): void => {
      bookmark();
      timers[0] = setTimeout(tick, p.bookmarkIntervalMs);
    };
    timers[0] = setTimeout(tick, p.bookmarkIntervalMs);
  }
  if (p.timeoutSeconds !== undefined && p.timeoutSeconds > 0)
    timers.push(setTimeout(end, p.timeoutSeconds * 1000));
  res.on('close', end);
  return end;
}
