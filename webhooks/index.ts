/**
 * webhooks: the admission webhooks, served over HTTPS: the proxy injector (`/inject`) and the
 * trust-configuration guard (`/validate`), on a generic AdmissionReview v1 server.
 */
export { AdmissionServer } from './server.js';
export { createInjector } from './inject.js';
export { PROXY_INIT_CONTAINER } from './transparent.js';
export { createTrustGuard } from './validate.js';
export { webhookKube } from './kube.js';
export type { WebhookKube } from './kube.js';
