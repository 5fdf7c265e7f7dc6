/**
 * Transparent mode's inbound: the listener on 4143 that the pod's nat rules send every inbound
 * TCP connection to (`meshid proxy-init`). One connection goes through these stages:
 *
 * 1. accept: read where the client was going (its original destination port: the app's port).
 * 2. classify: from the first bytes, meshid mTLS (a ClientHello whose SNI is this proxy's own
 *    identity), other TLS (an unmeshed client's TLS to the app itself), or plaintext.
 * 3. route: the port's policy (`all-unauthenticated`, `all-authenticated`, `deny`) admits or
 *    refuses it. mTLS and plaintext go to the inbound proxy's stages (inbound.ts: TLS
 *    termination, identity policy, protocol detection, `l5d-client-id`, HTTP/1, HTTP/2, opaque,
 *    the transport header) with `127.0.0.1:<original port>` as the app; other TLS is passed
 *    through to the app unopened, as unauthenticated.
 *
 * A connection made to 4143 itself (not redirected: a peer proxy's opaque transport names the
 * port in its header) goes to the inbound stages as mTLS only.
 */
import { connect as netConnect, createServer as createNetServer } from 'node:net';
import type { Server as NetServer, Socket } from 'node:net';
import type { Address, InboundPolicyName, Logger } from '../../core/index.js';
import { LogKey, formatAddress, isMeshidError, listenOn } from '../../core/index.js';
import { readUntil } from '../detect.js';
import type { InboundPolicy } from '../policy.js';
import type { InboundProxy } from '../inbound.js';
import type { OriginalDestinationReader } from './original-dst.js';
import { MAX_RECORD, peekClientHello } from './client-hello.js';

/** How a redirected connection was classified and what became of it. */
export interface TransparentInboundEvent {
  readonly type: 'transparent-connection';
  /** The original destination port (the app's), or the listener's own for a direct connection. */
  readonly port: number;
  readonly kind: 'mtls' | 'plaintext' | 'other-tls';
  readonly policy: InboundPolicyName;
  /** False when the policy refused it; it was closed without reaching the app. */
  readonly allowed: boolean;
}

/** Settings of a {@link TransparentInbound}. */
export interface TransparentInboundOptions {
  /**
   * Where the nat rules send inbound TCP: `[::]:4143`, one dual-stack socket for the connections
   * of both families (`0.0.0.0:4143` when the host has no IPv6); `0.0.0.0:4143` written out
   * serves IPv4 only.
   */
  readonly listen: Address;
  /** The inbound stages that serve mTLS and plaintext connections. */
  readonly inbound: InboundProxy;
  /** This proxy's identity: the SNI that says "meshid mTLS for me". */
  readonly localIdentity: string;
  readonly originalDestination: OriginalDestinationReader;
  /** The policy objects for each policy name (built once by the caller from its allow-lists). */
  readonly policies: Readonly<Record<Exclude<InboundPolicyName, 'deny'>, InboundPolicy>>;
  /** The pod's default inbound policy (`config.linkerd.io/default-inbound-policy`). */
  readonly defaultPolicy: InboundPolicyName;
  /** Per-port policies that override the default. */
  readonly portPolicies?: ReadonlyMap<number, InboundPolicyName>;
  /** Where a direct (not redirected) mTLS connection goes when no transport header names a port. */
  readonly defaultAppPort?: number;
  readonly logger: Logger;
  readonly observe?: (e: TransparentInboundEvent) => void;
  /** How long to wait for a client's first bytes (plaintext servers that speak first). Default 1 s. */
  readonly peekTimeoutMs?: number;
}

const DEFAULT_PEEK_TIMEOUT_MS = 1000;

/** Reads until the first TLS record is complete, or it is clearly not TLS, or time runs out. */
function peekFirst(socket: Socket, timeoutMs: number): Promise<{ bytes: Buffer; ended: boolean }> {
  return readUntil(
    socket,
    timeoutMs,
    (seen) => peekClientHello(seen).kind !== 'need-more' || seen.length >= MAX_RECORD,
  );
}

/**
 * The transparent inbound listener.
 *
 * @example
 * ```ts
 * const transparent = new TransparentInbound({
 *   listen: { host: '::', port: 4143 },
 *   inbound, // an InboundProxy that is not listening itself
 *   localIdentity,
 *   originalDestination: loadOriginalDestination(),
 *   policies: { 'all-unauthenticated': open, 'all-authenticated': meshedOnly },
 *   defaultPolicy: 'all-unauthenticated',
 *   logger,
 * });
 * await transparent.listen();
 * ```
 */
export class TransparentInbound {
  readonly #o: TransparentInboundOptions;
  readonly #log: Logger;
  readonly #server: NetServer;
  readonly #passThrough = new Set<Socket>();
  #port = 0;

  constructor(options: TransparentInboundOptions) {
    this.#o = options;
    this.#log = options.logger.child({ [LogKey.component]: 'proxy-transparent-inbound' });
    this.#server = this.#newServer();
  }

  #newServer(): NetServer {
    const server = createNetServer({ allowHalfOpen: true }, (raw) => {
      this.#accept(raw).catch((err: unknown) => {
        this.#log.warn({ err: String(err) }, 'transparent inbound connection failed');
        raw.destroy();
      });
    });
    server.on('error', (err) =>
      this.#log.error({ err: err.message }, 'transparent inbound listener error'),
    );
    return server;
  }

  /**
   * Starts listening (core's rule: `[::]` is one socket for both families, so the connections
   * iptables and ip6tables redirect are both served; `0.0.0.0` is IPv4 only); resolves with the
   * bound address.
   */
  async listen(): Promise<Address> {
    const bound = await listenOn(this.#server, this.#o.listen, {
      logger: this.#log,
      name: 'transparent inbound',
    });
    this.#port = bound.port;
    this.#log.info(
      {
        [LogKey.address]: formatAddress(bound),
        ipv6: bound.host.includes(':'),
        policy: this.#o.defaultPolicy,
      },
      'transparent inbound listening',
    );
    return bound;
  }

  /** Stops accepting; connections handed to the inbound stages close with it. */
  async close(): Promise<void> {
    for (const s of this.#passThrough) s.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  /** Stage 1: where was the client going? */
  #destinationPort(raw: Socket): number {
    try {
      return this.#o.originalDestination(raw).port;
    } catch (err) {
      // No conntrack entry: the connection was not redirected.
      if (isMeshidError(err) && err.code === 'ERR_ORIGINAL_DST') return raw.localPort ?? 0;
      throw err;
    }
  }

  async #accept(raw: Socket): Promise<void> {
    raw.on('error', (err) => this.#log.debug({ err: err.message }, 'transparent inbound error'));
    const port = this.#destinationPort(raw);
    const direct = port === this.#port;
    const policy = direct ? 'all-authenticated' : this.#policyOf(port);
    if (policy === 'deny') {
      this.#refuse(raw, port, 'plaintext', policy);
      return;
    }

    // Stage 2: classify by the first bytes.
    const first = await peekFirst(raw, this.#o.peekTimeoutMs ?? DEFAULT_PEEK_TIMEOUT_MS);
    if (raw.destroyed) return;
    const peek = peekClientHello(first.bytes);
    const kind =
      peek.kind === 'not-tls' || first.bytes.length === 0
        ? 'plaintext'
        : peek.kind === 'tls' && peek.sni === this.#o.localIdentity
          ? 'mtls'
          : 'other-tls';

    // Stage 3: route by the port's policy.
    if (kind !== 'mtls' && policy !== 'all-unauthenticated') {
      this.#refuse(raw, port, kind, policy);
      return;
    }
    this.#emit({ type: 'transparent-connection', port, kind, policy, allowed: true });
    const appPort = direct ? (this.#o.defaultAppPort ?? port) : port;
    if (kind === 'other-tls') {
      this.#passThroughTo(raw, appPort, first.bytes, first.ended);
      return;
    }
    if (first.ended && first.bytes.length === 0) {
      raw.destroy();
      return;
    }
    try {
      if (first.bytes.length > 0) raw.unshift(first.bytes);
    } catch {
      // The client ended before its first bytes could be put back: nothing left to serve.
      raw.destroy();
      return;
    }
    this.#o.inbound.accept(raw, { appPort, policy: this.#o.policies[policy] });
  }

  #policyOf(port: number): InboundPolicyName {
    return this.#o.portPolicies?.get(port) ?? this.#o.defaultPolicy;
  }

  #refuse(
    raw: Socket,
    port: number,
    kind: TransparentInboundEvent['kind'],
    policy: InboundPolicyName,
  ): void {
    this.#emit({ type: 'transparent-connection', port, kind, policy, allowed: false });
    this.#log.info(
      { port, kind, policy, [LogKey.address]: raw.remoteAddress },
      'transparent inbound connection refused by the port policy',
    );
    raw.destroy();
  }

  /** TLS that is not for this proxy: the app's own; carried to it unopened. */
  #passThroughTo(client: Socket, port: number, held: Buffer, ended: boolean): void {
    const app = netConnect({ host: '127.0.0.1', port, allowHalfOpen: true });
    this.#passThrough.add(client);
    app.setNoDelay(true);
    app.on('error', () => client.destroy());
    client.on('close', () => {
      this.#passThrough.delete(client);
      app.destroy();
    });
    app.on('close', () => client.destroy());
    app.write(held);
    if (ended) app.end();
    else client.pipe(app);
    app.pipe(client);
    client.resume();
  }

  #emit(e: TransparentInboundEvent): void {
    try {
      this.#o.observe?.(e);
    } catch (err) {
      this.#log.warn({ err: String(err) }, 'transparent inbound observer threw');
    }
  }
}
