/**
 * A small admin HTTP server: `/metrics` (Prometheus text), `/ready`, `/live`, `/version`, plus whatever
 * routes a component adds. Plain HTTP on a separate port, as Linkerd's admin servers are; it
 * serves no secrets.
 */
import { createServer } from 'node:http';
import type { Server, IncomingMessage, ServerResponse } from 'node:http';
import type { Address } from './config.js';
import type { Logger } from './logger.js';
import { LogKey } from './logger.js';
import { listenOn } from './listen.js';
import { versionInfo } from './version.js';
import { LISTENER_LIMITS, applyHttpTimeouts, limitConnections } from './listener-limits.js';
import type { HttpListenerLimits, PeerBudget } from './listener-limits.js';

/** A readiness verdict with the reason a person reads when it is false. */
export interface Readiness {
  readonly ready: boolean;
  readonly reason: string;
}

/** An admin route's answer. */
interface AdminResponse {
  readonly status: number;
  readonly contentType: string;
  readonly body: string;
}

interface AdminServerOptions {
  readonly logger: Logger;
  readonly metrics: () => Promise<{ contentType: string; body: string }>;
  readonly readiness: () => Readiness | Promise<Readiness>;
  readonly routes?: Readonly<Record<string, () => AdminResponse | Promise<AdminResponse>>>;
  /** Connections per peer address and in all, and request times; default LISTENER_LIMITS.admin. */
  readonly limits?: HttpListenerLimits;
}

/**
 * Starts the admin server; resolves with the server and its bound address.
 *
 * @example
 * ```ts
 * const admin = await startAdminServer({ host: '127.0.0.1', port: 9990 }, { logger, metrics, readiness });
 * ```
 */
export async function startAdminServer(
  address: Address,
  opts: AdminServerOptions,
): Promise<{
  server: Server;
  address: Address;
  /** The server's count of open connections, per peer address (limits: `opts.limits`). */
  connections: PeerBudget;
  close: () => Promise<void>;
}> {
  const routes: Record<string, () => AdminResponse | Promise<AdminResponse>> = {
    '/live': () => text(200, 'live\n'),
    // What `meshid version` shows as the server's version; public facts only.
    '/version': () => ({
      status: 200,
      contentType: 'application/json',
      body: `${JSON.stringify(versionInfo())}\n`,
    }),
    '/ready': async () => {
      const r = await opts.readiness();
      return text(r.ready ? 200 : 503, `${r.ready ? 'ready' : 'not ready'}: ${r.reason}\n`);
    },
    '/metrics': async () => {
      const m = await opts.metrics();
      return { status: 200, contentType: m.contentType, body: m.body };
    },
    ...opts.routes,
  };
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0]!;
    const route = Object.hasOwn(routes, path) ? routes[path] : undefined;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      send(res, text(405, 'method not allowed\n'));
      return;
    }
    if (route === undefined) {
      send(res, text(404, `not found; try ${Object.keys(routes).join(', ')}\n`));
      return;
    }
    Promise.resolve()
      .then(route)
      .then(
        (r) => send(res, r),
        (err: unknown) => {
          opts.logger.error({ err, path }, 'admin route failed');
          send(res, text(500, 'internal error\n'));
        },
      );
  });
  // Probes and a scraper: a handful of connections, each request a GET with no body. A peer
  // that opens more, or sends its head slowly, is cut off without costing the others.
  const limits = opts.limits ?? LISTENER_LIMITS.admin;
  applyHttpTimeouts(server, limits.http);
  const connections = limitConnections(server, limits.connections, (peer, hit, limit, refused) =>
    opts.logger.warn(
      { [LogKey.address]: peer, hit, limit, refused },
      'admin server refusing connections: limit reached',
    ),
  );
  const bound = await listenOn(server, address, { logger: opts.logger, name: 'admin' });
  return {
    server,
    address: bound,
    connections,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function text(status: number, body: string): AdminResponse {
  return { status, contentType: 'text/plain; charset=utf-8', body };
}

function send(res: ServerResponse, r: AdminResponse): void {
  res.writeHead(r.status, { 'content-type': r.contentType, 'cache-control': 'no-store' });
  res.end(r.body);
}
