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
import type { AddressInfo, ListenOptions, Server as NetServer, Socket } from 'node:net';
import type { Address, InboundPolicyName, Logger } from '../../core/index.js';
import { LogKey, isMeshidError } from '../../core/index.js';
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
   * Where the nat rules send inbound TCP: `0.0.0.0:4143` (and `[::]:4143` beside it when the host
   * has IPv6), or `[::]:4143` (one dual-stack socket).
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
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let length = 0;
    const finish = (ended: boolean): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
      socket.pause();
      resolve({ bytes: Buffer.concat(chunks, length), ended });
    };
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      length += chunk.length;
      const peek = peekClientHello(Buffer.concat(chunks, length));
      if (peek.kind !== 'need-more' || length >= MAX_RECORD) finish(false);
    };
    const onEnd = (): void => finish(true);
    const timer = setTimeout(() => finish(false), timeoutMs);
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.once('close', onEnd);
  });
}

/** Listens; rejects with the listen error (EADDRINUSE, EAFNOSUPPORT...). */
function bind(server: NetServer, options: ListenOptions): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/**
 * The transparent inbound listener.
 *
 * @example
 * ```ts
 * const transparent = new TransparentInbound({
 *   listen: { host: '0.0.0.0', port: 4143 },
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
  /** The IPv6 companion of a `0.0.0.0` listener. */
  #v6: NetServer | undefined;
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
   * Starts listening; resolves with the bound address. On `0.0.0.0` it also listens on `[::]`
   * (IPv6 only) on the same port, as Linkerd's proxy does, so that the IPv6 connections the
   * ip6tables rules redirect are served; a host without IPv6 keeps the IPv4 listener alone.
   */
  async listen(): Promise<Address> {
    const { host, port } = this.#o.listen;
    await bind(this.#server, { host, port });
    const a = this.#server.address() as AddressInfo;
    this.#port = a.port;
    if (host === '0.0.0.0') {
      const v6 = this.#newServer();
      try {
        await bind(v6, { host: '::', port: a.port, ipv6Only: true });
        this.#v6 = v6;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'EAFNOSUPPORT' && code !== 'EADDRNOTAVAIL') {
          await new Promise<void>((resolve) => this.#server.close(() => resolve()));
          throw err;
        }
        this.#log.info({ err: code }, 'transparent inbound: no IPv6 on this host; IPv4 only');
      }
    }
    this.#log.info(
      {
        [LogKey.address]: `${a.address}:${a.port}`,
        ipv6: this.#v6 !== undefined || host.includes(':'),
        policy: this.#o.defaultPolicy,
      },
      'transparent inbound listening',
    );
    return { host: a.address, port: a.port };
  }

  /** Stops accepting; connections handed to the inbound stages close with it. */
  async close(): Promise<void> {
    for (const s of this.#passThrough) s.destroy();
    const servers = [this.#server, ...(this.#v6 === undefined ? [] : [this.#v6])];
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
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
