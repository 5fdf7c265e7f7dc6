/**
 * The inbound route stage: which app port a connection goes to and whether its peer may reach
 * it. The policy decides once per connection; Linkerd's opaque transport (ALPN
 * `transport.l5d.io/v1`) names the target port in a header before any app byte, and that port
 * must be one this proxy serves.
 */
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { LogKey } from '../core/index.js';
import { TRANSPORT_HEADER_ALPN, readTransportHeader } from './l5d-transport.js';
import type { InboundPolicy } from './policy.js';
import type { Conn, InboundContext } from './inbound-accept.js';
import { destroyConn } from './inbound-accept.js';

/** The policy decision of a connection, logged when it denies. */
export function authorize(ctx: InboundContext, conn: Conn): void {
  conn.decision = conn.policy.authorize(conn.peer);
  if (!conn.decision.allowed) {
    ctx.log.info(
      { [LogKey.identity]: conn.peer, [LogKey.reason]: conn.decision.reason },
      'inbound connection denied by policy',
    );
  }
}

/** Whether a verified connection opens with Linkerd's transport header. */
export function carriesTransportHeader(conn: Conn, stream: Socket): boolean {
  return conn.tls && (stream as TLSSocket).alpnProtocol === TRANSPORT_HEADER_ALPN;
}

/**
 * Reads Linkerd's transport header and routes the connection to the port it names (under that
 * port's own policy, in transparent mode). Resolves with the bytes read past the header, or
 * undefined when the header was refused and the connection closed.
 */
export async function routeByTransportHeader(
  ctx: InboundContext,
  conn: Conn,
  stream: Socket,
  timeoutMs: number,
  policyForPort: ((port: number) => InboundPolicy | undefined) | undefined,
): Promise<Buffer | undefined> {
  const refuse = (fields: Record<string, unknown>, message: string): undefined => {
    ctx.log.info({ [LogKey.identity]: conn.peer, ...fields }, message);
    destroyConn(conn);
    return undefined;
  };
  let read: Awaited<ReturnType<typeof readTransportHeader>>;
  try {
    read = await readTransportHeader(stream, timeoutMs);
  } catch (err) {
    return refuse({ err: (err as Error).message }, 'inbound transport header refused; closed');
  }
  const { name, port } = read.header;
  if (name !== '') {
    // Linkerd's gateway forwarding: the header names another target to go on to. This
    // inbound serves its own app only; delivering to a local port instead would be wrong.
    return refuse(
      { name, port },
      'inbound transport header names a target to forward to (gateway forwarding), which this proxy does not do; closed',
    );
  }
  const portPolicy = policyForPort?.(port);
  if (portPolicy !== undefined) {
    // Transparent mode: the named port's own policy decides.
    conn.policy = portPolicy;
    conn.decision = portPolicy.authorize(conn.peer);
  } else if (!ctx.appPorts.has(port)) {
    return refuse(
      { port },
      'inbound transport header names a port that is not one of the app ports; closed',
    );
  }
  conn.appPort = port;
  return read.rest;
}
