/**
 * Standalone entry of the Kubernetes API test server (a test double):
 *
 *   node --import tsx test/support/kube-api-server/main.ts --port 0 --kubeconfig out.yaml \
 *     [--namespace linkerd]... [--issuer URL] [--min-token-expiration-seconds N] [--watch-history N]
 *
 * Writes an admin kubeconfig, prints one JSON "listening" line with the URL, and runs until
 * SIGINT or SIGTERM.
 */
import { parseArgs } from 'node:util';
import { startKubeApiServer } from './index.js';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    kubeconfig: { type: 'string' },
    namespace: { type: 'string', multiple: true, default: [] },
    issuer: { type: 'string' },
    'min-token-expiration-seconds': { type: 'string' },
    'watch-history': { type: 'string' },
  },
  strict: true,
});

const api = await startKubeApiServer({
  port: Number(values.port),
  namespaces: values.namespace,
  ...(values.issuer !== undefined ? { issuer: values.issuer } : {}),
  ...(values['min-token-expiration-seconds'] !== undefined
    ? { minTokenExpirationSeconds: Number(values['min-token-expiration-seconds']) }
    : {}),
  ...(values['watch-history'] !== undefined
    ? { watchHistory: Number(values['watch-history']) }
    : {}),
});
if (values.kubeconfig !== undefined) await api.writeKubeconfig(values.kubeconfig);
console.log(
  JSON.stringify({
    msg: 'listening',
    component: 'kube-api-test-server',
    url: api.url,
    port: api.port,
    issuer: api.issuer,
    ...(values.kubeconfig !== undefined ? { kubeconfig: values.kubeconfig } : {}),
  }),
);
const shutdown = (): void => {
  void api.stop().then(() => process.exit(0));
};
process.once('SIGINT', shutdown);
process.once('SIGTERM', shutdown);
