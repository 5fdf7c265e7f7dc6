/**
 * Builders of the Kubernetes objects the destination service reads: Pods (meshed as the
 * injector leaves them, or not), Services and EndpointSlices, as plain JSON the API test double
 * accepts. Shared by the index's unit tests, the integration test and the memory bench.
 */

/** A Pod; `meshed` gives it the injector's label and proxy container with its inbound port. */
export function pod(
  namespace: string,
  name: string,
  ip: string | readonly string[],
  o: {
    meshed?: boolean;
    sa?: string;
    controlPlane?: string;
    inboundPort?: number;
    opaquePorts?: string;
    phase?: string;
    hostNetwork?: boolean;
    extraLabel?: string;
  } = {},
): Record<string, unknown> {
  const ips = typeof ip === 'string' ? [ip] : [...ip];
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name,
      namespace,
      labels: {
        app: name.replace(/-[^-]*$/, ''),
        ...(o.meshed === true
          ? { 'linkerd.io/control-plane-ns': o.controlPlane ?? 'linkerd' }
          : {}),
        ...(o.extraLabel === undefined ? {} : { extra: o.extraLabel }),
      },
      annotations:
        o.opaquePorts === undefined ? {} : { 'config.linkerd.io/opaque-ports': o.opaquePorts },
    },
    spec: {
      serviceAccountName: o.sa ?? 'default',
      ...(o.hostNetwork === true ? { hostNetwork: true } : {}),
      containers: [
        { name: 'app', image: 'app:1', ports: [{ name: 'http', containerPort: 8080 }] },
        ...(o.meshed === true
          ? [
              {
                name: 'meshid-proxy',
                image: 'ghcr.io/meshid/meshid:v0.1.0',
                ports: [
                  { name: 'meshid-inbound', containerPort: o.inboundPort ?? 4143, protocol: 'TCP' },
                  { name: 'meshid-admin', containerPort: 4191, protocol: 'TCP' },
                ],
              },
            ]
          : []),
      ],
    },
    status: {
      phase: o.phase ?? 'Running',
      podIP: ips[0],
      podIPs: ips.map((i) => ({ ip: i })),
    },
  };
}

/** A ClusterIP Service (ports' targetPort left to the slices, which carry the resolved numbers). */
export function service(
  namespace: string,
  name: string,
  clusterIp: string | readonly string[],
  ports: readonly { name: string; port: number; targetPort?: number | string }[],
  o: { opaquePorts?: string; families?: readonly string[] } = {},
): Record<string, unknown> {
  const ips = typeof clusterIp === 'string' ? [clusterIp] : [...clusterIp];
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: {
      name,
      namespace,
      annotations:
        o.opaquePorts === undefined ? {} : { 'config.linkerd.io/opaque-ports': o.opaquePorts },
    },
    spec: {
      type: 'ClusterIP',
      clusterIP: ips[0],
      clusterIPs: ips,
      ipFamilies: o.families ?? ips.map((i) => (i.includes(':') ? 'IPv6' : 'IPv4')),
      selector: { app: name },
      ports: ports.map((p) => ({
        ...(p.name === '' ? {} : { name: p.name }),
        port: p.port,
        protocol: 'TCP',
        targetPort: p.targetPort ?? p.port,
      })),
    },
  };
}

/** An EndpointSlice of a Service, as the EndpointSlice controller writes one. */
export function endpointSlice(
  namespace: string,
  name: string,
  serviceName: string,
  endpoints: readonly { ip: string; pod?: string; ready?: boolean }[],
  ports: readonly { name: string; port: number }[],
  addressType: 'IPv4' | 'IPv6' = 'IPv4',
): Record<string, unknown> {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name,
      namespace,
      labels: {
        'kubernetes.io/service-name': serviceName,
        'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io',
      },
    },
    addressType,
    endpoints: endpoints.map((e) => ({
      addresses: [e.ip],
      ...(e.ready === undefined ? {} : { conditions: { ready: e.ready } }),
      ...(e.pod === undefined ? {} : { targetRef: { kind: 'Pod', namespace, name: e.pod } }),
    })),
    ports: ports.map((p) => ({ name: p.name, port: p.port, protocol: 'TCP' })),
  };
}
