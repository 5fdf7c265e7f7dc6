/**
 * Settings of the sidecar: `meshid proxy` and `meshid proxy-init` (transparent mode's nat rules).
 */
import { z } from 'zod';
import { DEFAULTS as D, TRANSPARENT_DEFAULTS as T } from '../defaults.js';
import { INBOUND_POLICIES } from '../transparent.js';
import { COMMON, NAMING, SHARED } from './common.js';
import {
  derivedIdentity,
  destinationIdentityName,
  destinationServiceAddress,
  givenNaming,
} from './names.js';
import {
  addr,
  formatAddress,
  address,
  boolean,
  count,
  duration,
  hostPort,
  integer,
  label,
  list,
  nonEmpty,
  path,
  port,
  schemaOf,
  string,
  subdomain,
} from './setting.js';

const strings = (help: string) => list(z.array(nonEmpty), []).describe(help);
const allowList = (item: z.ZodType<string>, help: string) =>
  list(z.array(item).optional()).describe(help);
const atLeastOne = (max: number) => count(1, max, 'must be at least 1');

export const PROXY = {
  ...COMMON,
  identitySource: string(z.enum(['certify', 'pod-certificate']), D.proxyIdentitySource).describe(
    "where the proxy's certificate comes from: certify (a token and the CA) or pod-certificate (the kubelet's credential bundle file, docs/pod-certificates.md)",
  ),
  credentialBundle: path(nonEmpty.optional()).describe(
    "pod-certificate: the podCertificate volume's credential bundle file (the key, then the chain)",
  ),
  identityAddr: string(hostPort.optional()).describe('certify: the CA, HOST:PORT'),
  identityName: string(subdomain.optional()).describe(
    "certify: the CA's identity (its TLS certificate's name)",
  ),
  trustAnchors: SHARED.watchedTrustAnchors,
  tokenFile: path(nonEmpty.optional()).describe(
    'certify: projected ServiceAccount token, re-read on every request',
  ),
  localIdentity: string(subdomain).describe("this workload's identity name"),
  // A listener exists when what it serves is configured, on its default port; redirected
  // connections arrive on the pod's address, not on loopback.
  inbound: address(addr.optional(), (g) =>
    g['transparent'] === true ? D.proxyTransparentInbound : 'app' in g ? D.proxyInbound : undefined,
  ).describe(
    `inbound mTLS listen address (default with --app ${formatAddress(D.proxyInbound)}, with --transparent ${formatAddress(D.proxyTransparentInbound)})`,
  ),
  app: address(addr.optional()).describe('the application, where inbound traffic goes'),
  outbound: address(addr.optional(), (g) =>
    'destination' in g ? D.proxyOutbound : undefined,
  ).describe(
    `outbound listen address (default with --destination ${formatAddress(D.proxyOutbound)})`,
  ),
  route: strings('LISTEN_ADDR=HOST:PORT@EXPECTED_IDENTITY, repeatable (env: comma-separated)'),
  destination: strings(
    'for the outbound HTTP listener: AUTHORITY=HOST:PORT@EXPECTED_IDENTITY, repeatable',
  ),
  admin: address(addr, D.proxyAdmin).describe('admin HTTP listen address'),
  identityRetryMax: duration(
    count(1000, 3_600_000, 'must be at least 1s'),
    D.proxyIdentityRetryMaxMs,
  ).describe('longest wait between failed certificate requests (backoff cap)'),
  allowIdentity: allowList(nonEmpty, 'inbound: identities allowed (default: any meshed peer)'),
  allowServiceAccount: allowList(nonEmpty, 'inbound: service accounts allowed, ns/sa'),
  allowNamespace: allowList(label, 'inbound: namespaces allowed'),
  allowUnauthenticated: boolean().describe('inbound: accept plaintext peers'),
  appProtocol: list(
    z.array(
      nonEmpty.regex(
        /^(\d{1,5}=)?(http1|h2|detect|opaque)$/,
        'must be http1, h2, detect or opaque, optionally as PORT=PROTOCOL',
      ),
    ),
    [],
  ).describe(
    'inbound: what the app speaks, http1|h2|detect|opaque, for the --app port or as PORT=PROTOCOL for another app port (repeatable; default detect)',
  ),
  appTimeout: duration(
    z.number().int().min(0).max(3_600_000, 'must be at most 1h'),
    D.proxyAppTimeoutMs,
  ).describe(
    'inbound: how long the app may take to start an answer before the client gets 504 (0s = no limit; gRPC exempt)',
  ),
  inboundMaxStreams: integer(atLeastOne(10_000), D.proxyInboundMaxStreams).describe(
    'inbound: HTTP/2 streams one connection may have open (SETTINGS_MAX_CONCURRENT_STREAMS)',
  ),
  inboundMaxAppConnections: integer(atLeastOne(100_000), D.proxyInboundMaxAppConnections).describe(
    'inbound: exchanges with the app at once (requests, HTTP/1 and opaque connections), all peers together; beyond it HTTP/2 streams are refused (REFUSED_STREAM)',
  ),
  inboundMaxAppConnectionsPerPeer: integer(
    atLeastOne(100_000),
    D.proxyInboundMaxAppConnectionsPerPeer,
  ).describe(
    'inbound: exchanges with the app at once for one peer identity (or one plaintext address)',
  ),
  inboundMaxConnectionsPerPeer: integer(
    atLeastOne(100_000),
    D.proxyInboundMaxConnectionsPerPeer,
  ).describe(
    'inbound: connections one peer identity (or one address, before its handshake) may hold open',
  ),
  transparent: boolean().describe(
    'transparent mode: inbound serves the connections the nat rules of meshid proxy-init redirect, each to its original port (needs the original-dst addon)',
  ),
  inboundPolicy: string(z.enum(INBOUND_POLICIES), T.inboundPolicy).describe(
    'transparent mode: what plaintext gets, all-unauthenticated (allowed), all-authenticated or deny (annotation config.linkerd.io/default-inbound-policy)',
  ),
  inboundPortPolicy: list(
    z.array(
      nonEmpty.regex(
        new RegExp(`^\\d{1,5}=(${INBOUND_POLICIES.join('|')})$`),
        `must be PORT=POLICY, POLICY one of ${INBOUND_POLICIES.join(', ')}`,
      ),
    ),
    [],
  ).describe('transparent mode: PORT=POLICY, a policy for one app port, repeatable'),
  transparentOutbound: address(addr.optional(), (g) =>
    g['transparent'] === true ? D.proxyTransparentOutbound : undefined,
  ).describe(
    `transparent mode: where the nat rules of meshid proxy-init redirect outbound TCP (default ${formatAddress(D.proxyTransparentOutbound)}; on 127.0.0.1 also [::1] at that port, for IPv6)`,
  ),
  destinationAddr: string(hostPort, (g) => destinationServiceAddress(givenNaming(g))).describe(
    'transparent mode: the destination service, HOST:PORT (default linkerd-dst.<control-plane-namespace>.svc:8086)',
  ),
  destinationName: string(subdomain, derivedIdentity(destinationIdentityName)).describe(
    "transparent mode: the destination service's identity (its TLS certificate's name; default derived from naming)",
  ),
  ...NAMING,
};

/** Settings required by one identity source only: reported even when other settings are missing. */
const BY_SOURCE = [
  ['certify', 'identityAddr'],
  ['certify', 'identityName'],
  ['certify', 'tokenFile'],
  ['pod-certificate', 'credentialBundle'],
] as const;

export const PROXY_SCHEMA = BY_SOURCE.reduce(
  (schema, [source, key]) =>
    schema.refine(
      (c: { identitySource?: string } & Record<string, unknown>) =>
        (c.identitySource ?? D.proxyIdentitySource) !== source || c[key] !== undefined,
      { path: [key], message: `is required with identitySource ${source}`, when: () => true },
    ),
  schemaOf(PROXY),
).superRefine((c, ctx) => {
  if (c.transparent) {
    if (c.inbound === undefined)
      ctx.addIssue({ code: 'custom', path: ['inbound'], message: 'is required with transparent' });
    const out = c.transparentOutbound;
    if (out !== undefined && c.outbound !== undefined && out.port === c.outbound.port)
      ctx.addIssue({
        code: 'custom',
        path: ['outbound'],
        message: `must not use port ${out.port}: the transparent outbound listens there (--transparent-outbound)`,
      });
  } else if ((c.inbound === undefined) !== (c.app === undefined)) {
    ctx.addIssue({ code: 'custom', path: ['app'], message: 'is required with inbound' });
  }
});

const ports = (help: string) => list(z.array(z.string()), []).describe(help);

export const PROXY_INIT = {
  ...COMMON,
  inboundPort: integer(port, T.inboundPort).describe(
    "the proxy's inbound port, where inbound TCP is redirected",
  ),
  outboundPort: integer(port, T.outboundPort).describe(
    "the proxy's outbound port, where outbound TCP is redirected",
  ),
  adminPort: integer(port, T.adminPort).describe(
    "the proxy's admin port (never redirected: probes reach it)",
  ),
  proxyUid: integer(count(1, 2_147_483_646, 'must not be 0 (root)'), T.proxyUid).describe(
    "the proxy's UID: its own connections are not redirected",
  ),
  skipInboundPorts: ports(
    'inbound ports not redirected, e.g. 25,587,8000-9000 (annotation config.linkerd.io/skip-inbound-ports)',
  ),
  skipOutboundPorts: ports(
    'outbound ports not redirected (annotation config.linkerd.io/skip-outbound-ports)',
  ),
  skipSubnets: ports(
    'outbound destinations not redirected, CIDRs (annotation config.linkerd.io/skip-subnets)',
  ),
  iptablesMode: string(z.enum(['auto', 'legacy', 'nft']), D.iptablesMode).describe(
    'auto (the back end already holding rules, else what iptables is), legacy or nft',
  ),
  disableIpv6: boolean().describe('write IPv4 rules only (no ip6tables)'),
  dryRun: boolean().describe('print the rules (iptables-restore input) and change nothing'),
};
