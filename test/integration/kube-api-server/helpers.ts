/** Shared helpers of the kube-api-server semantics suite. */
import { request } from 'node:https';

/** The Status body of a failed client-node call (ApiException keeps it as a string). */
export async function statusOf(
  p: Promise<unknown>,
): Promise<{ code: number; body: Record<string, unknown> }> {
  try {
    await p;
  } catch (e) {
    const err = e as { code?: number; body?: unknown };
    if (typeof err.code !== 'number') throw e;
    const body =
      typeof err.body === 'string' && err.body !== ''
        ? (JSON.parse(err.body) as Record<string, unknown>)
        : {};
    return { code: err.code, body };
  }
  throw new Error('expected the call to fail');
}

/** Waits for `cond` to hold, polling every 10 ms, failing after `ms`. */
export async function waitFor(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A raw HTTPS request to the server (for what client-node does not expose). */
export function raw(
  url: string,
  caPem: string,
  opts: { method?: string; path: string; token?: string; body?: string; contentType?: string },
): Promise<{
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}> {
  return new Promise((resolve, reject) => {
    const u = new URL(opts.path, url);
    const headers: Record<string, string> = { Accept: 'application/json' };
    if (opts.token !== undefined) headers['Authorization'] = `Bearer ${opts.token}`;
    if (opts.body !== undefined) headers['Content-Type'] = opts.contentType ?? 'application/json';
    const req = request(u, { method: opts.method ?? 'GET', ca: caPem, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          text: Buffer.concat(chunks).toString('utf8'),
        }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    if (opts.body !== undefined) req.write(opts.body);
    req.end();
  });
}

/** A watch stream read line by line over raw HTTPS; `events` fills as lines arrive. */
export function rawWatch(
  url: string,
  caPem: string,
  path: string,
  token: string,
): {
  events: { type: string; object: Record<string, unknown> }[];
  ended: () => boolean;
  close: () => void;
  status: () => number;
} {
  const events: { type: string; object: Record<string, unknown> }[] = [];
  let done = false;
  let status = 0;
  let buf = '';
  const req = request(
    new URL(path, url),
    { ca: caPem, headers: { Authorization: `Bearer ${token}` } },
    (res) => {
      status = res.statusCode ?? 0;
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        buf += c;
        let i: number;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          if (line.trim() !== '')
            events.push(JSON.parse(line) as { type: string; object: Record<string, unknown> });
        }
      });
      res.on('end', () => (done = true));
      res.on('close', () => (done = true));
    },
  );
  req.on('error', () => (done = true));
  req.end();
  return { events, ended: () => done, close: () => req.destroy(), status: () => status };
}
