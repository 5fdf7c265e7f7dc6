/**
 * The proxy's transparent listeners, composed: the original-dst addon (loaded here, so the
 * proxy refuses to start in transparent mode without it, and every other mode never loads it),
 * the inbound stages as a non-listening {@link InboundProxy} behind the listener on 4143, and
 * the outbound on 127.0.0.1:4140 with its client of the destination service; both are where the
 * nat rules of `meshid proxy-init` redirect.
 */
import type {
  Address,
  InboundPolicyName,
  Logger,
  MeshTlsSettings,
  ProxyConfig,
  Registry,
} from '../core/index.js';
import { MeshidError, parseAddress, parsePortPolicies } from '../core/index.js';
import {
  DestinationClient,
  InboundPolicy,
  InboundProxy,
  TransparentInbound,
  loadOriginalDestination,
  parseAppProtocols,
  resolverOverDestinationClient,
} from '../proxy/index.js';
import type {
  ClientCertificate,
  InboundOptions,
  TransparentInboundEvent,
  TransparentOutboundOptions,
} from '../proxy/index.js';

/** What the rest of the proxy gives the transparent inbound. */
type TransparentInboundDeps = Pick<
  InboundOptions,
  'certificate' | 'anchorsPem' | 'observe' | 'tls'
> & {
  readonly logger: Logger;
  readonly observeTransparent?: (e: TransparentInboundEvent) => void;
};

/**
 * Per-port policies from `--inbound-port-policy PORT=POLICY` (each checked by the schema), read
 * by the same parser as the injector's `meshid.io/inbound-port-policy` annotation.
 *
 * @throws MeshidError ERR_CONFIG_INVALID when one port is given two policies.
 */
function portPolicies(entries: readonly string[]): ReadonlyMap<number, InboundPolicyName> {
  const r = parsePortPolicies(entries.join(','));
  if ('problem' in r)
    throw new MeshidError('ERR_CONFIG_INVALID', `--inbound-port-policy: ${r.problem}`);
  return r.policies;
}

/**
 * Who the inbound lets in, from the proxy's allow settings: one reading for the explicit inbound
 * and for the transparent one, so the two can never admit different peers.
 */
export function inboundPolicyLists(
  config: ProxyConfig,
): Omit<NonNullable<ConstructorParameters<typeof InboundPolicy>[0]>, 'allowUnauthenticated'> {
  return {
    ...(config.allowIdentity === undefined ? {} : { identities: config.allowIdentity }),
    ...(config.allowServiceAccount === undefined
      ? {}
      : { serviceAccounts: config.allowServiceAccount }),
    ...(config.allowNamespace === undefined ? {} : { namespaces: config.allowNamespace }),
    naming: {
      trustDomain: config.trustDomain,
      controlPlaneNamespace: config.controlPlaneNamespace,
    },
  };
}

/**
 * Starts the transparent inbound.
 *
 * @throws MeshidError ERR_TRANSPARENT_UNAVAILABLE when the original-dst addon cannot load.
 */
export async function startTransparentInbound(
  config: ProxyConfig,
  inboundListen: Address,
  deps: TransparentInboundDeps,
): Promise<{ address: Address; close(): Promise<void> }> {
  const originalDestination = loadOriginalDestination();
  const lists = inboundPolicyLists(config);
  const policies = {
    'all-unauthenticated': new InboundPolicy({ ...lists, allowUnauthenticated: true }),
    'all-authenticated': new InboundPolicy({ ...lists, allowUnauthenticated: false }),
  };
  const perPort = portPolicies(config.inboundPortPolicy);
  const policyName = (port: number): InboundPolicyName => perPort.get(port) ?? config.inboundPolicy;
  const app = config.app ?? { host: '127.0.0.1', port: 0 };
  const inbound = new InboundProxy({
    // Not listened on: the transparent listener hands it each connection.
    listen: { host: '127.0.0.1', port: 0 },
    app: { host: '127.0.0.1', port: app.port },
    appPorts: parseAppProtocols(app.port, config.appProtocol),
    appTimeoutMs: config.appTimeout,
    certificate: deps.certificate,
    anchorsPem: deps.anchorsPem,
    policy: policies['all-authenticated'],
    // A peer's transport header may name any app port but the proxy's own, under its policy.
    policyForPort: (port) => {
      if (port === inboundListen.port) return undefined;
      const name = policyName(port);
      return name === 'deny' ? undefined : policies[name];
    },
    logger: deps.logger.child({ component: 'inbound' }),
    ...(deps.observe === undefined ? {} : { observe: deps.observe }),
    ...(deps.tls === undefined ? {} : { tls: deps.tls }),
  });
  const transparent = new TransparentInbound({
    listen: inboundListen,
    inbound,
    localIdentity: config.localIdentity,
    originalDestination,
    policies,
    defaultPolicy: config.inboundPolicy,
    portPolicies: perPort,
    ...(config.app === undefined ? {} : { defaultAppPort: config.app.port }),
    logger: deps.logger,
    ...(deps.observeTransparent === undefined ? {} : { observe: deps.observeTransparent }),
  });
  const address = await transparent.listen();
  return {
    address,
    async close() {
      await transparent.close();
      await inbound.close(5000);
    },
  };
}

/** What the rest of the proxy gives the transparent outbound. */
interface TransparentOutboundDeps {
  readonly certificate: () => ClientCertificate | undefined;
  readonly anchorsPem: () => string;
  readonly tls: MeshTlsSettings;
  readonly registry: Registry;
  readonly logger: Logger;
}

/**
 * The transparent outbound's options for {@link OutboundProxy}: the original-destination reader
 * and a resolver over a client of the destination service (mTLS with the proxy's own
 * certificate, the service's identity checked). `close` ends the client's streams.
 *
 * @throws MeshidError ERR_TRANSPARENT_UNAVAILABLE when the original-dst addon cannot load.
 */
export function transparentOutbound(
  config: ProxyConfig,
  listen: Address,
  deps: TransparentOutboundDeps,
): { options: TransparentOutboundOptions; close(): void } {
  const originalDestination = loadOriginalDestination();
  const client = new DestinationClient({
    // Validated HOST:PORT by the settings' schema.
    address: parseAddress(config.destinationAddr)!,
    serverName: config.destinationName,
    anchorsPem: deps.anchorsPem,
    certificate: deps.certificate,
    tls: deps.tls,
    registry: deps.registry,
    logger: deps.logger.child({ component: 'destination-client' }),
  });
  return {
    options: { listen, originalDestination, resolver: resolverOverDestinationClient(client) },
    close: () => client.close(),
  };
}
