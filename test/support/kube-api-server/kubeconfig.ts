/** Kubeconfig documents for clients of the test server. */
import { stringify } from 'yaml';

export interface KubeconfigParams {
  readonly url: string;
  readonly caPem: string;
  readonly token: string;
  readonly user: string;
  readonly namespace?: string | undefined;
  readonly contextName?: string | undefined;
}

/** A kubeconfig with one cluster (certificate-authority-data), one token user, one context. */
export function kubeconfigYaml(p: KubeconfigParams): string {
  const name = p.contextName ?? 'meshid-test';
  const context: Record<string, string> = { cluster: name, user: p.user };
  if (p.namespace !== undefined) context['namespace'] = p.namespace;
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [
      {
        name,
        cluster: {
          server: p.url,
          'certificate-authority-data': Buffer.from(p.caPem, 'utf8').toString('base64'),
        },
      },
    ],
    users: [{ name: p.user, user: { token: p.token } }],
    contexts: [{ name, context }],
    'current-context': name,
    preferences: {},
  });
}
