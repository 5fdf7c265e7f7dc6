/**
 * webhooks: the admission webhooks, served over HTTPS: the proxy injector (`/inject`) and the
 * trust-configuration guard (`/validate`), on a generic AdmissionReview v1 server.
 */
export { AdmissionServer } from './server.js';
export type {} from './server.js';
export { admissionResponse, parseAdmissionReview, pointerToken } from './admission.js';
export type {
  AdmissionHandler,
  AdmissionRequest,
  AdmissionResult,
  JsonObject,
  PatchOperation,
} from './admission.js';
export { PodNotInjectable, createInjector, optIn, planInjection } from './inject.js';
export { PROXY_CONTAINER } from './proxy-container.js';
export type { InjectorDeps, InjectorOptions } from './inject.js';
export {
  PROXY_INIT_CONTAINER,
  proxyInitContainer,
  transparentSettings,
  transparentWanted,
} from './transparent.js';
export type { TransparentSettings } from './transparent.js';
export {
  IDENTITY_SOURCE_ANNOTATION,
  POD_CERTIFICATE_MOUNT,
  identitySourceOf,
} from './identity-source.js';
export type { IdentitySource } from './identity-source.js';
export { createTrustGuard } from './validate.js';
export type {} from './validate.js';
export { webhookKube } from './kube.js';
export type { WebhookKube } from './kube.js';
