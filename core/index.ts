/**
 * core: primitives shared by every meshid component. npm imports only.
 */
export * from './errors.js';
export * from './clock.js';
export * from './duration.js';
export * from './identity.js';
export * from './logger.js';
